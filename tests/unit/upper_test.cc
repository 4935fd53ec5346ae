// The writable upper, through a Volume: random I/O against a shadow image,
// reopen, sealing, space accounting, and crash consistency under injected
// process crashes and power loss.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <random>
#include <set>

#include "fault_env.h"
#include "forwarding_file.h"
#include "ovbd/layer/layer_open.h"
#include "ovbd/layer/lsmt_writer.h"
#include "ovbd/layer/upper.h"
#include "ovbd/volume/volume.h"
#include "sector_model.h"
#include "test_util.h"

namespace ovbd {
namespace {

constexpr uint64_t kSize = 4 << 20;

// A lower layer with random data in about half of its 64 KiB chunks.
std::shared_ptr<lsmt::Layer> MakeLower(Env* env, const std::string& dir, std::vector<char>* img,
                                       uint64_t seed) {
  std::mt19937_64 rng(seed);
  img->assign(kSize, 0);
  for (uint64_t off = 0; off < kSize; off += 65536) {
    if (rng() % 2) continue;
    auto r = test::RandomBytes(rng, 65536);
    std::memcpy(img->data() + off, r.data(), r.size());
  }
  EXPECT_TRUE(test::WriteWholeFile(Env::Default(), dir + "/raw", *img).ok());
  auto raw = Env::Default()->OpenReadable(dir + "/raw");
  auto out = Env::Default()->OpenRW(dir + "/lower", true);
  EXPECT_TRUE(raw.ok() && out.ok());
  EXPECT_TRUE(lsmt::CreateFromRaw(*raw.value(), out.value().get(), {}).ok());
  auto l = OpenLayer(env, dir + "/lower");
  EXPECT_TRUE(l.ok()) << l.status().ToString();
  return l.value();
}

std::vector<char> ReadAll(const Volume& v) {
  std::vector<char> buf(v.size());
  auto n = v.Read(0, buf.size(), buf.data());
  EXPECT_TRUE(n.ok()) << n.status().ToString();
  return buf;
}

class UpperTest : public ::testing::Test {
 protected:
  void SetUp() override { lower_ = MakeLower(env_, dir_.path(), &shadow_, 42); }

  std::unique_ptr<Volume> Create() {
    auto u = Upper::Create(env_, dir_.Sub("up"), kSize, lsmt::NewUuid(), "");
    EXPECT_TRUE(u.ok()) << u.status().ToString();
    return std::make_unique<Volume>("v", kSize, std::vector{lower_},
                                    std::shared_ptr<Upper>(std::move(u).value()), false);
  }
  std::unique_ptr<Volume> Reopen() {
    auto u = Upper::Open(env_, dir_.Sub("up"), kSize);
    EXPECT_TRUE(u.ok()) << u.status().ToString();
    if (!u.ok()) return nullptr;
    return std::make_unique<Volume>("v", kSize, std::vector{lower_},
                                    std::shared_ptr<Upper>(std::move(u).value()), false);
  }

  // Writes `len` random bytes (from `rng`) at `off` of `v`, and the same
  // bytes into the shadow.
  void WriteRandom(Volume& v, std::mt19937_64& rng, uint64_t off, uint64_t len) {
    auto d = test::RandomBytes(rng, len);
    auto n = v.Write(off, d.data(), len);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    ASSERT_EQ(n.value(), len);
    std::memcpy(shadow_.data() + off, d.data(), len);
  }
  // Discards [off, off+len) of `v`, and zeroes it in the shadow.
  void Discard(Volume& v, uint64_t off, uint64_t len) {
    ASSERT_TRUE(v.Discard(off, len).ok());
    std::memset(shadow_.data() + off, 0, len);
  }

  // Ten 4 KiB writes of `fill`, 8 KiB apart, each flushed (a journal record
  // each), by a volume closed afterwards.
  void WriteTenRecords(char fill) {
    auto v = Create();
    const std::vector<char> d(4096, fill);
    for (int i = 0; i < 10; ++i) {
      ASSERT_TRUE(v->Write(i * 8192, d.data(), d.size()).ok());
      ASSERT_TRUE(v->Flush().ok());
    }
  }
  std::string JournalPath() const { return Upper::JournalPath(dir_.Sub("up")); }

  Env* env_ = Env::Default();
  test::TempDir dir_;
  std::shared_ptr<lsmt::Layer> lower_;
  std::vector<char> shadow_;
};

TEST_F(UpperTest, RandomIoMatchesShadowAcrossReopens) {
  auto v = Create();
  std::mt19937_64 rng(1);
  for (int round = 0; round < 6; ++round) {
    for (int i = 0; i < 300; ++i) {
      const int op = static_cast<int>(rng() % 10);
      uint64_t off = rng() % kSize;
      uint64_t len = 1 + rng() % (op < 3 ? 600 : 200000);  // some tiny, unaligned
      len = std::min(len, kSize - off);
      if (op < 7) {
        ASSERT_NO_FATAL_FAILURE(WriteRandom(*v, rng, off, len));
      } else if (op < 9) {
        ASSERT_NO_FATAL_FAILURE(Discard(*v, off, len));
      } else {
        ASSERT_TRUE(v->Flush().ok());
      }
      if (i % 50 == 0) {
        // Random unaligned reads check the read path, not only whole images.
        uint64_t ro = rng() % kSize, rl = std::min<uint64_t>(1 + rng() % 70000, kSize - ro);
        std::vector<char> b(rl);
        auto n = v->Read(ro, rl, b.data());
        ASSERT_TRUE(n.ok());
        ASSERT_EQ(0, std::memcmp(b.data(), shadow_.data() + ro, rl)) << "read at " << ro;
      }
    }
    ASSERT_EQ(ReadAll(*v), shadow_) << "round " << round;
    ASSERT_TRUE(v->Flush().ok());
    v.reset();
    v = Reopen();
    ASSERT_NE(v, nullptr);
    ASSERT_EQ(ReadAll(*v), shadow_) << "after reopen, round " << round;
  }
}

TEST_F(UpperTest, SectorExactWritesAndDiscards) {
  auto v = Create();
  // Find a sector with non-zero lower data and neighbours with data too.
  uint64_t s = 0;
  while (shadow_[s * 512] == 0 || shadow_[(s + 1) * 512] == 0) s += 128;
  std::vector<char> one(512, '\x11');
  ASSERT_TRUE(v->Write((s + 1) * 512, one.data(), 512).ok());
  ASSERT_TRUE(v->Discard((s + 2) * 512, 512).ok());
  ASSERT_TRUE(v->Flush().ok());
  v.reset();
  v = Reopen();
  std::vector<char> b(4 * 512);
  ASSERT_TRUE(v->Read(s * 512, b.size(), b.data()).ok());
  EXPECT_EQ(0, std::memcmp(b.data(), shadow_.data() + s * 512, 512));  // untouched neighbour
  EXPECT_EQ(0, std::memcmp(b.data() + 512, one.data(), 512));
  EXPECT_TRUE(std::all_of(b.begin() + 1024, b.begin() + 1536, [](char c) { return c == 0; }));
  EXPECT_EQ(0, std::memcmp(b.data() + 1536, shadow_.data() + (s + 3) * 512, 512));
}

TEST_F(UpperTest, OverwritesDoNotGrowTheUpper) {
  auto v = Create();
  std::mt19937_64 rng(3);
  auto data = test::RandomBytes(rng, 1 << 20);
  ASSERT_TRUE(v->Write(0, data.data(), data.size()).ok());
  ASSERT_TRUE(v->Flush().ok());
  const uint64_t first = v->Stats().upper.allocated_bytes;
  for (int i = 0; i < 50; ++i) {
    auto d = test::RandomBytes(rng, 4096);
    ASSERT_TRUE(v->Write((rng() % 256) * 4096, d.data(), d.size()).ok());
    ASSERT_TRUE(v->Flush().ok());
  }
  EXPECT_EQ(v->Stats().upper.allocated_bytes, first);
  // Discarding frees the space again.
  ASSERT_TRUE(v->Discard(0, 1 << 20).ok());
  EXPECT_LT(v->Stats().upper.allocated_bytes, first / 8);
}

TEST_F(UpperTest, WritesPastTheEnd) {
  auto v = Create();
  std::vector<char> d(8192, 1);
  auto n = v->Write(kSize - 4096, d.data(), d.size());
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(n.value(), 4096u);  // short, like a block device
  n = v->Write(kSize, d.data(), d.size());
  ASSERT_FALSE(n.ok());
  EXPECT_TRUE(n.status().IsNoSpace());
}

TEST_F(UpperTest, SealedUpperIsAValidLayerWithTheSameContent) {
  auto v = Create();
  std::mt19937_64 rng(5);
  for (int i = 0; i < 200; ++i) {
    uint64_t off = rng() % kSize, len = std::min<uint64_t>(1 + rng() % 50000, kSize - off);
    if (i % 4 == 0) {
      ASSERT_NO_FATAL_FAILURE(Discard(*v, off, len));
    } else {
      ASSERT_NO_FATAL_FAILURE(WriteRandom(*v, rng, off, len));
    }
  }
  auto upper = v->stack()->upper;
  ASSERT_TRUE(upper->Seal("sealed by test").ok());
  auto sealed = OpenLayer(env_, Upper::DataPath(dir_.Sub("up")));
  ASSERT_TRUE(sealed.ok()) << sealed.status().ToString();
  EXPECT_EQ(sealed.value()->header().user_tag, "sealed by test");
  Volume ro("ro", kSize, {lower_, sealed.value()}, nullptr, true);
  EXPECT_EQ(ReadAll(ro), shadow_);
  // Sealed: no more writes.
  EXPECT_FALSE(upper->Write(0, shadow_.data(), 512).ok());
}

TEST_F(UpperTest, JournalCompactionKeepsContent) {
  auto v = Create();
  v->stack()->upper->set_compact_min_records(64);
  std::mt19937_64 rng(9);
  for (int i = 0; i < 2000; ++i) {
    // Rewrites of a few sectors: many records, a small map.
    uint64_t off = (rng() % 64) * 1024;
    ASSERT_NO_FATAL_FAILURE(WriteRandom(*v, rng, off, 512));
    if (i % 7 == 0) {
      ASSERT_TRUE(v->Flush().ok());
    }
  }
  ASSERT_TRUE(v->Flush().ok());
  auto st = v->Stats().upper;
  EXPECT_GT(st.compactions, 0u);
  EXPECT_LE(st.journal_records, 4 * st.extents + 64);
  v.reset();
  v = Reopen();
  EXPECT_EQ(ReadAll(*v), shadow_);
}

TEST_F(UpperTest, TornJournalTailIsDroppedAndMidJournalDamageRefused) {
  ASSERT_NO_FATAL_FAILURE(WriteTenRecords(7));
  const std::string jnl = JournalPath();
  {
    auto f = env_->OpenRW(jnl, false);
    ASSERT_TRUE(f.ok());
    const uint64_t size = f.value()->Size();
    // Garbage appended after the last record (a torn batch): dropped silently.
    std::string junk(40, '\x5a');
    ASSERT_TRUE(f.value()->WriteAt(size, junk.data(), junk.size()).ok());
  }
  auto v = Reopen();
  ASSERT_NE(v, nullptr);
  const std::vector<char> d(4096, 7);
  for (int i = 0; i < 10; ++i) {
    std::vector<char> b(4096);
    ASSERT_TRUE(v->Read(i * 8192, 4096, b.data()).ok());
    EXPECT_EQ(b, d);
  }
  v.reset();
  // A damaged record followed by valid ones: refuse to open, name the problem.
  ASSERT_TRUE(test::FlipBits(env_, jnl, 4096 + 32 * 3 + 20).ok());
  auto u = Upper::Open(env_, dir_.Sub("up"), kSize);
  ASSERT_FALSE(u.ok());
  EXPECT_TRUE(u.status().IsCorruption());
  EXPECT_NE(u.status().message().find("valid records follow"), std::string::npos)
      << u.status().ToString();
}

// ---- A data file truncated behind our back ----------------------------------

TEST_F(UpperTest, TruncatedDataFileFailsReadsInsteadOfServingZeros) {
  auto v = Create();
  std::vector<char> a(65536, 'a'), b(4096, 'b');
  ASSERT_TRUE(v->Write(1 << 20, a.data(), a.size()).ok());
  ASSERT_TRUE(v->Write(3 << 20, b.data(), b.size()).ok());
  ASSERT_TRUE(v->Flush().ok());
  const Upper& up = *v->stack()->upper;
  EXPECT_EQ(up.DataBytesNeeded(), Upper::DataOffset((3 << 20) + 4096));
  const std::string data = Upper::DataPath(dir_.Sub("up"));
  const auto check = [&](const Volume& vol) {
    // The first write is still in the file, the second is not.
    std::vector<char> buf(65536);
    ASSERT_TRUE(vol.Read(1 << 20, a.size(), buf.data()).ok());
    EXPECT_EQ(buf, a);
    auto r = vol.Read(3 << 20, 4096, buf.data());
    ASSERT_FALSE(r.ok()) << "a truncated upper served " << r.value() << " bytes";
    EXPECT_EQ(r.status().os_errno(), EIO) << r.status().ToString();
    EXPECT_NE(r.status().message().find(data), std::string::npos) << r.status().ToString();
    auto plan = vol.PlanRead(3 << 20, 4096);
    ASSERT_FALSE(plan.ok());
    EXPECT_EQ(plan.status().os_errno(), EIO);
    // Unmapped ranges still come from the lower layer.
    ASSERT_TRUE(vol.Read(0, 65536, buf.data()).ok());
    EXPECT_EQ(std::memcmp(buf.data(), shadow_.data(), 65536), 0);
  };
  // While open...
  ASSERT_EQ(::truncate(data.c_str(), static_cast<off_t>(Upper::DataOffset(2 << 20))), 0);
  check(*v);
  // ...and after reopening, where the store can tell by the sizes.
  v.reset();
  v = Reopen();
  ASSERT_NE(v, nullptr);
  check(*v);
  EXPECT_GT(v->stack()->upper->DataBytesNeeded(), std::filesystem::file_size(data));
}

// ---- Journal: reading costs what the records cost ----------------------------

// Counts the bytes read from journal files through it.
class CountingEnv : public EnvWrapper {
 public:
  using EnvWrapper::EnvWrapper;
  std::atomic<uint64_t> journal_bytes{0};

  Result<std::unique_ptr<RWFile>> OpenRW(const std::string& path, bool create) override {
    OVBD_ASSIGN_OR_RETURN(auto f, target()->OpenRW(path, create));
    if (path.size() < 4 || path.compare(path.size() - 4, 4, ".jnl") != 0) return f;
    return std::unique_ptr<RWFile>(std::make_unique<File>(std::move(f), &journal_bytes));
  }

 private:
  class File : public test::ForwardingRWFile {
   public:
    File(std::unique_ptr<RWFile> f, std::atomic<uint64_t>* n) : ForwardingRWFile(std::move(f)), n_(n) {}
    Status ReadAt(uint64_t off, size_t n, char* buf, size_t* got) const override {
      Status s = ForwardingRWFile::ReadAt(off, n, buf, got);
      *n_ += *got;
      return s;
    }

   private:
    std::atomic<uint64_t>* n_;
  };
};

TEST_F(UpperTest, SparseJournalTailCostsNothingAndLosesNoRecord) {
  auto v = Create();
  std::vector<char> d(4096);
  for (int i = 0; i < 40; ++i) {
    std::fill(d.begin(), d.end(), static_cast<char>('A' + i % 26));
    ASSERT_TRUE(v->Write(i * 65536, d.data(), d.size()).ok());
    ASSERT_TRUE(v->Flush().ok());
    std::memcpy(shadow_.data() + i * 65536, d.data(), d.size());
  }
  v.reset();
  const std::string base = dir_.Sub("up");
  const std::string jnl = Upper::JournalPath(base);
  const uint64_t jsize = std::filesystem::file_size(jnl);
  CountingEnv counting(Env::Default());
  const auto open_timed = [&](bool read_only, uint64_t* bytes, double* ms) {
    counting.journal_bytes = 0;
    const auto t0 = std::chrono::steady_clock::now();
    auto u = Upper::Open(&counting, base, kSize, read_only);
    *ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    *bytes = counting.journal_bytes;
    return u;
  };
  uint64_t plain_bytes = 0, sparse_bytes = 0;
  double plain_ms = 0, sparse_ms = 0;
  ASSERT_TRUE(open_timed(true, &plain_bytes, &plain_ms).ok());

  // Extended sparsely to 1 GiB (a crash of some tool, or `truncate -s 1G`).
  ASSERT_EQ(::truncate(jnl.c_str(), 1 << 30), 0);
  {
    auto f = Env::Default()->OpenReadable(jnl);
    ASSERT_TRUE(f.ok());
    auto run = f.value()->NextData(jsize);
    ASSERT_TRUE(run.ok());
    if (run->end >= (1ull << 30)) {
      GTEST_SKIP() << "the filesystem holding " << jnl << " does not report holes (SEEK_HOLE)";
    }
  }
  auto ro = open_timed(true, &sparse_bytes, &sparse_ms);
  ASSERT_TRUE(ro.ok()) << ro.status().ToString();
  std::cout << "open: " << plain_ms << " ms (" << plain_bytes << " journal bytes read), with a "
            << "1 GiB sparse tail " << sparse_ms << " ms (" << sparse_bytes << " bytes)\n";
  // The tail is not read (at most the rest of the last data block).
  EXPECT_LE(sparse_bytes, plain_bytes + 8192);
  EXPECT_EQ(ro.value()->torn_tail_bytes(), (1ull << 30) - jsize);
  EXPECT_EQ(ro.value()->Stats().journal_records, 40u);
  ro.value().reset();

  // A damaged record is still told from a torn tail, and a record past a
  // hole is still found (holes are skipped, data is not): records 38 and 39
  // are wiped, and record 39 is put far out, past a hole.
  char recs[64];
  const std::string zeros(64, '\0');
  {
    auto f = Env::Default()->OpenRW(jnl, false);
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE(f.value()->ReadExact(4096 + 32 * 38, 64, recs).ok());
    ASSERT_TRUE(f.value()->WriteAt(4096 + 32 * 38, zeros.data(), 64).ok());
    ASSERT_TRUE(f.value()->WriteAt(512ull << 20, recs + 32, 32).ok());
    ASSERT_TRUE(f.value()->Truncate(1ull << 30).ok());
  }
  uint64_t bytes = 0;
  double ms = 0;
  auto damaged = open_timed(true, &bytes, &ms);
  ASSERT_FALSE(damaged.ok());
  EXPECT_NE(damaged.status().message().find("record 38 is damaged and 1 valid records follow"),
            std::string::npos)
      << damaged.status().ToString();
  EXPECT_LE(bytes, plain_bytes + 3 * 8192);
  {
    auto f = Env::Default()->OpenRW(jnl, false);
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE(f.value()->WriteAt(4096 + 32 * 38, recs, 64).ok());
    ASSERT_TRUE(f.value()->WriteAt(512ull << 20, zeros.data(), 32).ok());
    ASSERT_TRUE(f.value()->PunchHole(512ull << 20, 4096).ok());
  }

  // Opened for writing, the tail is cut and every record is there.
  auto rw = open_timed(false, &bytes, &ms);
  ASSERT_TRUE(rw.ok()) << rw.status().ToString();
  EXPECT_EQ(std::filesystem::file_size(jnl), jsize);
  Volume vol("v", kSize, {lower_}, std::shared_ptr<Upper>(std::move(rw).value()), false);
  EXPECT_EQ(ReadAll(vol), shadow_);
}

TEST_F(UpperTest, CutJournalAtDamageCountsWhatItDrops) {
  ASSERT_NO_FATAL_FAILURE(WriteTenRecords(9));
  const std::string jnl = JournalPath();
  ASSERT_TRUE(test::FlipBits(env_, jnl, 4096 + 32 * 6 + 20).ok());
  {
    auto f = env_->OpenRW(jnl, false);
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE(f.value()->Truncate(1ull << 30).ok());  // and a sparse tail
  }
  ASSERT_FALSE(Upper::Open(env_, dir_.Sub("up"), kSize).ok());
  auto dropped = Upper::CutJournalAtDamage(env_, dir_.Sub("up"), kSize);
  ASSERT_TRUE(dropped.ok()) << dropped.status().ToString();
  EXPECT_EQ(dropped.value(), 4u);  // record 6 and the three after it
  EXPECT_EQ(std::filesystem::file_size(jnl), 4096u + 6 * 32);
  auto u = Upper::Open(env_, dir_.Sub("up"), kSize);
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u.value()->Stats().journal_records, 6u);
}

// ---- Failures while creating files leave nothing behind -----------------------

std::set<std::string> Names(const std::string& dir) {
  std::set<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) out.insert(e.path().filename());
  return out;
}

TEST_F(UpperTest, FailedCreateRemovesWhatItCreated) {
  const auto before = Names(dir_.path());
  struct Fault {
    FaultFilter filter;
    const char* path;
  };
  const Fault faults[] = {
      {FaultFilter::kOpen, ".data"},   {FaultFilter::kWrites, ".data"},
      {FaultFilter::kSyncs, ".data"},  {FaultFilter::kOpen, ".jnl"},
      {FaultFilter::kWrites, ".jnl"},  {FaultFilter::kSyncs, ".jnl"},
      {FaultFilter::kDirSync, ""},
  };
  for (int err : {ENOSPC, EIO}) {
    for (const Fault& f : faults) {
      FaultInjectionEnv fenv(Env::Default(), 1);
      fenv.FailWith(err, f.filter, f.path);
      auto u = Upper::Create(&fenv, dir_.Sub("up"), kSize, lsmt::NewUuid(), "");
      ASSERT_FALSE(u.ok()) << f.path;
      EXPECT_EQ(u.status().os_errno(), err) << u.status().ToString();
      EXPECT_EQ(Names(dir_.path()), before) << "left behind after " << u.status().ToString();
    }
  }
  // A file that was there already is not ours to remove.
  ASSERT_TRUE(test::WriteWholeFile(env_, Upper::JournalPath(dir_.Sub("up")), {'j'}).ok());
  auto u = Upper::Create(env_, dir_.Sub("up"), kSize, lsmt::NewUuid(), "");
  ASSERT_FALSE(u.ok());
  auto names = Names(dir_.path());
  EXPECT_TRUE(names.count("up.jnl"));
  EXPECT_FALSE(names.count("up.data"));
  ASSERT_TRUE(env_->Remove(Upper::JournalPath(dir_.Sub("up"))).ok());
  ASSERT_TRUE(test::WriteWholeFile(env_, Upper::DataPath(dir_.Sub("up")), {'d'}).ok());
  EXPECT_FALSE(Upper::Create(env_, dir_.Sub("up"), kSize, lsmt::NewUuid(), "").ok());
  EXPECT_EQ(std::filesystem::file_size(Upper::DataPath(dir_.Sub("up"))), 1u);
  EXPECT_FALSE(Names(dir_.path()).count("up.jnl"));
}

TEST_F(UpperTest, FailedCompactionRemovesItsNewJournal) {
  FaultInjectionEnv fenv(Env::Default(), 1);
  auto u = Upper::Create(&fenv, dir_.Sub("up"), kSize, lsmt::NewUuid(), "");
  ASSERT_TRUE(u.ok());
  u.value()->set_compact_min_records(8);
  Volume v("v", kSize, {lower_}, std::shared_ptr<Upper>(std::move(u).value()), false);
  std::vector<char> d(4096, 3);
  for (int i = 0; i < 7; ++i) {  // the same range again and again: one extent
    ASSERT_TRUE(v.Write(0, d.data(), d.size()).ok());
    ASSERT_TRUE(v.Flush().ok());
  }
  std::memcpy(shadow_.data(), d.data(), d.size());
  fenv.FailWith(ENOSPC, FaultFilter::kWrites, ".compact");
  ASSERT_TRUE(v.Write(0, d.data(), d.size()).ok());
  Status s = v.Flush();
  ASSERT_TRUE(s.IsNoSpace()) << s.ToString();
  for (const auto& n : Names(dir_.path())) EXPECT_EQ(n.find(".compact"), std::string::npos) << n;
  fenv.ClearFailures();
  ASSERT_TRUE(v.Flush().ok());
  EXPECT_EQ(v.Stats().upper.compactions, 1u);
  EXPECT_EQ(ReadAll(v), shadow_);
}

// ---- Crash consistency -------------------------------------------------------

class CrashTest : public ::testing::TestWithParam<int> {};

TEST_P(CrashTest, EverySectorOldOrNewAndEveryCommitDurable) {
  const int seed = GetParam();
  test::TempDir dir;
  std::vector<char> base;
  auto lower = MakeLower(Env::Default(), dir.path(), &base, 100 + seed);
  std::mt19937_64 rng(seed);
  FaultInjectionEnv fenv(Env::Default(), static_cast<uint64_t>(seed));
  const std::string up = dir.Sub("up");
  {
    auto u = Upper::Create(&fenv, up, kSize, lsmt::NewUuid(), "");
    ASSERT_TRUE(u.ok());
  }
  test::SectorModel model(base);
  for (int crash = 0; crash < 8; ++crash) {
    auto u = Upper::Open(&fenv, up, kSize);
    ASSERT_TRUE(u.ok()) << "crash " << crash << ": " << u.status().ToString();
    u.value()->set_compact_min_records(32);
    Volume v("v", kSize, {lower}, std::shared_ptr<Upper>(std::move(u).value()), false);
    // Recovery check: every sector is one of its allowed versions.
    auto now = ReadAll(v);
    const auto bad = model.FirstImpossibleSector(now);
    ASSERT_FALSE(bad) << "seed " << seed << " crash " << crash << ": sector " << *bad
                      << " holds neither a committed nor a later version";
    // What we read back is now the state; it is durable by the end of the
    // next successful commit.
    model.Recovered(std::move(now));
    fenv.CrashAfterOps(5 + rng() % 120);
    fenv.SetTearOnCrash(true);
    for (int i = 0; i < 400 && !fenv.crashed(); ++i) {
      uint64_t off = rng() % kSize;
      uint64_t len = std::min<uint64_t>(1 + rng() % 20000, kSize - off);
      int op = static_cast<int>(rng() % 10);
      if (op < 6) {
        auto d = test::RandomBytes(rng, len);
        // Only a write that returned OK may appear; a failed one may too
        // (its sectors were on their way), so record it either way.
        model.Apply(off, d.data(), len);
        (void)v.Write(off, d.data(), len);
      } else if (op < 8) {
        model.Apply(off, nullptr, len);
        (void)v.Discard(off, len);
      } else {
        if (v.Flush().ok()) model.Commit();
      }
    }
    fenv.DisarmCrashes();
    const PowerLossMode modes[] = {PowerLossMode::kRandomSectors, PowerLossMode::kDropAll,
                                   PowerLossMode::kTornLast};
    ASSERT_TRUE(fenv.SimulatePowerLoss(modes[crash % 3]).ok());
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, CrashTest, ::testing::Range(1, 13));

}  // namespace
}  // namespace ovbd
