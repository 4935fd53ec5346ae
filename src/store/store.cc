#include "ovbd/store/store.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cinttypes>
#include <cstring>
#include <set>

#include "ovbd/layer/lsmt_writer.h"
#include "ovbd/store/manifest_group.h"

namespace ovbd {

namespace {
constexpr char kStoreMarker[] = "ovbd-store.json";
constexpr char kStoreMarkerText[] = "{\"format\": \"ovbd-store\", \"version\": 1}\n";
constexpr char kVolumesDir[] = "volumes";
constexpr char kLayersDir[] = "layers";
constexpr char kManifestSuffix[] = ".json";

// "vm1@snap" -> ("vm1", "snap"); "vm1" -> ("vm1", "").
std::pair<std::string, std::string> SplitName(const std::string& full) {
  auto at = full.find('@');
  if (at == std::string::npos) return {full, ""};
  return {full.substr(0, at), full.substr(at + 1)};
}

Status ValidateFullName(const std::string& full) {
  auto [vol, snap] = SplitName(full);
  OVBD_RETURN_IF_ERROR(ValidateName(vol, "volume"));
  if (full.find('@') != std::string::npos) OVBD_RETURN_IF_ERROR(ValidateName(snap, "snapshot"));
  return Status::OK();
}

std::string Hex(const unsigned char* p, size_t n) {
  static const char* d = "0123456789abcdef";
  std::string s;
  for (size_t i = 0; i < n; ++i) {
    s.push_back(d[p[i] >> 4]);
    s.push_back(d[p[i] & 15]);
  }
  return s;
}
}  // namespace

Store::Store(Env* env, std::string dir, StoreOptions opts)
    : env_(env), dir_(std::move(dir)), opts_(std::move(opts)) {}

Store::~Store() {
  if (!opts_.read_only) (void)FlushAll();
}

std::string Store::LayerPath(const std::string& file) const {
  return JoinPath(JoinPath(dir_, kLayersDir), file);
}
std::string Store::ManifestPath(const std::string& name) const {
  return JoinPath(JoinPath(dir_, kVolumesDir), name + kManifestSuffix);
}

Status Store::Init(Env* env, const std::string& dir) {
  if (!env->Exists(dir)) {
    OVBD_RETURN_IF_ERROR(env->CreateDir(dir));
    OVBD_RETURN_IF_ERROR(env->SyncDir(DirName(dir)));  // the new directory's own entry
  }
  auto st = env->Stat(dir);
  if (!st.ok()) return st.status();
  if (!st->is_dir) return Status::InvalidArgument(dir + " is not a directory");
  const std::string marker = JoinPath(dir, kStoreMarker);
  if (env->Exists(marker)) return Status::Exists(dir + " is already an ovbd store");
  OVBD_ASSIGN_OR_RETURN(auto entries, env->ListDir(dir));
  if (!entries.empty()) return Status::InvalidArgument(dir + " is not empty");
  OVBD_RETURN_IF_ERROR(env->CreateDir(JoinPath(dir, kVolumesDir)));
  OVBD_RETURN_IF_ERROR(env->CreateDir(JoinPath(dir, kLayersDir)));
  OVBD_RETURN_IF_ERROR(env->SyncDir(dir));
  // The marker goes last: a store is a store only once it is complete.
  return env->WriteFileAtomic(marker, kStoreMarkerText);
}

Result<std::unique_ptr<Store>> Store::Open(Env* env, const std::string& dir,
                                           const StoreOptions& opts) {
  auto marker = env->ReadSmallFile(JoinPath(dir, kStoreMarker), 4096);
  if (!marker.ok()) {
    if (marker.status().IsNotFound()) {
      return Status::NotFound(dir + " is not an ovbd store (run `ovbd store init " + dir + "`)");
    }
    return marker.status();
  }
  if (marker.value().find("\"ovbd-store\"") == std::string::npos) {
    return Status::Corruption(JoinPath(dir, kStoreMarker) + ": not an ovbd store marker");
  }
  auto store = std::unique_ptr<Store>(new Store(env, dir, opts));
  if (!opts.read_only) {
    auto lock = env->LockFile(JoinPath(dir, "lock"));
    if (!lock.ok()) {
      if (lock.status().code() == Status::Code::kBusy) {
        return Status::Busy(dir + " is in use by another process (mounted? use its .control)");
      }
      return lock.status();
    }
    store->lock_ = std::move(lock).value();
  }
  OVBD_RETURN_IF_ERROR(store->LoadManifests());
  if (!opts.read_only) {
    // Recovery: leftovers of interrupted commands are unreferenced files.
    std::lock_guard lk(store->mu_);
    OVBD_RETURN_IF_ERROR(store->CollectGarbageLocked(nullptr));
  }
  return store;
}

Status Store::LoadManifests() {
  const std::string vdir = JoinPath(dir_, kVolumesDir);
  // A committed manifest group is applied before anything else looks at the
  // manifests (GC included: the group's fresh uppers are referenced only
  // there). Read-only, its manifests are overlaid in memory below.
  if (!opts_.read_only) OVBD_RETURN_IF_ERROR(FinishManifestGroup(env_, dir_));
  OVBD_ASSIGN_OR_RETURN(auto names, env_->ListDir(vdir));
  std::sort(names.begin(), names.end());
  for (const std::string& f : names) {
    const std::string path = JoinPath(vdir, f);
    if (f.size() > 4 && f.compare(f.size() - 4, 4, ".tmp") == 0) {
      if (!opts_.read_only) OVBD_RETURN_IF_ERROR(env_->Remove(path));  // interrupted write
      continue;
    }
    const size_t sl = std::strlen(kManifestSuffix);
    if (f.size() <= sl || f.compare(f.size() - sl, sl, kManifestSuffix) != 0) continue;
    OVBD_ASSIGN_OR_RETURN(FileInfo fi, env_->Stat(path));
    if (!fi.is_regular) return Status::Corruption(path + ": not a regular file (symlink?)");
    OVBD_ASSIGN_OR_RETURN(std::string text, env_->ReadSmallFile(path, kMaxManifestBytes));
    Manifest m;
    OVBD_RETURN_IF_ERROR(DecodeManifest(text, path, &m));
    if (m.name + kManifestSuffix != f) {
      return Status::Corruption(path + ": manifest names volume '" + m.name + "'");
    }
    manifests_[m.name] = std::move(m);
  }
  if (opts_.read_only) {
    OVBD_ASSIGN_OR_RETURN(auto pending, PendingManifestGroup(env_, dir_, kMaxManifestBytes));
    for (const auto& [file, text] : pending) {
      Manifest m;
      OVBD_RETURN_IF_ERROR(DecodeManifest(text, JoinPath(kManifestGroupDir, file), &m));
      manifests_[m.name] = std::move(m);
    }
  }
  return Status::OK();
}

Status Store::CheckWritable() const {
  if (opts_.read_only) return Status::ReadOnly(dir_ + " is open read-only");
  return Status::OK();
}

Status Store::WriteManifestFile(const Manifest& m, bool* renamed) {
  *renamed = false;
  if (group_pending_) {
    // Its older manifests must not be applied over this one later.
    OVBD_RETURN_IF_ERROR(FinishManifestGroup(env_, dir_));
    group_pending_ = false;
  }
  return env_->WriteFileAtomic(ManifestPath(m.name), EncodeManifest(m), renamed);
}

Status Store::WriteManifest(Manifest m) {
  m.generation++;
  bool renamed = false;
  OVBD_RETURN_IF_ERROR(WriteManifestFile(m, &renamed));
  manifests_[m.name] = std::move(m);
  return Status::OK();
}

Status Store::RemoveManifest(const std::string& name) {
  OVBD_RETURN_IF_ERROR(env_->Remove(ManifestPath(name)));
  OVBD_RETURN_IF_ERROR(env_->SyncDir(JoinPath(dir_, kVolumesDir)));
  manifests_.erase(name);
  return Status::OK();
}

Result<std::pair<const Manifest*, const SnapshotRecord*>> Store::Resolve(
    const std::string& full) const {
  OVBD_RETURN_IF_ERROR(ValidateFullName(full));
  auto [vol, snap] = SplitName(full);
  auto it = manifests_.find(vol);
  if (it == manifests_.end() || (snap.empty() && it->second.deleted)) {
    return Status::NotFound("no volume named '" + vol + "'");
  }
  if (snap.empty()) return std::make_pair(&it->second, static_cast<const SnapshotRecord*>(nullptr));
  const SnapshotRecord* s = it->second.FindSnapshot(snap);
  if (!s) return Status::NotFound("no snapshot named '" + full + "'");
  return std::make_pair(&it->second, s);
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
  return Status::OK();
}

std::vector<VolumeInfo> Store::List() const {
  std::lock_guard lk(mu_);
  std::vector<VolumeInfo> out;
  for (const auto& [name, m] : manifests_) {
    if (!m.deleted) {
      VolumeInfo v;
      v.name = name;
      v.size = m.size;
      v.attrs = m.attrs;
      v.lowers = m.lowers;
      v.upper = m.upper;
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
  std::lock_guard lk(mu_);
  OVBD_ASSIGN_OR_RETURN(auto r, Resolve(name));
  VolumeInfo v;
  v.name = name;
  v.is_snapshot = r.second != nullptr;
  v.size = r.second ? r.second->size : r.first->size;
  v.attrs = r.second ? r.second->attrs : r.first->attrs;
  v.lowers = r.second ? r.second->lowers : r.first->lowers;
  v.upper = r.second ? "" : r.first->upper;
  auto h = handles_.find(name);
  v.open_handles = h == handles_.end() ? 0 : h->second;
  if (auto o = open_.find(name); o != open_.end()) {
    if (Status hs = o->second->health(); !hs.ok()) v.failed = hs.ToString();
  }
  if (!v.upper.empty()) {
    auto fi = env_->Stat(LayerPath(v.upper + ".data"));
    if (fi.ok()) v.allocated = fi->allocated;
  }
  return v;
}

Result<std::shared_ptr<lsmt::Layer>> Store::OpenLayerFile(const std::string& file) {
  auto it = layer_cache_.find(file);
  if (it != layer_cache_.end()) {
    if (auto l = it->second.lock()) return l;
  }
  OVBD_RETURN_IF_ERROR(ValidateLayerFileName(file));
  OVBD_ASSIGN_OR_RETURN(FileInfo id, env_->Stat(LayerPath(file)));
  OVBD_ASSIGN_OR_RETURN(auto layer, OpenLayer(env_, LayerPath(file), opts_.layer));
  layer_cache_[file] = layer;
  layer_identity_[file] = id;
  return layer;
}

Result<std::string> Store::ImportLayerFile(const std::string& path) {
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<ReadableFile> src, env_->OpenReadable(path));
  const std::string tmp = LayerPath("import.tmp");
  if (env_->Exists(tmp)) OVBD_RETURN_IF_ERROR(env_->Remove(tmp));
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> dst, env_->OpenRW(tmp, true));
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr);
  constexpr size_t kChunk = 1 << 20;
  std::vector<char> buf(kChunk);
  const uint64_t size = src->Size();
  for (uint64_t off = 0; off < size; off += kChunk) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, size - off));
    OVBD_RETURN_IF_ERROR(src->ReadExact(off, n, buf.data()));
    EVP_DigestUpdate(md.get(), buf.data(), n);
    bool zero = std::all_of(buf.begin(), buf.begin() + static_cast<ptrdiff_t>(n),
                            [](char c) { return c == 0; });
    if (!zero) OVBD_RETURN_IF_ERROR(dst->WriteAt(off, buf.data(), n));
  }
  OVBD_RETURN_IF_ERROR(dst->Truncate(size));
  OVBD_RETURN_IF_ERROR(dst->Sync());
  dst.reset();
  // Validate the copy itself: the source may have changed since the caller
  // checked it.
  auto copied = OpenLayer(env_, tmp, opts_.layer);
  if (!copied.ok()) {
    (void)env_->Remove(tmp);
    return copied.status().Annotate(path);
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int dlen = 0;
  EVP_DigestFinal_ex(md.get(), digest, &dlen);
  const std::string name = "sha256-" + Hex(digest, dlen) + ".layer";
  if (env_->Exists(LayerPath(name))) {
    OVBD_RETURN_IF_ERROR(env_->Remove(tmp));  // same content already stored
  } else {
    OVBD_RETURN_IF_ERROR(env_->Rename(tmp, LayerPath(name)));
    OVBD_RETURN_IF_ERROR(env_->SyncDir(JoinPath(dir_, kLayersDir)));
  }
  return name;
}

Status Store::CreateVolume(const std::string& name, uint64_t size,
                           const std::vector<std::string>& layer_paths, const FileAttrs& attrs) {
  OVBD_RETURN_IF_ERROR(CheckWritable());
  std::lock_guard lk(mu_);
  OVBD_RETURN_IF_ERROR(EnsureNameFree(name));
  if (layer_paths.size() > MergedIndex::kMaxLayers) {
    return Status::TooLarge("a volume has at most 255 layers");
  }
  if (size % lsmt::kSectorSize) {
    return Status::InvalidArgument("size " + std::to_string(size) +
                                   " is not a multiple of 512 bytes");
  }
  if (size / lsmt::kSectorSize > lsmt::kMaxOffset) {
    return Status::InvalidArgument("size " + std::to_string(size) + " is too large");
  }
  Manifest m;
  m.name = name;
  std::string parent_uuid;
  // Validate every layer and the size before anything is copied: bad input
  // changes nothing.
  for (const auto& p : layer_paths) {
    OVBD_ASSIGN_OR_RETURN(auto layer, OpenLayer(env_, p, opts_.layer));
    if (&p == &layer_paths.back()) m.size = layer->virtual_size();
    parent_uuid = layer->header().uuid;
  }
  if (size != 0) {
    if (size < m.size) {
      return Status::InvalidArgument("size " + std::to_string(size) +
                                     " is smaller than the top layer (" + std::to_string(m.size) +
                                     " bytes)");
    }
    m.size = size;
  }
  if (m.size == 0) return Status::InvalidArgument("a volume needs a size (--size) or a layer");
  for (const auto& p : layer_paths) {
    OVBD_ASSIGN_OR_RETURN(std::string file, ImportLayerFile(p));
    m.lowers.push_back(file);
  }
  if (m.size == 0) return Status::InvalidArgument("a volume needs a size (--size) or a layer");
  const std::string id = lsmt::NewUuid();
  OVBD_ASSIGN_OR_RETURN(auto upper, Upper::Create(env_, LayerPath(id), m.size, id, parent_uuid));
  m.upper = id;
  m.attrs = attrs;
  const uint64_t now = env_->NowMicros() * 1000;
  if (!m.attrs.mtime_ns) m.attrs.mtime_ns = m.attrs.ctime_ns = m.attrs.atime_ns = now;
  return WriteManifest(std::move(m));
}

Status Store::ImportRaw(const std::string& name, const std::string& raw_path,
                        const ImportOptions& opts, const FileAttrs& attrs) {
  OVBD_RETURN_IF_ERROR(CheckWritable());
  {
    std::lock_guard lk(mu_);
    OVBD_RETURN_IF_ERROR(EnsureNameFree(name));
  }
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<ReadableFile> raw, env_->OpenReadable(raw_path));
  const std::string staged = LayerPath("raw-import.tmp");
  const std::string zstaged = LayerPath("raw-import-z.tmp");
  for (const auto& f : {staged, zstaged})
    if (env_->Exists(f)) OVBD_RETURN_IF_ERROR(env_->Remove(f));
  {
    OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> out, env_->OpenRW(staged, true));
    lsmt::WriteOptions wo;
    wo.message = "imported from " + raw_path.substr(raw_path.find_last_of('/') + 1);
    wo.message.resize(std::min<size_t>(wo.message.size(), 200));
    OVBD_RETURN_IF_ERROR(lsmt::CreateFromRaw(*raw, out.get(), wo, [&](uint64_t d, uint64_t t) {
      if (opts.progress) opts.progress("layer", d, t);
    }));
  }
  std::string layer_path = staged;
  if (opts.compress) {
    OVBD_ASSIGN_OR_RETURN(std::unique_ptr<ReadableFile> in, env_->OpenReadable(staged));
    OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> out, env_->OpenRW(zstaged, true));
    OVBD_RETURN_IF_ERROR(zfile::Write(*in, out.get(), *opts.compress, [&](uint64_t d, uint64_t t) {
      if (opts.progress) opts.progress("compress", d, t);
    }));
    layer_path = zstaged;
  }
  Status s = CreateVolume(name, 0, {layer_path}, attrs);
  for (const auto& f : {staged, zstaged})
    if (env_->Exists(f)) (void)env_->Remove(f);
  return s;
}

Status Store::Resize(const std::string& name, uint64_t new_size) {
  OVBD_RETURN_IF_ERROR(CheckWritable());
  std::lock_guard lk(mu_);
  OVBD_ASSIGN_OR_RETURN(auto r, Resolve(name));
  if (r.second) return Status::ReadOnly(name + " is a snapshot and cannot be resized");
  Manifest m = *r.first;
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
  OVBD_ASSIGN_OR_RETURN(auto vol, OpenVolumeLocked(name));
  {
    auto probe = env_->OpenRW(LayerPath(m.upper + ".tmp-size-probe"), true);
    if (!probe.ok()) return probe.status();
    Status fits = Upper::CheckSizeFits(probe.value().get(), new_size);
    probe.value().reset();
    (void)env_->Remove(LayerPath(m.upper + ".tmp-size-probe"));
    OVBD_RETURN_IF_ERROR(fits);
  }
  (void)vol;
  m.size = new_size;
  // Persist first: the journal may describe sectors past the old size only
  // once the manifest allows them.
  OVBD_RETURN_IF_ERROR(WriteManifest(m));
  auto it = open_.find(name);
  if (it != open_.end()) OVBD_RETURN_IF_ERROR(it->second->Grow(new_size));
  return Status::OK();
}

Status Store::SetAttrs(const std::string& name, const FileAttrs& attrs) {
  OVBD_RETURN_IF_ERROR(CheckWritable());
  std::lock_guard lk(mu_);
  OVBD_ASSIGN_OR_RETURN(auto r, Resolve(name));
  Manifest m = *r.first;
  if (r.second) {
    for (auto& s : m.snapshots)
      if (s.name == r.second->name) s.attrs = attrs;
  } else {
    m.attrs = attrs;
  }
  return WriteManifest(std::move(m));
}

Result<std::shared_ptr<Volume>> Store::OpenVolumeLocked(const std::string& name) {
  auto it = open_.find(name);
  if (it != open_.end()) return it->second;
  OVBD_ASSIGN_OR_RETURN(auto r, Resolve(name));
  const auto& lowers = r.second ? r.second->lowers : r.first->lowers;
  std::vector<std::shared_ptr<lsmt::Layer>> layers;
  for (const auto& f : lowers) {
    OVBD_ASSIGN_OR_RETURN(auto l, OpenLayerFile(f));
    layers.push_back(std::move(l));
  }
  std::shared_ptr<Volume> v;
  if (r.second) {
    v = std::make_shared<Volume>(name, r.second->size, std::move(layers), nullptr, true);
  } else {
    const Manifest& m = *r.first;
    OVBD_ASSIGN_OR_RETURN(std::unique_ptr<Upper> up,
                          Upper::Open(env_, LayerPath(m.upper), m.size, opts_.read_only));
    v = std::make_shared<Volume>(name, m.size, std::move(layers), std::shared_ptr<Upper>(std::move(up)),
                                 opts_.read_only);
  }
  open_[name] = v;
  return v;
}

Result<std::shared_ptr<Volume>> Store::Acquire(const std::string& name) {
  std::lock_guard lk(mu_);
  OVBD_ASSIGN_OR_RETURN(auto v, OpenVolumeLocked(name));
  handles_[name]++;
  return v;
}

void Store::Release(const std::string& name) {
  std::lock_guard lk(mu_);
  auto it = handles_.find(name);
  if (it == handles_.end()) return;
  if (--it->second == 0) handles_.erase(it);
  released_.notify_all();
}

Status Store::VerifyLayerFiles() {
  std::lock_guard lk(mu_);
  Status first;
  for (auto& [file, weak] : layer_cache_) {
    auto layer = weak.lock();
    if (!layer || layer->failed()) continue;
    auto it = layer_identity_.find(file);
    if (it == layer_identity_.end()) continue;
    auto now = env_->Stat(LayerPath(file));
    std::string why;
    if (!now.ok()) {
      why = "file vanished (" + now.status().ToString() + ")";
    } else if (now->size != it->second.size) {
      why = "size changed from " + std::to_string(it->second.size) + " to " +
            std::to_string(now->size) + " bytes";
    } else if (now->mtime_ns != it->second.mtime_ns) {
      why = "modified while in use";
    }
    if (why.empty()) continue;
    layer->MarkFailed(why);
    if (first.ok()) first = Status::Corruption(LayerPath(file) + ": " + why);
  }
  return first;
}

Status Store::FlushAll() {
  Status layers = VerifyLayerFiles();
  std::vector<std::shared_ptr<Volume>> vols;
  {
    std::lock_guard lk(mu_);
    for (auto& [n, v] : open_) vols.push_back(v);
  }
  Status first;
  for (auto& v : vols) {
    if (!v->dirty()) continue;
    Status s = v->Flush();
    if (!s.ok() && first.ok()) first = s.Annotate(v->name());
  }
  return first.ok() ? layers : first;
}

Status Store::Clone(const std::string& src, const std::string& new_vol) {
  OVBD_RETURN_IF_ERROR(CheckWritable());
  std::lock_guard lk(mu_);
  if (src.find('@') == std::string::npos) {
    return Status::InvalidArgument("clone source must be a snapshot (VOL@SNAP), got '" + src + "'");
  }
  OVBD_ASSIGN_OR_RETURN(auto r, Resolve(src));
  OVBD_RETURN_IF_ERROR(EnsureNameFree(new_vol));
  const SnapshotRecord snap = *r.second;
  std::string parent_uuid;
  if (!snap.lowers.empty()) {
    OVBD_ASSIGN_OR_RETURN(auto top, OpenLayerFile(snap.lowers.back()));
    parent_uuid = top->header().uuid;
  }
  const std::string id = lsmt::NewUuid();
  OVBD_ASSIGN_OR_RETURN(auto upper, Upper::Create(env_, LayerPath(id), snap.size, id, parent_uuid));
  upper.reset();
  OVBD_RETURN_IF_ERROR(env_->CrashPoint("clone.after_upper"));
  Manifest m;
  m.name = new_vol;
  m.size = snap.size;
  m.lowers = snap.lowers;
  m.upper = id;
  m.attrs = r.first->attrs;
  const uint64_t now = env_->NowMicros() * 1000;
  m.attrs.mtime_ns = m.attrs.ctime_ns = m.attrs.atime_ns = now;
  return WriteManifest(std::move(m));
}

Status Store::Delete(const std::string& name) {
  OVBD_RETURN_IF_ERROR(CheckWritable());
  std::unique_lock lk(mu_);
  OVBD_ASSIGN_OR_RETURN(auto r0, Resolve(name));
  (void)r0;
  // A file closed just before may still be releasing (FUSE sends RELEASE
  // after close() returns): give that a moment before calling it busy.
  if (!released_.wait_for(lk, std::chrono::seconds(1), [&] { return handles_.count(name) == 0; })) {
    return Status::Busy(name + " is open (" + std::to_string(handles_[name]) + " handles)");
  }
  OVBD_ASSIGN_OR_RETURN(auto r, Resolve(name));
  Manifest m = *r.first;
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
  if (m.deleted && m.snapshots.empty()) {
    OVBD_RETURN_IF_ERROR(RemoveManifest(m.name));
  } else {
    OVBD_RETURN_IF_ERROR(WriteManifest(std::move(m)));
  }
  OVBD_RETURN_IF_ERROR(env_->CrashPoint("delete.after_manifest"));
  OVBD_RETURN_IF_ERROR(CollectGarbageLocked(nullptr));
  // Layers that only ever appear together now can be merged, freeing the
  // data the upper one hides.
  OVBD_ASSIGN_OR_RETURN(int merged, MergeLayersLocked(""));
  if (merged > 0) OVBD_RETURN_IF_ERROR(CollectGarbageLocked(nullptr));
  return Status::OK();
}

Result<std::string> Store::WriteMergedLayer(const std::string& x, const std::string& y) {
  OVBD_ASSIGN_OR_RETURN(auto lx, OpenLayerFile(x));
  OVBD_ASSIGN_OR_RETURN(auto ly, OpenLayerFile(y));
  const std::vector<std::shared_ptr<lsmt::Layer>> pair = {lx, ly};
  const auto segs = MergedIndex::Overlay({&lx->segments(), &ly->segments()}, true);
  const std::string id = lsmt::NewUuid();
  const std::string file = id + ".lsmt";
  const std::string tmp = LayerPath(id + ".merge.tmp");
  {
    OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> out, env_->OpenRW(tmp, true));
    lsmt::WriteOptions wo;
    wo.virtual_size = std::max(lx->virtual_size(), ly->virtual_size());
    wo.uuid = id;
    wo.parent_uuid = lsmt::IsValidUuid(lx->header().parent_uuid) ? lx->header().parent_uuid : "";
    wo.message = "merged";
    lsmt::Writer w(out.get(), wo);
    std::vector<char> buf(4 << 20);
    for (const Segment& sg : segs) {
      if (sg.zeroed) {
        OVBD_RETURN_IF_ERROR(w.AddZeroed(sg.offset * 512, uint64_t{sg.length} * 512));
        continue;
      }
      const auto& layer = pair[sg.layer];
      for (uint64_t done = 0; done < sg.length;) {
        const uint64_t n = std::min<uint64_t>(buf.size() / 512, sg.length - done);
        OVBD_RETURN_IF_ERROR(layer->ReadData((sg.moffset + done) * 512, n * 512, buf.data()));
        OVBD_RETURN_IF_ERROR(w.AddData((sg.offset + done) * 512, buf.data(), n * 512));
        done += n;
      }
    }
    OVBD_RETURN_IF_ERROR(w.Finish());
  }
  OVBD_RETURN_IF_ERROR(env_->CrashPoint("merge.after_write"));
  OVBD_RETURN_IF_ERROR(env_->Rename(tmp, LayerPath(file)));
  OVBD_RETURN_IF_ERROR(env_->SyncDir(JoinPath(dir_, kLayersDir)));
  return file;
}

Status Store::InstallLowers(const std::string& vol, const std::vector<std::string>& lowers) {
  auto it = open_.find(vol);
  if (it == open_.end()) return Status::OK();
  std::vector<std::shared_ptr<lsmt::Layer>> layers;
  for (const auto& f : lowers) {
    OVBD_ASSIGN_OR_RETURN(auto l, OpenLayerFile(f));
    layers.push_back(std::move(l));
  }
  Volume* v = it->second.get();
  // The merged index is built before writes are held off (O(N log N) over
  // up to 255 layers); only the pointer swap happens inside. The upper
  // cannot change meanwhile: only store commands replace it, and they hold
  // the store's lock, as the caller does.
  auto st = Stack::Make(std::move(layers), v->stack()->upper);
  return v->WithWritesQuiesced([&] {
    v->InstallStack(std::move(st));
    return Status::OK();
  });
}

Result<int> Store::MergeLayersLocked(const std::string& for_volume) {
  int merges = 0;
  for (;;) {
    // Every stack in the store, as lists of layer files.
    std::vector<const std::vector<std::string>*> lists;
    for (const auto& [n, m] : manifests_) {
      if (!m.deleted) lists.push_back(&m.lowers);
      for (const auto& s : m.snapshots) lists.push_back(&s.lowers);
    }
    auto always_together = [&](const std::string& x, const std::string& y) {
      for (const auto* l : lists) {
        for (size_t i = 0; i < l->size(); ++i) {
          if ((*l)[i] == x && (i + 1 == l->size() || (*l)[i + 1] != y)) return false;
          if ((*l)[i] == y && (i == 0 || (*l)[i - 1] != x)) return false;
        }
      }
      return true;
    };
    std::string x, y;
    bool found = false;
    for (const auto* l : lists) {
      if (!for_volume.empty() && l != &manifests_.at(for_volume).lowers) continue;
      for (size_t i = 0; i + 1 < l->size() && !found; ++i) {
        if ((*l)[i] == (*l)[i + 1] || !always_together((*l)[i], (*l)[i + 1])) continue;
        if (for_volume.empty()) {
          // Only worth the copy when the upper layer hides data of the lower.
          OVBD_ASSIGN_OR_RETURN(auto lx, OpenLayerFile((*l)[i]));
          OVBD_ASSIGN_OR_RETURN(auto ly, OpenLayerFile((*l)[i + 1]));
          auto merged = MergedIndex::Overlay({&lx->segments(), &ly->segments()}, true);
          uint64_t kept = 0, total = 0;
          for (const auto& sg : merged)
            if (!sg.zeroed && sg.layer == 0) kept += sg.length;
          for (const auto& sg : lx->segments())
            if (!sg.zeroed) total += sg.length;
          if (kept == total) continue;
        }
        x = (*l)[i];
        y = (*l)[i + 1];
        found = true;
      }
      if (found) break;
    }
    if (!found) return merges;
    OVBD_ASSIGN_OR_RETURN(std::string xy, WriteMergedLayer(x, y));
    // Each manifest switches to the merged layer in its own atomic write; a
    // crash in between leaves some stacks on X,Y and some on XY, all valid.
    std::vector<std::string> names;
    for (const auto& [n, m] : manifests_) names.push_back(n);
    for (const auto& n : names) {
      Manifest m = manifests_.at(n);
      auto replace = [&](std::vector<std::string>* l) {
        bool changed = false;
        for (size_t i = 0; i + 1 < l->size(); ++i) {
          if ((*l)[i] == x && (*l)[i + 1] == y) {
            (*l)[i] = xy;
            l->erase(l->begin() + static_cast<ptrdiff_t>(i) + 1);
            changed = true;
          }
        }
        return changed;
      };
      bool changed = replace(&m.lowers);
      for (auto& s : m.snapshots) changed |= replace(&s.lowers);
      if (!changed) continue;
      const std::vector<std::string> lowers = m.lowers;
      OVBD_RETURN_IF_ERROR(WriteManifest(std::move(m)));
      OVBD_RETURN_IF_ERROR(env_->CrashPoint("merge.after_manifest"));
      if (!manifests_.at(n).deleted) OVBD_RETURN_IF_ERROR(InstallLowers(n, lowers));
      for (const auto& s : manifests_.at(n).snapshots) {
        OVBD_RETURN_IF_ERROR(InstallLowers(n + "@" + s.name, s.lowers));
      }
    }
    ++merges;
    if (!for_volume.empty()) return merges;
  }
}

Status Store::CollectGarbage(std::vector<std::string>* removed) {
  OVBD_RETURN_IF_ERROR(CheckWritable());
  std::lock_guard lk(mu_);
  return CollectGarbageLocked(removed);
}

Status Store::CollectGarbageLocked(std::vector<std::string>* removed) {
  std::set<std::string> live;
  for (const auto& [n, m] : manifests_) {
    for (const auto& l : m.lowers) live.insert(l);
    for (const auto& s : m.snapshots)
      for (const auto& l : s.lowers) live.insert(l);
    if (!m.upper.empty()) {
      live.insert(m.upper + ".data");
      live.insert(m.upper + ".jnl");
    }
  }
  const std::string ldir = JoinPath(dir_, kLayersDir);
  OVBD_ASSIGN_OR_RETURN(auto files, env_->ListDir(ldir));
  bool any = false;
  for (const auto& f : files) {
    if (live.count(f)) continue;
    OVBD_RETURN_IF_ERROR(env_->Remove(JoinPath(ldir, f)));
    layer_cache_.erase(f);
    if (removed) removed->push_back(f);
    any = true;
  }
  if (any) OVBD_RETURN_IF_ERROR(env_->SyncDir(ldir));
  return Status::OK();
}

std::string Store::StatusLine(const VolumeInfo& v) const {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s size=%" PRIu64 " layers=%zu%s", v.name.c_str(), v.size,
                v.lowers.size(), v.is_snapshot ? " snapshot" : "");
  std::string line = buf;
  auto it = open_.find(v.name);
  if (it != open_.end() && !v.is_snapshot) {
    VolumeStats st = it->second->Stats();
    std::snprintf(buf, sizeof buf, " used=%" PRIu64 " mapped=%" PRIu64 " extents=%" PRIu64 " open=%zu",
                  st.upper.allocated_bytes, st.upper.mapped_sectors * 512, st.upper.extents,
                  v.open_handles);
    line += buf;
    if (Status h = it->second->health(); !h.ok()) line += " failed: " + h.ToString();
  } else if (!v.is_snapshot && !v.upper.empty()) {
    auto fi = env_->Stat(LayerPath(v.upper + ".data"));
    if (fi.ok()) line += " used=" + std::to_string(fi->allocated);
  }
  return line;
}

std::string Store::StatusText(const std::string& name) const {
  std::vector<VolumeInfo> vols;
  if (name.empty()) {
    vols = List();
  } else {
    auto v = Lookup(name);
    if (!v.ok()) return v.status().ToString() + "\n";
    vols.push_back(v.value());
  }
  std::lock_guard lk(mu_);
  std::string out;
  for (const auto& v : vols) out += StatusLine(v) + "\n";
  return out;
}

}  // namespace ovbd
