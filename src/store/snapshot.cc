// Snapshots: one volume, or every volume at one instant (a consistency
// group).
//
// The write stall is only what must happen while writes are quiesced: the
// upper's map is frozen into the index of a new top layer and a fresh upper
// takes over (no I/O). Writes then resume while the switch is made durable
// (the seal's sync and the manifest's rename); flushes wait for that (the
// volume's metadata barrier), so no flush returns before what it covers is
// reachable from a durable manifest.
#include <functional>

#include "ovbd/store/filename.h"
#include "ovbd/store/manifest_group.h"
#include "store_internal.h"

namespace ovbd {

Status Store::SnapshotCheck(const std::string& vol, const std::string& snap) {
  size_t layers;
  {
    MutexLock lk(&mu_);
    OVBD_ASSIGN_OR_RETURN(auto r, Resolve(vol));
    if (r.second) return Status::InvalidArgument("cannot snapshot a snapshot ('" + vol + "')");
    OVBD_RETURN_IF_ERROR(ValidateName(snap, "snapshot"));
    if (r.first->FindSnapshot(snap)) {
      return Status::Exists("snapshot '" + vol + "@" + snap + "' exists");
    }
    if (auto it = open_.find(vol); it != open_.end()) OVBD_RETURN_IF_ERROR(it->second->health());
    layers = r.first->lowers.size();
  }
  if (layers + 1 >= MergedIndex::kMaxLayers) {
    // Keep below the limit: merge the lowest pair of layers only this
    // volume's stacks use.
    OVBD_ASSIGN_OR_RETURN(int merged, MergeForVolume(vol));
    if (merged > 0) OVBD_RETURN_IF_ERROR(CollectGarbageNow(nullptr));
    MutexLock lk(&mu_);
    if (manifests_.at(vol).lowers.size() + 1 > MergedIndex::kMaxLayers) {
      return Status::TooLarge(vol + " has 255 layers and every pair is shared by snapshots; "
                              "delete snapshots to let them merge");
    }
  }
  return Status::OK();
}

Result<Store::FreshUpper> Store::PrepareUpper(const Manifest& m, Volume* v) {
  // Created (and synced) before writes are quiesced.
  FreshUpper f;
  f.id = lsmt::NewUuid();
  f.pin = PinFiles({filename::UpperDataFile(f.id), filename::UpperJournalFile(f.id)});
  OVBD_ASSIGN_OR_RETURN(f.upper, Upper::Create(env_, LayerPath(f.id), m.size, f.id,
                                               v->stack()->upper->uuid()));
  if (Status s = env_->CrashPoint("snapshot.after_new_upper"); !s.ok()) {
    f.upper.reset();
    (void)RemoveCreatedUpper(f.id);
    return s;
  }
  return f;
}

Result<Store::PendingSwitch> Store::SwitchQuiesced(Manifest m, std::shared_ptr<Volume> v,
                                                   const std::string& snap, uint64_t now_ns,
                                                   FreshUpper fresh) {
  PendingSwitch p;
  p.vol = m.name;
  p.before = v->stack();
  p.old = p.before->upper;
  if (fresh.upper->virtual_size() != m.size) OVBD_RETURN_IF_ERROR(fresh.upper->Resize(m.size));
  p.fresh = std::shared_ptr<Upper>(std::move(fresh.upper));
  p.pin = std::move(fresh.pin);
  p.fresh_ops = p.fresh->operations();
  Upper::Sealed sealed = p.old->Freeze("snapshot " + m.name + "@" + snap);
  p.old_id = m.upper;
  p.sealed_file = filename::UpperDataFile(p.old_id);
  m.lowers.push_back(p.sealed_file);
  m.upper = fresh.id;
  // A finished hydration is undone by the new layer; a running one goes on
  // (its job sees the new stack and copies it too).
  if (m.hydrate.state == HydrateState::kDone) m.hydrate = HydrateRecord{};
  SnapshotRecord rec;
  rec.name = snap;
  rec.size = m.size;
  rec.lowers = m.lowers;
  rec.created_ns = now_ns;
  rec.attrs = m.attrs;
  rec.attrs.mode &= ~0222u;
  rec.attrs.mtime_ns = rec.attrs.ctime_ns = now_ns;
  m.snapshots.push_back(std::move(rec));
  m.generation++;
  p.manifest = std::move(m);
  // The frozen upper serves reads from its data as the new top layer; its
  // index and trailer reach the file in SealSwitch.
  p.layer = lsmt::Layer::FromWritten(p.old->data_file(), std::move(sealed.header),
                                     std::move(sealed.segments));
  v->InstallStack(Stack::WithTop(*p.before, p.layer, p.fresh));
  v->BeginCommit();
  p.v = std::move(v);
  return p;
}

Status Store::SealSwitch(PendingSwitch& p) {
  OVBD_RETURN_IF_ERROR(p.old->WriteSeal(p.layer->header(), p.layer->segments()));
  return env_->CrashPoint("snapshot.after_seal");
}

void Store::FinishSwitch(PendingSwitch& p) {
  CacheLayer(p.sealed_file, p.layer);
  (void)env_->Remove(Upper::JournalPath(LayerPath(p.old_id)));  // garbage now; GC otherwise
  p.v->EndCommit();
}

Status Store::AbandonSwitch(PendingSwitch& p, Status cause, bool may_undo) {
  if (may_undo) {
    // Undo: possible while the fresh upper has taken no write (then the
    // volume is exactly as before the command).
    Status undone = p.v->WithWritesQuiesced([&]() -> Status {
      if (p.fresh->operations() != p.fresh_ops) {
        return Status::Busy("writes reached the fresh upper");
      }
      OVBD_RETURN_IF_ERROR(p.old->Unseal());
      p.v->InstallStack(p.before);
      return Status::OK();
    });
    if (undone.ok()) {
      p.v->EndCommit();
      (void)RemoveCreatedUpper(p.manifest.upper);
      return cause;
    }
  }
  // The live volume runs on an upper the durable manifest may not name:
  // stop acknowledging anything until the store is reopened.
  p.v->Fail(cause);
  return cause;
}

Status Store::Snapshot(const std::string& vol, const std::string& snap) {
  OVBD_RETURN_IF_ERROR(CheckWritable());
  OVBD_RETURN_IF_ERROR(ValidateName(vol, "volume"));
  OVBD_ASSIGN_OR_RETURN(auto scope, CommandScope::Enter(this, {vol}, false));
  OVBD_RETURN_IF_ERROR(SnapshotCheck(vol, snap));
  OVBD_ASSIGN_OR_RETURN(auto v, OpenVolume(vol, false));
  // Stable while we hold the volume's command lock.
  OVBD_ASSIGN_OR_RETURN(Manifest m, ManifestCopy(vol));
  OVBD_ASSIGN_OR_RETURN(FreshUpper fresh, PrepareUpper(m, v.get()));
  const uint64_t now = env_->NowMicros() * 1000;
  const std::string fresh_id = fresh.id;
  std::optional<PendingSwitch> p;
  Status switched = v->WithWritesQuiesced([&]() -> Status {
    OVBD_ASSIGN_OR_RETURN(PendingSwitch sw, SwitchQuiesced(m, v, snap, now, std::move(fresh)));
    p = std::move(sw);
    return Status::OK();
  });
  if (!switched.ok()) {
    (void)RemoveCreatedUpper(fresh_id);
    return switched;
  }
  // Writes run again. The commit point is the manifest's rename: before it,
  // recovery reopens the old upper (undoing the seal) and collects the fresh
  // one; after it, the sealed file is a lower layer.
  Status s = SealSwitch(*p);
  if (!s.ok()) return AbandonSwitch(*p, s, /*may_undo=*/true);
  bool renamed = false;
  s = WriteManifestFile(p->manifest, &renamed);
  if (!s.ok()) {
    if (!renamed) return AbandonSwitch(*p, s, /*may_undo=*/true);
    {
      MutexLock lk(&mu_);
      manifests_[vol] = p->manifest;  // on disk now, durable or not
    }
    return AbandonSwitch(*p, s, /*may_undo=*/false);
  }
  {
    MutexLock lk(&mu_);
    manifests_[vol] = p->manifest;
  }
  s = env_->CrashPoint("snapshot.after_manifest");
  FinishSwitch(*p);
  return s;
}

Status Store::SnapshotAll(const std::string& snap) {
  OVBD_RETURN_IF_ERROR(CheckWritable());
  OVBD_RETURN_IF_ERROR(ValidateName(snap, "snapshot"));
  // Exclusive: no other command runs, so every manifest is stable.
  OVBD_ASSIGN_OR_RETURN(auto scope, CommandScope::Enter(this, {}, true));
  std::vector<std::string> vols;
  {
    MutexLock lk(&mu_);
    for (const auto& [n, m] : manifests_)
      if (!m.deleted) vols.push_back(n);
  }
  for (const auto& n : vols) OVBD_RETURN_IF_ERROR(SnapshotCheck(n, snap));  // all checks first
  std::vector<std::shared_ptr<Volume>> opened;
  std::vector<Manifest> ms;
  std::vector<FreshUpper> fresh;
  for (const auto& n : vols) {
    OVBD_ASSIGN_OR_RETURN(auto v, OpenVolume(n, false));
    OVBD_ASSIGN_OR_RETURN(Manifest m, ManifestCopy(n));
    auto f = PrepareUpper(m, v.get());
    if (!f.ok()) {
      for (auto& g : fresh) {
        g.upper.reset();
        (void)RemoveCreatedUpper(g.id);
      }
      return f.status();
    }
    opened.push_back(v);
    ms.push_back(std::move(m));
    fresh.push_back(std::move(f).value());
  }
  // One instant for all: every volume's writes are quiesced (nested) before
  // the first switch, so a write acknowledged before the command is in every
  // snapshot and none acknowledged after it is in any.
  const uint64_t now = env_->NowMicros() * 1000;
  std::vector<PendingSwitch> sw;
  std::function<Status(size_t)> nest = [&](size_t i) -> Status {
    if (i < opened.size()) return opened[i]->WithWritesQuiesced([&] { return nest(i + 1); });
    for (size_t k = 0; k < opened.size(); ++k) {
      auto p = SwitchQuiesced(ms[k], opened[k], snap, now, std::move(fresh[k]));
      if (!p.ok()) {
        // Only a fresh upper's resize can fail here; put back the switches
        // made so far (nothing reached the disk, no write ran since).
        for (auto& q : sw) {
          (void)q.old->Unseal();
          q.v->InstallStack(q.before);
          q.v->EndCommit();
        }
        sw.clear();
        return p.status();
      }
      sw.push_back(std::move(p).value());
    }
    return Status::OK();
  };
  OVBD_RETURN_IF_ERROR(nest(0));
  if (sw.empty()) return Status::OK();  // no volumes
  auto abandon_all = [&](Status cause, bool may_undo) {
    for (auto& p : sw) (void)AbandonSwitch(p, cause, may_undo);
    return cause;
  };
  for (auto& p : sw) {
    Status s = SealSwitch(p);
    if (!s.ok()) return abandon_all(s, /*may_undo=*/true);
  }
  // All manifests change in one atomic step (a redo log), so a crash
  // leaves every volume with the snapshot or none.
  std::vector<ManifestFile> files;
  for (auto& p : sw) files.emplace_back(filename::ManifestFile(p.vol), EncodeManifest(p.manifest));
  bool committed = false;
  Status s = CommitManifestGroup(env_, dir_, files, &committed);
  if (!s.ok() && !committed) return abandon_all(s, /*may_undo=*/true);
  // From here the group may be committed: until it is applied to volumes/,
  // the next command finishes it first (or recovery does), so its
  // manifests can never land over newer ones.
  {
    MutexLock lk(&mu_);
    group_pending_ = true;
    for (auto& p : sw) manifests_[p.vol] = p.manifest;
  }
  if (!s.ok()) return abandon_all(s, /*may_undo=*/false);
  s = env_->CrashPoint("snapshot_all.after_commit");
  if (s.ok()) s = FinishManifestGroup(env_, dir_);
  if (s.ok()) {
    MutexLock lk(&mu_);
    group_pending_ = false;
  }
  for (auto& p : sw) FinishSwitch(p);
  return s;
}

}  // namespace ovbd
