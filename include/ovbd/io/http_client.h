// HttpClient: HTTP/1.1 and HTTPS requests to remote servers (Boost.Beast over
// Boost.Asio, OpenSSL for TLS). Remote layers, the registry client and push
// all reach the network through this one interface, so tests can wrap it to
// inject faults and count bytes.
//
// Built to be called from FUSE request threads without ever hanging them:
//  - Every exchange has a connect timeout and a deadline for the whole
//    exchange (request sent, response read); past either it fails with
//    ETIMEDOUT, whatever the server does (accepts and never answers, sends
//    one byte a minute, stops mid-body).
//  - The response's status line and headers, and separately its body, are
//    bounded in size; a bigger one is an error (EMSGSIZE), never an
//    allocation of what the server claims. Malformed responses (bad status
//    line, bad chunked encoding, Content-Length disagreeing with the body)
//    fail with EPROTO naming the URL.
//  - Connections are kept alive in a small pool per scheme+host+port and
//    reused; a pooled connection the server has closed is retried once on a
//    fresh one (only for requests that are safe to repeat: GET, HEAD, PUT of
//    a whole body, and the request was not answered).
//  - Redirects (301, 302, 303, 307, 308) are followed for GET and HEAD up to
//    max_redirects; a loop or too many is an error (ELOOP). The
//    Authorization header is dropped when a redirect leaves the original
//    host (registries redirect blobs to storage that must not see the
//    registry's credentials).
//  - https:// verifies the server's certificate against the system CAs (or
//    ca_file) and its host name; http:// is allowed only to loopback
//    addresses unless allow_plain_http.
//  - Safe to call from many threads at once.
// Status codes >= 400 are responses, not errors: callers decide.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ovbd/io/status.h"

namespace ovbd {

// An absolute http:// or https:// URL.
struct Url {
  std::string scheme;  // "http" or "https"
  std::string host;    // "registry.example", "127.0.0.1", "::1" (no brackets)
  uint16_t port = 0;   // as given, or the scheme's default (80, 443)
  std::string target;  // path and query as sent: "/v2/" at least "/"

  // Refuses anything but http(s), user info ("user:pw@host"), empty hosts,
  // bad ports, spaces and control characters.
  static Result<Url> Parse(std::string_view text);
  // The URL a Location header names, absolute or relative to this one.
  Result<Url> Resolve(std::string_view location) const;
  // "host:port" ("[::1]:5000"), as sent in Host when the port is not the default.
  std::string Authority() const;
  std::string ToString() const;
  // 127.0.0.0/8, ::1 or "localhost".
  bool IsLoopback() const;
};

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

struct ClientRequest {
  std::string method = "GET";
  Url url;
  // Extra headers. Host, Content-Length, User-Agent and Connection are the
  // client's own.
  HttpHeaders headers;
  std::string body;
  // For a GET of [range_begin, range_end): sends "Range: bytes=B-(E-1)" and
  // accepts only a 206 whose Content-Range is exactly that range (with any
  // total) and whose body is exactly its length, or a 416; a 200 (the server
  // ignored the range) or any other Content-Range is an error (EPROTO).
  // range_end == 0: no range.
  uint64_t range_begin = 0, range_end = 0;
};

struct ClientResponse {
  int status = 0;
  HttpHeaders headers;
  std::string body;
  Url url;  // the URL that answered, after redirects

  // The first header of that name (case-insensitive), or nullptr.
  const std::string* Header(std::string_view name) const;
};

struct HttpClientOptions {
  std::chrono::milliseconds connect_timeout{5000};
  // The whole exchange, redirects included.
  std::chrono::milliseconds request_timeout{30000};
  int max_redirects = 5;
  size_t max_header_bytes = 64 << 10;
  size_t max_body_bytes = 64 << 20;
  size_t connections_per_host = 4;  // idle connections kept per host
  bool allow_plain_http = false;    // http:// to hosts that are not loopback
  std::string ca_file;              // PEM bundle; "" the system's CAs
  std::string user_agent = "ovbdfs";
};

class HttpClient {
 public:
  virtual ~HttpClient() = default;
  // One exchange. Errors (kIOError with the errno, message naming method and
  // URL, never a header's value): ECONNREFUSED and friends, ETIMEDOUT,
  // EPROTO (malformed, or a range not honoured), EMSGSIZE (too large),
  // ELOOP (redirects), EACCES (plain http refused, certificate not trusted).
  virtual Result<ClientResponse> Do(const ClientRequest& req) = 0;

  static std::unique_ptr<HttpClient> Make(HttpClientOptions opts = {});
};

// Parses one whole HTTP/1.1 response from bytes, with the same parser,
// limits and checks the client applies on a connection (for the fuzzer and
// for tests): `head` when it answers a HEAD request (no body follows).
Result<ClientResponse> ParseHttpResponse(std::string_view wire, bool head,
                                         const HttpClientOptions& opts = {});

}  // namespace ovbd
