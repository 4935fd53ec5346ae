// Parsers for what a registry's authentication hands a client. Hostile
// input: each bounds its input and refuses what it does not understand.
#pragma once

#include <map>
#include <string>
#include <string_view>

#include "ovbd/io/status.h"

namespace ovbd::remote {

// One challenge of a WWW-Authenticate header (RFC 7235): a scheme and its
// parameters (names lowercased; values unquoted, with \-escapes resolved).
//   Bearer realm="https://auth.example/token",service="registry",scope="repository:a/b:pull"
struct AuthChallenge {
  std::string scheme;  // lowercased: "basic", "bearer"
  std::map<std::string, std::string> params;
};
// The first challenge of the header (registries send one). At most 8 KiB.
Result<AuthChallenge> ParseWwwAuthenticate(std::string_view header);

struct Credentials {
  std::string username;
  std::string password;
  std::string identity_token;  // an OAuth2 refresh token, if the file has one
  bool empty() const { return username.empty() && identity_token.empty(); }
};
// The entries of a docker config.json "auths" object, keyed by registry
// HOST[:PORT] (keys given as URLs, "https://host/v1/", are reduced to that).
Result<std::map<std::string, Credentials>> ParseDockerConfig(std::string_view json);

// A token server's JSON answer: "token" or "access_token", "expires_in".
struct TokenReply {
  std::string token;
  int64_t expires_in = 60;  // seconds
};
Result<TokenReply> ParseTokenReply(std::string_view json);

}  // namespace ovbd::remote
