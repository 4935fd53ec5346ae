// Garbage collection: files under layers/ that no manifest references and
// no command in flight has pinned.
#include <set>

#include "ovbd/store/filename.h"
#include "store_internal.h"

namespace ovbd {

Store::Pin::~Pin() {
  MutexLock lk(&store_->mu_);
  for (const auto& f : files_) {
    auto it = store_->pinned_.find(f);
    if (it != store_->pinned_.end()) store_->pinned_.erase(it);
  }
}

std::unique_ptr<Store::Pin> Store::PinFiles(std::vector<std::string> files) {
  MutexLock lk(&mu_);
  for (const auto& f : files) pinned_.insert(f);
  return std::make_unique<Pin>(this, std::move(files));
}

Status Store::CollectGarbage(std::vector<std::string>* removed) {
  OVBD_RETURN_IF_ERROR(CheckWritable());
  {
    MutexLock lk(&mu_);
    if (manifests_unreadable_) {
      std::string names;
      for (const auto& [n, why] : failed_manifests_) names += (names.empty() ? "" : ", ") + n;
      return Status::Busy("nothing collected: the manifest of " + names +
                          " is unusable and may reference any file (see status; repair or "
                          "remove it, then remount)");
    }
  }
  return CollectGarbageNow(removed);
}

Status Store::CollectGarbageNow(std::vector<std::string>* removed) {
  MutexLock g(&gc_mu_);
  const std::string ldir = JoinPath(dir_, filename::kLayersDir);
  // Listed before the live set is taken: a file created after the listing
  // is not considered, one created before it is pinned or referenced.
  OVBD_ASSIGN_OR_RETURN(auto files, env_->ListDir(ldir));
  std::vector<std::string> garbage;
  {
    MutexLock lk(&mu_);
    if (manifests_unreadable_) return Status::OK();  // see LoadManifests
    std::set<std::string> live(pinned_.begin(), pinned_.end());
    for (const auto& [n, m] : manifests_) {
      // A lower keeps its remote address too (whether or not it is also
      // stored locally, the address is where it came from).
      auto keep = [&](const std::string& l) {
        live.insert(l);
        if (std::string stub = filename::RemoteStubOf(l); !stub.empty()) live.insert(stub);
      };
      for (const auto& l : m.lowers) keep(l);
      for (const auto& s : m.snapshots)
        for (const auto& l : s.lowers) keep(l);
      if (!m.upper.empty()) {
        live.insert(filename::UpperDataFile(m.upper));
        live.insert(filename::UpperJournalFile(m.upper));
      }
    }
    for (const auto& f : files) {
      if (live.count(f)) continue;
      garbage.push_back(f);
      layer_cache_.erase(f);
    }
  }
  // Unreferenced and unpinned files never become referenced again (names
  // are fresh, and adopting an existing digest waits for gc_mu_), so they
  // can be removed without the state lock.
  for (const auto& f : garbage) {
    OVBD_RETURN_IF_ERROR(env_->Remove(JoinPath(ldir, f)));
    if (removed) removed->push_back(f);
  }
  if (!garbage.empty()) OVBD_RETURN_IF_ERROR(env_->SyncDir(ldir));
  return Status::OK();
}

}  // namespace ovbd
