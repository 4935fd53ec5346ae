#include "token_cache.h"

#include <algorithm>

namespace ovbd::remote {

TokenCache::Clock::duration TokenCache::Margin(std::chrono::seconds lifetime) {
  return std::min<Clock::duration>(std::chrono::seconds(30),
                                   std::chrono::duration_cast<Clock::duration>(lifetime) / 4);
}

Result<std::string> TokenCache::Get(const std::string& key, const Fetch& fetch, bool* fetched) {
  *fetched = false;
  mu_.Lock();
  Entry* e = &entries_[key];  // std::map: stays valid while others are added
  while (true) {
    if (!e->token.empty() && Clock::now() < e->refresh_at) {
      std::string t = e->token;
      mu_.Unlock();
      return t;
    }
    if (!e->fetching) break;
    const uint64_t gen = e->generation;
    fetched_.Wait([&] {
      mu_.AssertHeld();
      return e->generation != gen;
    });
    if (!e->last_error.ok()) {
      Status s = e->last_error;
      mu_.Unlock();
      return s;
    }
  }
  e->fetching = true;
  mu_.Unlock();

  Result<TokenReply> reply = fetch();
  const auto now = Clock::now();

  mu_.Lock();
  e->fetching = false;
  ++e->generation;
  std::string token;
  if (reply.ok()) {
    const std::chrono::seconds life(reply->expires_in);
    e->token = token = reply->token;
    e->refresh_at = now + life - Margin(life);
    e->last_error = Status::OK();
  } else {
    e->token.clear();
    e->last_error = reply.status();
  }
  mu_.Unlock();
  fetched_.SignalAll();
  if (!reply.ok()) return reply.status();
  *fetched = true;
  return token;
}

void TokenCache::Drop(const std::string& key, const std::string& token) {
  MutexLock l(&mu_);
  auto it = entries_.find(key);
  if (it != entries_.end() && it->second.token == token) it->second.token.clear();
}

}  // namespace ovbd::remote
