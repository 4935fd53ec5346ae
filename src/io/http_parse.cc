// The HTTP client's response checks, shared by the live path and
// ParseHttpResponse (see http_parse.h).
#include "http_parse.h"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/core/error.hpp>
#include <cctype>
#include <cerrno>
#include <strings.h>

namespace ovbd {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;

namespace http_internal {

void ConfigureParser(ResponseParser& p, const HttpClientOptions& opts, bool head) {
  p.header_limit(static_cast<std::uint32_t>(std::min<size_t>(opts.max_header_bytes, UINT32_MAX)));
  p.body_limit(static_cast<std::uint64_t>(opts.max_body_bytes));
  p.get().body().limit = opts.max_body_bytes;
  p.eager(true);
  if (head) p.skip(true);
}

bool IsInterim(const ResponseParser& p) {
  const unsigned s = p.get().result_int();
  return s >= 100 && s < 200 && s != 101;
}

namespace {

bool CleanField(std::string_view v) {
  for (char c : v) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && u != '\t') || u == 0x7f) return false;
  }
  return true;
}

Status Proto(const std::string& where, const std::string& why) {
  return Status::IOError(where + ": malformed response: " + why, EPROTO);
}

}  // namespace

Result<ClientResponse> TakeResponse(ResponseParser& p, const std::string& where) {
  auto& msg = p.get();
  if (msg.version() != 10 && msg.version() != 11) return Proto(where, "not HTTP/1.0 or HTTP/1.1");
  const unsigned s = msg.result_int();
  if (s < 200 || s > 599) {
    return Proto(where, s == 101 ? "unrequested protocol switch (101)"
                                 : "status " + std::to_string(s) + " out of range");
  }
  ClientResponse r;
  r.status = static_cast<int>(s);
  for (const auto& f : msg) {
    std::string_view name(f.name_string().data(), f.name_string().size());
    std::string_view value(f.value().data(), f.value().size());
    if (name.empty() || !CleanField(name) || !CleanField(value)) {
      return Proto(where, "control characters in a header");
    }
    r.headers.emplace_back(std::string(name), std::string(value));
  }
  r.body = std::move(msg.body().data);
  return r;
}

std::string Where(const std::string& method, const Url& url) {
  std::string path = url.target.substr(0, url.target.find('?'));
  if (path.size() > 256) path = path.substr(0, 256) + "...";
  return method + " " + url.scheme + "://" + url.Authority() + path;
}

Status ExchangeError(const std::string& where, beast::error_code ec, const HttpClientOptions& opts) {
  if (ec == beast::error::timeout || ec == net::error::timed_out) {
    return Status::IOError(where + ": timed out", ETIMEDOUT);
  }
  if (ec.category() == http::make_error_code(http::error::need_more).category()) {
    switch (static_cast<http::error>(ec.value())) {
      case http::error::header_limit:
      case http::error::buffer_overflow:
        return Status::IOError(where + ": response header larger than " +
                                   std::to_string(opts.max_header_bytes) + " bytes",
                               EMSGSIZE);
      case http::error::body_limit:
        return Status::IOError(where + ": response body larger than " +
                                   std::to_string(opts.max_body_bytes) + " bytes",
                               EMSGSIZE);
      case http::error::end_of_stream:
        return Status::IOError(where + ": connection closed before a response", ECONNRESET);
      case http::error::partial_message:
        return Proto(where, "connection closed in the middle of the response");
      default:
        return Proto(where, ec.message());
    }
  }
  if (ec.category() == net::error::get_ssl_category()) {
    if (ERR_GET_REASON(static_cast<unsigned long>(ec.value())) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
      return Status::IOError(where + ": TLS: server certificate not trusted", EACCES);
    }
    return Status::IOError(where + ": TLS: " + ec.message(), EPROTO);
  }
  if (ec == net::ssl::error::stream_truncated) {
    return Proto(where, "TLS stream truncated");
  }
  if (ec == net::error::eof) {
    return Status::IOError(where + ": connection closed before a response", ECONNRESET);
  }
  if (ec.category() == boost::system::system_category() ||
      ec.category() == boost::system::generic_category()) {
    return Status::IOError(where + ": " + ec.message(), ec.value() != 0 ? ec.value() : EIO);
  }
  return Status::IOError(where + ": " + ec.message(), EIO);
}

}  // namespace http_internal

const std::string* ClientResponse::Header(std::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (n.size() == name.size() && strncasecmp(n.data(), name.data(), n.size()) == 0) return &v;
  }
  return nullptr;
}

Result<ClientResponse> ParseHttpResponse(std::string_view wire, bool head,
                                         const HttpClientOptions& opts) {
  using namespace http_internal;
  const std::string where = "response";
  size_t off = 0;
  for (int interim = 0;; ++interim) {
    if (interim > kMaxInterimResponses) return Proto(where, "too many interim (1xx) responses");
    ResponseParser p;
    ConfigureParser(p, opts, head);
    beast::error_code ec;
    while (!p.is_done()) {
      // Every call sees all that is left, so "need more" (or a call that
      // takes nothing) means the wire has ended: the end of the connection,
      // in the live path's terms. The parser must not be called again with
      // no new bytes after "need more" (it would assume it has them).
      size_t n = 0;
      if (off < wire.size()) n = p.put(net::buffer(wire.data() + off, wire.size() - off), ec);
      off += n;
      if (ec && ec != http::error::need_more) break;
      if (!ec && n > 0) continue;
      ec = {};
      if (!p.got_some()) {
        ec = http::error::end_of_stream;
        break;
      }
      p.put_eof(ec);
      if (!ec && !p.is_done()) ec = http::error::partial_message;
      break;
    }
    if (ec) {
      return ExchangeError(where, ec, opts);
    }
    if (IsInterim(p)) continue;
    OVBD_ASSIGN_OR_RETURN(ClientResponse r, TakeResponse(p, where));
    if (off != wire.size()) return Proto(where, "bytes after the end of the response");
    return r;
  }
}

}  // namespace ovbd
