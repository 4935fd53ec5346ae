// Preallocation of the upper's data file: a reservation ahead of writes
// that never decides what a range reads, is freed exactly by discards,
// given back by a seal, reported apart in the stats, and changes nothing
// about what survives a crash.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "fault_env.h"
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
