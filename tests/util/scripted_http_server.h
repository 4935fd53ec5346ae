// A test HTTP server whose every byte the test scripts: it listens on
// 127.0.0.1 (ephemeral port), accepts on a thread of its own, and runs the
// script on a thread per connection. The script reads requests and writes
// whatever bytes the test wants back (well-formed or not), stalls, trickles
// or closes, so the client's handling of hostile servers can be asserted.
// With a TLS context every connection first completes a TLS handshake.
#pragma once

#include <openssl/ssl.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace ovbd::test {

struct SeenRequest {
  std::string method, target;
  std::string head;  // request line and headers, as received
  std::string body;  // Content-Length bytes of it
  // The first header of that name (case-insensitive).
  std::optional<std::string> Header(std::string_view name) const;
};

class ScriptedConn {
 public:
  ScriptedConn(int fd, SSL* ssl, int index, const std::atomic<bool>* stopping)
      : fd_(fd), ssl_(ssl), index_(index), stopping_(stopping) {}
  // The next request; nullopt when the client closed (or the server stops).
  std::optional<SeenRequest> ReadRequest();
  // All of `bytes`; false once the client is gone.
  bool Write(std::string_view bytes);
  // Reads and drops until the client closes or the server stops: a server
  // that accepts and never answers.
  void WaitClosed();
  // Closes the connection now (a FIN, not a reset: pending input is read first).
  void Close();
  // 0 for the first connection the server accepted, 1 for the next...
  int index() const { return index_; }

 private:
  long Recv(char* p, size_t n);
  int fd_;
  SSL* ssl_;
  int index_;
  const std::atomic<bool>* stopping_;
  std::string in_;
  bool closed_ = false;
};

class ScriptedHttpServer {
 public:
  using Script = std::function<void(ScriptedConn&)>;
  // `tls`: a server context (certificate and key) or nullptr for plain HTTP;
  // the server takes a reference of its own.
  explicit ScriptedHttpServer(Script script, SSL_CTX* tls = nullptr);
  ~ScriptedHttpServer();
  ScriptedHttpServer(const ScriptedHttpServer&) = delete;
  ScriptedHttpServer& operator=(const ScriptedHttpServer&) = delete;

  // Unblocks every script (reads see the end, writes fail) and joins them.
  void Stop();
  uint16_t port() const { return port_; }
  // "http://127.0.0.1:PORT" + target (https with a TLS context).
  std::string Url(std::string_view target = "/") const;
  // Connections accepted so far.
  int connections() const { return accepted_.load(); }

 private:
  void AcceptLoop();
  Script script_;
  SSL_CTX* tls_;
  int listen_fd_ = -1;
  uint16_t port_ = 0;
  std::atomic<int> accepted_{0};
  std::atomic<bool> stopping_{false};
  std::thread acceptor_;
  std::mutex mu_;
  std::vector<int> fds_;  // open connections, shut down by Stop
  std::vector<std::thread> threads_;
};

// "HTTP/1.1 STATUS Reason\r\nContent-Length: N\r\n" + extra + "\r\n" + body.
// `extra` is whole header lines ("Location: /x\r\n").
std::string HttpReply(int status, std::string_view body, std::string_view extra = "");

// A self-signed certificate (and its key) for `ip` (as CN and IP SAN).
struct TestCert {
  std::string cert_pem, key_pem;
};
TestCert MakeSelfSignedCert(const std::string& ip);
// A TLS server context serving `cert`; SSL_CTX_free it.
SSL_CTX* MakeServerTlsContext(const TestCert& cert);

// What a test's TLS server on 127.0.0.1 and its clients need: a self-signed
// certificate for 127.0.0.1, a server context serving it (freed with this),
// and the certificate written to `ca_file`, for the clients that trust it.
class LoopbackTls {
 public:
  explicit LoopbackTls(std::string ca_file);
  ~LoopbackTls();
  LoopbackTls(const LoopbackTls&) = delete;
  LoopbackTls& operator=(const LoopbackTls&) = delete;

  SSL_CTX* server_context() const { return ctx_; }
  const std::string& ca_file() const { return ca_file_; }

 private:
  std::string ca_file_;
  SSL_CTX* ctx_;
};

}  // namespace ovbd::test
