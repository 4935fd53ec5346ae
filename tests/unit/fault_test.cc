// Faults while running: ENOSPC and EIO from the backing filesystem, layer
// files damaged or changed behind the daemon's back. Nothing acknowledged is
// lost, the volume keeps working where it can, bad data is never served.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <future>
#include <random>

#include "fault_env.h"
#include "ovbd/layer/lsmt_writer.h"
#include "ovbd/layer/zfile.h"
#include "ovbd/store/store.h"
#include "store_util.h"

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
    store_ = test::OpenStore(&env_, path_);
    ASSERT_NE(store_, nullptr);
  }

  // Creates volume "v" (over `lowers`) and acquires it.
  std::shared_ptr<Volume> NewVolume(const std::vector<std::string>& lowers = {}) {
    Status s = store_->CreateVolume("v", kSize, lowers, {});
    EXPECT_TRUE(s.ok()) << s.ToString();
    return store_->Acquire("v").value();
  }

  // Closes the store, loses everything not synced, opens it again.
  void PowerCycle() {
    store_.reset();
    ASSERT_TRUE(env_.SimulatePowerLoss(PowerLossMode::kDropAll).ok());
    store_ = test::OpenStore(&env_, path_);
    ASSERT_NE(store_, nullptr);
  }

  // The same around volume `name`, held in *v: released before, acquired
  // again after.
  void PowerCycle(const std::string& name, std::shared_ptr<Volume>* v) {
    store_->Release(name);
    v->reset();
    ASSERT_NO_FATAL_FAILURE(PowerCycle());
    auto again = store_->Acquire(name);
    ASSERT_TRUE(again.ok()) << name << ": " << again.status().ToString();
    *v = std::move(again).value();
  }

  // Once a fault is over, volume "v" (held in *v, holding `a` at 0) works
  // on: it takes `b` at 64 KiB and a flush, and both survive a power cycle.
  void ExpectWorksOn(std::shared_ptr<Volume>* v, const std::vector<char>& a,
                     const std::vector<char>& b) {
    ASSERT_TRUE((*v)->Write(65536, b.data(), b.size()).ok());
    ASSERT_TRUE((*v)->Flush().ok());
    ASSERT_NO_FATAL_FAILURE(PowerCycle("v", v));
    ExpectReads(**v, 0, a);
    ExpectReads(**v, 65536, b);
  }

  // v reads `want` at off.
  static void ExpectReads(const Volume& v, uint64_t off, const std::vector<char>& want) {
    std::vector<char> got(want.size());
    auto r = v.Read(off, got.size(), got.data());
    ASSERT_TRUE(r.ok()) << "at " << off << ": " << r.status().ToString();
    EXPECT_EQ(got, want) << "at " << off;
  }

  test::TempDir dir_;
  FaultInjectionEnv env_{Env::Default(), 9};
  std::string path_;
  std::vector<char> raw_;
  std::unique_ptr<Store> store_;  // opened on env_, so closed before it
};

TEST_F(FaultTest, EnospcFailsWritesKeepsAcknowledgedDataAndRecovers) {
  auto v = NewVolume({dir_.Sub("lower.lsmt")});
  std::vector<char> a(65536, 'a'), b(65536, 'b');
  ASSERT_TRUE(v->Write(0, a.data(), a.size()).ok());
  ASSERT_TRUE(v->Flush().ok());
  // The backing filesystem fills up.
  env_.FailWith(ENOSPC, FaultFilter::kWrites);
  auto w = v->Write(65536, b.data(), b.size());
  ASSERT_FALSE(w.ok());
  EXPECT_TRUE(w.status().IsNoSpace()) << w.status().ToString();
  ExpectReads(*v, 0, a);
  // Space comes back: no restart needed.
  env_.ClearFailures();
  ASSERT_NO_FATAL_FAILURE(ExpectWorksOn(&v, a, b));
  store_->Release("v");
}

TEST_F(FaultTest, CommitFailureIsRetriedNotLost) {
  auto v = NewVolume();
  std::vector<char> a(8192, 'x');
  ASSERT_TRUE(v->Write(4096, a.data(), a.size()).ok());
  // The journal cannot grow: fsync must report it.
  env_.FailWith(ENOSPC, FaultFilter::kWrites, ".jnl");
  EXPECT_FALSE(v->Flush().ok());
  env_.FailWith(EIO, FaultFilter::kSyncs, ".data");
  EXPECT_FALSE(v->Flush().ok());
  env_.ClearFailures();
  ASSERT_TRUE(v->Flush().ok());
  ASSERT_NO_FATAL_FAILURE(PowerCycle("v", &v));
  ExpectReads(*v, 4096, a);
  store_->Release("v");
}

// A snapshot whose manifest cannot be written, before any write reached
// the fresh upper: undone; the volume works on, nothing lost, nothing leaked.
TEST_F(FaultTest, SnapshotThatCannotBeRecordedIsUndone) {
  auto v = NewVolume();
  std::vector<char> a(65536, 'a'), b(65536, 'b');
  ASSERT_TRUE(v->Write(0, a.data(), a.size()).ok());
  env_.FailWith(ENOSPC, FaultFilter::kWrites, "volumes/");
  Status s = store_->Snapshot("v", "s1");
  ASSERT_FALSE(s.ok());
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  env_.ClearFailures();
  EXPECT_FALSE(store_->Lookup("v@s1").ok());
  ASSERT_TRUE(v->health().ok()) << v->health().ToString();
  ASSERT_NO_FATAL_FAILURE(ExpectWorksOn(&v, a, b));
  store_->Release("v");
  // Only the volume's own upper is left in layers/.
  size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(path_ + "/layers")) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 2u);
}

// A consistency group whose manifests cannot be staged: undone for every
// volume, none has the snapshot, all keep working.
TEST_F(FaultTest, SnapshotGroupThatCannotBeRecordedIsUndoneEverywhere) {
  ASSERT_TRUE(store_->CreateVolume("a", kSize, {}, {}).ok());
  ASSERT_TRUE(store_->CreateVolume("b", kSize, {}, {}).ok());
  std::vector<char> x(65536, 'x');
  for (const char* n : {"a", "b"}) {
    auto v = store_->Acquire(n).value();
    ASSERT_TRUE(v->Write(0, x.data(), x.size()).ok());
    store_->Release(n);
  }
  env_.FailWith(ENOSPC, FaultFilter::kWrites, "manifest-group");
  Status s = store_->SnapshotAll("g");
  ASSERT_FALSE(s.ok());
  env_.ClearFailures();
  EXPECT_FALSE(store_->Lookup("a@g").ok());
  EXPECT_FALSE(store_->Lookup("b@g").ok());
  for (const char* n : {"a", "b"}) {
    auto v = store_->Acquire(n).value();
    ASSERT_TRUE(v->health().ok()) << n;
    ASSERT_TRUE(v->Write(65536, x.data(), x.size()).ok()) << n;
    ASSERT_TRUE(v->Flush().ok()) << n;
    store_->Release(n);
  }
  // The same name works once the disk does.
  ASSERT_TRUE(store_->SnapshotAll("g").ok());
  EXPECT_TRUE(store_->Lookup("a@g").ok());
  EXPECT_TRUE(store_->Lookup("b@g").ok());
  ASSERT_NO_FATAL_FAILURE(PowerCycle());
  for (const char* n : {"a@g", "b@g"}) {
    SCOPED_TRACE(n);
    auto v = store_->Acquire(n).value();
    ExpectReads(*v, 65536, x);
    store_->Release(n);
  }
  EXPECT_FALSE(std::filesystem::exists(path_ + "/manifest-group"));
  EXPECT_FALSE(std::filesystem::exists(path_ + "/manifest-group.tmp"));
}

// Writes resume before a snapshot is durable. If the manifest then cannot
// be written, those writes sit in an upper no durable manifest names: the
// volume must refuse to acknowledge a flush (and further writes), and a
// reopen returns to the last durable state with every flushed write.
TEST_F(FaultTest, SnapshotFailingAfterWritesResumedFailsTheVolumeNotTheData) {
  auto v = NewVolume();
  std::vector<char> a(65536, 'a'), b(65536, 'b'), c(4096, 'c');
  ASSERT_TRUE(v->Write(0, a.data(), a.size()).ok());
  ASSERT_TRUE(v->Flush().ok());
  bool wrote = false;
  env_.OnCrashPoint("snapshot.after_seal", [&] {
    // Runs on the snapshot's thread, between the switch and the manifest.
    wrote = v->Write(65536, b.data(), b.size()).ok();
    env_.FailWith(EIO, FaultFilter::kWrites, "volumes/");
  });
  ASSERT_FALSE(store_->Snapshot("v", "s1").ok());
  env_.OnCrashPoint("snapshot.after_seal", nullptr);
  env_.ClearFailures();
  ASSERT_TRUE(wrote) << "writes must run while the snapshot commits";
  EXPECT_FALSE(v->health().ok());
  EXPECT_NE(store_->StatusText("v").find(" failed: "), std::string::npos) << store_->StatusText("v");
  EXPECT_FALSE(store_->Lookup("v")->failed.empty());
  Status f = v->Flush();
  EXPECT_FALSE(f.ok());
  EXPECT_EQ(f.os_errno(), EIO) << f.ToString();
  EXPECT_FALSE(v->Write(0, c.data(), c.size()).ok());
  EXPECT_FALSE(store_->Snapshot("v", "s2").ok()) << "a failed volume takes no snapshot";
  ExpectReads(*v, 0, a);
  ASSERT_NO_FATAL_FAILURE(PowerCycle("v", &v));
  EXPECT_FALSE(store_->Lookup("v@s1").ok());
  ASSERT_TRUE(v->health().ok());
  ExpectReads(*v, 0, a);
  ASSERT_TRUE(v->Write(0, c.data(), c.size()).ok());
  ASSERT_TRUE(v->Flush().ok());
  store_->Release("v");
}

// A flush that arrives while a snapshot commits waits for the commit, and
// then covers the writes made to the fresh upper meanwhile.
TEST_F(FaultTest, FlushDuringSnapshotCommitWaitsForIt) {
  auto v = NewVolume();
  std::vector<char> a(65536, 'a'), b(65536, 'b');
  ASSERT_TRUE(v->Write(0, a.data(), a.size()).ok());
  std::future<Status> flushed;
  bool early = false;
  env_.OnCrashPoint("snapshot.after_seal", [&] {
    ASSERT_TRUE(v->Write(65536, b.data(), b.size()).ok());
    flushed = std::async(std::launch::async, [&] { return v->Flush(); });
  });
  env_.OnCrashPoint("atomic_write.before_rename", [&] {
    // The manifest is not renamed yet: the flush cannot have returned.
    early = flushed.valid() &&
            flushed.wait_for(std::chrono::milliseconds(200)) == std::future_status::ready;
  });
  ASSERT_TRUE(store_->Snapshot("v", "s1").ok());
  env_.OnCrashPoint("snapshot.after_seal", nullptr);
  env_.OnCrashPoint("atomic_write.before_rename", nullptr);
  ASSERT_TRUE(flushed.valid());
  EXPECT_TRUE(flushed.get().ok());
  EXPECT_FALSE(early) << "a flush returned before the snapshot's manifest was written";
  ASSERT_NO_FATAL_FAILURE(PowerCycle("v", &v));
  {
    SCOPED_TRACE("the flushed write in the fresh upper");
    ExpectReads(*v, 65536, b);
  }
  store_->Release("v");
  v = store_->Acquire("v@s1").value();
  {
    SCOPED_TRACE("a write after the switch must not be in the snapshot");
    ExpectReads(*v, 65536, std::vector<char>(65536, 0));
  }
  store_->Release("v@s1");
}

TEST_F(FaultTest, EioFromALayerFailsOnlyItsRanges) {
  auto v = NewVolume({dir_.Sub("lower.lsmt")});
  std::vector<char> mine(4096, 'm');
  ASSERT_TRUE(v->Write(0, mine.data(), mine.size()).ok());
  env_.FailWith(EIO, FaultFilter::kReads, "sha256-");
  std::vector<char> got(4096);
  auto r = v->Read(8192, got.size(), got.data());  // lower data
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().os_errno(), EIO);
  ExpectReads(*v, 0, mine);                             // upper data
  ExpectReads(*v, 3 << 20, std::vector<char>(4096, 0));  // hole: zeros
  env_.ClearFailures();
  ExpectReads(*v, 8192, std::vector<char>(raw_.begin() + 8192, raw_.begin() + 8192 + 4096));
  store_->Release("v");
}

TEST_F(FaultTest, CorruptCompressedBlockIsAnErrorNamingTheBlock) {
  // Damage one byte inside the compressed data of the ZFile before import.
  ASSERT_TRUE(test::FlipBits(Env::Default(), dir_.Sub("lower.zfile"), 512 + 20000, 0x40).ok());
  // Import validates structure, not every block: the volume is created...
  auto v = NewVolume({dir_.Sub("lower.zfile")});
  std::vector<char> all(kSize);
  auto r = v->Read(0, kSize, all.data());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption());
  EXPECT_NE(r.status().message().find("block"), std::string::npos) << r.status().ToString();
  // ...and the rest of the volume still reads.
  std::vector<char> tail(1 << 20);
  ASSERT_TRUE(v->Read(3 << 20, tail.size(), tail.data()).ok());
  store_->Release("v");
}

TEST_F(FaultTest, LayerChangedBehindOurBackIsDetectedAndNeverServed) {
  auto v = NewVolume({dir_.Sub("lower.lsmt")});
  std::vector<char> got(4096);
  ASSERT_TRUE(v->Read(8192, got.size(), got.data()).ok());
  ASSERT_TRUE(store_->VerifyLayerFiles().ok());
  // Someone truncates the layer file in the store.
  const std::string lower = path_ + "/layers/" + store_->Lookup("v")->lowers[0];
  std::filesystem::resize_file(lower, std::filesystem::file_size(lower) - 4096);
  // The periodic flush re-checks every open layer and reports it.
  Status s = store_->FlushAll();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message().find("size changed"), std::string::npos) << s.ToString();
  auto r = v->Read(8192, got.size(), got.data());
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption());
  // Ranges the layer does not map still work.
  ASSERT_TRUE(v->Read(3 << 20, got.size(), got.data()).ok());
  store_->Release("v");
}

}  // namespace
}  // namespace ovbd
