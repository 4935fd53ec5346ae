// The writable upper, through a Volume: random I/O against a shadow image,
// reopen, sealing, space accounting, and crash consistency under injected
// process crashes and power loss.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <random>
#include <set>

#include "fault_env.h"
#include "ovbd/layer/layer_open.h"
#include "ovbd/layer/lsmt_writer.h"
#include "ovbd/layer/upper.h"
#include "ovbd/volume/volume.h"
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
        auto data = test::RandomBytes(rng, len);
        auto n = v->Write(off, data.data(), len);
        ASSERT_TRUE(n.ok()) << n.status().ToString();
        ASSERT_EQ(n.value(), len);
        std::memcpy(shadow_.data() + off, data.data(), len);
      } else if (op < 9) {
        ASSERT_TRUE(v->Discard(off, len).ok());
        std::memset(shadow_.data() + off, 0, len);
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
      ASSERT_TRUE(v->Discard(off, len).ok());
      std::memset(shadow_.data() + off, 0, len);
    } else {
      auto d = test::RandomBytes(rng, len);
      ASSERT_TRUE(v->Write(off, d.data(), len).ok());
      std::memcpy(shadow_.data() + off, d.data(), len);
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
    auto d = test::RandomBytes(rng, 512);
    ASSERT_TRUE(v->Write(off, d.data(), 512).ok());
    std::memcpy(shadow_.data() + off, d.data(), 512);
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
  auto v = Create();
  std::vector<char> d(4096, 7);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(v->Write(i * 8192, d.data(), d.size()).ok());
    ASSERT_TRUE(v->Flush().ok());
  }
  v.reset();
  const std::string jnl = Upper::JournalPath(dir_.Sub("up"));
  auto f = env_->OpenRW(jnl, false);
  ASSERT_TRUE(f.ok());
  const uint64_t size = f.value()->Size();
  // Garbage appended after the last record (a torn batch): dropped silently.
  std::string junk(40, '\x5a');
  ASSERT_TRUE(f.value()->WriteAt(size, junk.data(), junk.size()).ok());
  f.value().reset();
  v = Reopen();
  ASSERT_NE(v, nullptr);
  for (int i = 0; i < 10; ++i) {
    std::vector<char> b(4096);
    ASSERT_TRUE(v->Read(i * 8192, 4096, b.data()).ok());
    EXPECT_EQ(b, d);
  }
  v.reset();
  // A damaged record followed by valid ones: refuse to open, name the problem.
  f = env_->OpenRW(jnl, false);
  char byte = 0;
  size_t got;
  ASSERT_TRUE(f.value()->ReadAt(4096 + 32 * 3 + 20, 1, &byte, &got).ok());
  byte ^= 1;
  ASSERT_TRUE(f.value()->WriteAt(4096 + 32 * 3 + 20, &byte, 1).ok());
  f.value().reset();
  auto u = Upper::Open(env_, dir_.Sub("up"), kSize);
  ASSERT_FALSE(u.ok());
  EXPECT_TRUE(u.status().IsCorruption());
  EXPECT_NE(u.status().message().find("valid records follow"), std::string::npos)
      << u.status().ToString();
}

// ---- Crash consistency -------------------------------------------------------

// Per sector: every version it may legitimately hold after a crash.
struct SectorModel {
  std::vector<std::set<std::string>> allowed;  // sector -> hashes
  std::vector<char> current;

  explicit SectorModel(const std::vector<char>& base) : allowed(base.size() / 512), current(base) {
    Commit();
  }
  static std::string Hash(const char* p) { return std::string(p, 512); }
  void Apply(uint64_t off, const char* data, uint64_t len) {
    if (data) {
      std::memcpy(current.data() + off, data, len);
    } else {
      std::memset(current.data() + off, 0, len);
    }
    for (uint64_t s = off / 512; s < (off + len + 511) / 512; ++s)
      allowed[s].insert(Hash(current.data() + s * 512));
  }
  void Commit() {
    for (size_t s = 0; s < allowed.size(); ++s) allowed[s] = {Hash(current.data() + s * 512)};
  }
};

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
  SectorModel model(base);
  for (int crash = 0; crash < 8; ++crash) {
    auto u = Upper::Open(&fenv, up, kSize);
    ASSERT_TRUE(u.ok()) << "crash " << crash << ": " << u.status().ToString();
    u.value()->set_compact_min_records(32);
    Volume v("v", kSize, {lower}, std::shared_ptr<Upper>(std::move(u).value()), false);
    // Recovery check: every sector is one of its allowed versions.
    auto now = ReadAll(v);
    for (size_t s = 0; s < model.allowed.size(); ++s) {
      ASSERT_TRUE(model.allowed[s].count(SectorModel::Hash(now.data() + s * 512)))
          << "seed " << seed << " crash " << crash << ": sector " << s << " holds neither a "
          << "committed nor a later version";
    }
    // What we read back is now the state; it is durable by the end of the
    // next successful commit.
    model.current = now;
    model.Commit();
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
