// IoErrorLog: the daemon's log lines about failed volume I/O. Each names the
// volume, the operation, the offset and length and, when the error names
// one, the layer; and each volume has its own rate limit, so one volume with
// a bad layer read in a loop neither floods the log nor hides the errors of
// another. What the limit holds back is counted and reported as "suppressed
// K similar errors" before the next line that passes for that volume (and
// at unmount); the full count is in the metrics (ovbdfs_errors_total).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "ovbd/control/control_log.h"
#include "ovbd/io/mutex.h"
#include "ovbd/io/status.h"

namespace ovbd::fuse {

class IoErrorLog {
 public:
  // Per volume: `burst` lines at once, then `per_second` on average.
  explicit IoErrorLog(double per_second = 5, double burst = 10)
      : per_second_(per_second), burst_(burst) {}
  // Logs what is still suppressed.
  ~IoErrorLog();

  // `layer` may be empty (not known). `length` 0: the operation has none
  // (a flush).
  void Report(const std::string& volume, const char* op, uint64_t offset, uint64_t length,
              const std::string& layer, const Status& s) EXCLUDES(mu_);

  // Logs a summary for every volume with suppressed lines.
  void FlushSuppressed() EXCLUDES(mu_);

 private:
  LogLimiter* LimiterFor(const std::string& volume) EXCLUDES(mu_);

  const double per_second_, burst_;
  Mutex mu_;
  // Entries are never removed: only volumes that had errors have one.
  std::map<std::string, std::unique_ptr<LogLimiter>> limiters_ GUARDED_BY(mu_);
};

}  // namespace ovbd::fuse
