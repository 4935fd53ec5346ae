#include "ovbd/io/posix_file.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

namespace ovbd {
namespace {
Status Errno(const char* what, const std::string& name) {
  int e = errno;
  return Status::IOError(std::string(what) + " " + name + ": " + std::strerror(e), e);
}
}  // namespace

PosixFile::PosixFile(int fd, std::string name, uint64_t size)
    : fd_(fd), name_(std::move(name)), size_(size) {}

PosixFile::~PosixFile() { ::close(fd_); }

Status PosixFile::ReadAt(uint64_t off, size_t n, char* buf, size_t* got) const {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pread(fd_, buf + done, n - done, static_cast<off_t>(off + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      *got = done;
      return Errno("read", name_);
    }
    if (r == 0) break;  // end of file
    done += static_cast<size_t>(r);
  }
  *got = done;
  return Status::OK();
}

Status PosixFile::WriteAt(uint64_t off, const char* buf, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t r = ::pwrite(fd_, buf + done, n - done, static_cast<off_t>(off + done));
    if (r < 0) {
      if (errno == EINTR) continue;
      return Errno("write", name_);
    }
    if (r == 0) return Status::IOError("write " + name_ + ": no progress", EIO);
    done += static_cast<size_t>(r);
  }
  uint64_t end = off + n;
  uint64_t cur = size_.load(std::memory_order_relaxed);
  while (end > cur && !size_.compare_exchange_weak(cur, end, std::memory_order_relaxed)) {
  }
  return Status::OK();
}

Status PosixFile::Sync() {
  if (::fdatasync(fd_) != 0) return Errno("fdatasync", name_);
  return Status::OK();
}

Status PosixFile::PunchHole(uint64_t off, uint64_t len) {
  if (len == 0) return Status::OK();
  while (::fallocate(fd_, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off),
                     static_cast<off_t>(len)) != 0) {
    if (errno != EINTR) return Errno("punch hole in", name_);
  }
  return Status::OK();
}

Status PosixFile::Preallocate(uint64_t off, uint64_t len) {
  if (len == 0) return Status::OK();
  while (::fallocate(fd_, FALLOC_FL_KEEP_SIZE, static_cast<off_t>(off), static_cast<off_t>(len)) !=
         0) {
    if (errno == EOPNOTSUPP) return Status::NotSupported(name_ + ": preallocation not supported");
    if (errno != EINTR) return Errno("preallocate in", name_);
  }
  return Status::OK();
}

void PosixFile::StartWriteback(uint64_t off, uint64_t len) {
  // Advisory: a failure here only means the next fdatasync does the work.
  if (len > 0) (void)::sync_file_range(fd_, static_cast<off_t>(off), static_cast<off_t>(len),
                                       SYNC_FILE_RANGE_WRITE);
}

Status PosixFile::Truncate(uint64_t size) {
  if (::ftruncate(fd_, static_cast<off_t>(size)) != 0) return Errno("truncate", name_);
  size_.store(size, std::memory_order_relaxed);
  return Status::OK();
}

Status PosixFile::CheckRange(uint64_t off, uint64_t n) const {
  struct stat st;
  if (::fstat(fd_, &st) != 0) return Errno("fstat", name_);
  const uint64_t size = static_cast<uint64_t>(st.st_size);
  if (off > size || n > size - off) return PastEndError(*this, off, n, size);
  return Status::OK();
}

Result<ReadableFile::DataRun> PosixFile::NextData(uint64_t off) const {
  const uint64_t size = Size();
  if (off >= size) return DataRun{size, size};
  // lseek moves the shared file offset, which nothing here uses (all I/O is
  // positional), so concurrent callers do not disturb each other.
  const off_t d = ::lseek(fd_, static_cast<off_t>(off), SEEK_DATA);
  if (d < 0) {
    if (errno == ENXIO) return DataRun{size, size};  // only a hole follows
    if (errno == EINVAL || errno == EOPNOTSUPP) return DataRun{off, size};
    return Errno("seek data in", name_);
  }
  const uint64_t begin = std::min(static_cast<uint64_t>(d), size);
  if (begin >= size) return DataRun{size, size};
  const off_t h = ::lseek(fd_, d, SEEK_HOLE);
  if (h < 0) return DataRun{begin, size};
  return DataRun{begin, std::clamp(static_cast<uint64_t>(h), begin + 1, size)};
}

Result<uint64_t> PosixFile::AllocatedBytes() const {
  struct stat st;
  if (::fstat(fd_, &st) != 0) return Errno("fstat", name_);
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

}  // namespace ovbd
