#include "ovbd/io/mounts.h"
#include "startup_checks.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

namespace ovbd::fuse {

namespace {

constexpr char kFuseDevice[] = "/dev/fuse";
constexpr char kFusermount[] = "fusermount3";
// Where libfuse looks for it first (FUSERMOUNT_DIR of Debian's build);
// then it searches PATH.
constexpr char kFusermountDir[] = "/usr/bin";

bool Executable(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

bool FusermountFound() {
  if (Executable(std::string(kFusermountDir) + "/" + kFusermount)) return true;
  const char* path = std::getenv("PATH");
  if (!path) return false;
  std::stringstream dirs(path);
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    if (!dir.empty() && Executable(dir + "/" + kFusermount)) return true;
  }
  return false;
}

// Whether /etc/fuse.conf has a user_allow_other line.
bool UserAllowOther() {
  std::ifstream in("/etc/fuse.conf");
  std::string line;
  while (std::getline(in, line)) {
    const size_t b = line.find_first_not_of(" \t");
    if (b != std::string::npos && line.compare(b, 16, "user_allow_other") == 0) return true;
  }
  return false;
}

std::string FirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

// "ovbdfs /srv/store /mnt/disks -f": the command line of `pid`, shortened.
std::string CommandOf(const std::string& pid) {
  std::ifstream in("/proc/" + pid + "/cmdline", std::ios::binary);
  std::string raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string out;
  for (char c : raw) out.push_back(c == '\0' ? ' ' : c);
  while (!out.empty() && out.back() == ' ') out.pop_back();
  if (out.empty()) out = FirstLine("/proc/" + pid + "/comm");
  if (out.size() > 120) out = out.substr(0, 117) + "...";
  return out;
}

// Processes with a descriptor open on the file (dev, ino): as root, every
// process; otherwise the caller's own.
std::vector<std::string> HoldersOf(dev_t dev, ino_t ino) {
  std::vector<std::string> out;
  DIR* proc = ::opendir("/proc");
  if (!proc) return out;
  const std::string self = std::to_string(::getpid());
  while (dirent* e = ::readdir(proc)) {
    const std::string pid = e->d_name;
    if (pid.empty() || pid.find_first_not_of("0123456789") != std::string::npos || pid == self) continue;
    const std::string fd_dir = "/proc/" + pid + "/fd";
    DIR* fds = ::opendir(fd_dir.c_str());
    if (!fds) continue;
    bool holds = false;
    while (dirent* f = ::readdir(fds)) {
      if (f->d_name[0] == '.') continue;
      struct stat st;
      if (::stat((fd_dir + "/" + f->d_name).c_str(), &st) == 0 && st.st_dev == dev && st.st_ino == ino) {
        holds = true;
        break;
      }
    }
    ::closedir(fds);
    if (holds) out.push_back("pid " + pid + " (" + CommandOf(pid) + ")");
  }
  ::closedir(proc);
  return out;
}

}  // namespace

std::string CheckFuseDevice() {
  struct stat st;
  if (::stat(kFuseDevice, &st) == 0) return "";
  const int err = errno;
  if (err != ENOENT) return std::string(kFuseDevice) + ": " + std::strerror(err);
  return std::string(kFuseDevice) +
         " does not exist, so nothing can be mounted with FUSE here.\n"
         "  On a host: load the module, as root: modprobe fuse\n"
         "  In a container: start it with the device, e.g. docker run --device /dev/fuse "
         "--cap-add SYS_ADMIN ... (podman: --device /dev/fuse)";
}

std::string DiagnoseMountFailure(const std::string& mountpoint, bool allow_other) {
  std::string out;
  auto add = [&](const std::string& line) { out += (out.empty() ? "" : "\n") + line; };
  if (::geteuid() != 0) {
    if (!FusermountFound()) {
      add(std::string(kFusermount) + " was not found (in " + kFusermountDir +
          " or PATH); a user other than root mounts through it.\n"
          "  Install it: apt-get install fuse3");
    }
    if (::access(kFuseDevice, R_OK | W_OK) != 0) {
      struct stat st;
      std::string mode;
      if (::stat(kFuseDevice, &st) == 0) {
        char buf[16];
        std::snprintf(buf, sizeof buf, "%04o", st.st_mode & 07777);
        mode = std::string(", mode ") + buf;
      }
      add(std::string(kFuseDevice) + " is not readable and writable by uid " +
          std::to_string(::getuid()) + mode +
          ".\n  As root: chmod 0666 /dev/fuse (distributions set this mode with a udev rule)");
    }
    if (allow_other && !UserAllowOther()) {
      add("allow_other needs user_allow_other in /etc/fuse.conf for a user other than root.\n"
          "  As root: echo user_allow_other >> /etc/fuse.conf (or mount without allow_other)");
    }
  }
  if (std::string mp = DiagnoseMountPoint(mountpoint); !mp.empty()) add(mp);
  return out;
}

std::string DiagnoseMountPoint(const std::string& mountpoint) {
  struct stat st;
  if (::stat(mountpoint.c_str(), &st) == 0) {
    return S_ISDIR(st.st_mode) ? "" : "the mount point " + mountpoint + " is not a directory.";
  }
  const int err = errno;
  if (err == ENOENT) {
    return "the mount point " + mountpoint + " does not exist.\n  Create it: mkdir -p " + mountpoint;
  }
  if (err == ENOTCONN) {
    return mountpoint + " is a dead FUSE mount (its daemon has exited).\n  Clear it: fusermount3 -u " +
           mountpoint + " (as root also: umount -l " + mountpoint + ")";
  }
  return "the mount point " + mountpoint + ": " + std::strerror(err);
}

std::string DescribeStoreHolder(const std::string& store_path) {
  const std::vector<std::string> mounts = OvbdfsMountsOf(store_path);
  if (!mounts.empty()) {
    const std::string& m = mounts.front();
    return store_path + " is already mounted at " + m +
           " by another ovbdfs, which holds its lock.\n"
           "  Use that mount (" + m + "/.control; ovbd forwards its commands there),\n"
           "  or unmount it first: fusermount3 -u " + m;
  }
  std::string out = store_path + " is locked by another process";
  struct stat st;
  const std::string lock = store_path + "/lock";
  if (::stat(lock.c_str(), &st) == 0) {
    const std::vector<std::string> holders = HoldersOf(st.st_dev, st.st_ino);
    if (!holders.empty()) {
      out += ": ";
      for (size_t i = 0; i < holders.size() && i < 4; ++i) out += (i ? ", " : "") + holders[i];
    }
  }
  out += ".\n  An ovbdfs (perhaps mounted in another mount namespace) or an ovbd command is "
         "working on it:\n  unmount it or wait for the command to finish, then try again.";
  return out;
}

}  // namespace ovbd::fuse
