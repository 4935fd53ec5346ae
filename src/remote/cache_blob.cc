// Why no reader is ever given bytes a crash could change, and why nothing is
// claimed present before its record is durable:
//
//  1. Bytes handed to a reader come from one of two places. A fetched block
//     is copied to readers from the fetch buffer itself (the fetcher's true
//     bytes), never from the data file. A hit is a pread of a block marked
//     `verified`: either this process wrote those bytes (pwrite completed
//     before the block was marked present, and nothing writes a present
//     block's range: drops and refetches are serialized by the block's
//     flight and its reader count), or, for a block loaded from disk, its
//     whole content was read and matched the CRC32C in its record once since
//     open. A crash of this process kills its readers with it; what the next
//     process serves is again only verified bytes. So a block whose bytes
//     are not what its record says (damaged by the disk or another program,
//     or torn in a way the order below did not foresee) fails its check on
//     first read, is dropped and fetched again.
//  2. A block becomes present (Cached(), cached_bytes, the LRU, MarkVerified)
//     only when the group commit that wrote its record returns: the leader
//     fdatasyncs the data file (every block of the batch was pwritten before
//     its record was queued), then appends the batch's records in one write
//     and fdatasyncs the record file, and only then applies them in memory.
//     Fetches of other blocks join the next batch, so concurrent misses
//     share the syncs. The reader of a fetched block does not wait for any
//     of this: it has the fetcher's bytes, and the keeping (pwrite, then the
//     commit) runs on the cache's threads while the block's flight stays
//     open, so later readers of it copy from the fetch buffer too, and
//     nothing else touches the block's range. A failed commit applies
//     nothing: its blocks stay absent (their bytes were already given to
//     their readers).
//  3. A block's bytes on disk change only by its hole being punched, and
//     that happens only after a durable kDrop record (eviction and
//     Invalidate sync the drop first). Rewriting a block (a refetch) writes
//     the same bytes, since a digest names one content. So a durable kBlock
//     record that no durable kDrop follows always describes intact bytes:
//     what the cache claimed present before a crash is present, and reads
//     back without a fetch, after it; the check on first read is for damage
//     nothing in this order explains (the disk, another program).
//  4. Records are self-checking and each stands alone, so any subset a
//     crash leaves of the unsynced ones (a torn tail, sectors of one write
//     kept out of order) replays to a state no worse than the last synced
//     one: a lost kBlock record loses a block, a lost kDrop record leaves a
//     block whose hole was not punched yet.
//  5. Opening syncs each record file (and data file) before trusting it: a
//     process that died between a write and its fdatasync leaves records
//     the kernel kept but a power cut could still take.
#include "cache_blob.h"

#include <algorithm>
#include <cstring>

#include "ovbd/io/crc32c.h"

namespace ovbd::remote {

using cache_record::Record;

namespace {
// A record file is rewritten when it holds at least this many records and
// more than twice as many as the blob's live state needs.
constexpr uint64_t kCompactMinRecords = 256;

int Log2(uint32_t v) {
  int s = 0;
  while ((uint64_t{1} << s) < v) ++s;
  return s;
}
}  // namespace

CacheBlob::CacheBlob(CacheOwner* owner, std::string digest, uint64_t size, uint32_t block_size,
                     Paths paths, std::unique_ptr<RWFile> data, std::unique_ptr<RWFile> idx,
                     uint64_t idx_end)
    : owner_(owner),
      digest_(std::move(digest)),
      size_(size),
      block_size_(block_size),
      shift_(Log2(block_size)),
      block_count_((size + block_size - 1) / block_size),
      paths_(std::move(paths)),
      data_(std::move(data)),
      idx_(std::move(idx)),
      idx_end_(idx_end) {
  MutexLock l(&mu_);
  blocks_.resize(block_count_);
}

// --- Loading ---

void CacheBlob::Replay(const Record& r) {
  MutexLock l(&mu_);
  switch (r.type) {
    case cache_record::kBlock: {
      Block& k = blocks_[r.block];
      if (!k.present) {
        ++present_;
        present_bytes_ += BlockLen(r.block);
      }
      k.present = true;
      k.verified = false;  // checked on first read
      k.crc = r.data_crc;
      k.stamp = r.stamp;
      break;
    }
    case cache_record::kDrop: {
      Block& k = blocks_[r.block];
      if (k.present) {
        --present_;
        present_bytes_ -= BlockLen(r.block);
      }
      k.present = false;
      verified_ = false;
      break;
    }
    case cache_record::kPin: pinned_ = true; break;
    case cache_record::kUnpin: pinned_ = false; break;
    case cache_record::kVerified: verified_ = true; break;
    default: break;
  }
}

void CacheBlob::FinishReplay(uint64_t records, uint64_t idx_end) {
  MutexLock l(&mu_);
  records_in_file_ = records;
  idx_end_ = idx_end;
  if (present_ != block_count_) verified_ = false;
}

std::vector<std::pair<uint64_t, uint64_t>> CacheBlob::LruSeeds() {
  MutexLock l(&mu_);
  std::vector<std::pair<uint64_t, uint64_t>> out;
  if (pinned_) return out;
  for (uint64_t b = 0; b < block_count_; ++b) {
    if (blocks_[b].present) out.emplace_back(blocks_[b].stamp, b);
  }
  return out;
}

uint64_t CacheBlob::present_bytes() {
  MutexLock l(&mu_);
  return present_bytes_;
}

// --- Reads ---

Status CacheBlob::Read(uint64_t off, size_t n, char* buf, const BlockFetcher& fetch) {
  if (off > size_ || n > size_ - off) {
    return Status::InvalidArgument(digest_ + ": read of " + std::to_string(n) + " bytes at " +
                                   std::to_string(off) + " past the blob's size " +
                                   std::to_string(size_));
  }
  if (n == 0) return Status::OK();
  const uint64_t read_end = off + n;
  {
    // A read that starts in the block the last one ended in, or in the
    // next, continues a sequential stream, which has then covered a number
    // of new blocks. From two on, what lies ahead is fetched before it is
    // asked for, in a window that doubles with each new block (two blocks,
    // four, ...) up to readahead_bytes: a short run of sequential reads (a
    // filesystem's metadata, a small file) fetches little it does not use.
    MutexLock l(&mu_);
    const uint64_t first = off >> shift_;
    const uint64_t last = (read_end - 1) >> shift_;
    if (seq_next_ != UINT64_MAX && (first == seq_next_ || first + 1 == seq_next_)) {
      seq_blocks_ = std::min<uint64_t>(seq_blocks_ + (last + 1 - seq_next_), 64);
    } else {
      seq_blocks_ = 0;
    }
    seq_next_ = last + 1;
    if (seq_blocks_ >= 2 && owner_->readahead_bytes() >= (uint64_t{1} << shift_)) {
      const uint64_t most = owner_->readahead_bytes() >> shift_;
      const uint64_t window = seq_blocks_ > 40 ? most : std::min(most, uint64_t{1} << (seq_blocks_ - 1));
      ReadaheadLocked(last, window, fetch);
    }
  }
  while (n > 0) {
    const uint64_t b = off >> shift_;
    const uint64_t end = off + n;
    // Fast path: the run of verified blocks from b on, read with one pread
    // into the caller's buffer; the lock is held only to count the readers.
    uint64_t last = b;
    bool pinned = false;
    {
      MutexLock l(&mu_);
      while ((last << shift_) < end && blocks_[last].present && blocks_[last].verified) {
        ++blocks_[last].readers;
        ++last;
      }
      hits_ += last - b;
      pinned = pinned_;
    }
    if (last > b) {
      const size_t len = static_cast<size_t>(std::min(end, last << shift_) - off);
      Status s = data_->ReadMapped(off, len, buf);
      {
        MutexLock l(&mu_);
        for (uint64_t k = b; k < last; ++k) --blocks_[k].readers;
        if (drain_waiters_ > 0) cv_.SignalAll();
        if (!s.ok()) ++errors_;
      }
      if (!s.ok()) {
        // The cache's disk failed us: check those blocks again (and fetch
        // them if they cannot be read) rather than fail the read.
        MutexLock l(&mu_);
        for (uint64_t k = b; k < last; ++k) blocks_[k].verified = false;
        continue;
      }
      if (!pinned) owner_->Touch(this, b, last);
      off += len;
      buf += len;
      n -= len;
      continue;
    }
    const size_t len = static_cast<size_t>(std::min<uint64_t>(end, (b + 1) << shift_) - off);
    bool retry = false;
    OVBD_RETURN_IF_ERROR(ReadSlow(b, off, len, read_end, buf, fetch, &retry));
    if (retry) continue;
    off += len;
    buf += len;
    n -= len;
  }
  return Status::OK();
}

Status CacheBlob::ReadSlow(uint64_t b, uint64_t off, size_t n, uint64_t read_end, char* dst,
                           const BlockFetcher& fetch, bool* retry) {
  std::shared_ptr<Flight> f;
  bool lead = false, check = false;
  {
    MutexLock l(&mu_);
    for (;;) {
      auto it = flights_.find(b);
      if (it != flights_.end()) {
        std::shared_ptr<Flight> g = it->second;
        const bool waited = !g->ready;
        cv_.Wait([&] {
          mu_.AssertHeld();
          return g->ready || g->done;
        });
        if (g->ready) {
          // Bytes fetched already (being kept) are a hit; waiting for a
          // fetch is a miss.
          if (g->fetching && waited) {
            ++misses_;
          } else {
            ++hits_;
          }
          f = std::move(g);
          break;
        }
        if (!g->status.ok()) return g->status;  // the fetch we waited for failed
        continue;  // a drop ended, or a readahead failed: look again
      }
      const Block& k = blocks_[b];
      if (k.present && k.verified) {
        *retry = true;
        return Status::OK();
      }
      // Absent, or loaded from disk and not checked yet: this thread leads.
      f = std::make_shared<Flight>();
      flights_.emplace(b, f);
      lead = true;
      check = k.present;
      break;
    }
  }
  if (lead) return Fill(b, f, check, off, n, read_end, dst, fetch);
  // A waiter: the leader's bytes are final once ready, and stay while f does.
  std::memcpy(dst, f->bytes() + (off - (b << shift_)), n);
  return Status::OK();
}

Status CacheBlob::Fill(uint64_t b, const std::shared_ptr<Flight>& f, bool check, uint64_t off,
                       size_t n, uint64_t read_end, char* dst, const BlockFetcher& fetch) {
  const uint64_t start = b << shift_;
  const size_t len = static_cast<size_t>(BlockLen(b));

  if (check) {
    // Only this thread touches the buffer until the flight is ready.
    f->run = std::make_shared<std::vector<char>>(len);
    f->at = 0;
    uint32_t want = 0;
    {
      MutexLock l(&mu_);
      want = blocks_[b].crc;
    }
    const Status rs = data_->ReadMapped(start, len, f->run->data());
    const bool good = rs.ok() && Crc32c(f->run->data(), len) == want;
    bool pinned = false;
    {
      MutexLock l(&mu_);
      if (good) {
        blocks_[b].verified = true;
        ++hits_;
        f->ready = true;
        pinned = pinned_;
        EndFlightLocked(b, f, Status::OK());
      } else {
        // Torn by a crash or damaged on disk: never served. Drop it and fetch.
        ++corrupt_;
        if (!rs.ok()) ++errors_;
        MarkAbsentLocked(b);
        EnqueueLocked(Record{cache_record::kDrop, b, 0, 0});
      }
    }
    if (good) {
      std::memcpy(dst, f->bytes() + (off - start), n);
      if (!pinned) owner_->Touch(this, b, b + 1);
      return Status::OK();
    }
  }

  // The rest of this read's absent blocks come in the same request.
  auto run = std::make_shared<Run>();
  run->first = b;
  run->flights.push_back(f);
  {
    MutexLock l(&mu_);
    ++misses_;
    f->fetching = true;
    ExtendRunLocked(run.get(), std::min(block_count_, ((read_end - 1) >> shift_) + 1));
  }
  OVBD_RETURN_IF_ERROR(FetchRun(run.get(), fetch, /*fail_waiters=*/true));
  std::memcpy(dst, f->bytes() + (off - start), n);

  // Keep it: the reader has its bytes now, so the data write and the record
  // commit (two syncs) run on the cache's threads. This reader waits only
  // while too much already waits to be written: the cache's disk bounds
  // how far fetches run ahead of it. A failure there costs the cache the
  // blocks, not the reader its bytes.
  MutexLock l(&mu_);
  QueueKeepLocked(std::move(run));
  cv_.Wait([&] {
    mu_.AssertHeld();
    return persisting_bytes_ <= kMaxPersistingBytes;
  });
  return Status::OK();
}

void CacheBlob::ExtendRunLocked(Run* run, uint64_t limit) {
  const uint64_t max_blocks = std::max<uint64_t>(1, owner_->fetch_run_bytes() >> shift_);
  uint64_t b = run->first + run->flights.size();
  while (b < limit && run->flights.size() < max_blocks && !blocks_[b].present &&
         flights_.count(b) == 0) {
    auto g = std::make_shared<Flight>();
    g->fetching = true;
    flights_.emplace(b, g);
    run->flights.push_back(std::move(g));
    ++b;
  }
}

Status CacheBlob::FetchRun(Run* run, const BlockFetcher& fetch, bool fail_waiters) {
  const uint64_t start = run->first << shift_;
  const uint64_t count = run->flights.size();
  const uint64_t last = run->first + count - 1;
  const size_t len = static_cast<size_t>((last << shift_) + BlockLen(last) - start);
  run->bytes = std::make_shared<std::vector<char>>(len);
  // Waiters read these only after `ready`, which is set under mu_ below.
  for (uint64_t i = 0; i < count; ++i) {
    run->flights[i]->run = run->bytes;
    run->flights[i]->at = static_cast<size_t>(i << shift_);
  }
  Status fs = fetch(start, len, run->bytes->data());
  if (!fs.ok()) {
    Status e = fs.Annotate(digest_ + ": fetch of block " + std::to_string(run->first) +
                           (count > 1 ? ".." + std::to_string(last) : ""));
    MutexLock l(&mu_);
    ++errors_;
    // A reader's own fetch fails those who waited for it; a failed
    // readahead lets each waiter try for itself.
    for (uint64_t i = 0; i < count; ++i) {
      EndFlightLocked(run->first + i, run->flights[i], fail_waiters ? e : Status::OK());
    }
    return e;
  }
  run->crcs.resize(count);
  for (uint64_t i = 0; i < count; ++i) {
    run->crcs[i] = Crc32c(run->bytes->data() + (i << shift_), BlockLen(run->first + i));
  }
  MutexLock l(&mu_);
  fetched_bytes_ += len;
  persisting_bytes_ += len;
  for (auto& g : run->flights) g->ready = true;
  cv_.SignalAll();
  return Status::OK();
}

void CacheBlob::QueueKeepLocked(std::shared_ptr<Run> run) {
  keep_queue_.push_back(std::move(run));
  if (keeper_) return;
  keeper_ = true;
  owner_->Post([self = shared_from_this()] { self->Keep(); });
}

void CacheBlob::Keep() {
  for (;;) {
    std::vector<std::shared_ptr<Run>> runs;
    {
      MutexLock l(&mu_);
      if (keep_queue_.empty()) {
        keeper_ = false;
        return;
      }
      runs.assign(keep_queue_.begin(), keep_queue_.end());
      keep_queue_.clear();
    }
    // Data first, then the records of every run through one group commit.
    std::vector<Status> ws(runs.size());
    for (size_t i = 0; i < runs.size(); ++i) {
      const Run& r = *runs[i];
      ws[i] = data_->WriteAt(r.first << shift_, r.bytes->data(), r.bytes->size());
    }
    std::vector<bool> kept(runs.size(), false);
    bool pinned = false;
    {
      MutexLock l(&mu_);
      std::shared_ptr<Batch> batch;
      for (size_t i = 0; i < runs.size(); ++i) {
        const Run& r = *runs[i];
        persisting_bytes_ -= r.bytes->size();
        if (!ws[i].ok()) continue;
        for (uint64_t k = 0; k < r.flights.size(); ++k) {
          batch = EnqueueLocked(Record{cache_record::kBlock, r.first + k, r.crcs[k], 0});
        }
      }
      cv_.SignalAll();  // readers held back by persisting_bytes_
      const Status cs = batch ? AwaitLocked(batch) : Status::OK();
      for (size_t i = 0; i < runs.size(); ++i) {
        const Run& r = *runs[i];
        kept[i] = ws[i].ok() && cs.ok();
        if (!kept[i]) ++errors_;
        for (uint64_t k = 0; k < r.flights.size(); ++k) {
          EndFlightLocked(r.first + k, r.flights[k], Status::OK());
        }
      }
      pinned = pinned_;
    }
    bool any = false;
    for (size_t i = 0; i < runs.size(); ++i) {
      if (!kept[i]) continue;
      any = true;
      if (!pinned) owner_->Touch(this, runs[i]->first, runs[i]->first + runs[i]->flights.size());
    }
    if (any) owner_->AfterInsert();
  }
}

void CacheBlob::ReadaheadLocked(uint64_t last, uint64_t window, const BlockFetcher& fetch) {
  const uint64_t run_blocks =
      std::min(window, std::max<uint64_t>(1, owner_->fetch_run_bytes() >> shift_));
  const uint64_t horizon = std::min(block_count_, last + 1 + window);
  for (uint64_t b = last + 1; b < horizon; ++b) {
    if (readaheads_ >= kMaxReadaheads || persisting_bytes_ > kMaxPersistingBytes) return;
    if (blocks_[b].present || flights_.count(b) != 0) continue;
    // A run starts only where a whole one fits before the horizon (or the
    // blob ends there): the horizon moves a block per block read, and
    // one-block requests would pay a request's latency for each.
    if (b + run_blocks > horizon && horizon < block_count_) return;
    auto run = std::make_shared<Run>();
    run->first = b;
    auto f = std::make_shared<Flight>();
    f->fetching = true;
    flights_.emplace(b, f);
    run->flights.push_back(std::move(f));
    ExtendRunLocked(run.get(), std::min(block_count_, b + run_blocks));
    b += run->flights.size() - 1;
    ++readaheads_;
    owner_->Post([self = shared_from_this(), run, fetch] {
      const Status s = self->FetchRun(run.get(), fetch, /*fail_waiters=*/false);
      MutexLock l(&self->mu_);
      --self->readaheads_;
      if (s.ok()) self->QueueKeepLocked(run);
    });
  }
}

void CacheBlob::EndFlightLocked(uint64_t b, const std::shared_ptr<Flight>& f, Status s) {
  f->status = std::move(s);
  f->done = true;
  flights_.erase(b);
  cv_.SignalAll();
}

void CacheBlob::MarkAbsentLocked(uint64_t b) {
  Block& k = blocks_[b];
  if (!k.present) return;
  k.present = false;
  k.verified = false;
  --present_;
  const uint64_t len = BlockLen(b);
  present_bytes_ -= len;
  verified_ = false;
  owner_->AddCached(-static_cast<int64_t>(len));
}

bool CacheBlob::Cached(uint64_t off, uint64_t n) {
  if (off > size_ || n > size_ - off) return false;
  if (n == 0) return true;
  MutexLock l(&mu_);
  WaitKeptLocked(off >> shift_, ((off + n - 1) >> shift_) + 1);
  for (uint64_t b = off >> shift_; (b << shift_) < off + n; ++b) {
    if (!blocks_[b].present) return false;
  }
  return true;
}

Status CacheBlob::Invalidate(uint64_t off, uint64_t n) {
  if (off > size_ || n > size_ - off) {
    return Status::InvalidArgument(digest_ + ": invalidate past the blob's size");
  }
  for (uint64_t b = off >> shift_; (b << shift_) < off + n; ++b) {
    std::shared_ptr<Flight> f;
    {
      MutexLock l(&mu_);
      // Wait out whoever fetches, checks or reads the block now (bounded by
      // the fetcher's timeouts and by one pread).
      for (;;) {
        auto it = flights_.find(b);
        if (it != flights_.end()) {
          std::shared_ptr<Flight> g = it->second;
          cv_.Wait([&] {
            mu_.AssertHeld();
            return g->done;
          });
          continue;
        }
        if (blocks_[b].readers > 0) {
          ++drain_waiters_;
          cv_.Wait();
          --drain_waiters_;
          continue;
        }
        break;
      }
      if (!blocks_[b].present) continue;
      f = std::make_shared<Flight>();
      f->fill = false;
      flights_.emplace(b, f);
      MarkAbsentLocked(b);
      // The drop is durable before the hole is punched (see the top).
      Status s = AwaitLocked(EnqueueLocked(Record{cache_record::kDrop, b, 0, 0}));
      if (!s.ok()) {
        ++errors_;
        EndFlightLocked(b, f, Status::OK());
        return s.Annotate(digest_ + ": invalidate");
      }
    }
    Status s = data_->PunchHole(b << shift_, BlockLen(b));
    MutexLock l(&mu_);
    if (!s.ok()) ++errors_;
    EndFlightLocked(b, f, Status::OK());
  }
  return Status::OK();
}

// --- Blob-wide state ---

Status CacheBlob::SetPinned(bool pinned) {
  std::vector<uint64_t> back;
  {
    MutexLock l(&mu_);
    if (pinned_ == pinned) return Status::OK();
    // In memory first: no eviction can slip in before the record is durable.
    pinned_ = pinned;
    Status s = AwaitLocked(EnqueueLocked(
        Record{pinned ? cache_record::kPin : cache_record::kUnpin, 0, 0, 0}));
    if (!s.ok()) {
      pinned_ = !pinned;
      return s.Annotate(digest_ + ": pin");
    }
    if (!pinned) {
      // Its blocks come back into the LRU, oldest record first.
      std::vector<std::pair<uint64_t, uint64_t>> seeds;
      for (uint64_t b = 0; b < block_count_; ++b) {
        if (blocks_[b].present) seeds.emplace_back(blocks_[b].stamp, b);
      }
      std::sort(seeds.begin(), seeds.end());
      for (const auto& [stamp, b] : seeds) back.push_back(b);
    }
  }
  if (!back.empty()) {
    owner_->TouchList(this, back);
    owner_->AfterInsert();
  }
  return Status::OK();
}

void CacheBlob::WaitKeptLocked(uint64_t first, uint64_t last) {
  // A block whose reader already has its bytes is being kept: its answer
  // comes when its record is durable (or failed).
  cv_.Wait([&] {
    mu_.AssertHeld();
    for (uint64_t b = first; b < last; ++b) {
      auto it = flights_.find(b);
      if (it != flights_.end() && it->second->fill && it->second->ready) return false;
    }
    return true;
  });
}

Status CacheBlob::MarkVerified() {
  MutexLock l(&mu_);
  WaitKeptLocked(0, block_count_);  // the caller read every block: all of them count
  if (present_ != block_count_) {
    return Status::Corruption(digest_ + ": marked verified with " + std::to_string(present_) +
                              " of " + std::to_string(block_count_) + " blocks cached");
  }
  if (verified_) return Status::OK();
  verified_ = true;
  Status s = AwaitLocked(EnqueueLocked(Record{cache_record::kVerified, 0, 0, 0}));
  if (!s.ok()) verified_ = false;
  return s;
}

BlobStats CacheBlob::Stats() {
  MutexLock l(&mu_);
  BlobStats st;
  st.digest = digest_;
  st.size = size_;
  st.cached_bytes = present_bytes_;
  st.pinned = pinned_;
  st.complete = verified_ && present_ == block_count_;
  st.hits = hits_;
  st.misses = misses_;
  st.fetched_bytes = fetched_bytes_;
  st.errors = errors_;
  st.corrupt = corrupt_;
  return st;
}

void CacheBlob::Detach() {
  MutexLock l(&mu_);
  for (uint64_t b = 0; b < block_count_; ++b) MarkAbsentLocked(b);
  detached_ = true;
}

// --- Eviction ---

CacheBlob::EvictTry CacheBlob::TryBeginEvict(uint64_t b, uint64_t* bytes) {
  MutexLock l(&mu_);
  if (b >= block_count_ || !blocks_[b].present || pinned_) return EvictTry::kStale;
  if (blocks_[b].readers > 0 || flights_.count(b) != 0) return EvictTry::kBusy;
  // A drop flight: readers of the block wait until the hole is punched, so
  // a refetch can never be punched away.
  auto f = std::make_shared<Flight>();
  f->fill = false;
  flights_.emplace(b, f);
  MarkAbsentLocked(b);
  EnqueueLocked(Record{cache_record::kDrop, b, 0, 0});
  *bytes = BlockLen(b);
  return EvictTry::kStarted;
}

void CacheBlob::FinishEvict(uint64_t b, bool punch) {
  Status s = punch ? data_->PunchHole(b << shift_, BlockLen(b)) : Status::OK();
  MutexLock l(&mu_);
  if (!s.ok()) ++errors_;
  auto it = flights_.find(b);
  if (it != flights_.end()) EndFlightLocked(b, std::shared_ptr<Flight>(it->second), Status::OK());
}

// --- Group commit ---

std::shared_ptr<CacheBlob::Batch> CacheBlob::EnqueueLocked(Record r) {
  if (!open_batch_) open_batch_ = std::make_shared<Batch>();
  r.stamp = owner_->NextStamp();
  open_batch_->records.push_back(r);
  return open_batch_;
}

Status CacheBlob::Flush() {
  MutexLock l(&mu_);
  for (;;) {
    if (open_batch_) {
      std::shared_ptr<Batch> b = open_batch_;
      return AwaitLocked(b);
    }
    if (!committing_) return Status::OK();
    cv_.Wait();
  }
}

Status CacheBlob::AwaitLocked(const std::shared_ptr<Batch>& mine) {
  while (!mine->done) {
    if (committing_) {
      cv_.Wait();
      continue;
    }
    std::shared_ptr<Batch> batch = std::move(open_batch_);
    open_batch_.reset();
    if (detached_) {
      // Removed: nothing of it is kept, so there is nothing to record.
      batch->done = true;
      cv_.SignalAll();
      continue;
    }
    // Lead: whatever is queued now (mine among it) goes out in one commit.
    committing_ = true;
    mu_.Unlock();
    Status s = WriteBatch(*batch);
    mu_.Lock();
    // Removed while the batch was being written: its blocks are already
    // absent and counted out, and a compaction would write by path, where
    // another blob's record file may stand now.
    const bool live = !detached_;
    if (s.ok() && live) {
      ApplyLocked(*batch);
      records_in_file_ += batch->records.size();
    }
    batch->status = s;
    batch->done = true;
    cv_.SignalAll();
    if (s.ok() && live && NeedCompactionLocked()) {
      uint64_t records = 0;
      std::string image = CompactedImageLocked(&records);
      mu_.Unlock();
      Status cs = WriteCompacted(image);
      mu_.Lock();
      // A failed compaction keeps the file it had (or the new one, complete).
      if (cs.ok()) records_in_file_ = records;
    }
    committing_ = false;
    cv_.SignalAll();
  }
  return mine->status;
}

void CacheBlob::ApplyLocked(const Batch& batch) {
  for (const Record& r : batch.records) {
    if (r.type != cache_record::kBlock) continue;  // the others were applied when queued
    Block& k = blocks_[r.block];
    if (!k.present) {
      ++present_;
      present_bytes_ += BlockLen(r.block);
      owner_->AddCached(static_cast<int64_t>(BlockLen(r.block)));
    }
    k.present = true;
    k.verified = true;  // written by this process, from the fetched bytes
    k.crc = r.data_crc;
    k.stamp = r.stamp;
  }
}

Status CacheBlob::WriteBatch(const Batch& batch) {
  Env* env = owner_->env();
  if (!idx_) {
    // A compaction renamed its file in but could not open it.
    OVBD_ASSIGN_OR_RETURN(idx_, env->OpenRW(paths_.idx, false));
  }
  if (dir_unsynced_) {
    OVBD_RETURN_IF_ERROR(env->SyncDir(DirName(paths_.idx)));
    dir_unsynced_ = false;
  }
  bool data = false;
  std::string bytes(batch.records.size() * cache_record::kRecordSize, '\0');
  for (size_t i = 0; i < batch.records.size(); ++i) {
    cache_record::EncodeRecord(batch.records[i], bytes.data() + i * cache_record::kRecordSize);
    data = data || batch.records[i].type == cache_record::kBlock;
  }
  if (data) {
    OVBD_RETURN_IF_ERROR(env->CrashPoint("block_cache.before_data_sync"));
    OVBD_RETURN_IF_ERROR(data_->Sync());
  }
  OVBD_RETURN_IF_ERROR(env->CrashPoint("block_cache.before_records"));
  OVBD_RETURN_IF_ERROR(idx_->WriteAt(idx_end_, bytes.data(), bytes.size()));
  OVBD_RETURN_IF_ERROR(idx_->Sync());
  idx_end_ += bytes.size();
  return Status::OK();
}

bool CacheBlob::NeedCompactionLocked() const {
  const uint64_t live = present_ + 2;  // a block record each, a pin and a verified record
  return records_in_file_ >= kCompactMinRecords && records_in_file_ > 2 * live;
}

std::string CacheBlob::CompactedImageLocked(uint64_t* records) {
  std::string image(cache_record::kHeaderSize, '\0');
  cache_record::EncodeHeader(cache_record::Header{block_size_, size_, digest_}, image.data());
  auto put = [&](const Record& r) {
    char rec[cache_record::kRecordSize];
    cache_record::EncodeRecord(r, rec);
    image.append(rec, sizeof(rec));
    ++*records;
  };
  *records = 0;
  if (pinned_) put(Record{cache_record::kPin, 0, 0, owner_->NextStamp()});
  for (uint64_t b = 0; b < block_count_; ++b) {
    const Block& k = blocks_[b];
    if (k.present) put(Record{cache_record::kBlock, b, k.crc, k.stamp});
  }
  if (verified_ && present_ == block_count_) {
    put(Record{cache_record::kVerified, 0, 0, owner_->NextStamp()});
  }
  return image;
}

Status CacheBlob::WriteCompacted(const std::string& image) {
  Env* env = owner_->env();
  OVBD_RETURN_IF_ERROR(env->CrashPoint("block_cache.before_compaction"));
  bool renamed = false;
  Status s = env->WriteFileAtomic(paths_.idx, image, &renamed);
  if (!renamed) return s;  // the old file, still open, stays in use
  // The new file is in place: append to it from now on. If its directory
  // entry may not be durable yet, the next commit syncs the directory first.
  idx_end_ = image.size();
  if (!s.ok()) dir_unsynced_ = true;
  auto f = env->OpenRW(paths_.idx, false);
  if (!f.ok()) {
    idx_.reset();
    return f.status();
  }
  idx_ = std::move(f).value();
  return s;
}

}  // namespace ovbd::remote
