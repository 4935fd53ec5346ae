// The layer cache: each layer file is opened once and shared by every stack
// that uses it; its identity (size, mtime) at open is kept so a file
// changed behind our back is noticed.
#include "ovbd/store/filename.h"
#include "store_internal.h"

namespace ovbd {

Result<std::shared_ptr<lsmt::Layer>> Store::OpenLayerFile(const std::string& file) {
  {
    MutexLock lk(&mu_);
    auto it = layer_cache_.find(file);
    if (it != layer_cache_.end()) {
      if (auto l = it->second.layer.lock()) return l;
    }
  }
  OVBD_RETURN_IF_ERROR(ValidateLayerFileName(file));
  // Opened outside the lock (it reads the trailer and the index); two
  // threads opening the same file at once keep whichever lands first.
  auto id = env_->Stat(LayerPath(file));
  if (!id.ok() && id.status().IsNotFound() && !filename::RemoteStubOf(file).empty() &&
      env_->Exists(LayerPath(filename::RemoteStubOf(file)))) {
    // No local copy: the layer is read from where its stub says.
    OVBD_ASSIGN_OR_RETURN(auto layer, OpenRemoteLayer(file));
    MutexLock lk(&mu_);
    auto& slot = layer_cache_[file];
    if (auto l = slot.layer.lock()) return l;
    slot.layer = layer;
    slot.remote = true;
    return layer;
  }
  if (!id.ok()) return id.status();
  OVBD_ASSIGN_OR_RETURN(auto layer, OpenLayer(env_, LayerPath(file), opts_.layer));
  MutexLock lk(&mu_);
  auto& slot = layer_cache_[file];
  if (auto l = slot.layer.lock()) return l;
  slot.layer = layer;
  slot.identity = id.value();
  slot.remote = false;
  return layer;
}

void Store::CacheLayer(const std::string& file, std::shared_ptr<lsmt::Layer> layer) {
  auto id = env_->Stat(LayerPath(file));
  MutexLock lk(&mu_);
  auto& slot = layer_cache_[file];
  slot.layer = layer;
  if (id.ok()) slot.identity = id.value();
}

Status Store::VerifyLayerFiles() {
  struct Entry {
    std::string file;
    std::shared_ptr<lsmt::Layer> layer;
    FileInfo identity;
  };
  std::vector<Entry> entries;
  {
    MutexLock lk(&mu_);
    for (auto& [file, c] : layer_cache_) {
      auto layer = c.layer.lock();
      if (!layer || layer->failed() || c.remote) continue;
      entries.push_back({file, std::move(layer), c.identity});
    }
  }
  Status first;
  for (const auto& e : entries) {
    auto now = env_->Stat(LayerPath(e.file));
    std::string why;
    if (!now.ok()) {
      why = "file vanished (" + now.status().ToString() + ")";
    } else if (now->size != e.identity.size) {
      why = "size changed from " + std::to_string(e.identity.size) + " to " +
            std::to_string(now->size) + " bytes";
    } else if (now->mtime_ns != e.identity.mtime_ns) {
      why = "modified while in use";
    }
    if (why.empty()) continue;
    e.layer->MarkFailed(why);
    if (first.ok()) first = Status::Corruption(LayerPath(e.file) + ": " + why);
  }
  return first;
}

}  // namespace ovbd
