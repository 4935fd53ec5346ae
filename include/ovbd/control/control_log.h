// What the daemon logs about `.control` commands: each line escaped (no raw
// control bytes or binary input reaches a log) and cut to a bounded length,
// and the whole stream rate-limited, so a client writing commands in a loop
// cannot flood syslog. Suppressed lines are counted and the count is logged
// with the next line that passes.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "ovbd/io/mutex.h"

namespace ovbd {

// Printable ASCII is kept (a backslash doubled); every other byte becomes
// \xHH. Input past `max_bytes` is dropped and its length noted at the end.
std::string EscapeForLog(std::string_view in, size_t max_bytes = 200);

// A token bucket: `burst` lines at once, then `per_second` on average.
class LogLimiter {
 public:
  LogLimiter(double per_second, double burst) : rate_(per_second), burst_(burst), tokens_(burst) {}

  // Whether a line may be logged at `now_us` (any monotonic clock). When it
  // may, *suppressed receives the number of lines refused since the last
  // line that passed (and is reset).
  bool Allow(uint64_t now_us, uint64_t* suppressed) EXCLUDES(mu_);
  // The number of lines refused since the last one that passed (reset):
  // for a summary when no further line comes (at exit, say).
  uint64_t TakeSuppressed() EXCLUDES(mu_);

 private:
  Mutex mu_;
  const double rate_, burst_;
  double tokens_ GUARDED_BY(mu_);
  uint64_t last_us_ GUARDED_BY(mu_) = 0;
  bool started_ GUARDED_BY(mu_) = false;
  uint64_t suppressed_ GUARDED_BY(mu_) = 0;
};

}  // namespace ovbd
