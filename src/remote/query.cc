#include "query.h"

#include <cctype>

namespace ovbd::remote {

std::string PercentEncode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalnum(u) || c == '-' || c == '.' || c == '_' || c == '~') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  return out;
}

void AppendQuery(Url* url, std::string_view name, std::string_view value) {
  const size_t q = url->target.find('?');
  char sep = '?';
  if (q != std::string::npos) {
    // "path?" and "path?a=b&" need no separator of their own.
    sep = (q + 1 == url->target.size() || url->target.back() == '&') ? '\0' : '&';
  }
  if (sep != '\0') url->target.push_back(sep);
  url->target.append(name);
  url->target.push_back('=');
  url->target.append(PercentEncode(value));
}

}  // namespace ovbd::remote
