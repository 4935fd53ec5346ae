#include "http_connection.h"

#include <netdb.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>

#include <boost/asio/connect.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <thread>

#include "http_parse.h"
#include "ovbd/io/mutex.h"

namespace ovbd::http_internal {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;

namespace {

struct Lookup {
  Mutex mu;
  CondVar cv{&mu};
  bool done GUARDED_BY(mu) = false;
  int gai_error GUARDED_BY(mu) = 0;
  std::vector<tcp::endpoint> eps GUARDED_BY(mu);
};

}  // namespace

Result<std::vector<tcp::endpoint>> ResolveHost(const Url& url, Clock::time_point deadline,
                                              const std::string& where) {
  beast::error_code ec;
  const net::ip::address literal = net::ip::make_address(url.host, ec);
  if (!ec) return std::vector<tcp::endpoint>{tcp::endpoint(literal, url.port)};
  // getaddrinfo cannot be cancelled or bounded, so it runs on a thread of its
  // own; a late answer is dropped by whoever holds the state last.
  auto st = std::make_shared<Lookup>();
  try {
    std::thread([st, host = url.host, port = std::to_string(url.port)] {
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      hints.ai_flags = AI_ADDRCONFIG | AI_NUMERICSERV;
      addrinfo* res = nullptr;
      const int rc = ::getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
      std::vector<tcp::endpoint> eps;
      for (addrinfo* a = res; rc == 0 && a != nullptr; a = a->ai_next) {
        tcp::endpoint ep;
        if (a->ai_addrlen <= ep.capacity()) {
          std::memcpy(ep.data(), a->ai_addr, a->ai_addrlen);
          ep.resize(a->ai_addrlen);
          eps.push_back(ep);
        }
      }
      if (res != nullptr) ::freeaddrinfo(res);
      MutexLock l(&st->mu);
      st->done = true;
      st->gai_error = rc;
      st->eps = std::move(eps);
      st->cv.SignalAll();
    }).detach();
  } catch (const std::exception&) {
    return Status::IOError(where + ": cannot start the name lookup", EAGAIN);
  }
  MutexLock l(&st->mu);
  const auto left = deadline - Clock::now();
  if (!st->cv.WaitFor(left, [&] {
        st->mu.AssertHeld();
        return st->done;
      })) {
    return Status::IOError(where + ": timed out looking up " + url.host, ETIMEDOUT);
  }
  if (st->gai_error != 0) {
    return Status::IOError(where + ": cannot resolve " + url.host + ": " + gai_strerror(st->gai_error),
                           st->gai_error == EAI_NONAME ? EHOSTUNREACH : EIO);
  }
  if (st->eps.empty()) return Status::IOError(where + ": no address for " + url.host, EHOSTUNREACH);
  return std::move(st->eps);
}

HttpConnection::HttpConnection(ssl::context* tls) : tls_ctx_(tls) {
  // Beast reads from the socket as much as the buffer has room for (at
  // least 512 bytes, at most 64 KiB per read). The body's bytes leave the
  // buffer as they are parsed, so a buffer left to grow by itself stays at
  // its first size, and a 1 MiB block came in 2048 reads of 512 bytes (and
  // as many waits on the socket): most of a cold read's time.
  buf_.reserve(kReadChunk);
}

HttpConnection::~HttpConnection() {
  // Closed without a TLS close_notify: waiting for the peer's would be one
  // more thing a server could stall.
  beast::error_code ec;
  sock_.close(ec);
}

bool HttpConnection::RunUntil(Clock::time_point until, const bool& done) {
  io_.restart();
  while (!done && Clock::now() < until) {
    if (io_.run_one_until(until) == 0 && io_.stopped()) break;
  }
  if (done) return true;
  beast::error_code ec;
  sock_.close(ec);
  io_.restart();
  io_.run();  // the pending handlers, now aborted, touch locals of the caller: run them out
  reusable_ = false;
  return false;
}

Status HttpConnection::Connect(const Url& url, const std::vector<tcp::endpoint>& eps,
                               Clock::time_point deadline, const std::string& where) {
  bool done = false;
  beast::error_code ec;
  net::async_connect(sock_, eps, [&](beast::error_code e, const tcp::endpoint&) {
    ec = e;
    done = true;
  });
  if (!RunUntil(deadline, done)) return Status::IOError(where + ": connect timed out", ETIMEDOUT);
  if (ec) return Status::IOError(where + ": connect: " + ec.message(), ec.value());
  sock_.set_option(tcp::no_delay(true), ec);
  if (tls_ctx_ == nullptr) return Status::OK();

  tls_.emplace(sock_, *tls_ctx_);
  SSL* ssl = tls_->native_handle();
  X509_VERIFY_PARAM* param = SSL_get0_param(ssl);
  beast::error_code aec;
  net::ip::make_address(url.host, aec);
  if (!aec) {
    // An IP address: matched against the certificate's IP entries; no SNI
    // (it carries names only).
    if (X509_VERIFY_PARAM_set1_ip_asc(param, url.host.c_str()) != 1) {
      return Status::IOError(where + ": TLS: cannot set the address to verify", EPROTO);
    }
  } else {
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if (X509_VERIFY_PARAM_set1_host(param, url.host.c_str(), url.host.size()) != 1 ||
        SSL_set_tlsext_host_name(ssl, url.host.c_str()) != 1) {
      return Status::IOError(where + ": TLS: cannot set the host name to verify", EPROTO);
    }
  }
  done = false;
  tls_->async_handshake(ssl::stream_base::client, [&](beast::error_code e) {
    ec = e;
    done = true;
  });
  if (!RunUntil(deadline, done)) return Status::IOError(where + ": TLS handshake timed out", ETIMEDOUT);
  if (ec) {
    Status s = ExchangeError(where, ec, HttpClientOptions{});
    if (s.os_errno() == EACCES) {
      const long v = SSL_get_verify_result(ssl);
      return Status::IOError(where + ": TLS: server certificate not trusted (" +
                                 X509_verify_cert_error_string(v) + ")",
                             EACCES);
    }
    return s;
  }
  return Status::OK();
}

Result<ClientResponse> HttpConnection::Exchange(Request& req, bool head, const HttpClientOptions& opts,
                                                Clock::time_point deadline, const std::string& where,
                                                bool* got_bytes) {
  reusable_ = false;
  *got_bytes = false;
  buf_.consume(buf_.size());
  std::optional<ResponseParser> parser;
  int interim = 0;
  bool done = false;
  beast::error_code ec;
  auto finish = [&](beast::error_code e) {
    ec = e;
    done = true;
  };
  auto run = [&](auto& stream) {
    std::function<void()> read_next = [&] {
      parser.emplace();
      ConfigureParser(*parser, opts, head);
      http::async_read(stream, buf_, *parser, [&](beast::error_code e, size_t) {
        if (!e && IsInterim(*parser)) {
          *got_bytes = true;
          if (++interim > kMaxInterimResponses) return finish(http::error::bad_status);
          return read_next();
        }
        finish(e);
      });
    };
    http::async_write(stream, req, [&](beast::error_code e, size_t) {
      if (e) return finish(e);
      read_next();
    });
    return RunUntil(deadline, done);
  };
  const bool in_time = tls_ ? run(*tls_) : run(sock_);
  if (parser && (parser->got_some() || buf_.size() > 0)) *got_bytes = true;
  if (!in_time) return Status::IOError(where + ": timed out", ETIMEDOUT);
  if (ec) return ExchangeError(where, ec, opts);
  OVBD_ASSIGN_OR_RETURN(ClientResponse r, TakeResponse(*parser, where));
  reusable_ = parser->keep_alive() && !parser->need_eof() && buf_.size() == 0 &&
              (!tls_ || SSL_pending(tls_->native_handle()) == 0);
  return r;
}

bool HttpConnection::StillIdle() {
  if (!sock_.is_open()) return false;
  pollfd p{sock_.native_handle(), POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;
}

}  // namespace ovbd::http_internal
