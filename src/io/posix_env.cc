// The POSIX implementation of Env: the one place ovbdfs calls the OS for files.
//
// Confinement (Env::Confine): a path beneath a confined root is never handed
// to the kernel as a whole. Its parent directory is opened from the root's
// descriptor with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) (or, without
// openat2, one component at a time with O_NOFOLLOW | O_DIRECTORY), and the
// operation itself runs on the last component relative to that directory
// with its no-follow variant (O_NOFOLLOW, AT_SYMLINK_NOFOLLOW, or a check of
// the last component before unlink and rename, which never follow a link but
// are refused on one all the same). So a directory of the store replaced by
// a symlink, to anywhere, makes the call fail instead of acting there.
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <map>

#include "ovbd/io/env.h"
#include "ovbd/io/mutex.h"
#include "ovbd/io/posix_env.h"
#include "ovbd/io/posix_file.h"

namespace ovbd {
namespace {

Status ErrnoStatus(int e, const std::string& what, const std::string& path) {
  return Status::IOError(what + " " + path + ": " + std::strerror(e), e);
}
Status Errno(const std::string& what, const std::string& path) {
  return ErrnoStatus(errno, what, path);
}

class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() {
    if (fd_ >= 0) ::close(fd_);
  }
  UniqueFd(UniqueFd&& o) noexcept : fd_(o.release()) {}
  UniqueFd& operator=(UniqueFd&& o) noexcept {
    if (this != &o) {
      if (fd_ >= 0) ::close(fd_);
      fd_ = o.release();
    }
    return *this;
  }
  int get() const { return fd_; }
  int release() {
    int f = fd_;
    fd_ = -1;
    return f;
  }

 private:
  int fd_ = -1;
};

FileInfo ToFileInfo(const struct stat& st) {
  FileInfo fi;
  fi.size = static_cast<uint64_t>(st.st_size);
  fi.allocated = static_cast<uint64_t>(st.st_blocks) * 512;
  fi.is_dir = S_ISDIR(st.st_mode);
  fi.is_regular = S_ISREG(st.st_mode);
  fi.is_symlink = S_ISLNK(st.st_mode);
  fi.mtime_ns = static_cast<uint64_t>(st.st_mtim.tv_sec) * 1000000000ull +
                static_cast<uint64_t>(st.st_mtim.tv_nsec);
  fi.uid = st.st_uid;
  fi.gid = st.st_gid;
  fi.mode = st.st_mode & 07777;
  return fi;
}

// A confined root: the descriptor opened when it was first confined.
struct RootDir {
  RootDir(std::string p, int f) : path(std::move(p)), fd(f) {}
  ~RootDir() { ::close(fd); }
  RootDir(const RootDir&) = delete;
  RootDir& operator=(const RootDir&) = delete;
  const std::string path;  // normalised
  const int fd;
};

// The confined roots of one PosixEnv. Shared with the Confinement objects,
// so either may go first.
class Registry {
 public:
  struct Found {
    std::shared_ptr<const RootDir> root;  // null: not beneath a confined root
    std::string rest;                     // relative to root; "" is root itself
  };

  Found Find(const std::string& path) EXCLUDES(mu_) {
    Found out;
    // Nothing confined (the tool's offline work, most tests): no cost.
    if (count_.load(std::memory_order_acquire) == 0) return out;
    const std::string norm = NormalizePath(path);
    MutexLock l(&mu_);
    size_t best = 0;
    for (const auto& [key, entry] : roots_) {
      const bool inside =
          norm.compare(0, key.size(), key) == 0 &&
          (norm.size() == key.size() || key == "/" || norm[key.size()] == '/');
      if (!inside || (out.root && key.size() <= best)) continue;
      best = key.size();
      out.root = entry.dir;
      if (norm.size() == key.size()) {
        out.rest.clear();
      } else {
        out.rest = norm.substr(key == "/" ? 1 : key.size() + 1);
      }
    }
    return out;
  }

  // Adds a reference to `key`, opening it with `open` the first time.
  Status Add(const std::string& key, const std::string& as_given) EXCLUDES(mu_) {
    MutexLock l(&mu_);
    auto it = roots_.find(key);
    if (it != roots_.end()) {
      ++it->second.refs;
      return Status::OK();
    }
    const int fd = ::open(as_given.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Errno("confine", as_given);
    roots_.emplace(key, Entry{std::make_shared<const RootDir>(key, fd), 1});
    count_.fetch_add(1, std::memory_order_release);
    return Status::OK();
  }

  void Drop(const std::string& key) EXCLUDES(mu_) {
    MutexLock l(&mu_);
    auto it = roots_.find(key);
    if (it == roots_.end() || --it->second.refs > 0) return;
    roots_.erase(it);  // calls in flight keep the descriptor until they finish
    count_.fetch_sub(1, std::memory_order_release);
  }

 private:
  struct Entry {
    std::shared_ptr<const RootDir> dir;
    int refs;
  };
  Mutex mu_;
  std::map<std::string, Entry> roots_ GUARDED_BY(mu_);
  std::atomic<size_t> count_{0};  // roots_.size(), read without the lock
};

class PosixConfinement final : public Confinement {
 public:
  PosixConfinement(std::shared_ptr<Registry> reg, std::string key)
      : reg_(std::move(reg)), key_(std::move(key)) {}
  ~PosixConfinement() override { reg_->Drop(key_); }

 private:
  std::shared_ptr<Registry> reg_;
  std::string key_;
};

class PosixLock : public FileLock {
 public:
  explicit PosixLock(int fd) : fd_(fd) {}
  ~PosixLock() override { ::close(fd_); }  // closing releases the flock

 private:
  int fd_;
};

// Whether openat2 may be tried; cleared for good the first time the kernel
// says it does not have it.
std::atomic<bool> g_have_openat2{true};

class PosixEnv : public Env {
 public:
  explicit PosixEnv(const PosixEnvOptions& opts)
      : use_openat2_(opts.use_openat2), reg_(std::make_shared<Registry>()) {}

  Result<std::unique_ptr<ReadableFile>> OpenReadable(const std::string& path) override {
    // O_NONBLOCK: a FIFO planted in the store must not hang the open.
    OVBD_ASSIGN_OR_RETURN(auto f, OpenRegular(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK,
                                              "open"));
    return std::unique_ptr<ReadableFile>(std::move(f));
  }

  Result<std::unique_ptr<RWFile>> OpenRW(const std::string& path, bool create) override {
    int flags = O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK;
    if (create) flags |= O_CREAT | O_EXCL;
    OVBD_ASSIGN_OR_RETURN(auto f, OpenRegular(path, flags, create ? "create" : "open"));
    return std::unique_ptr<RWFile>(std::move(f));
  }

  Status Rename(const std::string& from, const std::string& to) override {
    const std::string what = "rename " + from + " to";
    Target f, t;
    OVBD_RETURN_IF_ERROR(ResolveParent(from, "rename", &f));
    OVBD_RETURN_IF_ERROR(ResolveParent(to, what, &t));
    OVBD_RETURN_IF_ERROR(RefuseLink(f, "rename", from, /*must_exist=*/false));
    OVBD_RETURN_IF_ERROR(RefuseLink(t, what, to, /*must_exist=*/false));
    if (::renameat(f.dirfd, f.name.c_str(), t.dirfd, t.name.c_str()) != 0) {
      const int e = errno;
      return Failed(e, what, to, t.confined ? t : f);
    }
    return Status::OK();
  }

  Status Remove(const std::string& path) override {
    Target t;
    OVBD_RETURN_IF_ERROR(ResolveParent(path, "unlink", &t));
    OVBD_RETURN_IF_ERROR(RefuseLink(t, "unlink", path, false));
    if (::unlinkat(t.dirfd, t.name.c_str(), 0) != 0) return Failed(errno, "unlink", path, t);
    return Status::OK();
  }

  Status CreateDir(const std::string& path) override {
    Target t;
    OVBD_RETURN_IF_ERROR(ResolveParent(path, "mkdir", &t));
    if (::mkdirat(t.dirfd, t.name.c_str(), 0755) != 0) return Failed(errno, "mkdir", path, t);
    return Status::OK();
  }

  Status RemoveDir(const std::string& path) override {
    Target t;
    OVBD_RETURN_IF_ERROR(ResolveParent(path, "rmdir", &t));
    if (::unlinkat(t.dirfd, t.name.c_str(), AT_REMOVEDIR) != 0) {
      return Failed(errno, "rmdir", path, t);
    }
    return Status::OK();
  }

  Status SyncDir(const std::string& path) override {
    OVBD_ASSIGN_OR_RETURN(UniqueFd fd, OpenDir(path, "open dir"));
    if (::fsync(fd.get()) != 0) return Errno("fsync dir", path);
    return Status::OK();
  }

  Result<std::vector<std::string>> ListDir(const std::string& path) override {
    OVBD_ASSIGN_OR_RETURN(UniqueFd fd, OpenDir(path, "opendir"));
    DIR* d = ::fdopendir(fd.get());
    if (!d) return Errno("opendir", path);
    fd.release();  // the DIR owns it now
    std::vector<std::string> out;
    while (struct dirent* e = ::readdir(d)) {
      std::string n = e->d_name;
      if (n != "." && n != "..") out.push_back(std::move(n));
    }
    ::closedir(d);
    return out;
  }

  Result<FileInfo> Stat(const std::string& path) override {
    struct stat st;
    Registry::Found where = reg_->Find(path);
    if (!where.root) {
      if (::lstat(path.c_str(), &st) != 0) return Errno("stat", path);
      return ToFileInfo(st);
    }
    if (where.rest.empty()) {
      if (::fstat(where.root->fd, &st) != 0) return Errno("stat", path);
      return ToFileInfo(st);
    }
    Target t;
    OVBD_RETURN_IF_ERROR(ResolveParent(path, "stat", &t));
    if (::fstatat(t.dirfd, t.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return Failed(errno, "stat", path, t);
    }
    if (S_ISLNK(st.st_mode)) return LinkError("stat", path, t, t.rest);
    return ToFileInfo(st);
  }

  Result<std::unique_ptr<FileLock>> LockFile(const std::string& path) override {
    Target t;
    OVBD_RETURN_IF_ERROR(ResolveParent(path, "open lock", &t));
    int fd = ::openat(t.dirfd, t.name.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) return Failed(errno, "open lock", path, t);
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      int e = errno;
      ::close(fd);
      if (e == EWOULDBLOCK) return Status::Busy(path + ": locked by another process");
      return ErrnoStatus(e, "flock", path);
    }
    return std::unique_ptr<FileLock>(std::make_unique<PosixLock>(fd));
  }

  Result<FsSpace> SpaceOf(const std::string& path) override {
    struct statvfs sv;
    Registry::Found where = reg_->Find(path);
    if (!where.root) {
      if (::statvfs(path.c_str(), &sv) != 0) return Errno("statvfs", path);
    } else if (where.rest.empty()) {
      if (::fstatvfs(where.root->fd, &sv) != 0) return Errno("statvfs", path);
    } else {
      Target t;
      OVBD_RETURN_IF_ERROR(ResolveParent(path, "statvfs", &t));
      UniqueFd fd(::openat(t.dirfd, t.name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
      if (fd.get() < 0) return Failed(errno, "statvfs", path, t);
      struct stat st;
      if (::fstat(fd.get(), &st) != 0) return Errno("statvfs", path);
      if (S_ISLNK(st.st_mode)) return LinkError("statvfs", path, t, t.rest);
      if (::fstatvfs(fd.get(), &sv) != 0) return Errno("statvfs", path);
    }
    FsSpace s;
    s.block_size = sv.f_frsize;
    s.blocks = sv.f_blocks;
    s.blocks_free = sv.f_bfree;
    s.blocks_avail = sv.f_bavail;
    return s;
  }

  uint64_t NowMicros() override {
    struct timespec ts;
    ::clock_gettime(CLOCK_REALTIME, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000ull + static_cast<uint64_t>(ts.tv_nsec) / 1000;
  }

  Result<std::unique_ptr<Confinement>> Confine(const std::string& root) override {
    const std::string key = NormalizePath(root);
    OVBD_RETURN_IF_ERROR(reg_->Add(key, root));
    return std::unique_ptr<Confinement>(std::make_unique<PosixConfinement>(reg_, key));
  }

 private:
  // Where a call acts: a name relative to a directory descriptor. Outside
  // every confined root (and for a confined root itself) that is the path as
  // given, relative to the working directory, exactly as before confinement.
  struct Target {
    int dirfd = AT_FDCWD;
    std::string name;
    bool confined = false;
    std::shared_ptr<const RootDir> root;  // keeps dirfd alive when it is the root's
    std::string rest;                     // the path below root (confined only)
    UniqueFd owned;                       // the parent directory, opened here
  };

  Status ResolveParent(const std::string& path, const std::string& what, Target* t) {
    Registry::Found where = reg_->Find(path);
    if (!where.root || where.rest.empty()) {
      t->name = path;
      return Status::OK();
    }
    t->confined = true;
    t->root = where.root;
    t->rest = where.rest;
    const size_t slash = where.rest.rfind('/');
    if (slash == std::string::npos) {
      t->dirfd = where.root->fd;
      t->name = where.rest;
      return Status::OK();
    }
    const std::string dir = where.rest.substr(0, slash);
    t->name = where.rest.substr(slash + 1);
    int fd = OpenDirBeneath(*where.root, dir);
    if (fd < 0) return Failed(errno, what, path, *t);
    t->owned = UniqueFd(fd);
    t->dirfd = fd;
    return Status::OK();
  }

  // An O_PATH descriptor of the directory `rel` beneath root, reached without
  // following any symlink; -1 with errno set on failure.
  int OpenDirBeneath(const RootDir& root, const std::string& rel) {
    if (use_openat2_ && g_have_openat2.load(std::memory_order_relaxed)) {
      struct open_how how;
      std::memset(&how, 0, sizeof how);
      how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
      how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
      for (int attempt = 0; attempt < 8; ++attempt) {
        const long fd = ::syscall(SYS_openat2, root.fd, rel.c_str(), &how, sizeof how);
        if (fd >= 0) return static_cast<int>(fd);
        if (errno == EAGAIN || errno == EINTR) continue;  // a concurrent rename; retry
        if (errno != ENOSYS) return -1;
        g_have_openat2.store(false, std::memory_order_relaxed);
        break;
      }
      if (g_have_openat2.load(std::memory_order_relaxed)) return -1;
    }
    // One component at a time; no "." or ".." remain after normalisation.
    UniqueFd cur;
    int at = root.fd;
    size_t pos = 0;
    while (pos <= rel.size()) {
      size_t next = rel.find('/', pos);
      if (next == std::string::npos) next = rel.size();
      const std::string comp = rel.substr(pos, next - pos);
      pos = next + 1;
      if (comp.empty()) continue;
      int fd = ::openat(at, comp.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0) return -1;
      cur = UniqueFd(fd);
      at = fd;
    }
    if (cur.get() < 0) return ::fcntl(root.fd, F_DUPFD_CLOEXEC, 0);
    return cur.release();
  }

  // A descriptor of the directory `path` that fsync and readdir accept.
  Result<UniqueFd> OpenDir(const std::string& path, const std::string& what) {
    Registry::Found where = reg_->Find(path);
    int fd;
    if (!where.root) {
      fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (fd < 0) return Errno(what, path);
      return UniqueFd(fd);
    }
    if (where.rest.empty()) {
      fd = ::openat(where.root->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      if (fd < 0) return Errno(what, path);
      return UniqueFd(fd);
    }
    Target t;
    OVBD_RETURN_IF_ERROR(ResolveParent(path, what, &t));
    fd = ::openat(t.dirfd, t.name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return Failed(errno, what, path, t);
    return UniqueFd(fd);
  }

  // Opens `path` and insists on a regular file (no device, FIFO or directory).
  Result<std::unique_ptr<PosixFile>> OpenRegular(const std::string& path, int flags,
                                                 const char* what) {
    Target t;
    OVBD_RETURN_IF_ERROR(ResolveParent(path, what, &t));
    int fd = ::openat(t.dirfd, t.name.c_str(), flags, 0644);
    if (fd < 0) return Failed(errno, what, path, t);
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      Status s = Errno("fstat", path);
      ::close(fd);
      return s;
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd);
      return Status::InvalidArgument(path + ": not a regular file");
    }
    return std::make_unique<PosixFile>(fd, path, static_cast<uint64_t>(st.st_size));
  }

  // unlink and rename never follow a link at the last component, but beneath
  // a confined root a link there is refused like anywhere else.
  Status RefuseLink(const Target& t, const std::string& what, const std::string& path,
                    bool must_exist) {
    if (!t.confined) return Status::OK();
    struct stat st;
    if (::fstatat(t.dirfd, t.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT && !must_exist) return Status::OK();
      return Failed(errno, what, path, t);
    }
    if (S_ISLNK(st.st_mode)) return LinkError(what, path, t, t.rest);
    return Status::OK();
  }

  // The error for a failed call on t. Beneath a confined root, ELOOP, ENOTDIR
  // and EXDEV usually mean a symlink on the way, and EEXIST one in the place
  // of what was to be created: name it.
  Status Failed(int e, const std::string& what, const std::string& path, const Target& t) {
    if (!t.confined) return ErrnoStatus(e, what, path);
    if (e == EEXIST) {
      // An exclusive create (file, directory) over a link: say so.
      struct stat st;
      if (::fstatat(t.dirfd, t.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 &&
          S_ISLNK(st.st_mode)) {
        return LinkError(what, path, t, t.rest);
      }
      return ErrnoStatus(e, what, path);
    }
    if (e != ELOOP && e != ENOTDIR && e != EXDEV) return ErrnoStatus(e, what, path);
    // Find the first component that is a link (each prefix is reached only
    // through the real directories before it).
    for (size_t end = 0; end != std::string::npos;) {
      end = t.rest.find('/', end + 1);
      const std::string prefix = t.rest.substr(0, end);
      struct stat st;
      if (::fstatat(t.root->fd, prefix.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) break;
      if (S_ISLNK(st.st_mode)) return LinkError(what, path, t, prefix);
    }
    if (e == EXDEV) {
      return Status::IOError(what + " " + path + ": resolves outside " + t.root->path, EXDEV);
    }
    return ErrnoStatus(e, what, path);
  }

  static Status LinkError(const std::string& what, const std::string& path, const Target& t,
                          const std::string& prefix) {
    return Status::IOError(what + " " + path + ": " + JoinPath(t.root->path, prefix) +
                               " is a symbolic link (never followed inside " + t.root->path + ")",
                           ELOOP);
  }

  const bool use_openat2_;
  const std::shared_ptr<Registry> reg_;
};

}  // namespace

std::string NormalizePath(const std::string& path) {
  std::filesystem::path fp(path);
  if (fp.is_relative()) {
    std::error_code ec;
    auto abs = std::filesystem::absolute(fp, ec);  // against the working directory
    if (!ec) fp = abs;
  }
  std::string s = fp.lexically_normal().string();
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

std::unique_ptr<Env> NewPosixEnv(const PosixEnvOptions& opts) {
  return std::make_unique<PosixEnv>(opts);
}

Env* Env::Default() {
  static PosixEnv env{PosixEnvOptions{}};
  return &env;
}

}  // namespace ovbd
