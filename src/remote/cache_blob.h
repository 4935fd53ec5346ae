// CacheBlob: one blob's part of the block cache: its block map, the fetches
// and checks in flight, its two files and the group commit of its records.
// Internal to the remote library; BlockCache (block_cache.cc) owns these
// and hands out CachedBlob handles that forward to them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cache_record.h"
#include "ovbd/io/env.h"
#include "ovbd/io/mutex.h"
#include "ovbd/io/status.h"
#include "ovbd/remote/block_cache.h"

namespace ovbd::remote {

class CacheBlob;

// What a CacheBlob needs from the cache that owns it. Called with no blob
// mutex held (except NextStamp and AddCached, which take no lock).
class CacheOwner {
 public:
  virtual ~CacheOwner() = default;
  virtual Env* env() = 0;
  // The next cache-wide record stamp.
  virtual uint64_t NextStamp() = 0;
  // Adjusts the bytes cached over all blobs.
  virtual void AddCached(int64_t delta) = 0;
  // Marks blocks [first, last) of `blob` most recently used.
  virtual void Touch(CacheBlob* blob, uint64_t first, uint64_t last) = 0;
  virtual void TouchList(CacheBlob* blob, const std::vector<uint64_t>& blocks) = 0;
  // A block was added: evict past the bound.
  virtual void AfterInsert() = 0;
};

class CacheBlob : public std::enable_shared_from_this<CacheBlob> {
 public:
  struct Paths {
    std::string data, idx;
  };
  // `idx_end`: where the next record goes; `records`: records in the file.
  CacheBlob(CacheOwner* owner, std::string digest, uint64_t size, uint32_t block_size, Paths paths,
            std::unique_ptr<RWFile> data, std::unique_ptr<RWFile> idx, uint64_t idx_end);
  CacheBlob(const CacheBlob&) = delete;
  CacheBlob& operator=(const CacheBlob&) = delete;

  // --- Loading, before the blob is shared ---
  void Replay(const cache_record::Record& r);
  // After the last Replay: `records` is how many good records the file
  // holds, `idx_end` where the next one goes.
  void FinishReplay(uint64_t records, uint64_t idx_end);
  // (stamp, block) of each present block; none when the blob is pinned
  // (pinned blocks stay out of the LRU).
  std::vector<std::pair<uint64_t, uint64_t>> LruSeeds();
  uint64_t present_bytes();

  const std::string& digest() const { return digest_; }
  uint64_t size() const { return size_; }
  uint64_t block_count() const { return block_count_; }
  const Paths& paths() const { return paths_; }

  // --- CachedBlob ---
  Status Read(uint64_t off, size_t n, char* buf, const BlockFetcher& fetch);
  bool Cached(uint64_t off, uint64_t n);
  Status Invalidate(uint64_t off, uint64_t n);
  Status SetPinned(bool pinned);
  Status MarkVerified();
  BlobStats Stats();

  // Forgets every block (the blob is being removed): the cache's byte count
  // drops by what it held, and its files are never written again (a new
  // blob of the same digest may own their names).
  void Detach();

  // Makes every record queued so far durable (the drop records of blocks
  // that failed their check are queued without waiting).
  Status Flush();

  // --- Eviction, driven by the cache ---
  enum class EvictTry {
    kStarted,  // the block is now absent, its drop queued: Flush, then FinishEvict
    kBusy,     // being read, fetched or checked right now: keep it in the LRU
    kStale,    // absent already, or pinned: its LRU entry can go
  };
  EvictTry TryBeginEvict(uint64_t block, uint64_t* bytes);
  // Punches the block's hole (when its drop record is durable: `punch`)
  // and lets its readers go on.
  void FinishEvict(uint64_t block, bool punch);

 private:
  struct Block {
    uint64_t stamp = 0;     // of the record that made it present
    uint32_t crc = 0;       // CRC32C of its bytes, from its record
    uint32_t readers = 0;   // hits reading it from the data file right now
    bool present = false;   // its record is durable
    bool verified = false;  // its bytes were written or checked since open
  };
  // A block being fetched, checked against its CRC, or dropped. Readers of
  // the block wait on it instead of starting their own.
  struct Flight {
    bool fill = true;          // fetch or check (false: a drop)
    bool fetching = false;     // the leader went to the fetcher (not a check that passed)
    std::vector<char> buf;     // the block's true bytes once `ready`
    bool ready = false;        // buf is final; waiters copy from it
    bool done = false;         // over and removed from flights_
    Status status;             // a failed fetch: fails every waiter
  };
  // Records appended and synced together (group commit).
  struct Batch {
    std::vector<cache_record::Record> records;
    bool done = false;
    Status status;
  };

  uint64_t BlockLen(uint64_t b) const {
    const uint64_t start = b << shift_;
    return std::min<uint64_t>(block_size_, size_ - start);
  }
  // One block, not served by the fast path: waits for a flight, or leads a
  // check or a fetch. *retry: the block became a plain hit; read it again.
  Status ReadSlow(uint64_t b, uint64_t off, size_t n, char* dst, const BlockFetcher& fetch,
                  bool* retry);
  // The leader of a flight for block b: checks its bytes (if present) or
  // fetches them, hands them to the waiters and to dst, and records them.
  Status Fill(uint64_t b, const std::shared_ptr<Flight>& f, bool check, uint64_t off, size_t n,
              char* dst, const BlockFetcher& fetch);
  void EndFlightLocked(uint64_t b, const std::shared_ptr<Flight>& f, Status s) REQUIRES(mu_);
  void MarkAbsentLocked(uint64_t b) REQUIRES(mu_);

  std::shared_ptr<Batch> EnqueueLocked(cache_record::Record r) REQUIRES(mu_);
  // Waits until `batch` is durable, leading the commit if nobody is.
  Status AwaitLocked(const std::shared_ptr<Batch>& batch) REQUIRES(mu_);
  void ApplyLocked(const Batch& batch) REQUIRES(mu_);
  bool NeedCompactionLocked() const REQUIRES(mu_);
  std::string CompactedImageLocked(uint64_t* records) REQUIRES(mu_);
  // Leader only, no lock held.
  Status WriteBatch(const Batch& batch);
  Status WriteCompacted(const std::string& image);

  CacheOwner* const owner_;
  const std::string digest_;
  const uint64_t size_;
  const uint32_t block_size_;
  const int shift_;
  const uint64_t block_count_;
  const Paths paths_;
  const std::unique_ptr<RWFile> data_;

  Mutex mu_;
  CondVar cv_{&mu_};  // any flight, batch, commit or reader count changed
  std::vector<Block> blocks_ GUARDED_BY(mu_);
  std::unordered_map<uint64_t, std::shared_ptr<Flight>> flights_ GUARDED_BY(mu_);
  bool pinned_ GUARDED_BY(mu_) = false;
  bool verified_ GUARDED_BY(mu_) = false;  // MarkVerified, undone by any drop
  uint64_t present_ GUARDED_BY(mu_) = 0;
  uint64_t present_bytes_ GUARDED_BY(mu_) = 0;
  uint64_t hits_ GUARDED_BY(mu_) = 0;
  uint64_t misses_ GUARDED_BY(mu_) = 0;
  uint64_t fetched_bytes_ GUARDED_BY(mu_) = 0;
  uint64_t errors_ GUARDED_BY(mu_) = 0;
  uint64_t corrupt_ GUARDED_BY(mu_) = 0;
  uint32_t drain_waiters_ GUARDED_BY(mu_) = 0;  // waiting for readers to reach 0
  std::shared_ptr<Batch> open_batch_ GUARDED_BY(mu_);
  bool committing_ GUARDED_BY(mu_) = false;
  bool detached_ GUARDED_BY(mu_) = false;  // removed: its files may name another blob now
  uint64_t records_in_file_ GUARDED_BY(mu_) = 0;

  // The record file: touched only by the commit leader (the one thread that
  // set committing_), so no lock is held during its I/O.
  std::unique_ptr<RWFile> idx_;
  uint64_t idx_end_;
  bool dir_unsynced_ = false;  // a compaction's rename may not be durable yet
};

}  // namespace ovbd::remote
