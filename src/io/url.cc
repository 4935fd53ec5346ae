// Url: parsing and resolving the absolute http(s) URLs the client speaks to.
#include <arpa/inet.h>

#include <cctype>
#include <charconv>

#include "ovbd/io/http_client.h"

namespace ovbd {

namespace {

constexpr size_t kMaxUrlLength = 8192;

Status BadUrl(std::string_view text, const std::string& why) {
  // The URL is echoed only up to a bound, without its query (which may
  // carry a signed token) and without user information (a password).
  std::string shown(text.substr(0, std::min<size_t>(text.find('?'), 256)));
  if (size_t sep = shown.find("://"); sep != std::string::npos) {
    size_t end = shown.find_first_of("/?#", sep + 3);
    size_t at = shown.rfind('@', end);
    if (at != std::string::npos && at > sep) shown.replace(sep + 3, at - sep - 3, "...");
  }
  return Status::InvalidArgument("bad URL '" + shown + "': " + why);
}

bool ValidHostChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_';
}

// Every byte of a target is a visible ASCII character (RFC 3986 allows no
// spaces or controls; percent-encoding is the caller's).
bool ValidTarget(std::string_view t) {
  for (char c : t) {
    if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) return false;
  }
  return true;
}

}  // namespace

Result<Url> Url::Parse(std::string_view text) {
  if (text.size() > kMaxUrlLength) return BadUrl(text, "longer than 8192 bytes");
  Url u;
  size_t sep = text.find("://");
  if (sep == std::string_view::npos) return BadUrl(text, "not an absolute URL");
  std::string scheme(text.substr(0, sep));
  for (auto& c : scheme) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (scheme != "http" && scheme != "https") return BadUrl(text, "only http and https are supported");
  u.scheme = scheme;
  std::string_view rest = text.substr(sep + 3);
  size_t path = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, path);
  std::string_view target = path == std::string_view::npos ? std::string_view("/") : rest.substr(path);
  if (size_t hash = target.find('#'); hash != std::string_view::npos) target = target.substr(0, hash);
  if (target.empty() || target.front() == '?') {
    u.target = "/" + std::string(target);
  } else {
    u.target = std::string(target);
  }
  if (!ValidTarget(u.target)) return BadUrl(text, "spaces or control characters in the path");
  if (authority.find('@') != std::string_view::npos) {
    return BadUrl(text, "user information in a URL is not accepted (use a credentials file)");
  }
  std::string_view port_text;
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return BadUrl(text, "unclosed '[' in the host");
    u.host = std::string(authority.substr(1, close - 1));
    in6_addr a6;
    if (inet_pton(AF_INET6, u.host.c_str(), &a6) != 1) return BadUrl(text, "bad IPv6 address");
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return BadUrl(text, "junk after the IPv6 address");
      port_text = after.substr(1);
      if (port_text.empty()) return BadUrl(text, "empty port");
    }
  } else {
    size_t colon = authority.rfind(':');
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.empty()) return BadUrl(text, "empty port");
      authority = authority.substr(0, colon);
    }
    u.host = std::string(authority);
    if (u.host.empty()) return BadUrl(text, "no host");
    if (u.host.size() > 253) return BadUrl(text, "host name longer than 253 characters");
    for (char c : u.host) {
      if (!ValidHostChar(c)) return BadUrl(text, "bad character in the host");
    }
    for (auto& c : u.host) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  if (!port_text.empty()) {
    unsigned p = 0;
    auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), p);
    if (ec != std::errc() || end != port_text.data() + port_text.size() || p == 0 || p > 65535) {
      return BadUrl(text, "bad port");
    }
    u.port = static_cast<uint16_t>(p);
  } else {
    u.port = u.scheme == "https" ? 443 : 80;
  }
  return u;
}

Result<Url> Url::Resolve(std::string_view location) const {
  if (location.find("://") != std::string_view::npos) return Parse(location);
  if (location.substr(0, 2) == "//") return Parse(scheme + ":" + std::string(location));
  Url u = *this;
  std::string target;
  if (!location.empty() && location.front() == '/') {
    target = std::string(location);
  } else {
    // Relative to this URL's directory.
    std::string dir = u.target.substr(0, u.target.find('?'));
    dir = dir.substr(0, dir.rfind('/') + 1);
    target = dir + std::string(location);
  }
  if (size_t hash = target.find('#'); hash != std::string::npos) target.resize(hash);
  if (target.empty()) target = "/";
  if (!ValidTarget(target)) return BadUrl(location, "spaces or control characters in the path");
  u.target = target;
  return u;
}

std::string Url::Authority() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  const bool default_port = (scheme == "https" && port == 443) || (scheme == "http" && port == 80);
  return default_port ? h : h + ":" + std::to_string(port);
}

std::string Url::ToString() const { return scheme + "://" + Authority() + target; }

bool Url::IsLoopback() const {
  if (host == "localhost") return true;
  in_addr a4;
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  in6_addr a6;
  if (inet_pton(AF_INET6, host.c_str(), &a6) == 1) return IN6_IS_ADDR_LOOPBACK(&a6);
  return false;
}

}  // namespace ovbd
