// The loopback HTTP server over real sockets: responses, keep-alive, the
// limits on what a client may send, clients that are slow or silent, the
// connection limit, address checks, and Stop() with clients connected.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>

#include "ovbd/io/http_server.h"

namespace ovbd {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

HttpResponse Route(const HttpRequest& r) {
  if (r.method == "GET" && r.path() == "/metrics") return {200, "text/plain; version=0.0.4", "m 1\n"};
  return {404, "text/plain", "not found\n"};
}

// A client socket connected to 127.0.0.1:port; closed at scope exit.
class Client {
 public:
  explicit Client(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~Client() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool connected() const { return connected_; }

  bool Send(const std::string& s) {
    size_t done = 0;
    while (done < s.size()) {
      const ssize_t n = ::send(fd_, s.data() + done, s.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }

  // Reads until one whole response (headers and Content-Length bytes) is
  // in, the peer closes, or `timeout` passes. Returns what was read.
  std::string ReadResponse(milliseconds timeout = milliseconds(5000)) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      const size_t end = buf_.find("\r\n\r\n");
      if (end != std::string::npos) {
        size_t len = 0;
        const size_t cl = Lower(buf_.substr(0, end)).find("content-length:");
        if (cl != std::string::npos) len = std::stoul(buf_.substr(cl + 15));
        if (buf_.size() >= end + 4 + len) {
          std::string r = buf_.substr(0, end + 4 + len);
          buf_.erase(0, end + 4 + len);
          return r;
        }
      }
      if (!Fill(deadline)) {
        std::string r = std::move(buf_);
        buf_.clear();
        return r;
      }
    }
  }

  // Whether the peer closes (EOF or reset) before `timeout`; what it sent
  // meanwhile is kept.
  bool ClosedWithin(milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (Fill(deadline)) {
    }
    return eof_;
  }

 private:
  static std::string Lower(std::string s) {
    for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }
  // One read; false at EOF, error or deadline.
  bool Fill(Clock::time_point deadline) {
    if (eof_) return false;
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left)) <= 0) return false;
    char tmp[8192];
    const ssize_t n = ::recv(fd_, tmp, sizeof tmp, 0);
    if (n <= 0) {
      eof_ = true;
      return false;
    }
    buf_.append(tmp, static_cast<size_t>(n));
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  bool eof_ = false;
  std::string buf_;
};

int StatusOf(const std::string& response) {
  if (response.compare(0, 9, "HTTP/1.1 ") != 0) return -1;
  return std::atoi(response.c_str() + 9);
}
std::string BodyOf(const std::string& response) {
  const size_t end = response.find("\r\n\r\n");
  return end == std::string::npos ? "" : response.substr(end + 4);
}

std::unique_ptr<HttpServer> Serve(HttpServerOptions opts = {}, HttpHandler h = Route) {
  auto s = HttpServer::Listen("127.0.0.1:0", opts);
  EXPECT_TRUE(s.ok()) << s.status().ToString();
  if (!s.ok()) return nullptr;
  s.value()->Start(std::move(h));
  return std::move(s).value();
}

constexpr char kGet[] = "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";

TEST(HttpServerTest, ServesTheHandlersResponsesAndKeepsTheConnection) {
  auto srv = Serve();
  ASSERT_TRUE(srv);
  EXPECT_NE(srv->port(), 0);
  EXPECT_EQ(srv->address(), "127.0.0.1:" + std::to_string(srv->port()));
  Client c(srv->port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.Send(kGet));
  std::string r = c.ReadResponse();
  EXPECT_EQ(StatusOf(r), 200) << r;
  EXPECT_NE(r.find("Content-Type: text/plain; version=0.0.4\r\n"), std::string::npos) << r;
  EXPECT_EQ(BodyOf(r), "m 1\n");
  // The same connection, then a query string, then another path.
  ASSERT_TRUE(c.Send("GET /metrics?x=1 HTTP/1.1\r\nHost: x\r\n\r\n"));
  r = c.ReadResponse();
  EXPECT_EQ(StatusOf(r), 200) << r;
  ASSERT_TRUE(c.Send("GET /other HTTP/1.1\r\nHost: x\r\n\r\n"));
  r = c.ReadResponse();
  EXPECT_EQ(StatusOf(r), 404) << r;
  EXPECT_EQ(BodyOf(r), "not found\n");
  ASSERT_TRUE(c.Send("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab"));
  EXPECT_EQ(StatusOf(c.ReadResponse()), 404);
  // Connection: close is honoured.
  ASSERT_TRUE(c.Send("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
  EXPECT_EQ(StatusOf(c.ReadResponse()), 200);
  EXPECT_TRUE(c.ClosedWithin(milliseconds(5000)));
}

TEST(HttpServerTest, HandlerExceptionsBecome500) {
  auto srv = Serve({}, [](const HttpRequest&) -> HttpResponse { throw std::runtime_error("boom"); });
  ASSERT_TRUE(srv);
  Client c(srv->port());
  ASSERT_TRUE(c.Send(kGet));
  const std::string r = c.ReadResponse();
  EXPECT_EQ(StatusOf(r), 500) << r;
  EXPECT_NE(BodyOf(r).find("boom"), std::string::npos);
}

TEST(HttpServerTest, RefusesOversizeRequests) {
  HttpServerOptions o;
  o.max_request_bytes = 4096;
  auto srv = Serve(o);
  ASSERT_TRUE(srv);
  {
    // Headers past the limit.
    Client c(srv->port());
    ASSERT_TRUE(c.Send("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: " + std::string(64 << 10, 'a') +
                       "\r\n\r\n"));
    const std::string r = c.ReadResponse();
    EXPECT_EQ(StatusOf(r), 431) << r.substr(0, 200);
    EXPECT_TRUE(c.ClosedWithin(milliseconds(5000)));
  }
  {
    // A body past the limit.
    Client c(srv->port());
    ASSERT_TRUE(c.Send("POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" +
                       std::string(8192, 'b')));
    const std::string r = c.ReadResponse();
    EXPECT_EQ(StatusOf(r), 413) << r.substr(0, 200);
    EXPECT_TRUE(c.ClosedWithin(milliseconds(5000)));
  }
  {
    // Not HTTP at all.
    Client c(srv->port());
    ASSERT_TRUE(c.Send("HELLO THERE\r\n\r\n"));
    EXPECT_EQ(StatusOf(c.ReadResponse()), 400);
  }
  // The server still serves.
  Client c(srv->port());
  ASSERT_TRUE(c.Send(kGet));
  EXPECT_EQ(StatusOf(c.ReadResponse()), 200);
}

TEST(HttpServerTest, ASlowClientDoesNotHoldUpAnother) {
  HttpServerOptions o;
  o.request_timeout = milliseconds(60000);  // the slow one is not timed out during the test
  auto srv = Serve(o);
  ASSERT_TRUE(srv);
  Client slow(srv->port());
  ASSERT_TRUE(slow.Send("GET /metr"));  // and nothing more
  Client silent(srv->port());            // connects, sends nothing
  ASSERT_TRUE(slow.connected() && silent.connected());
  const auto t0 = Clock::now();
  Client fast(srv->port());
  ASSERT_TRUE(fast.Send(kGet));
  const std::string r = fast.ReadResponse(milliseconds(5000));
  EXPECT_EQ(StatusOf(r), 200) << r;
  EXPECT_LT(Clock::now() - t0, milliseconds(5000));
  // The slow one can still finish its request.
  ASSERT_TRUE(slow.Send("ics HTTP/1.1\r\nHost: x\r\n\r\n"));
  EXPECT_EQ(StatusOf(slow.ReadResponse()), 200);
}

TEST(HttpServerTest, AClientTooSlowToSendItsRequestIsDisconnected) {
  HttpServerOptions o;
  o.request_timeout = milliseconds(300);
  auto srv = Serve(o);
  ASSERT_TRUE(srv);
  Client c(srv->port());
  const auto t0 = Clock::now();
  ASSERT_TRUE(c.Send("GET /metrics HTTP/1.1\r\n"));  // headers never end
  EXPECT_TRUE(c.ClosedWithin(milliseconds(10000)));
  EXPECT_GE(Clock::now() - t0, milliseconds(250));
  // An idle keep-alive connection ends the same way.
  Client k(srv->port());
  ASSERT_TRUE(k.Send(kGet));
  EXPECT_EQ(StatusOf(k.ReadResponse()), 200);
  EXPECT_TRUE(k.ClosedWithin(milliseconds(10000)));
}

TEST(HttpServerTest, ConnectionsPastTheLimitAreClosed) {
  HttpServerOptions o;
  o.max_connections = 2;
  auto srv = Serve(o);
  ASSERT_TRUE(srv);
  auto a = std::make_unique<Client>(srv->port());
  Client b(srv->port());
  // Both are being served (a request on each proves it was accepted).
  ASSERT_TRUE(a->Send(kGet));
  ASSERT_TRUE(b.Send(kGet));
  ASSERT_EQ(StatusOf(a->ReadResponse()), 200);
  ASSERT_EQ(StatusOf(b.ReadResponse()), 200);
  Client c(srv->port());
  EXPECT_TRUE(c.ClosedWithin(milliseconds(5000)));
  // Once one goes away, a new one is served again (polled: the server sees
  // the close asynchronously).
  a.reset();
  const auto deadline = Clock::now() + milliseconds(5000);
  bool served = false;
  while (!served && Clock::now() < deadline) {
    Client d(srv->port());
    served = d.Send(kGet) && StatusOf(d.ReadResponse(milliseconds(1000))) == 200;
  }
  EXPECT_TRUE(served);
}

TEST(HttpServerTest, StopReturnsPromptlyWithClientsConnected) {
  std::atomic<int> calls{0};
  HttpServerOptions o;
  o.request_timeout = milliseconds(60000);
  o.response_timeout = milliseconds(60000);
  auto srv = Serve(o, [&](const HttpRequest& r) {
    ++calls;
    return Route(r);
  });
  ASSERT_TRUE(srv);
  Client idle(srv->port());
  Client partial(srv->port());
  ASSERT_TRUE(partial.Send("GET /metrics HTTP/1.1\r\nHo"));
  Client served(srv->port());
  ASSERT_TRUE(served.Send(kGet));
  ASSERT_EQ(StatusOf(served.ReadResponse()), 200);
  const auto t0 = Clock::now();
  srv->Stop();
  EXPECT_LT(Clock::now() - t0, milliseconds(2000));
  EXPECT_TRUE(idle.ClosedWithin(milliseconds(2000)));
  EXPECT_TRUE(partial.ClosedWithin(milliseconds(2000)));
  EXPECT_TRUE(served.ClosedWithin(milliseconds(2000)));
  srv->Stop();  // idempotent
  EXPECT_EQ(calls.load(), 1);
  // Nobody listens any more.
  Client late(srv->port());
  EXPECT_FALSE(late.connected() && late.Send(kGet) && StatusOf(late.ReadResponse(milliseconds(500))) == 200);
}

TEST(HttpServerTest, ListensOnlyOnLoopbackAddresses) {
  for (const char* bad : {"0.0.0.0:9184", "10.1.2.3:80", "192.168.0.1:0", "[::]:0", "[2001:db8::1]:0",
                          "[::ffff:10.0.0.1]:0"}) {
    auto s = HttpServer::Listen(bad);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().code(), Status::Code::kInvalidArgument) << bad;
    EXPECT_NE(s.status().message().find("not a loopback address"), std::string::npos)
        << s.status().ToString();
  }
  for (const char* bad : {"127.0.0.1", ":9184", "127.0.0.1:", "127.0.0.1:99999", "127.0.0.1:12a",
                          "example.com:80", "::1:80", "127.0.0.1:-1"}) {
    auto s = HttpServer::Listen(bad);
    ASSERT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().code(), Status::Code::kInvalidArgument) << bad << ": " << s.status().ToString();
  }
  for (const char* good : {"127.0.0.1:0", "localhost:0", "127.5.6.7:0"}) {
    auto s = HttpServer::Listen(good);
    EXPECT_TRUE(s.ok()) << good << ": " << s.status().ToString();
  }
  // IPv6 loopback, where the machine has it.
  auto v6 = HttpServer::Listen("[::1]:0");
  if (v6.ok()) {
    EXPECT_EQ(v6.value()->address(), "[::1]:" + std::to_string(v6.value()->port()));
  } else {
    EXPECT_EQ(v6.status().code(), Status::Code::kIOError) << v6.status().ToString();
  }
}

TEST(HttpServerTest, APortInUseIsReported) {
  auto a = HttpServer::Listen("127.0.0.1:0");
  ASSERT_TRUE(a.ok());
  auto b = HttpServer::Listen("127.0.0.1:" + std::to_string(a.value()->port()));
  ASSERT_FALSE(b.ok());
  EXPECT_NE(b.status().message().find("in use"), std::string::npos) << b.status().ToString();
  // A server stopped before it started gives the port back.
  const uint16_t port = a.value()->port();
  a.value()->Stop();
  auto c = HttpServer::Listen("127.0.0.1:" + std::to_string(port));
  EXPECT_TRUE(c.ok()) << c.status().ToString();
}

}  // namespace
}  // namespace ovbd
