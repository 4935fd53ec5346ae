// Faults while running: ENOSPC and EIO from the backing filesystem, layer
// files damaged or changed behind the daemon's back. Nothing acknowledged is
// lost, the volume keeps working where it can, bad data is never served.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <random>

#include "ovbd/io/fault_env.h"
#include "ovbd/layer/lsmt_writer.h"
#include "ovbd/layer/zfile.h"
#include "ovbd/store/store.h"
#include "test_util.h"

namespace ovbd {
namespace {

constexpr uint64_t kSize = 4 << 20;

class FaultTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::mt19937_64 rng(3);
    // A lower layer with data in its first 2 MiB.
    raw_.assign(kSize, 0);
    auto d = test::RandomBytes(rng, 2 << 20);
    std::memcpy(raw_.data(), d.data(), d.size());
    ASSERT_TRUE(test::WriteWholeFile(Env::Default(), dir_.Sub("raw"), raw_).ok());
    auto in = Env::Default()->OpenReadable(dir_.Sub("raw"));
    auto out = Env::Default()->OpenRW(dir_.Sub("lower.lsmt"), true);
    ASSERT_TRUE(lsmt::CreateFromRaw(*in.value(), out.value().get(), {}).ok());
    out.value().reset();
    in = Env::Default()->OpenReadable(dir_.Sub("lower.lsmt"));
    out = Env::Default()->OpenRW(dir_.Sub("lower.zfile"), true);
    ASSERT_TRUE(zfile::Write(*in.value(), out.value().get(), {}).ok());
    path_ = dir_.Sub("store");
    ASSERT_TRUE(Store::Init(&env_, path_).ok());
  }
  std::unique_ptr<Store> OpenStore() {
    auto s = Store::Open(&env_, path_);
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(s).value() : nullptr;
  }

  test::TempDir dir_;
  FaultInjectionEnv env_{Env::Default(), 9};
  std::string path_;
  std::vector<char> raw_;
};

TEST_F(FaultTest, EnospcFailsWritesKeepsAcknowledgedDataAndRecovers) {
  auto store = OpenStore();
  ASSERT_TRUE(store->CreateVolume("v", kSize, {dir_.Sub("lower.lsmt")}, {}).ok());
  auto v = store->Acquire("v").value();
  std::vector<char> a(65536, 'a'), b(65536, 'b');
  ASSERT_TRUE(v->Write(0, a.data(), a.size()).ok());
  ASSERT_TRUE(v->Flush().ok());
  // The backing filesystem fills up.
  env_.FailWith(ENOSPC, FaultFilter::kWrites);
  auto w = v->Write(65536, b.data(), b.size());
  ASSERT_FALSE(w.ok());
  EXPECT_TRUE(w.status().IsNoSpace()) << w.status().ToString();
  std::vector<char> got(65536);
  ASSERT_TRUE(v->Read(0, got.size(), got.data()).ok());
  EXPECT_EQ(got, a);
  // Space comes back: no restart needed.
  env_.ClearFailures();
  ASSERT_TRUE(v->Write(65536, b.data(), b.size()).ok());
  ASSERT_TRUE(v->Flush().ok());
  store->Release("v");
  v.reset();
  store.reset();
  ASSERT_TRUE(env_.SimulatePowerLoss(PowerLossMode::kDropAll).ok());
  store = OpenStore();
  v = store->Acquire("v").value();
  ASSERT_TRUE(v->Read(0, got.size(), got.data()).ok());
  EXPECT_EQ(got, a);
  ASSERT_TRUE(v->Read(65536, got.size(), got.data()).ok());
  EXPECT_EQ(got, b);
  store->Release("v");
}

TEST_F(FaultTest, CommitFailureIsRetriedNotLost) {
  auto store = OpenStore();
  ASSERT_TRUE(store->CreateVolume("v", kSize, {}, {}).ok());
  auto v = store->Acquire("v").value();
  std::vector<char> a(8192, 'x');
  ASSERT_TRUE(v->Write(4096, a.data(), a.size()).ok());
  // The journal cannot grow: fsync must report it.
  env_.FailWith(ENOSPC, FaultFilter::kWrites, ".jnl");
  EXPECT_FALSE(v->Flush().ok());
  env_.FailWith(EIO, FaultFilter::kSyncs, ".data");
  EXPECT_FALSE(v->Flush().ok());
  env_.ClearFailures();
  ASSERT_TRUE(v->Flush().ok());
  store->Release("v");
  v.reset();
  store.reset();
  ASSERT_TRUE(env_.SimulatePowerLoss(PowerLossMode::kDropAll).ok());
  store = OpenStore();
  v = store->Acquire("v").value();
  std::vector<char> got(8192);
  ASSERT_TRUE(v->Read(4096, got.size(), got.data()).ok());
  EXPECT_EQ(got, a);
  store->Release("v");
}

TEST_F(FaultTest, EioFromALayerFailsOnlyItsRanges) {
  auto store = OpenStore();
  ASSERT_TRUE(store->CreateVolume("v", kSize, {dir_.Sub("lower.lsmt")}, {}).ok());
  auto v = store->Acquire("v").value();
  std::vector<char> mine(4096, 'm');
  ASSERT_TRUE(v->Write(0, mine.data(), mine.size()).ok());
  env_.FailWith(EIO, FaultFilter::kReads, "sha256-");
  std::vector<char> got(4096);
  auto r = v->Read(8192, got.size(), got.data());  // lower data
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().os_errno(), EIO);
  ASSERT_TRUE(v->Read(0, got.size(), got.data()).ok());  // upper data
  EXPECT_EQ(got, mine);
  ASSERT_TRUE(v->Read(3 << 20, got.size(), got.data()).ok());  // hole: zeros
  EXPECT_TRUE(std::all_of(got.begin(), got.end(), [](char c) { return c == 0; }));
  env_.ClearFailures();
  ASSERT_TRUE(v->Read(8192, got.size(), got.data()).ok());
  EXPECT_EQ(0, std::memcmp(got.data(), raw_.data() + 8192, 4096));
  store->Release("v");
}

TEST_F(FaultTest, CorruptCompressedBlockIsAnErrorNamingTheBlock) {
  // Damage one byte inside the compressed data of the ZFile before import.
  {
    auto f = Env::Default()->OpenRW(dir_.Sub("lower.zfile"), false);
    ASSERT_TRUE(f.ok());
    char c;
    size_t got;
    ASSERT_TRUE(f.value()->ReadAt(512 + 20000, 1, &c, &got).ok());
    c ^= 0x40;
    ASSERT_TRUE(f.value()->WriteAt(512 + 20000, &c, 1).ok());
  }
  auto store = OpenStore();
  // Import validates structure, not every block: the volume is created...
  ASSERT_TRUE(store->CreateVolume("v", kSize, {dir_.Sub("lower.zfile")}, {}).ok());
  auto v = store->Acquire("v").value();
  std::vector<char> all(kSize);
  auto r = v->Read(0, kSize, all.data());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption());
  EXPECT_NE(r.status().message().find("block"), std::string::npos) << r.status().ToString();
  // ...and the rest of the volume still reads.
  std::vector<char> tail(1 << 20);
  ASSERT_TRUE(v->Read(3 << 20, tail.size(), tail.data()).ok());
  store->Release("v");
}

TEST_F(FaultTest, LayerChangedBehindOurBackIsDetectedAndNeverServed) {
  auto store = OpenStore();
  ASSERT_TRUE(store->CreateVolume("v", kSize, {dir_.Sub("lower.lsmt")}, {}).ok());
  auto v = store->Acquire("v").value();
  std::vector<char> got(4096);
  ASSERT_TRUE(v->Read(8192, got.size(), got.data()).ok());
  ASSERT_TRUE(store->VerifyLayerFiles().ok());
  // Someone truncates the layer file in the store.
  const std::string lower = path_ + "/layers/" + store->Lookup("v")->lowers[0];
  std::filesystem::resize_file(lower, std::filesystem::file_size(lower) - 4096);
  // The periodic flush re-checks every open layer and reports it.
  Status s = store->FlushAll();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("size changed"), std::string::npos) << s.ToString();
  auto r = v->Read(8192, got.size(), got.data());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption());
  // Ranges the layer does not map still work.
  ASSERT_TRUE(v->Read(3 << 20, got.size(), got.data()).ok());
  store->Release("v");
}

}  // namespace
}  // namespace ovbd
