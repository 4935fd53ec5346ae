#include "ovbd_fs.h"

#include <fcntl.h>
#include <linux/falloc.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string_view>
#include <vector>

#include "errno_map.h"

namespace ovbd::fuse {

namespace {
constexpr double kTimeout = 1.0;
constexpr size_t kZeroBytes = 1 << 20;
// Shared source of zeros for holes; only ever read.
const char kZeros[kZeroBytes] = {};

uint64_t Now() {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}
void SetTime(struct timespec* t, uint64_t ns) {
  t->tv_sec = static_cast<time_t>(ns / 1000000000ull);
  t->tv_nsec = static_cast<long>(ns % 1000000000ull);
}
// For latencies: CLOCK_MONOTONIC through the vDSO, no system call.
uint64_t MonotonicNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}
std::string BaseName(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}
uint64_t FromTime(const struct timespec& t) {
  return static_cast<uint64_t>(t.tv_sec) * 1000000000ull + static_cast<uint64_t>(t.tv_nsec);
}

// Per-thread scratch for pieces that have no file descriptor to splice from
// (compressed layers): allocated once per thread and reused.
std::vector<char>& Scratch() {
  thread_local std::vector<char> buf;
  return buf;
}
}  // namespace

struct OvbdFs::Handle {
  enum class Kind { kVolume, kControl, kMetrics, kDir } kind;
  std::string name;
  std::shared_ptr<Volume> volume;             // kVolume
  std::unique_ptr<ControlSession> session;    // kControl
  // kVolume: the volume's counters, resolved once at open. A request that
  // records after its reply holds its own reference (the handle may be
  // gone by then).
  std::shared_ptr<VolumeMetrics> metrics;
  // kMetrics: rendered at open. Shared with each read while it replies:
  // the kernel completes the read inside the reply's writev, so a RELEASE
  // (and this handle's deletion) can run before that call has returned.
  std::shared_ptr<const std::string> text;
  // kDir: the root's listing, taken at opendir so readdir offsets stay
  // consistent.
  std::vector<std::pair<std::string, fuse_ino_t>> listing;
  // mtime: recorded at the first write through the handle, then again at
  // close if written since (one manifest write each, not one per write).
  std::atomic<bool> wrote{false};
  std::atomic<bool> mtime_pending{false};
};

OvbdFs::OvbdFs(Store* store, MountOptions opts)
    : store_(store),
      opts_(opts),
      mount_time_ns_(Now()),
      control_(store, [this] { RetireGoneNames(); }) {}

OvbdFs::~OvbdFs() = default;

uint64_t OvbdFs::Adopt(std::unique_ptr<Handle> h) {
  Handle* raw = h.get();
  MutexLock l(&handles_mu_);
  handles_.emplace(raw, std::move(h));
  return reinterpret_cast<uint64_t>(raw);
}

size_t OvbdFs::CloseLeftoverHandles() {
  std::unordered_map<Handle*, std::unique_ptr<Handle>> left;
  {
    MutexLock l(&handles_mu_);
    left.swap(handles_);
  }
  for (auto& [raw, h] : left) {
    spdlog::debug("closing {} at unmount: its release never came", h->name);
    CloseHandle(raw);
  }
  return left.size();
}

Caller OvbdFs::CallerOf(fuse_req_t req) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  Caller c;
  c.uid = ctx->uid;
  c.gid = ctx->gid;
  // Supplementary groups come from /proc of the calling thread; when that
  // fails (it has exited) the caller has only its primary group, which can
  // only take permissions away.
  std::vector<gid_t> groups(32);
  int n = fuse_req_getgroups(req, static_cast<int>(groups.size()), groups.data());
  if (n > static_cast<int>(groups.size())) {
    groups.resize(static_cast<size_t>(n));
    n = fuse_req_getgroups(req, n, groups.data());
  }
  if (n > 0) c.groups.assign(groups.begin(), groups.begin() + std::min<int>(n, static_cast<int>(groups.size())));
  return c;
}

Status OvbdFs::UpdateAttrs(const std::string& name, const std::function<void(FileAttrs*)>& change) {
  MutexLock lk(&attrs_mu_);
  OVBD_ASSIGN_OR_RETURN(VolumeInfo info, store_->Lookup(name));
  FileAttrs a = info.attrs;
  change(&a);
  return store_->SetAttrs(name, a);
}

void OvbdFs::RecordMtime(const std::string& name) {
  const uint64_t now = Now();
  Status s = UpdateAttrs(name, [now](FileAttrs* a) { a->mtime_ns = a->ctime_ns = now; });
  if (!s.ok() && !s.IsNotFound()) spdlog::warn("recording the mtime of {}: {}", name, s.ToString());
}

fuse_ino_t OvbdFs::InoFor(const std::string& name) {
  MutexLock lk(&ino_mu_);
  auto it = ino_by_name_.find(name);
  if (it != ino_by_name_.end()) return it->second;
  fuse_ino_t ino = next_ino_++;
  ino_by_name_[name] = ino;
  name_by_ino_[ino] = name;
  return ino;
}

bool OvbdFs::NameFor(fuse_ino_t ino, std::string* name) {
  MutexLock lk(&ino_mu_);
  auto it = name_by_ino_.find(ino);
  if (it == name_by_ino_.end()) return false;
  *name = it->second;
  return true;
}

void OvbdFs::RetireGoneNames() {
  // One listing (sorted by name, as the map is), merged against the map.
  const std::vector<VolumeInfo> live = store_->List();
  MutexLock lk(&ino_mu_);
  auto l = live.begin();
  for (auto it = ino_by_name_.begin(); it != ino_by_name_.end();) {
    while (l != live.end() && l->name < it->first) ++l;
    if (l != live.end() && l->name == it->first) {
      ++it;
    } else {
      name_by_ino_.erase(it->second);
      it = ino_by_name_.erase(it);
    }
  }
}

std::string OvbdFs::RenderMetrics() { return RenderStoreMetrics(*store_, &metrics_); }

std::string OvbdFs::LayerNamedBy(const Handle* h, const Status& s) {
  // Error path only: the messages of layer and upper errors start with the
  // path of the file (see ReadableFile::Name()).
  const std::string& msg = s.message();
  std::shared_ptr<const Stack> st = h->volume->stack();
  const size_t n = st->lowers.size();
  for (size_t i = n; i-- > 0;) {
    const std::string base = BaseName(st->lowers[i]->file().Name());
    if (!base.empty() && msg.find(base) != std::string::npos) {
      return "layer " + std::to_string(i + 1) + " of " + std::to_string(n) + " (" + base + ")";
    }
  }
  if (st->upper && st->upper->data_file()) {
    const std::string base = BaseName(st->upper->data_file()->Name());
    if (!base.empty() && msg.find(base) != std::string::npos) return "the upper (" + base + ")";
  }
  return "";
}

void OvbdFs::ReplyIoError(fuse_req_t req, Handle* h, VolumeMetrics* m, IoOp op, uint64_t off,
                          uint64_t len, uint64_t start_ns, const Status& s) {
  const int err = ToErrno(s);
  if (s.code() == Status::Code::kCorruption || s.code() == Status::Code::kIOError) {
    io_errors_.Report(h->name, IoOpName(op), off, len, LayerNamedBy(h, s), s);
  } else {
    spdlog::debug("{} {} offset {} length {}: {}", IoOpName(op), h->name, off, len, s.ToString());
  }
  m->RecordError(op, MonotonicNs() - start_ns);
  fuse_reply_err(req, err);
}

void OvbdFs::ReplyError(fuse_req_t req, const Status& s, const char* op, const std::string& what) {
  const int err = ToErrno(s);
  if (s.code() == Status::Code::kCorruption || s.code() == Status::Code::kIOError) {
    spdlog::error("{} {}: {}", op, what, s.ToString());
  } else {
    spdlog::debug("{} {}: {}", op, what, s.ToString());
  }
  fuse_reply_err(req, err);
}

void OvbdFs::FillVolumeAttr(const VolumeInfo& v, fuse_ino_t ino, struct stat* st) {
  std::memset(st, 0, sizeof *st);
  st->st_ino = ino;
  uint32_t mode = v.attrs.mode & 07777;
  if (v.is_snapshot || opts_.read_only) mode &= ~0222u;
  st->st_mode = S_IFREG | mode;
  st->st_nlink = 1;
  st->st_uid = v.attrs.uid;
  st->st_gid = v.attrs.gid;
  st->st_size = static_cast<off_t>(v.size);
  st->st_blksize = 4096;
  SetTime(&st->st_atim, v.attrs.atime_ns);
  SetTime(&st->st_mtim, v.attrs.mtime_ns);
  SetTime(&st->st_ctim, v.attrs.ctime_ns);
  // Blocks: what the upper takes (the volume's own, unshared space), so
  // `du` shows how much a volume has diverged from its layers.
  st->st_blocks = static_cast<blkcnt_t>(v.allocated / 512);
}

Status OvbdFs::FillAttr(fuse_ino_t ino, struct stat* st) {
  std::memset(st, 0, sizeof *st);
  st->st_ino = ino;
  st->st_uid = opts_.uid;
  st->st_gid = opts_.gid;
  SetTime(&st->st_atim, mount_time_ns_);
  SetTime(&st->st_mtim, mount_time_ns_);
  SetTime(&st->st_ctim, mount_time_ns_);
  if (ino == kRootIno) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    return Status::OK();
  }
  if (ino == kControlIno) {
    // Only the mounting user may run commands; with allow_other its group
    // may too (documented in docs/CONTROL.md).
    st->st_mode = S_IFREG | (opts_.allow_other ? 0660 : 0600);
    st->st_nlink = 1;
    return Status::OK();
  }
  if (ino == kMetricsIno) {
    // Readable by anyone who can see the mount. Its text is made at each
    // open, so it is as new as the time of the stat (size unknown: reads go
    // to EOF).
    st->st_mode = S_IFREG | 0444;
    st->st_nlink = 1;
    const uint64_t now = Now();
    SetTime(&st->st_mtim, now);
    SetTime(&st->st_ctim, now);
    return Status::OK();
  }
  std::string name;
  if (!NameFor(ino, &name)) return Status::NotFound("stale inode");
  OVBD_ASSIGN_OR_RETURN(VolumeInfo v, store_->Lookup(name));
  FillVolumeAttr(v, ino, st);
  return Status::OK();
}

void OvbdFs::Init(void* userdata, fuse_conn_info* conn) {
  auto* fs = static_cast<OvbdFs*>(userdata);
  conn->max_read = fs->opts_.max_read;
  // Large requests, many in flight, zero-copy replies where possible.
  conn->max_write = 1 << 20;
  conn->max_readahead = 1 << 20;
  conn->max_background = 128;
  conn->congestion_threshold = 96;
  if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
  // No SPLICE_MOVE: with it the kernel steals the spliced pages out of the
  // layer's (or upper's) page cache into this file's whenever it fills the
  // latter (buffered reads, readahead), so one `cat` of a volume evicts the
  // layer that every clone and every O_DIRECT reader of it is served from
  // (measured: 1 GiB cached -> 1 MiB, O_DIRECT reads at disk speed until it
  // is read back). Copying from the pipe keeps the layer cached.
  conn->want &= ~FUSE_CAP_SPLICE_MOVE;
  if (conn->capable & FUSE_CAP_ASYNC_DIO) conn->want |= FUSE_CAP_ASYNC_DIO;
  // Our writes are the only writes: keep clean pages across opens.
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  // No writeback cache: a write is in the upper when it is acknowledged.
  conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
}

void OvbdFs::Lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  OvbdFs* fs = Self(req);
  if (parent != kRootIno) return (void)fuse_reply_err(req, ENOENT);
  fuse_entry_param e{};
  e.attr_timeout = kTimeout;
  e.entry_timeout = 0;  // volumes come and go through .control
  if (std::strcmp(name, kControlName) == 0) {
    e.ino = kControlIno;
    (void)fs->FillAttr(kControlIno, &e.attr);
    return (void)fuse_reply_entry(req, &e);
  }
  if (std::strcmp(name, kMetricsName) == 0) {  // no volume name starts with '.'
    e.ino = kMetricsIno;
    (void)fs->FillAttr(kMetricsIno, &e.attr);
    return (void)fuse_reply_entry(req, &e);
  }
  auto v = fs->store_->Lookup(name);
  if (!v.ok()) {
    // Names that can never exist are still plain ENOENT to the caller.
    return (void)fuse_reply_err(req, ENOENT);
  }
  e.ino = fs->InoFor(name);
  fs->FillVolumeAttr(v.value(), e.ino, &e.attr);
  fuse_reply_entry(req, &e);
}

void OvbdFs::GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  OvbdFs* fs = Self(req);
  struct stat st;
  Status s = fs->FillAttr(ino, &st);
  if (!s.ok()) return fs->ReplyError(req, s, "getattr", std::to_string(ino));
  fuse_reply_attr(req, &st, kTimeout);
}

void OvbdFs::SetAttr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                     fuse_file_info*) {
  OvbdFs* fs = Self(req);
  std::string name;
  if (ino == kMetricsIno) return (void)fuse_reply_err(req, EPERM);
  if (ino == kRootIno || ino == kControlIno) {
    // Truncation of .control (shell `>` redirection) is harmless; the rest
    // of the root's and control file's attributes are fixed.
    if ((to_set & ~(FUSE_SET_ATTR_SIZE | FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME |
                    FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW | FUSE_SET_ATTR_CTIME)) != 0) {
      return (void)fuse_reply_err(req, EPERM);
    }
    struct stat st;
    (void)fs->FillAttr(ino, &st);
    return (void)fuse_reply_attr(req, &st, kTimeout);
  }
  if (!fs->NameFor(ino, &name)) return (void)fuse_reply_err(req, ENOENT);
  if (fs->opts_.read_only) return (void)fuse_reply_err(req, EROFS);
  auto info = fs->store_->Lookup(name);
  if (!info.ok()) return fs->ReplyError(req, info.status(), "setattr", name);
  if (to_set & FUSE_SET_ATTR_SIZE) {
    if (info->is_snapshot) return (void)fuse_reply_err(req, EROFS);
    const uint64_t want = static_cast<uint64_t>(attr->st_size);
    if (want != info->size) {
      Status s = fs->store_->Resize(name, want);
      if (!s.ok()) {
        spdlog::warn("truncate {} to {}: {}", name, want, s.ToString());
        return fs->ReplyError(req, s, "truncate", name);
      }
    }
  }
  const uint64_t now = Now();
  if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID | FUSE_SET_ATTR_ATIME |
                FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW)) {
    Status s = fs->UpdateAttrs(name, [&](FileAttrs* a) {
      if (to_set & FUSE_SET_ATTR_MODE) a->mode = attr->st_mode & 07777;
      if (to_set & FUSE_SET_ATTR_UID) a->uid = attr->st_uid;
      if (to_set & FUSE_SET_ATTR_GID) a->gid = attr->st_gid;
      if (to_set & FUSE_SET_ATTR_ATIME) a->atime_ns = FromTime(attr->st_atim);
      if (to_set & FUSE_SET_ATTR_MTIME) a->mtime_ns = FromTime(attr->st_mtim);
      if (to_set & FUSE_SET_ATTR_ATIME_NOW) a->atime_ns = now;
      if (to_set & FUSE_SET_ATTR_MTIME_NOW) a->mtime_ns = now;
      a->ctime_ns = now;
    });
    if (!s.ok()) return fs->ReplyError(req, s, "setattr", name);
  }
  struct stat st;
  Status s = fs->FillAttr(ino, &st);
  if (!s.ok()) return fs->ReplyError(req, s, "setattr", name);
  fuse_reply_attr(req, &st, kTimeout);
}

void OvbdFs::OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  if (ino != kRootIno) return (void)fuse_reply_err(req, ENOTDIR);
  OvbdFs* fs = Self(req);
  auto h = std::make_unique<Handle>();
  h->kind = Handle::Kind::kDir;
  h->name = "/";
  auto& names = h->listing;
  names.emplace_back(".", kRootIno);
  names.emplace_back("..", kRootIno);
  names.emplace_back(kControlName, kControlIno);
  names.emplace_back(kMetricsName, kMetricsIno);
  for (const auto& v : fs->store_->List()) names.emplace_back(v.name, fs->InoFor(v.name));
  fi->fh = fs->Adopt(std::move(h));
  fuse_reply_open(req, fi);
}

void OvbdFs::ReadDir(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  const auto& names = reinterpret_cast<Handle*>(fi->fh)->listing;
  std::vector<char> buf(size);
  size_t used = 0;
  for (size_t i = static_cast<size_t>(off); i < names.size(); ++i) {
    struct stat st {};
    st.st_ino = names[i].second;
    st.st_mode = names[i].second == kRootIno ? S_IFDIR : S_IFREG;
    size_t n = fuse_add_direntry(req, buf.data() + used, size - used, names[i].first.c_str(), &st,
                                 static_cast<off_t>(i + 1));
    if (n > size - used) break;
    used += n;
  }
  fuse_reply_buf(req, buf.data(), used);
}

void OvbdFs::ReleaseDir(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  Self(req)->CloseHandle(reinterpret_cast<Handle*>(fi->fh));
  fuse_reply_err(req, 0);
}

void OvbdFs::Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  OvbdFs* fs = Self(req);
  const bool wants_write = (fi->flags & O_ACCMODE) != O_RDONLY;
  if (ino == kControlIno) {
    auto h = std::make_unique<Handle>();
    h->kind = Handle::Kind::kControl;
    h->name = kControlName;
    h->session = fs->control_.NewSession();
    fi->fh = fs->Adopt(std::move(h));
    fi->direct_io = 1;  // results are generated per read
    fi->nonseekable = 1;
    return (void)fuse_reply_open(req, fi);
  }
  if (ino == kMetricsIno) {
    // Root passes the mode bits' check in the kernel: refuse writers here.
    if (wants_write || (fi->flags & O_TRUNC)) return (void)fuse_reply_err(req, EACCES);
    auto h = std::make_unique<Handle>();
    h->kind = Handle::Kind::kMetrics;
    h->name = kMetricsName;
    // One consistent view for the whole read.
    h->text = std::make_shared<const std::string>(fs->RenderMetrics());
    fi->fh = fs->Adopt(std::move(h));
    fi->direct_io = 1;  // the size is not known before the open
    return (void)fuse_reply_open(req, fi);
  }
  std::string name;
  if (!fs->NameFor(ino, &name)) return (void)fuse_reply_err(req, ENOENT);
  if (wants_write && fs->opts_.read_only) return (void)fuse_reply_err(req, EROFS);
  auto info = fs->store_->Lookup(name);
  if (!info.ok()) return fs->ReplyError(req, info.status(), "open", name);
  if (wants_write && info->is_snapshot) return (void)fuse_reply_err(req, EROFS);
  // A disk cannot be emptied: O_TRUNC (shell `>`) would silently keep the
  // old bytes past what is written, so it is refused, like a truncate to a
  // smaller size (docs/CONTROL.md and README: grow-only).
  if (fi->flags & O_TRUNC) return (void)fuse_reply_err(req, EINVAL);
  auto v = fs->store_->Acquire(name);
  if (!v.ok()) return fs->ReplyError(req, v.status(), "open", name);
  auto h = std::make_unique<Handle>();
  h->kind = Handle::Kind::kVolume;
  h->name = name;
  h->volume = v.value();
  h->metrics = fs->metrics_.ForVolume(name);
  spdlog::debug("open {} for {}", name, wants_write ? "writing" : "reading");
  fi->fh = fs->Adopt(std::move(h));
  fi->keep_cache = 1;  // only we change the bytes, and we do it through this mount
  fuse_reply_open(req, fi);
}

void OvbdFs::Read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  OvbdFs* fs = Self(req);
  auto* h = reinterpret_cast<Handle*>(fi->fh);
  if (h->kind == Handle::Kind::kControl) {
    // nonseekable: every read continues where the last one stopped. The
    // bytes are ours (a copy) before the reply, which is the last thing.
    const std::string part = h->session->Read(size);
    fuse_reply_buf(req, part.data(), part.size());
    return;
  }
  if (h->kind == Handle::Kind::kMetrics) {
    const std::shared_ptr<const std::string> text = h->text;  // outlives the reply
    const size_t at = std::min(text->size(), static_cast<size_t>(std::max<off_t>(off, 0)));
    fuse_reply_buf(req, text->data() + at, std::min(size, text->size() - at));
    return;
  }
  const uint64_t t0 = MonotonicNs();
  VolumeMetrics* m = h->metrics.get();
  spdlog::trace("read {} offset {} length {}", h->name, off, size);
  auto plan = h->volume->PlanRead(static_cast<uint64_t>(off), size);
  if (!plan.ok()) {
    return fs->ReplyIoError(req, h, m, IoOp::kRead, static_cast<uint64_t>(off), size, t0,
                            plan.status());
  }
  const ReadPlan& p = plan.value();
  // Count the buffers; pieces without a descriptor go through scratch memory.
  size_t nbufs = 0, scratch = 0;
  for (const ReadPiece& piece : p.pieces) {
    if (!piece.file) {
      nbufs += (piece.length + kZeroBytes - 1) / kZeroBytes;
    } else {
      ++nbufs;
      if (piece.file->NativeFd() < 0) scratch += piece.length;
    }
  }
  if (nbufs == 0) {
    m->Record(IoOp::kRead, 0, MonotonicNs() - t0);
    return (void)fuse_reply_buf(req, nullptr, 0);
  }
  std::vector<char>& sbuf = Scratch();
  if (sbuf.size() < scratch) sbuf.resize(scratch);
  const size_t bytes = sizeof(fuse_bufvec) + (nbufs - 1) * sizeof(fuse_buf);
  std::unique_ptr<fuse_bufvec, void (*)(void*)> bv(static_cast<fuse_bufvec*>(std::malloc(bytes)),
                                                   std::free);
  std::memset(bv.get(), 0, bytes);
  bv->count = nbufs;
  size_t bi = 0, so = 0;
  for (const ReadPiece& piece : p.pieces) {
    if (!piece.file) {
      for (uint64_t done = 0; done < piece.length; done += kZeroBytes) {
        fuse_buf& b = bv->buf[bi++];
        b.size = std::min<uint64_t>(kZeroBytes, piece.length - done);
        b.mem = const_cast<char*>(kZeros);
      }
      continue;
    }
    fuse_buf& b = bv->buf[bi++];
    b.size = piece.length;
    const int fd = piece.file->NativeFd();
    if (fd >= 0) {
      b.flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
      b.fd = fd;
      b.pos = static_cast<off_t>(piece.file_offset);
    } else {
      size_t got = 0;
      Status s = piece.file->ReadAt(piece.file_offset, piece.length, sbuf.data() + so, &got);
      if (!s.ok()) {
        return fs->ReplyIoError(req, h, m, IoOp::kRead, static_cast<uint64_t>(off), size, t0, s);
      }
      if (got < piece.length) std::memset(sbuf.data() + so + got, 0, piece.length - got);
      b.mem = sbuf.data() + so;
      so += piece.length;
    }
  }
  // The handle may be freed once the reply is out: hold the counters.
  std::shared_ptr<VolumeMetrics> keep = h->metrics;
  const int rc = fuse_reply_data(req, bv.get(), static_cast<fuse_buf_copy_flags>(0));
  if (rc == 0) {
    m->Record(IoOp::kRead, p.length, MonotonicNs() - t0);
  } else {
    m->RecordError(IoOp::kRead, MonotonicNs() - t0);  // the kernel did not take the reply
  }
}

void OvbdFs::Write(fuse_req_t req, fuse_ino_t, const char* buf, size_t size, off_t off,
                   fuse_file_info* fi) {
  OvbdFs* fs = Self(req);
  auto* h = reinterpret_cast<Handle*>(fi->fh);
  if (h->kind == Handle::Kind::kControl) {
    // Lines run as their newlines arrive; the write returns when they are
    // done, with the error of the last one that failed.
    Status s = h->session->Write(std::string_view(buf, size), CallerOf(req));
    if (!s.ok()) return (void)fuse_reply_err(req, ToErrno(s));
    return (void)fuse_reply_write(req, size);
  }
  const uint64_t t0 = MonotonicNs();
  VolumeMetrics* m = h->metrics.get();
  spdlog::trace("write {} offset {} length {}", h->name, off, size);
  auto n = h->volume->Write(static_cast<uint64_t>(off), buf, size);
  if (!n.ok()) {
    return fs->ReplyIoError(req, h, m, IoOp::kWrite, static_cast<uint64_t>(off), size, t0,
                            n.status());
  }
  if (!h->wrote.exchange(true)) {
    fs->RecordMtime(h->name);
  } else {
    h->mtime_pending.store(true);
  }
  std::shared_ptr<VolumeMetrics> keep = h->metrics;  // outlives the handle
  fuse_reply_write(req, n.value());
  m->Record(IoOp::kWrite, n.value(), MonotonicNs() - t0);
}

void OvbdFs::Flush(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  // close(): a natural durability point (like a disk flushing its cache when
  // its user goes away). FLUSH is synchronous with close(), RELEASE is not.
  OvbdFs* fs = Self(req);
  auto* h = reinterpret_cast<Handle*>(fi->fh);
  if (h->kind == Handle::Kind::kControl) {
    // An unterminated last line runs now, and close(2) returns its error.
    Status s = h->session->Flush(CallerOf(req));
    return (void)fuse_reply_err(req, s.ok() ? 0 : ToErrno(s));
  }
  if (h->kind == Handle::Kind::kMetrics) return (void)fuse_reply_err(req, 0);
  if (h->mtime_pending.exchange(false)) fs->RecordMtime(h->name);
  if (h->volume->dirty()) return fs->FlushAndReply(req, h);
  fuse_reply_err(req, 0);
}

void OvbdFs::Fsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info* fi) {
  OvbdFs* fs = Self(req);
  auto* h = reinterpret_cast<Handle*>(fi->fh);
  if (h->kind != Handle::Kind::kVolume) return (void)fuse_reply_err(req, 0);
  fs->FlushAndReply(req, h);
}

void OvbdFs::FlushAndReply(fuse_req_t req, Handle* h) {
  const uint64_t t0 = MonotonicNs();
  VolumeMetrics* m = h->metrics.get();
  Status s = h->volume->Flush();
  if (!s.ok()) return ReplyIoError(req, h, m, IoOp::kFlush, 0, 0, t0, s);
  std::shared_ptr<VolumeMetrics> keep = h->metrics;  // outlives the handle
  fuse_reply_err(req, 0);
  m->Record(IoOp::kFlush, 0, MonotonicNs() - t0);
}

void OvbdFs::Release(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  Self(req)->CloseHandle(reinterpret_cast<Handle*>(fi->fh));
  fuse_reply_err(req, 0);
}

void OvbdFs::CloseHandle(Handle* h) {
  if (h->kind == Handle::Kind::kVolume) {
    // Writes through a handle end before its last FLUSH, which committed
    // them; commit again only if an mmap-less writer raced the close. The
    // handle count drops last: a `delete` waiting for this volume to close
    // must not run while it is still being flushed.
    if (h->mtime_pending.exchange(false)) RecordMtime(h->name);
    if (h->volume->dirty()) {
      const uint64_t t0 = MonotonicNs();
      Status s = h->volume->Flush();
      if (!s.ok()) {
        h->metrics->RecordError(IoOp::kFlush, MonotonicNs() - t0);
        io_errors_.Report(h->name, "flush on release", 0, 0, LayerNamedBy(h, s), s);
      } else {
        h->metrics->Record(IoOp::kFlush, 0, MonotonicNs() - t0);
      }
    }
    store_->Release(h->name);
    spdlog::debug("closed {}", h->name);
  } else if (h->kind == Handle::Kind::kControl) {
    h->session->Release();
  }
  std::unique_ptr<Handle> owned;  // freed outside the lock
  MutexLock l(&handles_mu_);
  auto it = handles_.find(h);
  // Absent when CloseLeftoverHandles took the table, which then owns it.
  if (it != handles_.end()) {
    owned = std::move(it->second);
    handles_.erase(it);
  }
}

void OvbdFs::Fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t off, off_t len,
                       fuse_file_info* fi) {
  OvbdFs* fs = Self(req);
  auto* h = reinterpret_cast<Handle*>(fi->fh);
  if (h->kind != Handle::Kind::kVolume) return (void)fuse_reply_err(req, EOPNOTSUPP);
  const int punch = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  if (mode == punch || mode == FALLOC_FL_ZERO_RANGE ||
      mode == (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE)) {
    const uint64_t size = h->volume->size();
    if (static_cast<uint64_t>(off) + static_cast<uint64_t>(len) > size &&
        !(mode & FALLOC_FL_KEEP_SIZE)) {
      return (void)fuse_reply_err(req, ENOSPC);  // a disk cannot grow by zeroing
    }
    const uint64_t t0 = MonotonicNs();
    VolumeMetrics* m = h->metrics.get();
    Status s = h->volume->Discard(static_cast<uint64_t>(off), static_cast<uint64_t>(len));
    if (!s.ok()) {
      return fs->ReplyIoError(req, h, m, IoOp::kDiscard, static_cast<uint64_t>(off),
                              static_cast<uint64_t>(len), t0, s);
    }
    std::shared_ptr<VolumeMetrics> keep = h->metrics;  // outlives the handle
    fuse_reply_err(req, 0);
    m->Record(IoOp::kDiscard, static_cast<uint64_t>(len), MonotonicNs() - t0);
    return;
  }
  // Preallocation has no meaning for a thin volume.
  fuse_reply_err(req, EOPNOTSUPP);
}

void OvbdFs::StatFs(fuse_req_t req, fuse_ino_t) {
  OvbdFs* fs = Self(req);
  struct statvfs sv {};
  auto space = fs->store_->env()->SpaceOf(fs->store_->dir());
  if (space.ok()) {
    sv.f_bsize = sv.f_frsize = space->block_size;
    sv.f_blocks = space->blocks;
    sv.f_bfree = space->blocks_free;
    sv.f_bavail = space->blocks_avail;
  }
  sv.f_namemax = 2 * kMaxNameLength + 1;
  fuse_reply_statfs(req, &sv);
}

const fuse_lowlevel_ops& OvbdFs::Ops() {
  static const fuse_lowlevel_ops ops = [] {
    fuse_lowlevel_ops o{};
    o.init = Init;
    o.lookup = Lookup;
    o.getattr = GetAttr;
    o.setattr = SetAttr;
    o.opendir = OpenDir;
    o.readdir = ReadDir;
    o.releasedir = ReleaseDir;
    o.open = Open;
    o.read = Read;
    o.write = Write;
    o.flush = Flush;
    o.fsync = Fsync;
    o.release = Release;
    o.fallocate = Fallocate;
    o.statfs = StatFs;
    return o;
  }();
  return ops;
}

}  // namespace ovbd::fuse
