#include "ovbd/io/http_server.h"

#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <mutex>
#include <optional>
#include <thread>

namespace ovbd {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

// How long a connection that is being closed after an error response may
// go on sending before it is cut off (its unread bytes would otherwise make
// the close a reset, which can destroy the response before it is read).
constexpr std::chrono::milliseconds kLinger{1000};
constexpr size_t kLingerBytes = 64 << 10;

bool IsLoopback(const net::ip::address& a) {
  if (a.is_v4()) return a.to_v4().is_loopback();
  const net::ip::address_v6 v6 = a.to_v6();
  if (v6.is_v4_mapped()) return net::ip::make_address_v4(net::ip::v4_mapped, v6).is_loopback();
  return v6.is_loopback();
}

Result<tcp::endpoint> ParseAddress(const std::string& text) {
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("listen address '" + text + "': " + why +
                                   " (give HOST:PORT, e.g. 127.0.0.1:9184 or [::1]:9184)");
  };
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0) return bad("no port");
  std::string host = text.substr(0, colon);
  const std::string port_text = text.substr(colon + 1);
  if (port_text.empty() || port_text.size() > 5) return bad("bad port");
  unsigned port = 0;
  for (char c : port_text) {
    if (!std::isdigit(static_cast<unsigned char>(c))) return bad("bad port");
    port = port * 10 + static_cast<unsigned>(c - '0');
  }
  if (port > 65535) return bad("port out of range");
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string::npos) {
    return bad("an IPv6 address goes in brackets");
  }
  if (host == "localhost") host = "127.0.0.1";
  beast::error_code ec;
  const net::ip::address addr = net::ip::make_address(host, ec);
  if (ec) return bad("'" + host + "' is not an IP address");
  if (!IsLoopback(addr)) {
    return Status::InvalidArgument(
        "listen address '" + text + "': " + host +
        " is not a loopback address; the endpoint has no authentication, so it listens only on "
        "127.0.0.0/8 or ::1 (put a proxy in front of it to reach it from elsewhere)");
  }
  return tcp::endpoint(addr, static_cast<uint16_t>(port));
}

std::string FormatEndpoint(const tcp::endpoint& ep) {
  const std::string host = ep.address().to_string();
  return (ep.address().is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(ep.port());
}

}  // namespace

struct HttpServer::Impl {
  HttpServerOptions opts;
  tcp::endpoint endpoint;
  int listen_fd = -1;  // until Start() hands it to the acceptor
  HttpHandler handler;

  std::unique_ptr<net::io_context> io;
  std::unique_ptr<tcp::acceptor> acceptor;
  std::unique_ptr<net::steady_timer> retry;  // after a failed accept (EMFILE...)
  std::thread thread;
  size_t connections = 0;  // touched on the server's thread only

  std::mutex stop_mu;
  bool stopped = false;

  void Accept();
};

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket socket, HttpServer::Impl* srv)
      : stream_(std::move(socket)), srv_(srv), buffer_(srv->opts.max_request_bytes + 1024) {
    ++srv_->connections;
  }
  ~Session() { --srv_->connections; }

  void Read() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(srv_->opts.max_request_bytes));
    parser_->body_limit(srv_->opts.max_request_bytes);
    stream_.expires_after(srv_->opts.request_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

 private:
  void OnRead(beast::error_code ec) {
    if (ec) {
      if (ec == http::error::header_limit || ec == http::error::buffer_overflow) {
        return Respond(431, "request header too large\n", false, 11, true);
      }
      if (ec == http::error::body_limit) return Respond(413, "request body too large\n", false, 11, true);
      if (ec == http::error::end_of_stream || ec == beast::error::timeout) return;  // just close
      if (ec.category() == http::make_error_code(http::error::bad_method).category()) {
        return Respond(400, "bad request\n", false, 11, true);
      }
      return;  // reset, aborted (Stop): close
    }
    const auto& req = parser_->get();
    HttpRequest r;
    r.method = std::string(req.method_string());
    r.target = std::string(req.target());
    HttpResponse res;
    try {
      res = srv_->handler(r);
    } catch (const std::exception& e) {
      res = HttpResponse{500, "text/plain; charset=utf-8", std::string("internal error: ") + e.what() + "\n"};
    }
    const bool head = req.method() == http::verb::head;
    Respond(res.status, std::move(res.body), req.keep_alive(), req.version(), false, res.content_type,
            head);
  }

  void Respond(int status, std::string body, bool keep_alive, unsigned version, bool error,
               const std::string& content_type = "text/plain; charset=utf-8", bool head = false) {
    auto res = std::make_shared<http::response<http::string_body>>(
        static_cast<http::status>(status), version);
    res->set(http::field::server, "ovbdfs");
    res->set(http::field::content_type, content_type);
    res->keep_alive(keep_alive);
    res->body() = std::move(body);
    res->prepare_payload();
    if (head) res->body().clear();  // Content-Length stays that of the body
    stream_.expires_after(srv_->opts.response_timeout);
    http::async_write(stream_, *res,
                      [self = shared_from_this(), res, keep_alive, error](beast::error_code ec, size_t) {
                        if (ec) return;
                        if (error) return self->Linger();
                        if (!keep_alive) return self->Shutdown();
                        self->Read();
                      });
  }

  void Shutdown() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  }

  // After an error response: stop sending, read (and drop) what the client
  // still sends for a short while, then close.
  void Linger() {
    Shutdown();
    stream_.expires_after(kLinger);
    Drain();
  }
  void Drain() {
    stream_.async_read_some(net::buffer(scratch_),
                            [self = shared_from_this()](beast::error_code ec, size_t n) {
                              self->drained_ += n;
                              if (ec || self->drained_ > kLingerBytes) return;
                              self->Drain();
                            });
  }

  beast::tcp_stream stream_;
  HttpServer::Impl* const srv_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::array<char, 4096> scratch_;
  size_t drained_ = 0;
};

}  // namespace

void HttpServer::Impl::Accept() {
  acceptor->async_accept([this](beast::error_code ec, tcp::socket socket) {
    if (ec == net::error::operation_aborted) return;
    if (ec) {
      // Out of descriptors, say: try again shortly instead of spinning.
      retry->expires_after(std::chrono::milliseconds(100));
      retry->async_wait([this](beast::error_code wec) {
        if (!wec) Accept();
      });
      return;
    }
    if (connections >= opts.max_connections) {
      beast::error_code cec;
      socket.close(cec);
    } else {
      std::make_shared<Session>(std::move(socket), this)->Read();
    }
    Accept();
  });
}

HttpServer::HttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

HttpServer::~HttpServer() { Stop(); }

Result<std::unique_ptr<HttpServer>> HttpServer::Listen(const std::string& address,
                                                       HttpServerOptions opts) {
  OVBD_ASSIGN_OR_RETURN(tcp::endpoint ep, ParseAddress(address));
  // Bound with a context of its own, then released: the serving context is
  // made in Start(), after any fork.
  net::io_context tmp;
  tcp::acceptor a(tmp);
  beast::error_code ec;
  auto failed = [&](const char* what) {
    return Status::IOError(std::string(what) + " " + FormatEndpoint(ep) + ": " + ec.message(),
                           ec.value());
  };
  if (a.open(ep.protocol(), ec)) return failed("socket for");
  if (a.set_option(tcp::acceptor::reuse_address(true), ec)) return failed("SO_REUSEADDR on");
  if (a.bind(ep, ec)) {
    if (ec == net::error::address_in_use) {
      return Status::IOError("cannot listen on " + FormatEndpoint(ep) +
                                 ": the port is in use (another ovbdfs? pick another port)",
                             ec.value());
    }
    return failed("bind");
  }
  if (a.listen(net::socket_base::max_listen_connections, ec)) return failed("listen on");
  const tcp::endpoint bound = a.local_endpoint(ec);
  if (ec) return failed("local address of");
  const int fd = a.release(ec);
  if (ec) return failed("release of");
  (void)::fcntl(fd, F_SETFD, FD_CLOEXEC);  // not for fusermount3 or other children

  auto impl = std::make_unique<Impl>();
  impl->opts = opts;
  impl->endpoint = bound;
  impl->listen_fd = fd;
  return std::unique_ptr<HttpServer>(new HttpServer(std::move(impl)));
}

void HttpServer::Start(HttpHandler handler) {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lk(m.stop_mu);
  if (m.stopped || m.io || m.listen_fd < 0) return;
  m.handler = std::move(handler);
  m.io = std::make_unique<net::io_context>(1);
  m.acceptor = std::make_unique<tcp::acceptor>(*m.io);
  m.retry = std::make_unique<net::steady_timer>(*m.io);
  beast::error_code ec;
  m.acceptor->assign(m.endpoint.protocol(), m.listen_fd, ec);
  if (ec) {
    ::close(m.listen_fd);
  }
  m.listen_fd = -1;
  if (ec) return;
  m.Accept();
  m.thread = std::thread([io = m.io.get()] {
    for (;;) {
      try {
        io->run();
        return;
      } catch (...) {
        // A handler threw past its own catch: keep serving the others.
      }
    }
  });
}

void HttpServer::Stop() {
  Impl& m = *impl_;
  std::lock_guard<std::mutex> lk(m.stop_mu);
  if (m.stopped) return;
  m.stopped = true;
  if (m.io) {
    // run() returns as soon as the handler in progress (if any) does; the
    // pending operations, and the connections they hold, are destroyed
    // with the context.
    m.io->stop();
    if (m.thread.joinable()) m.thread.join();
    m.retry.reset();
    m.acceptor.reset();
    m.io.reset();
  }
  if (m.listen_fd >= 0) {
    ::close(m.listen_fd);
    m.listen_fd = -1;
  }
}

uint16_t HttpServer::port() const { return impl_->endpoint.port(); }

std::string HttpServer::address() const { return FormatEndpoint(impl_->endpoint); }

}  // namespace ovbd
