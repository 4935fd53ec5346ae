// Store: volumes, snapshots, clones, deletion with space reclaim, crash
// safety of every multi-step command, hostile manifests and commands.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <set>

#include "ovbd/control/controller.h"
#include "fault_env.h"
#include "ovbd/store/check.h"
#include "ovbd/store/store.h"
#include "store_util.h"
#include "test_util.h"

namespace ovbd {
namespace {

constexpr uint64_t kSize = 8 << 20;

using test::ReadVolume;

void WriteAt(Store* s, const std::string& name, uint64_t off, const std::vector<char>& d,
             bool flush = true) {
  auto v = s->Acquire(name);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  auto n = v.value()->Write(off, d.data(), d.size());
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  if (flush) {
    ASSERT_TRUE(v.value()->Flush().ok());
  }
  s->Release(name);
}

uint64_t LayersAllocated(const std::string& store) {
  uint64_t total = 0;
  for (const auto& e : std::filesystem::directory_iterator(store + "/layers")) {
    auto st = Env::Default()->Stat(e.path().string());
    if (st.ok()) total += st->allocated;
  }
  return total;
}

std::set<std::string> LayerFiles(const std::string& store) {
  std::set<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(store + "/layers"))
    out.insert(e.path().filename().string());
  return out;
}

// Every file in layers/ is referenced by some manifest, and every reference exists.
void ExpectNoLeaksNoDangling(Store* s) {
  const auto referenced = test::ReferencedLayerFiles(s);
  auto files = LayerFiles(s->dir());
  for (const auto& f : files) EXPECT_TRUE(referenced.count(f)) << "leaked file " << f;
  for (const auto& r : referenced) EXPECT_TRUE(files.count(r)) << "missing file " << r;
}

// Replaces the first `from` in a file (atomically); returns the old text.
std::string EditFile(const std::string& path, const std::string& from, const std::string& to) {
  auto text = Env::Default()->ReadSmallFile(path, 1 << 20);
  EXPECT_TRUE(text.ok()) << path;
  if (!text.ok()) return "";
  std::string t = text.value();
  const size_t pos = t.find(from);
  EXPECT_NE(pos, std::string::npos) << from << " not in " << path;
  if (pos == std::string::npos) return text.value();
  t.replace(pos, from.size(), to);
  EXPECT_TRUE(Env::Default()->WriteFileAtomic(path, t).ok());
  return text.value();
}

class StoreTest : public test::FreshStoreTest {
 protected:
  std::vector<char> Rand(size_t n) { return test::RandomBytes(rng_, n); }

  // Two manifests naming one upper: closes the store and edits victim's
  // manifest to name owner's upper instead of its own.
  struct SharedUpper {
    std::string owner_upper, victim_upper;
    std::string manifest, old_text;  // victim's manifest and its text before
  };
  SharedUpper ShareUpper(const std::string& owner, const std::string& victim) {
    SharedUpper u{store_->Lookup(owner)->upper, store_->Lookup(victim)->upper,
                  path_ + "/volumes/" + victim + ".json", ""};
    store_.reset();
    u.old_text = EditFile(u.manifest, u.victim_upper, u.owner_upper);
    return u;
  }

  std::mt19937_64 rng_{11};
};

TEST_F(StoreTest, SnapshotCloneAndIsolation) {
  ASSERT_TRUE(store_->CreateVolume("vm1", kSize, {}, {}).ok());
  WriteAt(store_.get(), "vm1", 0, Rand(1 << 20));
  const auto before = ReadVolume(store_.get(), "vm1");
  ASSERT_TRUE(store_->Snapshot("vm1", "s1").ok());
  ASSERT_TRUE(store_->Clone("vm1@s1", "vm2").ok());
  WriteAt(store_.get(), "vm1", 4096, Rand(8192));
  WriteAt(store_.get(), "vm2", 65536, Rand(8192));
  EXPECT_EQ(ReadVolume(store_.get(), "vm1@s1"), before);
  EXPECT_NE(ReadVolume(store_.get(), "vm1"), before);
  EXPECT_NE(ReadVolume(store_.get(), "vm2"), before);
  EXPECT_NE(ReadVolume(store_.get(), "vm2"), ReadVolume(store_.get(), "vm1"));
  // Snapshots are read-only.
  auto snap = store_->Acquire("vm1@s1");
  ASSERT_TRUE(snap.ok());
  EXPECT_FALSE(snap.value()->Write(0, "x", 1).ok());
  store_->Release("vm1@s1");
  // Everything survives a reopen.
  const auto vm1 = ReadVolume(store_.get(), "vm1"), vm2 = ReadVolume(store_.get(), "vm2");
  store_.reset();
  auto s = Store::Open(Env::Default(), path_);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(ReadVolume(s.value().get(), "vm1"), vm1);
  EXPECT_EQ(ReadVolume(s.value().get(), "vm2"), vm2);
  EXPECT_EQ(ReadVolume(s.value().get(), "vm1@s1"), before);
  ExpectNoLeaksNoDangling(s.value().get());
}

TEST_F(StoreTest, OpenVolumeIsBusyToDelete) {
  ASSERT_TRUE(store_->CreateVolume("vm1", kSize, {}, {}).ok());
  auto v = store_->Acquire("vm1");
  ASSERT_TRUE(v.ok());
  auto st = store_->Delete("vm1");
  EXPECT_EQ(st.code(), Status::Code::kBusy) << st.ToString();
  store_->Release("vm1");
  EXPECT_TRUE(store_->Delete("vm1").ok());
  EXPECT_TRUE(store_->List().empty());
}

// Deletion in every order reclaims the space nothing else uses.
TEST_F(StoreTest, DeleteOriginFirst) {
  ASSERT_TRUE(store_->CreateVolume("vm1", kSize, {}, {}).ok());
  WriteAt(store_.get(), "vm1", 0, Rand(2 << 20));
  ASSERT_TRUE(store_->Snapshot("vm1", "s1").ok());
  WriteAt(store_.get(), "vm1", 4 << 20, Rand(2 << 20));
  const auto snap = ReadVolume(store_.get(), "vm1@s1");
  const uint64_t before = LayersAllocated(path_);
  ASSERT_TRUE(store_->Delete("vm1").ok());
  EXPECT_LT(LayersAllocated(path_), before - (3 << 19));  // the upper's 2 MiB are gone
  EXPECT_EQ(ReadVolume(store_.get(), "vm1@s1"), snap);
  EXPECT_EQ(store_->CreateVolume("vm1", kSize, {}, {}).code(), Status::Code::kExists);
  ASSERT_TRUE(store_->Delete("vm1@s1").ok());
  EXPECT_TRUE(store_->List().empty());
  EXPECT_TRUE(LayerFiles(path_).empty());
}

TEST_F(StoreTest, DeleteSnapshotFirst) {
  ASSERT_TRUE(store_->CreateVolume("vm1", kSize, {}, {}).ok());
  WriteAt(store_.get(), "vm1", 0, Rand(2 << 20));
  ASSERT_TRUE(store_->Snapshot("vm1", "s1").ok());
  // Overwrite everything the snapshot holds, then snapshot again.
  WriteAt(store_.get(), "vm1", 0, Rand(2 << 20));
  ASSERT_TRUE(store_->Snapshot("vm1", "s2").ok());
  const auto vm1 = ReadVolume(store_.get(), "vm1");
  const uint64_t before = LayersAllocated(path_);
  ASSERT_TRUE(store_->Delete("vm1@s1").ok());
  // s1's layer was wholly hidden by s2's: merged away, 2 MiB freed.
  EXPECT_LT(LayersAllocated(path_), before - (3 << 19));
  EXPECT_EQ(ReadVolume(store_.get(), "vm1"), vm1);
  EXPECT_EQ(ReadVolume(store_.get(), "vm1@s2"), vm1);
  ExpectNoLeaksNoDangling(store_.get());
}

TEST_F(StoreTest, DeleteMiddleOfChain) {
  ASSERT_TRUE(store_->CreateVolume("vm1", kSize, {}, {}).ok());
  WriteAt(store_.get(), "vm1", 0, Rand(1 << 20));
  ASSERT_TRUE(store_->Snapshot("vm1", "s1").ok());
  WriteAt(store_.get(), "vm1", 1 << 20, Rand(1 << 20));
  ASSERT_TRUE(store_->Snapshot("vm1", "s2").ok());
  WriteAt(store_.get(), "vm1", 1 << 20, Rand(1 << 20));  // hides s2's new data
  ASSERT_TRUE(store_->Snapshot("vm1", "s3").ok());
  const auto s1 = ReadVolume(store_.get(), "vm1@s1"), s3 = ReadVolume(store_.get(), "vm1@s3");
  const uint64_t before = LayersAllocated(path_);
  ASSERT_TRUE(store_->Delete("vm1@s2").ok());
  EXPECT_LT(LayersAllocated(path_), before - (1 << 19));
  EXPECT_EQ(ReadVolume(store_.get(), "vm1@s1"), s1);
  EXPECT_EQ(ReadVolume(store_.get(), "vm1@s3"), s3);
  EXPECT_EQ(ReadVolume(store_.get(), "vm1"), s3);
  ExpectNoLeaksNoDangling(store_.get());
}

TEST_F(StoreTest, ResizeGrowsOnly) {
  ASSERT_TRUE(store_->CreateVolume("vm1", kSize, {}, {}).ok());
  EXPECT_TRUE(store_->Resize("vm1", 2 * kSize).ok());
  EXPECT_EQ(store_->Lookup("vm1")->size, 2 * kSize);
  WriteAt(store_.get(), "vm1", 2 * kSize - 4096, Rand(4096));
  auto s = store_->Resize("vm1", kSize);
  EXPECT_EQ(s.code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(store_->Lookup("vm1")->size, 2 * kSize);
}

// A hostile or damaged manifest refuses its own volume, never the store:
// the other volumes mount, status names the bad one and why, and nothing
// the bad manifest might reference is collected.
TEST_F(StoreTest, HostileManifestsAreRefused) {
  ASSERT_TRUE(store_->CreateVolume("vm1", kSize, {}, {}).ok());
  ASSERT_TRUE(store_->CreateVolume("ok", kSize, {}, {}).ok());
  WriteAt(store_.get(), "vm1", 0, Rand(1 << 20));
  const std::string upper = store_->Lookup("vm1")->upper;
  store_.reset();
  const auto files_before = LayerFiles(path_);
  const std::string m = path_ + "/volumes/vm1.json";
  auto text = Env::Default()->ReadSmallFile(m, 1 << 20);
  ASSERT_TRUE(text.ok());
  const std::vector<std::pair<std::string, std::string>> edits = {
      {"\"lowers\": []", "\"lowers\": [\"../../etc/passwd\"]"},
      {"\"lowers\": []", "\"lowers\": [\"/etc/passwd\"]"},
      {"\"lowers\": []", "\"lowers\": [\".hidden\"]"},
      {"\"name\": \"vm1\"", "\"name\": \"../vm1\""},
      {"\"name\": \"vm1\"", "\"name\": \"ok\""},
      {"\"size\": 8388608", "\"size\": 8388609"},
      {"\"size\": 8388608", "\"size\": -1"},
      {"\"size\": 8388608", "\"size\": 6.7e30"},                         // a float
      {"\"size\": 8388608", "\"size\": 67188888888888888888888888888"},  // over 64 bits
      {"\"size\": 8388608", "\"size\": 8388608.0"},
      {"\"format\": \"ovbd-volume\"", "\"format\": \"other\""},
      {"{", "{not json"},
      {text.value(), ""},  // truncated to nothing
  };
  for (const auto& [from, to] : edits) {
    SCOPED_TRACE(to);
    std::string t = text.value();
    auto pos = t.find(from);
    ASSERT_NE(pos, std::string::npos) << from;
    t.replace(pos, from.size(), to);
    ASSERT_TRUE(Env::Default()->WriteFileAtomic(m, t).ok());
    auto s = Store::Open(Env::Default(), path_);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    Store* st = s.value().get();
    auto bad = st->Lookup("vm1");
    EXPECT_TRUE(bad.status().IsCorruption()) << bad.status().ToString();
    EXPECT_FALSE(st->Acquire("vm1").ok());
    auto failed = st->FailedManifests();
    ASSERT_EQ(failed.size(), 1u);
    EXPECT_EQ(failed[0].name, "vm1");
    EXPECT_NE(st->StatusText().find("vm1 failed: "), std::string::npos) << st->StatusText();
    EXPECT_EQ(st->CreateVolume("vm1", kSize, {}, {}).code(), Status::Code::kExists);
    // The rest of the store works.
    EXPECT_EQ(ReadVolume(st, "ok").size(), kSize);
    // Nothing is collected while a manifest cannot be trusted.
    EXPECT_FALSE(st->CollectGarbage().ok());
    s.value().reset();
    EXPECT_EQ(LayerFiles(path_), files_before);
    EXPECT_TRUE(LayerFiles(path_).count(upper + ".data"));
  }
  // Repaired by hand: the volume and its data come back.
  ASSERT_TRUE(Env::Default()->WriteFileAtomic(m, text.value()).ok());
  auto s = Store::Open(Env::Default(), path_);
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s.value()->Lookup("vm1").ok());
  EXPECT_TRUE(s.value()->FailedManifests().empty());
}

// Two manifests naming one upper would both write it: both are refused.
TEST_F(StoreTest, SharedUpperIsRefused) {
  ASSERT_TRUE(store_->CreateVolume("base", kSize, {}, {}).ok());
  ASSERT_TRUE(store_->Snapshot("base", "s").ok());
  ASSERT_TRUE(store_->Clone("base@s", "c1").ok());
  ASSERT_TRUE(store_->CreateVolume("other", kSize, {}, {}).ok());
  const SharedUpper shared = ShareUpper("base", "c1");
  auto s = Store::Open(Env::Default(), path_);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_FALSE(s.value()->Acquire("base").ok());
  EXPECT_FALSE(s.value()->Acquire("c1").ok());
  EXPECT_EQ(s.value()->FailedManifests().size(), 2u);
  EXPECT_TRUE(s.value()->Lookup("other").ok());
  // c1's own upper is unreferenced now, but kept: a refused manifest means
  // the store's references cannot be trusted.
  s.value().reset();
  EXPECT_TRUE(LayerFiles(path_).count(shared.victim_upper + ".data"));

  // An upper that is also someone's lower layer is refused as well.
  ASSERT_TRUE(Env::Default()->WriteFileAtomic(shared.manifest, shared.old_text).ok());
  EditFile(path_ + "/volumes/other.json", "\"lowers\": []",
           "\"lowers\": [\"" + shared.owner_upper + ".data\"]");
  s = Store::Open(Env::Default(), path_);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_FALSE(s.value()->Acquire("base").ok());
  EXPECT_FALSE(s.value()->Acquire("other").ok());
  EXPECT_TRUE(s.value()->Acquire("c1").ok());
  s.value()->Release("c1");
}

// `ovbd check --repair` never deletes what an unreadable manifest may
// reference: truncated or unreadable, the volume's upper stays.
TEST_F(StoreTest, RepairKeepsFilesOfAnUnreadableManifest) {
  ASSERT_TRUE(store_->CreateVolume("base", kSize, {}, {}).ok());
  WriteAt(store_.get(), "base", 0, Rand(1 << 20));
  const std::string upper = store_->Lookup("base")->upper;
  store_.reset();
  const std::string m = path_ + "/volumes/base.json";
  auto text = Env::Default()->ReadSmallFile(m, 1 << 20);
  ASSERT_TRUE(text.ok());
  ASSERT_TRUE(Env::Default()->WriteFileAtomic(m, text.value().substr(0, 100)).ok());
  const auto before = LayerFiles(path_);
  CheckOptions co;
  co.repair = true;
  auto rep = CheckStore(Env::Default(), path_, co);
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  EXPECT_FALSE(rep->clean());
  bool kept_said = false;
  for (const auto& f : rep->findings) {
    EXPECT_FALSE(f.repaired && f.where.find(upper) != std::string::npos) << f.where << ": " << f.what;
    kept_said |= f.what.find("kept") != std::string::npos;
  }
  EXPECT_TRUE(kept_said);
  EXPECT_EQ(LayerFiles(path_), before);
  EXPECT_TRUE(before.count(upper + ".data") && before.count(upper + ".jnl"));
  // The data comes back with the manifest.
  ASSERT_TRUE(Env::Default()->WriteFileAtomic(m, text.value()).ok());
  rep = CheckStore(Env::Default(), path_, CheckOptions{});
  ASSERT_TRUE(rep.ok());
  EXPECT_TRUE(rep->clean());
}

TEST_F(StoreTest, CheckFindsASharedUpper) {
  ASSERT_TRUE(store_->CreateVolume("base", kSize, {}, {}).ok());
  ASSERT_TRUE(store_->CreateVolume("c1", kSize, {}, {}).ok());
  ShareUpper("base", "c1");
  auto rep = CheckStore(Env::Default(), path_, CheckOptions{});
  ASSERT_TRUE(rep.ok());
  bool found = false;
  for (const auto& f : rep->findings) found |= f.what.find("also the upper of") != std::string::npos;
  EXPECT_TRUE(found);
  EXPECT_FALSE(rep->clean());
}

// A store's own directories replaced by symlinks lead nowhere: opening
// and repairing refuse the store, and the files behind the links are
// untouched (root mounting a store a user controls must not be steered).
TEST_F(StoreTest, SymlinkedStoreDirectoryIsRefused) {
  ASSERT_TRUE(store_->CreateVolume("vm1", kSize, {}, {}).ok());
  store_.reset();
  const std::string victim = dir_.Sub("victim");
  std::filesystem::create_directory(victim);
  ASSERT_TRUE(Env::Default()->WriteFileSynced(victim + "/precious", "root's file").ok());
  ASSERT_TRUE(Env::Default()->WriteFileSynced(victim + "/vm1.json", "{}").ok());
  for (const std::string d : {"layers", "volumes", "manifest-group", "manifest-group.tmp"}) {
    SCOPED_TRACE(d);
    const std::string path = path_ + "/" + d;
    const std::string aside = path_ + "/aside";
    const bool existed = std::filesystem::exists(path);
    if (existed) std::filesystem::rename(path, aside);
    std::filesystem::create_directory_symlink(victim, path);
    auto s = Store::Open(Env::Default(), path_);
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.status().ToString().find("symbolic link"), std::string::npos) << s.status().ToString();
    CheckOptions co;
    co.repair = true;
    EXPECT_FALSE(CheckStore(Env::Default(), path_, co).ok());
    EXPECT_TRUE(std::filesystem::exists(victim + "/precious"));
    EXPECT_TRUE(std::filesystem::exists(victim + "/vm1.json"));
    std::filesystem::remove(path);
    if (existed) std::filesystem::rename(aside, path);
  }
  EXPECT_TRUE(Store::Open(Env::Default(), path_).ok());
}

TEST_F(StoreTest, StoreOfAnotherUserIsRefusedUnlessAllowed) {
  if (Env::Default()->CurrentUid() != 0) GTEST_SKIP() << "needs root to give the store away";
  store_.reset();
  ASSERT_EQ(::chown((path_ + "/layers").c_str(), 12345, 12345), 0);
  auto s = Store::Open(Env::Default(), path_);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.status().ToString().find("uid 12345"), std::string::npos) << s.status().ToString();
  StoreOptions o;
  o.allow_foreign_owner = true;
  EXPECT_TRUE(Store::Open(Env::Default(), path_, o).ok());
}

// An upper whose data file was cut short is refused, not read as zeros.
TEST_F(StoreTest, TruncatedUpperDataIsRefused) {
  ASSERT_TRUE(store_->CreateVolume("vm1", kSize, {}, {}).ok());
  WriteAt(store_.get(), "vm1", 4 << 20, Rand(1 << 20));
  const std::string upper = store_->Lookup("vm1")->upper;
  store_.reset();
  std::filesystem::resize_file(path_ + "/layers/" + upper + ".data", 1 << 20);
  auto s = Store::Open(Env::Default(), path_);
  ASSERT_TRUE(s.ok());
  auto v = s.value()->Acquire("vm1");
  EXPECT_TRUE(v.status().IsCorruption()) << v.status().ToString();
  s.value().reset();
  auto rep = CheckStore(Env::Default(), path_, CheckOptions{});
  ASSERT_TRUE(rep.ok());
  EXPECT_FALSE(rep->clean());
}

TEST_F(StoreTest, SymlinkedLayerIsNotFollowed) {
  ASSERT_TRUE(store_->CreateVolume("vm1", kSize, {}, {}).ok());
  const std::string upper = store_->Lookup("vm1")->upper;
  store_.reset();
  const std::string data = path_ + "/layers/" + upper + ".data";
  std::filesystem::rename(data, dir_.Sub("outside.data"));
  std::filesystem::create_symlink(dir_.Sub("outside.data"), data);
  auto s = Store::Open(Env::Default(), path_);
  ASSERT_TRUE(s.ok());
  auto v = s.value()->Acquire("vm1");
  EXPECT_FALSE(v.ok());
}

TEST_F(StoreTest, ControlCommandsRejectBadInputAndChangeNothing) {
  ASSERT_TRUE(store_->CreateVolume("vm1", kSize, {}, {}).ok());
  Controller c(store_.get());
  const std::vector<std::string> bad = {
      "", "   ", "frobnicate vm1", "snapshot --all a b", "snapshot vm1 s1 extra", "snapshot ../vm1 s",
      "snapshot vm1 a/b", "snapshot vm1 ..", std::string("snapshot vm1 a\0b", 16),
      "snapshot vm1 " + std::string(129, 'a'), "clone vm1 vm2", "clone vm1@nosuch vm2",
      "clone vm1@a@b vm2", "create vm2", "create vm2 10X", "create vm2 99999999999999999999",
      "create vm2 18014398509481984T", "create vm1 1G", "resize vm1 1K", "delete", "delete nosuch",
      "delete vm1@nosuch", "status nosuch", std::string(5000, 'x'), "snapshot vm1 \x01",
      "snapshot vm1 s\xc3\xa9"};
  const auto before = store_->List();
  for (const auto& line : bad) {
    auto r = c.Execute(line);
    EXPECT_FALSE(r.ok()) << "accepted: " << line;
  }
  const auto after = store_->List();
  ASSERT_EQ(before.size(), after.size());
  EXPECT_EQ(before[0].size, after[0].size);
  // The good ones work.
  EXPECT_TRUE(c.Execute("snapshot vm1 s1\n").ok());
  EXPECT_TRUE(c.Execute("clone vm1@s1 vm2").ok());
  EXPECT_TRUE(c.Execute("create vm3 1M").ok());
  EXPECT_TRUE(c.Execute("resize vm3 2M").ok());
  EXPECT_TRUE(c.Execute("snapshot --all g1").ok());
  EXPECT_TRUE(c.Execute("snapshot").ok());
  EXPECT_TRUE(c.Execute("delete vm1@s1").ok());
  EXPECT_EQ(store_->Lookup("vm3")->size, 2u << 20);
  EXPECT_TRUE(store_->Lookup("vm2@g1").ok());
}

// ---- Crash at every step of every multi-step command -------------------------

struct Scenario {
  const char* name;
  // Prepares the store (runs on a clean env).
  std::function<void(Store*)> setup;
  // The command under test.
  std::function<Status(Store*)> run;
};

class CrashPointTest : public ::testing::TestWithParam<int> {};

std::vector<Scenario> Scenarios() {
  auto base = [](Store* s) {
    std::mt19937_64 rng(5);
    ASSERT_TRUE(s->CreateVolume("vm1", kSize, {}, {}).ok());
    WriteAt(s, "vm1", 0, test::RandomBytes(rng, 1 << 20));
    ASSERT_TRUE(s->Snapshot("vm1", "s1").ok());
    WriteAt(s, "vm1", 0, test::RandomBytes(rng, 1 << 20));
  };
  return {
      {"snapshot", base, [](Store* s) { return s->Snapshot("vm1", "s2"); }},
      {"snapshot-all",
       [base](Store* s) {
         base(s);
         std::mt19937_64 rng(6);
         ASSERT_TRUE(s->CreateVolume("vm3", kSize, {}, {}).ok());
         WriteAt(s, "vm3", 4096, test::RandomBytes(rng, 1 << 20), /*flush=*/false);
       },
       [](Store* s) { return s->SnapshotAll("g"); }},
      {"clone", base, [](Store* s) { return s->Clone("vm1@s1", "vm2"); }},
      {"delete-snapshot-merge",
       [base](Store* s) {
         base(s);
         ASSERT_TRUE(s->Snapshot("vm1", "s2").ok());
       },
       [](Store* s) { return s->Delete("vm1@s1"); }},
      {"delete-volume", base, [](Store* s) { return s->Delete("vm1"); }},
  };
}

TEST_P(CrashPointTest, StoreIsConsistentAfterACrashAtAnyPoint) {
  const Scenario sc = Scenarios()[static_cast<size_t>(GetParam())];
  // Dry run: which crash points does the command pass?
  std::vector<std::string> points;
  {
    test::TempDir dir;
    FaultInjectionEnv fenv(Env::Default(), 1);
    const std::string path = dir.Sub("s");
    ASSERT_TRUE(Store::Init(&fenv, path).ok());
    auto s = Store::Open(&fenv, path);
    ASSERT_TRUE(s.ok());
    sc.setup(s.value().get());
    const size_t seen_before = fenv.crash_points_seen().size();
    ASSERT_TRUE(sc.run(s.value().get()).ok());
    auto seen = fenv.crash_points_seen();
    points.assign(seen.begin() + static_cast<ptrdiff_t>(seen_before), seen.end());
  }
  ASSERT_FALSE(points.empty()) << sc.name;
  std::printf("%s: %zu crash points:", sc.name, points.size());
  for (const auto& p : points) std::printf(" %s", p.c_str());
  std::printf("\n");
  std::map<std::string, int> nth;
  int case_no = 0;
  for (const std::string& p : points) {
    const int n = ++nth[p];
    SCOPED_TRACE(std::string(sc.name) + " crash at " + p + " #" + std::to_string(n));
    test::TempDir dir;
    FaultInjectionEnv fenv(Env::Default(), static_cast<uint64_t>(n));
    const std::string path = dir.Sub("s");
    ASSERT_TRUE(Store::Init(&fenv, path).ok());
    std::vector<char> vm1, s1, vm3;
    {
      auto s = Store::Open(&fenv, path);
      ASSERT_TRUE(s.ok());
      sc.setup(s.value().get());
      ASSERT_TRUE(s.value()->FlushAll().ok());
      vm1 = ReadVolume(s.value().get(), "vm1");
      s1 = ReadVolume(s.value().get(), "vm1@s1");
      if (s.value()->Lookup("vm3").ok()) vm3 = ReadVolume(s.value().get(), "vm3");
      fenv.CrashAt(p, n);
      Status st = sc.run(s.value().get());
      EXPECT_FALSE(st.ok());
      EXPECT_TRUE(fenv.crashed());
      ASSERT_TRUE(fenv.SimulatePowerLoss(PowerLossMode::kDropAll).ok());
    }
    if (++case_no % 2 == 0) {
      // Every other case, `ovbd check` meets the crashed store first: it
      // must see no dangling reference, and its repair must recover exactly
      // as opening the store does (the assertions below then hold too).
      CheckOptions co;
      co.verify_data = false;
      auto rep = CheckStore(&fenv, path, co);
      ASSERT_TRUE(rep.ok()) << rep.status().ToString();
      for (const auto& f : rep->findings) {
        EXPECT_EQ(f.what.find("missing"), std::string::npos) << f.where << ": " << f.what;
      }
      co.repair = true;
      rep = CheckStore(&fenv, path, co);
      ASSERT_TRUE(rep.ok()) << rep.status().ToString();
    }
    auto s = Store::Open(&fenv, path);
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    Store* st = s.value().get();
    // The data is what it was: every volume and snapshot that exists is whole.
    for (const auto& v : st->List()) {
      auto content = ReadVolume(st, v.name);
      if (v.name == "vm1@s1") {
        EXPECT_EQ(content, s1);
      } else if (v.name.rfind("vm1", 0) == 0 || v.name.rfind("vm2", 0) == 0) {
        EXPECT_TRUE(content == vm1 || content == s1) << v.name;
        if (v.name.find('@') != std::string::npos && v.name != "vm1@s1") {
          EXPECT_EQ(content, vm1) << v.name;  // a new snapshot is of vm1 now
        }
      }
    }
    if (st->Lookup("vm1").ok()) {
      EXPECT_EQ(ReadVolume(st, "vm1"), vm1);
    }
    // A consistency group is all or nothing.
    if (st->Lookup("vm3").ok()) {
      EXPECT_EQ(ReadVolume(st, "vm3"), vm3);
      EXPECT_EQ(st->Lookup("vm1@g").ok(), st->Lookup("vm3@g").ok()) << "half a snapshot group";
      if (st->Lookup("vm3@g").ok()) {
        EXPECT_EQ(ReadVolume(st, "vm3@g"), vm3);
      }
    }
    ExpectNoLeaksNoDangling(st);
  }
}

INSTANTIATE_TEST_SUITE_P(Commands, CrashPointTest, ::testing::Range(0, 5));

}  // namespace
}  // namespace ovbd
