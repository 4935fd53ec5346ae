// TokenCache: bearer tokens per registry+scope, shared by every thread of a
// RegistryClient. A token is handed out until its lifetime less a margin,
// so it is replaced before the registry would refuse it. While one thread
// fetches a key's token the others wanting it wait for that fetch rather
// than each asking the token server (FUSE threads reading one layer all
// find the token expired at the same moment).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "ovbd/io/mutex.h"
#include "ovbd/io/status.h"
#include "ovbd/remote/auth.h"

namespace ovbd::remote {

class TokenCache {
 public:
  using Clock = std::chrono::steady_clock;
  using Fetch = std::function<Result<TokenReply>()>;

  // The key's token: the cached one if still fresh, else one `fetch` gets
  // (called without the lock; one call per key at a time). *fetched tells
  // whether this call fetched it. A fetch that fails fails every caller
  // that was waiting for it, with its status.
  Result<std::string> Get(const std::string& key, const Fetch& fetch, bool* fetched);
  // Forgets the key's token if it is still `token` (another thread may
  // already have replaced it: that one is kept).
  void Drop(const std::string& key, const std::string& token);

  // How long before its expiry a token is replaced: a quarter of its
  // lifetime, at most 30 s.
  static Clock::duration Margin(std::chrono::seconds lifetime);

 private:
  struct Entry {
    std::string token;
    Clock::time_point refresh_at;
    bool fetching = false;
    uint64_t generation = 0;  // bumped when a fetch ends
    Status last_error;        // of the fetch that ended last
  };
  Mutex mu_;
  CondVar fetched_{&mu_};
  std::map<std::string, Entry> entries_ GUARDED_BY(mu_);
};

}  // namespace ovbd::remote
