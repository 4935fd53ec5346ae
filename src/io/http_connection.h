// Internal to the HTTP client: one HTTP/1.1 connection (plain or TLS) and
// the exchanges on it.
//
// Each connection owns a small io_context that only the thread using the
// connection runs, and only for as long as its exchange may last
// (run_until the deadline). So:
//  - no thread is shared between callers: a slow server stalls only the
//    caller talking to it, and there is no event thread to starve, hand
//    buffers to, or outlive the caller's stack;
//  - every deadline is the bound of a run_until: past it the socket is
//    closed, the pending operations end (aborted) before the call returns,
//    and the connection is dropped, whatever the server does;
//  - an idle pooled connection has no pending operation at all.
// The cost is an epoll descriptor per connection, bounded by the pool and
// the number of calls in flight.
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/span_body.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ovbd/io/http_client.h"

namespace ovbd::http_internal {

using Clock = std::chrono::steady_clock;
// The body is a view of the caller's (a pushed layer can be large: no copy).
using Request = boost::beast::http::request<boost::beast::http::span_body<const char>>;

// Room for one read from the socket: Beast's own cap on a read.
constexpr size_t kReadChunk = 64 << 10;

// The addresses of url.host, without blocking past `deadline` (a name
// lookup runs on a thread of its own, left to finish alone if it is late).
Result<std::vector<boost::asio::ip::tcp::endpoint>> ResolveHost(const Url& url,
                                                               Clock::time_point deadline,
                                                               const std::string& where);

class HttpConnection {
 public:
  // `tls`: the client's TLS context for https (it outlives the connection);
  // nullptr for http.
  explicit HttpConnection(boost::asio::ssl::context* tls);
  ~HttpConnection();
  HttpConnection(const HttpConnection&) = delete;
  HttpConnection& operator=(const HttpConnection&) = delete;

  // TCP connect to the first endpoint that answers, then the TLS handshake
  // (SNI, certificate and host name checked against url.host), all by
  // `deadline`.
  [[nodiscard]] Status Connect(const Url& url, const std::vector<boost::asio::ip::tcp::endpoint>& eps,
                               Clock::time_point deadline, const std::string& where);

  // Sends `req` and reads its response (skipping interim 1xx ones) by
  // `deadline`. On failure *got_bytes says whether any byte of a response
  // had arrived (a pooled connection the server closed has none).
  Result<ClientResponse> Exchange(Request& req, bool head, const HttpClientOptions& opts,
                                  Clock::time_point deadline, const std::string& where,
                                  bool* got_bytes);

  // After a successful exchange: the server keeps the connection open and
  // nothing past the response has arrived, so it may carry another request.
  bool reusable() const { return reusable_; }
  // An idle connection still is: nothing to read (no close, no stray
  // bytes) has arrived since.
  bool StillIdle();

 private:
  // Runs the context until *done or `until`; past `until` the socket is
  // closed and the aborted operations are run out. False on the timeout.
  bool RunUntil(Clock::time_point until, const bool& done);

  boost::asio::io_context io_{1};
  boost::asio::ip::tcp::socket sock_{io_};
  boost::asio::ssl::context* const tls_ctx_;
  std::optional<boost::asio::ssl::stream<boost::asio::ip::tcp::socket&>> tls_;
  boost::beast::flat_buffer buf_;
  bool reusable_ = false;
};

}  // namespace ovbd::http_internal
