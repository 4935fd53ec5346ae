// An RWFile that passes every call on to the file it wraps: tests derive
// from it to watch or change one or two calls of a real file.
#pragma once

#include <memory>
#include <string>
#include <utility>

#include "ovbd/io/env.h"

namespace ovbd::test {

class ForwardingRWFile : public RWFile {
 public:
  explicit ForwardingRWFile(std::unique_ptr<RWFile> base) : base_(std::move(base)) {}

  Status ReadAt(uint64_t off, size_t n, char* buf, size_t* got) const override {
    return base_->ReadAt(off, n, buf, got);
  }
  uint64_t Size() const override { return base_->Size(); }
  const std::string& Name() const override { return base_->Name(); }
  int NativeFd() const override { return base_->NativeFd(); }
  bool Refetch(uint64_t off, uint64_t n) const override { return base_->Refetch(off, n); }
  Status CheckRange(uint64_t off, uint64_t n) const override { return base_->CheckRange(off, n); }
  Result<DataRun> NextData(uint64_t off) const override { return base_->NextData(off); }
  Status WriteAt(uint64_t off, const char* buf, size_t n) override { return base_->WriteAt(off, buf, n); }
  Status Sync() override { return base_->Sync(); }
  Status PunchHole(uint64_t off, uint64_t len) override { return base_->PunchHole(off, len); }
  Status Truncate(uint64_t size) override { return base_->Truncate(size); }
  Result<uint64_t> AllocatedBytes() const override { return base_->AllocatedBytes(); }
  Status Preallocate(uint64_t off, uint64_t len) override { return base_->Preallocate(off, len); }
  void StartWriteback(uint64_t off, uint64_t len) override { base_->StartWriteback(off, len); }

 private:
  std::unique_ptr<RWFile> base_;
};

}  // namespace ovbd::test
