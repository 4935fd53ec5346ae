// Preallocation of the upper's data file: a reservation ahead of writes
// that never decides what a range reads, is freed exactly by discards,
// given back by a seal, reported apart in the stats, and changes nothing
// about what survives a crash.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <random>

#include "fault_env.h"
#include "forwarding_file.h"
#include "ovbd/layer/layer_open.h"
#include "ovbd/layer/lsmt_writer.h"
#include "ovbd/layer/upper.h"
#include "ovbd/volume/volume.h"
#include "test_util.h"

namespace ovbd {
namespace {

constexpr uint64_t kSize = 8 << 20;
constexpr uint64_t kGranule = 1 << 20;

class UpperPreallocTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // A lower layer full of random data, so a range that wrongly read the
    // upper's (zero) reservation would differ from what it must read.
    std::mt19937_64 rng(7);
    lower_img_ = test::RandomBytes(rng, kSize);
    ASSERT_TRUE(test::WriteWholeFile(Env::Default(), dir_.Sub("raw"), lower_img_).ok());
    auto raw = Env::Default()->OpenReadable(dir_.Sub("raw"));
    auto out = Env::Default()->OpenRW(dir_.Sub("lower"), true);
    ASSERT_TRUE(raw.ok() && out.ok());
    ASSERT_TRUE(lsmt::CreateFromRaw(*raw.value(), out.value().get(), {}).ok());
    auto l = OpenLayer(Env::Default(), dir_.Sub("lower"));
    ASSERT_TRUE(l.ok()) << l.status().ToString();
    lower_ = l.value();
    shadow_ = lower_img_;
  }

  // A new upper (or the existing one reopened) in a volume over the lower.
  void Make(Env* env, bool create) {
    v_.reset();
    auto u = create ? Upper::Create(env, dir_.Sub("up"), kSize, lsmt::NewUuid(), "")
                    : Upper::Open(env, dir_.Sub("up"), kSize);
    ASSERT_TRUE(u.ok()) << u.status().ToString();
    up_ = std::shared_ptr<Upper>(std::move(u).value());
    up_->set_prealloc_granule(kGranule);
    v_ = std::make_unique<Volume>("v", kSize, std::vector{lower_}, up_, false);
  }

  // Skips when the filesystem under the test directory does not preallocate.
  bool PreallocWorks() {
    auto f = Env::Default()->OpenRW(dir_.Sub("probe"), true);
    if (!f.ok()) return false;
    if (!f.value()->Preallocate(0, kGranule).ok()) return false;
    auto a = f.value()->AllocatedBytes();
    return a.ok() && a.value() >= kGranule && f.value()->Size() == 0;
  }

  void Write(uint64_t off, uint64_t len, uint64_t seed) {
    std::mt19937_64 rng(seed);
    auto d = test::RandomBytes(rng, len);
    auto n = v_->Write(off, d.data(), len);
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    std::memcpy(shadow_.data() + off, d.data(), len);
  }
  void Discard(uint64_t off, uint64_t len) {
    ASSERT_TRUE(v_->Discard(off, len).ok());
    std::memset(shadow_.data() + off, 0, len);
  }
  void ExpectShadow(const char* what) {
    std::vector<char> buf(kSize);
    auto n = v_->Read(0, kSize, buf.data());
    ASSERT_TRUE(n.ok()) << n.status().ToString();
    for (uint64_t s = 0; s < kSize; s += 512) {
      ASSERT_EQ(0, std::memcmp(buf.data() + s, shadow_.data() + s, 512))
          << what << ": sector " << s / 512 << " reads the wrong contents";
    }
  }
  uint64_t Allocated() {
    auto a = up_->data_file()->AllocatedBytes();
    EXPECT_TRUE(a.ok());
    return a.ok() ? a.value() : 0;
  }

  test::TempDir dir_;
  std::vector<char> lower_img_, shadow_;
  std::shared_ptr<lsmt::Layer> lower_;
  std::shared_ptr<Upper> up_;
  std::unique_ptr<Volume> v_;
};

TEST_F(UpperPreallocTest, ReservedButUnwrittenRangesReadWhatTheMapSays) {
  if (!PreallocWorks()) GTEST_SKIP() << "the filesystem of the test directory does not preallocate";
  Make(Env::Default(), true);
  const uint64_t before = Allocated();
  Write(kGranule + 8192, 4096, 1);  // reserves granule 1
  Write(3 * kGranule + kGranule - 4096, 8192, 2);  // spans granules 3 and 4
  EXPECT_GE(Allocated() - before, 3 * kGranule) << "the granules were not reserved";
  // Everything but the written sectors still reads from the lower: the
  // reservation reads zeros in the data file, which must never show.
  ExpectShadow("after writes");
  Discard(kGranule + 65536, 65536);  // zeroed inside a reserved granule
  ExpectShadow("after a discard");
  ASSERT_TRUE(v_->Flush().ok());
  Make(Env::Default(), false);
  ExpectShadow("after reopen");
}

TEST_F(UpperPreallocTest, DiscardFreesExactlyItsRange) {
  if (!PreallocWorks()) GTEST_SKIP() << "the filesystem of the test directory does not preallocate";
  Make(Env::Default(), true);
  Write(2 * kGranule, 4096, 3);
  const uint64_t before = Allocated();
  Discard(2 * kGranule + 131072, 65536);
  EXPECT_EQ(before - Allocated(), 65536u) << "a discard must free its range, no more, no less";
  ExpectShadow("after the discard");
}

TEST_F(UpperPreallocTest, StatsReportReservedSpaceApart) {
  if (!PreallocWorks()) GTEST_SKIP() << "the filesystem of the test directory does not preallocate";
  Make(Env::Default(), true);
  Write(0, 4096, 4);
  Write(5 * kGranule + 4096, 12288, 5);
  UpperStats st = up_->Stats();
  EXPECT_EQ(st.preallocated_bytes, 2 * kGranule - 16384);
  EXPECT_GE(st.allocated_bytes, 2 * kGranule) << "allocated_bytes counts the reservation";
  // Zeroed ranges are punched: no longer reserved.
  Discard(5 * kGranule + 65536, 65536);
  EXPECT_EQ(up_->Stats().preallocated_bytes, 2 * kGranule - 16384 - 65536);
  // Without preallocation nothing is reserved.
  up_->set_prealloc_granule(0);
  Write(7 * kGranule, 4096, 6);
  EXPECT_EQ(up_->Stats().preallocated_bytes, 0u);
}

TEST_F(UpperPreallocTest, SealGivesBackUnmappedReservations) {
  if (!PreallocWorks()) GTEST_SKIP() << "the filesystem of the test directory does not preallocate";
  Make(Env::Default(), true);
  Write(0, 4096, 7);
  Write(3 * kGranule + 4096, 4096, 8);
  Write(6 * kGranule + 512 * 1024, 65536, 9);
  Discard(3 * kGranule + 65536, 4096);
  ASSERT_TRUE(v_->Flush().ok());
  auto sealed = up_->Seal("test");
  ASSERT_TRUE(sealed.ok()) << sealed.status().ToString();
  // Header, 72 KiB of data, index and trailer: far less than one granule.
  EXPECT_LT(Allocated(), 256u * 1024) << "the seal kept reserved space in the layer";
  // The trailer sits where the index says, past the whole data area, and the
  // sealed file reads as the upper did (what the upper holds; zeros elsewhere).
  EXPECT_EQ(sealed.value().header.index_offset % 4096, 0u);
  EXPECT_GE(sealed.value().header.index_offset, Upper::DataOffset(kSize));
  v_.reset();
  up_.reset();
  auto layer = OpenLayer(Env::Default(), dir_.Sub("up") + ".data");
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  Volume only("s", kSize, {lower_, layer.value()}, nullptr, true);
  std::vector<char> buf(kSize);
  ASSERT_TRUE(only.Read(0, kSize, buf.data()).ok());
  EXPECT_EQ(0, std::memcmp(buf.data(), shadow_.data(), kSize));
}

TEST_F(UpperPreallocTest, FillMapsOnlyWhatItWritesAndReservesNothing) {
  if (!PreallocWorks()) GTEST_SKIP() << "the filesystem of the test directory does not preallocate";
  Make(Env::Default(), true);
  Write(kGranule + 8192, 4096, 11);  // reserves granule 1
  // Hydration's fill into the reserved granule: the lower's bytes, so the
  // volume reads the same before and after.
  const uint64_t foff = kGranule + 131072, flen = 65536;
  auto n = up_->Fill(foff, lower_img_.data() + foff, flen);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(n.value(), flen);
  uint64_t data = 0;
  up_->Walk(kGranule, kGranule, [&](uint64_t o, uint64_t len, UpperPiece p) {
    if (p == UpperPiece::kAbsent) return;
    EXPECT_EQ(p, UpperPiece::kData);
    EXPECT_TRUE((o >= kGranule + 8192 && o + len <= kGranule + 12288) ||
                (o >= foff && o + len <= foff + flen))
        << "[" << o << ", " << o + len << ") is mapped but was never written";
    data += len;
  });
  EXPECT_EQ(data, 4096 + flen);
  EXPECT_EQ(up_->Stats().preallocated_bytes, kGranule - 4096 - flen);
  ExpectShadow("after a fill into a reserved granule");

  // Into a granule no write reserved: the fill takes just its data.
  const uint64_t before = Allocated();
  const uint64_t goff = 4 * kGranule + 4096;
  n = up_->Fill(goff, lower_img_.data() + goff, flen);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_LT(Allocated() - before, kGranule / 2) << "a fill reserved its granule";
  EXPECT_EQ(up_->Stats().preallocated_bytes, kGranule - 4096 - flen);
  ASSERT_TRUE(v_->Flush().ok());
  Make(Env::Default(), false);
  ExpectShadow("after reopen");
}

// An Env reporting as little free space as the test says.
class LowSpaceEnv : public EnvWrapper {
 public:
  explicit LowSpaceEnv(Env* base) : EnvWrapper(base) {}
  Result<FsSpace> SpaceOf(const std::string& path) override {
    auto s = EnvWrapper::SpaceOf(path);
    if (!s.ok()) return s;
    s->blocks_avail = std::min<uint64_t>(s->blocks_avail, avail.load() / s->block_size);
    return s;
  }
  std::atomic<uint64_t> avail{0};
};

TEST_F(UpperPreallocTest, NoReservationTakesTheLastFreeSpace) {
  if (!PreallocWorks()) GTEST_SKIP() << "the filesystem of the test directory does not preallocate";
  LowSpaceEnv env(Env::Default());
  env.avail = Upper::kPreallocHeadroom + kGranule / 2;  // not a granule besides the headroom
  Make(&env, true);
  const uint64_t before = Allocated();
  Write(2 * kGranule, 4096, 12);
  EXPECT_LT(Allocated() - before, kGranule / 2) << "reserved into the headroom";
  EXPECT_EQ(up_->Stats().preallocated_bytes, 0u);
  ExpectShadow("after a write without a reservation");
  // With room again, a first write elsewhere reserves as usual.
  env.avail = Upper::kPreallocHeadroom + 16 * kGranule;
  Write(6 * kGranule, 4096, 13);
  EXPECT_EQ(up_->Stats().preallocated_bytes, kGranule - 4096);
  ExpectShadow("after a reserved write");
  // The seal also gives back what the skipped granule may hold.
  ASSERT_TRUE(v_->Flush().ok());
  ASSERT_TRUE(up_->Seal("test").ok());
  EXPECT_LT(Allocated(), 256u * 1024) << "the seal kept reserved space in the layer";
}

// Data files whose next write stores its first half and then fails with
// ENOSPC, as a filesystem filling up mid-write does.
class ShortWriteFile : public test::ForwardingRWFile {
 public:
  ShortWriteFile(std::unique_ptr<RWFile> base, std::atomic<bool>* fail)
      : ForwardingRWFile(std::move(base)), fail_(fail) {}
  Status WriteAt(uint64_t off, const char* buf, size_t n) override {
    if (!fail_->exchange(false)) return ForwardingRWFile::WriteAt(off, buf, n);
    OVBD_RETURN_IF_ERROR(ForwardingRWFile::WriteAt(off, buf, n / 2));
    return Status::NoSpace(Name() + ": full (test)");
  }

 private:
  std::atomic<bool>* fail_;
};

class ShortWriteEnv : public EnvWrapper {
 public:
  explicit ShortWriteEnv(Env* base) : EnvWrapper(base) {}
  Result<std::unique_ptr<RWFile>> OpenRW(const std::string& path, bool create) override {
    OVBD_ASSIGN_OR_RETURN(auto f, EnvWrapper::OpenRW(path, create));
    if (path.size() < 5 || path.compare(path.size() - 5, 5, ".data") != 0) return f;
    return std::unique_ptr<RWFile>(std::make_unique<ShortWriteFile>(std::move(f), &fail_next));
  }
  std::atomic<bool> fail_next{false};
};

TEST_F(UpperPreallocTest, AFailedWriteGivesBackWhatItAllocated) {
  if (!PreallocWorks()) GTEST_SKIP() << "the filesystem of the test directory does not preallocate";
  ShortWriteEnv env(Env::Default());
  Make(&env, true);
  up_->set_prealloc_granule(0);  // first: allocation at write time only
  std::mt19937_64 rng(14);
  const auto d = test::RandomBytes(rng, 262144);
  uint64_t before = Allocated();
  env.fail_next = true;
  EXPECT_TRUE(v_->Write(3 * kGranule, d.data(), d.size()).status().IsNoSpace());
  EXPECT_EQ(Allocated(), before) << "the failed write's blocks stayed allocated";
  ExpectShadow("after a failed write");  // the range still reads the lower
  env.fail_next = true;
  EXPECT_TRUE(up_->Fill(5 * kGranule, lower_img_.data() + 5 * kGranule, 262144).status().IsNoSpace());
  EXPECT_EQ(Allocated(), before) << "the failed fill's blocks stayed allocated";
  // A failed overwrite leaves the data that was there mapped (old or new
  // bytes, as a disk would) and allocated.
  Write(6 * kGranule, 65536, 15);
  before = Allocated();
  env.fail_next = true;
  EXPECT_FALSE(v_->Write(6 * kGranule, d.data(), 65536).ok());
  EXPECT_EQ(Allocated(), before);
  uint64_t data = 0;
  up_->Walk(6 * kGranule, 65536, [&](uint64_t, uint64_t n, UpperPiece p) {
    if (p == UpperPiece::kData) data += n;
  });
  EXPECT_EQ(data, 65536u);
  // Into a reserved granule: nothing new was allocated, the reservation stays.
  up_->set_prealloc_granule(kGranule);
  Write(7 * kGranule, 4096, 16);
  before = Allocated();
  env.fail_next = true;
  EXPECT_FALSE(v_->Write(7 * kGranule + 65536, d.data(), 65536).ok());
  EXPECT_EQ(Allocated(), before);
  EXPECT_EQ(up_->Stats().preallocated_bytes, kGranule - 4096);
}

TEST_F(UpperPreallocTest, PowerLossKeepsContentExact) {
  if (!PreallocWorks()) GTEST_SKIP() << "the filesystem of the test directory does not preallocate";
  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(round);
    FaultInjectionEnv fenv(Env::Default(), static_cast<uint64_t>(round));
    Make(&fenv, round == 0);
    if (round == 0) ExpectShadow("fresh");
    // Committed writes survive; uncommitted ones into reserved granules
    // vanish without a trace: the sectors read the lower again.
    Write(round * kGranule + 4096, 4096, 10 + round);
    Write((round + 4) * kGranule, 65536, 20 + round);
    Discard(round * kGranule + 262144, 8192);
    ASSERT_TRUE(v_->Flush().ok());
    const std::vector<char> committed = shadow_;
    EXPECT_GE(up_->Stats().allocated_bytes, 2 * kGranule) << "preallocation reached the file";
    Write(round * kGranule + 512 * 1024, 4096, 30 + round);
    Write(7 * kGranule + 4096 * round, 4096, 40 + round);
    v_.reset();
    up_.reset();
    ASSERT_TRUE(fenv.SimulatePowerLoss(PowerLossMode::kDropAll).ok());
    shadow_ = committed;
    Make(&fenv, false);
    ExpectShadow("after power loss");
    v_.reset();
    up_.reset();
  }
}

}  // namespace
}  // namespace ovbd
