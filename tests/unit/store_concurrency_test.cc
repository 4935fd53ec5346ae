// The store's concurrency rules, shown without timing: while a command's
// long data work is held at a crash point (a merge copying, an import
// copying, a snapshot sealing), metadata of other volumes and commands on
// other volumes complete. If any of them waited for the held work, the
// wait below would end at its deadline and the test fail.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <random>

#include "fault_env.h"
#include "ovbd/layer/lsmt_writer.h"
#include "ovbd/store/store.h"
#include "test_util.h"

namespace ovbd {
namespace {

constexpr uint64_t kSize = 8 << 20;

void Write(Store* s, const std::string& name, uint64_t off, size_t len, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto data = test::RandomBytes(rng, len);
  auto v = s->Acquire(name);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  ASSERT_TRUE(v.value()->Write(off, data.data(), data.size()).ok());
  ASSERT_TRUE(v.value()->Flush().ok());
  s->Release(name);
}

class StoreConcurrency : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.Sub("store");
    ASSERT_TRUE(Store::Init(&fenv_, path_).ok());
    auto s = Store::Open(&fenv_, path_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
    ASSERT_TRUE(store_->CreateVolume("other", kSize, {}, {}).ok());
    Write(store_.get(), "other", 0, 1 << 20, 1);
  }

  // What a FUSE request or an unrelated command does; run on another thread
  // while `point` is held. Returns "" or what went wrong.
  std::string OthersWork(int round) {
    std::string err;
    auto note = [&](const char* what, const Status& s) {
      if (!s.ok() && err.empty()) err = std::string(what) + ": " + s.ToString();
    };
    note("lookup", store_->Lookup("other").status());
    if (store_->List().empty()) err = "list is empty";
    if (store_->StatusText().find("other ") == std::string::npos) err = "status lacks other";
    auto v = store_->Acquire("other");
    note("acquire", v.status());
    if (v.ok()) {
      char buf[4096];
      note("read", v.value()->Read(0, sizeof buf, buf).status());
      note("write", v.value()->Write(4096, buf, sizeof buf).status());
      store_->Release("other");
    }
    // Commands on other volumes run too.
    const std::string n = "other" + std::to_string(round);
    note("snapshot", store_->Snapshot("other", "s" + std::to_string(round)));
    note("create", store_->CreateVolume(n, kSize, {}, {}));
    note("clone", store_->Clone("other@s" + std::to_string(round), n + "c"));
    return err;
  }

  // Holds the first pass through `point` until OthersWork has completed (or
  // its deadline passed); returns through *result what it found.
  void HoldAt(const std::string& point, std::string* result, std::atomic<int>* held) {
    fenv_.OnCrashPoint(point, [this, result, held] {
      if (held->fetch_add(1) != 0) return;
      auto f = std::async(std::launch::async, [this] { return OthersWork(0); }).share();
      others_.push_back(f);  // waited for at the end of the test, never here
      if (f.wait_for(std::chrono::seconds(30)) != std::future_status::ready) {
        *result = "metadata or an unrelated command waited for the held work";
        return;
      }
      *result = f.get();
    });
  }

  void TearDown() override {
    for (auto& f : others_) f.wait();
  }

  test::TempDir dir_;
  FaultInjectionEnv fenv_{Env::Default(), 7};
  std::vector<std::shared_future<std::string>> others_;
  std::string path_;
  std::unique_ptr<Store> store_;
};

TEST_F(StoreConcurrency, MergeDoesNotStallOthers) {
  ASSERT_TRUE(store_->CreateVolume("vm1", kSize, {}, {}).ok());
  Write(store_.get(), "vm1", 0, 2 << 20, 2);
  ASSERT_TRUE(store_->Snapshot("vm1", "a").ok());
  Write(store_.get(), "vm1", 0, 2 << 20, 3);  // hides all of @a
  ASSERT_TRUE(store_->Snapshot("vm1", "b").ok());
  std::string result = "never held";
  std::atomic<int> held{0};
  HoldAt("merge.after_write", &result, &held);
  ASSERT_TRUE(store_->Delete("vm1@a").ok());  // merges @a's layer into @b's
  EXPECT_GT(held.load(), 0) << "the delete did not merge";
  EXPECT_EQ(result, "");
  EXPECT_TRUE(store_->Lookup("other0c").ok());
}

TEST_F(StoreConcurrency, ImportDoesNotStallOthers) {
  // A layer file to import.
  const std::string raw = dir_.Sub("disk.raw"), layer = dir_.Sub("disk.lsmt");
  {
    std::mt19937_64 rng(5);
    auto data = test::RandomBytes(rng, 4 << 20);
    ASSERT_TRUE(Env::Default()->WriteFileSynced(raw, std::string(data.begin(), data.end())).ok());
    auto in = Env::Default()->OpenReadable(raw);
    auto out = Env::Default()->OpenRW(layer, true);
    ASSERT_TRUE(in.ok() && out.ok());
    ASSERT_TRUE(lsmt::CreateFromRaw(*in.value(), out.value().get(), {}).ok());
  }
  std::string result = "never held";
  std::atomic<int> held{0};
  HoldAt("import.copying", &result, &held);
  ASSERT_TRUE(store_->CreateVolume("imported", 0, {layer}, {}).ok());
  EXPECT_GT(held.load(), 0);
  EXPECT_EQ(result, "");
  // The name was taken while the import ran, and is a volume now.
  EXPECT_TRUE(store_->Lookup("imported").ok());
}

TEST_F(StoreConcurrency, SnapshotSealDoesNotStallOthers) {
  ASSERT_TRUE(store_->CreateVolume("vm1", kSize, {}, {}).ok());
  Write(store_.get(), "vm1", 0, 1 << 20, 4);
  std::string result = "never held";
  std::atomic<int> held{0};
  HoldAt("snapshot.after_seal", &result, &held);
  ASSERT_TRUE(store_->Snapshot("vm1", "x").ok());
  EXPECT_GT(held.load(), 0);
  EXPECT_EQ(result, "");
}

// Two commands creating one name at the same time: exactly one wins.
TEST_F(StoreConcurrency, OneNameOneWinner) {
  for (int round = 0; round < 20; ++round) {
    const std::string n = "race" + std::to_string(round);
    auto a = std::async(std::launch::async, [&] { return store_->CreateVolume(n, kSize, {}, {}); });
    auto b = std::async(std::launch::async, [&] { return store_->CreateVolume(n, kSize, {}, {}); });
    Status sa = a.get(), sb = b.get();
    EXPECT_NE(sa.ok(), sb.ok()) << sa.ToString() << " / " << sb.ToString();
    EXPECT_TRUE(sa.ok() ? sb.code() == Status::Code::kExists : sa.code() == Status::Code::kExists);
  }
}

TEST_F(StoreConcurrency, MergeIsAListedJob) {
  ASSERT_TRUE(store_->CreateVolume("vm1", kSize, {}, {}).ok());
  Write(store_.get(), "vm1", 0, 2 << 20, 2);
  ASSERT_TRUE(store_->Snapshot("vm1", "a").ok());
  Write(store_.get(), "vm1", 0, 2 << 20, 3);
  ASSERT_TRUE(store_->Snapshot("vm1", "b").ok());
  std::string seen;
  std::atomic<int> held{0};
  fenv_.OnCrashPoint("merge.copying", [&] {
    if (held.fetch_add(1) == 0) seen = store_->StatusText();
  });
  ASSERT_TRUE(store_->Delete("vm1@a").ok());
  EXPECT_NE(seen.find(" merge vm1@a running"), std::string::npos) << seen;
  bool listed = false;
  for (const auto& j : store_->Jobs()) listed |= j.kind == "merge" && j.state == JobState::kDone;
  EXPECT_TRUE(listed);
}

}  // namespace
}  // namespace ovbd
