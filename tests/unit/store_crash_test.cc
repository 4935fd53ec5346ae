// Randomised crash test of the whole store: random writes, discards, fsyncs,
// snapshots (single and consistency groups), clones and deletes, with the
// "process" killed after a random number of OS operations (the crashing
// write possibly torn), then a power loss of a random kind, then recovery.
// After every crash the store must open, every fsynced write must be there,
// every sector must hold one of the versions it legitimately could, every
// snapshot must be exact, a consistency group must be whole or absent, and
// no file may be leaked or missing.
//
// OVBD_CRASH_ITERATIONS (default 150) sets the number of crashes per seed.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <map>
#include <random>
#include <set>

#include "fault_env.h"
#include "ovbd/store/store.h"
#include "sector_model.h"
#include "store_util.h"

namespace ovbd {
namespace {

constexpr uint64_t kSize = 1 << 20;

using test::SectorModel;

uint64_t Iterations() {
  const char* e = std::getenv("OVBD_CRASH_ITERATIONS");
  return e ? std::strtoull(e, nullptr, 10) : 150;
}

class StoreCrash : public ::testing::TestWithParam<int> {};

TEST_P(StoreCrash, RandomOperationsRandomCrashes) {
  const uint64_t seed = static_cast<uint64_t>(GetParam());
  std::mt19937_64 rng(seed);
  test::TempDir dir;
  FaultInjectionEnv fenv(Env::Default(), seed);
  const std::string path = dir.Sub("store");
  ASSERT_TRUE(Store::Init(&fenv, path).ok());
  std::map<std::string, SectorModel> vols;              // live volumes
  std::map<std::string, std::vector<char>> snaps;       // VOL@SNAP -> exact content
  std::set<std::string> maybe_snaps;                    // crashed mid-command: may exist
  std::vector<std::set<std::string>> maybe_groups;      // crashed snapshot --all: all or none
  {
    auto s = Store::Open(&fenv, path);
    ASSERT_TRUE(s.ok());
    ASSERT_TRUE(s.value()->CreateVolume("a", kSize, {}, {}).ok());
    vols.emplace("a", SectorModel(std::vector<char>(kSize, 0)));
  }
  uint64_t crashes = 0, ops_total = 0;
  for (uint64_t it = 0; it < Iterations(); ++it) {
    SCOPED_TRACE("seed " + std::to_string(seed) + " iteration " + std::to_string(it));
    auto so = Store::Open(&fenv, path);
    ASSERT_TRUE(so.ok()) << so.status().ToString();
    Store* st = so.value().get();
    // --- Verify recovery against the model.
    std::set<std::string> present;
    for (const auto& v : st->List()) present.insert(v.name);
    for (auto& [name, model] : vols) {
      ASSERT_TRUE(present.count(name)) << "volume " << name << " lost";
      auto now = test::ReadVolume(st, name);
      ASSERT_EQ(now.size(), kSize) << name;
      const auto bad = model.FirstImpossibleSector(now);
      ASSERT_FALSE(bad) << name << " sector " << *bad
                        << " holds a version it never had since the last fsync";
      model.Recovered(std::move(now));  // made durable below before new work
    }
    for (const auto& name : present) {
      if (name.find('@') == std::string::npos) {
        // A clone whose command crashed may exist; adopt it (content checked
        // against its snapshot below through the maybe set).
        if (!vols.count(name)) {
          auto now = test::ReadVolume(st, name);
          ASSERT_EQ(now.size(), kSize) << name;
          ASSERT_TRUE(maybe_snaps.count("clone:" + name)) << "unexpected volume " << name;
          vols.emplace(name, SectorModel(std::move(now)));
        }
        continue;
      }
      auto it_s = snaps.find(name);
      const bool maybe = maybe_snaps.count(name) > 0;
      ASSERT_TRUE(it_s != snaps.end() || maybe) << "unexpected snapshot " << name;
      const auto now = test::ReadVolume(st, name);
      ASSERT_EQ(now.size(), kSize) << name;
      if (it_s != snaps.end()) {
        ASSERT_TRUE(now == it_s->second) << "snapshot " << name << " changed";
      } else {
        snaps[name] = now;  // a snapshot that made it: it is exact from now on
      }
    }
    for (auto it_s = snaps.begin(); it_s != snaps.end();) {
      if (!present.count(it_s->first)) {
        ASSERT_TRUE(maybe_snaps.count("delete:" + it_s->first)) << it_s->first << " lost";
        it_s = snaps.erase(it_s);
      } else {
        ++it_s;
      }
    }
    for (const auto& g : maybe_groups) {
      size_t n = 0;
      for (const auto& name : g) n += present.count(name);
      ASSERT_TRUE(n == 0 || n == g.size()) << "a snapshot group came back partial: " << n << " of "
                                           << g.size();
    }
    maybe_groups.clear();
    maybe_snaps.clear();
    // No leaks, nothing dangling.
    const std::set<std::string> referenced = test::ReferencedLayerFiles(st);
    for (const auto& e : std::filesystem::directory_iterator(path + "/layers")) {
      ASSERT_TRUE(referenced.count(e.path().filename().string()))
          << "leaked " << e.path().filename();
    }
    ASSERT_TRUE(st->FlushAll().ok());

    // --- Random work until the crash.
    fenv.CrashAfterOps(1 + rng() % 60);
    fenv.SetTearOnCrash(true);
    for (int op = 0; op < 200 && !fenv.crashed(); ++op) {
      ++ops_total;
      std::vector<std::string> names;
      for (auto& [n, m] : vols) names.push_back(n);
      const std::string vol = names[rng() % names.size()];
      SectorModel& m = vols.at(vol);
      const int kind = static_cast<int>(rng() % 100);
      if (kind < 50) {
        uint64_t off = rng() % kSize, len = std::min<uint64_t>(1 + rng() % 40000, kSize - off);
        auto d = test::RandomBytes(rng, len);
        m.Apply(off, d.data(), len);
        auto v = st->Acquire(vol);
        if (v.ok()) {
          (void)v.value()->Write(off, d.data(), len);
          st->Release(vol);
        }
      } else if (kind < 62) {
        uint64_t off = rng() % kSize, len = std::min<uint64_t>(1 + rng() % 100000, kSize - off);
        m.Apply(off, nullptr, len);
        auto v = st->Acquire(vol);
        if (v.ok()) {
          (void)v.value()->Discard(off, len);
          st->Release(vol);
        }
      } else if (kind < 80) {
        auto v = st->Acquire(vol);
        if (v.ok()) {
          if (v.value()->Flush().ok()) m.Commit();
          st->Release(vol);
        }
      } else if (kind < 84) {
        // A consistency group over every volume.
        const std::string snap = "g" + std::to_string(rng() % 1000000);
        bool taken = false;
        for (auto& [n, mm] : vols) taken |= snaps.count(n + "@" + snap) > 0;
        if (taken) continue;
        Status s = st->SnapshotAll(snap);
        std::set<std::string> members;
        for (auto& [n, mm] : vols) members.insert(n + "@" + snap);
        if (s.ok()) {
          for (auto& [n, mm] : vols) {
            mm.Commit();
            snaps[n + "@" + snap] = mm.current();
          }
        } else {
          maybe_snaps.insert(members.begin(), members.end());
          maybe_groups.push_back(members);
        }
      } else if (kind < 90) {
        const std::string snap = "s" + std::to_string(rng() % 1000000);
        const std::string full = vol + "@" + snap;
        if (snaps.count(full)) continue;
        Status s = st->Snapshot(vol, snap);
        if (s.ok()) {
          m.Commit();  // a snapshot commits the volume first
          snaps[full] = m.current();
        } else {
          maybe_snaps.insert(full);
        }
      } else if (kind < 95) {
        if (snaps.empty() || vols.size() >= 4) continue;
        auto pick = snaps.begin();
        std::advance(pick, static_cast<long>(rng() % snaps.size()));
        const std::string nv = "c" + std::to_string(rng() % 1000000);
        if (vols.count(nv)) continue;
        Status s = st->Clone(pick->first, nv);
        if (s.ok()) {
          vols.emplace(nv, SectorModel(pick->second));
        } else {
          maybe_snaps.insert("clone:" + nv);
        }
      } else {
        if (snaps.empty()) continue;
        auto pick = snaps.begin();
        std::advance(pick, static_cast<long>(rng() % snaps.size()));
        const std::string full = pick->first;
        Status s = st->Delete(full);
        if (s.ok()) {
          snaps.erase(full);
        } else {
          maybe_snaps.insert("delete:" + full);
        }
      }
    }
    if (!fenv.crashed()) continue;  // the budget outlived the work: no crash this round
    ++crashes;
    so.value().reset();
    const PowerLossMode modes[] = {PowerLossMode::kRandomSectors, PowerLossMode::kDropAll,
                                   PowerLossMode::kTornLast};
    ASSERT_TRUE(fenv.SimulatePowerLoss(modes[rng() % 3]).ok());
  }
  std::printf("seed %llu: %llu crashes after %llu operations\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(crashes),
              static_cast<unsigned long long>(ops_total));
  EXPECT_GT(crashes, Iterations() / 2);
}

INSTANTIATE_TEST_SUITE_P(Seeds, StoreCrash, ::testing::Range(1, 4));

}  // namespace
}  // namespace ovbd
