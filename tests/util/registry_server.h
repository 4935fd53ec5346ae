// Real servers for tests of the registry client and of push/pull: Debian's
// docker-registry (distribution 2.8) on 127.0.0.1 with a temp config and
// storage, a token server for its Bearer auth (token_server.py), and an
// nginx TLS front with a certificate made for the test. Each lives in a
// temp directory of its own and is stopped when its object dies.
//
// A missing program makes Start() fail with kNotSupported naming it and
// the package to install; tests turn that into a skip:
//   auto reg = RegistryServer::Start({});
//   if (!reg.ok()) OVBD_SKIP_OR_FAIL(reg.status());
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "ovbd/io/status.h"
#include "subprocess.h"
#include "test_util.h"

// GTEST_SKIP for a server that cannot run here (a program missing), a
// failure for anything else.
#define OVBD_SKIP_OR_FAIL(status)                                   \
  do {                                                              \
    const ::ovbd::Status& _s = (status);                            \
    if (_s.code() == ::ovbd::Status::Code::kNotSupported) {         \
      GTEST_SKIP() << _s.message();                                 \
    }                                                               \
    FAIL() << _s.ToString();                                        \
  } while (0)

namespace ovbd::test {

// A registry token server (tests/util/token_server.py): checks Basic
// credentials (or an OAuth2 refresh token), issues JWTs the registry
// trusts, and counts them.
class TokenServer {
 public:
  struct Options {
    std::string user = "token-user";
    std::string password = "token-Pa55-word";
    std::string refresh_token;  // accepted in a form POST if set
    int expires_in = 300;       // seconds, in the reply and the JWT's exp
    std::string service = "ovbd-test-registry";
    std::string issuer = "ovbd-test-issuer";
  };
  static Result<std::unique_ptr<TokenServer>> Start(Options opts);
  static Result<std::unique_ptr<TokenServer>> Start() { return Start(Options()); }
  ~TokenServer();

  // What the registry's config names: its realm URL, and the certificate
  // its tokens chain to.
  std::string realm() const { return "http://127.0.0.1:" + std::to_string(port_) + "/token"; }
  const std::string& cert_path() const { return cert_; }
  const Options& options() const { return opts_; }
  // Tokens issued since it first started (restarts included).
  int TokensIssued() const;
  // Starts it again on the same port with a new signing key (and
  // certificate): tokens issued before are no longer trusted by a registry
  // (re)started after this.
  Status RestartWithNewKey();
  std::string log() const { return TailOfFile(dir_.Sub("token_server.log")); }

 private:
  explicit TokenServer(Options opts) : opts_(std::move(opts)) {}
  Status Launch(uint16_t port);

  Options opts_;
  TempDir dir_;
  std::string cert_;
  uint16_t port_ = 0;
  std::unique_ptr<Subprocess> proc_;
};

class RegistryServer {
 public:
  enum class Auth { kNone, kBasic, kToken };
  struct Options {
    Auth auth = Auth::kNone;
    std::string user = "reg-user";           // kBasic
    std::string password = "reg-Pa55-word";  // kBasic
    const TokenServer* token_server = nullptr;  // kToken
  };
  static Result<std::unique_ptr<RegistryServer>> Start(Options opts);
  static Result<std::unique_ptr<RegistryServer>> Start() { return Start(Options()); }
  ~RegistryServer();

  uint16_t port() const { return port_; }
  // "127.0.0.1:PORT", as a registry:// address names it.
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  // Stops it (its storage stays) / starts it again on the same port.
  void Stop();
  Status Restart();
  std::string log() const { return TailOfFile(dir_.Sub("registry.log")); }

 private:
  explicit RegistryServer(Options opts) : opts_(std::move(opts)) {}
  Status Launch();

  Options opts_;
  TempDir dir_;
  uint16_t port_ = 0;
  std::unique_ptr<Subprocess> proc_;
};

// nginx terminating TLS on 127.0.0.1 in front of a plain HTTP server on
// 127.0.0.1:backend_port, with a self-signed certificate for 127.0.0.1 and
// localhost made by the test (ca_file() is what a client must trust).
class TlsFront {
 public:
  static Result<std::unique_ptr<TlsFront>> Start(uint16_t backend_port);
  ~TlsFront();

  uint16_t port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::string ca_file() const { return dir_.Sub("cert.pem"); }
  std::string log() const { return TailOfFile(dir_.Sub("nginx.log")); }

 private:
  TlsFront() = default;
  TempDir dir_;
  uint16_t port_ = 0;
  std::unique_ptr<Subprocess> proc_;
};

// Where the programs are, or kNotSupported naming the package.
Status HaveProgram(const std::string& path, const std::string& package);

}  // namespace ovbd::test
