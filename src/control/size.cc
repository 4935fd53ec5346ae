#include "ovbd/control/size.h"

#include <cstdio>

namespace ovbd {

Result<uint64_t> ParseSize(const std::string& text) {
  auto bad = [&](const char* why) {
    return Status::InvalidArgument("size '" + text + "': " + why);
  };
  if (text.empty()) return bad("empty");
  size_t i = 0;
  uint64_t v = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    uint64_t d = static_cast<uint64_t>(text[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return bad("too large");
    v = v * 10 + d;
    ++i;
  }
  if (i == 0) return bad("must start with a number");
  std::string suffix = text.substr(i);
  unsigned shift = 0;
  if (!suffix.empty()) {
    switch (suffix[0]) {
      case 'k': case 'K': shift = 10; break;
      case 'm': case 'M': shift = 20; break;
      case 'g': case 'G': shift = 30; break;
      case 't': case 'T': shift = 40; break;
      case 'b': case 'B': shift = 0; break;
      default: return bad("unknown suffix (use K, M, G or T)");
    }
    std::string rest = suffix.substr(1);
    if (suffix[0] == 'b' || suffix[0] == 'B') {
      if (!rest.empty()) return bad("unknown suffix");
    } else if (!(rest.empty() || rest == "i" || rest == "iB" || rest == "B")) {
      return bad("unknown suffix (use K, M, G or T)");
    }
  }
  if (shift && v > (UINT64_MAX >> shift)) return bad("too large");
  return v << shift;
}

std::string FormatSize(uint64_t b) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  double v = static_cast<double>(b);
  while (v >= 1024 && u < 6) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(b));
  } else if (v == static_cast<double>(static_cast<uint64_t>(v))) {
    std::snprintf(buf, sizeof buf, "%.0f %s", v, units[u]);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
  }
  return buf;
}

}  // namespace ovbd
