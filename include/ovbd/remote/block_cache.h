// BlockCache: the persistent cache of remote blobs' bytes, shared by every
// volume (and every layer address) with the same digest.
//
// Layout of the cache directory (docs/FORMAT.md, "Block cache"):
//   DIR/cache.lock           flock'ed by the one process using the cache
//   DIR/blobs/sha256-HEX.data   sparse: a block's bytes at the blob's offsets
//   DIR/blobs/sha256-HEX.idx    the record of the blocks present
// A block is present only once its record is durable, and its record holds
// the block's CRC32C; a block whose bytes do not match its record (torn by a
// crash, damaged on disk) is dropped when first read after the cache is
// opened, and fetched again: never served.
//
// Bounded: when the bytes cached pass max_bytes, the least recently used
// blocks are evicted (hole punched, record dropped), never a block being
// read and never a block of a pinned blob. Eviction is per block, so one
// huge blob cannot push every other blob out at once. An insertion past
// the bound evicts down to 1/32 below it (in whole blocks), so the record
// syncs of evictions are shared by many insertions. When every cached
// block is pinned or in use, the cache grows past max_bytes rather than
// failing reads. The LRU order lives in memory; at open it is rebuilt from
// the order in which blocks were recorded.
//
// Reads of a missing block call the caller's fetcher once per block, even
// when many threads miss it at the same time (they wait for the one fetch,
// so their wait is bounded by the fetcher's own timeouts); the absent
// blocks of one read go in one request. A fetch failure fails the reads
// that waited for it and leaves nothing in the cache. A reader returns as
// soon as it has the fetched bytes: writing them to the cache and making
// their record durable happen on the cache's threads (WaitIdle, or closing
// the cache, waits for that). A failure of the cache's own disk while
// keeping a fetched block costs the cache that block, not the reader its
// bytes.
//
// Readahead: a blob read sequentially (reads each starting in the block the
// last one ended in, or the next, that have covered two new blocks) has the
// absent blocks ahead of it fetched on the cache's threads, at most two
// requests at a time, so a cold sequential read overlaps its requests'
// latency. The window starts at two blocks and doubles with each new block
// the stream covers, up to readahead_bytes, so a short sequential run (a
// filesystem's metadata, a small file) fetches little it does not use.
// Random reads fetch only what they touch.
//
// Threads: every method may be called from any thread. A hit takes the
// blob's own mutex twice, briefly, around one pread into the caller's
// buffer, then the LRU's mutex to mark the block used; no lock is held
// during a fetch, and no lock that a hit needs during any other I/O.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ovbd/io/env.h"
#include "ovbd/io/status.h"

namespace ovbd::remote {

struct BlockCacheOptions {
  std::string dir;
  uint32_t block_size = 1 << 20;             // power of two, 64 KiB..16 MiB
  uint64_t max_bytes = uint64_t{16} << 30;   // data kept before eviction
  // Fetched ahead of a sequential reader (0: no readahead), in at most two
  // requests at a time; rounded down to whole blocks.
  uint64_t readahead_bytes = uint64_t{16} << 20;
  // The most one request fetches (whole blocks, at least one): the absent
  // blocks of one read, or of one readahead, go in one ranged request.
  uint64_t fetch_run_bytes = uint64_t{8} << 20;
  // The cache's own threads: readahead, and keeping fetched blocks after
  // their readers have them.
  uint32_t threads = 4;
};

// Fills buf with exactly n bytes of the blob at off: a run of whole blocks
// (the last of them may be the blob's short last block).
using BlockFetcher = std::function<Status(uint64_t off, size_t n, char* buf)>;

struct BlobStats {
  std::string digest;
  uint64_t size = 0;
  uint64_t cached_bytes = 0;
  bool pinned = false;
  bool complete = false;  // every block present (and the whole blob verified)
  // Since open, counted per block touched by a read: hits (served from the
  // cache), misses (fetched, or waited for another reader's fetch),
  // fetched_bytes, errors (fetches that failed, cache I/O that failed) and
  // corrupt (cached blocks whose bytes failed their CRC, dropped and fetched).
  uint64_t hits = 0, misses = 0, fetched_bytes = 0, errors = 0, corrupt = 0;
};

class CachedBlob;

class BlockCache {
 public:
  // Creates the directory if needed and takes its lock (kBusy if another
  // process has it). Loads the records; a damaged record file is reported
  // (warnings()) and that blob's entries are dropped, never trusted; a
  // damaged record inside a good file drops that record only. Blobs recorded
  // with another block size are dropped too. The cache lives while any
  // CachedBlob from it does; closing it syncs the records not yet synced.
  static Result<std::shared_ptr<BlockCache>> Open(Env* env, BlockCacheOptions opts);
  virtual ~BlockCache() = default;

  // What Open found damaged and dropped, one line each, for the caller's log.
  virtual std::vector<std::string> warnings() = 0;

  // The one CachedBlob of this digest while anyone holds it. `size` must
  // match what the cache recorded for the digest, if anything (else the
  // old entries are dropped: a digest names one content, so a different
  // size means a damaged record; kInvalidArgument while the old size is
  // held). The digest is validated before any file name is made from it.
  virtual Result<std::shared_ptr<CachedBlob>> Blob(const std::string& digest, uint64_t size) = 0;

  virtual std::vector<BlobStats> Stats() = 0;
  virtual uint64_t cached_bytes() = 0;
  virtual uint32_t block_size() const = 0;
  // Evicts unpinned, unused blocks (least recently used first) until at
  // most max_bytes are cached; returns the bytes freed.
  virtual Result<uint64_t> Prune(uint64_t max_bytes) = 0;
  // Drops a blob's blocks and files, pinned or not (not while in use: kBusy;
  // kNotFound if the cache has nothing of it).
  virtual Status Remove(const std::string& digest) = 0;
  // Waits until the cache's threads have nothing to do: every readahead
  // ended, every fetched block kept (or failed). For an owner whose
  // fetchers are about to go away.
  virtual void WaitIdle() = 0;
};

class CachedBlob {
 public:
  virtual ~CachedBlob() = default;
  virtual const std::string& digest() const = 0;
  virtual uint64_t size() const = 0;
  // n bytes at off (off+n <= size), from the cache or through `fetch`.
  virtual Status Read(uint64_t off, size_t n, char* buf, const BlockFetcher& fetch) = 0;
  // Whether every byte of [off, off+n) is cached: present, its record
  // durable (blocks still being kept after a read are waited for). An
  // answer for the moment it is given: the cache's threads may evict the
  // block right after (the keeper of another block does, past the bound).
  virtual bool Cached(uint64_t off, uint64_t n) = 0;
  // Forgets the blocks covering [off, off+n): for a reader that found them
  // bad (a ZFile block whose CRC fails). They are fetched again next time.
  virtual Status Invalidate(uint64_t off, uint64_t n) = 0;
  // A pinned blob's blocks are never evicted (a pull in progress, a
  // hydration's source). Persistent.
  virtual Status SetPinned(bool pinned) = 0;
  // Marks the blob complete after the caller checked its whole content
  // against the digest; kCorruption unless every block is present.
  virtual Status MarkVerified() = 0;
};

}  // namespace ovbd::remote
