// Store: opening (and so recovery), and the metadata every FUSE request
// asks for. Nothing here does I/O under the state lock.
#include "store_internal.h"

#include <cerrno>

#include "ovbd/store/filename.h"
#include "ovbd/store/manifest_group.h"

namespace ovbd {

namespace {
constexpr char kStoreMarkerText[] = "{\"format\": \"ovbd-store\", \"version\": 1}\n";

// "vm1@snap" -> "vm1".
std::string BaseName(const std::string& full) { return full.substr(0, full.find('@')); }
}  // namespace

Store::Store(Env* env, std::string dir, StoreOptions opts)
    : env_(env), dir_(std::move(dir)), opts_(std::move(opts)) {}

Store::~Store() {
  // Jobs first: a merge in flight ends at its next step and leaves only
  // files recovery removes.
  {
    MutexLock lk(&jobs_mu_);
    if (jobs_) jobs_->Stop();
  }
  if (!opts_.read_only) (void)FlushAll();
}

std::string Store::LayerPath(const std::string& file) const {
  return JoinPath(JoinPath(dir_, filename::kLayersDir), file);
}
std::string Store::ManifestPath(const std::string& name) const {
  return JoinPath(JoinPath(dir_, filename::kVolumesDir), filename::ManifestFile(name));
}

Status Store::Init(Env* env, const std::string& dir) {
  if (!env->Exists(dir)) {
    OVBD_RETURN_IF_ERROR(env->CreateDir(dir));
    OVBD_RETURN_IF_ERROR(env->SyncDir(DirName(dir)));  // the new directory's own entry
  }
  auto st = env->Stat(dir);
  if (!st.ok()) return st.status();
  if (!st->is_dir) return Status::InvalidArgument(dir + " is not a directory");
  const std::string marker = JoinPath(dir, filename::kStoreMarker);
  if (env->Exists(marker)) return Status::Exists(dir + " is already an ovbd store");
  OVBD_ASSIGN_OR_RETURN(auto entries, env->ListDir(dir));
  if (!entries.empty()) return Status::InvalidArgument(dir + " is not empty");
  OVBD_RETURN_IF_ERROR(env->CreateDir(JoinPath(dir, filename::kVolumesDir)));
  OVBD_RETURN_IF_ERROR(env->CreateDir(JoinPath(dir, filename::kLayersDir)));
  OVBD_RETURN_IF_ERROR(env->SyncDir(dir));
  // The marker goes last: a store is a store only once it is complete.
  return env->WriteFileAtomic(marker, kStoreMarkerText);
}

Result<std::unique_ptr<Store>> Store::Open(Env* env, const std::string& dir,
                                           const StoreOptions& opts) {
  auto marker = env->ReadSmallFile(JoinPath(dir, filename::kStoreMarker), 4096);
  if (!marker.ok()) {
    if (marker.status().IsNotFound()) {
      return Status::NotFound(dir + " is not an ovbd store (run `ovbd store init " + dir + "`)");
    }
    return marker.status();
  }
  if (marker.value().find("\"ovbd-store\"") == std::string::npos) {
    return Status::Corruption(JoinPath(dir, filename::kStoreMarker) + ": not an ovbd store marker");
  }
  auto store = std::unique_ptr<Store>(new Store(env, dir, opts));
  OVBD_ASSIGN_OR_RETURN(store->confinement_, env->Confine(dir));
  OVBD_RETURN_IF_ERROR(CheckLayout(env, dir, opts));
  if (!opts.read_only) {
    auto lock = env->LockFile(JoinPath(dir, filename::kLockFile));
    if (!lock.ok()) {
      if (lock.status().code() == Status::Code::kBusy) {
        return Status::Busy(dir + " is locked by another process: an ovbdfs that has it mounted "
                            "(use the mount's .control, or unmount it) or an ovbd command working "
                            "on it (wait for it to finish)");
      }
      return lock.status();
    }
    store->lock_ = std::move(lock).value();
  }
  OVBD_RETURN_IF_ERROR(store->LoadManifests());
  if (!opts.read_only) {
    // Recovery: leftovers of interrupted commands are unreferenced files.
    OVBD_RETURN_IF_ERROR(store->CollectGarbageNow(nullptr));
  }
  if (opts.start_jobs) store->StartJobs();
  return store;
}

void Store::StartJobs() {
  (void)Runner();
  ResumeHydrations();
}

JobRunner* Store::Runner() {
  MutexLock lk(&jobs_mu_);
  if (jobs_) return jobs_.get();
  jobs_ = std::make_unique<JobRunner>(opts_.job_threads);
  if (!opts_.read_only && opts_.flush_interval_ms > 0) {
    jobs_->Every(std::chrono::milliseconds(opts_.flush_interval_ms), [this] {
      Status st = FlushAll();
      if (!st.ok() && opts_.on_flush_error) opts_.on_flush_error(st);
    });
  }
  return jobs_.get();
}

Status Store::CheckLayout(Env* env, const std::string& dir, const StoreOptions& opts) {
  const uint32_t me = env->CurrentUid();
  auto check = [&](const std::string& path, bool must_exist) -> Status {
    auto st = env->Stat(path);
    if (!st.ok()) {
      if (!must_exist && st.status().IsNotFound()) return Status::OK();
      if (st.status().os_errno() == ELOOP) {
        return Status::Corruption(path + " is a symbolic link; a store never contains one "
                                  "(refusing the store: it could lead outside it)");
      }
      return st.status();
    }
    if (!st->is_dir) return Status::Corruption(path + " is not a directory");
    if (st->uid != me && st->uid != 0 && !opts.allow_foreign_owner) {
      return Status::IOError(path + " belongs to uid " + std::to_string(st->uid) +
                                 ", not to this user (uid " + std::to_string(me) +
                                 ") or root; refusing a store another user controls (mount it "
                                 "as that user, or pass -o allow_foreign_store)",
                             EPERM);
    }
    return Status::OK();
  };
  OVBD_RETURN_IF_ERROR(check(dir, true));
  OVBD_RETURN_IF_ERROR(check(JoinPath(dir, filename::kVolumesDir), true));
  OVBD_RETURN_IF_ERROR(check(JoinPath(dir, filename::kLayersDir), true));
  OVBD_RETURN_IF_ERROR(check(JoinPath(dir, kManifestGroupDir), false));
  return check(JoinPath(dir, kManifestGroupStaging), false);
}

Status Store::CheckWritable() const {
  if (opts_.read_only) return Status::ReadOnly(dir_ + " is open read-only");
  return Status::OK();
}

std::vector<VolumeInfo> Store::List() const {
  MutexLock lk(&mu_);
  std::vector<VolumeInfo> out;
  for (const auto& [name, m] : manifests_) {
    if (!m.deleted) {
      VolumeInfo v;
      v.name = name;
      v.size = m.size;
      v.attrs = m.attrs;
      v.lowers = m.lowers;
      v.upper = m.upper;
      v.hydrate = HydrateInfoOf(name, m);
      auto h = handles_.find(name);
      v.open_handles = h == handles_.end() ? 0 : h->second;
      if (auto o = open_.find(name); o != open_.end()) {
        if (Status hs = o->second->health(); !hs.ok()) v.failed = hs.ToString();
      }
      out.push_back(std::move(v));
    }
    for (const auto& s : m.snapshots) {
      VolumeInfo v;
      v.name = name + "@" + s.name;
      v.is_snapshot = true;
      v.size = s.size;
      v.attrs = s.attrs;
      v.lowers = s.lowers;
      out.push_back(std::move(v));
    }
  }
  std::sort(out.begin(), out.end(),
            [](const VolumeInfo& a, const VolumeInfo& b) { return a.name < b.name; });
  return out;
}

Result<VolumeInfo> Store::Lookup(const std::string& name) const {
  VolumeInfo v;
  {
    MutexLock lk(&mu_);
    OVBD_ASSIGN_OR_RETURN(auto r, Resolve(name));
    v.name = name;
    v.is_snapshot = r.second != nullptr;
    v.size = r.second ? r.second->size : r.first->size;
    v.attrs = r.second ? r.second->attrs : r.first->attrs;
    v.lowers = r.second ? r.second->lowers : r.first->lowers;
    v.upper = r.second ? "" : r.first->upper;
    if (!r.second) v.hydrate = HydrateInfoOf(name, *r.first);
    auto h = handles_.find(name);
    v.open_handles = h == handles_.end() ? 0 : h->second;
    if (auto o = open_.find(name); o != open_.end()) {
      if (Status hs = o->second->health(); !hs.ok()) v.failed = hs.ToString();
    }
  }
  // Outside the lock: a stat can wait behind a busy disk.
  if (!v.upper.empty()) {
    auto fi = env_->Stat(LayerPath(filename::UpperDataFile(v.upper)));
    if (fi.ok()) v.allocated = fi->allocated;
  }
  return v;
}

void Store::FillPreallocated(std::vector<VolumeInfo>* vols) const {
  std::vector<std::pair<VolumeInfo*, std::shared_ptr<Volume>>> open;
  {
    MutexLock lk(&mu_);
    for (VolumeInfo& v : *vols) {
      v.preallocated = 0;
      if (v.is_snapshot) continue;
      if (auto o = open_.find(v.name); o != open_.end()) open.emplace_back(&v, o->second);
    }
  }
  // Outside the lock: each waits for its volume's map.
  for (const auto& [v, vol] : open) v->preallocated = vol->PreallocatedBytes();
}

std::vector<FailedManifest> Store::FailedManifests() const {
  MutexLock lk(&mu_);
  std::vector<FailedManifest> out;
  for (const auto& [n, why] : failed_manifests_) out.push_back({n, why});
  return out;
}

std::vector<JobInfo> Store::Jobs() const {
  MutexLock lk(&jobs_mu_);
  if (!jobs_) return {};
  return jobs_->List();
}

Result<std::pair<const Manifest*, const SnapshotRecord*>> Store::Resolve(
    const std::string& full) const {
  const size_t at = full.find('@');
  const std::string vol = full.substr(0, at);
  OVBD_RETURN_IF_ERROR(ValidateName(vol, "volume"));
  const std::string snap = at == std::string::npos ? "" : full.substr(at + 1);
  if (at != std::string::npos) OVBD_RETURN_IF_ERROR(ValidateName(snap, "snapshot"));
  auto it = manifests_.find(vol);
  if (it == manifests_.end() || (snap.empty() && it->second.deleted)) {
    if (auto f = failed_manifests_.find(vol); f != failed_manifests_.end()) {
      return Status::Corruption("volume '" + vol + "' is unavailable: " + f->second);
    }
    return Status::NotFound("no volume named '" + vol + "'");
  }
  if (snap.empty()) return std::make_pair(&it->second, static_cast<const SnapshotRecord*>(nullptr));
  const SnapshotRecord* s = it->second.FindSnapshot(snap);
  if (!s) return Status::NotFound("no snapshot named '" + full + "'");
  return std::make_pair(&it->second, s);
}

Result<Manifest> Store::ManifestCopy(const std::string& vol) const {
  MutexLock lk(&mu_);
  OVBD_ASSIGN_OR_RETURN(auto r, Resolve(BaseName(vol)));
  return *r.first;
}

Result<Store::Resolved> Store::ResolveCopy(const std::string& name) const {
  MutexLock lk(&mu_);
  OVBD_ASSIGN_OR_RETURN(auto r, Resolve(name));
  Resolved out{*r.first, std::nullopt};
  if (r.second) out.snapshot = *r.second;
  return out;
}

Status Store::EnsureNameFree(const std::string& name) const {
  OVBD_RETURN_IF_ERROR(ValidateName(name, "volume"));
  auto it = manifests_.find(name);
  if (it != manifests_.end()) {
    if (it->second.deleted) {
      return Status::Exists("'" + name + "' was deleted but its snapshots remain; delete them first");
    }
    return Status::Exists("volume '" + name + "' already exists");
  }
  if (failed_manifests_.count(name)) {
    return Status::Exists("volume '" + name + "' exists but its manifest is unusable (see status)");
  }
  if (reserved_.count(name)) return Status::Exists("volume '" + name + "' is being created");
  return Status::OK();
}

}  // namespace ovbd
