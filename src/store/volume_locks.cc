#include "ovbd/store/volume_locks.h"

#include <algorithm>

namespace ovbd {

// The per-volume mutexes are taken and released in different scopes (a
// Guard), which the analysis cannot follow; the rule they follow is the
// one in the header.
void VolumeLocks::Guard::Unlock() NO_THREAD_SAFETY_ANALYSIS {
  for (auto it = held_.rbegin(); it != held_.rend(); ++it) (*it)->Unlock();
  held_.clear();
}

VolumeLocks::Guard VolumeLocks::Lock(std::vector<std::string> names) NO_THREAD_SAFETY_ANALYSIS {
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  Guard g;
  {
    MutexLock lk(&mu_);
    for (const auto& n : names) {
      auto& m = locks_[n];
      if (!m) m = std::make_shared<Mutex>();
      g.held_.push_back(m);
    }
  }
  for (const auto& m : g.held_) m->Lock();
  return g;
}

}  // namespace ovbd
