// RegistryAuth: the Authorization header of every request a RegistryClient
// sends, and the 401 exchanges that earn it (the flow is described in
// ovbd/remote/registry_client.h). What it learns of a host (Basic, or
// Bearer with its realm and service) is kept, so later requests carry
// their credentials or token from the start instead of being refused first.
// Thread-safe.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "ovbd/io/http_client.h"
#include "ovbd/io/mutex.h"
#include "ovbd/io/status.h"
#include "ovbd/remote/auth.h"
#include "token_cache.h"

namespace ovbd::remote {

class RegistryAuth {
 public:
  // `creds` keyed by lowercase HOST[:PORT], as ParseDockerConfig gives them.
  RegistryAuth(std::shared_ptr<HttpClient> http, std::map<std::string, Credentials> creds);

  // Sends `req` to `host` (the lowercase HOST[:PORT] whose credentials and
  // tokens apply: a registry's name, or a mirror's authority) for `scope`
  // ("repository:REPO:pull"; "" for none). Answers other than 401 are
  // returned as they are. A 401 that credentials or a token cannot lift is
  // an EACCES error saying why (the caller adds what was asked). Any
  // Authorization header of `req` is replaced.
  Result<ClientResponse> Do(const std::string& host, const std::string& scope, ClientRequest req);

 private:
  enum class Scheme { kUnknown, kBasic, kBearer };
  struct HostState {
    Scheme scheme = Scheme::kUnknown;
    std::string realm, service;  // kBearer
  };

  const Credentials* CredentialsFor(const std::string& host) const;
  HostState StateOf(const std::string& host);
  void Remember(const std::string& host, HostState st);
  Result<TokenReply> FetchToken(const std::string& host, const HostState& st,
                                const std::string& scope);

  const std::shared_ptr<HttpClient> http_;
  const std::map<std::string, Credentials> creds_;
  TokenCache tokens_;
  Mutex mu_;
  std::map<std::string, HostState> hosts_ GUARDED_BY(mu_);
};

}  // namespace ovbd::remote
