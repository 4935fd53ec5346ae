#include "scripted_http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>

namespace ovbd::test {

namespace {

constexpr size_t kMaxRequestBytes = 4 << 20;

std::string Lower(std::string_view s) {
  std::string r(s);
  for (auto& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

const char* Reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 401: return "Unauthorized";
    case 404: return "Not Found";
    case 416: return "Range Not Satisfiable";
    default: return "Status";
  }
}

}  // namespace

std::optional<std::string> SeenRequest::Header(std::string_view name) const {
  const std::string want = Lower(name) + ":";
  size_t pos = head.find("\r\n");
  while (pos != std::string::npos && pos + 2 < head.size()) {
    const size_t start = pos + 2, end = head.find("\r\n", start);
    const std::string line = head.substr(start, end - start);
    if (Lower(line.substr(0, want.size())) == want) {
      std::string v = line.substr(want.size());
      v.erase(0, v.find_first_not_of(" \t"));
      v.erase(v.find_last_not_of(" \t") + 1);
      return v;
    }
    pos = end;
  }
  return std::nullopt;
}

long ScriptedConn::Recv(char* p, size_t n) {
  if (closed_ || stopping_->load()) return 0;
  if (ssl_ != nullptr) {
    const int r = SSL_read(ssl_, p, static_cast<int>(std::min<size_t>(n, 1 << 20)));
    return r > 0 ? r : 0;
  }
  const ssize_t r = ::recv(fd_, p, n, 0);
  return r > 0 ? r : 0;
}

std::optional<SeenRequest> ScriptedConn::ReadRequest() {
  char buf[16384];
  size_t end;
  while ((end = in_.find("\r\n\r\n")) == std::string::npos) {
    if (in_.size() > kMaxRequestBytes) return std::nullopt;
    const long n = Recv(buf, sizeof buf);
    if (n <= 0) return std::nullopt;
    in_.append(buf, static_cast<size_t>(n));
  }
  SeenRequest r;
  r.head = in_.substr(0, end + 2);
  in_.erase(0, end + 4);
  const std::string line = r.head.substr(0, r.head.find("\r\n"));
  const size_t sp1 = line.find(' '), sp2 = line.find(' ', sp1 + 1);
  if (sp1 == std::string::npos || sp2 == std::string::npos) return std::nullopt;
  r.method = line.substr(0, sp1);
  r.target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  size_t len = 0;
  if (auto cl = r.Header("Content-Length")) len = std::strtoull(cl->c_str(), nullptr, 10);
  if (len > kMaxRequestBytes) return std::nullopt;
  while (in_.size() < len) {
    const long n = Recv(buf, sizeof buf);
    if (n <= 0) return std::nullopt;
    in_.append(buf, static_cast<size_t>(n));
  }
  r.body = in_.substr(0, len);
  in_.erase(0, len);
  return r;
}

bool ScriptedConn::Write(std::string_view bytes) {
  while (!bytes.empty()) {
    if (closed_ || stopping_->load()) return false;
    long n;
    if (ssl_ != nullptr) {
      n = SSL_write(ssl_, bytes.data(), static_cast<int>(std::min<size_t>(bytes.size(), 1 << 20)));
    } else {
      n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
    }
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

void ScriptedConn::WaitClosed() {
  char buf[4096];
  while (Recv(buf, sizeof buf) > 0) {
  }
}

void ScriptedConn::Close() {
  if (closed_) return;
  if (ssl_ != nullptr) SSL_shutdown(ssl_);
  ::shutdown(fd_, SHUT_WR);
  closed_ = true;
}

ScriptedHttpServer::ScriptedHttpServer(Script script, SSL_CTX* tls) : script_(std::move(script)), tls_(tls) {
  ::signal(SIGPIPE, SIG_IGN);  // SSL_write on a socket the client closed
  if (tls_ != nullptr) SSL_CTX_up_ref(tls_);
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t alen = sizeof a;
  if (listen_fd_ < 0 || ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
      ::listen(listen_fd_, 64) != 0 ||
      ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &alen) != 0) {
    std::abort();  // a test machine without loopback: nothing to test
  }
  port_ = ntohs(a.sin_port);
  acceptor_ = std::thread([this] { AcceptLoop(); });
}

ScriptedHttpServer::~ScriptedHttpServer() {
  Stop();
  if (tls_ != nullptr) SSL_CTX_free(tls_);
}

void ScriptedHttpServer::AcceptLoop() {
  for (;;) {
    const int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (stopping_.load()) return;
      continue;
    }
    const int index = accepted_.fetch_add(1);
    std::lock_guard<std::mutex> lk(mu_);
    if (stopping_.load()) {
      ::close(fd);
      return;
    }
    fds_.push_back(fd);
    threads_.emplace_back([this, fd, index] {
      SSL* ssl = nullptr;
      bool ok = true;
      if (tls_ != nullptr) {
        ssl = SSL_new(tls_);
        SSL_set_fd(ssl, fd);
        ok = SSL_accept(ssl) == 1;
      }
      if (ok) {
        ScriptedConn c(fd, ssl, index, &stopping_);
        script_(c);
        c.Close();
        // Read what the client still sends so the close is a FIN, not a
        // reset that could destroy the response before it is read.
        char buf[4096];
        pollfd p{fd, POLLIN, 0};
        while (!stopping_.load() && ::poll(&p, 1, 1000) > 0 && ::recv(fd, buf, sizeof buf, 0) > 0) {
        }
      }
      if (ssl != nullptr) SSL_free(ssl);
      std::lock_guard<std::mutex> lk2(mu_);
      fds_.erase(std::find(fds_.begin(), fds_.end(), fd));
      ::close(fd);
    });
  }
}

void ScriptedHttpServer::Stop() {
  if (stopping_.exchange(true)) return;
  ::shutdown(listen_fd_, SHUT_RDWR);
  acceptor_.join();
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    threads.swap(threads_);
  }
  for (auto& t : threads) t.join();
  ::close(listen_fd_);
}

std::string ScriptedHttpServer::Url(std::string_view target) const {
  return std::string(tls_ != nullptr ? "https" : "http") + "://127.0.0.1:" + std::to_string(port_) +
         std::string(target);
}

std::string HttpReply(int status, std::string_view body, std::string_view extra) {
  return "HTTP/1.1 " + std::to_string(status) + " " + Reason(status) +
         "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + std::string(extra) + "\r\n" +
         std::string(body);
}

TestCert MakeSelfSignedCert(const std::string& ip) {
  TestCert out;
  EVP_PKEY* key = EVP_EC_gen("P-256");
  X509* x = X509_new();
  X509_set_version(x, 2);
  ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
  X509_gmtime_adj(X509_getm_notBefore(x), -3600);
  X509_gmtime_adj(X509_getm_notAfter(x), 24 * 3600);
  X509_set_pubkey(x, key);
  X509_NAME* name = X509_get_subject_name(x);
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(ip.c_str()), -1,
                             -1, 0);
  X509_set_issuer_name(x, name);
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, x, x, nullptr, nullptr, 0);
  const std::string san = "IP:" + ip;
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, NID_subject_alt_name, san.c_str());
  X509_add_ext(x, ext, -1);
  X509_EXTENSION_free(ext);
  X509_sign(x, key, EVP_sha256());
  BIO* b = BIO_new(BIO_s_mem());
  PEM_write_bio_X509(b, x);
  char* p = nullptr;
  long n = BIO_get_mem_data(b, &p);
  out.cert_pem.assign(p, static_cast<size_t>(n));
  BIO_free(b);
  b = BIO_new(BIO_s_mem());
  PEM_write_bio_PrivateKey(b, key, nullptr, nullptr, 0, nullptr, nullptr);
  n = BIO_get_mem_data(b, &p);
  out.key_pem.assign(p, static_cast<size_t>(n));
  BIO_free(b);
  X509_free(x);
  EVP_PKEY_free(key);
  return out;
}

SSL_CTX* MakeServerTlsContext(const TestCert& cert) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  BIO* b = BIO_new_mem_buf(cert.cert_pem.data(), static_cast<int>(cert.cert_pem.size()));
  X509* x = PEM_read_bio_X509(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  b = BIO_new_mem_buf(cert.key_pem.data(), static_cast<int>(cert.key_pem.size()));
  EVP_PKEY* key = PEM_read_bio_PrivateKey(b, nullptr, nullptr, nullptr);
  BIO_free(b);
  SSL_CTX_use_certificate(ctx, x);
  SSL_CTX_use_PrivateKey(ctx, key);
  X509_free(x);
  EVP_PKEY_free(key);
  return ctx;
}

LoopbackTls::LoopbackTls(std::string ca_file) : ca_file_(std::move(ca_file)) {
  const TestCert cert = MakeSelfSignedCert("127.0.0.1");
  std::ofstream(ca_file_) << cert.cert_pem;
  ctx_ = MakeServerTlsContext(cert);
}

LoopbackTls::~LoopbackTls() { SSL_CTX_free(ctx_); }

}  // namespace ovbd::test
