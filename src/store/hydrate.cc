// Hydration: a volume stops depending on its lower layers while it stays in
// use (docs/ARCHITECTURE.md, "Hydration").
//
// A job on the store's JobRunner walks the volume in chunks and, for each,
// copies into the upper what the volume reads from its lowers' data where
// the upper holds nothing (Volume::HydrateRange). The copy reads the lowers
// without any lock (they are immutable) and writes through Upper::Fill,
// which writes only sectors still absent, atomically against foreground
// writes and discards of the same range: those always win. Ranges that
// foreground reads take from the lowers are copied first (copy-on-read).
//
// When a full pass finds nothing left, FinishHydration commits the upper
// and only then drops the lowers from the manifest: a crash before the
// manifest's rename leaves the old stack (same content), after it the
// upper's journal maps everything. A snapshot or merge that installs a new
// stack mid-way only makes the job start a new pass over the new stack
// (after a snapshot, what was hydrated sits in the sealed layer and is
// copied again into the fresh upper: the live volume must end up reading
// no lowers).
//
// The job is a stepped job: each step does at most ~20 ms of copying, then
// the job waits for its rate limit or for foreground I/O to pause (with a
// minimum progress, so it never starves) without holding a worker thread.
#include <algorithm>
#include <chrono>
#include <deque>
#include <cinttypes>
#include <cerrno>
#include <cmath>
#include <future>

#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

#include "ovbd/store/filename.h"
#include "store_internal.h"

namespace ovbd {

namespace {
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr uint64_t kChunk = uint64_t{1} << 20;          // one copy request
constexpr uint64_t kReadGranule = uint64_t{256} << 10;  // copy-on-read unit
constexpr auto kStepBudget = milliseconds(20);          // copying per step
constexpr uint64_t kStepBytes = uint64_t{16} << 20;     // at most this per step
constexpr auto kMaxWait = milliseconds(100);            // longest wait between steps
constexpr auto kIdleFor = milliseconds(5);              // foreground quiet this long: full speed
constexpr auto kMinProgressGap = milliseconds(100);     // under load: a chunk this often
constexpr uint64_t kCommitEvery = uint64_t{256} << 20;  // bytes between commits
constexpr int kMaxRetries = 5;                          // consecutive failures before `error`
constexpr size_t kReadAhead = 4;                        // chunks the scan reads ahead of its fill

uint64_t ChunkEnd(uint64_t off, uint64_t size) {
  return std::min(size, (off / kChunk + 1) * kChunk);
}
}  // namespace

// The state of one hydration run; its Step is the job's step function.
class Store::Hydrator {
 public:
  Hydrator(Store* s, std::shared_ptr<Hydration> h, uint64_t epoch)
      : store_(s), h_(std::move(h)), epoch_(epoch) {}

  Result<std::optional<milliseconds>> Step(Job& job);

 private:
  // One chunk or read range; false when the stack changed (new pass).
  Result<bool> Copy(uint64_t off, uint64_t len);
  // Copy of the scan's chunk at `off`: read ahead if it was (else read
  // now), with the reads of the chunks after it queued before the fill.
  Result<bool> CopyScan(uint64_t off, uint64_t len);
  // Accounts for what a copy wrote; false when the stack changed.
  Result<bool> Copied(const Result<uint64_t>& written);
  // Queues reads on reader_ of the chunks from `from` on, up to
  // kReadAhead chunks ahead of the fill.
  void ReadAhead(uint64_t from);
  // Waits for the reads ahead in flight and forgets them.
  void DropAhead();
  // A chunk whose buffer can be reused, or a new one.
  std::unique_ptr<Volume::HydrateChunk> TakeSpare();
  // Starts a commit of what was copied so far on committer_, unless one is
  // still running; the result of the last one that ended, if it failed.
  Status CommitInBackground();
  // Waits for the commit in flight, if any; its result.
  Status AwaitCommit();
  // A failed step: retried after a backoff, or the end of the job.
  Result<std::optional<milliseconds>> Failed(const Status& why);
  void NewPass();
  // Adds a range a foreground read took from the lowers to reads_.
  void QueueRead(uint64_t off, uint64_t len);
  void Publish(Job& job, Clock::time_point now);
  // How long to wait before copying more under the rate limit (0: go).
  milliseconds RateWait(Clock::time_point now);

  Store* const store_;
  const std::shared_ptr<Hydration> h_;
  const uint64_t epoch_;
  std::shared_ptr<Volume> v_;
  std::shared_ptr<const Stack> pass_;  // the stack this pass walks
  uint64_t cursor_ = 0;
  uint64_t copied_ = 0;  // this run
  uint64_t pass_start_copied_ = 0;
  int idle_passes_ = 0;
  uint64_t since_commit_ = 0;
  // The periodic commit (every kCommitEvery copied) runs here, beside the
  // copy: its fdatasync waits for the disk to write back what was copied,
  // and a copy that stood still meanwhile would leave the CPU idle while
  // the disk works and the disk idle while the CPU decompresses. At most one
  // commit is in flight; the pass's final commit (before the lowers are
  // dropped) waits for it and then commits on the job's thread as before.
  // Made on first use; its destructor joins after the commit in flight.
  std::unique_ptr<boost::asio::thread_pool> committer_;
  std::future<Status> commit_;
  std::vector<char> scratch_;
  // The scan reads its next chunks on reader_ while the job's thread fills
  // the last one into the upper: decompression and the lowers' reads then
  // overlap the upper's writes (two threads on different files; two
  // copiers writing the one data file were slower, as ext4 serializes its
  // writes). A few chunks are queued, not one, so that neither thread
  // waits for the other to be scheduled after every chunk on a busy
  // machine. A chunk belongs to reader_ while its future is pending.
  struct Ahead {
    uint64_t off;
    std::unique_ptr<Volume::HydrateChunk> chunk;
    std::future<Status> read;
  };
  std::deque<Ahead> ahead_;  // in offset order, contiguous
  std::vector<std::unique_ptr<Volume::HydrateChunk>> spare_;  // buffers to reuse
  std::unique_ptr<Volume::HydrateChunk> chunk_;  // the one being filled
  // Declared after what its tasks use: destroyed (joined) first.
  std::unique_ptr<boost::asio::thread_pool> reader_;
  std::deque<std::pair<uint64_t, uint64_t>> reads_;  // (offset, length) to copy first
  // Rate limit: a token bucket in bytes.
  double tokens_ = 0;
  Clock::time_point refilled_{};
  // Back-off: foreground operations seen, when they last changed, and
  // when this job last copied.
  uint64_t fg_ops_ = 0;
  Clock::time_point fg_changed_{}, progressed_{};
  // Measured rate.
  Clock::time_point rate_t0_{};
  uint64_t rate_b0_ = 0;
  // Retries.
  int failures_ = 0;
  Clock::time_point retry_at_{};
};

void Store::Hydrator::QueueRead(uint64_t off, uint64_t len) {
  // Whole granules: a 4 KiB read copies its 256 KiB around it, so the upper
  // is not cut into 4 KiB pieces (each its own extent in the data file).
  const uint64_t size = v_->size();
  const uint64_t b = off / kReadGranule * kReadGranule;
  const uint64_t e = std::min(size, (off + len + kReadGranule - 1) / kReadGranule * kReadGranule);
  if (b >= e) return;
  if (!reads_.empty()) {
    auto& last = reads_.back();
    if (b <= last.first + last.second && e >= last.first) {
      const uint64_t nb = std::min(b, last.first);
      last.second = std::max(e, last.first + last.second) - nb;
      last.first = nb;
      return;
    }
  }
  // Bounded: past it the scan still reaches the range in its turn.
  if (reads_.size() < Volume::kMaxReadRanges) reads_.emplace_back(b, e - b);
}

void Store::Hydrator::NewPass() {
  DropAhead();
  pass_ = v_->stack();
  cursor_ = 0;
  pass_start_copied_ = copied_;
  const uint64_t left = v_->BytesFromLowers(*pass_, 0, v_->size());
  h_->total.store(copied_ + left, std::memory_order_relaxed);
}

void Store::Hydrator::Publish(Job& job, Clock::time_point now) {
  h_->copied.store(copied_, std::memory_order_relaxed);
  if (h_->total.load(std::memory_order_relaxed) < copied_) {
    h_->total.store(copied_, std::memory_order_relaxed);
  }
  job.SetProgress(copied_, h_->total.load(std::memory_order_relaxed));
  const auto dt = now - rate_t0_;
  if (dt >= std::chrono::seconds(1)) {
    const double secs = std::chrono::duration<double>(dt).count();
    h_->rate.store(static_cast<uint64_t>(static_cast<double>(copied_ - rate_b0_) / secs),
                   std::memory_order_relaxed);
    rate_t0_ = now;
    rate_b0_ = copied_;
  }
}

milliseconds Store::Hydrator::RateWait(Clock::time_point now) {
  const uint64_t limit = h_->limit.load(std::memory_order_relaxed);
  if (limit == 0) return milliseconds(0);
  const double dt = std::chrono::duration<double>(now - refilled_).count();
  refilled_ = now;
  // A burst of at most 100 ms of the rate, but always room for one chunk.
  const double cap = std::max<double>(static_cast<double>(kChunk), 0.1 * static_cast<double>(limit));
  tokens_ = std::min(cap, tokens_ + dt * static_cast<double>(limit));
  if (tokens_ > 0) return milliseconds(0);
  const double wait_s = -tokens_ / static_cast<double>(limit);
  return std::clamp(milliseconds(static_cast<int64_t>(std::ceil(wait_s * 1000))), milliseconds(1),
                    kMaxWait);
}

Result<bool> Store::Hydrator::Copy(uint64_t off, uint64_t len) {
  return Copied(v_->HydrateRange(pass_, off, len, &scratch_));
}

Result<bool> Store::Hydrator::Copied(const Result<uint64_t>& w) {
  if (!w.ok()) {
    if (w.status().code() == Status::Code::kBusy && v_->stack() != pass_) return false;
    return w.status();
  }
  copied_ += w.value();
  since_commit_ += w.value();
  tokens_ -= static_cast<double>(w.value());
  if (w.value() > 0) progressed_ = Clock::now();
  return true;
}

void Store::Hydrator::DropAhead() {
  for (Ahead& a : ahead_) {
    (void)a.read.get();  // read from a stack no longer walked
    spare_.push_back(std::move(a.chunk));
  }
  ahead_.clear();
}

std::unique_ptr<Volume::HydrateChunk> Store::Hydrator::TakeSpare() {
  if (spare_.empty()) return std::make_unique<Volume::HydrateChunk>();
  auto c = std::move(spare_.back());
  spare_.pop_back();
  return c;
}

void Store::Hydrator::ReadAhead(uint64_t from) {
  const uint64_t size = v_->size();
  if (!ahead_.empty()) from = ChunkEnd(ahead_.back().off, size);
  while (ahead_.size() < kReadAhead && from < size) {
    if (!reader_) reader_ = std::make_unique<boost::asio::thread_pool>(1);
    std::unique_ptr<Volume::HydrateChunk> c = TakeSpare();
    const uint64_t n = ChunkEnd(from, size) - from;
    std::packaged_task<Status()> task([v = v_, st = pass_, from, n, p = c.get()] {
      return v->ReadForHydrate(st, from, n, p);
    });
    ahead_.push_back({from, std::move(c), task.get_future()});
    boost::asio::post(*reader_, std::move(task));
    from += n;
  }
}

Result<bool> Store::Hydrator::CopyScan(uint64_t off, uint64_t len) {
  if (!ahead_.empty() && ahead_.front().off != off) DropAhead();  // the scan moved
  if (chunk_) spare_.push_back(std::move(chunk_));
  Status read;
  if (!ahead_.empty()) {
    Ahead a = std::move(ahead_.front());
    ahead_.pop_front();
    read = a.read.get();
    chunk_ = std::move(a.chunk);
  } else {
    chunk_ = TakeSpare();
    read = v_->ReadForHydrate(pass_, off, len, chunk_.get());
  }
  if (!read.ok()) {
    DropAhead();  // retried from here after the backoff
    if (v_->stack() != pass_) return false;
    return read;
  }
  ReadAhead(off + len);
  return Copied(v_->FillHydrated(*chunk_));
}

Status Store::Hydrator::CommitInBackground() {
  if (commit_.valid()) {
    if (commit_.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      return Status::OK();  // still running: the next step starts the next one
    }
    OVBD_RETURN_IF_ERROR(commit_.get());
  }
  if (!committer_) committer_ = std::make_unique<boost::asio::thread_pool>(1);
  std::packaged_task<Status()> task([v = v_] { return v->Flush(); });
  commit_ = task.get_future();
  boost::asio::post(*committer_, std::move(task));
  since_commit_ = 0;
  return Status::OK();
}

Status Store::Hydrator::AwaitCommit() {
  if (!commit_.valid()) return Status::OK();
  return commit_.get();
}

Result<std::optional<milliseconds>> Store::Hydrator::Failed(const Status& why) {
  h_->retries.fetch_add(1, std::memory_order_relaxed);
  if (++failures_ > kMaxRetries) {
    store_->FailHydration(h_, epoch_, why);
    return why;
  }
  h_->set_error(why.ToString() + " (retrying)");
  retry_at_ = Clock::now() + milliseconds(store_->opts_.hydrate_backoff_ms) * (1 << (failures_ - 1));
  return std::optional<milliseconds>(milliseconds(1));
}

Result<std::optional<milliseconds>> Store::Hydrator::Step(Job& job) {
  if (h_->epoch() != epoch_) return job.CancelledStatus();  // superseded
  const auto now = Clock::now();
  if (now < retry_at_) {
    return std::optional<milliseconds>(
        std::min(kMaxWait, std::chrono::duration_cast<milliseconds>(retry_at_ - now) + milliseconds(1)));
  }
  if (!v_) {
    auto v = store_->OpenVolume(h_->vol, false);
    if (!v.ok()) {
      if (v.status().IsNotFound()) return job.CancelledStatus();  // deleted
      return Failed(v.status());
    }
    v_ = std::move(v).value();
    if (v_->read_only()) return Status::ReadOnly(h_->vol + " is read-only");
    v_->SetCopyOnRead(true);
    refilled_ = rate_t0_ = progressed_ = fg_changed_ = now;
    fg_ops_ = v_->foreground_ops();
    NewPass();
  }
  if (v_->stack() != pass_) NewPass();

  for (const auto& [off, len] : v_->TakeReadRanges()) QueueRead(off, len);

  if (reads_.empty() && cursor_ >= v_->size()) {
    // A full pass over this stack: make it durable, and finish if nothing
    // is left (else, a new pass).
    Status f = AwaitCommit();
    if (f.ok()) f = v_->Flush();
    if (!f.ok()) return Failed(f);
    since_commit_ = 0;
    auto done = store_->FinishHydration(h_, epoch_, v_, pass_);
    if (!done.ok()) {
      if (done.status().os_errno() == ECANCELED || done.status().IsNotFound()) {
        return job.CancelledStatus();
      }
      return Failed(done.status());
    }
    if (done.value()) {
      v_->SetCopyOnRead(false);
      Publish(job, Clock::now());
      return std::optional<milliseconds>();
    }
    // Never an endless loop: passes over one stack that copy nothing but
    // leave something to copy mean the copy cannot make progress.
    if (v_->stack() == pass_ && copied_ == pass_start_copied_) {
      if (++idle_passes_ >= 3) {
        return Failed(Status::IOError(h_->vol + ": hydration makes no progress (" +
                                          std::to_string(v_->BytesFromLowers(*pass_, 0, v_->size())) +
                                          " bytes still read from the lowers)",
                                      EIO));
      }
    } else {
      idle_passes_ = 0;
    }
    NewPass();
    return std::optional<milliseconds>(milliseconds(1));
  }

  if (milliseconds w = RateWait(now); w.count() > 0) return std::optional<milliseconds>(w);
  // Back off while foreground I/O runs, but copy a chunk at least every
  // kMinProgressGap so the job never starves.
  const uint64_t fg = v_->foreground_ops();
  if (fg != fg_ops_) {
    fg_ops_ = fg;
    fg_changed_ = now;
  }
  const bool busy = now - fg_changed_ < kIdleFor;
  if (busy && now - progressed_ < kMinProgressGap) {
    return std::optional<milliseconds>(milliseconds(5));
  }

  const auto deadline = now + kStepBudget;
  const uint64_t start = copied_;
  for (;;) {
    // Ranges foreground reads took from the lowers come first (their data
    // is still in the cache), then the scan; both under the same budget,
    // rate limit and back-off.
    uint64_t off, end;
    bool scan = false;
    if (!reads_.empty()) {
      auto& r = reads_.front();
      off = r.first;
      end = std::min(r.first + r.second, ChunkEnd(off, v_->size()));
      r.second -= end - off;
      r.first = end;
      if (r.second == 0) reads_.pop_front();
    } else if (cursor_ < v_->size()) {
      off = cursor_;
      end = ChunkEnd(cursor_, v_->size());
      cursor_ = end;
      scan = true;
    } else {
      break;
    }
    auto ok = scan ? CopyScan(off, end - off) : Copy(off, end - off);
    if (!ok.ok()) return Failed(ok.status());
    if (!ok.value()) return std::optional<milliseconds>(milliseconds(0));
    failures_ = 0;
    if (copied_ - start > 0 && busy) break;  // one chunk under load
    if (copied_ - start >= kStepBytes || Clock::now() >= deadline) break;
    if (h_->limit.load(std::memory_order_relaxed) && tokens_ <= 0) break;
  }
  if (failures_ == 0 && copied_ > start) h_->set_error("");
  if (since_commit_ >= kCommitEvery) {
    // Bounded loss on a crash: at most about this much (twice, while a
    // commit is still running) is copied again.
    Status f = CommitInBackground();
    if (!f.ok()) return Failed(f);
  }
  Publish(job, Clock::now());
  return std::optional<milliseconds>(milliseconds(0));
}

// ---------------------------------------------------------------------------

Status Store::RecordHydrate(const std::string& vol, const HydrateRecord& rec) {
  OVBD_ASSIGN_OR_RETURN(Manifest m, ManifestCopy(vol));
  if (m.hydrate.state == rec.state && m.hydrate.rate == rec.rate && m.hydrate.error == rec.error) {
    return Status::OK();
  }
  m.hydrate = rec;
  return WriteManifest(std::move(m));
}

void Store::StartHydrationJob(const std::shared_ptr<Hydration>& h) {
  const uint64_t epoch = h->BeginRun();
  h->state = HydrateState::kRunning;
  h->set_error("");
  h->copied = 0;
  h->rate = 0;
  auto hyd = std::make_shared<Hydrator>(this, h, epoch);
  auto job = Runner()->StartSteps("hydrate", h->vol, [hyd](Job& j) { return hyd->Step(j); });
  h->SetJob(epoch, std::move(job));
}

Result<HydrateState> Store::Hydrate(const std::string& vol, HydrateAction action,
                                    std::optional<uint64_t> rate) {
  OVBD_RETURN_IF_ERROR(CheckWritable());
  OVBD_RETURN_IF_ERROR(ValidateName(vol, "volume"));
  OVBD_ASSIGN_OR_RETURN(auto scope, CommandScope::Enter(this, {vol}, false));
  Manifest m;
  std::shared_ptr<Hydration> h;
  {
    MutexLock lk(&mu_);
    OVBD_ASSIGN_OR_RETURN(auto r, Resolve(vol));
    if (r.second) return Status::InvalidArgument(vol + " is a snapshot; only volumes hydrate");
    m = *r.first;
    auto& slot = hydrations_[vol];
    if (!slot) {
      slot = std::make_shared<Hydration>(vol);
      slot->state = m.hydrate.state;
      slot->limit = m.hydrate.state == HydrateState::kIdle ? opts_.default_hydrate_rate
                                                             : m.hydrate.rate;
      slot->set_error(m.hydrate.error);
    }
    h = slot;
  }
  HydrateRecord rec = m.hydrate;
  rec.rate = rate.value_or(h->limit.load());
  const HydrateState now = h->state.load();
  bool start = false;
  switch (action) {
    case HydrateAction::kStart:
    case HydrateAction::kResume:
      start = true;
      break;
    case HydrateAction::kRate:
      if (!rate) return Status::InvalidArgument("hydrate " + vol + " rate: give a rate");
      start = now == HydrateState::kIdle || now == HydrateState::kError;
      break;
    case HydrateAction::kPause:
      if (now != HydrateState::kRunning) {
        return Status::InvalidArgument("hydrate " + vol + " pause: it is " +
                                       HydrateStateName(now) + ", not running");
      }
      rec.state = HydrateState::kPaused;
      break;
    case HydrateAction::kCancel:
      if (now == HydrateState::kIdle || now == HydrateState::kDone) {
        return Status::InvalidArgument("hydrate " + vol + " cancel: nothing to cancel (" +
                                       HydrateStateName(now) + ")");
      }
      rec = HydrateRecord{};
      break;
  }
  if (start && m.lowers.empty()) {
    // Nothing to copy: it reads no lowers already.
    rec.state = HydrateState::kDone;
    rec.error.clear();
    OVBD_RETURN_IF_ERROR(RecordHydrate(vol, rec));
    h->CancelJob();
    h->limit = rec.rate;
    h->state = HydrateState::kDone;
    h->set_error("");
    return HydrateState::kDone;
  }
  if (start && !(now == HydrateState::kRunning && h->job_running())) {
    OVBD_ASSIGN_OR_RETURN(auto v, OpenVolume(vol, false));
    if (v->read_only()) return Status::ReadOnly(vol + ": the store is open read-only");
    // Refuse what cannot fit rather than fail half-way.
    const uint64_t left = v->BytesFromLowers(*v->stack(), 0, v->size());
    auto space = env_->SpaceOf(dir_);
    if (space.ok()) {
      const uint64_t avail = space->blocks_avail * space->block_size;
      if (left > avail) {
        return Status::NoSpace("hydrating " + vol + " copies " + std::to_string(left) +
                               " bytes, but the store's filesystem has " + std::to_string(avail) +
                               " free; free space and try again");
      }
    }
    rec.state = HydrateState::kRunning;
    rec.error.clear();
    OVBD_RETURN_IF_ERROR(RecordHydrate(vol, rec));
    h->limit = rec.rate;
    // Reads from now on are noted for copy-on-read, before the job's first
    // step.
    v->SetCopyOnRead(true);
    StartHydrationJob(h);
    return HydrateState::kRunning;
  }
  if (action == HydrateAction::kPause || action == HydrateAction::kCancel) {
    OVBD_RETURN_IF_ERROR(RecordHydrate(vol, rec));
    h->CancelJob();
    {
      MutexLock lk(&mu_);
      if (auto it = open_.find(vol); it != open_.end()) it->second->SetCopyOnRead(false);
    }
    h->state = rec.state;
    h->rate = 0;
    if (action == HydrateAction::kCancel) h->set_error("");
    h->limit = rec.state == HydrateState::kIdle ? opts_.default_hydrate_rate : rec.rate;
    return rec.state;
  }
  // A new rate for a running or paused job.
  OVBD_RETURN_IF_ERROR(RecordHydrate(vol, rec));
  h->limit = rec.rate;
  return h->state.load();
}

Result<std::vector<std::string>> Store::HydrateAll(std::optional<uint64_t> rate) {
  std::vector<std::string> vols;
  {
    MutexLock lk(&mu_);
    for (const auto& [n, m] : manifests_) {
      if (!m.deleted && !m.lowers.empty()) vols.push_back(n);
    }
  }
  std::vector<std::string> started;
  for (const auto& v : vols) {
    auto s = Hydrate(v, HydrateAction::kStart, rate);
    if (!s.ok()) {
      if (s.status().IsNotFound()) continue;  // deleted meanwhile
      return s.status().Annotate("hydrate --all: " + v);
    }
    started.push_back(v);
  }
  return started;
}

Result<bool> Store::FinishHydration(const std::shared_ptr<Hydration>& h, uint64_t epoch,
                                    const std::shared_ptr<Volume>& v,
                                    const std::shared_ptr<const Stack>& st) {
  OVBD_ASSIGN_OR_RETURN(auto scope, CommandScope::Enter(this, {h->vol}, false));
  // Paused or cancelled while we waited for the lock: leave it so.
  if (h->epoch() != epoch) return Status::IOError("hydrate " + h->vol + ": superseded", ECANCELED);
  Manifest m;
  {
    MutexLock lk(&mu_);
    auto it = manifests_.find(h->vol);
    if (it == manifests_.end() || it->second.deleted) return Status::NotFound(h->vol + " is gone");
    auto o = open_.find(h->vol);
    if (o == open_.end() || o->second != v) return false;  // reopened: start over
    m = it->second;
  }
  if (v->stack() != st || v->BytesFromLowers(*st, 0, v->size()) > 0) return false;
  // No range reads the lowers any more, and none can again (the upper's
  // map only gains entries). Make every entry durable before the manifest
  // stops naming the lowers.
  OVBD_RETURN_IF_ERROR(v->Flush());
  OVBD_RETURN_IF_ERROR(env_->CrashPoint("hydrate.before_manifest"));
  const auto keep = st->upper;
  Status installed = v->WithWritesQuiesced([&]() -> Status {
    if (v->stack() != st) return Status::Busy("stack changed");
    v->InstallStack(Stack::Make({}, keep));
    return Status::OK();
  });
  if (!installed.ok()) return false;
  m.lowers.clear();
  m.hydrate.state = HydrateState::kDone;
  m.hydrate.error.clear();
  Status wrote = WriteManifest(m);
  if (!wrote.ok()) {
    // The old stack reads the same content: put it back, and let the job
    // retry the manifest.
    (void)v->WithWritesQuiesced([&]() -> Status {
      v->InstallStack(st);
      return Status::OK();
    });
    return wrote;
  }
  scope.reset();
  OVBD_RETURN_IF_ERROR(env_->CrashPoint("hydrate.after_manifest"));
  // `done` is published only once the layers no volume names any more are
  // collected, so whoever waits for it sees the space back. A failed
  // collection does not undo the hydration: the next collection (any
  // delete, or the next open) finds the same unreferenced files.
  (void)CollectGarbageNow(nullptr);
  if (h->epoch() == epoch) {
    h->state = HydrateState::kDone;
    h->set_error("");
  }
  return true;
}

void Store::FailHydration(const std::shared_ptr<Hydration>& h, uint64_t epoch, const Status& why) {
  auto scope = CommandScope::Enter(this, {h->vol}, false);
  if (h->epoch() != epoch) return;  // paused or cancelled meanwhile
  h->state = HydrateState::kError;
  h->set_error(why.ToString());
  {
    MutexLock lk(&mu_);
    if (auto it = open_.find(h->vol); it != open_.end()) it->second->SetCopyOnRead(false);
  }
  if (!scope.ok()) return;
  HydrateRecord rec;
  rec.state = HydrateState::kError;
  rec.rate = h->limit.load();
  rec.error = why.ToString();
  (void)RecordHydrate(h->vol, rec);  // best effort: status shows it either way
}

void Store::ResumeHydrations() {
  if (opts_.read_only || !opts_.resume_hydration) return;
  std::vector<std::string> vols;
  {
    MutexLock lk(&mu_);
    for (const auto& [n, m] : manifests_) {
      if (!m.deleted && m.hydrate.state == HydrateState::kRunning) vols.push_back(n);
    }
  }
  for (const auto& v : vols) (void)Hydrate(v, HydrateAction::kResume);
}

HydrateInfo Store::HydrateInfoOf(const std::string& vol, const Manifest& m) const {
  HydrateInfo i;
  auto it = hydrations_.find(vol);
  if (it == hydrations_.end()) {
    i.state = m.hydrate.state;
    if (i.state == HydrateState::kDone && !m.lowers.empty()) i.state = HydrateState::kIdle;
    i.limit = m.hydrate.state == HydrateState::kIdle ? opts_.default_hydrate_rate : m.hydrate.rate;
    i.error = m.hydrate.error;
    return i;
  }
  const Hydration& h = *it->second;
  i.state = h.state.load();
  // Done, then snapshotted: the sealed upper is a lower again.
  if (i.state == HydrateState::kDone && !m.lowers.empty()) i.state = HydrateState::kIdle;
  i.copied = h.copied.load(std::memory_order_relaxed);
  i.total = h.total.load(std::memory_order_relaxed);
  i.rate = i.state == HydrateState::kRunning ? h.rate.load(std::memory_order_relaxed) : 0;
  i.limit = h.limit.load();
  i.retries = h.retries.load(std::memory_order_relaxed);
  i.error = h.error();
  if (i.rate > 0 && i.total > i.copied) i.eta_s = (i.total - i.copied + i.rate - 1) / i.rate;
  if (i.state == HydrateState::kDone) i.copied = i.total = std::max(i.copied, i.total);
  return i;
}

}  // namespace ovbd
