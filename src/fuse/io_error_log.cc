#include "io_error_log.h"

#include <spdlog/spdlog.h>
#include <time.h>

#include <vector>

namespace ovbd::fuse {

namespace {
uint64_t MonotonicUs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000u + static_cast<uint64_t>(ts.tv_nsec) / 1000u;
}

void LogSuppressed(const std::string& volume, uint64_t n) {
  spdlog::error("volume {}: suppressed {} similar I/O error{} (rate limit; ovbdfs_errors_total counts all)",
                volume, n, n == 1 ? "" : "s");
}
}  // namespace

IoErrorLog::~IoErrorLog() { FlushSuppressed(); }

LogLimiter* IoErrorLog::LimiterFor(const std::string& volume) {
  MutexLock lk(&mu_);
  std::unique_ptr<LogLimiter>& l = limiters_[volume];
  if (!l) l = std::make_unique<LogLimiter>(per_second_, burst_);
  return l.get();
}

void IoErrorLog::Report(const std::string& volume, const char* op, uint64_t offset,
                        uint64_t length, const std::string& layer, const Status& s) {
  LogLimiter* limiter = LimiterFor(volume);
  uint64_t suppressed = 0;
  if (!limiter->Allow(MonotonicUs(), &suppressed)) return;
  if (suppressed) LogSuppressed(volume, suppressed);
  std::string where;
  if (length) {
    where = fmt::format(" at offset {} length {}", offset, length);
  }
  spdlog::error("I/O error on volume {}: {}{}{}: {}", volume, op, where,
                layer.empty() ? std::string() : " in " + layer, s.ToString());
}

void IoErrorLog::FlushSuppressed() {
  std::vector<std::pair<std::string, LogLimiter*>> all;
  {
    MutexLock lk(&mu_);
    for (auto& [name, l] : limiters_) all.emplace_back(name, l.get());
  }
  for (auto& [name, l] : all) {
    if (uint64_t n = l->TakeSuppressed()) LogSuppressed(name, n);
  }
}

}  // namespace ovbd::fuse
