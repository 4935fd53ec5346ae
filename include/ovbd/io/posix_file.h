// PosixFile: an RWFile over a file descriptor (pread/pwrite/fdatasync/fallocate).
#pragma once

#include <atomic>
#include <string>

#include "ovbd/io/env.h"

namespace ovbd {

class PosixFile : public RWFile {
 public:
  // Takes ownership of fd.
  PosixFile(int fd, std::string name, uint64_t size);
  ~PosixFile() override;
  PosixFile(const PosixFile&) = delete;
  PosixFile& operator=(const PosixFile&) = delete;

  Status ReadAt(uint64_t off, size_t n, char* buf, size_t* got) const override;
  uint64_t Size() const override { return size_.load(std::memory_order_relaxed); }
  const std::string& Name() const override { return name_; }
  int NativeFd() const override { return fd_; }
  // Asks the OS for the current size (fstat): the file may have been
  // truncated since it was opened.
  Status CheckRange(uint64_t off, uint64_t n) const override;
  Result<DataRun> NextData(uint64_t off) const override;

  Status WriteAt(uint64_t off, const char* buf, size_t n) override;
  Status Sync() override;
  Status PunchHole(uint64_t off, uint64_t len) override;
  Status Truncate(uint64_t size) override;
  Result<uint64_t> AllocatedBytes() const override;
  Status Preallocate(uint64_t off, uint64_t len) override;
  void StartWriteback(uint64_t off, uint64_t len) override;

 private:
  int fd_;
  std::string name_;
  std::atomic<uint64_t> size_;
};

}  // namespace ovbd
