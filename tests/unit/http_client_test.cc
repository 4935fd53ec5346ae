// HttpClient against scripted servers: the exchanges users rely on (bodies,
// keep-alive, redirects, ranges, TLS) and what hostile or broken servers
// must get (bounded time, bounded memory, a clear error, no leaked secrets).
#include "ovbd/io/http_client.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <thread>

#include "scripted_http_server.h"
#include "test_util.h"

namespace ovbd {
namespace {

using test::HttpReply;
using test::ScriptedConn;
using test::ScriptedHttpServer;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

ClientRequest Get(const std::string& url) {
  ClientRequest r;
  auto u = Url::Parse(url);
  EXPECT_TRUE(u.ok()) << u.status().ToString();
  if (u.ok()) r.url = *u;
  return r;
}

HttpClientOptions Fast() {
  HttpClientOptions o;
  o.connect_timeout = milliseconds(300);
  o.request_timeout = milliseconds(300);
  return o;
}

// A keep-alive server answering each request with `reply(request)`.
ScriptedHttpServer::Script Serve(std::function<std::string(const test::SeenRequest&)> reply) {
  return [reply](ScriptedConn& c) {
    while (auto r = c.ReadRequest()) {
      if (!c.Write(reply(*r))) return;
    }
  };
}

int Errno(const Result<ClientResponse>& r) { return r.ok() ? 0 : r.status().os_errno(); }

// GETs `url` with a Fast() client: it must fail with ETIMEDOUT at the
// client's 300 ms deadline (not much before it, nor long after).
void ExpectTimeoutAtTheDeadline(const std::string& url) {
  auto client = HttpClient::Make(Fast());
  const auto t0 = Clock::now();
  auto r = client->Do(Get(url));
  const auto took = Clock::now() - t0;
  EXPECT_EQ(Errno(r), ETIMEDOUT) << (r.ok() ? "ok" : r.status().ToString());
  EXPECT_GE(took, milliseconds(250));
  EXPECT_LT(took, milliseconds(1500));
}

// GETs `url` twice with `client`; both answers must carry `body`.
void ExpectGetTwice(HttpClient& client, const std::string& url, const std::string& body) {
  for (int i = 0; i < 2; ++i) {
    auto r = client.Do(Get(url));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->body, body);
  }
}

TEST(HttpClientTest, GetReturnsStatusHeadersAndBody) {
  std::mutex mu;
  test::SeenRequest seen;
  ScriptedHttpServer srv(Serve([&](const test::SeenRequest& r) {
    std::lock_guard<std::mutex> lk(mu);
    seen = r;
    return HttpReply(200, "hello", "X-Thing: 42\r\n");
  }));
  auto client = HttpClient::Make();
  auto req = Get(srv.Url("/v2/a?n=1"));
  req.headers.push_back({"Accept", "application/json"});
  auto r = client->Do(req);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "hello");
  ASSERT_NE(r->Header("x-THING"), nullptr);
  EXPECT_EQ(*r->Header("x-thing"), "42");
  EXPECT_EQ(r->Header("X-Missing"), nullptr);
  EXPECT_EQ(r->url.target, "/v2/a?n=1");
  std::lock_guard<std::mutex> lk(mu);
  EXPECT_EQ(seen.method, "GET");
  EXPECT_EQ(seen.target, "/v2/a?n=1");
  EXPECT_EQ(seen.Header("Host"), "127.0.0.1:" + std::to_string(srv.port()));
  EXPECT_EQ(seen.Header("Accept"), "application/json");
  EXPECT_EQ(seen.Header("User-Agent"), "ovbdfs");
}

TEST(HttpClientTest, MethodsWithBodiesSendThem) {
  ScriptedHttpServer srv(Serve([](const test::SeenRequest& r) {
    return HttpReply(201, r.method + ":" + r.body + ":" + r.Header("Content-Length").value_or("none"));
  }));
  auto client = HttpClient::Make();
  for (const char* m : {"PUT", "POST", "PATCH"}) {
    auto req = Get(srv.Url("/up"));
    req.method = m;
    req.body = std::string("data-") + m;
    auto r = client->Do(req);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 201);
    EXPECT_EQ(r->body, std::string(m) + ":data-" + m + ":" + std::to_string(req.body.size()));
  }
  auto req = Get(srv.Url("/up"));
  req.method = "POST";  // an empty POST still says so
  auto r = client->Do(req);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->body, "POST::0");
  EXPECT_EQ(srv.connections(), 1);
}

TEST(HttpClientTest, LargeBodiesGoAndComeWhole) {
  ScriptedHttpServer srv(Serve([](const test::SeenRequest& r) {
    std::string back = r.body;
    std::reverse(back.begin(), back.end());
    return HttpReply(200, back);
  }));
  auto client = HttpClient::Make();
  auto req = Get(srv.Url("/blob"));
  req.method = "PUT";
  std::mt19937_64 rng(7);
  const std::vector<char> data = test::RandomBytes(rng, 3 << 20);
  req.body.assign(data.begin(), data.end());
  auto r = client->Do(req);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::string expect = req.body;
  std::reverse(expect.begin(), expect.end());
  EXPECT_TRUE(r->body == expect);
}

TEST(HttpClientTest, HeadHasNoBodyAndKeepsTheConnection) {
  ScriptedHttpServer srv(Serve([](const test::SeenRequest& r) {
    if (r.method == "HEAD") return std::string("HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n");
    return HttpReply(200, "after");
  }));
  auto client = HttpClient::Make();
  auto req = Get(srv.Url("/blob"));
  req.method = "HEAD";
  auto r = client->Do(req);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->body, "");
  EXPECT_EQ(*r->Header("Content-Length"), "12345");
  auto g = client->Do(Get(srv.Url("/blob")));
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(g->body, "after");
  EXPECT_EQ(srv.connections(), 1);
}

TEST(HttpClientTest, KeepAliveReusesOneConnection) {
  ScriptedHttpServer srv(Serve([](const test::SeenRequest& r) { return HttpReply(200, r.target); }));
  auto client = HttpClient::Make();
  for (int i = 0; i < 3; ++i) {
    auto r = client->Do(Get(srv.Url("/" + std::to_string(i))));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->body, "/" + std::to_string(i));
  }
  EXPECT_EQ(srv.connections(), 1);
}

TEST(HttpClientTest, ConnectionCloseIsNotReused) {
  ScriptedHttpServer srv([](ScriptedConn& c) {
    if (c.ReadRequest()) c.Write(HttpReply(200, "x", "Connection: close\r\n"));
  });
  auto client = HttpClient::Make();
  for (int i = 0; i < 2; ++i) ASSERT_TRUE(client->Do(Get(srv.Url("/"))).ok());
  EXPECT_EQ(srv.connections(), 2);
}

TEST(HttpClientTest, BodyUntilCloseWorksAndIsNotReused) {
  ScriptedHttpServer srv([](ScriptedConn& c) {
    if (c.ReadRequest()) c.Write("HTTP/1.1 200 OK\r\n\r\nuntil the end");
  });
  auto client = HttpClient::Make();
  ExpectGetTwice(*client, srv.Url("/"), "until the end");
  EXPECT_EQ(srv.connections(), 2);
}

TEST(HttpClientTest, ServerClosingAnIdleConnectionDoesNotFailTheNextRequest) {
  ScriptedHttpServer srv([](ScriptedConn& c) {
    if (c.ReadRequest()) c.Write(HttpReply(200, "once"));
    c.Close();
  });
  auto client = HttpClient::Make();
  for (int i = 0; i < 3; ++i) {
    auto r = client->Do(Get(srv.Url("/")));
    ASSERT_TRUE(r.ok()) << i << ": " << r.status().ToString();
    EXPECT_EQ(r->body, "once");
  }
}

// The pooled connection looks idle, but the server drops it when the next
// request arrives (its keep-alive timer fired): retried once on a new one
// when the request is safe to repeat, and not otherwise.
ScriptedHttpServer::Script DropsSecondRequest() {
  return [](ScriptedConn& c) {
    if (c.index() == 0) {
      if (c.ReadRequest()) c.Write(HttpReply(200, "first"));
      if (c.ReadRequest()) c.Close();
      return;
    }
    while (auto r = c.ReadRequest()) c.Write(HttpReply(200, "fresh"));
  };
}

TEST(HttpClientTest, StalePooledConnectionIsRetriedForIdempotentRequests) {
  ScriptedHttpServer srv(DropsSecondRequest());
  auto client = HttpClient::Make();
  ASSERT_TRUE(client->Do(Get(srv.Url("/"))).ok());
  auto r = client->Do(Get(srv.Url("/")));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->body, "fresh");
  EXPECT_EQ(srv.connections(), 2);
}

TEST(HttpClientTest, StalePooledConnectionIsNotRetriedForPost) {
  ScriptedHttpServer srv(DropsSecondRequest());
  auto client = HttpClient::Make();
  ASSERT_TRUE(client->Do(Get(srv.Url("/"))).ok());
  auto req = Get(srv.Url("/"));
  req.method = "POST";
  req.body = "once only";
  auto r = client->Do(req);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(srv.connections(), 1);
}

TEST(HttpClientTest, ConcurrentRequestsFromManyThreads) {
  ScriptedHttpServer srv(Serve([](const test::SeenRequest& r) { return HttpReply(200, "body" + r.target); }));
  HttpClientOptions o;
  o.connections_per_host = 2;
  auto client = HttpClient::Make(o);
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        const std::string target = "/" + std::to_string(t) + "/" + std::to_string(i);
        auto r = client->Do(Get(srv.Url(target)));
        if (r.ok() && r->status == 200 && r->body == "body" + target) ++good;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(good.load(), 200);
  EXPECT_LE(srv.connections(), 200);
}

TEST(HttpClientTest, FollowsRelativeAndAbsoluteRedirects) {
  int port = 0;
  ScriptedHttpServer srv(Serve([&](const test::SeenRequest& r) {
    if (r.target == "/dir/a") return HttpReply(302, "", "Location: b?x=1\r\n");
    if (r.target == "/dir/b?x=1") return HttpReply(301, "", "Location: /c\r\n");
    if (r.target == "/c") {
      return HttpReply(307, "", "Location: http://127.0.0.1:" + std::to_string(port) + "/d\r\n");
    }
    if (r.target == "/d") return HttpReply(200, "landed");
    return HttpReply(404, "");
  }));
  port = srv.port();
  auto client = HttpClient::Make();
  auto r = client->Do(Get(srv.Url("/dir/a")));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "landed");
  EXPECT_EQ(r->url.target, "/d");
  // A POST is answered with the redirect itself.
  auto post = Get(srv.Url("/dir/a"));
  post.method = "POST";
  auto p = client->Do(post);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p->status, 302);
}

TEST(HttpClientTest, RedirectToAnotherHostDropsAuthorization) {
  std::atomic<int> other_saw_auth{-1}, same_saw_auth{-1};
  ScriptedHttpServer other(Serve([&](const test::SeenRequest& r) {
    other_saw_auth = r.Header("Authorization").has_value() ? 1 : 0;
    return HttpReply(200, "storage");
  }));
  ScriptedHttpServer reg(Serve([&](const test::SeenRequest& r) {
    if (r.target == "/away") return HttpReply(307, "", "Location: " + other.Url("/blob") + "\r\n");
    if (r.target == "/here") return HttpReply(302, "", "Location: /final\r\n");
    same_saw_auth = r.Header("Authorization") == "Bearer tok" ? 1 : 0;
    return HttpReply(200, "same");
  }));
  auto client = HttpClient::Make();
  auto req = Get(reg.Url("/away"));
  req.headers.push_back({"Authorization", "Bearer tok"});
  auto r = client->Do(req);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->body, "storage");
  EXPECT_EQ(other_saw_auth.load(), 0);
  req.url = Url::Parse(reg.Url("/here")).value();
  r = client->Do(req);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->body, "same");
  EXPECT_EQ(same_saw_auth.load(), 1);
}

TEST(HttpClientTest, RedirectLoopsAndChainsTooLongFailWithELOOP) {
  ScriptedHttpServer srv(Serve([](const test::SeenRequest& r) {
    if (r.target == "/a") return HttpReply(302, "", "Location: /b\r\n");
    if (r.target == "/b") return HttpReply(302, "", "Location: /a\r\n");
    // /n/K -> /n/K+1, forever
    const int k = std::stoi(r.target.substr(3));
    return HttpReply(302, "", "Location: /n/" + std::to_string(k + 1) + "\r\n");
  }));
  HttpClientOptions o;
  o.max_redirects = 3;
  auto client = HttpClient::Make(o);
  auto loop = client->Do(Get(srv.Url("/a")));
  EXPECT_EQ(Errno(loop), ELOOP) << loop.status().ToString();
  auto chain = client->Do(Get(srv.Url("/n/0")));
  EXPECT_EQ(Errno(chain), ELOOP) << chain.status().ToString();
  // Exactly max_redirects hops are fine.
  ScriptedHttpServer ok(Serve([](const test::SeenRequest& r) {
    const int k = std::stoi(r.target.substr(1));
    return k == 3 ? HttpReply(200, "end") : HttpReply(302, "", "Location: /" + std::to_string(k + 1) + "\r\n");
  }));
  auto three = client->Do(Get(ok.Url("/0")));
  ASSERT_TRUE(three.ok()) << three.status().ToString();
  EXPECT_EQ(three->body, "end");
}

ClientRequest Ranged(const std::string& url, uint64_t b, uint64_t e) {
  auto r = Get(url);
  r.range_begin = b;
  r.range_end = e;
  return r;
}

TEST(HttpClientTest, RangeNeedsAnExact206) {
  ScriptedHttpServer srv(Serve([](const test::SeenRequest& r) {
    if (r.Header("Range") != "bytes=10-14") return HttpReply(400, "bad range header");
    if (r.target == "/ok") return HttpReply(206, "01234", "Content-Range: bytes 10-14/100\r\n");
    if (r.target == "/star") return HttpReply(206, "01234", "Content-Range: bytes 10-14/*\r\n");
    if (r.target == "/other") return HttpReply(206, "01234", "Content-Range: bytes 0-4/100\r\n");
    if (r.target == "/past") return HttpReply(206, "01234", "Content-Range: bytes 10-14/12\r\n");
    if (r.target == "/none") return HttpReply(206, "01234");
    if (r.target == "/long") return HttpReply(206, "012345", "Content-Range: bytes 10-14/100\r\n");
    if (r.target == "/whole") return HttpReply(200, std::string(100, 'x'));
    if (r.target == "/416") return HttpReply(416, "", "Content-Range: bytes */5\r\n");
    return HttpReply(404, "");
  }));
  auto client = HttpClient::Make();
  for (const char* ok : {"/ok", "/star"}) {
    auto r = client->Do(Ranged(srv.Url(ok), 10, 15));
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(r->status, 206);
    EXPECT_EQ(r->body, "01234");
  }
  for (const char* bad : {"/other", "/past", "/none", "/long", "/whole"}) {
    auto r = client->Do(Ranged(srv.Url(bad), 10, 15));
    EXPECT_EQ(Errno(r), EPROTO) << bad << ": " << (r.ok() ? "ok" : r.status().ToString());
  }
  auto r416 = client->Do(Ranged(srv.Url("/416"), 10, 15));
  ASSERT_TRUE(r416.ok()) << r416.status().ToString();
  EXPECT_EQ(r416->status, 416);
  auto nf = client->Do(Ranged(srv.Url("/missing"), 10, 15));
  ASSERT_TRUE(nf.ok());
  EXPECT_EQ(nf->status, 404);
}

TEST(HttpClientTest, ShortBodyIsAnError) {
  ScriptedHttpServer srv([](ScriptedConn& c) {
    if (c.ReadRequest()) c.Write("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
  });
  auto client = HttpClient::Make();
  auto r = client->Do(Get(srv.Url("/")));
  EXPECT_EQ(Errno(r), EPROTO) << (r.ok() ? r->body : r.status().ToString());
  auto ranged = client->Do(Ranged(srv.Url("/"), 0, 10));
  EXPECT_FALSE(ranged.ok());
}

TEST(HttpClientTest, BytesPastTheBodyAreNotTheNextResponse) {
  ScriptedHttpServer srv([](ScriptedConn& c) {
    if (c.index() == 0) {
      if (c.ReadRequest()) {
        c.Write(HttpReply(200, "hello") + HttpReply(200, "evil"));
      }
      while (auto r = c.ReadRequest()) c.Write(HttpReply(200, "reused"));
      return;
    }
    while (auto r = c.ReadRequest()) c.Write(HttpReply(200, "second"));
  });
  auto client = HttpClient::Make();
  auto a = client->Do(Get(srv.Url("/")));
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  EXPECT_EQ(a->body, "hello");
  auto b = client->Do(Get(srv.Url("/")));
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->body, "second");
}

TEST(HttpClientTest, InterimResponsesAreSkipped) {
  ScriptedHttpServer srv(Serve([](const test::SeenRequest&) {
    return "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + HttpReply(200, "real");
  }));
  auto client = HttpClient::Make();
  auto r = client->Do(Get(srv.Url("/")));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "real");
}

TEST(HttpClientTest, OversizedHeadersAndBodiesFailWithEMSGSIZE) {
  ScriptedHttpServer srv(Serve([](const test::SeenRequest& r) {
    if (r.target == "/header") return HttpReply(200, "", "X-Pad: " + std::string(8000, 'p') + "\r\n");
    if (r.target == "/many") {
      std::string h;
      for (int i = 0; i < 500; ++i) h += "X-" + std::to_string(i) + ": v\r\n";
      return HttpReply(200, "", h);
    }
    if (r.target == "/body") return HttpReply(200, std::string(5000, 'b'));
    // A huge claim, the first bytes of it, then nothing: refused on the
    // claim, not after waiting for (or allocating) what it says.
    if (r.target == "/claims") return std::string("HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\nabc");
    // chunked, 3 x 1000 bytes
    std::string c = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    for (int i = 0; i < 3; ++i) c += "3e8\r\n" + std::string(1000, 'c') + "\r\n";
    return c + "0\r\n\r\n";
  }));
  HttpClientOptions o = Fast();
  o.max_header_bytes = 2048;
  o.max_body_bytes = 2500;
  auto client = HttpClient::Make(o);
  for (const char* t : {"/header", "/many", "/body", "/claims", "/chunked"}) {
    auto r = client->Do(Get(srv.Url(t)));
    EXPECT_EQ(Errno(r), EMSGSIZE) << t << ": " << (r.ok() ? "ok" : r.status().ToString());
  }
  o.max_body_bytes = 3000;
  auto roomy = HttpClient::Make(o);
  auto r = roomy->Do(Get(srv.Url("/chunked")));
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->body, std::string(3000, 'c'));
}

TEST(HttpClientTest, MalformedResponsesFailWithEPROTO) {
  ScriptedHttpServer srv(Serve([](const test::SeenRequest& r) {
    const std::string chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    if (r.target == "/hex") return chunked + "zz\r\nabc\r\n0\r\n\r\n";
    if (r.target == "/overflow") return chunked + "10000000000000000\r\nabc\r\n0\r\n\r\n";
    if (r.target == "/status") return std::string("HTTP/1.1 2000 Huge\r\nContent-Length: 0\r\n\r\n");
    if (r.target == "/garbage") return std::string("SSH-2.0-OpenSSH\r\n\r\n");
    if (r.target == "/version") return std::string("HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n");
    if (r.target == "/two-lengths") {
      return std::string("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd");
    }
    return std::string("HTTP/1.1 101 Switching Protocols\r\n\r\n");
  }));
  auto client = HttpClient::Make();
  for (const char* t : {"/hex", "/overflow", "/status", "/garbage", "/version", "/two-lengths", "/101"}) {
    auto r = client->Do(Get(srv.Url(t)));
    EXPECT_EQ(Errno(r), EPROTO) << t << ": " << (r.ok() ? "ok" : r.status().ToString());
  }
}

TEST(HttpClientTest, ServerThatNeverAnswersTimesOut) {
  ScriptedHttpServer srv([](ScriptedConn& c) { c.WaitClosed(); });
  ExpectTimeoutAtTheDeadline(srv.Url("/"));
}

TEST(HttpClientTest, TricklingServerTimesOutAtTheDeadline) {
  ScriptedHttpServer srv([](ScriptedConn& c) {
    if (!c.ReadRequest()) return;
    if (!c.Write("HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")) return;
    // One byte every 20 ms: each read makes progress, the whole never ends.
    for (int i = 0; i < 1000 && c.Write("x"); ++i) std::this_thread::sleep_for(milliseconds(20));
  });
  ExpectTimeoutAtTheDeadline(srv.Url("/"));
  srv.Stop();
}

TEST(HttpClientTest, RedirectsShareOneDeadline) {
  ScriptedHttpServer srv([](ScriptedConn& c) {
    while (auto r = c.ReadRequest()) {
      if (r->target == "/slow") {
        c.WaitClosed();
        return;
      }
      c.Write(HttpReply(302, "", "Location: /slow\r\n"));
    }
  });
  auto client = HttpClient::Make(Fast());
  const auto t0 = Clock::now();
  auto r = client->Do(Get(srv.Url("/start")));
  EXPECT_EQ(Errno(r), ETIMEDOUT);
  EXPECT_LT(Clock::now() - t0, milliseconds(1500));
}

TEST(HttpClientTest, RefusedConnectionIsECONNREFUSED) {
  // A port that was just free: bound, read back, closed.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  ::close(fd);
  auto client = HttpClient::Make(Fast());
  auto r = client->Do(Get("http://127.0.0.1:" + std::to_string(ntohs(a.sin_port)) + "/x"));
  EXPECT_EQ(Errno(r), ECONNREFUSED) << (r.ok() ? "ok" : r.status().ToString());
}

TEST(HttpClientTest, PlainHttpToANonLoopbackHostIsRefusedWithoutConnecting) {
  auto client = HttpClient::Make(Fast());
  const auto t0 = Clock::now();
  auto r = client->Do(Get("http://192.0.2.1/v2/"));
  EXPECT_EQ(Errno(r), EACCES) << (r.ok() ? "ok" : r.status().ToString());
  EXPECT_LT(Clock::now() - t0, milliseconds(100));
  // A redirect from loopback to there is refused the same way.
  ScriptedHttpServer srv(Serve([](const test::SeenRequest&) {
    return HttpReply(302, "", "Location: http://192.0.2.1/elsewhere\r\n");
  }));
  auto via = client->Do(Get(srv.Url("/")));
  EXPECT_EQ(Errno(via), EACCES) << (via.ok() ? "ok" : via.status().ToString());
}

TEST(HttpClientTest, ConnectTimeoutBoundsAnUnreachableHost) {
  HttpClientOptions o = Fast();
  o.allow_plain_http = true;
  o.request_timeout = milliseconds(5000);
  auto client = HttpClient::Make(o);
  const auto t0 = Clock::now();
  auto r = client->Do(Get("http://192.0.2.1:81/"));  // TEST-NET-1: never answers
  EXPECT_FALSE(r.ok());
  EXPECT_LT(Clock::now() - t0, milliseconds(1500));
}

class HttpsTest : public ::testing::Test {
 protected:
  test::TempDir dir_;
  test::LoopbackTls tls_{dir_.Sub("ca.pem")};
};

TEST_F(HttpsTest, TrustedCertificateWorksAndKeepsAlive) {
  ScriptedHttpServer srv(Serve([](const test::SeenRequest& r) { return HttpReply(200, "secure" + r.target); }),
                         tls_.server_context());
  HttpClientOptions o;
  o.ca_file = tls_.ca_file();
  auto client = HttpClient::Make(o);
  ExpectGetTwice(*client, srv.Url("/t"), "secure/t");
  EXPECT_EQ(srv.connections(), 1);
}

TEST_F(HttpsTest, UntrustedCertificateIsEACCES) {
  ScriptedHttpServer srv(Serve([](const test::SeenRequest&) { return HttpReply(200, "no"); }),
                         tls_.server_context());
  // The system's CAs only. (Looking them up is slow under sanitizers: the
  // default timeouts, not the test's short ones.)
  auto client = HttpClient::Make();
  auto r = client->Do(Get(srv.Url("/")));
  EXPECT_EQ(Errno(r), EACCES) << (r.ok() ? "ok" : r.status().ToString());
  if (!r.ok()) {
    EXPECT_NE(r.status().message().find("not trusted"), std::string::npos);
  }
}

TEST_F(HttpsTest, CertificateForAnotherNameIsEACCES) {
  // Trusted, but issued to 127.0.0.1, not "localhost".
  ScriptedHttpServer srv(Serve([](const test::SeenRequest&) { return HttpReply(200, "no"); }),
                         tls_.server_context());
  HttpClientOptions o = Fast();
  o.ca_file = tls_.ca_file();
  auto client = HttpClient::Make(o);
  auto r = client->Do(Get("https://localhost:" + std::to_string(srv.port()) + "/"));
  EXPECT_EQ(Errno(r), EACCES) << (r.ok() ? "ok" : r.status().ToString());
}

TEST_F(HttpsTest, MissingCaFileFailsEveryHttpsRequest) {
  HttpClientOptions o = Fast();
  o.ca_file = dir_.Sub("nope.pem");
  auto client = HttpClient::Make(o);
  auto r = client->Do(Get("https://127.0.0.1:1/"));
  EXPECT_FALSE(r.ok());
}

TEST(HttpClientTest, ErrorMessagesCarryNoQueryAndNoHeaderValues) {
  ScriptedHttpServer srv([](ScriptedConn& c) {
    auto r = c.ReadRequest();
    if (!r) return;
    if (r->target.rfind("/wait", 0) == 0) return c.WaitClosed();
    if (r->target.rfind("/short", 0) == 0) {
      c.Write("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab");
      return;
    }
    c.Write(HttpReply(200, "whole"));
  });
  auto client = HttpClient::Make(Fast());
  std::vector<Status> errors;
  for (const char* path : {"/wait", "/short", "/whole"}) {
    auto req = Ranged(srv.Url(std::string(path) + "?X-Amz-Signature=SIGSECRET"), 0, 5);
    req.headers.push_back({"Authorization", "Bearer TOKSECRET"});
    auto r = client->Do(req);
    ASSERT_FALSE(r.ok()) << path;
    errors.push_back(r.status());
  }
  auto bad = Get("http://192.0.2.1/p?token=SIGSECRET");
  errors.push_back(client->Do(bad).status());
  for (const Status& s : errors) {
    const std::string m = s.ToString();
    EXPECT_EQ(m.find("SECRET"), std::string::npos) << m;
    EXPECT_NE(m.find("GET http"), std::string::npos) << m;
  }
}

TEST(HttpClientTest, RequestsThatCannotBeSentAreInvalidArguments) {
  auto client = HttpClient::Make(Fast());
  auto r = Get("http://127.0.0.1:1/");
  r.headers.push_back({"X-Evil", "a\r\nInjected: yes"});
  EXPECT_EQ(client->Do(r).status().code(), Status::Code::kInvalidArgument);
  r = Get("http://127.0.0.1:1/");
  r.method = "GET /x";
  EXPECT_EQ(client->Do(r).status().code(), Status::Code::kInvalidArgument);
  r = Ranged("http://127.0.0.1:1/", 5, 5);
  EXPECT_EQ(client->Do(r).status().code(), Status::Code::kInvalidArgument);
}

TEST(ParseHttpResponseTest, ParsesWhatTheClientWouldAccept) {
  auto r = ParseHttpResponse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
                             false);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->body, "abcde");
  auto h = ParseHttpResponse("HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n", true);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  EXPECT_EQ(*h->Header("content-length"), "50");
  auto eof = ParseHttpResponse("HTTP/1.0 404 Not Found\r\n\r\nuntil eof", false);
  ASSERT_TRUE(eof.ok()) << eof.status().ToString();
  EXPECT_EQ(eof->status, 404);
  EXPECT_EQ(eof->body, "until eof");
  EXPECT_EQ(ParseHttpResponse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nabc", false).status().os_errno(),
            EPROTO);
  EXPECT_EQ(ParseHttpResponse("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nabc", false).status().os_errno(),
            EPROTO);
  HttpClientOptions small;
  small.max_body_bytes = 2;
  EXPECT_EQ(ParseHttpResponse("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", false, small).status().os_errno(),
            EMSGSIZE);
  EXPECT_FALSE(ParseHttpResponse("", false).ok());
}

}  // namespace
}  // namespace ovbd
