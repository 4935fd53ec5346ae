// BlockCache: the directory, its lock, the blobs in it and the LRU over all
// their blocks. Each blob's own state and records are CacheBlob's
// (cache_blob.cc, where the crash-safety argument is).
//
// Locks, in the order they may nest: the cache's mu_ (the table of blobs),
// then evict_mu_ (one evictor at a time), then lru_mu_, then a blob's own
// mutex. A hit takes its blob's mutex and, after releasing it, lru_mu_
// alone; only an evictor holds lru_mu_ while asking a blob about a block.
#include "ovbd/remote/block_cache.h"

#include <algorithm>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <atomic>
#include <map>
#include <utility>

#include "cache_blob.h"
#include "cache_lru.h"
#include "cache_record.h"
#include "ovbd/io/mutex.h"
#include "ovbd/remote/blob_ref.h"

namespace ovbd::remote {

namespace {

constexpr char kPrefix[] = "sha256-";
constexpr size_t kPrefixLen = sizeof(kPrefix) - 1;
constexpr size_t kHexLen = 64;

// "sha256:HEX" -> "sha256-HEX" (after ValidateDigest).
std::string FileStem(const std::string& digest) { return kPrefix + digest.substr(7); }

// The digest named by a file "sha256-HEX<suffix>", or "" when the name is
// not one of ours.
std::string DigestOfName(const std::string& name, std::string_view suffix) {
  if (name.size() != kPrefixLen + kHexLen + suffix.size()) return "";
  if (name.compare(0, kPrefixLen, kPrefix) != 0) return "";
  if (name.compare(kPrefixLen + kHexLen, suffix.size(), suffix) != 0) return "";
  std::string digest = "sha256:" + name.substr(kPrefixLen, kHexLen);
  return ValidateDigest(digest).ok() ? digest : "";
}

bool EndsWith(const std::string& s, std::string_view tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

class BlockCacheImpl;

// The CachedBlob handed out: keeps the cache alive and tells it whether
// anyone outside holds the blob (Remove refuses then).
class BlobHandle final : public CachedBlob {
 public:
  BlobHandle(std::shared_ptr<BlockCache> cache, std::shared_ptr<CacheBlob> blob)
      : cache_(std::move(cache)), blob_(std::move(blob)) {}
  const std::string& digest() const override { return blob_->digest(); }
  uint64_t size() const override { return blob_->size(); }
  Status Read(uint64_t off, size_t n, char* buf, const BlockFetcher& fetch) override {
    return blob_->Read(off, n, buf, fetch);
  }
  bool Cached(uint64_t off, uint64_t n) override { return blob_->Cached(off, n); }
  Status Invalidate(uint64_t off, uint64_t n) override { return blob_->Invalidate(off, n); }
  Status SetPinned(bool pinned) override { return blob_->SetPinned(pinned); }
  Status MarkVerified() override { return blob_->MarkVerified(); }

 private:
  const std::shared_ptr<BlockCache> cache_;
  const std::shared_ptr<CacheBlob> blob_;
};

class BlockCacheImpl final : public BlockCache,
                             public CacheOwner,
                             public std::enable_shared_from_this<BlockCacheImpl> {
 public:
  BlockCacheImpl(Env* env, BlockCacheOptions opts, std::unique_ptr<FileLock> lock)
      : env_(env),
        opts_(std::move(opts)),
        blobs_dir_(JoinPath(opts_.dir, "blobs")),
        lock_(std::move(lock)),
        pool_(std::max<uint32_t>(1, opts_.threads)) {}

  ~BlockCacheImpl() override {
    // Readaheads and blocks being kept finish first (their fetches are
    // bounded by the fetcher's timeouts); then drop records of evictions
    // may still be queued: make them durable.
    pool_.join();
    MutexLock l(&mu_);
    for (auto& [digest, e] : entries_) (void)e.blob->Flush();
  }

  Status Load();

  std::vector<std::string> warnings() override {
    MutexLock l(&mu_);
    return warnings_;
  }
  Result<std::shared_ptr<CachedBlob>> Blob(const std::string& digest, uint64_t size) override;
  std::vector<BlobStats> Stats() override;
  uint64_t cached_bytes() override { return cached_.load(std::memory_order_relaxed); }
  uint32_t block_size() const override { return opts_.block_size; }
  uint64_t max_bytes() const { return opts_.max_bytes; }
  Result<uint64_t> Prune(uint64_t max_bytes) override;
  Status Remove(const std::string& digest) override;
  void WaitIdle() override {
    MutexLock l(&tasks_mu_);
    tasks_cv_.Wait([&] {
      tasks_mu_.AssertHeld();
      return tasks_ == 0;
    });
  }

  // --- CacheOwner ---
  void Post(std::function<void()> task) override {
    {
      MutexLock l(&tasks_mu_);
      ++tasks_;
    }
    boost::asio::post(pool_, [this, task = std::move(task)] {
      task();
      MutexLock l(&tasks_mu_);
      if (--tasks_ == 0) tasks_cv_.SignalAll();
    });
  }
  uint64_t readahead_bytes() const override { return opts_.readahead_bytes; }
  uint64_t fetch_run_bytes() const override { return opts_.fetch_run_bytes; }
  Env* env() override { return env_; }
  uint64_t NextStamp() override { return stamp_.fetch_add(1, std::memory_order_relaxed); }
  void AddCached(int64_t delta) override {
    cached_.fetch_add(static_cast<uint64_t>(delta), std::memory_order_relaxed);
  }
  void Touch(CacheBlob* blob, uint64_t first, uint64_t last) override {
    MutexLock l(&lru_mu_);
    for (uint64_t b = first; b < last; ++b) lru_.Touch(BlockLru::Key{blob, b});
  }
  void TouchList(CacheBlob* blob, const std::vector<uint64_t>& blocks) override {
    MutexLock l(&lru_mu_);
    for (uint64_t b : blocks) lru_.Touch(BlockLru::Key{blob, b});
  }
  void AfterInsert() override {
    // Past the bound, evict a little further (1/32 of it, in whole blocks)
    // so that each eviction's record syncs serve many insertions.
    if (cached_bytes() <= opts_.max_bytes) return;
    const uint64_t slack = opts_.max_bytes / 32 / opts_.block_size * opts_.block_size;
    (void)EvictDown(opts_.max_bytes - slack);
  }

 private:
  struct Entry {
    std::shared_ptr<CacheBlob> blob;
    std::weak_ptr<CachedBlob> handle;  // the one handle out there, if any
  };

  CacheBlob::Paths PathsOf(const std::string& digest) const {
    const std::string stem = JoinPath(blobs_dir_, FileStem(digest));
    return CacheBlob::Paths{stem + ".data", stem + ".idx"};
  }
  // Opens a blob recorded in the directory; an error means its files are
  // unusable (the caller removes them).
  Result<std::shared_ptr<CacheBlob>> LoadBlob(const std::string& digest, uint64_t* max_stamp,
                                              std::vector<std::string>* warnings);
  Result<std::shared_ptr<CacheBlob>> CreateBlob(const std::string& digest, uint64_t size);
  void RemoveFiles(const CacheBlob::Paths& p);
  void WarnLocked(std::string w) REQUIRES(mu_) { warnings_.push_back(std::move(w)); }
  // Forgets a blob that nobody holds: its LRU entries, its bytes, its files.
  void DropLocked(std::map<std::string, Entry>::iterator it) REQUIRES(mu_);
  // Evicts least recently used blocks until at most `target` bytes are
  // cached or nothing more can go; returns the bytes freed.
  uint64_t EvictDown(uint64_t target);

  Env* const env_;
  const BlockCacheOptions opts_;
  const std::string blobs_dir_;
  const std::unique_ptr<FileLock> lock_;
  std::atomic<uint64_t> cached_{0};
  std::atomic<uint64_t> stamp_{1};

  Mutex mu_;
  std::map<std::string, Entry> entries_ GUARDED_BY(mu_);
  std::vector<std::string> warnings_ GUARDED_BY(mu_);
  Mutex evict_mu_;
  Mutex lru_mu_;
  BlockLru lru_ GUARDED_BY(lru_mu_);
  // Tasks posted and not finished (WaitIdle); a leaf lock.
  Mutex tasks_mu_;
  CondVar tasks_cv_{&tasks_mu_};
  uint64_t tasks_ GUARDED_BY(tasks_mu_) = 0;
  // Last: its threads start once everything they may touch exists.
  boost::asio::thread_pool pool_;
};

Status BlockCacheImpl::Load() {
  OVBD_ASSIGN_OR_RETURN(std::vector<std::string> names, env_->ListDir(blobs_dir_));
  std::sort(names.begin(), names.end());
  uint64_t max_stamp = 0;
  std::vector<std::pair<uint64_t, BlockLru::Key>> seeds;
  std::vector<std::string> warnings;
  std::map<std::string, Entry> loaded;
  for (const std::string& name : names) {
    const std::string path = JoinPath(blobs_dir_, name);
    if (EndsWith(name, ".tmp")) {
      (void)env_->Remove(path);  // an interrupted creation or compaction
      continue;
    }
    if (std::string d = DigestOfName(name, ".data"); !d.empty()) {
      if (!env_->Exists(PathsOf(d).idx)) (void)env_->Remove(path);  // no record: nothing present
      continue;
    }
    const std::string digest = DigestOfName(name, ".idx");
    if (digest.empty()) continue;  // not ours
    auto blob = LoadBlob(digest, &max_stamp, &warnings);
    if (!blob.ok()) {
      warnings.push_back(blob.status().ToString() + " (its cached blocks were dropped)");
      RemoveFiles(PathsOf(digest));
      continue;
    }
    cached_.fetch_add(blob.value()->present_bytes(), std::memory_order_relaxed);
    for (const auto& [stamp, b] : blob.value()->LruSeeds()) {
      seeds.emplace_back(stamp, BlockLru::Key{blob.value().get(), b});
    }
    loaded.emplace(digest, Entry{std::move(blob).value(), {}});
  }
  stamp_.store(max_stamp + 1, std::memory_order_relaxed);
  std::stable_sort(seeds.begin(), seeds.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  {
    MutexLock l(&lru_mu_);
    for (const auto& [stamp, key] : seeds) lru_.Touch(key);
  }
  // Likewise the names: a creation or compaction whose directory sync a
  // crash cut off.
  OVBD_RETURN_IF_ERROR(env_->SyncDir(blobs_dir_));
  MutexLock l(&mu_);
  entries_ = std::move(loaded);
  for (std::string& w : warnings) WarnLocked(std::move(w));
  return Status::OK();
}

Result<std::shared_ptr<CacheBlob>> BlockCacheImpl::LoadBlob(const std::string& digest,
                                                            uint64_t* max_stamp,
                                                            std::vector<std::string>* warnings) {
  const CacheBlob::Paths paths = PathsOf(digest);
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> idx, env_->OpenRW(paths.idx, false));
  if (idx->Size() < cache_record::kHeaderSize) {
    return Status::Corruption(paths.idx + ": record file shorter than its header");
  }
  char hdr[cache_record::kHeaderSize];
  OVBD_RETURN_IF_ERROR(idx->ReadExact(0, sizeof(hdr), hdr));
  cache_record::Header h;
  OVBD_RETURN_IF_ERROR(cache_record::DecodeHeader(hdr, paths.idx, &h));
  if (h.digest != digest) {
    return Status::Corruption(paths.idx + ": header names another digest");
  }
  if (h.block_size != opts_.block_size) {
    return Status::NotSupported(paths.idx + ": recorded with block size " +
                                std::to_string(h.block_size) + ", the cache uses " +
                                std::to_string(opts_.block_size));
  }
  auto data = env_->OpenRW(paths.data, false);
  if (!data.ok()) return data.status().Annotate(paths.idx + ": its data file");
  if (data.value()->Size() != h.blob_size) {
    // Shorter: the blocks past its end fail their check and are fetched
    // again. Longer: nothing of ours is there.
    OVBD_RETURN_IF_ERROR(data.value()->Truncate(h.blob_size));
  }
  RWFile* idx_file = idx.get();
  RWFile* blob_data = data.value().get();
  auto blob = std::make_shared<CacheBlob>(this, digest, h.blob_size, h.block_size, paths,
                                          std::move(data).value(), std::move(idx), 0);
  OVBD_ASSIGN_OR_RETURN(cache_record::ScanResult scan,
                        cache_record::ReadIndex(*idx_file, [&](const cache_record::Record& r) {
                          blob->Replay(r);
                          *max_stamp = std::max(*max_stamp, r.stamp);
                        }));
  if (scan.bad > 0) {
    warnings->push_back(paths.idx + ": " + std::to_string(scan.bad) + " damaged records dropped");
  }
  // A torn tail is cut off so new records follow the last good one.
  if (idx_file->Size() > scan.valid_end) OVBD_RETURN_IF_ERROR(idx_file->Truncate(scan.valid_end));
  // A process that died between writing and syncing leaves records (and
  // data) that the kernel kept but a power cut could still take: make them
  // durable before claiming what they say.
  OVBD_RETURN_IF_ERROR(blob_data->Sync());
  OVBD_RETURN_IF_ERROR(idx_file->Sync());
  blob->FinishReplay(scan.good, scan.valid_end);
  return blob;
}

Result<std::shared_ptr<CacheBlob>> BlockCacheImpl::CreateBlob(const std::string& digest,
                                                              uint64_t size) {
  const CacheBlob::Paths paths = PathsOf(digest);
  // Data file first (sized, synced), then the record file, atomically, whose
  // directory sync makes both names durable: a record file never names a
  // data file that a crash could take away.
  if (env_->Exists(paths.data)) OVBD_RETURN_IF_ERROR(env_->Remove(paths.data));
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> data, env_->OpenRW(paths.data, true));
  Status s = data->Truncate(size);
  if (s.ok()) s = data->Sync();
  if (s.ok()) {
    std::string hdr(cache_record::kHeaderSize, '\0');
    cache_record::EncodeHeader(cache_record::Header{opts_.block_size, size, digest}, hdr.data());
    s = env_->WriteFileAtomic(paths.idx, hdr);
  }
  Result<std::unique_ptr<RWFile>> idx = s.ok() ? env_->OpenRW(paths.idx, false) : Result<std::unique_ptr<RWFile>>(s);
  if (!idx.ok()) {
    RemoveFiles(paths);
    return idx.status().Annotate("block cache: " + digest);
  }
  auto blob = std::make_shared<CacheBlob>(this, digest, size, opts_.block_size, paths,
                                          std::move(data), std::move(idx).value(), 0);
  blob->FinishReplay(0, cache_record::kHeaderSize);
  return blob;
}

void BlockCacheImpl::RemoveFiles(const CacheBlob::Paths& p) {
  // The record first: data without a record is an orphan that the next
  // open removes; a record without its data is dropped with a warning.
  (void)env_->Remove(p.idx);
  (void)env_->Remove(p.data);
  (void)env_->SyncDir(blobs_dir_);
}

void BlockCacheImpl::DropLocked(std::map<std::string, Entry>::iterator it) {
  std::shared_ptr<CacheBlob> blob = it->second.blob;
  {
    // No evictor can pick one of its blocks after this.
    MutexLock l(&lru_mu_);
    lru_.EraseBlob(blob.get(), blob->block_count());
  }
  blob->Detach();
  entries_.erase(it);
  RemoveFiles(blob->paths());
}

Result<std::shared_ptr<CachedBlob>> BlockCacheImpl::Blob(const std::string& digest,
                                                        uint64_t size) {
  OVBD_RETURN_IF_ERROR(ValidateDigest(digest));
  if (size / opts_.block_size >= cache_record::kMaxBlocks) {
    return Status::TooLarge(digest + ": blob of " + std::to_string(size) +
                            " bytes has too many blocks for the cache");
  }
  MutexLock l(&mu_);
  auto it = entries_.find(digest);
  if (it != entries_.end()) {
    Entry& e = it->second;
    if (e.blob->size() == size) {
      if (std::shared_ptr<CachedBlob> h = e.handle.lock()) return h;
      auto h = std::make_shared<BlobHandle>(shared_from_this(), e.blob);
      e.handle = h;
      return std::shared_ptr<CachedBlob>(std::move(h));
    }
    if (!e.handle.expired()) {
      return Status::InvalidArgument(digest + ": in use with size " +
                                     std::to_string(e.blob->size()) + ", asked for " +
                                     std::to_string(size));
    }
    WarnLocked(digest + ": recorded with size " + std::to_string(e.blob->size()) + ", now " +
               std::to_string(size) + ": its cached blocks were dropped");
    DropLocked(it);
  }
  OVBD_ASSIGN_OR_RETURN(std::shared_ptr<CacheBlob> blob, CreateBlob(digest, size));
  auto h = std::make_shared<BlobHandle>(shared_from_this(), blob);
  entries_.emplace(digest, Entry{std::move(blob), h});
  return std::shared_ptr<CachedBlob>(std::move(h));
}

std::vector<BlobStats> BlockCacheImpl::Stats() {
  std::vector<std::shared_ptr<CacheBlob>> blobs;
  {
    MutexLock l(&mu_);
    for (const auto& [digest, e] : entries_) blobs.push_back(e.blob);
  }
  std::vector<BlobStats> out;
  out.reserve(blobs.size());
  for (const auto& b : blobs) out.push_back(b->Stats());
  return out;
}

Result<uint64_t> BlockCacheImpl::Prune(uint64_t max_bytes) { return EvictDown(max_bytes); }

Status BlockCacheImpl::Remove(const std::string& digest) {
  OVBD_RETURN_IF_ERROR(ValidateDigest(digest));
  MutexLock l(&mu_);
  auto it = entries_.find(digest);
  if (it == entries_.end()) return Status::NotFound(digest + ": not in the block cache");
  if (!it->second.handle.expired()) return Status::Busy(digest + ": in use, not removed from the block cache");
  DropLocked(it);
  return Status::OK();
}

uint64_t BlockCacheImpl::EvictDown(uint64_t target) {
  MutexLock e(&evict_mu_);
  struct Victim {
    std::shared_ptr<CacheBlob> blob;
    uint64_t block;
  };
  std::vector<Victim> victims;
  uint64_t freed = 0;
  while (cached_bytes() > target) {
    Victim v;
    uint64_t bytes = 0;
    {
      MutexLock l(&lru_mu_);
      lru_.VisitOldest([&](const BlockLru::Key& k) {
        switch (k.blob->TryBeginEvict(k.block, &bytes)) {
          case CacheBlob::EvictTry::kStarted:
            v = Victim{k.blob->shared_from_this(), k.block};
            return BlockLru::Visit::kEraseAndStop;
          case CacheBlob::EvictTry::kStale: return BlockLru::Visit::kErase;
          case CacheBlob::EvictTry::kBusy: break;
        }
        return BlockLru::Visit::kKeep;
      });
    }
    // Everything left is pinned or in use: the cache stays past its bound
    // rather than failing reads.
    if (!v.blob) break;
    victims.push_back(std::move(v));
    freed += bytes;
  }
  // The drop records durable first (one commit per blob), then the holes:
  // a durable record never claims a punched block. Where the commit failed
  // the bytes stay (the block is gone all the same).
  std::vector<std::pair<CacheBlob*, bool>> synced;
  for (const Victim& v : victims) {
    auto it = std::find_if(synced.begin(), synced.end(),
                           [&](const auto& p) { return p.first == v.blob.get(); });
    if (it == synced.end()) {
      synced.emplace_back(v.blob.get(), v.blob->Flush().ok());
      it = std::prev(synced.end());
    }
    v.blob->FinishEvict(v.block, it->second);
  }
  return freed;
}

Status MakeDir(Env* env, const std::string& path) {
  if (env->Exists(path)) return Status::OK();
  Status s = env->CreateDir(path);
  if (!s.ok() && s.code() != Status::Code::kExists) return s;
  // Durable before anything inside it may be claimed durable.
  return env->SyncDir(DirName(NormalizePath(path)));
}

// `path` and every missing directory above it, top down, each made
// durable: the default ~/.cache/ovbdfs of a user who has no ~/.cache yet
// (XDG: made when first needed).
Status MakeDirs(Env* env, const std::string& path) {
  std::vector<std::string> missing;
  for (std::string p = NormalizePath(path); !env->Exists(p); p = DirName(p)) {
    missing.push_back(p);
    if (DirName(p) == p) break;
  }
  for (auto it = missing.rbegin(); it != missing.rend(); ++it) OVBD_RETURN_IF_ERROR(MakeDir(env, *it));
  return Status::OK();
}

}  // namespace

Result<std::shared_ptr<BlockCache>> BlockCache::Open(Env* env, BlockCacheOptions opts) {
  if (opts.dir.empty()) return Status::InvalidArgument("block cache: no directory given");
  const uint32_t bs = opts.block_size;
  if (bs < (64u << 10) || bs > (16u << 20) || (bs & (bs - 1)) != 0) {
    return Status::InvalidArgument("block cache: block size " + std::to_string(bs) +
                                   " is not a power of two from 64 KiB to 16 MiB");
  }
  if (opts.threads < 1 || opts.threads > 64) {
    return Status::InvalidArgument("block cache: threads must be 1..64");
  }
  if (opts.fetch_run_bytes > (uint64_t{32} << 20) || opts.readahead_bytes > (uint64_t{1} << 30)) {
    return Status::InvalidArgument(
        "block cache: at most 32 MiB per request and 1 GiB of readahead");
  }
  OVBD_RETURN_IF_ERROR(MakeDirs(env, opts.dir).Annotate("block cache"));
  auto lock = env->LockFile(JoinPath(opts.dir, "cache.lock"));
  if (!lock.ok()) {
    if (lock.status().code() == Status::Code::kBusy) {
      return Status::Busy("block cache " + opts.dir +
                          " is in use by another process (it holds cache.lock)");
    }
    return lock.status().Annotate("block cache");
  }
  OVBD_RETURN_IF_ERROR(MakeDir(env, JoinPath(opts.dir, "blobs")).Annotate("block cache"));
  auto cache = std::make_shared<BlockCacheImpl>(env, std::move(opts), std::move(lock).value());
  OVBD_RETURN_IF_ERROR(cache->Load().Annotate("block cache"));
  // A smaller bound than last time: evict down to it now.
  OVBD_RETURN_IF_ERROR(cache->Prune(cache->max_bytes()).status());
  return std::shared_ptr<BlockCache>(std::move(cache));
}

}  // namespace ovbd::remote
