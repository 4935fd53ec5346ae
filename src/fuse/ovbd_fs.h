// OvbdFs: the FUSE lowlevel adapter. It maps the mount's flat namespace
// (volumes, snapshots, .control, .metrics) to inodes and translates each request into
// one call on the store, a volume or the controller, and the result back
// into a reply. No storage logic lives here, and no command language: the
// `.control` file is a ControlSession per open file (src/control/), and
// `.metrics` is rendered by src/control/metrics.cc; the adapter only records
// each volume request into the counters it resolved when the file was
// opened.
//
// Lifetime rule: a handle (fi->fh) lives until RELEASE, and the kernel sends
// RELEASE only after every request on the handle has been answered. So a
// request handler must not touch its handle, or any lock in it, after it has
// sent its reply: from that moment another thread may be freeing it.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <atomic>
#include <functional>
#include <map>
#include <memory>
#include <unordered_map>
#include <string>

#include "io_error_log.h"
#include "ovbd/control/access.h"
#include "ovbd/control/metrics.h"
#include "ovbd/control/session.h"
#include "ovbd/io/mutex.h"
#include "ovbd/store/store.h"

namespace ovbd::fuse {

struct MountOptions {
  bool read_only = false;
  bool allow_other = false;
  uid_t uid = 0;  // owner of the root, .control and new volumes
  gid_t gid = 0;
  unsigned max_read = 1u << 20;  // must equal the -o max_read given to libfuse
};

class OvbdFs {
 public:
  static constexpr fuse_ino_t kRootIno = FUSE_ROOT_ID;
  static constexpr fuse_ino_t kControlIno = 2;
  static constexpr const char* kControlName = ".control";
  // Read-only; its text (the metrics, docs/METRICS.md) is made at open.
  static constexpr fuse_ino_t kMetricsIno = 3;
  static constexpr const char* kMetricsName = ".metrics";

  OvbdFs(Store* store, MountOptions opts);
  ~OvbdFs();  // Handle is complete only in ovbd_fs.cc
  static const fuse_lowlevel_ops& Ops();

  void set_session(fuse_session* se) { session_ = se; }

  // The metrics exposition (what reading .metrics returns); any thread.
  std::string RenderMetrics();

  // After the session has ended: closes the handles whose RELEASE never
  // came (the kernel may drop releases still queued at unmount), as a
  // release would, so every volume's open count is back to zero before the
  // store's final flush. Returns how many there were.
  size_t CloseLeftoverHandles() EXCLUDES(handles_mu_);

 private:
  struct Handle;
  // Every handle is owned here from open to release; fi->fh is its address.
  uint64_t Adopt(std::unique_ptr<Handle> h) EXCLUDES(handles_mu_);
  void CloseHandle(Handle* h) EXCLUDES(handles_mu_);  // a release, short of the reply
  // Commits the volume's writes, then replies (the error, or 0).
  void FlushAndReply(fuse_req_t req, Handle* h);

  // Inode numbers are handed out per name on first sight and stay stable
  // while the name exists (never reused: a name deleted and made again gets
  // a new one, see RetireGoneNames).
  fuse_ino_t InoFor(const std::string& name) EXCLUDES(ino_mu_);
  bool NameFor(fuse_ino_t ino, std::string* name) EXCLUDES(ino_mu_);
  // Forgets the inode numbers of names the store no longer has (deleted
  // volumes and snapshots), so that a volume made later under the same name
  // gets a new inode: the kernel must not serve it the page cache of the
  // deleted one (we ask for keep_cache and no auto_inval_data). Runs after
  // each .control write that deleted something, with commands held off.
  void RetireGoneNames() EXCLUDES(ino_mu_);
  // Read-modify-write of a volume's attributes (chmod, chown, utimes and
  // the mtime of writes), one at a time so that none is lost.
  Status UpdateAttrs(const std::string& name, const std::function<void(FileAttrs*)>& change)
      EXCLUDES(attrs_mu_);
  // The volume was written: its mtime (and ctime) become now.
  void RecordMtime(const std::string& name);
  static Caller CallerOf(fuse_req_t req);
  Status FillAttr(fuse_ino_t ino, struct stat* st);
  void FillVolumeAttr(const VolumeInfo& v, fuse_ino_t ino, struct stat* st);

  static OvbdFs* Self(fuse_req_t req) { return static_cast<OvbdFs*>(fuse_req_userdata(req)); }
  static void Init(void* userdata, fuse_conn_info* conn);
  static void Lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
  static void GetAttr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  static void SetAttr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set,
                      fuse_file_info* fi);
  static void OpenDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  static void ReadDir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
  static void ReleaseDir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  static void Open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  static void Read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
  static void Write(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off,
                    fuse_file_info* fi);
  static void Flush(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  static void Fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);
  static void Release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  static void Fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len,
                        fuse_file_info* fi);
  static void StatFs(fuse_req_t req, fuse_ino_t ino);

  void ReplyError(fuse_req_t req, const Status& s, const char* op, const std::string& what);
  // A failed request on a volume handle: counted in `m`, logged (I/O errors
  // and corruption, rate-limited per volume, naming offset, length and the
  // layer) and replied to. `h` is not touched after the reply.
  void ReplyIoError(fuse_req_t req, Handle* h, VolumeMetrics* m, IoOp op, uint64_t off,
                    uint64_t len, uint64_t start_ns, const Status& s);
  // Which layer of `h`'s volume a status names ("" if none).
  static std::string LayerNamedBy(const Handle* h, const Status& s);

  Store* store_;
  MountOptions opts_;
  fuse_session* session_ = nullptr;
  uint64_t mount_time_ns_ = 0;

  MetricsRegistry metrics_;
  IoErrorLog io_errors_;

  Mutex handles_mu_;
  std::unordered_map<Handle*, std::unique_ptr<Handle>> handles_ GUARDED_BY(handles_mu_);

  Mutex attrs_mu_;
  Mutex ino_mu_;
  std::map<std::string, fuse_ino_t> ino_by_name_ GUARDED_BY(ino_mu_);
  std::map<fuse_ino_t, std::string> name_by_ino_ GUARDED_BY(ino_mu_);
  fuse_ino_t next_ino_ GUARDED_BY(ino_mu_) = 16;

  // Last: its hook calls RetireGoneNames, which uses the members above.
  ControlServer control_;
};

}  // namespace ovbd::fuse
