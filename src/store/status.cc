// The store's status report: one line per volume and snapshot, then the
// manifests that were refused and the background jobs.
#include <cinttypes>
#include <cstdio>

#include "ovbd/store/filename.h"
#include "store_internal.h"

namespace ovbd {

std::string Store::StatusLine(const VolumeInfo& v) const {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s size=%" PRIu64 " layers=%zu%s", v.name.c_str(), v.size,
                v.lowers.size(), v.is_snapshot ? " snapshot" : "");
  std::string line = buf;
  if (v.is_snapshot) return line;
  std::shared_ptr<Volume> open;
  {
    MutexLock lk(&mu_);
    if (auto it = open_.find(v.name); it != open_.end()) open = it->second;
  }
  if (open) {
    VolumeStats st = open->Stats();
    // preallocated: of used, reserved ahead of first writes and holding
    // nothing yet (a seal or a delete gives it back).
    std::snprintf(buf, sizeof buf,
                  " used=%" PRIu64 " preallocated=%" PRIu64 " mapped=%" PRIu64 " extents=%" PRIu64
                  " open=%zu",
                  st.upper.allocated_bytes, st.upper.preallocated_bytes,
                  st.upper.mapped_sectors * 512, st.upper.extents, v.open_handles);
    line += buf;
    if (Status h = open->health(); !h.ok()) line += " failed: " + h.ToString();
  } else if (!v.upper.empty()) {
    auto fi = env_->Stat(LayerPath(filename::UpperDataFile(v.upper)));
    if (fi.ok()) line += " used=" + std::to_string(fi->allocated);
  }
  const HydrateInfo& h = v.hydrate;
  if (h.state != HydrateState::kIdle) {
    std::snprintf(buf, sizeof buf,
                  "\n  hydrate: %s copied=%" PRIu64 " total=%" PRIu64 " rate=%" PRIu64
                  " limit=%" PRIu64 " eta=%" PRIu64 " retries=%" PRIu64,
                  HydrateStateName(h.state), h.copied, h.total, h.rate, h.limit, h.eta_s,
                  h.retries);
    line += buf;
    if (!h.error.empty()) line += " error=\"" + h.error + "\"";
  }
  return line;
}

std::vector<remote::BlobStats> Store::RemoteCacheStats() const {
  return opts_.remote ? opts_.remote->CacheStats() : std::vector<remote::BlobStats>{};
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
  std::string out;
  for (const auto& v : vols) out += StatusLine(v) + "\n";
  if (name.empty()) {
    for (const auto& f : FailedManifests()) out += f.name + " failed: " + f.why + "\n";
    for (const auto& j : Jobs()) {
      if (j.state != JobState::kRunning && j.state != JobState::kQueued) continue;
      char buf[256];
      std::snprintf(buf, sizeof buf, "job %" PRIu64 " %s %s %s %" PRIu64 "/%" PRIu64 "\n", j.id,
                    j.kind.c_str(), j.target.c_str(), JobStateName(j.state), j.done, j.total);
      out += buf;
    }
    // Remote layers read since the cache was opened: what crossed the
    // network for each (per blob, so shared by every volume using it).
    {
      for (const auto& b : RemoteCacheStats()) {
        char buf[384];
        std::snprintf(buf, sizeof buf,
                      "remote %s size=%" PRIu64 " cached=%" PRIu64 " hits=%" PRIu64
                      " misses=%" PRIu64 " fetched=%" PRIu64 " errors=%" PRIu64 "%s%s\n",
                      b.digest.c_str(), b.size, b.cached_bytes, b.hits, b.misses,
                      b.fetched_bytes, b.errors, b.pinned ? " pinned" : "",
                      b.complete ? " complete" : "");
        out += buf;
      }
    }
  }
  return out;
}

}  // namespace ovbd
