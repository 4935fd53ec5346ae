// RangeLocks: striped reader/writer locks over a byte range of a volume.
//
// The upper writes every sector at its own offset in the data file, so two
// writers of one range race in the file itself, not just in the map. That
// is fine between foreground writes (the last one wins, as on a disk), but
// a hydration fill must never land after a foreground write or discard of
// the same range: it would put older lower data over newer data. Foreground
// writes take their stripes shared (they never wait for each other); a fill
// takes its stripes exclusive for its check-write-map step, so "is this
// range still absent" and "write it" are one atomic step against them.
//
// Stripes are 1 MiB of the volume each, 64 of them, chosen by offset; a
// range takes every stripe it touches in index order (all 64 for a range of
// 64 MiB or more), so two lockers can never deadlock.
#pragma once

#include <array>
#include <cstdint>

#include "ovbd/io/mutex.h"

namespace ovbd {

class RangeLocks {
 public:
  static constexpr unsigned kStripeShift = 20;  // 1 MiB of the volume per stripe
  static constexpr size_t kStripes = 64;

  // Holds the stripes of [off, off+len) until destroyed. Lock and unlock
  // of a varying set of stripes is beyond the static analysis.
  class Guard {
   public:
    Guard(RangeLocks& l, uint64_t off, uint64_t len, bool exclusive)
        : locks_(&l), exclusive_(exclusive), mask_(StripesOf(off, len)) {
      ForEachStripe(exclusive_ ? &SharedMutex::Lock : &SharedMutex::LockShared);
    }
    ~Guard() { ForEachStripe(exclusive_ ? &SharedMutex::Unlock : &SharedMutex::UnlockShared); }
    Guard(const Guard&) = delete;
    Guard& operator=(const Guard&) = delete;

   private:
    // Calls `op` on the mutex of each stripe of the range, in index order.
    void ForEachStripe(void (SharedMutex::*op)()) NO_THREAD_SAFETY_ANALYSIS {
      for (uint64_t m = mask_; m != 0; m &= m - 1) (locks_->stripes_[__builtin_ctzll(m)].mu.*op)();
    }

    RangeLocks* locks_;
    bool exclusive_;
    uint64_t mask_;
  };

  // Bit i set: the range touches stripe i.
  static uint64_t StripesOf(uint64_t off, uint64_t len) {
    if (len == 0) return 0;
    const uint64_t first = off >> kStripeShift;
    const uint64_t last = (off + len - 1) >> kStripeShift;
    if (last - first + 1 >= kStripes) return ~uint64_t{0};
    uint64_t mask = 0;
    for (uint64_t s = first; s <= last; ++s) mask |= uint64_t{1} << (s % kStripes);
    return mask;
  }

 private:
  struct alignas(64) Stripe {
    SharedMutex mu;
  };
  std::array<Stripe, kStripes> stripes_;
};

}  // namespace ovbd
