// fuse_limit: the cost of FUSE itself on this machine, as a baseline for
// ovbdfs. It mounts a directory holding one file, `disk`, whose bytes are
// those of one plain backing file: reads are spliced from the backing
// file's page cache, writes are one pwrite into it. No index, no layers, no
// copy-on-write, no journal: what ovbdfs does beyond this is what its layers
// cost.
//
//   fuse_limit FILE MOUNTPOINT [-f] [-s] [-o threads=N,splice_move]
//
// The session is set up as ovbdfs sets up its own (src/fuse/main.cc and
// src/fuse/ovbd_fs.cc), so that the two differ only in what serves the
// requests: the same malloc tunables, max_read sized for the pipe (and
// conn->max_read equal to it), max_write and max_readahead 1 MiB,
// max_background 128, splice replies from the file descriptor with
// FUSE_BUF_FD_SEEK, keep_cache on open, no writeback cache, no automatic
// invalidation, default_permissions, entry timeout 0 and attribute timeout
// 1 s, and the multi-threaded loop with clone_fd and at most `threads`
// workers (default 8) with no idle-thread limit. The malloc tunables,
// max_read and the loop come from src/fuse/session_settings.h, as ovbdfs's
// do; keep the rest in step when ovbdfs's session settings change.
//
// -o splice_move asks for FUSE_CAP_SPLICE_MOVE and passes
// FUSE_BUF_SPLICE_MOVE with every reply (off by default, as in ovbdfs):
// see docs/PERFORMANCE.md for what the kernel does with it.
#define FUSE_USE_VERSION 312
#include <fcntl.h>
#include <fuse_lowlevel.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "session_settings.h"

namespace {

constexpr fuse_ino_t kRootIno = FUSE_ROOT_ID;
constexpr fuse_ino_t kDiskIno = 2;
constexpr const char* kDiskName = "disk";
constexpr double kAttrTimeout = 1.0;  // as ovbdfs

struct Options {
  char* file = nullptr;
  int threads = 8;
  int splice_move = 0;
  int positional = 0;
};

struct Server {
  int fd = -1;
  unsigned max_read = 1u << 20;
  bool splice_move = false;
  // The file's size, kept here so that a read costs no fstat (ovbdfs knows
  // its volume's size too); writes past it and truncation update it.
  std::atomic<off_t> size{0};
  uid_t uid = 0;
  gid_t gid = 0;
};

Server* Self(fuse_req_t req) { return static_cast<Server*>(fuse_req_userdata(req)); }

const fuse_opt kOptSpec[] = {
    {"threads=%d", offsetof(Options, threads), 0},
    {"splice_move", offsetof(Options, splice_move), 1},
    FUSE_OPT_END};

int ProcessArg(void* data, const char* arg, int key, fuse_args*) {
  auto* o = static_cast<Options*>(data);
  if (key == FUSE_OPT_KEY_NONOPT && o->positional++ == 0) {
    o->file = strdup(arg);
    return 0;  // the first positional argument is ours; the mount point is libfuse's
  }
  return 1;
}

int FillAttr(Server* s, fuse_ino_t ino, struct stat* st) {
  std::memset(st, 0, sizeof *st);
  if (ino == kRootIno) {
    st->st_ino = kRootIno;
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    st->st_uid = s->uid;
    st->st_gid = s->gid;
    return 0;
  }
  if (ino != kDiskIno) return ENOENT;
  struct stat b;
  if (fstat(s->fd, &b) != 0) return errno;
  st->st_ino = kDiskIno;
  st->st_mode = S_IFREG | 0644;
  st->st_nlink = 1;
  st->st_uid = s->uid;
  st->st_gid = s->gid;
  st->st_size = b.st_size;
  st->st_blksize = 4096;
  st->st_blocks = b.st_blocks;
  st->st_atim = b.st_atim;
  st->st_mtim = b.st_mtim;
  st->st_ctim = b.st_ctim;
  return 0;
}

void Init(void* userdata, fuse_conn_info* conn) {
  auto* s = static_cast<Server*>(userdata);
  conn->max_read = s->max_read;
  conn->max_write = 1 << 20;
  conn->max_readahead = 1 << 20;
  conn->max_background = 128;
  conn->congestion_threshold = 96;
  if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
  if (s->splice_move && (conn->capable & FUSE_CAP_SPLICE_MOVE)) conn->want |= FUSE_CAP_SPLICE_MOVE;
  if (!s->splice_move) conn->want &= ~FUSE_CAP_SPLICE_MOVE;
  if (conn->capable & FUSE_CAP_ASYNC_DIO) conn->want |= FUSE_CAP_ASYNC_DIO;
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
}

void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (parent != kRootIno || std::strcmp(name, kDiskName) != 0) {
    return (void)fuse_reply_err(req, ENOENT);
  }
  fuse_entry_param e{};
  e.ino = kDiskIno;
  e.attr_timeout = kAttrTimeout;
  e.entry_timeout = 0;
  if (int err = FillAttr(Self(req), kDiskIno, &e.attr)) return (void)fuse_reply_err(req, err);
  fuse_reply_entry(req, &e);
}

void GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  struct stat st;
  if (int err = FillAttr(Self(req), ino, &st)) return (void)fuse_reply_err(req, err);
  fuse_reply_attr(req, &st, kAttrTimeout);
}

void SetAttr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*) {
  Server* s = Self(req);
  if (ino == kDiskIno && (to_set & FUSE_SET_ATTR_SIZE)) {
    if (ftruncate(s->fd, attr->st_size) != 0) return (void)fuse_reply_err(req, errno);
    s->size.store(attr->st_size);
  }
  struct stat st;
  if (int err = FillAttr(s, ino, &st)) return (void)fuse_reply_err(req, err);
  fuse_reply_attr(req, &st, kAttrTimeout);
}

void OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (ino != kRootIno) return (void)fuse_reply_err(req, ENOTDIR);
  fuse_reply_open(req, fi);
}

void ReadDir(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info*) {
  static const struct {
    const char* name;
    fuse_ino_t ino;
    mode_t mode;
  } kEntries[] = {{".", kRootIno, S_IFDIR}, {"..", kRootIno, S_IFDIR}, {kDiskName, kDiskIno, S_IFREG}};
  char buf[512];
  size = std::min(size, sizeof buf);
  size_t used = 0;
  for (size_t i = static_cast<size_t>(off); i < std::size(kEntries); ++i) {
    struct stat st {};
    st.st_ino = kEntries[i].ino;
    st.st_mode = kEntries[i].mode;
    size_t n = fuse_add_direntry(req, buf + used, size - used, kEntries[i].name, &st,
                                 static_cast<off_t>(i + 1));
    if (n > size - used) break;
    used += n;
  }
  fuse_reply_buf(req, buf, used);
}

void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (ino != kDiskIno) return (void)fuse_reply_err(req, EISDIR);
  fi->keep_cache = 1;
  fuse_reply_open(req, fi);
}

void Read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info*) {
  Server* s = Self(req);
  const off_t end = s->size.load(std::memory_order_relaxed);
  if (off >= end) return (void)fuse_reply_buf(req, nullptr, 0);
  size = std::min<size_t>(size, static_cast<size_t>(end - off));
  fuse_bufvec bv = FUSE_BUFVEC_INIT(size);
  bv.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  bv.buf[0].fd = s->fd;
  bv.buf[0].pos = off;
  fuse_reply_data(req, &bv, s->splice_move ? FUSE_BUF_SPLICE_MOVE : static_cast<fuse_buf_copy_flags>(0));
}

void Write(fuse_req_t req, fuse_ino_t, const char* buf, size_t size, off_t off, fuse_file_info*) {
  Server* s = Self(req);
  size_t done = 0;
  while (done < size) {
    ssize_t n = pwrite(s->fd, buf + done, size - done, off + static_cast<off_t>(done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return (void)fuse_reply_err(req, errno);
    }
    done += static_cast<size_t>(n);
  }
  const off_t end = off + static_cast<off_t>(size);
  off_t cur = s->size.load(std::memory_order_relaxed);
  while (cur < end && !s->size.compare_exchange_weak(cur, end)) {
  }
  fuse_reply_write(req, size);
}

void Flush(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }

void Fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info*) {
  fuse_reply_err(req, fdatasync(Self(req)->fd) == 0 ? 0 : errno);
}

void Release(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }

void Fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t off, off_t len, fuse_file_info*) {
  fuse_reply_err(req, fallocate(Self(req)->fd, mode, off, len) == 0 ? 0 : errno);
}

void StatFs(fuse_req_t req, fuse_ino_t) {
  struct statvfs sv {};
  if (fstatvfs(Self(req)->fd, &sv) != 0) return (void)fuse_reply_err(req, errno);
  fuse_reply_statfs(req, &sv);
}

}  // namespace

int main(int argc, char** argv) {
  ovbd::fuse::TuneMallocForFuse();

  fuse_args args = FUSE_ARGS_INIT(argc, argv);
  Options o;
  if (fuse_opt_parse(&args, &o, kOptSpec, ProcessArg) != 0) return 1;
  fuse_cmdline_opts cl{};
  if (fuse_parse_cmdline(&args, &cl) != 0) return 1;
  if (!o.file || !cl.mountpoint) {
    std::fprintf(stderr, "usage: %s FILE MOUNTPOINT [-f] [-s] [-o threads=N,splice_move]\n",
                 argv[0]);
    return 1;
  }
  Server server;
  server.fd = ::open(o.file, O_RDWR | O_CLOEXEC);
  if (server.fd < 0) {
    std::fprintf(stderr, "fuse_limit: %s: %s\n", o.file, std::strerror(errno));
    return 1;
  }
  struct stat st;
  if (fstat(server.fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    std::fprintf(stderr, "fuse_limit: %s: not a regular file\n", o.file);
    return 1;
  }
  server.size.store(st.st_size);
  server.max_read = ovbd::fuse::MaxRead();
  server.splice_move = o.splice_move != 0;
  server.uid = getuid();
  server.gid = getgid();
  const std::string max_read_opt = "-omax_read=" + std::to_string(server.max_read);
  fuse_opt_add_arg(&args, max_read_opt.c_str());
  fuse_opt_add_arg(&args, "-odefault_permissions");
  const std::string fsname = std::string("-ofsname=") + o.file;
  fuse_opt_add_arg(&args, fsname.c_str());
  fuse_opt_add_arg(&args, "-osubtype=ovbd-limit");

  fuse_lowlevel_ops ops{};
  ops.init = Init;
  ops.lookup = Lookup;
  ops.getattr = GetAttr;
  ops.setattr = SetAttr;
  ops.opendir = OpenDir;
  ops.readdir = ReadDir;
  ops.open = Open;
  ops.read = Read;
  ops.write = Write;
  ops.flush = Flush;
  ops.fsync = Fsync;
  ops.release = Release;
  ops.fallocate = Fallocate;
  ops.statfs = StatFs;

  fuse_session* se = fuse_session_new(&args, &ops, sizeof(ops), &server);
  if (!se) return 1;
  int ret = 1;
  if (fuse_set_signal_handlers(se) == 0) {
    if (fuse_session_mount(se, cl.mountpoint) == 0) {
      fuse_daemonize(cl.foreground);
      ret = ovbd::fuse::RunSessionLoop(se, cl.singlethread, o.threads);
      fuse_session_unmount(se);
    }
    fuse_remove_signal_handlers(se);
  }
  fuse_session_destroy(se);
  ::close(server.fd);
  free(cl.mountpoint);
  free(o.file);
  fuse_opt_free_args(&args);
  return ret ? 1 : 0;
}
