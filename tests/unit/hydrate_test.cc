// Hydration: the upper's fill, the race with foreground writes and
// discards (made deterministic with a hook), the store's job from start to
// the manifest without lowers, pause/resume/cancel/rate, restarts, errors,
// ENOSPC, a crash at every step, and a random model with writes, discards,
// snapshots and crashes racing the job.
#include <gtest/gtest.h>

#include <atomic>
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "fault_env.h"
#include "ovbd/store/store.h"
#include "test_util.h"

namespace ovbd {
namespace {

using namespace std::chrono_literals;

constexpr uint64_t kMiB = 1 << 20;

// OVBD_CRASH_ITERATIONS (default 150; the sanitizer runs use fewer) scales
// the crash tests.
uint64_t CrashScale(uint64_t per, uint64_t lo, uint64_t hi) {
  const char* e = std::getenv("OVBD_CRASH_ITERATIONS");
  const uint64_t it = e ? std::strtoull(e, nullptr, 10) : 150;
  return std::clamp<uint64_t>(it / per, lo, hi);
}

// Waits (bounded) for pred; false on timeout.
bool WaitUntil(const std::function<bool()>& pred, std::chrono::milliseconds limit = 30s) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > end) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

// A raw image with data, zero runs and holes, so the layer has all three.
std::vector<char> MakeImage(std::mt19937_64& rng, uint64_t size) {
  std::vector<char> img(size, 0);
  for (uint64_t off = 0; off < size; off += 64 << 10) {
    const int kind = static_cast<int>(rng() % 4);
    if (kind == 0) continue;  // hole
    auto d = test::RandomBytes(rng, 64 << 10);
    std::memcpy(img.data() + off, d.data(), d.size());
  }
  return img;
}

std::vector<char> ReadAll(Volume& v) {
  std::vector<char> out(v.size());
  auto n = v.Read(0, out.size(), out.data());
  EXPECT_TRUE(n.ok()) << n.status().ToString();
  return out;
}

// Reads the whole volume `name` through a fresh handle.
std::vector<char> ReadVolume(Store* st, const std::string& name) {
  auto v = st->Acquire(name);
  EXPECT_TRUE(v.ok()) << v.status().ToString();
  if (!v.ok()) return {};
  auto out = ReadAll(*v.value());
  st->Release(name);
  return out;
}

bool LayerFilesPresent(Env* env, const std::string& store) {
  auto names = env->ListDir(store + "/layers");
  EXPECT_TRUE(names.ok());
  for (const auto& n : names.value()) {
    if (n.rfind("sha256-", 0) == 0) return true;
  }
  return false;
}

HydrateInfo Info(Store* st, const std::string& vol) {
  auto i = st->Lookup(vol);
  EXPECT_TRUE(i.ok()) << i.status().ToString();
  return i.ok() ? i->hydrate : HydrateInfo{};
}

bool WaitState(Store* st, const std::string& vol, HydrateState want,
               std::chrono::milliseconds limit = 60s) {
  return WaitUntil([&] { return Info(st, vol).state == want; }, limit);
}

// Calls a hook (once) from the first read of a layer file after Arm():
// lets a test act between hydration's read of the lowers and its fill.
class HookEnv : public EnvWrapper {
 public:
  explicit HookEnv(Env* base) : EnvWrapper(base) {}
  void Arm(std::function<void()> fn) {
    hook_ = std::move(fn);
    armed_ = true;
  }
  uint64_t space_avail_blocks = UINT64_MAX;  // fake free space (SpaceOf)

  Result<std::unique_ptr<ReadableFile>> OpenReadable(const std::string& path) override {
    OVBD_ASSIGN_OR_RETURN(auto f, target()->OpenReadable(path));
    if (path.find("sha256-") == std::string::npos) return f;
    return std::unique_ptr<ReadableFile>(new Hooked(std::move(f), this));
  }
  Result<FsSpace> SpaceOf(const std::string& path) override {
    OVBD_ASSIGN_OR_RETURN(FsSpace s, target()->SpaceOf(path));
    if (space_avail_blocks != UINT64_MAX) s.blocks_avail = space_avail_blocks;
    return s;
  }

 private:
  class Hooked : public ReadableFile {
   public:
    Hooked(std::unique_ptr<ReadableFile> f, HookEnv* env) : f_(std::move(f)), env_(env) {}
    Status ReadAt(uint64_t off, size_t n, char* buf, size_t* got) const override {
      Status s = f_->ReadAt(off, n, buf, got);
      if (env_->armed_.exchange(false)) env_->hook_();
      return s;
    }
    uint64_t Size() const override { return f_->Size(); }
    const std::string& Name() const override { return f_->Name(); }
    int NativeFd() const override { return -1; }  // every read comes through ReadAt

   private:
    std::unique_ptr<ReadableFile> f_;
    HookEnv* env_;
  };
  std::function<void()> hook_;
  std::atomic<bool> armed_{false};
};

// A store with one volume "vm" over one lower layer made from `image`.
struct Fixture {
  explicit Fixture(Env* e, uint64_t seed = 1, uint64_t size = 8 * kMiB, bool compress = true)
      : env(e), rng(seed) {
    path = dir.Sub("store");
    image = MakeImage(rng, size);
    EXPECT_TRUE(test::WriteWholeFile(Env::Default(), dir.Sub("disk.raw"), image).ok());
    EXPECT_TRUE(Store::Init(env, path).ok());
    auto s = Store::Open(env, path, Options());
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    ImportOptions io;
    if (compress) io.compress = zfile::Options{};
    EXPECT_TRUE(s.value()->ImportRaw("vm", dir.Sub("disk.raw"), io, {}).ok());
  }
  StoreOptions Options(bool resume = true) const {
    StoreOptions o;
    o.resume_hydration = resume;
    o.hydrate_backoff_ms = 1;
    return o;
  }
  std::unique_ptr<Store> Open(bool resume = true) {
    auto s = Store::Open(env, path, Options(resume));
    EXPECT_TRUE(s.ok()) << s.status().ToString();
    return s.ok() ? std::move(s).value() : nullptr;
  }
  Env* env;
  test::TempDir dir;
  std::string path;
  std::mt19937_64 rng;
  std::vector<char> image;
};

TEST(UpperFill, WritesOnlyWhatTheMapLacks) {
  test::TempDir dir;
  auto up = Upper::Create(Env::Default(), dir.Sub("u"), kMiB, lsmt::NewUuid(), "");
  ASSERT_TRUE(up.ok());
  Upper& u = *up.value();
  std::vector<char> a(4096, 'A'), f(16384, 'F');
  ASSERT_TRUE(u.Write(4096, a.data(), a.size()).ok());
  ASSERT_TRUE(u.Zero(8192, 4096).ok());
  auto w = u.Fill(0, f.data(), f.size());
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(w.value(), 8192u);  // [0,4K) and [12K,16K)
  std::string seen;
  u.Walk(0, 16384, [&](uint64_t o, uint64_t n, UpperPiece p) {
    for (uint64_t b = o; b < o + n; b += 4096) {
      char c = p == UpperPiece::kZero ? 'Z' : '?';
      if (p == UpperPiece::kData) {
        size_t got = 0;
        EXPECT_TRUE(u.data_file()->ReadAt(Upper::DataOffset(b), 1, &c, &got).ok());
      }
      seen.push_back(c);
    }
  });
  EXPECT_EQ(seen, "FAZF");
  // A second fill finds nothing absent.
  auto again = u.Fill(0, f.data(), f.size());
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again.value(), 0u);
}

// The hook writes (or discards) while HydrateRange holds lower data it read
// before the write: the fill must leave the foreground's bytes alone.
void RaceForeground(bool discard) {
  HookEnv env(Env::Default());
  Fixture fx(&env, 7, 2 * kMiB, /*compress=*/false);
  auto st = fx.Open(false);
  auto vr = st->Acquire("vm");
  ASSERT_TRUE(vr.ok());
  auto v = vr.value();
  std::vector<char> expect = fx.image;
  std::vector<char> w(8192, 'W');
  const uint64_t off = 12288;
  env.Arm([&] {
    if (discard) {
      ASSERT_TRUE(v->Discard(off, w.size()).ok());
      std::memset(expect.data() + off, 0, w.size());
    } else {
      ASSERT_TRUE(v->Write(off, w.data(), w.size()).ok());
      std::memcpy(expect.data() + off, w.data(), w.size());
    }
  });
  auto copied = v->HydrateRange(v->stack(), 0, kMiB);
  ASSERT_TRUE(copied.ok()) << copied.status().ToString();
  auto got = ReadAll(*v);
  EXPECT_TRUE(std::memcmp(got.data() + off, expect.data() + off, w.size()) == 0)
      << "hydration overwrote a foreground " << (discard ? "discard" : "write");
  EXPECT_TRUE(got == expect);
  st->Release("vm");
}

TEST(HydrateRace, ForegroundWriteDuringFillWins) { RaceForeground(false); }
TEST(HydrateRace, ForegroundDiscardDuringFillWins) { RaceForeground(true); }

TEST(HydrateRace, FillAfterStackChangeWritesNothing) {
  Fixture fx(Env::Default(), 3, 2 * kMiB);
  auto st = fx.Open(false);
  auto v = st->Acquire("vm").value();
  auto before = v->stack();
  ASSERT_TRUE(st->Snapshot("vm", "s").ok());  // installs a new stack
  auto r = v->HydrateRange(before, 0, kMiB);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kBusy);
  EXPECT_EQ(v->Stats().upper.mapped_sectors, 0u);
  st->Release("vm");
}

TEST(Hydrate, EndsWithNoLowersContentUnchangedLayerCollected) {
  Fixture fx(Env::Default(), 11);
  auto st = fx.Open();
  auto v = st->Acquire("vm").value();
  std::vector<char> expect = fx.image;
  std::vector<char> w(5000, 'w');
  ASSERT_TRUE(v->Write(3 * kMiB + 100, w.data(), w.size()).ok());
  std::memcpy(expect.data() + 3 * kMiB + 100, w.data(), w.size());
  ASSERT_TRUE(v->Discard(5 * kMiB, 128 << 10).ok());
  std::memset(expect.data() + 5 * kMiB, 0, 128 << 10);
  const uint64_t to_copy = v->BytesFromLowers(*v->stack(), 0, v->size());
  ASSERT_GT(to_copy, 0u);

  auto s = st->Hydrate("vm", HydrateAction::kStart, 0);
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s.value(), HydrateState::kRunning);
  ASSERT_TRUE(WaitState(st.get(), "vm", HydrateState::kDone));
  HydrateInfo i = Info(st.get(), "vm");
  EXPECT_EQ(i.copied, to_copy);
  EXPECT_EQ(i.total, to_copy);
  EXPECT_TRUE(st->Lookup("vm")->lowers.empty());
  EXPECT_TRUE(v->stack()->lowers.empty());
  EXPECT_FALSE(LayerFilesPresent(fx.env, fx.path));
  EXPECT_TRUE(ReadAll(*v) == expect);
  st->Release("vm");
  st.reset();

  st = fx.Open();
  EXPECT_EQ(Info(st.get(), "vm").state, HydrateState::kDone);
  EXPECT_TRUE(st->Lookup("vm")->lowers.empty());
  EXPECT_TRUE(ReadVolume(st.get(), "vm") == expect);
  // Nothing left to do: hydrate again says so at once.
  auto again = st->Hydrate("vm", HydrateAction::kStart);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again.value(), HydrateState::kDone);
}

TEST(Hydrate, ReadsCopyTheirRangesFirst) {
  Fixture fx(Env::Default(), 23);
  auto st = fx.Open();
  auto v = st->Acquire("vm").value();
  // 512 KiB/s: the range read (its 256 KiB granule) comes before the scan,
  // which meanwhile gets nowhere near 7 MiB.
  ASSERT_TRUE(st->Hydrate("vm", HydrateAction::kStart, 512 << 10).ok());
  const uint64_t off = 5 * kMiB + 4096, len = 64 << 10;
  ASSERT_GT(v->BytesFromLowers(*v->stack(), off, len), 0u);
  std::vector<char> buf(len);
  ASSERT_TRUE(v->Read(off, len, buf.data()).ok());
  EXPECT_TRUE(std::memcmp(buf.data(), fx.image.data() + off, len) == 0);
  EXPECT_TRUE(WaitUntil([&] { return v->BytesFromLowers(*v->stack(), off, len) == 0; }))
      << "the range read was not copied";
  EXPECT_GT(v->BytesFromLowers(*v->stack(), 7 * kMiB, kMiB), 0u);
  EXPECT_TRUE(ReadAll(*v) == fx.image);
  st->Release("vm");
}

TEST(Hydrate, LayerSharedWithASnapshotStays) {
  Fixture fx(Env::Default(), 12, 4 * kMiB);
  auto st = fx.Open();
  ASSERT_TRUE(st->Snapshot("vm", "base").ok());
  ASSERT_TRUE(st->Hydrate("vm", HydrateAction::kStart, 0).ok());
  ASSERT_TRUE(WaitState(st.get(), "vm", HydrateState::kDone));
  EXPECT_TRUE(st->Lookup("vm")->lowers.empty());
  EXPECT_TRUE(LayerFilesPresent(fx.env, fx.path));  // vm@base still uses it
  EXPECT_TRUE(ReadVolume(st.get(), "vm@base") == fx.image);
  EXPECT_TRUE(ReadVolume(st.get(), "vm") == fx.image);
}

TEST(Hydrate, WritesAndDiscardsDuringHydrationAreKept) {
  Fixture fx(Env::Default(), 13);
  auto st = fx.Open();
  auto v = st->Acquire("vm").value();
  std::vector<char> expect = fx.image;
  ASSERT_TRUE(st->Hydrate("vm", HydrateAction::kStart, 4 * kMiB).ok());
  std::mt19937_64 rng(99);
  int ops = 0;
  while (Info(st.get(), "vm").state == HydrateState::kRunning || ops < 50) {
    const uint64_t off = rng() % (v->size() - 70000);
    const uint64_t len = 1 + rng() % 65536;
    if (rng() % 4 == 0) {
      ASSERT_TRUE(v->Discard(off, len).ok());
      std::memset(expect.data() + off, 0, len);
    } else {
      auto d = test::RandomBytes(rng, len);
      ASSERT_TRUE(v->Write(off, d.data(), len).ok());
      std::memcpy(expect.data() + off, d.data(), len);
    }
    // Reads during hydration, some of which copy on read.
    std::vector<char> r(len);
    ASSERT_TRUE(v->Read(rng() % (v->size() - len), len, r.data()).ok());
    if (++ops % 100 == 0) {
      ASSERT_TRUE(v->Flush().ok());
    }
    ASSERT_LT(ops, 200000) << "hydration never finished";
  }
  ASSERT_EQ(Info(st.get(), "vm").state, HydrateState::kDone) << Info(st.get(), "vm").error;
  EXPECT_TRUE(ReadAll(*v) == expect);
  ASSERT_TRUE(v->Flush().ok());
  st->Release("vm");
  st.reset();
  st = fx.Open();
  EXPECT_TRUE(ReadVolume(st.get(), "vm") == expect);
}

TEST(Hydrate, SnapshotMidwayIsExactAndHydrationStillEnds) {
  Fixture fx(Env::Default(), 14);
  auto st = fx.Open();
  auto v = st->Acquire("vm").value();
  ASSERT_TRUE(st->Hydrate("vm", HydrateAction::kStart, 2 * kMiB).ok());
  ASSERT_TRUE(WaitUntil([&] { return Info(st.get(), "vm").copied > 0; }));
  std::vector<char> w(4096, 'x');
  ASSERT_TRUE(v->Write(kMiB, w.data(), w.size()).ok());
  ASSERT_TRUE(st->Snapshot("vm", "mid").ok());
  const std::vector<char> at_snapshot = ReadAll(*v);
  ASSERT_TRUE(v->Write(2 * kMiB, w.data(), w.size()).ok());
  std::vector<char> expect = at_snapshot;
  std::memcpy(expect.data() + 2 * kMiB, w.data(), w.size());
  ASSERT_TRUE(st->Hydrate("vm", HydrateAction::kRate, 0).ok());
  ASSERT_TRUE(WaitState(st.get(), "vm", HydrateState::kDone)) << Info(st.get(), "vm").error;
  EXPECT_TRUE(st->Lookup("vm")->lowers.empty());
  EXPECT_EQ(v->stack()->lowers.size(), 0u);
  EXPECT_TRUE(ReadAll(*v) == expect);
  EXPECT_TRUE(ReadVolume(st.get(), "vm@mid") == at_snapshot);
  EXPECT_EQ(st->Lookup("vm@mid")->lowers.size(), 2u);
  st->Release("vm");
}

TEST(Hydrate, PauseResumeCancelRateAndRestart) {
  Fixture fx(Env::Default(), 15);
  auto st = fx.Open();
  ASSERT_TRUE(st->Hydrate("vm", HydrateAction::kStart, kMiB).ok());
  ASSERT_TRUE(WaitUntil([&] { return Info(st.get(), "vm").copied > 0; }));
  auto p = st->Hydrate("vm", HydrateAction::kPause);
  ASSERT_TRUE(p.ok()) << p.status().ToString();
  EXPECT_EQ(p.value(), HydrateState::kPaused);
  // Paused: no more copying (the job ends at its next step).
  ASSERT_TRUE(WaitUntil([&] {
    for (const auto& j : st->Jobs())
      if (j.kind == "hydrate" && (j.state == JobState::kRunning || j.state == JobState::kQueued))
        return false;
    return true;
  }));
  const uint64_t mapped = st->Acquire("vm").value()->Stats().upper.mapped_sectors;
  st->Release("vm");
  EXPECT_EQ(st->Hydrate("vm", HydrateAction::kPause).status().code(),
            Status::Code::kInvalidArgument);
  // The rate of a paused hydration changes without starting it.
  ASSERT_TRUE(st->Hydrate("vm", HydrateAction::kRate, 3 * kMiB).ok());
  EXPECT_EQ(Info(st.get(), "vm").state, HydrateState::kPaused);
  EXPECT_EQ(Info(st.get(), "vm").limit, 3 * kMiB);
  st.reset();

  // Paused survives a restart, and nothing is copied meanwhile.
  st = fx.Open();
  EXPECT_EQ(Info(st.get(), "vm").state, HydrateState::kPaused);
  EXPECT_EQ(Info(st.get(), "vm").limit, 3 * kMiB);
  EXPECT_EQ(st->Acquire("vm").value()->Stats().upper.mapped_sectors, mapped);
  st->Release("vm");
  // Running survives a restart too: the job resumes by itself.
  ASSERT_TRUE(st->Hydrate("vm", HydrateAction::kResume, kMiB).ok());
  st.reset();
  st = fx.Open();
  EXPECT_EQ(Info(st.get(), "vm").state, HydrateState::kRunning);
  ASSERT_TRUE(WaitUntil([&] { return Info(st.get(), "vm").copied > 0; }));
  // Cancel: idle, the record leaves the manifest, copied data stays.
  auto c = st->Hydrate("vm", HydrateAction::kCancel);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(c.value(), HydrateState::kIdle);
  st.reset();
  st = fx.Open();
  EXPECT_EQ(Info(st.get(), "vm").state, HydrateState::kIdle);
  EXPECT_GE(st->Acquire("vm").value()->Stats().upper.mapped_sectors, mapped);
  st->Release("vm");
  ASSERT_TRUE(st->Hydrate("vm", HydrateAction::kStart, 0).ok());
  ASSERT_TRUE(WaitState(st.get(), "vm", HydrateState::kDone));
  EXPECT_TRUE(ReadVolume(st.get(), "vm") == fx.image);
}

TEST(Hydrate, ToolOpenDoesNotResume) {
  Fixture fx(Env::Default(), 16);
  auto st = fx.Open();
  ASSERT_TRUE(st->Hydrate("vm", HydrateAction::kStart, kMiB).ok());
  st.reset();
  st = fx.Open(/*resume=*/false);
  for (const auto& j : st->Jobs()) EXPECT_NE(j.kind, "hydrate");
}

TEST(Hydrate, ReadErrorsAreRetriedThenReportedAndResumeRecovers) {
  FaultInjectionEnv fenv(Env::Default(), 5);
  Fixture fx(&fenv, 17, 4 * kMiB);
  auto st = fx.Open();
  (void)st->Acquire("vm").value();  // layers opened before the faults
  st->Release("vm");
  fenv.FailWith(EIO, FaultFilter::kReads, "sha256-");
  ASSERT_TRUE(st->Hydrate("vm", HydrateAction::kStart, 0).ok());
  ASSERT_TRUE(WaitState(st.get(), "vm", HydrateState::kError));
  HydrateInfo i = Info(st.get(), "vm");
  EXPECT_GE(i.retries, 5u);
  EXPECT_NE(i.error.find("sha256-"), std::string::npos) << i.error;  // names the layer
  EXPECT_NE(i.error.find("hydrating ["), std::string::npos) << i.error;  // and the range
  EXPECT_FALSE(st->Lookup("vm")->lowers.empty());  // never detached over a gap
  fenv.ClearFailures();
  EXPECT_TRUE(ReadVolume(st.get(), "vm") == fx.image);  // still serving
  st.reset();
  st = fx.Open();
  EXPECT_EQ(Info(st.get(), "vm").state, HydrateState::kError);  // remembered
  ASSERT_TRUE(st->Hydrate("vm", HydrateAction::kResume).ok());
  ASSERT_TRUE(WaitState(st.get(), "vm", HydrateState::kDone));
  EXPECT_TRUE(ReadVolume(st.get(), "vm") == fx.image);
}

TEST(Hydrate, NoSpaceIsRefusedBeforeStarting) {
  HookEnv env(Env::Default());
  Fixture fx(&env, 18);
  auto st = fx.Open();
  env.space_avail_blocks = 1;
  auto s = st->Hydrate("vm", HydrateAction::kStart);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), Status::Code::kNoSpace);
  EXPECT_EQ(s.status().os_errno(), ENOSPC);
  EXPECT_EQ(Info(st.get(), "vm").state, HydrateState::kIdle);  // nothing changed
  st.reset();
  st = fx.Open();
  EXPECT_EQ(Info(st.get(), "vm").state, HydrateState::kIdle);
}

TEST(Hydrate, NoSpaceMidwayStopsInErrorAndResumesAfterSpaceIsFreed) {
  FaultInjectionEnv fenv(Env::Default(), 6);
  Fixture fx(&fenv, 19, 4 * kMiB);
  auto st = fx.Open();
  fenv.FailWith(ENOSPC, FaultFilter::kWrites, ".data");
  ASSERT_TRUE(st->Hydrate("vm", HydrateAction::kStart, 0).ok());
  ASSERT_TRUE(WaitState(st.get(), "vm", HydrateState::kError));
  EXPECT_NE(Info(st.get(), "vm").error.find("space"), std::string::npos) << Info(st.get(), "vm").error;
  EXPECT_TRUE(ReadVolume(st.get(), "vm") == fx.image);
  fenv.ClearFailures();
  ASSERT_TRUE(st->Hydrate("vm", HydrateAction::kResume).ok());
  ASSERT_TRUE(WaitState(st.get(), "vm", HydrateState::kDone));
  EXPECT_TRUE(ReadVolume(st.get(), "vm") == fx.image);
}

TEST(Hydrate, DeleteDuringHydrationStopsIt) {
  Fixture fx(Env::Default(), 20);
  auto st = fx.Open();
  ASSERT_TRUE(st->Hydrate("vm", HydrateAction::kStart, kMiB).ok());
  ASSERT_TRUE(WaitUntil([&] { return Info(st.get(), "vm").copied > 0; }));
  ASSERT_TRUE(st->Delete("vm").ok());
  EXPECT_TRUE(WaitUntil([&] {
    for (const auto& j : st->Jobs())
      if (j.kind == "hydrate" && !(j.state == JobState::kCancelled || j.state == JobState::kDone ||
                                   j.state == JobState::kFailed))
        return false;
    return true;
  }));
  EXPECT_FALSE(st->Lookup("vm").ok());
  EXPECT_FALSE(LayerFilesPresent(fx.env, fx.path));
}

// A crash at every step of a hydration (each crash point it passes and a
// spread of its OS operations), then a power loss and recovery: the store
// opens, resumes, finishes, and every flushed write is there.
TEST(HydrateCrash, EveryStepRecovers) {
  FaultInjectionEnv fenv(Env::Default(), 21);
  std::vector<std::string> points;
  uint64_t ops = 0;
  {
    Fixture fx(&fenv, 22, 2 * kMiB);
    auto st = fx.Open();
    fenv.ClearCrashPointsSeen();
    const uint64_t before = fenv.mutating_ops();
    ASSERT_TRUE(st->Hydrate("vm", HydrateAction::kStart, 0).ok());
    ASSERT_TRUE(WaitState(st.get(), "vm", HydrateState::kDone));
    ops = fenv.mutating_ops() - before;
    for (const auto& p : fenv.crash_points_seen()) {
      if (std::find(points.begin(), points.end(), p) == points.end()) points.push_back(p);
    }
  }
  ASSERT_NE(std::find(points.begin(), points.end(), "hydrate.before_manifest"), points.end());
  ASSERT_NE(std::find(points.begin(), points.end(), "hydrate.after_manifest"), points.end());
  ASSERT_GT(ops, 4u);
  std::vector<std::function<void()>> arms;
  for (const auto& p : points) arms.push_back([&fenv, p] { fenv.CrashAt(p); });
  const uint64_t spread = CrashScale(12, 3, 12);
  for (uint64_t n = 0; n < ops; n += std::max<uint64_t>(1, ops / spread)) {
    arms.push_back([&fenv, n] { fenv.CrashAfterOps(n); });
  }
  for (size_t k = 0; k < arms.size(); ++k) {
    SCOPED_TRACE("crash " + std::to_string(k));
    Fixture fx(&fenv, 22, 2 * kMiB);
    std::vector<char> expect = fx.image;
    {
      auto st = fx.Open();
      auto v = st->Acquire("vm").value();
      std::vector<char> w(3000, 'q');
      ASSERT_TRUE(v->Write(kMiB / 2 + 7, w.data(), w.size()).ok());
      ASSERT_TRUE(v->Flush().ok());
      std::memcpy(expect.data() + kMiB / 2 + 7, w.data(), w.size());
      st->Release("vm");
      arms[k]();
      // The command itself may be what crashes.
      if (st->Hydrate("vm", HydrateAction::kStart, 0).ok()) {
        ASSERT_TRUE(WaitUntil([&] {
          auto s = Info(st.get(), "vm").state;
          return s == HydrateState::kError || s == HydrateState::kDone;
        }));
      }
    }
    ASSERT_TRUE(fenv.SimulatePowerLoss(PowerLossMode::kRandomSectors).ok());
    auto st = fx.Open();
    ASSERT_TRUE(st) << "store did not open after the crash";
    const HydrateState s = Info(st.get(), "vm").state;
    if (s != HydrateState::kDone) {
      // Running (resumed by itself) or failed at the crash: resume.
      if (s != HydrateState::kRunning) {
        ASSERT_TRUE(st->Hydrate("vm", HydrateAction::kResume).ok());
      }
      ASSERT_TRUE(WaitState(st.get(), "vm", HydrateState::kDone)) << Info(st.get(), "vm").error;
    }
    EXPECT_TRUE(st->Lookup("vm")->lowers.empty());
    EXPECT_TRUE(ReadVolume(st.get(), "vm") == expect);
  }
}

// Random writes, discards, flushes and snapshots racing a hydration, with
// crashes (process kill after a random number of OS operations, then a
// power loss) between rounds: flushed data is never lost, every sector reads
// one of the versions it may, snapshots are exact, and hydration ends with
// the live volume reading no lowers.
TEST(HydrateCrash, RandomModel) {
  FaultInjectionEnv fenv(Env::Default(), 31);
  Fixture fx(&fenv, 32, 2 * kMiB);
  std::mt19937_64 rng(33);
  const uint64_t size = fx.image.size(), sectors = size / 512;
  std::vector<char> current = fx.image;
  std::vector<std::set<std::string>> allowed(sectors);
  auto commit = [&] {
    for (uint64_t s = 0; s < sectors; ++s) allowed[s] = {std::string(current.data() + s * 512, 512)};
  };
  commit();
  std::map<std::string, std::vector<char>> snaps;
  std::set<std::string> maybe_snaps;
  const int rounds = static_cast<int>(CrashScale(6, 5, 25));
  for (int round = 0; round < rounds; ++round) {
    SCOPED_TRACE("round " + std::to_string(round));
    auto st = fx.Open();
    ASSERT_TRUE(st);
    {
      // Verify recovery.
      auto got = ReadVolume(st.get(), "vm");
      ASSERT_EQ(got.size(), size);
      for (uint64_t s = 0; s < sectors; ++s) {
        ASSERT_TRUE(allowed[s].count(std::string(got.data() + s * 512, 512)))
            << "sector " << s << " holds a version it never had";
      }
      current = got;
      commit();
      for (const auto& [n, content] : snaps) EXPECT_TRUE(ReadVolume(st.get(), n) == content) << n;
      for (const auto& n : maybe_snaps) {
        auto info = st->Lookup(n);
        if (info.ok()) snaps[n] = ReadVolume(st.get(), n);
      }
      maybe_snaps.clear();
    }
    const bool crash = round % 5 != 4;
    if (Info(st.get(), "vm").state != HydrateState::kRunning) {
      ASSERT_TRUE(st->Hydrate("vm", HydrateAction::kStart, (1 + rng() % 8) * kMiB).ok());
    }
    auto v = st->Acquire("vm").value();
    if (crash) fenv.CrashAfterOps(5 + rng() % 200);
    for (int i = 0; i < 60 && !fenv.crashed(); ++i) {
      const uint64_t off = (rng() % sectors) * 512 / (rng() % 2 ? 1 : 7) / 512 * 512 + rng() % 512;
      const uint64_t len = std::min<uint64_t>(1 + rng() % 20000, size - off);
      const int what = static_cast<int>(rng() % 20);
      if (what < 14) {
        // A write or discard that fails at the crash may have reached some
        // of its sectors (a discard writes its partial edge sectors first):
        // every sector it touches may hold its new version from now on.
        std::vector<char> next = current;
        std::vector<char> d;
        if (what < 10) {
          d = test::RandomBytes(rng, len);
          std::memcpy(next.data() + off, d.data(), len);
        } else {
          std::memset(next.data() + off, 0, len);
        }
        for (uint64_t s = off / 512; s < (off + len + 511) / 512; ++s)
          allowed[s].insert(std::string(next.data() + s * 512, 512));
        const Status done = what < 10 ? v->Write(off, d.data(), len).status() : v->Discard(off, len);
        if (!done.ok()) break;
        current.swap(next);
      } else if (what < 19) {
        if (!v->Flush().ok()) break;
        commit();
      } else {
        const std::string name = "s" + std::to_string(round) + "_" + std::to_string(i);
        // A snapshot is durable when it returns; it holds the content at
        // its instant (everything written before it).
        const std::vector<char> at = current;
        Status s = st->Snapshot("vm", name);
        if (!s.ok()) {
          maybe_snaps.insert("vm@" + name);
          break;
        }
        snaps["vm@" + name] = at;
        commit();  // a snapshot makes everything before it durable
      }
    }
    st->Release("vm");
    v.reset();
    if (crash && !fenv.crashed()) fenv.CrashAfterOps(0);  // crash now if it has not yet
    st.reset();
    if (crash) {
      ASSERT_TRUE(fenv.SimulatePowerLoss(PowerLossMode::kRandomSectors).ok());
    }
  }
  // Last: no crash, hydration finishes over whatever stack the rounds left.
  fenv.DisarmCrashes();
  auto st = fx.Open();
  auto got = ReadVolume(st.get(), "vm");
  for (uint64_t s = 0; s < sectors; ++s) {
    ASSERT_TRUE(allowed[s].count(std::string(got.data() + s * 512, 512))) << "sector " << s;
  }
  if (Info(st.get(), "vm").state != HydrateState::kRunning) {
    ASSERT_TRUE(st->Hydrate("vm", HydrateAction::kStart, 0).ok());
  }
  ASSERT_TRUE(st->Hydrate("vm", HydrateAction::kRate, 0).ok());
  ASSERT_TRUE(WaitState(st.get(), "vm", HydrateState::kDone)) << Info(st.get(), "vm").error;
  EXPECT_TRUE(st->Lookup("vm")->lowers.empty());
  EXPECT_TRUE(ReadVolume(st.get(), "vm") == got);
  for (const auto& [n, content] : snaps) EXPECT_TRUE(ReadVolume(st.get(), n) == content) << n;
}

}  // namespace
}  // namespace ovbd
