// The open-volume table. Opening a volume reads its layers' indexes and
// replays its upper's journal: I/O done outside the state lock, under a
// per-name latch so one name is opened once, then installed after checking
// that its manifest did not change meanwhile.
#include "ovbd/store/filename.h"
#include "store_internal.h"

namespace ovbd {

Result<std::shared_ptr<Volume>> Store::OpenVolume(const std::string& name, bool take_handle) {
  for (;;) {
    Manifest m;
    std::optional<SnapshotRecord> snap;
    {
      MutexLock lk(&mu_);
      changed_.Wait([&] {
        mu_.AssertHeld();
        return !opening_.count(name);
      });
      if (auto it = open_.find(name); it != open_.end()) {
        if (take_handle) handles_[name]++;
        return it->second;
      }
      OVBD_ASSIGN_OR_RETURN(auto r, Resolve(name));
      m = *r.first;
      if (r.second) snap = *r.second;
      opening_.insert(name);  // held by this thread until the install below
    }
    auto opened = [&]() -> Result<std::shared_ptr<Volume>> {
      const auto& lowers = snap ? snap->lowers : m.lowers;
      std::vector<std::shared_ptr<lsmt::Layer>> layers;
      for (const auto& f : lowers) {
        OVBD_ASSIGN_OR_RETURN(auto l, OpenLayerFile(f));
        layers.push_back(std::move(l));
      }
      if (snap) return std::make_shared<Volume>(name, snap->size, std::move(layers), nullptr, true);
      OVBD_ASSIGN_OR_RETURN(std::unique_ptr<Upper> up,
                            Upper::Open(env_, LayerPath(m.upper), m.size, opts_.read_only));
      // A data file cut short behind our back: a write that extends it
      // again would turn the lost ranges into zeros. Refuse the volume.
      const uint64_t need = up->DataBytesNeeded(), have = up->data_file()->Size();
      if (have < need) {
        return Status::Corruption(LayerPath(filename::UpperDataFile(m.upper)) + " holds " +
                                  std::to_string(have) + " bytes but its journal maps data up to " +
                                  std::to_string(need) + " (truncated?); run `ovbd check`");
      }
      return std::make_shared<Volume>(name, m.size, std::move(layers),
                                      std::shared_ptr<Upper>(std::move(up)), opts_.read_only);
    }();
    MutexLock lk(&mu_);
    opening_.erase(name);
    changed_.SignalAll();
    if (!opened.ok()) return opened.status();
    // Re-check: a command may have changed the manifest while we opened
    // (then open again from the new one) or removed the name.
    auto now = Resolve(name);
    if (!now.ok()) return now.status();
    if (now->first->generation != m.generation || now->first->upper != m.upper) continue;
    open_[name] = opened.value();
    if (take_handle) handles_[name]++;
    return opened.value();
  }
}

Result<std::shared_ptr<Volume>> Store::Acquire(const std::string& name) {
  return OpenVolume(name, /*take_handle=*/true);
}

void Store::Release(const std::string& name) {
  MutexLock lk(&mu_);
  auto it = handles_.find(name);
  if (it == handles_.end()) return;
  if (--it->second == 0) handles_.erase(it);
  changed_.SignalAll();
}

Status Store::FlushAll() {
  Status layers = VerifyLayerFiles();
  std::vector<std::shared_ptr<Volume>> vols;
  {
    MutexLock lk(&mu_);
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

}  // namespace ovbd
