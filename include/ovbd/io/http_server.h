// HttpServer: a small HTTP/1.1 server for loopback addresses, on a thread of
// its own (Boost.Beast over Boost.Asio). It knows nothing of what it serves:
// every request that parses goes to one handler, which returns the response.
// The daemon serves its metrics with it (-o metrics_listen).
//
// Built to be left running next to a FUSE daemon without supervision:
//  - It listens only on loopback addresses (127.0.0.0/8, ::1): it has no
//    authentication, so exposing it is left to a proxy.
//  - Each connection has a deadline to deliver its whole request (also the
//    idle time allowed between keep-alive requests) and one to take its
//    response, and the request's header and body are bounded in size. A
//    client too slow or silent is disconnected; one that sends too much is
//    answered 431 or 413 and disconnected. Connections are served
//    asynchronously, so a slow client never holds up another; past a
//    limit, new connections are closed at once.
//  - Stop() returns promptly whatever clients do, and after it the handler
//    is not running and will not run again.
//
// Listen() binds before any thread exists, so a daemon can report a bad
// address or a port in use before it forks into the background, and call
// Start() after the fork.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "ovbd/io/status.h"

namespace ovbd {

struct HttpRequest {
  std::string method;  // "GET"
  std::string target;  // "/metrics?x=1": path and query as sent
  std::string path() const { return target.substr(0, target.find('?')); }
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

struct HttpServerOptions {
  // From the connection (or the end of the previous response) to the end of
  // the request.
  std::chrono::milliseconds request_timeout{10000};
  // To send one response.
  std::chrono::milliseconds response_timeout{10000};
  // The request line and headers; and, separately, the body.
  size_t max_request_bytes = 16 << 10;
  size_t max_connections = 32;
};

class HttpServer {
 public:
  // Parses HOST:PORT ("127.0.0.1:9184", "[::1]:9184", "localhost:9184";
  // port 0 picks a free one), refuses addresses that are not loopback, and
  // binds and listens.
  static Result<std::unique_ptr<HttpServer>> Listen(const std::string& address,
                                                    HttpServerOptions opts = {});
  ~HttpServer();  // Stop()
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Serves requests with `handler` on a new thread. Once.
  void Start(HttpHandler handler);
  // Closes the listener and every connection and joins the thread.
  // Idempotent.
  void Stop();

  uint16_t port() const;
  // "127.0.0.1:9184", "[::1]:9184": what was bound.
  std::string address() const;

  struct Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ovbd
