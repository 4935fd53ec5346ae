// The parsers of auth.h. Each bounds its input before looking at it, and none
// echoes what it was given: a docker config holds passwords, a token reply a
// bearer token, and even a challenge is a server's text we need not repeat.
#include "ovbd/remote/auth.h"

#include <cctype>
#include <limits>

#include <nlohmann/json.hpp>

#include "base64.h"
#include "ovbd/io/http_client.h"

namespace ovbd::remote {

using nlohmann::json;

namespace {

constexpr size_t kMaxChallengeBytes = 8 << 10;
constexpr size_t kMaxChallengeParams = 32;
constexpr size_t kMaxDockerConfigBytes = 1 << 20;
constexpr size_t kMaxTokenReplyBytes = 1 << 20;
constexpr size_t kMaxTokenBytes = 64 << 10;
// Longer lifetimes are cut to this (a day): a token outliving it is
// refetched, which costs one request.
constexpr int64_t kMaxExpiresIn = 86400;

// tchar of RFC 7230 section 3.2.6.
bool IsTchar(char c) {
  if (std::isalnum(static_cast<unsigned char>(c))) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+':
    case '-': case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

// token68 of RFC 7235 section 2.1, without its trailing '='s.
bool IsToken68Char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.' || c == '_' ||
         c == '~' || c == '+' || c == '/';
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// A cursor over the header with the grammar's small pieces.
class ChallengeParser {
 public:
  explicit ChallengeParser(std::string_view s) : s_(s) {}

  bool AtEnd() const { return i_ >= s_.size(); }
  char Peek() const { return s_[i_]; }
  size_t pos() const { return i_; }
  void Seek(size_t i) { i_ = i; }
  void SkipWs() {
    while (!AtEnd() && (Peek() == ' ' || Peek() == '\t')) ++i_;
  }
  // OWS and the empty list elements "#rule" allows: ", ,".
  void SkipWsAndCommas() {
    while (!AtEnd() && (Peek() == ' ' || Peek() == '\t' || Peek() == ',')) ++i_;
  }
  std::string_view Token() {
    size_t b = i_;
    while (!AtEnd() && IsTchar(Peek())) ++i_;
    return s_.substr(b, i_ - b);
  }
  // At the end of a token68 (with its '='s), is that the whole element?
  bool Token68Here() {
    size_t save = i_;
    size_t b = i_;
    while (!AtEnd() && IsToken68Char(Peek())) ++i_;
    bool ok = i_ > b;
    while (!AtEnd() && Peek() == '=') ++i_;
    SkipWs();
    ok = ok && (AtEnd() || Peek() == ',');
    if (!ok) i_ = save;
    return ok;
  }
  // A quoted-string with its quoted-pairs resolved; false if malformed.
  bool QuotedString(std::string* out) {
    if (AtEnd() || Peek() != '"') return false;
    ++i_;
    while (!AtEnd()) {
      const auto c = static_cast<unsigned char>(s_[i_++]);
      if (c == '"') return true;
      if (c == '\\') {
        if (AtEnd()) return false;
        const auto e = static_cast<unsigned char>(s_[i_++]);
        if (e != '\t' && (e < 0x20 || e == 0x7f)) return false;
        out->push_back(static_cast<char>(e));
        continue;
      }
      // qdtext: HTAB, SP, visible ASCII but '"' and '\', and obs-text.
      if (c != '\t' && (c < 0x20 || c == 0x7f)) return false;
      out->push_back(static_cast<char>(c));
    }
    return false;  // unterminated
  }

 private:
  std::string_view s_;
  size_t i_ = 0;
};

Status BadChallenge(const std::string& why, size_t pos) {
  return Status::InvalidArgument("malformed WWW-Authenticate header (at byte " +
                                 std::to_string(pos) + "): " + why);
}

// Credentials from one "auths" entry. Messages name the registry only.
Status DecodeAuthEntry(const std::string& reg, const json& e, Credentials* c) {
  if (!e.is_object()) return Status::InvalidArgument("credentials for " + reg + ": not an object");
  auto str = [&](const char* key, std::string* out) -> Status {
    auto it = e.find(key);
    if (it == e.end() || it->is_null()) return Status::OK();
    if (!it->is_string()) {
      return Status::InvalidArgument("credentials for " + reg + ": '" + key + "' is not a string");
    }
    *out = it->get<std::string>();
    return Status::OK();
  };
  std::string auth;
  OVBD_RETURN_IF_ERROR(str("auth", &auth));
  OVBD_RETURN_IF_ERROR(str("username", &c->username));
  OVBD_RETURN_IF_ERROR(str("password", &c->password));
  OVBD_RETURN_IF_ERROR(str("identitytoken", &c->identity_token));
  if (!auth.empty()) {
    std::optional<std::string> plain = Base64Decode(auth);
    if (!plain) {
      return Status::InvalidArgument("credentials for " + reg + ": 'auth' is not valid base64");
    }
    size_t colon = plain->find(':');
    if (colon == std::string::npos) {
      return Status::InvalidArgument("credentials for " + reg +
                                     ": 'auth' does not decode to user:password");
    }
    c->username = plain->substr(0, colon);
    c->password = plain->substr(colon + 1);
  }
  // They end up in a header: refuse what would break it (or split it).
  for (const std::string* v : {&c->username, &c->password, &c->identity_token}) {
    for (char ch : *v) {
      if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) {
        return Status::InvalidArgument("credentials for " + reg + ": control characters");
      }
    }
  }
  if (c->username.find(':') != std::string::npos) {
    return Status::InvalidArgument("credentials for " + reg + ": the user name contains ':'");
  }
  return Status::OK();
}

// "https://host:5000/v1/" -> "host:5000"; "Host" -> "host". Empty if the
// key is no registry address.
std::string RegistryKey(std::string_view key) {
  if (size_t sep = key.find("://"); sep != std::string_view::npos) key.remove_prefix(sep + 3);
  key = key.substr(0, key.find('/'));
  if (key.empty()) return "";
  auto u = Url::Parse("https://" + std::string(key) + "/");
  if (!u.ok()) return "";
  // As given (the port kept even if it is 443: that is how the user names
  // the registry in its addresses), with the host lowercased.
  std::string host_port = Lower(key);
  return host_port;
}

}  // namespace

Result<AuthChallenge> ParseWwwAuthenticate(std::string_view header) {
  if (header.size() > kMaxChallengeBytes) {
    return Status::TooLarge("WWW-Authenticate header longer than 8 KiB");
  }
  ChallengeParser p(header);
  p.SkipWsAndCommas();
  AuthChallenge ch;
  std::string_view scheme = p.Token();
  if (scheme.empty()) return BadChallenge("no authentication scheme", p.pos());
  ch.scheme = Lower(scheme);
  if (p.AtEnd()) return ch;
  if (p.Peek() != ' ' && p.Peek() != '\t' && p.Peek() != ',') {
    return BadChallenge("bad character in the scheme", p.pos());
  }
  p.SkipWs();
  if (p.AtEnd()) return ch;
  if (p.Peek() == ',') return ch;  // another challenge follows this bare scheme
  // Basic may carry a token68 (old servers send one); it means nothing to a
  // client and is passed over. Other schemes we speak take parameters.
  if (ch.scheme == "basic" && p.Token68Here()) return ch;
  for (;;) {
    const size_t at = p.pos();
    std::string name = Lower(p.Token());
    if (name.empty()) return BadChallenge("expected a parameter name", at);
    p.SkipWs();
    if (p.AtEnd() || p.Peek() != '=') return BadChallenge("expected '=' after a parameter name", p.pos());
    p.Seek(p.pos() + 1);
    p.SkipWs();
    std::string value;
    if (!p.AtEnd() && p.Peek() == '"') {
      if (!p.QuotedString(&value)) return BadChallenge("bad quoted string", at);
    } else {
      value = std::string(p.Token());
      if (value.empty()) return BadChallenge("expected a token or a quoted string", p.pos());
    }
    if (ch.params.count(name)) return BadChallenge("parameter '" + name + "' given twice", at);
    if (ch.params.size() >= kMaxChallengeParams) return BadChallenge("too many parameters", at);
    ch.params.emplace(std::move(name), std::move(value));
    p.SkipWs();
    if (p.AtEnd()) return ch;
    if (p.Peek() != ',') return BadChallenge("expected ',' between parameters", p.pos());
    p.SkipWsAndCommas();
    if (p.AtEnd()) return ch;
    // A token not followed by '=' starts the next challenge: ours is done.
    const size_t next = p.pos();
    std::string_view t = p.Token();
    p.SkipWs();
    const bool is_param = !t.empty() && !p.AtEnd() && p.Peek() == '=';
    p.Seek(next);
    if (!is_param) {
      if (t.empty()) return BadChallenge("expected a parameter or a challenge", next);
      return ch;
    }
  }
}

Result<std::map<std::string, Credentials>> ParseDockerConfig(std::string_view text) {
  if (text.size() > kMaxDockerConfigBytes) {
    return Status::TooLarge("docker config larger than 1 MiB");
  }
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status::InvalidArgument("docker config is not valid JSON");
  if (!j.is_object()) return Status::InvalidArgument("docker config is not a JSON object");
  std::map<std::string, Credentials> out;
  auto auths = j.find("auths");
  if (auths == j.end() || auths->is_null()) return out;
  if (!auths->is_object()) return Status::InvalidArgument("docker config: 'auths' is not an object");
  for (const auto& [key, entry] : auths->items()) {
    std::string reg = RegistryKey(key);
    if (reg.empty()) {
      return Status::InvalidArgument("docker config: 'auths' key is not a registry address");
    }
    Credentials c;
    OVBD_RETURN_IF_ERROR(DecodeAuthEntry(reg, entry, &c));
    // Entries without credentials (a credential helper holds them) say
    // nothing; of two spellings of one registry the first with some wins.
    if (c.empty()) continue;
    out.emplace(reg, std::move(c));
  }
  return out;
}

Result<TokenReply> ParseTokenReply(std::string_view text) {
  if (text.size() > kMaxTokenReplyBytes) return Status::TooLarge("token reply larger than 1 MiB");
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::InvalidArgument("token reply is not a JSON object");
  }
  TokenReply r;
  for (const char* key : {"token", "access_token"}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_string()) {
      return Status::InvalidArgument(std::string("token reply: '") + key + "' is not a string");
    }
    r.token = it->get<std::string>();
    if (!r.token.empty()) break;
  }
  if (r.token.empty()) return Status::InvalidArgument("token reply has no token");
  if (r.token.size() > kMaxTokenBytes) return Status::TooLarge("token reply: token longer than 64 KiB");
  // It is sent back as "Authorization: Bearer TOKEN": visible ASCII only.
  for (char c : r.token) {
    if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
      return Status::InvalidArgument("token reply: the token has characters a header cannot carry");
    }
  }
  auto exp = j.find("expires_in");
  if (exp != j.end() && !exp->is_null()) {
    if (exp->is_number_unsigned()) {
      const uint64_t v = exp->get<uint64_t>();
      r.expires_in = v > static_cast<uint64_t>(kMaxExpiresIn) ? kMaxExpiresIn : static_cast<int64_t>(v);
    } else if (exp->is_number_integer()) {
      r.expires_in = exp->get<int64_t>();
    } else {
      return Status::InvalidArgument("token reply: 'expires_in' is not an integer");
    }
    // Zero or less is no lifetime given: the protocol's default.
    if (r.expires_in <= 0) r.expires_in = 60;
  }
  return r;
}

}  // namespace ovbd::remote
