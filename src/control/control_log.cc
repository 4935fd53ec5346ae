#include "ovbd/control/control_log.h"

#include <algorithm>

namespace ovbd {

std::string EscapeForLog(std::string_view in, size_t max_bytes) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  const size_t n = std::min(in.size(), max_bytes);
  out.reserve(n + 16);
  for (size_t i = 0; i < n; ++i) {
    const unsigned char u = static_cast<unsigned char>(in[i]);
    if (u == '\\') {
      out += "\\\\";
    } else if (u >= 0x20 && u < 0x7f) {
      out.push_back(static_cast<char>(u));
    } else {
      out += "\\x";
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  if (in.size() > n) out += "...(" + std::to_string(in.size()) + " bytes)";
  return out;
}

bool LogLimiter::Allow(uint64_t now_us, uint64_t* suppressed) {
  MutexLock lk(&mu_);
  if (!started_) {
    started_ = true;
    last_us_ = now_us;
  }
  if (now_us > last_us_) {
    tokens_ = std::min(burst_, tokens_ + static_cast<double>(now_us - last_us_) * rate_ / 1e6);
    last_us_ = now_us;
  }
  if (tokens_ < 1.0) {
    ++suppressed_;
    return false;
  }
  tokens_ -= 1.0;
  if (suppressed) *suppressed = suppressed_;
  suppressed_ = 0;
  return true;
}

uint64_t LogLimiter::TakeSuppressed() {
  MutexLock lk(&mu_);
  const uint64_t n = suppressed_;
  suppressed_ = 0;
  return n;
}

}  // namespace ovbd
