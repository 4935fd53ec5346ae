// FaultInjectionEnv over the real filesystem (a temp dir), checked through
// Env::Default() so the assertions see what is really on disk.
#include "fault_env.h"
#include "test_util.h"

#include <gtest/gtest.h>

#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace ovbd {
namespace {

namespace fs = std::filesystem;
constexpr size_t kSec = FaultInjectionEnv::kSectorSize;

std::string RandomBytes(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() | 1);  // never zero: zero sectors are special
  return s;
}

class FaultEnvTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(dir_.empty()) << "no temporary directory"; }
  std::string P(const std::string& name) const { return JoinPath(dir_, name); }

  // Creates path through env with data, durably (data and directory synced).
  static void MakeDurable(Env& env, const std::string& path, const std::string& data) {
    auto f = env.OpenRW(path, /*create=*/true);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    ASSERT_TRUE((*f)->WriteAt(0, data.data(), data.size()).ok());
    ASSERT_TRUE((*f)->Sync().ok());
    ASSERT_TRUE(env.SyncDir(DirName(path)).ok());
  }
  static void Write(RWFile& f, uint64_t off, const std::string& data) {
    Status s = f.WriteAt(off, data.data(), data.size());
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  // The real contents, read without the fault env.
  static std::string OnDisk(const std::string& path) {
    auto r = Env::Default()->ReadSmallFile(path, 1 << 30);
    EXPECT_TRUE(r.ok()) << path << ": " << r.status().ToString();
    return r.ok() ? r.value() : std::string("<missing>");
  }
  static bool ExistsOnDisk(const std::string& path) { return Env::Default()->Exists(path); }
  static void ExpectEIO(const Status& s) {
    EXPECT_EQ(s.code(), Status::Code::kIOError) << s.ToString();
    EXPECT_EQ(s.os_errno(), EIO) << s.ToString();
  }

  test::TempDir tmp_;
  const std::string dir_ = tmp_.path();
};

TEST_F(FaultEnvTest, SyncedDataSurvivesPowerLoss) {
  for (PowerLossMode mode :
       {PowerLossMode::kDropAll, PowerLossMode::kRandomSectors, PowerLossMode::kTornLast}) {
    FaultInjectionEnv env(Env::Default(), 7);
    const std::string path = P("a" + std::to_string(static_cast<int>(mode)));
    const std::string data = RandomBytes(10000, 1);
    MakeDurable(env, path, data);
    {
      auto f = env.OpenRW(path, false);
      ASSERT_TRUE(f.ok());
      Write(**f, 10000, "appended and synced");
      ASSERT_TRUE((*f)->Sync().ok());
    }
    EXPECT_EQ(env.unsynced_file_count(), 0u);
    ASSERT_TRUE(env.SimulatePowerLoss(mode).ok());
    EXPECT_EQ(OnDisk(path), data + "appended and synced");
  }
}

TEST_F(FaultEnvTest, UnsyncedWritesRevertedUnderDropAll) {
  FaultInjectionEnv env;
  const std::string old = RandomBytes(3000, 1);
  MakeDurable(env, P("a"), old);
  auto f = env.OpenRW(P("a"), false);
  ASSERT_TRUE(f.ok());
  Write(**f, 100, RandomBytes(500, 2));
  Write(**f, 2900, RandomBytes(1000, 3));  // extends the file
  Write(**f, 10000, "far");                // leaves a gap
  EXPECT_EQ(env.unsynced_file_count(), 1u);
  EXPECT_NE(OnDisk(P("a")), old);
  ASSERT_TRUE(env.SimulatePowerLoss(PowerLossMode::kDropAll).ok());
  EXPECT_EQ(OnDisk(P("a")), old);
  EXPECT_EQ(env.unsynced_file_count(), 0u);
}

TEST_F(FaultEnvTest, OnlyWritesAfterTheLastSyncAreReverted) {
  FaultInjectionEnv env;
  MakeDurable(env, P("a"), std::string(4096, 'o'));
  auto f = env.OpenRW(P("a"), false);
  ASSERT_TRUE(f.ok());
  Write(**f, 0, std::string(1000, 's'));
  ASSERT_TRUE((*f)->Sync().ok());
  const std::string synced = OnDisk(P("a"));
  Write(**f, 500, std::string(5000, 'u'));
  // A second handle on the same file shares its unsynced state.
  auto g = env.OpenRW(P("a"), false);
  ASSERT_TRUE(g.ok());
  Write(**g, 0, "second handle");
  f->reset();
  g->reset();  // closing a file does not make it durable
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  EXPECT_EQ(OnDisk(P("a")), synced);
}

TEST_F(FaultEnvTest, PunchAndTruncateReverted) {
  FaultInjectionEnv env;
  const std::string old = RandomBytes(64 << 10, 5);
  MakeDurable(env, P("a"), old);
  auto f = env.OpenRW(P("a"), false);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->PunchHole(4096, 20000).ok());
  ASSERT_TRUE((*f)->PunchHole(60000, 1 << 20).ok());  // past the end: clipped
  ASSERT_TRUE((*f)->Truncate(10000).ok());
  ASSERT_TRUE((*f)->Truncate(100000).ok());
  Write(**f, 50000, "x");
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  EXPECT_EQ(OnDisk(P("a")), old);
}

TEST_F(FaultEnvTest, SparseFilesStayCheapAndSparse) {
  constexpr uint64_t kBig = 1ull << 30;
  FaultInjectionEnv env;
  {
    auto f = env.OpenRW(P("sparse"), true);
    ASSERT_TRUE(f.ok());
    ASSERT_TRUE((*f)->Truncate(kBig).ok());
    Write(**f, 0, "head");
    Write(**f, kBig / 2, "middle");
    Write(**f, kBig - 4, "tail");
    ASSERT_TRUE((*f)->Sync().ok());
    ASSERT_TRUE(env.SyncDir(dir_).ok());
    // Unsynced: wipe everything.
    ASSERT_TRUE((*f)->PunchHole(0, kBig).ok());
    ASSERT_TRUE((*f)->Truncate(0).ok());
    ASSERT_TRUE((*f)->Truncate(kBig * 2).ok());
  }
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  auto f = Env::Default()->OpenReadable(P("sparse"));
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)->Size(), kBig);
  char buf[8];
  ASSERT_TRUE((*f)->ReadExact(0, 4, buf).ok());
  EXPECT_EQ(std::string(buf, 4), "head");
  ASSERT_TRUE((*f)->ReadExact(kBig / 2, 6, buf).ok());
  EXPECT_EQ(std::string(buf, 6), "middle");
  ASSERT_TRUE((*f)->ReadExact(kBig - 4, 4, buf).ok());
  EXPECT_EQ(std::string(buf, 4), "tail");
  auto st = Env::Default()->Stat(P("sparse"));
  ASSERT_TRUE(st.ok());
  EXPECT_LT(st->allocated, 1u << 20);
}

// Sector s of image, or "" past its end.
std::string SectorOf(const std::string& image, size_t s) {
  if (s * kSec >= image.size()) return "";
  return image.substr(s * kSec, kSec);
}

TEST_F(FaultEnvTest, RandomSectorsAreEachOldOrNew) {
  constexpr size_t kSectors = 16;
  const std::string old = RandomBytes(kSectors * kSec, 100);
  // Per sector: the distinct contents that survived, over all seeds.
  std::vector<std::set<std::string>> outcomes(kSectors);
  std::vector<std::set<std::string>> versions(kSectors);
  int mixed_files = 0;
  for (uint64_t seed = 0; seed < 64; ++seed) {
    FaultInjectionEnv env(Env::Default(), seed);
    const std::string path = P("f" + std::to_string(seed));
    MakeDurable(env, path, old);
    // Overlapping writes, some unaligned and partial: a sector goes through
    // up to four versions; it must come back as exactly one of them.
    struct W {
      uint64_t off;
      size_t len;
    };
    const W writes[] = {{700, 4300}, {0, kSectors * kSec}, {3000, 3500}};
    std::vector<std::string> images = {old};
    {
      auto f = env.OpenRW(path, false);
      ASSERT_TRUE(f.ok());
      for (const W& w : writes) {
        const std::string data = RandomBytes(w.len, 1000 + w.off);  // same for every seed
        Write(**f, w.off, data);
        images.push_back(images.back());
        images.back().replace(w.off, w.len, data);
      }
    }
    ASSERT_EQ(OnDisk(path), images.back());
    ASSERT_TRUE(env.SimulatePowerLoss(PowerLossMode::kRandomSectors).ok());
    const std::string got = OnDisk(path);
    ASSERT_EQ(got.size(), old.size());
    std::set<size_t> which;
    for (size_t s = 0; s < kSectors; ++s) {
      const std::string g = SectorOf(got, s);
      size_t v = images.size();
      for (size_t i = 0; i < images.size(); ++i) {
        versions[s].insert(SectorOf(images[i], s));
        if (g == SectorOf(images[i], s)) v = i;
      }
      ASSERT_LT(v, images.size()) << "seed " << seed << " sector " << s << " is a mix of versions";
      outcomes[s].insert(g);
      which.insert(v);
    }
    if (which.size() > 1) ++mixed_files;
  }
  // Every version of every sector shows up for some seed.
  for (size_t s = 0; s < kSectors; ++s) {
    EXPECT_EQ(outcomes[s].size(), versions[s].size()) << "sector " << s;
    EXPECT_GE(versions[s].size(), 2u);
  }
  EXPECT_GT(mixed_files, 32);
}

TEST_F(FaultEnvTest, RandomSectorsWithGrowingFile) {
  const std::string old = RandomBytes(4 * kSec, 1);
  std::set<size_t> sizes;
  for (uint64_t seed = 0; seed < 32; ++seed) {
    FaultInjectionEnv env(Env::Default(), seed);
    const std::string path = P("g" + std::to_string(seed));
    MakeDurable(env, path, old);
    const std::string neu = RandomBytes(8 * kSec, 2);
    {
      auto f = env.OpenRW(path, false);
      ASSERT_TRUE(f.ok());
      Write(**f, 0, neu);
    }
    ASSERT_TRUE(env.SimulatePowerLoss(PowerLossMode::kRandomSectors).ok());
    const std::string got = OnDisk(path);
    ASSERT_TRUE(got.size() == old.size() || got.size() == neu.size()) << got.size();
    sizes.insert(got.size());
    for (size_t s = 0; s * kSec < got.size(); ++s) {
      const std::string g = SectorOf(got, s);
      const std::string before = s < 4 ? SectorOf(old, s) : std::string(kSec, '\0');
      EXPECT_TRUE(g == before || g == SectorOf(neu, s)) << "seed " << seed << " sector " << s;
    }
  }
  EXPECT_EQ(sizes.size(), 2u);
}

TEST_F(FaultEnvTest, TornLastKeepsAPrefixOfTheLastWrite) {
  constexpr size_t kSectors = 16;
  const std::string old = RandomBytes(kSectors * kSec, 1);
  std::set<size_t> kept_counts;
  for (uint64_t seed = 0; seed < 40; ++seed) {
    FaultInjectionEnv env(Env::Default(), seed);
    const std::string a = P("a" + std::to_string(seed)), b = P("b" + std::to_string(seed));
    MakeDurable(env, a, old);
    MakeDurable(env, b, old);
    const std::string neu = RandomBytes(old.size(), 2 + seed);
    {
      auto fb = env.OpenRW(b, false);
      ASSERT_TRUE(fb.ok());
      Write(**fb, 0, neu);  // older unsynced write: dropped
      auto fa = env.OpenRW(a, false);
      ASSERT_TRUE(fa.ok());
      Write(**fa, 0, std::string(kSec, 'e'));  // older, same file: dropped
      Write(**fa, 0, neu);                     // the last write: torn
    }
    ASSERT_TRUE(env.SimulatePowerLoss(PowerLossMode::kTornLast).ok());
    EXPECT_EQ(OnDisk(b), old);
    const std::string got = OnDisk(a);
    ASSERT_EQ(got.size(), old.size());
    size_t k = 0;
    while (k < kSectors && SectorOf(got, k) == SectorOf(neu, k)) ++k;
    for (size_t s = k; s < kSectors; ++s) {
      ASSERT_EQ(SectorOf(got, s), SectorOf(old, s)) << "seed " << seed << " sector " << s;
    }
    EXPECT_LT(k, kSectors) << "a torn write is never complete";
    kept_counts.insert(k);
  }
  EXPECT_GE(kept_counts.size(), 5u);
}

TEST_F(FaultEnvTest, TornLastOfAnAppend) {
  std::set<uint64_t> sizes;
  for (uint64_t seed = 0; seed < 20; ++seed) {
    FaultInjectionEnv env(Env::Default(), seed);
    const std::string path = P("log" + std::to_string(seed));
    MakeDurable(env, path, "header");
    const std::string rec = RandomBytes(8 * kSec, 9);
    {
      auto f = env.OpenRW(path, false);
      ASSERT_TRUE(f.ok());
      Write(**f, kSec, rec);
    }
    ASSERT_TRUE(env.SimulatePowerLoss(PowerLossMode::kTornLast).ok());
    const std::string got = OnDisk(path);
    sizes.insert(got.size());
    ASSERT_EQ(got.substr(0, 6), "header");
    if (got.size() == 6) continue;  // nothing kept
    ASSERT_EQ(got.size() % kSec, 0u);
    ASSERT_LT(got.size(), 9 * kSec);
    EXPECT_EQ(got.substr(6, kSec - 6), std::string(kSec - 6, '\0'));
    EXPECT_EQ(got.substr(kSec), rec.substr(0, got.size() - kSec));
  }
  EXPECT_GE(sizes.size(), 3u);
}

TEST_F(FaultEnvTest, FileCreatedWithoutDirSyncDisappears) {
  FaultInjectionEnv env;
  {
    auto f = env.OpenRW(P("new"), true);
    ASSERT_TRUE(f.ok());
    Write(**f, 0, "data");
    ASSERT_TRUE((*f)->Sync().ok());  // data durable, directory entry not
    auto g = env.OpenRW(P("entry_only"), true);
    ASSERT_TRUE(g.ok());
    Write(**g, 0, "unsynced data");
    ASSERT_TRUE(env.SyncDir(dir_ + "/").ok());  // entry durable, data not
    auto h = env.OpenRW(P("late"), true);    // created after the SyncDir
    ASSERT_TRUE(h.ok());
    ASSERT_TRUE((*h)->Sync().ok());
  }
  ASSERT_TRUE(env.CreateDir(P("subdir")).ok());
  MakeDurable(env, P("subdir/inner"), "synced inside an unsynced dir");
  EXPECT_TRUE(ExistsOnDisk(P("new")));
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  EXPECT_TRUE(ExistsOnDisk(P("new")));  // the SyncDir above covered it
  EXPECT_EQ(OnDisk(P("new")), "data");
  EXPECT_EQ(OnDisk(P("entry_only")), "");
  EXPECT_FALSE(ExistsOnDisk(P("late")));
  EXPECT_FALSE(ExistsOnDisk(P("subdir")));
}

TEST_F(FaultEnvTest, FileCreatedAndNeverDirSyncedIsGone) {
  FaultInjectionEnv env;
  {
    auto f = env.OpenRW(P("new"), true);
    ASSERT_TRUE(f.ok());
    Write(**f, 0, "data");
    ASSERT_TRUE((*f)->Sync().ok());
  }
  ASSERT_TRUE(env.SyncDir(P("elsewhere")).IsNotFound());
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  EXPECT_FALSE(ExistsOnDisk(P("new")));
  // Recreating it afterwards works normally.
  MakeDurable(env, P("new"), "again");
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  EXPECT_EQ(OnDisk(P("new")), "again");
}

TEST_F(FaultEnvTest, WriteFileAtomicSurvivesPowerLoss) {
  FaultInjectionEnv env;
  ASSERT_TRUE(env.WriteFileAtomic(P("cfg"), "v1").ok());
  ASSERT_TRUE(env.SimulatePowerLoss(PowerLossMode::kRandomSectors).ok());
  EXPECT_EQ(OnDisk(P("cfg")), "v1");
  ASSERT_TRUE(env.WriteFileAtomic(P("cfg"), "version two").ok());
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  EXPECT_EQ(OnDisk(P("cfg")), "version two");
  EXPECT_FALSE(ExistsOnDisk(P("cfg.tmp")));
}

TEST_F(FaultEnvTest, CrashBeforeRenameKeepsOldContents) {
  FaultInjectionEnv env;
  ASSERT_TRUE(env.WriteFileAtomic(P("cfg"), "old").ok());
  env.CrashAt("atomic_write.before_rename");
  Status s = env.WriteFileAtomic(P("cfg"), "new");
  ExpectEIO(s);
  EXPECT_NE(s.message().find("crash at atomic_write.before_rename"), std::string::npos)
      << s.ToString();
  EXPECT_TRUE(env.crashed());
  EXPECT_EQ(OnDisk(P("cfg")), "old");
  EXPECT_TRUE(ExistsOnDisk(P("cfg.tmp")));  // written and synced, name not durable
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  EXPECT_FALSE(env.crashed());
  EXPECT_EQ(OnDisk(P("cfg")), "old");
  EXPECT_FALSE(ExistsOnDisk(P("cfg.tmp")));
  ASSERT_TRUE(env.WriteFileAtomic(P("cfg"), "new").ok());
  EXPECT_EQ(OnDisk(P("cfg")), "new");
}

TEST_F(FaultEnvTest, WriteFileAtomicIsAtomicAtEveryOperation) {
  // Count the operations of one WriteFileAtomic, then crash at each of them,
  // with every power-loss mode and torn writes: the file is old or new.
  uint64_t total = 0;
  {
    FaultInjectionEnv env;
    ASSERT_TRUE(env.WriteFileAtomic(P("probe"), "old").ok());
    const uint64_t before = env.mutating_ops();
    ASSERT_TRUE(env.WriteFileAtomic(P("probe"), RandomBytes(5000, 1)).ok());
    total = env.mutating_ops() - before;
  }
  ASSERT_GE(total, 5u);  // create, write, sync, rename, syncdir
  const std::string neu = RandomBytes(5000, 1);
  for (uint64_t i = 0; i <= total; ++i) {
    for (PowerLossMode mode :
         {PowerLossMode::kDropAll, PowerLossMode::kRandomSectors, PowerLossMode::kTornLast}) {
      FaultInjectionEnv env(Env::Default(), i * 3 + static_cast<int>(mode));
      const std::string path = P("cfg" + std::to_string(i) + "_" + std::to_string(int(mode)));
      ASSERT_TRUE(env.WriteFileAtomic(path, "old").ok());
      env.SetTearOnCrash(true);
      env.CrashAfterOps(i);
      Status s = env.WriteFileAtomic(path, neu);
      EXPECT_EQ(s.ok(), i == total) << "op " << i << ": " << s.ToString();
      ASSERT_TRUE(env.SimulatePowerLoss(mode).ok());
      const std::string got = OnDisk(path);
      // Only a completed SyncDir makes the new version durable.
      EXPECT_EQ(got, i == total ? neu : "old") << "crash at op " << i;
      EXPECT_FALSE(ExistsOnDisk(path + ".tmp"));
    }
  }
}

TEST_F(FaultEnvTest, RenameOverExistingFileWithoutDirSyncIsUndone) {
  FaultInjectionEnv env;
  MakeDurable(env, P("a"), "AAAA");
  MakeDurable(env, P("b"), "BBBBBBBB");
  ASSERT_TRUE(env.Rename(P("a"), P("b")).ok());
  EXPECT_FALSE(ExistsOnDisk(P("a")));
  EXPECT_EQ(OnDisk(P("b")), "AAAA");
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  EXPECT_EQ(OnDisk(P("a")), "AAAA");
  EXPECT_EQ(OnDisk(P("b")), "BBBBBBBB");

  ASSERT_TRUE(env.Rename(P("a"), P("b")).ok());
  ASSERT_TRUE(env.SyncDir(dir_).ok());
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  EXPECT_FALSE(ExistsOnDisk(P("a")));
  EXPECT_EQ(OnDisk(P("b")), "AAAA");
}

TEST_F(FaultEnvTest, RenameIntoAnotherDirNeedsTheTargetDirSynced) {
  FaultInjectionEnv env;
  ASSERT_TRUE(env.CreateDir(P("d1")).ok());
  ASSERT_TRUE(env.CreateDir(P("d2")).ok());
  ASSERT_TRUE(env.SyncDir(dir_).ok());
  MakeDurable(env, P("d1/x"), "payload");
  ASSERT_TRUE(env.Rename(P("d1/x"), P("d2/y")).ok());
  ASSERT_TRUE(env.SyncDir(P("d1")).ok());  // the source dir is not enough
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  EXPECT_EQ(OnDisk(P("d1/x")), "payload");
  EXPECT_FALSE(ExistsOnDisk(P("d2/y")));
  ASSERT_TRUE(env.Rename(P("d1/x"), P("d2/y")).ok());
  ASSERT_TRUE(env.SyncDir(P("d2")).ok());
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  EXPECT_EQ(OnDisk(P("d2/y")), "payload");
}

TEST_F(FaultEnvTest, RenamedFileKeepsItsUnsyncedWritesTracked) {
  FaultInjectionEnv env;
  MakeDurable(env, P("a"), "old contents");
  auto f = env.OpenRW(P("a"), false);
  ASSERT_TRUE(f.ok());
  Write(**f, 0, "NEW");
  ASSERT_TRUE(env.Rename(P("a"), P("c")).ok());
  ASSERT_TRUE(env.SyncDir(dir_).ok());
  Write(**f, 4, "WRITES");  // still the same file, now named c
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  EXPECT_FALSE(ExistsOnDisk(P("a")));
  EXPECT_EQ(OnDisk(P("c")), "old contents");
}

TEST_F(FaultEnvTest, RemoveWithoutDirSyncIsUndone) {
  FaultInjectionEnv env;
  const std::string data = RandomBytes(20000, 3);
  MakeDurable(env, P("a"), data);
  MakeDurable(env, P("b"), "bee");
  {
    // Unsynced changes at removal time are lost too: the file comes back as synced.
    auto f = env.OpenRW(P("a"), false);
    ASSERT_TRUE(f.ok());
    Write(**f, 0, "scribble");
  }
  ASSERT_TRUE(env.Remove(P("a")).ok());
  ASSERT_TRUE(env.Remove(P("b")).ok());
  ASSERT_TRUE(env.RemoveDir(P("nonexistent")).IsNotFound());
  EXPECT_FALSE(ExistsOnDisk(P("a")));
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  EXPECT_EQ(OnDisk(P("a")), data);
  EXPECT_EQ(OnDisk(P("b")), "bee");
  ASSERT_TRUE(env.Remove(P("a")).ok());
  ASSERT_TRUE(env.SyncDir(dir_).ok());
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  EXPECT_FALSE(ExistsOnDisk(P("a")));
}

TEST_F(FaultEnvTest, DirectoryChangesNeedTheParentSynced) {
  FaultInjectionEnv env;
  ASSERT_TRUE(env.CreateDir(P("keep")).ok());
  ASSERT_TRUE(env.CreateDir(P("gone")).ok());
  ASSERT_TRUE(env.SyncDir(dir_).ok());
  ASSERT_TRUE(env.RemoveDir(P("gone")).ok());
  ASSERT_TRUE(env.CreateDir(P("keep/child")).ok());
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  EXPECT_TRUE(ExistsOnDisk(P("keep")));
  EXPECT_TRUE(ExistsOnDisk(P("gone")));  // the removal was not durable
  EXPECT_FALSE(ExistsOnDisk(P("keep/child")));
}

// A multi-step operation with crash points, for enumerating them.
Status ThreeSteps(Env& env, const std::string& dir, int* steps_done) {
  *steps_done = 0;
  OVBD_RETURN_IF_ERROR(env.CrashPoint("op.start"));
  OVBD_RETURN_IF_ERROR(env.WriteFileAtomic(JoinPath(dir, "one"), "1"));
  *steps_done = 1;
  OVBD_RETURN_IF_ERROR(env.CrashPoint("op.middle"));
  OVBD_RETURN_IF_ERROR(env.WriteFileAtomic(JoinPath(dir, "two"), "2"));
  *steps_done = 2;
  OVBD_RETURN_IF_ERROR(env.CrashPoint("op.middle"));
  *steps_done = 3;
  return Status::OK();
}

TEST_F(FaultEnvTest, CrashPointsSeenAndArming) {
  std::vector<std::string> points;
  {
    FaultInjectionEnv env;
    int done = 0;
    ASSERT_TRUE(ThreeSteps(env, P("probe"), &done).ok() == false);  // probe dir missing
    env.ClearCrashPointsSeen();
    ASSERT_TRUE(env.CreateDir(P("probe")).ok());
    ASSERT_TRUE(ThreeSteps(env, P("probe"), &done).ok());
    points = env.crash_points_seen();
  }
  EXPECT_EQ(points, (std::vector<std::string>{"op.start", "atomic_write.before_rename", "op.middle",
                                              "atomic_write.before_rename", "op.middle"}));
  // Crash at each point in turn (the kth occurrence of its name).
  for (size_t i = 0; i < points.size(); ++i) {
    const int nth = static_cast<int>(std::count(points.begin(), points.begin() + i + 1, points[i]));
    const std::string d = P("run" + std::to_string(i));
    FaultInjectionEnv env;
    ASSERT_TRUE(env.CreateDir(d).ok());
    ASSERT_TRUE(env.SyncDir(dir_).ok());
    env.CrashAt(points[i], nth);
    int done = -1;
    Status s = ThreeSteps(env, d, &done);
    ExpectEIO(s);
    EXPECT_EQ(s.message(), "crash at " + points[i]);
    EXPECT_TRUE(env.crashed());
    EXPECT_EQ(env.crash_points_seen().size(), i + 1);
    const int want_done[] = {0, 0, 1, 1, 2};
    EXPECT_EQ(done, want_done[i]) << "crash point " << i;
    // A dead process does nothing more.
    ExpectEIO(env.Stat(d).status());
    ExpectEIO(env.OpenRW(JoinPath(d, "z"), true).status());
    ExpectEIO(env.CrashPoint("op.start"));
    ExpectEIO(env.SyncDir(d));
    EXPECT_FALSE(ExistsOnDisk(JoinPath(d, "z")));
    EXPECT_EQ(env.crash_points_seen().size(), i + 1);
    ASSERT_TRUE(env.SimulatePowerLoss().ok());
    EXPECT_FALSE(env.crashed());
    EXPECT_EQ(ExistsOnDisk(JoinPath(d, "one")), done >= 1);
    EXPECT_EQ(ExistsOnDisk(JoinPath(d, "two")), done >= 2);
    // Recovery: running it again completes.
    ASSERT_TRUE(ThreeSteps(env, d, &done).ok());
  }
}

TEST_F(FaultEnvTest, DisarmAndRevive) {
  FaultInjectionEnv env;
  env.CrashAt("x");
  env.CrashAfterOps(0);
  env.DisarmCrashes();
  EXPECT_TRUE(env.CrashPoint("x").ok());
  EXPECT_TRUE(env.CreateDir(P("d")).ok());
  env.CrashAt("x", 2);
  EXPECT_TRUE(env.CrashPoint("x").ok());
  EXPECT_TRUE(env.CrashPoint("y").ok());
  ExpectEIO(env.CrashPoint("x"));
  EXPECT_TRUE(env.crashed());
  env.Revive();
  EXPECT_FALSE(env.crashed());
  EXPECT_TRUE(env.CrashPoint("x").ok());
  EXPECT_TRUE(ExistsOnDisk(P("d")));  // a process crash keeps everything
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  EXPECT_FALSE(ExistsOnDisk(P("d")));  // still pending: a power loss after it drops it
}

TEST_F(FaultEnvTest, ForwardsConfinementAndRangeChecks) {
  FaultInjectionEnv env;
  ASSERT_TRUE(env.CreateDir(P("store")).ok());
  ASSERT_TRUE(env.CreateDir(P("outside")).ok());
  MakeDurable(env, P("outside/victim"), "precious");
  fs::create_symlink(P("outside"), P("store/layers"));
  {
    auto c = env.Confine(P("store"));
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    Status s = env.Remove(P("store/layers/victim"));
    EXPECT_EQ(s.os_errno(), ELOOP) << s.ToString();
    EXPECT_NE(s.message().find("is a symbolic link"), std::string::npos) << s.ToString();
  }
  EXPECT_EQ(OnDisk(P("outside/victim")), "precious");
  // Range checks and data runs of its files reach the real file.
  auto f = env.OpenRW(P("a"), true);
  ASSERT_TRUE(f.ok());
  Write(**f, 0, std::string(8192, 'x'));
  EXPECT_TRUE((*f)->CheckRange(0, 8192).ok());
  ASSERT_EQ(::truncate(P("a").c_str(), 4096), 0);
  EXPECT_EQ((*f)->CheckRange(0, 8192).os_errno(), EIO);
  auto run = (*f)->NextData(0);
  ASSERT_TRUE(run.ok());
  EXPECT_EQ(run->begin, 0u);
  // Only SyncDir is hit by a kDirSync rule.
  env.FailWith(ENOSPC, FaultFilter::kDirSync);
  EXPECT_TRUE((*f)->Sync().ok());
  EXPECT_TRUE(env.SyncDir(dir_).IsNoSpace());
}

TEST_F(FaultEnvTest, HandlesAreDeadAfterCrash) {
  FaultInjectionEnv env;
  MakeDurable(env, P("a"), "durable");
  auto f = env.OpenRW(P("a"), false);
  auto r = env.OpenReadable(P("a"));
  ASSERT_TRUE(f.ok() && r.ok());
  EXPECT_EQ((*f)->NativeFd(), -1);  // all reads go through the env
  EXPECT_EQ((*r)->NativeFd(), -1);
  Write(**f, 0, "DUR");
  env.CrashAt("boom");
  ExpectEIO(env.CrashPoint("boom"));
  ExpectEIO((*f)->WriteAt(0, "xyz", 3));
  ExpectEIO((*f)->Truncate(0));
  ExpectEIO((*f)->PunchHole(0, 4096));
  ExpectEIO((*f)->Sync());
  ExpectEIO((*f)->AllocatedBytes().status());
  char buf[8];
  size_t got = 0;
  ExpectEIO((*f)->ReadAt(0, 3, buf, &got));
  ExpectEIO((*r)->ReadAt(0, 3, buf, &got));
  EXPECT_EQ(OnDisk(P("a")), "DURable");  // nothing reached the disk after the crash
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  EXPECT_EQ(OnDisk(P("a")), "durable");
  // Still dead after the power loss: the test must reopen.
  ExpectEIO((*f)->WriteAt(0, "xyz", 3));
  ExpectEIO((*r)->ReadAt(0, 3, buf, &got));
  EXPECT_EQ(OnDisk(P("a")), "durable");
  auto g = env.OpenRW(P("a"), false);
  ASSERT_TRUE(g.ok());
  ASSERT_TRUE((*g)->ReadAt(0, 7, buf, &got).ok());
  EXPECT_EQ(std::string(buf, got), "durable");
}

TEST_F(FaultEnvTest, HandlesDieAtPowerLossEvenWithoutCrash) {
  FaultInjectionEnv env;
  MakeDurable(env, P("a"), "x");
  auto f = env.OpenRW(P("a"), false);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  ExpectEIO((*f)->WriteAt(0, "y", 1));
  EXPECT_EQ(OnDisk(P("a")), "x");
}

TEST_F(FaultEnvTest, CrashAfterOps) {
  FaultInjectionEnv env;
  const std::string old(4 * kSec, 'o');
  MakeDurable(env, P("a"), old);
  auto f = env.OpenRW(P("a"), false);
  ASSERT_TRUE(f.ok());
  const uint64_t before = env.mutating_ops();
  env.CrashAfterOps(2);
  Write(**f, 0, "1");
  Write(**f, 1, "2");
  ExpectEIO((*f)->WriteAt(2, "3", 1));
  EXPECT_TRUE(env.crashed());
  EXPECT_EQ(env.mutating_ops() - before, 3u);
  ExpectEIO((*f)->WriteAt(3, "4", 1));
  EXPECT_EQ(env.mutating_ops() - before, 3u);  // refused calls are not operations
  EXPECT_EQ(OnDisk(P("a")), "12" + old.substr(2));
  env.Revive();  // process crash: completed writes stay
  EXPECT_EQ(OnDisk(P("a")), "12" + old.substr(2));
  ExpectEIO((*f)->WriteAt(3, "4", 1));  // but the old handle is dead
  ASSERT_TRUE(env.SimulatePowerLoss().ok());  // and they were never synced
  EXPECT_EQ(OnDisk(P("a")), old);
}

TEST_F(FaultEnvTest, CrashNowCrashesBetweenOperations) {
  FaultInjectionEnv env;
  MakeDurable(env, P("a"), "durable");
  auto f = env.OpenRW(P("a"), false);
  ASSERT_TRUE(f.ok());
  Write(**f, 0, "D");
  env.SetTearOnCrash(true);
  env.CrashAfterOps(5);  // replaced: nothing waits for an operation to crash
  const uint64_t before = env.mutating_ops();
  env.CrashNow();
  EXPECT_TRUE(env.crashed());
  EXPECT_EQ(env.mutating_ops(), before);  // no operation was the crashing one
  ExpectEIO((*f)->WriteAt(1, "U", 1));      // and none is torn
  ExpectEIO(env.CrashPoint("x"));
  env.CrashNow();  // already crashed: nothing changes
  EXPECT_TRUE(env.crashed());
  EXPECT_EQ(OnDisk(P("a")), "Durable");
  env.Revive();
  EXPECT_FALSE(env.crashed());
  auto g = env.OpenRW(P("a"), false);
  ASSERT_TRUE(g.ok());
  Write(**g, 1, "U");  // CrashAfterOps(5) did not outlive the crash
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  EXPECT_EQ(OnDisk(P("a")), "durable");
}

TEST_F(FaultEnvTest, CrashAfterOpsCanCrashAnyMutatingCall) {
  FaultInjectionEnv env;
  MakeDurable(env, P("a"), "a");
  env.CrashAfterOps(0);
  ExpectEIO(env.CreateDir(P("d")));
  EXPECT_FALSE(ExistsOnDisk(P("d")));
  env.Revive();
  env.CrashAfterOps(0);
  ExpectEIO(env.OpenRW(P("b"), true).status());
  EXPECT_FALSE(ExistsOnDisk(P("b")));
  env.Revive();
  env.CrashAfterOps(0);
  ExpectEIO(env.Rename(P("a"), P("c")));
  EXPECT_TRUE(ExistsOnDisk(P("a")));
  env.Revive();
  env.CrashAfterOps(1);
  EXPECT_TRUE(env.OpenRW(P("b"), false).status().IsNotFound());  // not mutating
  ASSERT_TRUE(env.Stat(P("a")).ok());
  ASSERT_TRUE(env.Remove(P("a")).ok());
  ExpectEIO(env.SyncDir(dir_));
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  EXPECT_EQ(OnDisk(P("a")), "a");
}

TEST_F(FaultEnvTest, TornWriteOnCrash) {
  constexpr size_t kSectors = 8;
  const std::string old(kSectors * kSec, 'o');
  const std::string neu(kSectors * kSec, 'n');
  std::set<size_t> kept;
  for (uint64_t seed = 0; seed < 30; ++seed) {
    FaultInjectionEnv env(Env::Default(), seed);
    const std::string path = P("t" + std::to_string(seed));
    MakeDurable(env, path, old);
    auto f = env.OpenRW(path, false);
    ASSERT_TRUE(f.ok());
    env.SetTearOnCrash(true);
    env.CrashAfterOps(0);
    ExpectEIO((*f)->WriteAt(0, neu.data(), neu.size()));
    const std::string got = OnDisk(path);  // what the dead process left in the page cache
    size_t k = 0;
    while (k < kSectors && SectorOf(got, k) == SectorOf(neu, k)) ++k;
    EXPECT_LT(k, kSectors);
    EXPECT_EQ(got, neu.substr(0, k * kSec) + old.substr(k * kSec));
    kept.insert(k);
    ASSERT_TRUE(env.SimulatePowerLoss().ok());
    EXPECT_EQ(OnDisk(path), old);
  }
  EXPECT_GE(kept.size(), 4u);
}

TEST_F(FaultEnvTest, FailWithNoSpaceUntilCleared) {
  FaultInjectionEnv env;
  MakeDurable(env, P("a"), "before");
  auto f = env.OpenRW(P("a"), false);
  ASSERT_TRUE(f.ok());
  env.FailWith(ENOSPC, FaultFilter::kWrites);
  for (int i = 0; i < 3; ++i) {
    Status s = (*f)->WriteAt(0, "AFTER!", 6);
    EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
    EXPECT_EQ(s.os_errno(), ENOSPC);
  }
  EXPECT_TRUE((*f)->Truncate(100).IsNoSpace());
  EXPECT_TRUE(env.WriteFileAtomic(P("b"), "x").IsNoSpace());
  EXPECT_EQ(OnDisk(P("a")), "before");  // failed calls do not touch the file
  // Other operations still work.
  char buf[6];
  ASSERT_TRUE((*f)->ReadExact(0, 6, buf).ok());
  EXPECT_TRUE((*f)->Sync().ok());
  EXPECT_TRUE((*f)->PunchHole(0, 1).ok());
  env.ClearFailures();
  Write(**f, 0, "AFTER!");
  EXPECT_EQ(OnDisk(P("a")), "AFTER!");
  EXPECT_FALSE(env.crashed());
}

TEST_F(FaultEnvTest, FailWithProbability) {
  FaultInjectionEnv env(Env::Default(), 3);
  MakeDurable(env, P("a"), "x");
  auto f = env.OpenRW(P("a"), false);
  ASSERT_TRUE(f.ok());
  env.FailWith(EIO, FaultFilter::kSyncs | FaultFilter::kPunch, 0.5);
  int failed = 0;
  for (int i = 0; i < 200; ++i) failed += (*f)->Sync().ok() ? 0 : 1;
  EXPECT_GT(failed, 50);
  EXPECT_LT(failed, 150);
  env.ClearFailures();
  env.FailWith(EIO, FaultFilter::kAll, 0.0);
  for (int i = 0; i < 50; ++i) EXPECT_TRUE((*f)->Sync().ok());
}

TEST_F(FaultEnvTest, ReadFailuresOnAFilteredPathOnly) {
  FaultInjectionEnv env;
  MakeDurable(env, P("layer1.data"), "one");
  MakeDurable(env, P("layer2.data"), "two");
  env.FailWith(EIO, FaultFilter::kReads, "layer1");
  auto r1 = env.OpenReadable(P("layer1.data"));  // opening is not reading
  auto r2 = env.OpenReadable(P("layer2.data"));
  ASSERT_TRUE(r1.ok() && r2.ok());
  char buf[3];
  Status s = (*r1)->ReadExact(0, 3, buf);
  ExpectEIO(s);
  ASSERT_TRUE((*r2)->ReadExact(0, 3, buf).ok());
  EXPECT_EQ(std::string(buf, 3), "two");
  auto rw1 = env.OpenRW(P("layer1.data"), false);
  ASSERT_TRUE(rw1.ok());
  ExpectEIO((*rw1)->ReadExact(0, 3, buf));
  Write(**rw1, 0, "ONE");  // writes are not filtered
  ExpectEIO(env.ReadSmallFile(P("layer1.data"), 100).status());
  EXPECT_TRUE(env.ReadSmallFile(P("layer2.data"), 100).ok());
  EXPECT_FALSE(env.crashed());
  env.ClearFailures();
  ASSERT_TRUE((*r1)->ReadExact(0, 3, buf).ok());
  EXPECT_EQ(std::string(buf, 3), "ONE");
  // Open failures, by path.
  env.FailWith(ENOENT, FaultFilter::kOpen, "layer2");
  EXPECT_TRUE(env.OpenReadable(P("layer2.data")).status().IsNotFound());
  EXPECT_TRUE(env.OpenReadable(P("layer1.data")).ok());
}

TEST_F(FaultEnvTest, LocksAreReleasedWhenTheProcessDies) {
  FaultInjectionEnv env;
  auto l1 = env.LockFile(P("LOCK"));
  ASSERT_TRUE(l1.ok());
  EXPECT_EQ(env.LockFile(P("LOCK")).status().code(), Status::Code::kBusy);
  env.CrashAt("die");
  ExpectEIO(env.CrashPoint("die"));
  ExpectEIO(env.LockFile(P("LOCK")).status());
  {
    auto other = Env::Default()->LockFile(P("LOCK"));  // another process can take it now
    EXPECT_TRUE(other.ok());
  }
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  auto l2 = env.LockFile(P("LOCK"));  // while the dead l1 object still exists
  EXPECT_TRUE(l2.ok());
  l1.value().reset();
  EXPECT_EQ(Env::Default()->LockFile(P("LOCK")).status().code(), Status::Code::kBusy);
}

TEST_F(FaultEnvTest, MetadataCallsAreForwardedAndFilterable) {
  FaultInjectionEnv env;
  MakeDurable(env, P("a"), "abc");
  auto space = env.SpaceOf(dir_);
  ASSERT_TRUE(space.ok()) << space.status().ToString();
  EXPECT_GT(space->blocks, 0u);
  auto names = env.ListDir(dir_);
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(names.value(), std::vector<std::string>{"a"});
  env.FailWith(EIO, FaultFilter::kMetadata);
  ExpectEIO(env.SpaceOf(dir_).status());
  ExpectEIO(env.Stat(P("a")).status());
  ExpectEIO(env.ListDir(dir_).status());
  EXPECT_TRUE(env.OpenReadable(P("a")).ok());
}

TEST_F(FaultEnvTest, ObjectsMayOutliveTheEnv) {
  auto env = std::make_unique<FaultInjectionEnv>();
  MakeDurable(*env, P("a"), "x");
  auto f = env->OpenRW(P("a"), false);
  ASSERT_TRUE(f.ok());
  auto l = env->LockFile(P("LOCK"));
  ASSERT_TRUE(l.ok());
  env.reset();
  Write(**f, 0, "y");
  EXPECT_EQ(OnDisk(P("a")), "y");
}

TEST_F(FaultEnvTest, ConcurrentWritersAndPowerLoss) {
  constexpr int kThreads = 4;
  constexpr int kOps = 200;
  FaultInjectionEnv env(Env::Default(), 11);
  std::vector<std::string> synced(kThreads);
  for (int t = 0; t < kThreads; ++t) MakeDurable(env, P("f" + std::to_string(t)), "");
  std::atomic<bool> failed{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      const std::string path = P("f" + std::to_string(t));
      auto f = env.OpenRW(path, false);
      auto r = env.OpenReadable(path);
      if (!f.ok() || !r.ok()) {
        failed = true;
        return;
      }
      std::string model;
      for (int i = 0; i < kOps; ++i) {
        const uint64_t off = rng() % 20000;
        const std::string data = RandomBytes(1 + rng() % 3000, rng());
        if (!(*f)->WriteAt(off, data.data(), data.size()).ok()) failed = true;
        if (model.size() < off + data.size()) model.resize(off + data.size(), '\0');
        model.replace(off, data.size(), data);
        char buf[64];
        size_t got = 0;
        if (!(*r)->ReadAt(off, std::min<size_t>(64, data.size()), buf, &got).ok()) failed = true;
        if (i % 17 == 0) {
          if (!(*f)->Sync().ok()) failed = true;
          synced[t] = model;
        }
        if (i % 50 == 0) (void)env.mutating_ops();
      }
    });
  }
  for (auto& th : threads) th.join();
  ASSERT_FALSE(failed.load());
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_TRUE(OnDisk(P("f" + std::to_string(t))) == synced[t]) << "file " << t;
  }
}

TEST_F(FaultEnvTest, RelativeAndAbsolutePathsAreTheSameFile) {
  FaultInjectionEnv env;
  MakeDurable(env, P("a"), "old");
  auto f = env.OpenRW(dir_ + "//./a", false);
  ASSERT_TRUE(f.ok());
  Write(**f, 0, "NEW");
  ASSERT_TRUE(env.Rename(P("a"), P("b")).ok());
  ASSERT_TRUE(env.SyncDir(dir_ + "/.").ok());
  ASSERT_TRUE(env.SimulatePowerLoss().ok());
  EXPECT_EQ(OnDisk(P("b")), "old");
}

}  // namespace
}  // namespace ovbd
