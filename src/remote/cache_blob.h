// CacheBlob: one blob's part of the block cache: its block map, the fetches
// and checks in flight, its two files and the group commit of its records.
// Internal to the remote library; BlockCache (block_cache.cc) owns these
// and hands out CachedBlob handles that forward to them.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
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
  // Runs `task` on the cache's own threads (readahead fetches, and keeping
  // what a reader already has). The cache waits for every posted task
  // before it closes.
  virtual void Post(std::function<void()> task) = 0;
  // Bytes fetched ahead of a sequential reader (0: none), and the most one
  // request fetches; both whole blocks.
  virtual uint64_t readahead_bytes() const = 0;
  virtual uint64_t fetch_run_bytes() const = 0;
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
  // that failed their check, or evicted, are queued without waiting). It
  // does not wait for blocks still being kept after their reads: an evictor
  // on the cache's own threads calls it, and those keeps may be queued
  // behind it.
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
  // Readahead requests of one blob in flight at once.
  static constexpr uint32_t kMaxReadaheads = 2;
  // Fetched bytes handed to readers and not yet written to the data file,
  // past which readers keep their own blocks and readahead waits.
  static constexpr uint64_t kMaxPersistingBytes = uint64_t{64} << 20;

  struct Block {
    uint64_t stamp = 0;     // of the record that made it present
    uint32_t crc = 0;       // CRC32C of its bytes, from its record
    uint32_t readers = 0;   // hits reading it from the data file right now
    bool present = false;   // its record is durable
    bool verified = false;  // its bytes were written or checked since open
  };
  // A block being fetched, checked against its CRC, kept, or dropped.
  // Readers of the block wait on it instead of starting their own. One
  // fetch may fill a run of blocks: their flights share its buffer.
  struct Flight {
    bool fill = true;          // fetch or check (false: a drop)
    bool fetching = false;     // its bytes come from the fetcher (not a check that passed)
    std::shared_ptr<std::vector<char>> run;  // the bytes of the fetch (or check)
    size_t at = 0;                           // where this block's bytes start in *run
    bool ready = false;        // *run is final; waiters copy from it
    bool done = false;         // over and removed from flights_
    Status status;             // a failed fetch: fails every waiter (OK and not
                               // ready: look again, and lead a fetch if need be)
    const char* bytes() const { return run->data() + at; }
  };
  // Blocks [first, first + flights.size()) fetched by one request.
  struct Run {
    uint64_t first = 0;
    std::vector<std::shared_ptr<Flight>> flights;
    std::shared_ptr<std::vector<char>> bytes;
    std::vector<uint32_t> crcs;
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
  // `read_end`: where the whole read ends (its absent blocks are fetched
  // in one request).
  Status ReadSlow(uint64_t b, uint64_t off, size_t n, uint64_t read_end, char* dst,
                  const BlockFetcher& fetch, bool* retry);
  // The leader of a flight for block b: checks its bytes (if present) or
  // fetches them, hands them to the waiters and to dst, and records them.
  Status Fill(uint64_t b, const std::shared_ptr<Flight>& f, bool check, uint64_t off, size_t n,
              uint64_t read_end, char* dst, const BlockFetcher& fetch);
  // Claims the blocks after `run.first` (absent, nobody at them) up to
  // block `limit` or the request bound, each with a new flight.
  void ExtendRunLocked(Run* run, uint64_t limit) REQUIRES(mu_);
  // Fetches a claimed run into one buffer and makes it ready for waiters;
  // on failure ends its flights (with the error when `fail_waiters`).
  Status FetchRun(Run* run, const BlockFetcher& fetch, bool fail_waiters);
  // Hands a ready run to the blob's keeper (one task at a time per blob, so
  // runs are kept, and enter the LRU, in the order they were fetched).
  void QueueKeepLocked(std::shared_ptr<Run> run) REQUIRES(mu_);
  // The keeper: writes the queued runs to the data file, records them
  // through one group commit and ends their flights, until none is left.
  void Keep();
  // A sequential reader whose read ended in block `last`: claims what lies
  // within `window` blocks past it and is absent, and fetches it on the
  // cache's threads.
  void ReadaheadLocked(uint64_t last, uint64_t window, const BlockFetcher& fetch) REQUIRES(mu_);
  // Waits until no block of [first, last) is being kept after its read.
  void WaitKeptLocked(uint64_t first, uint64_t last) REQUIRES(mu_);
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
  // The sequential-read detector: the block after the last read, and how
  // many new blocks the stream of reads that led to it has covered.
  uint64_t seq_next_ GUARDED_BY(mu_) = UINT64_MAX;
  uint64_t seq_blocks_ GUARDED_BY(mu_) = 0;
  uint32_t readaheads_ GUARDED_BY(mu_) = 0;      // readahead runs being fetched
  uint64_t persisting_bytes_ GUARDED_BY(mu_) = 0;  // of ready runs not written yet
  std::deque<std::shared_ptr<Run>> keep_queue_ GUARDED_BY(mu_);
  bool keeper_ GUARDED_BY(mu_) = false;  // a Keep task is posted or running

  // The record file: touched only by the commit leader (the one thread that
  // set committing_), so no lock is held during its I/O.
  std::unique_ptr<RWFile> idx_;
  uint64_t idx_end_;
  bool dir_unsynced_ = false;  // a compaction's rename may not be durable yet
};

}  // namespace ovbd::remote
