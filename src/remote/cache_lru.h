// BlockLru: the block cache's recency order over the blocks of every blob.
// Not thread-safe: the cache guards it with its LRU mutex. Internal to the
// remote library.
//
// Entries may be stale (a block since evicted, invalidated or removed with
// a pinned blob): the evictor, which checks every candidate against its
// blob, drops those it meets, so a block's state changes never need the
// LRU mutex while the blob's own mutex is held.
#pragma once

#include <cstdint>
#include <functional>
#include <list>
#include <unordered_map>

namespace ovbd::remote {

class CacheBlob;

class BlockLru {
 public:
  struct Key {
    CacheBlob* blob = nullptr;
    uint64_t block = 0;
    bool operator==(const Key& o) const { return blob == o.blob && block == o.block; }
  };

  // Makes the block the most recently used (adding it if absent).
  void Touch(const Key& k) {
    auto it = where_.find(k);
    if (it != where_.end()) {
      order_.splice(order_.end(), order_, it->second);
      return;
    }
    order_.push_back(k);
    where_.emplace(k, std::prev(order_.end()));
  }
  void Erase(const Key& k) {
    auto it = where_.find(k);
    if (it == where_.end()) return;
    order_.erase(it->second);
    where_.erase(it);
  }
  // Drops every entry of a blob with `blocks` blocks.
  void EraseBlob(CacheBlob* blob, uint64_t blocks) {
    if (where_.empty()) return;
    for (uint64_t b = 0; b < blocks; ++b) Erase(Key{blob, b});
  }

  enum class Visit { kKeep, kErase, kEraseAndStop };
  // Visits entries from the least recently used on, until fn says stop or
  // every entry was seen.
  void VisitOldest(const std::function<Visit(const Key&)>& fn) {
    for (auto it = order_.begin(); it != order_.end();) {
      const Visit v = fn(*it);
      if (v == Visit::kKeep) {
        ++it;
        continue;
      }
      where_.erase(*it);
      it = order_.erase(it);
      if (v == Visit::kEraseAndStop) return;
    }
  }
  size_t size() const { return where_.size(); }

 private:
  struct Hash {
    size_t operator()(const Key& k) const {
      return std::hash<const void*>()(k.blob) ^ (k.block * 0x9e3779b97f4a7c15ull);
    }
  };
  std::list<Key> order_;
  std::unordered_map<Key, std::list<Key>::iterator, Hash> where_;
};

}  // namespace ovbd::remote
