// Env: the only door from ovbdfs to the operating system.
//
// Every file, directory and clock access of the layers above goes through an
// Env, so tests can swap in FaultInjectionEnv (drop unsynced data, tear writes,
// fail calls, crash at a named point) without touching production code.
// Files are addressed by absolute or store-relative paths built by the store
// from validated names; the POSIX Env never follows a symlink at the last
// component (O_NOFOLLOW), so a planted link cannot lead outside the store.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ovbd/io/status.h"

namespace ovbd {

// A read-only, random-access byte source. It may be a local file, a ZFile
// decompressing view, or (later) a remote blob: nothing above may assume a
// local file descriptor, but may ask for one to splice from.
class ReadableFile {
 public:
  virtual ~ReadableFile() = default;

  // Reads up to n bytes at off into buf; *got receives the count. A short
  // count means end of file, never a transient condition.
  virtual Status ReadAt(uint64_t off, size_t n, char* buf, size_t* got) const = 0;
  virtual uint64_t Size() const = 0;
  // Human-readable name used in error messages.
  virtual const std::string& Name() const = 0;
  // A descriptor whose bytes at the same offsets are this file's bytes, for
  // zero-copy replies; -1 when there is none (compressed or remote).
  virtual int NativeFd() const { return -1; }

  // ReadAt that treats a short read as corruption: for structures that must exist.
  Status ReadExact(uint64_t off, size_t n, char* buf) const;
};

// A local file opened for reading and writing in place.
class RWFile : public ReadableFile {
 public:
  virtual Status WriteAt(uint64_t off, const char* buf, size_t n) = 0;
  // Makes every completed WriteAt/PunchHole durable (fdatasync).
  virtual Status Sync() = 0;
  // Deallocates [off, off+len): the range reads zeros afterwards; size unchanged.
  virtual Status PunchHole(uint64_t off, uint64_t len) = 0;
  virtual Status Truncate(uint64_t size) = 0;
  // Bytes actually allocated on the backing filesystem (st_blocks * 512).
  virtual Result<uint64_t> AllocatedBytes() const = 0;
};

struct FileInfo {
  uint64_t size = 0;
  uint64_t allocated = 0;
  bool is_dir = false;
  bool is_regular = false;
  bool is_symlink = false;
  uint64_t mtime_ns = 0;
};

struct FsSpace {
  uint64_t block_size = 4096;
  uint64_t blocks = 0;
  uint64_t blocks_free = 0;
  uint64_t blocks_avail = 0;
};

class FileLock {
 public:
  virtual ~FileLock() = default;
};

class Env {
 public:
  virtual ~Env() = default;

  // The process-wide POSIX environment.
  static Env* Default();

  virtual Result<std::unique_ptr<ReadableFile>> OpenReadable(const std::string& path) = 0;
  // Opens for read/write; with create=true the file must not exist yet.
  virtual Result<std::unique_ptr<RWFile>> OpenRW(const std::string& path, bool create) = 0;

  virtual Status Rename(const std::string& from, const std::string& to) = 0;
  virtual Status Remove(const std::string& path) = 0;
  virtual Status CreateDir(const std::string& path) = 0;
  virtual Status RemoveDir(const std::string& path) = 0;
  // fsync on a directory: makes creations, renames and removals in it durable.
  virtual Status SyncDir(const std::string& path) = 0;
  virtual Result<std::vector<std::string>> ListDir(const std::string& path) = 0;
  // lstat: a symlink is reported as one, never followed.
  virtual Result<FileInfo> Stat(const std::string& path) = 0;
  // Takes an exclusive advisory lock (flock) held until the object dies;
  // kBusy if another process holds it.
  virtual Result<std::unique_ptr<FileLock>> LockFile(const std::string& path) = 0;
  virtual uint64_t NowMicros() = 0;
  // Space on the filesystem holding `path` (statvfs).
  virtual Result<FsSpace> SpaceOf(const std::string& path) {
    return Status::NotSupported("space of " + path);
  }

  // A named point in a multi-step operation where a crash is worth testing
  // ("snapshot.after_seal"). The POSIX Env does nothing; FaultInjectionEnv may
  // simulate a crash there by returning an error and failing everything after.
  virtual Status CrashPoint(std::string_view name);

  // --- Helpers built only on the primitives above ---

  bool Exists(const std::string& path);
  // Writes `data` to `path` atomically: temp file, fsync, rename, fsync dir.
  // On failure, *renamed (if given) tells whether the rename was made: if
  // not, `path` still holds its old contents; if so, it holds the new ones
  // but they may not survive a power loss.
  Status WriteFileAtomic(const std::string& path, std::string_view data, bool* renamed = nullptr);
  // Writes a new file `path` and syncs it (not its directory).
  Status WriteFileSynced(const std::string& path, std::string_view data);
  // Reads a whole small file; kTooLarge if it exceeds max_size.
  Result<std::string> ReadSmallFile(const std::string& path, size_t max_size);
  // Copies a file's bytes (holes preserved where the source has them) and
  // syncs the copy.
  Status CopyFile(const std::string& from, const std::string& to);
};

// Joins path components with exactly one '/'.
std::string JoinPath(std::string_view a, std::string_view b);
std::string DirName(const std::string& path);

}  // namespace ovbd
