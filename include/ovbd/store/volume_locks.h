// VolumeLocks: one command lock per volume name, so commands on one volume
// run in order while commands on different volumes run at the same time.
// A command takes every lock it needs at once (Guard sorts the names), which
// is the whole deadlock rule: no command takes a second set while holding one.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ovbd/io/mutex.h"

namespace ovbd {

class VolumeLocks {
 public:
  class Guard {
   public:
    Guard() = default;
    Guard(Guard&& o) noexcept : held_(std::move(o.held_)) { o.held_.clear(); }
    Guard& operator=(Guard&& o) noexcept {
      if (this != &o) {
        Unlock();
        held_ = std::move(o.held_);
        o.held_.clear();
      }
      return *this;
    }
    ~Guard() { Unlock(); }
    // Releases every lock held (in reverse order); idempotent.
    void Unlock();

   private:
    friend class VolumeLocks;
    std::vector<std::shared_ptr<Mutex>> held_;  // in locking order
  };

  // Locks the command locks of `names` (base volume names; duplicates
  // allowed), in name order.
  Guard Lock(std::vector<std::string> names) EXCLUDES(mu_);

 private:
  Mutex mu_;  // guards the table only; never held while waiting for a volume
  std::map<std::string, std::shared_ptr<Mutex>> locks_ GUARDED_BY(mu_);
};

}  // namespace ovbd
