// The POSIX implementation of Env: the one place ovbdfs calls the OS for files.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <cstring>

#include "ovbd/io/env.h"
#include "ovbd/io/posix_file.h"

namespace ovbd {
namespace {

Status Errno(const std::string& what, const std::string& path) {
  int e = errno;
  return Status::IOError(what + " " + path + ": " + std::strerror(e), e);
}

class PosixLock : public FileLock {
 public:
  explicit PosixLock(int fd) : fd_(fd) {}
  ~PosixLock() override { ::close(fd_); }  // closing releases the flock

 private:
  int fd_;
};

class PosixEnv : public Env {
  // Opens `path` and insists on a regular file (no device, FIFO or directory).
  static Result<std::unique_ptr<PosixFile>> OpenRegular(const std::string& path, int flags,
                                                        const char* what) {
    int fd = ::open(path.c_str(), flags, 0644);
    if (fd < 0) return Errno(what, path);
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

 public:
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
    if (::rename(from.c_str(), to.c_str()) != 0) return Errno("rename " + from + " to", to);
    return Status::OK();
  }
  Status Remove(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return Errno("unlink", path);
    return Status::OK();
  }
  Status CreateDir(const std::string& path) override {
    if (::mkdir(path.c_str(), 0755) != 0) return Errno("mkdir", path);
    return Status::OK();
  }
  Status RemoveDir(const std::string& path) override {
    if (::rmdir(path.c_str()) != 0) return Errno("rmdir", path);
    return Status::OK();
  }
  Status SyncDir(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return Errno("open dir", path);
    Status s;
    if (::fsync(fd) != 0) s = Errno("fsync dir", path);
    ::close(fd);
    return s;
  }
  Result<std::vector<std::string>> ListDir(const std::string& path) override {
    DIR* d = ::opendir(path.c_str());
    if (!d) return Errno("opendir", path);
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
    if (::lstat(path.c_str(), &st) != 0) return Errno("stat", path);
    FileInfo fi;
    fi.size = static_cast<uint64_t>(st.st_size);
    fi.allocated = static_cast<uint64_t>(st.st_blocks) * 512;
    fi.is_dir = S_ISDIR(st.st_mode);
    fi.is_regular = S_ISREG(st.st_mode);
    fi.is_symlink = S_ISLNK(st.st_mode);
    fi.mtime_ns = static_cast<uint64_t>(st.st_mtim.tv_sec) * 1000000000ull +
                  static_cast<uint64_t>(st.st_mtim.tv_nsec);
    return fi;
  }
  Result<std::unique_ptr<FileLock>> LockFile(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) return Errno("open lock", path);
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
      int e = errno;
      ::close(fd);
      if (e == EWOULDBLOCK) return Status::Busy(path + ": locked by another process");
      errno = e;
      return Errno("flock", path);
    }
    return std::unique_ptr<FileLock>(std::make_unique<PosixLock>(fd));
  }
  Result<FsSpace> SpaceOf(const std::string& path) override {
    struct statvfs sv;
    if (::statvfs(path.c_str(), &sv) != 0) return Errno("statvfs", path);
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
};

}  // namespace

Env* Env::Default() {
  static PosixEnv env;
  return &env;
}

}  // namespace ovbd
