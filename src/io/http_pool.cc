#include "http_pool.h"

namespace ovbd::http_internal {

std::unique_ptr<HttpConnection> ConnectionPool::Take(const std::string& key) {
  std::list<Idle> dead;  // closed outside the lock
  std::unique_ptr<HttpConnection> found;
  const auto now = Clock::now();
  {
    MutexLock l(&mu_);
    for (auto it = idle_.end(); it != idle_.begin();) {
      --it;
      if (it->key != key) continue;
      auto next = std::next(it);
      if (now - it->since < kMaxIdle && it->conn->StillIdle()) {
        found = std::move(it->conn);
        idle_.erase(it);
        break;
      }
      dead.splice(dead.end(), idle_, it);
      it = next;
    }
  }
  return found;
}

void ConnectionPool::Put(const std::string& key, std::unique_ptr<HttpConnection> c) {
  std::list<Idle> dead;
  {
    MutexLock l(&mu_);
    idle_.push_back(Idle{key, std::move(c), Clock::now()});
    size_t same = 0;
    for (auto it = idle_.end(); it != idle_.begin();) {
      --it;
      if (it->key == key && ++same > per_host_) {
        auto next = std::next(it);
        dead.splice(dead.end(), idle_, it);
        it = next;
      }
    }
    while (idle_.size() > total_) dead.splice(dead.end(), idle_, idle_.begin());
  }
}

}  // namespace ovbd::http_internal
