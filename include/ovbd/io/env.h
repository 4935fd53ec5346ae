// Env: the only door from ovbdfs to the operating system.
//
// Every file, directory and clock access of the layers above goes through an
// Env, so tests can swap in FaultInjectionEnv (drop unsynced data, tear writes,
// fail calls, crash at a named point) without touching production code.
// Files are addressed by absolute or store-relative paths built by the store
// from validated names. The POSIX Env never follows a symlink at the last
// component (O_NOFOLLOW); beneath a root given to Env::Confine() it follows
// none at any component and never leaves the root, so a link planted in the
// store (a directory replaced by a symlink to somewhere only root may write)
// cannot lead outside it.
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
  // Drops any cached copy of [off, off+n) so the next read fetches it from
  // the source again; true if there was one to drop. A reader that finds
  // bytes failing their own check (a ZFile block's CRC) calls it and reads
  // once more: a block damaged in a cache is then never served. Local files
  // have no such copy.
  virtual bool Refetch(uint64_t off, uint64_t n) const {
    (void)off;
    (void)n;
    return false;
  }

  // ReadAt that treats a short read as corruption: for structures that must exist.
  Status ReadExact(uint64_t off, size_t n, char* buf) const;
  // ReadAt of bytes an index maps (layer data, an upper's written sectors):
  // they were inside the file when the index was checked, so a short read
  // means the file shrank under us. That is an I/O error (EIO) naming the
  // file and the missing range, never zeros and never a short result.
  Status ReadMapped(uint64_t off, size_t n, char* buf) const;
  // ReadMapped for a scan that reads each byte once (hydration): a file
  // with a cache of its own in memory (a ZFile's decompressed blocks)
  // neither consults nor fills it, so the scan costs no cache churn and
  // foreground reads keep their hot blocks. Bytes and errors are those of
  // ReadMapped.
  virtual Status ReadMappedOnce(uint64_t off, size_t n, char* buf) const {
    return ReadMapped(off, n, buf);
  }

  // Checks that [off, off+n) still lies inside the file as it is now: for
  // callers that hand NativeFd() out (a splice cannot report a short read
  // as an error). EIO naming the file and the range when it does not. A
  // local file asks the OS (one fstat); the default compares with Size().
  virtual Status CheckRange(uint64_t off, uint64_t n) const;

  // The run of data at or after `off`: [begin, end), end > begin, found with
  // SEEK_DATA/SEEK_HOLE where the file can tell, so that a scan of a sparse
  // file skips its holes (which read as zeros). begin == end == Size() when
  // no data follows `off`. Files that cannot tell report [off, Size()).
  struct DataRun {
    uint64_t begin = 0, end = 0;
  };
  virtual Result<DataRun> NextData(uint64_t off) const;
};

// The error of a ReadMapped()/CheckRange() whose range is not all in the file
// (the file had `now` bytes when the read came up short).
Status PastEndError(const ReadableFile& f, uint64_t off, uint64_t n, uint64_t now);

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
  // Reserves space for [off, off+len) ahead of writes (fallocate with
  // FALLOC_FL_KEEP_SIZE): the size and what every byte reads stay as they
  // were (holes keep reading zeros), later writes into the range need no
  // block allocation. Advisory: nothing may depend on it for content. The
  // default reserves nothing.
  virtual Status Preallocate(uint64_t off, uint64_t len) {
    (void)off;
    (void)len;
    return Status::OK();
  }
  // Starts writing back [off, off+len) without waiting (sync_file_range
  // with SYNC_FILE_RANGE_WRITE): a hint for streaming writers, so that the
  // next Sync() finds most of their data on its way to the disk already.
  // Makes nothing durable and changes no content. The default does nothing.
  virtual void StartWriteback(uint64_t off, uint64_t len) {
    (void)off;
    (void)len;
  }
};

struct FileInfo {
  uint64_t size = 0;
  uint64_t allocated = 0;
  bool is_dir = false;
  bool is_regular = false;
  bool is_symlink = false;
  uint64_t mtime_ns = 0;
  uint32_t uid = 0;   // owner
  uint32_t gid = 0;
  uint32_t mode = 0;  // permission bits (st_mode & 07777)
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

// Keeps a root confined (see Env::Confine) while it lives.
class Confinement {
 public:
  virtual ~Confinement() = default;
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
  // lstat: a symlink is reported as one, never followed (beneath a confined
  // root, a symlink anywhere in the path is an error; see Confine).
  virtual Result<FileInfo> Stat(const std::string& path) = 0;
  // Takes an exclusive advisory lock (flock) held until the object dies;
  // kBusy if another process holds it.
  virtual Result<std::unique_ptr<FileLock>> LockFile(const std::string& path) = 0;
  virtual uint64_t NowMicros() = 0;
  // Space on the filesystem holding `path` (statvfs).
  virtual Result<FsSpace> SpaceOf(const std::string& path) {
    return Status::NotSupported("space of " + path);
  }

  // While the returned object lives, every call on a path beneath `root`
  // (lexically `root` + "/" + rest, after normalisation) resolves `rest`
  // without following a symlink at any component and without leaving `root`
  // (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS from a descriptor of
  // `root` opened now; `root` itself resolved once, as given). A symlink
  // there fails with a clear error naming the path (ELOOP mapped to a Status
  // that says "is a symbolic link"). Paths outside every confined root are
  // unaffected (users' own import sources, for example).
  // Several roots may be confined at once, and the same root more than once
  // (it stays confined until the last object dies); the innermost root
  // containing a path is the one it is resolved from. This base class does
  // nothing; the POSIX Env confines every call that takes a path (Stat
  // included: a link anywhere in a confined path is an error, not a report).
  virtual Result<std::unique_ptr<Confinement>> Confine(const std::string& root);

  // A named point in a multi-step operation where a crash is worth testing
  // ("snapshot.after_seal"). The POSIX Env does nothing; FaultInjectionEnv may
  // simulate a crash there by returning an error and failing everything after.
  virtual Status CrashPoint(std::string_view name);

  // --- Helpers built only on the primitives above ---

  bool Exists(const std::string& path);
  // The effective uid of this process (who owns what it creates).
  virtual uint32_t CurrentUid();
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

// An Env that forwards every call to another one: derive from it and
// override only what changes (test envs, counting or tracing wrappers), so
// that a method added to Env later is forwarded without touching them.
class EnvWrapper : public Env {
 public:
  explicit EnvWrapper(Env* target) : target_(target) {}
  Env* target() const { return target_; }

  Result<std::unique_ptr<ReadableFile>> OpenReadable(const std::string& path) override {
    return target_->OpenReadable(path);
  }
  Result<std::unique_ptr<RWFile>> OpenRW(const std::string& path, bool create) override {
    return target_->OpenRW(path, create);
  }
  Status Rename(const std::string& from, const std::string& to) override {
    return target_->Rename(from, to);
  }
  Status Remove(const std::string& path) override { return target_->Remove(path); }
  Status CreateDir(const std::string& path) override { return target_->CreateDir(path); }
  Status RemoveDir(const std::string& path) override { return target_->RemoveDir(path); }
  Status SyncDir(const std::string& path) override { return target_->SyncDir(path); }
  Result<std::vector<std::string>> ListDir(const std::string& path) override {
    return target_->ListDir(path);
  }
  Result<FileInfo> Stat(const std::string& path) override { return target_->Stat(path); }
  Result<std::unique_ptr<FileLock>> LockFile(const std::string& path) override {
    return target_->LockFile(path);
  }
  uint64_t NowMicros() override { return target_->NowMicros(); }
  Result<FsSpace> SpaceOf(const std::string& path) override { return target_->SpaceOf(path); }
  Result<std::unique_ptr<Confinement>> Confine(const std::string& root) override {
    return target_->Confine(root);
  }
  Status CrashPoint(std::string_view name) override { return target_->CrashPoint(name); }

 private:
  Env* const target_;
};

// Joins path components with exactly one '/'.
std::string JoinPath(std::string_view a, std::string_view b);
std::string DirName(const std::string& path);
// The lexically normalised absolute form of path (relative to the working
// directory), without a trailing '/' ("/" stays): one spelling per path.
std::string NormalizePath(const std::string& path);

}  // namespace ovbd
