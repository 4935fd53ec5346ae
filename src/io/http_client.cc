// HttpClient: requests, redirects, range checks and retries over pooled
// connections (http_connection.h says why each connection runs its own
// io_context on the caller's thread).
#include "ovbd/io/http_client.h"

#include <openssl/ssl.h>

#include <boost/asio/ssl/context.hpp>
#include <boost/beast/http/verb.hpp>
#include <charconv>
#include <mutex>
#include <set>
#include <strings.h>

#include "http_connection.h"
#include "http_parse.h"
#include "http_pool.h"

namespace ovbd {

namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = boost::asio::ssl;

namespace {

using http_internal::Clock;
using http_internal::Where;

// Idle connections kept across all hosts.
constexpr size_t kMaxIdleConnections = 64;

bool IsTokenChar(char c) {
  if (std::isalnum(static_cast<unsigned char>(c))) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool IsToken(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!IsTokenChar(c)) return false;
  }
  return true;
}

bool IsCleanValue(std::string_view s) {
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && u != '\t') || u == 0x7f) return false;
  }
  return true;
}

bool EqualsNoCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

// Headers the client writes itself; a caller's copy is ignored.
bool IsOwnHeader(std::string_view name) {
  for (std::string_view own : {"host", "content-length", "user-agent", "connection", "transfer-encoding",
                               "keep-alive", "te", "upgrade"}) {
    if (EqualsNoCase(name, own)) return true;
  }
  return false;
}

bool IsIdempotent(std::string_view m) {
  return m == "GET" || m == "HEAD" || m == "PUT" || m == "DELETE" || m == "OPTIONS";
}

bool IsRedirect(int status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

bool SameOrigin(const Url& a, const Url& b) {
  return a.scheme == b.scheme && a.host == b.host && a.port == b.port;
}

bool ParseU64(std::string_view s, uint64_t* v) {
  if (s.empty() || s.size() > 20) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
  return ec == std::errc() && end == s.data() + s.size();
}

// "bytes B-E/TOTAL" or "bytes B-E/*" naming exactly [begin, end).
bool ContentRangeIs(std::string_view cr, uint64_t begin, uint64_t end) {
  if (cr.size() < 6 || !EqualsNoCase(cr.substr(0, 6), "bytes ")) return false;
  cr.remove_prefix(6);
  const size_t dash = cr.find('-'), slash = cr.find('/');
  if (dash == std::string_view::npos || slash == std::string_view::npos || slash < dash) return false;
  uint64_t b = 0, e = 0, total = 0;
  if (!ParseU64(cr.substr(0, dash), &b) || !ParseU64(cr.substr(dash + 1, slash - dash - 1), &e)) {
    return false;
  }
  const std::string_view t = cr.substr(slash + 1);
  if (t != "*" && (!ParseU64(t, &total) || e >= total)) return false;
  return b == begin && e == end - 1;
}

class Client : public HttpClient {
 public:
  explicit Client(HttpClientOptions opts)
      : opts_(std::move(opts)), pool_(opts_.connections_per_host, kMaxIdleConnections) {}

  Result<ClientResponse> Do(const ClientRequest& req) override {
    try {
      return DoChecked(req);
    } catch (const std::exception& e) {
      // Allocation failure or an Asio resource error: no exception leaves the client.
      return Status::IOError(Where(req.method, req.url) + ": " + e.what(), EIO);
    }
  }

 private:
  // The TLS context, made on the first https request: loading the
  // system's CA bundle takes a while, and plain-http clients never need it.
  Result<ssl::context*> Tls() {
    std::call_once(tls_once_, [this] { InitTls(); });
    if (!tls_) return tls_error_;
    return tls_.get();
  }

  void InitTls() {
    try {
      tls_ = std::make_unique<ssl::context>(ssl::context::tls_client);
      SSL_CTX_set_min_proto_version(tls_->native_handle(), TLS1_2_VERSION);
      tls_->set_options(ssl::context::default_workarounds | ssl::context::no_compression);
      tls_->set_verify_mode(ssl::verify_peer);
      beast::error_code ec;
      if (opts_.ca_file.empty()) {
        tls_->set_default_verify_paths(ec);
      } else {
        tls_->load_verify_file(opts_.ca_file, ec);
      }
      if (ec) {
        tls_error_ = Status::IOError(
            "TLS: cannot load " + (opts_.ca_file.empty() ? std::string("the system's CAs") : opts_.ca_file) +
                ": " + ec.message(),
            opts_.ca_file.empty() ? EACCES : ENOENT);
        tls_.reset();
      }
    } catch (const std::exception& e) {
      tls_error_ = Status::IOError(std::string("TLS: ") + e.what(), EIO);
      tls_.reset();
    }
  }

  Result<ClientResponse> DoChecked(const ClientRequest& req) {
    const std::string& m = req.method;
    if (!IsToken(m) || m.size() > 32) return Status::InvalidArgument("HTTP request: bad method");
    const bool ranged = req.range_end != 0;
    if (ranged && (m != "GET" || req.range_end <= req.range_begin)) {
      return Status::InvalidArgument(Where(m, req.url) + ": a range needs a GET of a non-empty range");
    }
    for (const auto& [name, value] : req.headers) {
      if (!IsToken(name)) return Status::InvalidArgument(Where(m, req.url) + ": bad header name");
      if (!IsCleanValue(value)) {
        return Status::InvalidArgument(Where(m, req.url) + ": control characters in header " + name);
      }
    }
    const bool head = m == "HEAD";
    const bool follow = m == "GET" || head;
    const auto deadline = Clock::now() + opts_.request_timeout;
    Url url = req.url;
    bool keep_auth = true;
    std::set<std::string> seen{url.ToString()};
    for (int redirects = 0;; ++redirects) {
      const std::string where = Where(m, url);
      http_internal::Request breq = Build(req, url, keep_auth);
      OVBD_ASSIGN_OR_RETURN(ClientResponse res, Exchange(url, breq, head, IsIdempotent(m), deadline, where));
      res.url = url;
      if (follow && IsRedirect(res.status)) {
        const std::string* loc = res.Header("Location");
        if (loc != nullptr) {
          if (redirects >= opts_.max_redirects) {
            return Status::IOError(where + ": more than " + std::to_string(opts_.max_redirects) + " redirects",
                                   ELOOP);
          }
          Result<Url> next = url.Resolve(*loc);
          if (!next.ok()) return Status::IOError(where + ": redirect to a bad URL", EPROTO);
          if (!seen.insert(next->ToString()).second) {
            return Status::IOError(where + ": redirect loop", ELOOP);
          }
          // Once the exchange leaves the origin it was given, credentials
          // stay behind, even if a later hop comes back.
          if (!SameOrigin(*next, req.url)) keep_auth = false;
          url = std::move(next).value();
          continue;
        }
      }
      if (ranged) OVBD_RETURN_IF_ERROR(CheckRange(req, res, where));
      return res;
    }
  }

  static Status CheckRange(const ClientRequest& req, const ClientResponse& res, const std::string& where) {
    if (res.status == 200) {
      return Status::IOError(where + ": the server ignored the range (200, not 206)", EPROTO);
    }
    if (res.status != 206) return Status::OK();  // 416, 404...: the caller's to judge
    const std::string* cr = res.Header("Content-Range");
    if (cr == nullptr || !ContentRangeIs(*cr, req.range_begin, req.range_end)) {
      return Status::IOError(where + ": 206 for another range than bytes " + std::to_string(req.range_begin) +
                                 "-" + std::to_string(req.range_end - 1),
                             EPROTO);
    }
    if (res.body.size() != req.range_end - req.range_begin) {
      return Status::IOError(where + ": 206 body of " + std::to_string(res.body.size()) + " bytes for a range of " +
                                 std::to_string(req.range_end - req.range_begin),
                             EPROTO);
    }
    return Status::OK();
  }

  http_internal::Request Build(const ClientRequest& req, const Url& url, bool keep_auth) const {
    http_internal::Request b;
    b.version(11);
    const http::verb v = http::string_to_verb(req.method);
    if (v == http::verb::unknown) {
      b.method_string(req.method);
    } else {
      b.method(v);
    }
    b.target(url.target);
    b.set(http::field::host, url.Authority());
    b.set(http::field::user_agent, opts_.user_agent);
    for (const auto& [name, value] : req.headers) {
      if (IsOwnHeader(name)) continue;
      if (!keep_auth && EqualsNoCase(name, "authorization")) continue;
      b.insert(name, value);
    }
    if (req.range_end != 0) {
      b.set(http::field::range,
            "bytes=" + std::to_string(req.range_begin) + "-" + std::to_string(req.range_end - 1));
    }
    b.body() = boost::beast::span<const char>(req.body.data(), req.body.size());
    if (!req.body.empty() || req.method == "POST" || req.method == "PUT" || req.method == "PATCH") {
      b.content_length(req.body.size());
    }
    return b;
  }

  // One request on a pooled connection or a new one; a pooled one the server
  // had closed gets the request once more on a new connection, when that is
  // safe (idempotent, and no byte of a response came).
  Result<ClientResponse> Exchange(const Url& url, http_internal::Request& breq, bool head, bool idempotent,
                                  Clock::time_point deadline, const std::string& where) {
    if (url.scheme == "http" && !opts_.allow_plain_http && !url.IsLoopback()) {
      return Status::IOError(where + ": plain http to a host that is not loopback is refused (use https)",
                             EACCES);
    }
    ssl::context* tls = nullptr;
    if (url.scheme == "https") {
      Result<ssl::context*> t = Tls();
      if (!t.ok()) return t.status().Annotate(where);
      tls = *t;
    }
    const std::string key = url.scheme + "://" + url.Authority();
    for (int attempt = 0;; ++attempt) {
      std::unique_ptr<http_internal::HttpConnection> conn;
      if (attempt == 0) conn = pool_.Take(key);
      const bool pooled = conn != nullptr;
      if (!pooled) {
        const auto connect_deadline = std::min(deadline, Clock::now() + opts_.connect_timeout);
        OVBD_ASSIGN_OR_RETURN(auto eps, http_internal::ResolveHost(url, connect_deadline, where));
        conn = std::make_unique<http_internal::HttpConnection>(tls);
        OVBD_RETURN_IF_ERROR(conn->Connect(url, eps, connect_deadline, where));
      }
      bool got_bytes = false;
      Result<ClientResponse> r = conn->Exchange(breq, head, opts_, deadline, where, &got_bytes);
      if (r.ok()) {
        if (conn->reusable()) pool_.Put(key, std::move(conn));
        return r;
      }
      if (pooled && idempotent && !got_bytes && r.status().os_errno() != ETIMEDOUT) continue;
      return r.status();
    }
  }

  const HttpClientOptions opts_;
  std::once_flag tls_once_;
  // Written once under tls_once_, read-only after.
  std::unique_ptr<ssl::context> tls_;  // before pool_: its connections use it
  Status tls_error_;
  http_internal::ConnectionPool pool_;
};

}  // namespace

std::unique_ptr<HttpClient> HttpClient::Make(HttpClientOptions opts) {
  return std::make_unique<Client>(std::move(opts));
}

}  // namespace ovbd
