// BlockCache: hits, misses and single-flight fetches, restart, crash safety
// under FaultInjectionEnv, damage on disk, LRU eviction with pins and blocks
// in use, Remove, the directory lock and digest validation.
#include "ovbd/remote/block_cache.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "fault_env.h"
#include "ovbd/io/mutex.h"
#include "test_util.h"

namespace ovbd::remote {
namespace {

using namespace std::chrono_literals;

constexpr uint32_t kBs = 64 << 10;
constexpr size_t kHeaderSize = 128;  // of a record file (docs/FORMAT.md)
constexpr size_t kRecordSize = 32;

// OVBD_CRASH_ITERATIONS (default 150; the sanitizer runs use fewer) scales
// the crash tests.
uint64_t CrashIterations() {
  const char* e = std::getenv("OVBD_CRASH_ITERATIONS");
  const uint64_t it = e ? std::strtoull(e, nullptr, 10) : 150;
  return std::clamp<uint64_t>(it, 5, 5000);
}

// Waits (bounded) for pred; false on timeout.
bool WaitUntil(const std::function<bool()>& pred, std::chrono::milliseconds limit = 20s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::yield();
  }
  return true;
}

// A blob's true content and its digest.
struct Content {
  std::vector<char> bytes;
  std::string digest;
  Content(uint64_t size, uint64_t seed) {
    std::mt19937_64 rng(seed);
    bytes = test::RandomBytes(rng, size);
    digest = "sha256:" + test::Sha256Hex(bytes.data(), bytes.size());
  }
  uint64_t size() const { return bytes.size(); }
};

// The remote end: serves a Content, counts the requests and the fetches of
// each block (by offset), and
// can be told to fail or to hold every fetch until released.
class Remote {
 public:
  explicit Remote(const Content& c) : c_(c) {}

  BlockFetcher fetcher() {
    return [this](uint64_t off, size_t n, char* buf) -> Status {
      calls_.fetch_add(1);
      {
        // Per block: one request may fetch a run of them.
        std::lock_guard<std::mutex> l(mu_);
        for (uint64_t o = off; o < off + n; o += kBs) ++per_offset_[o];
      }
      if (hold_) {
        entered_.fetch_add(1);
        if (!WaitUntil([this] { return !hold_.load(); })) return Status::IOError("held too long", EIO);
      }
      if (fail_) return Status::IOError("remote: connection reset", ECONNRESET);
      if (off > c_.size() || n > c_.size() - off) return Status::InvalidArgument("fetch past the end");
      std::memcpy(buf, c_.bytes.data() + off, n);
      return Status::OK();
    };
  }
  uint64_t calls() const { return calls_.load(); }
  std::map<uint64_t, int> per_offset() {
    std::lock_guard<std::mutex> l(mu_);
    return per_offset_;
  }
  void set_fail(bool f) { fail_ = f; }
  void set_hold(bool h) { hold_ = h; }
  int entered() const { return entered_.load(); }

 private:
  const Content& c_;
  std::atomic<uint64_t> calls_{0};
  std::atomic<bool> fail_{false}, hold_{false};
  std::atomic<int> entered_{0};
  std::mutex mu_;
  std::map<uint64_t, int> per_offset_;
};

// A fetcher for reads that must all be hits.
BlockFetcher NoFetch() {
  return [](uint64_t off, size_t, char*) -> Status {
    ADD_FAILURE() << "unexpected fetch at " << off;
    return Status::IOError("no fetch expected", EIO);
  };
}

std::string Stem(const std::string& digest) { return "sha256-" + digest.substr(7); }

// The tests' base Env: the real filesystem without the cost of fsync (what
// a power cut keeps is FaultInjectionEnv's business, not the disk's), and
// data files whose ReadAt can be held until released: a read "in progress"
// for as long as a test wants.
class TestEnv : public EnvWrapper {
 public:
  TestEnv() : EnvWrapper(Env::Default()) {}
  std::atomic<bool> hold{false};
  std::atomic<int> held{0};
  // Holds every sync of a data file until released.
  std::atomic<bool> hold_sync{false};
  std::atomic<int> syncs_held{0};

  Result<std::unique_ptr<RWFile>> OpenRW(const std::string& path, bool create) override {
    OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> f, target()->OpenRW(path, create));
    const bool data = path.size() >= 5 && path.compare(path.size() - 5, 5, ".data") == 0;
    return std::unique_ptr<RWFile>(std::make_unique<File>(this, std::move(f), data));
  }
  Status SyncDir(const std::string&) override { return Status::OK(); }

 private:
  class File : public RWFile {
   public:
    File(TestEnv* env, std::unique_ptr<RWFile> f, bool data)
        : env_(env), f_(std::move(f)), data_(data) {}
    Status ReadAt(uint64_t off, size_t n, char* buf, size_t* got) const override {
      if (data_ && env_->hold.load()) {
        env_->held.fetch_add(1);
        if (!WaitUntil([this] { return !env_->hold.load(); })) return Status::IOError("held", EIO);
      }
      return f_->ReadAt(off, n, buf, got);
    }
    uint64_t Size() const override { return f_->Size(); }
    const std::string& Name() const override { return f_->Name(); }
    Result<DataRun> NextData(uint64_t off) const override { return f_->NextData(off); }
    Status WriteAt(uint64_t off, const char* buf, size_t n) override { return f_->WriteAt(off, buf, n); }
    Status Sync() override {
      if (data_ && env_->hold_sync.load()) {
        env_->syncs_held.fetch_add(1);
        if (!WaitUntil([this] { return !env_->hold_sync.load(); })) return Status::IOError("held", EIO);
      }
      return Status::OK();
    }
    Status PunchHole(uint64_t off, uint64_t len) override { return f_->PunchHole(off, len); }
    Status Truncate(uint64_t size) override { return f_->Truncate(size); }
    Result<uint64_t> AllocatedBytes() const override { return f_->AllocatedBytes(); }

   private:
    TestEnv* const env_;
    std::unique_ptr<RWFile> f_;
    const bool data_;
  };
};

class BlockCacheTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(tmp_.path().empty()) << "no temporary directory"; }

  // Readahead is off unless a test asks for it: most tests count exactly
  // which blocks their reads fetch.
  BlockCacheOptions Opts(uint64_t max_bytes = uint64_t{1} << 30, uint64_t readahead = 0) const {
    BlockCacheOptions o;
    o.dir = dir_;
    o.block_size = kBs;
    o.max_bytes = max_bytes;
    o.readahead_bytes = readahead;
    o.fetch_run_bytes = 4 * kBs;
    return o;
  }
  std::shared_ptr<BlockCache> OpenCache(Env* env, uint64_t max_bytes = uint64_t{1} << 30,
                                        uint64_t readahead = 0) {
    auto c = BlockCache::Open(env, Opts(max_bytes, readahead));
    EXPECT_TRUE(c.ok()) << c.status().ToString();
    return c.ok() ? c.value() : nullptr;
  }
  std::shared_ptr<CachedBlob> Get(BlockCache& c, const Content& content) {
    auto b = c.Blob(content.digest, content.size());
    EXPECT_TRUE(b.ok()) << b.status().ToString();
    return b.ok() ? b.value() : nullptr;
  }
  std::string DataPath(const Content& c) const { return dir_ + "/blobs/" + Stem(c.digest) + ".data"; }
  std::string IdxPath(const Content& c) const { return dir_ + "/blobs/" + Stem(c.digest) + ".idx"; }
  static BlobStats StatsOf(BlockCache& c, const std::string& digest) {
    for (const BlobStats& s : c.Stats()) {
      if (s.digest == digest) return s;
    }
    ADD_FAILURE() << "no stats for " << digest;
    return {};
  }
  // Reads [off, off+n) and checks it against the content.
  static void ExpectRead(CachedBlob& b, const Content& c, uint64_t off, size_t n,
                         const BlockFetcher& fetch) {
    std::vector<char> got(n);
    Status s = b.Read(off, n, got.data(), fetch);
    ASSERT_TRUE(s.ok()) << s.ToString();
    ASSERT_TRUE(std::equal(got.begin(), got.end(), c.bytes.begin() + static_cast<ptrdiff_t>(off)))
        << "wrong bytes at " << off << "+" << n;
  }

  TestEnv test_env_;
  Env* const env_ = &test_env_;
  test::TempDir tmp_;
  const std::string dir_ = tmp_.path() + "/cache";
};

TEST_F(BlockCacheTest, HitsMissesAndFetchCounts) {
  Content c(5 * kBs, 1);
  Remote remote(c);
  auto cache = OpenCache(env_);
  ASSERT_TRUE(cache);
  auto b = Get(*cache, c);
  ASSERT_TRUE(b);
  EXPECT_EQ(b->digest(), c.digest);
  EXPECT_EQ(b->size(), c.size());
  EXPECT_FALSE(b->Cached(0, 4096));

  ExpectRead(*b, c, 100, 4096, remote.fetcher());
  EXPECT_EQ(remote.calls(), 1u);
  EXPECT_EQ(remote.per_offset(), (std::map<uint64_t, int>{{0, 1}}));
  ExpectRead(*b, c, 8192, 4096, remote.fetcher());
  EXPECT_EQ(remote.calls(), 1u);
  EXPECT_TRUE(b->Cached(0, kBs));
  EXPECT_FALSE(b->Cached(0, kBs + 1));
  EXPECT_TRUE(b->Cached(kBs, 0));

  BlobStats st = StatsOf(*cache, c.digest);
  EXPECT_EQ(st.size, c.size());
  EXPECT_EQ(st.misses, 1u);
  EXPECT_EQ(st.hits, 1u);
  EXPECT_EQ(st.fetched_bytes, kBs);
  EXPECT_EQ(st.cached_bytes, kBs);
  EXPECT_EQ(st.errors, 0u);
  EXPECT_FALSE(st.complete);
  EXPECT_EQ(cache->cached_bytes(), kBs);
  EXPECT_EQ(cache->block_size(), kBs);

  // The same digest is the same CachedBlob while held.
  auto again = Get(*cache, c);
  EXPECT_EQ(again.get(), b.get());
  // Reads past the end are refused, not fetched.
  std::vector<char> buf(10);
  EXPECT_EQ(b->Read(c.size() - 5, 10, buf.data(), remote.fetcher()).code(),
            Status::Code::kInvalidArgument);
  EXPECT_EQ(remote.calls(), 1u);
}

TEST_F(BlockCacheTest, SixteenReadersOfAColdRangeFetchEachBlockOnce) {
  Content c(4 * kBs, 2);
  Remote remote(c);
  auto cache = OpenCache(env_);
  ASSERT_TRUE(cache);
  auto b = Get(*cache, c);
  ASSERT_TRUE(b);
  // Each fetch is held until every reader has started, so they overlap.
  remote.set_hold(true);
  std::atomic<int> started{0};
  std::vector<std::thread> readers;
  std::vector<Status> results(16);
  std::vector<std::vector<char>> got(16, std::vector<char>(3 * kBs));
  for (int i = 0; i < 16; ++i) {
    readers.emplace_back([&, i] {
      started.fetch_add(1);
      results[i] = b->Read(kBs / 2, 3 * kBs, got[i].data(), remote.fetcher());
    });
  }
  ASSERT_TRUE(WaitUntil([&] { return started.load() == 16 && remote.entered() >= 1; }));
  remote.set_hold(false);
  for (auto& t : readers) t.join();
  for (int i = 0; i < 16; ++i) {
    ASSERT_TRUE(results[i].ok()) << results[i].ToString();
    ASSERT_TRUE(std::equal(got[i].begin(), got[i].end(), c.bytes.begin() + kBs / 2));
  }
  EXPECT_EQ(remote.per_offset(),
            (std::map<uint64_t, int>{{0, 1}, {kBs, 1}, {2 * kBs, 1}, {3 * kBs, 1}}));
  EXPECT_EQ(StatsOf(*cache, c.digest).fetched_bytes, 4u * kBs);
}

TEST_F(BlockCacheTest, ReadsAcrossBlocksAndTheShortLastBlock) {
  Content c(3 * kBs + 1000, 3);
  Remote remote(c);
  auto cache = OpenCache(env_);
  ASSERT_TRUE(cache);
  auto b = Get(*cache, c);
  ASSERT_TRUE(b);
  ExpectRead(*b, c, kBs - 100, kBs + 200, remote.fetcher());  // blocks 0, 1 and 2
  EXPECT_EQ(remote.per_offset(), (std::map<uint64_t, int>{{0, 1}, {kBs, 1}, {2 * kBs, 1}}));
  ExpectRead(*b, c, c.size() - 500, 500, remote.fetcher());
  EXPECT_EQ(remote.per_offset().at(3 * kBs), 1);
  ExpectRead(*b, c, 0, c.size(), remote.fetcher());
  EXPECT_EQ(remote.calls(), 2u);  // one request per read's absent blocks
  cache->WaitIdle();
  EXPECT_EQ(cache->cached_bytes(), c.size());
  EXPECT_TRUE(b->Cached(0, c.size()));
  ExpectRead(*b, c, c.size(), 0, remote.fetcher());
}

TEST_F(BlockCacheTest, FetchErrorCachesNothingAndTheNextReadRetries) {
  Content c(2 * kBs, 4);
  Remote remote(c);
  auto cache = OpenCache(env_);
  ASSERT_TRUE(cache);
  auto b = Get(*cache, c);
  ASSERT_TRUE(b);
  remote.set_fail(true);
  std::vector<char> buf(100);
  Status s = b->Read(10, 100, buf.data(), remote.fetcher());
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("connection reset"), std::string::npos) << s.ToString();
  EXPECT_FALSE(b->Cached(0, 1));
  EXPECT_EQ(cache->cached_bytes(), 0u);
  EXPECT_EQ(StatsOf(*cache, c.digest).errors, 1u);
  remote.set_fail(false);
  ExpectRead(*b, c, 10, 100, remote.fetcher());
  EXPECT_EQ(remote.calls(), 2u);
  EXPECT_TRUE(b->Cached(0, 1));
}

TEST_F(BlockCacheTest, AFailedFetchFailsEveryReaderWaitingForIt) {
  Content c(kBs, 5);
  Remote remote(c);
  auto cache = OpenCache(env_);
  ASSERT_TRUE(cache);
  auto b = Get(*cache, c);
  ASSERT_TRUE(b);
  remote.set_hold(true);
  remote.set_fail(true);
  std::vector<Status> results(4);
  std::vector<std::thread> readers;
  std::atomic<int> started{0};
  for (int i = 0; i < 4; ++i) {
    readers.emplace_back([&, i] {
      std::vector<char> buf(10);
      started.fetch_add(1);
      results[i] = b->Read(0, 10, buf.data(), remote.fetcher());
    });
  }
  ASSERT_TRUE(WaitUntil([&] { return started.load() == 4 && remote.entered() >= 1; }));
  remote.set_hold(false);
  for (auto& t : readers) t.join();
  for (const Status& s : results) EXPECT_FALSE(s.ok());
  EXPECT_EQ(cache->cached_bytes(), 0u);
}

TEST_F(BlockCacheTest, RestartServesCachedBlocksWithoutFetching) {
  Content c(4 * kBs + 7, 6);
  Remote remote(c);
  {
    auto cache = OpenCache(env_);
    ASSERT_TRUE(cache);
    auto b = Get(*cache, c);
    ASSERT_TRUE(b);
    ExpectRead(*b, c, 0, c.size() - 3 * kBs, remote.fetcher());  // blocks 0 and 1
  }
  auto cache = OpenCache(env_);
  ASSERT_TRUE(cache);
  EXPECT_TRUE(cache->warnings().empty());
  EXPECT_EQ(cache->cached_bytes(), 2u * kBs);
  auto b = Get(*cache, c);
  ASSERT_TRUE(b);
  EXPECT_TRUE(b->Cached(0, 2 * kBs));
  EXPECT_FALSE(b->Cached(2 * kBs, 1));
  ExpectRead(*b, c, 0, 2 * kBs, NoFetch());
  ExpectRead(*b, c, 5, 100, NoFetch());  // checked once per open, then trusted
  EXPECT_EQ(StatsOf(*cache, c.digest).hits, 3u);
  ExpectRead(*b, c, 0, c.size(), remote.fetcher());
  EXPECT_EQ(remote.calls(), 1u + 1u);  // blocks 0-1, then 2-4, each in one request
}

TEST_F(BlockCacheTest, DamagedBlockOnDiskIsDetectedAndFetchedAgain) {
  Content c(3 * kBs, 7);
  Remote remote(c);
  {
    auto cache = OpenCache(env_);
    ASSERT_TRUE(cache);
    auto b = Get(*cache, c);
    ASSERT_TRUE(b);
    ExpectRead(*b, c, 0, c.size(), remote.fetcher());
  }
  ASSERT_TRUE(test::FlipBits(env_, DataPath(c), kBs + 12345, 0x10).ok());
  auto cache = OpenCache(env_);
  ASSERT_TRUE(cache);
  auto b = Get(*cache, c);
  ASSERT_TRUE(b);
  const uint64_t before = remote.calls();
  ExpectRead(*b, c, kBs + 12000, 1000, remote.fetcher());  // the damaged range itself
  EXPECT_EQ(remote.calls(), before + 1);
  EXPECT_EQ(remote.per_offset().at(kBs), 2);
  ExpectRead(*b, c, 0, c.size(), remote.fetcher());
  EXPECT_EQ(remote.calls(), before + 1);
  cache->WaitIdle();  // the refetched block is kept after its read returns
  BlobStats st = StatsOf(*cache, c.digest);
  EXPECT_EQ(st.corrupt, 1u);
  EXPECT_EQ(st.cached_bytes, c.size());
}

TEST_F(BlockCacheTest, DamagedRecordInTheMiddleDropsThatRecordOnly) {
  Content c(4 * kBs, 8);
  Remote remote(c);
  {
    auto cache = OpenCache(env_);
    ASSERT_TRUE(cache);
    auto b = Get(*cache, c);
    ASSERT_TRUE(b);
    for (uint64_t i = 0; i < 4; ++i) ExpectRead(*b, c, i * kBs, 10, remote.fetcher());
  }
  // Record 1 (block 1): one byte of its block index.
  ASSERT_TRUE(test::FlipBits(env_, IdxPath(c), kHeaderSize + kRecordSize + 9, 0x01).ok());
  auto cache = OpenCache(env_);
  ASSERT_TRUE(cache);
  ASSERT_EQ(cache->warnings().size(), 1u);
  EXPECT_NE(cache->warnings()[0].find("damaged record"), std::string::npos) << cache->warnings()[0];
  auto b = Get(*cache, c);
  ASSERT_TRUE(b);
  EXPECT_TRUE(b->Cached(0, kBs));
  EXPECT_FALSE(b->Cached(kBs, kBs));
  EXPECT_TRUE(b->Cached(2 * kBs, 2 * kBs));
  const uint64_t before = remote.calls();
  ExpectRead(*b, c, 0, c.size(), remote.fetcher());
  EXPECT_EQ(remote.calls(), before + 1);
}

TEST_F(BlockCacheTest, TornTailRecordIsIgnoredAndAppendedOver) {
  Content c(3 * kBs, 9);
  Remote remote(c);
  {
    auto cache = OpenCache(env_);
    ASSERT_TRUE(cache);
    auto b = Get(*cache, c);
    ASSERT_TRUE(b);
    for (uint64_t i = 0; i < 3; ++i) ExpectRead(*b, c, i * kBs, 10, remote.fetcher());
  }
  {
    // Cut the last record short, as a torn append leaves it.
    auto f = env_->OpenRW(IdxPath(c), false);
    ASSERT_TRUE(f.ok());
    ASSERT_EQ((*f)->Size(), kHeaderSize + 3 * kRecordSize);
    ASSERT_TRUE((*f)->Truncate(kHeaderSize + 2 * kRecordSize + 11).ok());
  }
  {
    auto cache = OpenCache(env_);
    ASSERT_TRUE(cache);
    EXPECT_TRUE(cache->warnings().empty());  // a torn tail is not damage
    auto b = Get(*cache, c);
    ASSERT_TRUE(b);
    EXPECT_TRUE(b->Cached(0, 2 * kBs));
    EXPECT_FALSE(b->Cached(2 * kBs, 1));
    ExpectRead(*b, c, 0, c.size(), remote.fetcher());  // block 2 again, recorded after the cut
  }
  auto cache = OpenCache(env_);
  ASSERT_TRUE(cache);
  auto b = Get(*cache, c);
  ASSERT_TRUE(b);
  EXPECT_TRUE(b->Cached(0, c.size()));
  ExpectRead(*b, c, 0, c.size(), NoFetch());
}

TEST_F(BlockCacheTest, DamagedRecordFileHeaderDropsTheBlobWithAWarning) {
  Content c(2 * kBs, 10);
  Remote remote(c);
  {
    auto cache = OpenCache(env_);
    ASSERT_TRUE(cache);
    auto b = Get(*cache, c);
    ASSERT_TRUE(b);
    ExpectRead(*b, c, 0, c.size(), remote.fetcher());
  }
  ASSERT_TRUE(test::FlipBits(env_, IdxPath(c), 30, 0x04).ok());  // inside the blob size
  auto cache = OpenCache(env_);
  ASSERT_TRUE(cache);
  ASSERT_EQ(cache->warnings().size(), 1u);
  EXPECT_NE(cache->warnings()[0].find("checksum"), std::string::npos) << cache->warnings()[0];
  EXPECT_EQ(cache->cached_bytes(), 0u);
  auto b = Get(*cache, c);
  ASSERT_TRUE(b);
  EXPECT_FALSE(b->Cached(0, 1));
  ExpectRead(*b, c, 0, c.size(), remote.fetcher());
  EXPECT_EQ(remote.calls(), 2u);  // the whole blob, in one request each time
}

TEST_F(BlockCacheTest, LruEvictsTheLeastRecentlyUsedBlockAndStaysUnderTheBound) {
  Content a(4 * kBs, 11), z(4 * kBs, 12);
  Remote ra(a), rz(z);
  auto cache = OpenCache(env_, 3 * kBs);
  ASSERT_TRUE(cache);
  auto ba = Get(*cache, a);
  auto bz = Get(*cache, z);
  ASSERT_TRUE(ba && bz);
  // Each block is kept (and the LRU told) on the cache's threads after its
  // read returns: the test waits for that after each read, so the order of
  // uses is the order of the reads. (A use of a block still being kept is
  // not recorded: the keep itself marks it used right after.)
  auto read = [&](CachedBlob& b, const Content& c, uint64_t off, Remote& r) {
    ExpectRead(b, c, off, 10, r.fetcher());
    cache->WaitIdle();
  };
  read(*ba, a, 0, ra);        // a0
  read(*bz, z, 0, rz);        // z0
  read(*ba, a, kBs, ra);      // a1
  read(*ba, a, 0, ra);        // a0 used again: z0 is now the oldest
  read(*ba, a, 2 * kBs, ra);  // a2: evicts z0
  EXPECT_LE(cache->cached_bytes(), 3u * kBs);
  EXPECT_FALSE(bz->Cached(0, 1));
  EXPECT_TRUE(ba->Cached(0, 3 * kBs));
  ExpectRead(*bz, z, 0, 10, rz.fetcher());  // z0 again: evicts a1
  cache->WaitIdle();
  EXPECT_FALSE(ba->Cached(kBs, 1));
  EXPECT_TRUE(ba->Cached(0, 1));
  EXPECT_TRUE(ba->Cached(2 * kBs, 1));
  EXPECT_EQ(cache->cached_bytes(), 3u * kBs);
  // The evicted block's space is given back (its hole punched).
  auto alloc = env_->Stat(DataPath(a));
  ASSERT_TRUE(alloc.ok());
  EXPECT_LE(alloc->allocated, 2u * kBs + 8192);

  // Restart: the order is rebuilt from the records (a0, a2, z0 as inserted:
  // a0's reuse was not recorded), and the bound still holds.
  ba.reset();
  bz.reset();
  cache.reset();
  cache = OpenCache(env_, 3 * kBs);
  ASSERT_TRUE(cache);
  ba = Get(*cache, a);
  bz = Get(*cache, z);
  ExpectRead(*ba, a, 3 * kBs, 10, ra.fetcher());  // a3: evicts a0, the oldest record
  cache->WaitIdle();
  EXPECT_FALSE(ba->Cached(0, 1));
  EXPECT_TRUE(ba->Cached(2 * kBs, 2 * kBs));
  EXPECT_TRUE(bz->Cached(0, 1));

  auto freed = cache->Prune(kBs);
  ASSERT_TRUE(freed.ok());
  EXPECT_EQ(freed.value(), 2u * kBs);
  EXPECT_EQ(cache->cached_bytes(), kBs);
  EXPECT_TRUE(ba->Cached(3 * kBs, 1));  // the newest stays
  EXPECT_FALSE(bz->Cached(0, 1));
}

TEST_F(BlockCacheTest, PinnedBlobsAreNeverEvictedAndStayPinnedAfterRestart) {
  Content p(2 * kBs, 13), o(6 * kBs, 14);
  Remote rp(p), ro(o);
  {
    auto cache = OpenCache(env_, 3 * kBs);
    ASSERT_TRUE(cache);
    auto bp = Get(*cache, p);
    auto bo = Get(*cache, o);
    ASSERT_TRUE(bp && bo);
    ASSERT_TRUE(bp->SetPinned(true).ok());
    ExpectRead(*bp, p, 0, p.size(), rp.fetcher());  // the oldest blocks, but pinned
    for (uint64_t i = 0; i < 6; ++i) ExpectRead(*bo, o, i * kBs, 10, ro.fetcher());
    cache->WaitIdle();
    EXPECT_TRUE(bp->Cached(0, p.size()));
    EXPECT_EQ(cache->cached_bytes(), 3u * kBs);
    EXPECT_TRUE(bo->Cached(5 * kBs, 1));
    EXPECT_TRUE(StatsOf(*cache, p.digest).pinned);
    // Everything pinned: the cache keeps it past the bound rather than fail.
    auto freed = cache->Prune(0);
    ASSERT_TRUE(freed.ok());
    EXPECT_EQ(freed.value(), kBs);
    EXPECT_EQ(cache->cached_bytes(), 2u * kBs);
  }
  auto cache = OpenCache(env_, kBs);  // a smaller bound than the pinned blob
  ASSERT_TRUE(cache);
  BlobStats st = StatsOf(*cache, p.digest);
  EXPECT_TRUE(st.pinned);
  EXPECT_EQ(st.cached_bytes, p.size());
  auto bp = Get(*cache, p);
  ASSERT_TRUE(bp);
  ExpectRead(*bp, p, 0, p.size(), NoFetch());
  ASSERT_TRUE(bp->SetPinned(false).ok());
  EXPECT_LE(cache->cached_bytes(), kBs);  // unpinned blocks are evictable at once
  EXPECT_FALSE(StatsOf(*cache, p.digest).pinned);
  ASSERT_TRUE(cache->Prune(0).ok());
  EXPECT_EQ(cache->cached_bytes(), 0u);
}

TEST_F(BlockCacheTest, ABlockBeingReadIsNotEvicted) {
  Content c(3 * kBs, 15);
  Remote remote(c);
  TestEnv& henv = test_env_;
  auto cache = OpenCache(env_);
  ASSERT_TRUE(cache);
  auto b = Get(*cache, c);
  ASSERT_TRUE(b);
  ExpectRead(*b, c, 0, c.size(), remote.fetcher());
  cache->WaitIdle();  // kept: a block still being kept is busy, not evictable
  henv.hold = true;
  Status rs;
  std::vector<char> got(4096);
  std::thread reader([&] { rs = b->Read(kBs + 100, got.size(), got.data(), remote.fetcher()); });
  ASSERT_TRUE(WaitUntil([&] { return henv.held.load() == 1; }));
  auto freed = cache->Prune(0);
  ASSERT_TRUE(freed.ok());
  EXPECT_EQ(freed.value(), 2u * kBs);
  EXPECT_TRUE(b->Cached(kBs, kBs));
  EXPECT_FALSE(b->Cached(0, 1));
  EXPECT_FALSE(b->Cached(2 * kBs, 1));
  henv.hold = false;
  reader.join();
  ASSERT_TRUE(rs.ok()) << rs.ToString();
  EXPECT_TRUE(std::equal(got.begin(), got.end(), c.bytes.begin() + kBs + 100));
  EXPECT_EQ(remote.calls(), 1u);  // the first read's one request
  ASSERT_TRUE(cache->Prune(0).ok());
  EXPECT_EQ(cache->cached_bytes(), 0u);
}

TEST_F(BlockCacheTest, RemoveRefusesWhileHeldThenDropsEverything) {
  Content c(2 * kBs, 16);
  Remote remote(c);
  auto cache = OpenCache(env_);
  ASSERT_TRUE(cache);
  auto b = Get(*cache, c);
  ASSERT_TRUE(b);
  ASSERT_TRUE(b->SetPinned(true).ok());
  ExpectRead(*b, c, 0, c.size(), remote.fetcher());
  EXPECT_EQ(cache->Remove(c.digest).code(), Status::Code::kBusy);
  b.reset();
  ASSERT_TRUE(cache->Remove(c.digest).ok());
  EXPECT_EQ(cache->cached_bytes(), 0u);
  EXPECT_FALSE(env_->Exists(DataPath(c)));
  EXPECT_FALSE(env_->Exists(IdxPath(c)));
  EXPECT_TRUE(cache->Stats().empty());
  EXPECT_EQ(cache->Remove(c.digest).code(), Status::Code::kNotFound);
  b = Get(*cache, c);
  ASSERT_TRUE(b);
  EXPECT_FALSE(b->Cached(0, 1));
  EXPECT_FALSE(StatsOf(*cache, c.digest).pinned);
  ExpectRead(*b, c, 0, 10, remote.fetcher());
  EXPECT_EQ(remote.calls(), 2u);
}

TEST_F(BlockCacheTest, ASecondOpenerIsRefused) {
  auto cache = OpenCache(env_);
  ASSERT_TRUE(cache);
  auto second = BlockCache::Open(env_, Opts());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), Status::Code::kBusy);
  EXPECT_NE(second.status().message().find("in use by another process"), std::string::npos)
      << second.status().ToString();
  cache.reset();
  EXPECT_TRUE(BlockCache::Open(env_, Opts()).ok());
}

TEST_F(BlockCacheTest, MissingParentDirectoriesAreMade) {
  // The default ~/.cache/ovbdfs of a user who has no ~/.cache yet.
  BlockCacheOptions o = Opts();
  o.dir = tmp_.path() + "/home/.cache/ovbdfs";
  Content c(2 * kBs, 5);
  Remote remote(c);
  {
    auto cache = BlockCache::Open(env_, o);
    ASSERT_TRUE(cache.ok()) << cache.status().ToString();
    auto b = Get(**cache, c);
    ASSERT_TRUE(b);
    ExpectRead(*b, c, 0, c.size(), remote.fetcher());
  }
  EXPECT_TRUE(env_->Exists(o.dir + "/blobs"));
  auto again = BlockCache::Open(env_, o);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  auto b = Get(**again, c);
  ASSERT_TRUE(b);
  ExpectRead(*b, c, 0, c.size(), remote.fetcher());
  EXPECT_EQ(remote.calls(), 1u) << "what was fetched before the reopen is fetched again";
  // A file where a directory must be is an error, not a crash.
  ASSERT_TRUE(env_->WriteFileAtomic(tmp_.path() + "/file", "x").ok());
  o.dir = tmp_.path() + "/file/cache";
  EXPECT_FALSE(BlockCache::Open(env_, o).ok());
}

TEST_F(BlockCacheTest, HostileDigestsAndOptionsAreRefused) {
  auto cache = OpenCache(env_);
  ASSERT_TRUE(cache);
  for (const std::string& d : std::vector<std::string>{"../x", "sha256:../../../etc/passwd", "sha256-" + std::string(64, 'a'),
                              "sha256:" + std::string(64, 'A'), "sha256:" + std::string(63, 'a'),
                              "sha256:" + std::string(63, 'a') + "/", std::string("")}) {
    auto b = cache->Blob(d, 100);
    EXPECT_EQ(b.status().code(), Status::Code::kInvalidArgument) << d;
    EXPECT_EQ(cache->Remove(d).code(), Status::Code::kInvalidArgument) << d;
  }
  auto names = env_->ListDir(dir_ + "/blobs");
  ASSERT_TRUE(names.ok());
  EXPECT_TRUE(names->empty());
  EXPECT_FALSE(env_->Exists(tmp_.path() + "/x"));

  BlockCacheOptions o = Opts();
  o.block_size = 3 << 16;
  EXPECT_EQ(BlockCache::Open(env_, o).status().code(), Status::Code::kInvalidArgument);
  o.block_size = 4096;
  EXPECT_EQ(BlockCache::Open(env_, o).status().code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(cache->Blob("sha256:" + std::string(64, 'b'), uint64_t{1} << 62).status().code(),
            Status::Code::kTooLarge);
}

TEST_F(BlockCacheTest, ASizeMismatchDropsTheOldEntries) {
  Content c(2 * kBs, 17);
  Remote remote(c);
  auto cache = OpenCache(env_);
  ASSERT_TRUE(cache);
  auto b = Get(*cache, c);
  ASSERT_TRUE(b);
  ExpectRead(*b, c, 0, c.size(), remote.fetcher());
  EXPECT_EQ(cache->Blob(c.digest, c.size() + 1).status().code(), Status::Code::kInvalidArgument);
  b.reset();
  auto other = cache->Blob(c.digest, c.size() + 1);
  ASSERT_TRUE(other.ok());
  EXPECT_FALSE(other.value()->Cached(0, 1));
  EXPECT_EQ(cache->cached_bytes(), 0u);
  EXPECT_FALSE(cache->warnings().empty());
}

TEST_F(BlockCacheTest, MarkVerifiedNeedsEveryBlockAndPersists) {
  Content c(2 * kBs + 5, 18);
  Remote remote(c);
  {
    auto cache = OpenCache(env_);
    ASSERT_TRUE(cache);
    auto b = Get(*cache, c);
    ASSERT_TRUE(b);
    ExpectRead(*b, c, 0, 10, remote.fetcher());
    EXPECT_EQ(b->MarkVerified().code(), Status::Code::kCorruption);
    ExpectRead(*b, c, 0, c.size(), remote.fetcher());
    ASSERT_TRUE(b->MarkVerified().ok());
    EXPECT_TRUE(StatsOf(*cache, c.digest).complete);
  }
  auto cache = OpenCache(env_);
  ASSERT_TRUE(cache);
  EXPECT_TRUE(StatsOf(*cache, c.digest).complete);
  auto b = Get(*cache, c);
  ASSERT_TRUE(b);
  ASSERT_TRUE(b->Invalidate(kBs, 1).ok());
  EXPECT_FALSE(b->Cached(kBs, 1));
  EXPECT_FALSE(StatsOf(*cache, c.digest).complete);
  ExpectRead(*b, c, 0, c.size(), remote.fetcher());
  EXPECT_EQ(remote.per_offset().at(kBs), 2);
  EXPECT_FALSE(StatsOf(*cache, c.digest).complete);  // refetched bytes are not checked yet
}

TEST_F(BlockCacheTest, RecordFileIsCompactedWhenDeadRecordsDominate) {
  Content c(2 * kBs, 19);
  Remote remote(c);
  {
    auto cache = OpenCache(env_, kBs);
    ASSERT_TRUE(cache);
    auto b = Get(*cache, c);
    ASSERT_TRUE(b);
    // Each read evicts the other block: a block and a drop record each time
    // (once the read's block is kept, on the cache's threads: waited for, so
    // that the next read misses too and the last one read is the one left).
    for (int i = 0; i < 200; ++i) {
      ExpectRead(*b, c, (i % 2) * kBs, 10, remote.fetcher());
      cache->WaitIdle();
    }
    // Uncompacted, it would hold about 400 records.
    auto st = env_->Stat(IdxPath(c));
    ASSERT_TRUE(st.ok());
    EXPECT_LT(st->size, kHeaderSize + 200 * kRecordSize);
  }
  auto cache = OpenCache(env_, kBs);
  ASSERT_TRUE(cache);
  EXPECT_TRUE(cache->warnings().empty());
  auto b = Get(*cache, c);
  ASSERT_TRUE(b);
  EXPECT_TRUE(b->Cached(kBs, kBs));  // the last one read
  EXPECT_FALSE(b->Cached(0, 1));
  ExpectRead(*b, c, kBs, kBs, NoFetch());
}

// A sequential reader: readahead brings the blocks ahead of it in runs of
// several blocks per request, each block fetched once; the reads return the
// blob's bytes, and everything is kept.
TEST_F(BlockCacheTest, SequentialReadsFetchAheadInFewRequests) {
  Content c(64 * kBs + 777, 30);
  Remote remote(c);
  auto cache = OpenCache(env_, uint64_t{1} << 30, 16 * kBs);
  ASSERT_TRUE(cache);
  auto b = Get(*cache, c);
  ASSERT_TRUE(b);
  // The cache's threads get to run after each read, as on an idle machine:
  // on a busy one they may not reach a readahead before the reader reaches
  // its blocks, which it then fetches itself (its own read's blocks in one
  // request), and the count below would measure the machine.
  for (uint64_t off = 0; off < c.size(); off += 16 << 10) {
    ExpectRead(*b, c, off, static_cast<size_t>(std::min<uint64_t>(16 << 10, c.size() - off)),
               remote.fetcher());
    cache->WaitIdle();
  }
  // Every block once, and far fewer requests than blocks: runs of up to
  // fetch_run_bytes (4 blocks here) instead of one request per block.
  std::map<uint64_t, int> once;
  for (uint64_t k = 0; k * kBs < c.size(); ++k) once[k * kBs] = 1;
  EXPECT_EQ(remote.per_offset(), once);
  EXPECT_LE(remote.calls(), 65u / 4 + 4);
  EXPECT_TRUE(b->Cached(0, c.size()));
  EXPECT_EQ(StatsOf(*cache, c.digest).fetched_bytes, c.size());
}

// Random reads never trigger readahead: only the blocks read are fetched.
TEST_F(BlockCacheTest, RandomReadsFetchOnlyWhatTheyTouch) {
  Content c(64 * kBs, 31);
  Remote remote(c);
  auto cache = OpenCache(env_, uint64_t{1} << 30, 16 * kBs);
  ASSERT_TRUE(cache);
  auto b = Get(*cache, c);
  ASSERT_TRUE(b);
  const uint64_t blocks[] = {40, 3, 17, 60, 9, 33, 51, 1};
  for (uint64_t k : blocks) ExpectRead(*b, c, k * kBs + 100, 4096, remote.fetcher());
  cache->WaitIdle();
  std::map<uint64_t, int> want;
  for (uint64_t k : blocks) want[k * kBs] = 1;
  EXPECT_EQ(remote.per_offset(), want);
  EXPECT_EQ(StatsOf(*cache, c.digest).fetched_bytes, 8u * kBs);
}

// A reader has its bytes as soon as they are fetched: it does not wait for
// the cache's syncs. The block counts as cached only once they are done.
TEST_F(BlockCacheTest, AReaderDoesNotWaitForTheCacheToKeepItsBlock) {
  Content c(4 * kBs, 32);
  Remote remote(c);
  auto cache = OpenCache(env_);
  ASSERT_TRUE(cache);
  auto b = Get(*cache, c);
  ASSERT_TRUE(b);
  test_env_.hold_sync = true;
  std::atomic<bool> returned{false};
  std::thread reader([&] {
    ExpectRead(*b, c, kBs + 10, 1000, remote.fetcher());
    returned = true;
  });
  EXPECT_TRUE(WaitUntil([&] { return returned.load(); }, 5s)) << "the read waited for a sync";
  EXPECT_TRUE(WaitUntil([&] { return test_env_.syncs_held.load() >= 1; }, 5s));
  // Another reader of the block copies the fetched bytes: no second fetch.
  ExpectRead(*b, c, kBs, kBs, remote.fetcher());
  EXPECT_EQ(remote.calls(), 1u);
  EXPECT_EQ(StatsOf(*cache, c.digest).cached_bytes, 0u);
  test_env_.hold_sync = false;
  reader.join();
  EXPECT_TRUE(b->Cached(kBs, kBs));
  EXPECT_EQ(StatsOf(*cache, c.digest).cached_bytes, kBs);
  // And it is durable: a restart serves it without a fetch.
  b.reset();
  cache.reset();
  cache = OpenCache(env_);
  ASSERT_TRUE(cache);
  b = Get(*cache, c);
  ASSERT_TRUE(b);
  ExpectRead(*b, c, kBs, kBs, NoFetch());
}

// A readahead that fails leaves nothing behind and fails nobody: the reader
// that reaches those blocks fetches them itself.
TEST_F(BlockCacheTest, AFailedReadaheadLetsTheReaderFetchItself) {
  Content c(32 * kBs, 33);
  Remote remote(c);
  auto cache = OpenCache(env_, uint64_t{1} << 30, 8 * kBs);
  ASSERT_TRUE(cache);
  auto b = Get(*cache, c);
  ASSERT_TRUE(b);
  for (uint64_t k = 0; k < 2; ++k) ExpectRead(*b, c, k * kBs, kBs, remote.fetcher());
  cache->WaitIdle();
  EXPECT_EQ(remote.calls(), 2u);  // not sequential yet: no readahead
  remote.set_fail(true);
  std::vector<char> got(kBs);
  // The third read in a row starts readaheads; they fail, as its own fetch.
  EXPECT_FALSE(b->Read(2 * kBs, kBs, got.data(), remote.fetcher()).ok());
  cache->WaitIdle();
  EXPECT_GE(remote.calls(), 4u);
  EXPECT_GE(StatsOf(*cache, c.digest).errors, 2u);
  EXPECT_FALSE(b->Cached(3 * kBs, 1));
  remote.set_fail(false);
  for (uint64_t k = 2; k < 32; ++k) ExpectRead(*b, c, k * kBs, kBs, remote.fetcher());
  cache->WaitIdle();
  EXPECT_TRUE(b->Cached(0, c.size()));
}

// Many threads reading two blobs through a small cache while others prune
// and invalidate: every read returns the blob's bytes.
TEST_F(BlockCacheTest, ConcurrentReadsEvictionsAndInvalidations) {
  Content a(8 * kBs + 100, 20), z(5 * kBs, 21);
  Remote ra(a), rz(z);
  auto cache = OpenCache(env_, 4 * kBs, 3 * kBs);
  ASSERT_TRUE(cache);
  auto ba = Get(*cache, a);
  auto bz = Get(*cache, z);
  ASSERT_TRUE(ba && bz);
  std::atomic<bool> stop{false};
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      for (int i = 0; i < 300; ++i) {
        const bool first = rng() % 2;
        const Content& c = first ? a : z;
        CachedBlob& b = first ? *ba : *bz;
        const uint64_t off = rng() % c.size();
        const size_t n = static_cast<size_t>(std::min<uint64_t>(c.size() - off, 1 + rng() % (2 * kBs)));
        std::vector<char> got(n);
        Status s = b.Read(off, n, got.data(), first ? ra.fetcher() : rz.fetcher());
        if (!s.ok() || !std::equal(got.begin(), got.end(), c.bytes.begin() + static_cast<ptrdiff_t>(off))) {
          bad.fetch_add(1);
        }
      }
    });
  }
  std::thread churn([&] {
    std::mt19937_64 rng(99);
    while (!stop.load()) {
      switch (rng() % 3) {
        case 0: (void)cache->Prune(rng() % (4 * kBs)); break;
        case 1: (void)ba->Invalidate(rng() % a.size(), 1); break;
        case 2: (void)bz->SetPinned(rng() % 2); break;
      }
      std::this_thread::yield();
    }
  });
  for (auto& t : threads) t.join();
  stop = true;
  churn.join();
  EXPECT_EQ(bad.load(), 0);
  ASSERT_TRUE(bz->SetPinned(false).ok());
  ASSERT_TRUE(cache->Prune(4 * kBs).ok());
  EXPECT_LE(cache->cached_bytes(), 4u * kBs);
  // Whatever is left survives a restart intact.
  ba.reset();
  bz.reset();
  cache.reset();
  cache = OpenCache(env_, 4 * kBs);
  ASSERT_TRUE(cache);
  ba = Get(*cache, a);
  ExpectRead(*ba, a, 0, a.size(), ra.fetcher());
  EXPECT_EQ(StatsOf(*cache, a.digest).corrupt, 0u);
}

// Power loss at random points of a workload: after reopening, every read
// returns exactly the blob's bytes (the fetcher serves the true content),
// never torn ones, and what the cache claims present is really there.
// The keeper evicts after a read has returned: a block Cached() claims may
// be dropped a moment later, and a crash that cuts the drop short can still
// leave its record. Only what the cache answers once dead is a claim: the
// block being evicted is not one, and the block kept is.
TEST_F(BlockCacheTest, ABlockWhoseEvictionACrashCutsShortIsNotClaimed) {
  Content c(2 * kBs, 25);
  Remote remote(c);
  FaultInjectionEnv fenv(env_, 3);
  std::vector<uint64_t> claimed;
  {
    auto cache = OpenCache(&fenv, kBs);  // room for one block
    ASSERT_TRUE(cache);
    auto b = Get(*cache, c);
    ASSERT_TRUE(b);
    ExpectRead(*b, c, 0, 10, remote.fetcher());
    cache->WaitIdle();
    ASSERT_TRUE(b->Cached(0, kBs));
    // Keeping block 1 commits its record, then evicts block 0: the process
    // dies once the drop record is written, before it is synced.
    int commits = 0;
    fenv.OnCrashPoint("block_cache.before_records", [&] {
      if (++commits == 2) fenv.CrashAfterOps(1);
    });
    ExpectRead(*b, c, kBs, 10, remote.fetcher());  // returns before the keeper is done
    cache->WaitIdle();
    fenv.OnCrashPoint("block_cache.before_records", {});
    ASSERT_TRUE(fenv.crashed());
    EXPECT_EQ(commits, 2);
    for (uint64_t k = 0; k < 2; ++k) {
      if (b->Cached(k * kBs, 1)) claimed.push_back(k);
    }
  }
  EXPECT_EQ(claimed, std::vector<uint64_t>{1});
  fenv.Revive();  // the process only: the kernel keeps the drop record it was given
  auto cache = OpenCache(&fenv);
  ASSERT_TRUE(cache);
  auto b = Get(*cache, c);
  ASSERT_TRUE(b);
  EXPECT_FALSE(b->Cached(0, 1));  // claimed before its eviction began, gone after it
  EXPECT_TRUE(b->Cached(kBs, 1));
  ExpectRead(*b, c, kBs, kBs, NoFetch());
}

TEST_F(BlockCacheTest, PowerLossAtRandomPointsNeverServesTornBytes) {
  const uint64_t iterations = CrashIterations();
  Content a(6 * kBs + 3000, 22), z(3 * kBs, 23);
  for (uint64_t it = 0; it < iterations; ++it) {
    SCOPED_TRACE("iteration " + std::to_string(it));
    test::TempDir tmp;
    const std::string dir = tmp.path() + "/cache";
    std::mt19937_64 rng(1000 + it);
    FaultInjectionEnv fenv(env_, it);
    Remote ra(a), rz(z);
    BlockCacheOptions o = Opts(4 * kBs, rng() % 2 ? 3 * kBs : 0);
    o.dir = dir;
    const int phases = 1 + static_cast<int>(rng() % 3);
    std::vector<std::pair<const Content*, uint64_t>> claimed;  // (blob, block)
    for (int phase = 0; phase < phases; ++phase) {
      {
        auto opened = BlockCache::Open(&fenv, o);
        ASSERT_TRUE(opened.ok()) << opened.status().ToString();
        auto cache = opened.value();
        auto ba = Get(*cache, a);
        auto bz = Get(*cache, z);
        ASSERT_TRUE(ba && bz);
        // Crash after a random number of mutating operations, or at a
        // named step, tearing the write it interrupts.
        if (rng() % 4 == 0) {
          static const char* kPoints[] = {"block_cache.before_data_sync", "block_cache.before_records",
                                          "block_cache.before_compaction", "atomic_write.before_rename"};
          fenv.CrashAt(kPoints[rng() % 4], 1 + static_cast<int>(rng() % 6));
        } else {
          fenv.CrashAfterOps(rng() % 120);
        }
        fenv.SetTearOnCrash(true);
        for (int i = 0; i < 40 && !fenv.crashed(); ++i) {
          const bool first = rng() % 3 != 0;
          const Content& c = first ? a : z;
          CachedBlob& b = first ? *ba : *bz;
          const uint64_t off = rng() % c.size();
          const size_t n = static_cast<size_t>(std::min<uint64_t>(c.size() - off, 1 + rng() % (2 * kBs)));
          std::vector<char> got(n);
          Status s = b.Read(off, n, got.data(), first ? ra.fetcher() : rz.fetcher());
          // Before the crash a read may fail (the env failed it), but any
          // bytes it returns are the blob's.
          if (s.ok()) {
            ASSERT_TRUE(std::equal(got.begin(), got.end(), c.bytes.begin() + static_cast<ptrdiff_t>(off)))
                << "wrong bytes before the crash at " << off;
          }
          switch (rng() % 10) {
            case 0: (void)cache->Prune(rng() % (3 * kBs)); break;
            case 1: (void)ba->Invalidate(rng() % a.size(), 1); break;
            case 2: (void)bz->SetPinned(rng() % 2); break;
            case 3: (void)ba->MarkVerified(); break;
            default: break;
          }
        }
        // Die now if it has not yet: the claims below are what the cache
        // answers once dead. Arming a crash at the next operation instead
        // would let the cache's threads, still keeping and evicting, change
        // the answers after they are taken: an eviction that starts then
        // drops a block claimed a moment before, and its record, written as
        // the crash tears it, may well survive.
        fenv.CrashNow();
        // What the cache claimed present when it died must survive, intact.
        claimed.clear();
        for (const auto& [c, b] : {std::pair{&a, ba}, std::pair{&z, bz}}) {
          for (uint64_t k = 0; k * kBs < c->size(); ++k) {
            if (b->Cached(k * kBs, 1)) claimed.emplace_back(c, k);
          }
        }
      }
      // A machine crash (or, sometimes, only the process).
      if (rng() % 5 == 0) {
        fenv.Revive();
      } else {
        const PowerLossMode modes[] = {PowerLossMode::kDropAll, PowerLossMode::kRandomSectors,
                                       PowerLossMode::kTornLast};
        ASSERT_TRUE(fenv.SimulatePowerLoss(modes[rng() % 3]).ok());
      }
      fenv.DisarmCrashes();
    }

    // Reopen with the same env (and room for all, so nothing is evicted on
    // open): every block claimed before the crash is there without a fetch,
    // and every block reads back exactly.
    // No readahead: reads that must be hits would fetch what lies ahead.
    o.max_bytes = uint64_t{1} << 30;
    o.readahead_bytes = 0;
    auto opened = BlockCache::Open(&fenv, o);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    auto cache = opened.value();
    for (const auto& [c, k] : claimed) {
      auto b = Get(*cache, *c);
      ASSERT_TRUE(b);
      ASSERT_TRUE(b->Cached(k * kBs, 1)) << "block " << k << " was claimed present before the crash";
      ExpectRead(*b, *c, k * kBs, std::min<uint64_t>(kBs, c->size() - k * kBs), NoFetch());
    }
    for (const Content* c : {&a, &z}) {
      auto b = Get(*cache, *c);
      ASSERT_TRUE(b);
      Remote r(*c);
      // Blocks claimed present before reading are present afterwards unless
      // they failed their check (and then they were fetched again).
      ExpectRead(*b, *c, 0, c->size(), r.fetcher());
      ExpectRead(*b, *c, c->size() / 3, c->size() / 3, r.fetcher());
      // The order of writes leaves no record that claims torn bytes.
      EXPECT_EQ(StatsOf(*cache, c->digest).corrupt, 0u);
    }
  }
}


// Power loss around a compaction of the record file: whichever file the
// crash leaves, every block claimed before it is there, intact.
TEST_F(BlockCacheTest, PowerLossAroundCompactionKeepsEveryClaim) {
  Content c(2 * kBs, 24);
  constexpr int kReads = 160;  // past the first compaction
  auto run = [&](FaultInjectionEnv& fenv, const std::string& dir, uint64_t* compaction_at) {
    BlockCacheOptions o = Opts(kBs);
    o.dir = dir;
    auto opened = BlockCache::Open(&fenv, o);
    EXPECT_TRUE(opened.ok()) << opened.status().ToString();
    if (!opened.ok()) return std::vector<uint64_t>{};
    auto cache = opened.value();
    auto b = Get(*cache, c);
    if (!b) return std::vector<uint64_t>{};
    Remote remote(c);
    if (compaction_at) {
      fenv.OnCrashPoint("block_cache.before_compaction", [&] {
        if (*compaction_at == 0) *compaction_at = fenv.mutating_ops();
      });
    }
    std::vector<char> buf(10);
    for (int i = 0; i < kReads && !fenv.crashed(); ++i) {
      (void)b->Read((i % 2) * kBs, buf.size(), buf.data(), remote.fetcher());
      cache->WaitIdle();  // each block kept, and the other evicted, before the next read
    }
    fenv.CrashNow();  // the claims are what the dead cache answers
    std::vector<uint64_t> claimed;
    for (uint64_t k = 0; k < 2; ++k) {
      if (b->Cached(k * kBs, 1)) claimed.push_back(k);
    }
    return claimed;
  };
  // Where the first compaction starts, in mutating operations.
  uint64_t at = 0;
  {
    test::TempDir tmp;
    FaultInjectionEnv fenv(env_, 1);
    run(fenv, tmp.path() + "/cache", &at);
    ASSERT_GT(at, 0u) << "no compaction happened";
  }
  const uint64_t iterations = std::max<uint64_t>(CrashIterations() / 5, 10);
  for (uint64_t it = 0; it < iterations; ++it) {
    SCOPED_TRACE("iteration " + std::to_string(it));
    test::TempDir tmp;
    const std::string dir = tmp.path() + "/cache";
    FaultInjectionEnv fenv(env_, it);
    const uint64_t start = fenv.mutating_ops();
    fenv.CrashAfterOps(at - start - 6 + it % 24);  // from just before to just after
    fenv.SetTearOnCrash(true);
    std::vector<uint64_t> claimed = run(fenv, dir, nullptr);
    const PowerLossMode modes[] = {PowerLossMode::kDropAll, PowerLossMode::kRandomSectors,
                                   PowerLossMode::kTornLast};
    ASSERT_TRUE(fenv.SimulatePowerLoss(modes[it % 3]).ok());
    BlockCacheOptions o = Opts();
    o.dir = dir;
    auto opened = BlockCache::Open(&fenv, o);
    ASSERT_TRUE(opened.ok()) << opened.status().ToString();
    auto cache = opened.value();
    EXPECT_TRUE(cache->warnings().empty()) << cache->warnings()[0];
    auto b = Get(*cache, c);
    ASSERT_TRUE(b);
    for (uint64_t k : claimed) {
      EXPECT_TRUE(b->Cached(k * kBs, 1)) << "block " << k;
      ExpectRead(*b, c, k * kBs, kBs, NoFetch());
    }
    Remote remote(c);
    ExpectRead(*b, c, 0, c.size(), remote.fetcher());
    EXPECT_EQ(StatsOf(*cache, c.digest).corrupt, 0u);
  }
}

}  // namespace
}  // namespace ovbd::remote
