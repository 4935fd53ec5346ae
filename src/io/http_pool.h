// Internal to the HTTP client: the idle keep-alive connections, per
// scheme+host+port.
#pragma once

#include <chrono>
#include <cstddef>
#include <list>
#include <memory>
#include <string>

#include "http_connection.h"
#include "ovbd/io/mutex.h"

namespace ovbd::http_internal {

class ConnectionPool {
 public:
  // At most `per_host` idle connections per key, `total` in all (the oldest
  // go first: a client that follows redirects to many storage hosts keeps
  // no descriptor per host it ever saw).
  ConnectionPool(size_t per_host, size_t total) : per_host_(per_host), total_(total) {}

  // The most recently used idle connection for `key` that is still idle
  // (no close or stray bytes from the server since) and has been for less
  // than kMaxIdle, or nullptr.
  std::unique_ptr<HttpConnection> Take(const std::string& key);
  void Put(const std::string& key, std::unique_ptr<HttpConnection> c);

 private:
  // Longer idle, a connection may have been dropped by a middlebox without
  // a FIN: the request would then wait out its whole deadline.
  static constexpr std::chrono::seconds kMaxIdle{30};
  struct Idle {
    std::string key;
    std::unique_ptr<HttpConnection> conn;
    Clock::time_point since;
  };
  const size_t per_host_, total_;
  Mutex mu_;
  std::list<Idle> idle_ GUARDED_BY(mu_);  // oldest first
};

}  // namespace ovbd::http_internal
