// The registry configuration file: what the daemon's registry_config= and
// ovbd's --registry-config read.
#include <cctype>
#include <nlohmann/json.hpp>

#include "ovbd/remote/remote_blobs.h"

namespace ovbd::remote {

namespace {
using nlohmann::json;
constexpr int64_t kMaxTimeoutMs = 10 * 60 * 1000;
constexpr int kMaxRetries = 20;

std::string Lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// HOST[:PORT], nothing else (the registry part of a registry:// address).
bool IsRegistry(const std::string& r) {
  if (r.empty() || r.find_first_of("/?#@") != std::string::npos) return false;
  return Url::Parse("https://" + r + "/").ok();
}

Status Bad(const std::string& why) { return Status::InvalidArgument("registry configuration: " + why); }

Result<int64_t> Millis(const json& v, const char* key) {
  if (!v.is_number_integer() || v.get<int64_t>() <= 0 || v.get<int64_t>() > kMaxTimeoutMs) {
    return Bad(std::string(key) + " must be an integer from 1 to 600000 (milliseconds)");
  }
  return v.get<int64_t>();
}
}  // namespace

Status ParseRegistryConfig(std::string_view text, RemoteOptions* opts) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return Bad("not a JSON object");
  for (const auto& [key, v] : j.items()) {
    if (key == "mirrors") {
      if (!v.is_object()) return Bad("mirrors must map a registry to a list of URLs");
      for (const auto& [reg, list] : v.items()) {
        if (!list.is_array()) return Bad("mirrors of " + reg + " must be a list of URLs");
        std::vector<std::string> urls;
        for (const auto& u : list) {
          if (!u.is_string()) return Bad("mirrors of " + reg + " must be strings");
          auto parsed = Url::Parse(u.get<std::string>());
          if (!parsed.ok()) return Bad("mirror of " + reg + ": " + parsed.status().message());
          urls.push_back(u.get<std::string>());
        }
        opts->registry.mirrors[reg] = std::move(urls);
      }
    } else if (key == "plain_http") {
      if (!v.is_array()) return Bad("plain_http must be a list of registries (HOST[:PORT])");
      for (const auto& r : v) {
        if (!r.is_string()) return Bad("plain_http must hold strings");
        opts->registry.plain_http.push_back(r.get<std::string>());
        // Listing a registry here is the consent the HTTP client asks for
        // before it speaks plain HTTP to a host that is not loopback.
        opts->http.allow_plain_http = true;
      }
    } else if (key == "https") {
      // Loopback registries are spoken to over plain HTTP unless listed
      // here: a TLS registry (or TLS front) on this machine.
      if (!v.is_array()) return Bad("https must be a list of registries (HOST[:PORT])");
      for (const auto& r : v) {
        if (!r.is_string() || !IsRegistry(r.get<std::string>())) {
          return Bad("https must hold registries (HOST[:PORT])");
        }
        opts->registry.https.push_back(r.get<std::string>());
      }
    } else if (key == "timeout_ms") {
      OVBD_ASSIGN_OR_RETURN(int64_t ms, Millis(v, "timeout_ms"));
      opts->http.request_timeout = std::chrono::milliseconds(ms);
    } else if (key == "connect_timeout_ms") {
      OVBD_ASSIGN_OR_RETURN(int64_t ms, Millis(v, "connect_timeout_ms"));
      opts->http.connect_timeout = std::chrono::milliseconds(ms);
    } else if (key == "retries") {
      if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() > kMaxRetries) {
        return Bad("retries must be an integer from 0 to 20");
      }
      opts->registry.retries = static_cast<int>(v.get<int64_t>());
    } else if (key == "ca_file") {
      if (!v.is_string()) return Bad("ca_file must be a path");
      opts->http.ca_file = v.get<std::string>();
    } else if (key == "credentials") {
      if (!v.is_string()) return Bad("credentials must be a path");
      opts->registry.credentials_file = v.get<std::string>();
    } else {
      return Bad("unknown setting '" + key +
                 "' (known: mirrors, plain_http, https, timeout_ms, connect_timeout_ms, retries, "
                 "ca_file, credentials)");
    }
  }
  for (const std::string& r : opts->registry.https) {
    for (const std::string& p : opts->registry.plain_http) {
      if (Lower(r) == Lower(p)) return Bad(r + " is listed in both plain_http and https");
    }
  }
  return Status::OK();
}

namespace {
// "16G", "512M", "1048576": powers of 1024.
Result<uint64_t> ParseBytes(const std::string& text, const char* what) {
  auto bad = [&] {
    return Status::InvalidArgument(std::string(what) + "=" + text +
                                   ": expected a size such as 512M or 16G");
  };
  if (text.empty() || text.size() > 24) return bad();
  size_t i = 0;
  uint64_t v = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    if (v > (UINT64_MAX - 9) / 10) return bad();
    v = v * 10 + static_cast<uint64_t>(text[i++] - '0');
  }
  if (i == 0) return bad();
  int shift = 0;
  if (i < text.size()) {
    switch (text[i++] | 0x20) {
      case 'k': shift = 10; break;
      case 'm': shift = 20; break;
      case 'g': shift = 30; break;
      case 't': shift = 40; break;
      default: return bad();
    }
    if (i < text.size() && (text[i] | 0x20) == 'i') ++i;
    if (i < text.size() && (text[i] | 0x20) == 'b') ++i;
  }
  if (i != text.size() || (shift && v > (UINT64_MAX >> shift))) return bad();
  return v << shift;
}
}  // namespace

Result<std::shared_ptr<RemoteBlobs>> MakeRemoteFromOptions(Env* env, const RemoteSettings& s) {
  RemoteOptions opts;
  opts.cache.dir = s.cache_dir;
  if (!s.cache_size.empty()) {
    OVBD_ASSIGN_OR_RETURN(opts.cache.max_bytes, ParseBytes(s.cache_size, "cache_size"));
  }
  if (!s.registry_config.empty()) {
    auto text = env->ReadSmallFile(s.registry_config, 1 << 20);
    if (!text.ok()) {
      return Status::InvalidArgument("registry_config=" + s.registry_config + ": " +
                                     text.status().ToString());
    }
    Status p = ParseRegistryConfig(text.value(), &opts);
    if (!p.ok()) return Status::InvalidArgument(s.registry_config + ": " + p.message());
  }
  bool default_credentials = false;
  if (!s.credentials.empty()) {
    opts.registry.credentials_file = s.credentials;
  } else if (opts.registry.credentials_file.empty()) {
    opts.registry.credentials_file = DefaultCredentialsFile();
    default_credentials = true;
  }
  auto r = RemoteBlobs::Make(env, opts);
  if (!r.ok() && default_credentials) {
    // A default docker config that cannot be used (unreadable, or written
    // for a credential helper) must not stop a store from mounting: remote
    // reads then go anonymous, as they would without the file.
    opts.registry.credentials_file.clear();
    r = RemoteBlobs::Make(env, std::move(opts));
  }
  if (!r.ok()) return r.status().Annotate("remote layers");
  return r;
}

}  // namespace ovbd::remote
