// Internal to the HTTP client: the response parser's configuration, the
// checks on what it parsed, and the mapping of Beast's errors to Status.
// Shared by the live client (http_connection.cc) and ParseHttpResponse, so
// the fuzzer exercises exactly what a hostile server reaches.
#pragma once

#include <boost/asio/buffer.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/optional.hpp>
#include <cstdint>
#include <string>

#include "ovbd/io/http_client.h"

namespace ovbd::http_internal {

// A string body that enforces its own size limit. The parser's body_limit
// is not enough in Boost 1.74: in eager mode (which http::read uses) an
// over-limit Content-Length is reported and then overwritten by the next
// step, and the body is read anyway. Here the claim is refused before any
// allocation, and so is every byte past the limit (chunked or until EOF).
struct LimitedBody {
  struct value_type {
    std::string data;
    uint64_t limit = 0;
  };
  class reader {
   public:
    template <bool isRequest, class Fields>
    reader(boost::beast::http::header<isRequest, Fields>&, value_type& b) : b_(b) {}
    void init(const boost::optional<uint64_t>& length, boost::beast::error_code& ec) {
      ec = {};
      if (length && *length > b_.limit) {
        ec = boost::beast::http::error::body_limit;
        return;
      }
      // What the server claims is reserved only up to a small bound; the
      // rest grows with what actually arrives.
      if (length) b_.data.reserve(static_cast<size_t>(std::min<uint64_t>(*length, kReserveBound)));
    }
    template <class ConstBufferSequence>
    size_t put(const ConstBufferSequence& buffers, boost::beast::error_code& ec) {
      const size_t n = boost::asio::buffer_size(buffers);
      if (n > b_.limit - b_.data.size()) {
        ec = boost::beast::http::error::body_limit;
        return 0;
      }
      ec = {};
      const size_t old = b_.data.size();
      b_.data.resize(old + n);
      boost::asio::buffer_copy(boost::asio::buffer(&b_.data[old], n), buffers);
      return n;
    }
    void finish(boost::beast::error_code& ec) { ec = {}; }

   private:
    static constexpr uint64_t kReserveBound = 1 << 20;
    value_type& b_;
  };
};

using ResponseParser = boost::beast::http::response_parser<LimitedBody>;

// Interim (1xx) responses skipped before the real one; more is a hostile server.
constexpr int kMaxInterimResponses = 8;

// Applies the header and body limits; `head`: no body follows the header.
void ConfigureParser(ResponseParser& p, const HttpClientOptions& opts, bool head);

// What a parser that finished holds, checked (HTTP/1.0 or 1.1, a status
// 200..599 or 1xx, header names and values without control bytes).
// `where` ("GET https://host/path") prefixes errors.
Result<ClientResponse> TakeResponse(ResponseParser& p, const std::string& where);

// True for an interim 1xx response the client skips (not 101).
bool IsInterim(const ResponseParser& p);

// A Beast, Asio or TLS failure as a Status naming `where` (never a header value).
Status ExchangeError(const std::string& where, boost::beast::error_code ec,
                     const HttpClientOptions& opts);

// "GET https://host:port/path": the query (signed URLs carry tokens there) cut off.
std::string Where(const std::string& method, const Url& url);

}  // namespace ovbd::http_internal
