#include "registry_auth.h"

#include <cctype>

#include "base64.h"
#include "query.h"

namespace ovbd::remote {

namespace {

// The most exchanges one request may take: anonymous, then with Basic or a
// fresh token, or with a cached token, then a fresh one.
constexpr int kMaxAttempts = 4;

bool SameName(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

void SetAuthorization(ClientRequest* req, std::string value) {
  auto& h = req->headers;
  for (auto it = h.begin(); it != h.end();) {
    it = SameName(it->first, "Authorization") ? h.erase(it) : it + 1;
  }
  if (!value.empty()) h.emplace_back("Authorization", std::move(value));
}

std::string BasicValue(const Credentials& c) {
  return "Basic " + Base64Encode(c.username + ":" + c.password);
}

// A server's word in a message: bounded, control bytes masked.
std::string Shown(std::string_view s) {
  std::string out(s.substr(0, 120));
  for (auto& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
  }
  return out;
}

Status Denied(const std::string& why) { return Status::IOError(why, EACCES); }

}  // namespace

RegistryAuth::RegistryAuth(std::shared_ptr<HttpClient> http, std::map<std::string, Credentials> creds)
    : http_(std::move(http)), creds_(std::move(creds)) {}

const Credentials* RegistryAuth::CredentialsFor(const std::string& host) const {
  auto it = creds_.find(host);
  if (it != creds_.end()) return &it->second;
  // Docker Hub's credentials are filed under its old index name.
  if (host == "docker.io" || host == "registry-1.docker.io") {
    it = creds_.find("index.docker.io");
    if (it != creds_.end()) return &it->second;
  }
  return nullptr;
}

RegistryAuth::HostState RegistryAuth::StateOf(const std::string& host) {
  MutexLock l(&mu_);
  auto it = hosts_.find(host);
  return it == hosts_.end() ? HostState{} : it->second;
}

void RegistryAuth::Remember(const std::string& host, HostState st) {
  MutexLock l(&mu_);
  hosts_[host] = std::move(st);
}

Result<TokenReply> RegistryAuth::FetchToken(const std::string& host, const HostState& st,
                                            const std::string& scope) {
  const std::string what = "token server of " + host;
  auto realm = Url::Parse(st.realm);
  if (!realm.ok()) return Denied(what + ": the realm is not a valid URL: " + realm.status().message());
  const Credentials* creds = CredentialsFor(host);
  ClientRequest r;
  r.url = *realm;
  if (creds != nullptr && !creds->identity_token.empty()) {
    // An identity token is an OAuth2 refresh token: traded in a form POST.
    r.method = "POST";
    r.headers.emplace_back("Content-Type", "application/x-www-form-urlencoded");
    r.body = "grant_type=refresh_token&client_id=ovbdfs&refresh_token=" +
             PercentEncode(creds->identity_token);
    if (!st.service.empty()) r.body += "&service=" + PercentEncode(st.service);
    if (!scope.empty()) r.body += "&scope=" + PercentEncode(scope);
  } else {
    if (!st.service.empty()) AppendQuery(&r.url, "service", st.service);
    if (!scope.empty()) AppendQuery(&r.url, "scope", scope);
    if (creds != nullptr) SetAuthorization(&r, BasicValue(*creds));
  }
  auto resp = http_->Do(r);
  if (!resp.ok()) return resp.status().Annotate(what);
  if (resp->status == 401 || resp->status == 403) {
    return Denied(what + ": " + (creds != nullptr
                            ? "the credentials for " + host + " were refused"
                            : "it wants credentials, and the credentials file has none for " + host));
  }
  if (resp->status != 200) {
    return Status::IOError(what + ": the server answered " + std::to_string(resp->status), EIO);
  }
  auto reply = ParseTokenReply(resp->body);
  if (!reply.ok()) return Status::IOError(what + ": " + reply.status().message(), EPROTO);
  return reply;
}

Result<ClientResponse> RegistryAuth::Do(const std::string& host, const std::string& scope,
                                        ClientRequest req) {
  const std::string key = host + " " + scope;
  bool dropped_cached = false;
  for (int attempt = 0; attempt < kMaxAttempts; ++attempt) {
    const HostState st = StateOf(host);
    const Credentials* creds = CredentialsFor(host);
    std::string token;
    bool fresh = false;
    bool sent_basic = false;
    if (st.scheme == Scheme::kBearer) {
      OVBD_ASSIGN_OR_RETURN(token, tokens_.Get(key, [&] { return FetchToken(host, st, scope); },
                                               &fresh));
      SetAuthorization(&req, "Bearer " + token);
    } else if (st.scheme == Scheme::kBasic && creds != nullptr) {
      SetAuthorization(&req, BasicValue(*creds));
      sent_basic = true;
    } else {
      SetAuthorization(&req, "");
    }
    OVBD_ASSIGN_OR_RETURN(ClientResponse resp, http_->Do(req));
    if (resp.status != 401) return resp;

    const std::string* header = resp.Header("WWW-Authenticate");
    if (header == nullptr) return Denied("refused (401) without saying how to authenticate");
    auto ch = ParseWwwAuthenticate(*header);
    if (!ch.ok()) return Denied("refused (401): " + ch.status().message());
    if (ch->scheme == "basic") {
      if (creds == nullptr) {
        return Denied(host + " wants credentials, and the credentials file has none for it");
      }
      if (sent_basic) return Denied("the credentials for " + host + " were refused");
      Remember(host, HostState{Scheme::kBasic, "", ""});
      continue;
    }
    if (ch->scheme == "bearer") {
      auto realm = ch->params.find("realm");
      if (realm == ch->params.end() || realm->second.empty()) {
        return Denied("refused (401) with a Bearer challenge that names no realm");
      }
      if (!token.empty()) {
        // A token just issued and refused is the token server's last word;
        // a cached one may have been revoked or outlived: one more fetch.
        if (fresh || dropped_cached) {
          std::string why = "refused the token issued for " + (scope.empty() ? host : scope);
          if (auto e = ch->params.find("error"); e != ch->params.end()) why += " (" + Shown(e->second) + ")";
          return Denied(why);
        }
        tokens_.Drop(key, token);
        dropped_cached = true;
      }
      auto service = ch->params.find("service");
      Remember(host, HostState{Scheme::kBearer, realm->second,
                               service == ch->params.end() ? "" : service->second});
      continue;
    }
    return Denied(host + " asks for " + Shown(ch->scheme) +
                            " authentication, which is not supported (Basic and Bearer are)");
  }
  return Denied("still refused (401) after authenticating");
}

}  // namespace ovbd::remote
