// Fuzz target for HTTP responses, as a hostile server could send them: the
// client's parser, limits and checks (ParseHttpResponse shares them with
// the live path) must never crash, and what they accept must stay within
// the limits and be a response a caller can use.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "ovbd/io/http_client.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view wire(reinterpret_cast<const char*>(data), size);
  ovbd::HttpClientOptions opts;
  opts.max_header_bytes = 1024;
  opts.max_body_bytes = 4096;
  for (bool head : {false, true}) {
    auto r = ovbd::ParseHttpResponse(wire, head, opts);
    if (!r.ok()) {
      const int e = r.status().os_errno();
      if (e != EPROTO && e != EMSGSIZE && e != ECONNRESET) std::abort();
      continue;
    }
    if (r->status < 200 || r->status > 599) std::abort();
    if (r->body.size() > opts.max_body_bytes) std::abort();
    if (head && !r->body.empty()) std::abort();
    size_t header_bytes = 0;
    for (const auto& [name, value] : r->headers) {
      if (name.empty()) std::abort();
      header_bytes += name.size() + value.size();
      if (r->Header(name) == nullptr) std::abort();
    }
    if (header_bytes > opts.max_header_bytes) std::abort();
  }
  return 0;
}
