// Fuzz target for the parsers of what registries' authentication sends:
// WWW-Authenticate challenges (the bytes as a header), and, on the same
// bytes, token replies and docker config files. None may crash; what
// parses must obey the parsers' promises, and a challenge written back in
// canonical form must parse to the same thing.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "ovbd/remote/auth.h"

namespace {

bool IsLower(const std::string& s) {
  for (char c : s) {
    if (c >= 'A' && c <= 'Z') return false;
  }
  return true;
}

std::string Quote(const std::string& v) {
  std::string out = "\"";
  for (char c : v) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string in(reinterpret_cast<const char*>(data), size);
  using namespace ovbd::remote;

  auto ch = ParseWwwAuthenticate(in);
  if (ch.ok()) {
    if (ch->scheme.empty() || !IsLower(ch->scheme) || ch->params.size() > 32) std::abort();
    std::string again = ch->scheme;
    bool first = true;
    for (const auto& [k, v] : ch->params) {
      if (k.empty() || !IsLower(k)) std::abort();
      again += (first ? " " : ", ") + k + "=" + Quote(v);
      first = false;
    }
    // Canonical form can grow (quotes, escapes) past the 8 KiB bound.
    if (again.size() <= 8192) {
      auto back = ParseWwwAuthenticate(again);
      if (!back.ok() || back->scheme != ch->scheme || back->params != ch->params) std::abort();
    }
  }

  auto tok = ParseTokenReply(in);
  if (tok.ok()) {
    if (tok->token.empty() || tok->expires_in < 1 || tok->expires_in > 86400) std::abort();
    for (char c : tok->token) {
      if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) std::abort();
    }
  }

  auto cfg = ParseDockerConfig(in);
  if (cfg.ok()) {
    for (const auto& [reg, c] : *cfg) {
      if (reg.empty() || !IsLower(reg) || reg.find('/') != std::string::npos || c.empty()) std::abort();
      if (c.username.find(':') != std::string::npos) std::abort();
    }
  }
  return 0;
}
