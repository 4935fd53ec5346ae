// Clone, resize, attributes and delete: each a short command under the
// command lock of the volume it changes.
#include <algorithm>

#include "ovbd/store/filename.h"
#include "store_internal.h"

namespace ovbd {

namespace {
std::string BaseName(const std::string& full) { return full.substr(0, full.find('@')); }
}  // namespace

Status Store::Resize(const std::string& name, uint64_t new_size) {
  OVBD_RETURN_IF_ERROR(CheckWritable());
  OVBD_RETURN_IF_ERROR(ValidateName(BaseName(name), "volume"));
  OVBD_ASSIGN_OR_RETURN(auto scope, CommandScope::Enter(this, {BaseName(name)}, false));
  OVBD_ASSIGN_OR_RETURN(Resolved r, ResolveCopy(name));
  if (r.snapshot) return Status::ReadOnly(name + " is a snapshot and cannot be resized");
  Manifest m = std::move(r.manifest);
  if (new_size % lsmt::kSectorSize) {
    return Status::InvalidArgument("size " + std::to_string(new_size) +
                                   " is not a multiple of 512 bytes");
  }
  if (new_size < m.size) {
    return Status::InvalidArgument("volumes can only grow: " + name + " is " +
                                   std::to_string(m.size) + " bytes");
  }
  if (new_size / lsmt::kSectorSize > lsmt::kMaxOffset) {
    return Status::InvalidArgument("size " + std::to_string(new_size) + " is too large");
  }
  if (new_size == m.size) return Status::OK();
  // Probe that the filesystem can hold it before anything changes.
  OVBD_ASSIGN_OR_RETURN(auto vol, OpenVolume(name, false));
  {
    const std::string probe_name = filename::TempFile(m.upper, "size-probe");
    auto pin = PinFiles({probe_name});
    auto probe = env_->OpenRW(LayerPath(probe_name), true);
    if (!probe.ok()) return probe.status();
    Status fits = Upper::CheckSizeFits(probe.value().get(), new_size);
    probe.value().reset();
    (void)env_->Remove(LayerPath(probe_name));
    OVBD_RETURN_IF_ERROR(fits);
  }
  m.size = new_size;
  // Persist first: the journal may describe sectors past the old size only
  // once the manifest allows them.
  OVBD_RETURN_IF_ERROR(WriteManifest(m));
  return vol->Grow(new_size);
}

Status Store::SetAttrs(const std::string& name, const FileAttrs& attrs) {
  OVBD_RETURN_IF_ERROR(CheckWritable());
  OVBD_RETURN_IF_ERROR(ValidateName(BaseName(name), "volume"));
  OVBD_ASSIGN_OR_RETURN(auto scope, CommandScope::Enter(this, {BaseName(name)}, false));
  OVBD_ASSIGN_OR_RETURN(Resolved r, ResolveCopy(name));
  Manifest& m = r.manifest;
  if (r.snapshot) {
    for (auto& s : m.snapshots)
      if (s.name == r.snapshot->name) s.attrs = attrs;
  } else {
    m.attrs = attrs;
  }
  return WriteManifest(std::move(m));
}

Status Store::Clone(const std::string& src, const std::string& new_vol,
                    std::optional<std::pair<uint32_t, uint32_t>> owner) {
  OVBD_RETURN_IF_ERROR(CheckWritable());
  if (src.find('@') == std::string::npos) {
    return Status::InvalidArgument("clone source must be a snapshot (VOL@SNAP), got '" + src + "'");
  }
  OVBD_RETURN_IF_ERROR(ValidateName(BaseName(src), "volume"));
  OVBD_RETURN_IF_ERROR(ValidateName(new_vol, "volume"));
  OVBD_ASSIGN_OR_RETURN(auto scope, CommandScope::Enter(this, {BaseName(src)}, false));
  OVBD_ASSIGN_OR_RETURN(Resolved r, ResolveCopy(src));
  const SnapshotRecord snap = *r.snapshot;
  const FileAttrs attrs = r.manifest.attrs;
  OVBD_ASSIGN_OR_RETURN(auto reservation, Reserve(new_vol));
  std::string parent_uuid;
  if (!snap.lowers.empty()) {
    OVBD_ASSIGN_OR_RETURN(auto top, OpenLayerFile(snap.lowers.back()));
    parent_uuid = top->header().uuid;
  }
  const std::string id = lsmt::NewUuid();
  auto pin = PinFiles({filename::UpperDataFile(id), filename::UpperJournalFile(id)});
  OVBD_ASSIGN_OR_RETURN(auto upper, Upper::Create(env_, LayerPath(id), snap.size, id, parent_uuid));
  upper.reset();
  OVBD_RETURN_IF_ERROR(env_->CrashPoint("clone.after_upper"));
  Manifest m;
  m.name = new_vol;
  m.size = snap.size;
  m.lowers = snap.lowers;
  m.upper = id;
  m.attrs = attrs;
  if (owner) {
    m.attrs.uid = owner->first;
    m.attrs.gid = owner->second;
  }
  const uint64_t now = env_->NowMicros() * 1000;
  m.attrs.mtime_ns = m.attrs.ctime_ns = m.attrs.atime_ns = now;
  // The new name's command lock is not needed: the reservation keeps every
  // other command away from it until the manifest exists.
  Status s = WriteManifest(std::move(m));
  if (!s.ok()) (void)RemoveCreatedUpper(id);
  return s;
}

Status Store::Delete(const std::string& name) {
  OVBD_RETURN_IF_ERROR(CheckWritable());
  OVBD_RETURN_IF_ERROR(ValidateName(BaseName(name), "volume"));
  {
    OVBD_ASSIGN_OR_RETURN(auto scope, CommandScope::Enter(this, {BaseName(name)}, false));
    Manifest m;
    {
      MutexLock lk(&mu_);
      OVBD_ASSIGN_OR_RETURN(auto r0, Resolve(name));
      (void)r0;
      // A file closed just before may still be releasing (FUSE sends
      // RELEASE after close() returns): give that a moment before calling
      // it busy. Opening it now waits for us (the open re-checks the
      // manifest).
      if (!changed_.WaitFor(std::chrono::seconds(1), [&] {
            mu_.AssertHeld();
            return handles_.count(name) == 0 && opening_.count(name) == 0;
          })) {
        return Status::Busy(name + " is open (" + std::to_string(handles_[name]) +
                            " handles): close it and try again (fuser -v on the volume file lists "
                            "who holds it; losetup -d detaches a loop device)");
      }
      OVBD_ASSIGN_OR_RETURN(auto r, Resolve(name));
      m = *r.first;
      if (r.second) {
        const std::string snap = r.second->name;
        m.snapshots.erase(std::remove_if(m.snapshots.begin(), m.snapshots.end(),
                                         [&](const SnapshotRecord& s) { return s.name == snap; }),
                          m.snapshots.end());
      } else {
        m.deleted = true;
        m.upper.clear();
        m.lowers.clear();
      }
      open_.erase(name);
      if (auto hi = hydrations_.find(name); hi != hydrations_.end()) {
        hi->second->CancelJob();  // its next step finds the volume gone
        hydrations_.erase(hi);
      }
    }
    if (m.deleted && m.snapshots.empty()) {
      OVBD_RETURN_IF_ERROR(RemoveManifest(m.name));
    } else {
      OVBD_RETURN_IF_ERROR(WriteManifest(std::move(m)));
    }
    OVBD_RETURN_IF_ERROR(env_->CrashPoint("delete.after_manifest"));
  }
  OVBD_RETURN_IF_ERROR(CollectGarbageNow(nullptr));
  // Layers that only ever appear together now can be merged, freeing the
  // data the upper one hides. A job, so status shows it and unmount stops
  // it; waited for, so the space is back when the command returns.
  auto job = Runner()->Start("merge", name, [this](Job& j) -> Status {
    OVBD_ASSIGN_OR_RETURN(int merged, MergeHidden(&j));
    (void)merged;
    return Status::OK();
  });
  Status s = job->Wait();
  if (!s.ok() && s.os_errno() == ECANCELED) return Status::OK();  // the delete itself stands
  return s;
}

}  // namespace ovbd
