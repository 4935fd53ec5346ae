// JobRunner: the daemon's background work. One boost::asio::io_context
// served by a small pool of threads runs long jobs (layer merges, and later
// hydration and downloads) and periodic tasks (the flusher) off the paths
// that answer FUSE requests, so no request waits for them.
//
// A job has an id, a kind and a target ("merge", "vm1"), a state, progress
// in units it chooses (bytes), and a cancellation flag it polls between
// steps. Stop() (unmount, SIGTERM, store close) cancels every job, waits
// for each to return and ends the timers; a job's function is never cut
// off in the middle, so it can leave files in a state recovery knows.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <optional>

#include "ovbd/io/mutex.h"
#include "ovbd/io/status.h"

namespace boost::asio {
class io_context;
}

namespace ovbd {

enum class JobState { kQueued, kRunning, kDone, kFailed, kCancelled };
const char* JobStateName(JobState s);

// A copy of a job's state, for status reports.
struct JobInfo {
  uint64_t id = 0;
  std::string kind, target;
  JobState state = JobState::kQueued;
  uint64_t done = 0, total = 0;  // progress, in the job's units
  std::string error;             // why it failed
  uint64_t started_us = 0;       // 0 while queued
};

class Job {
 public:
  Job(uint64_t id, std::string kind, std::string target);

  uint64_t id() const { return id_; }
  const std::string& kind() const { return kind_; }
  const std::string& target() const { return target_; }

  // For the job's own function.
  bool cancelled() const { return cancel_.load(std::memory_order_relaxed); }
  // Returns the status a job should end with once it sees cancelled().
  Status CancelledStatus() const;
  void SetProgress(uint64_t done, uint64_t total) {
    done_.store(done, std::memory_order_relaxed);
    total_.store(total, std::memory_order_relaxed);
  }

  // For everyone else.
  void Cancel() { cancel_.store(true); }
  // Blocks until the job has ended; its final status.
  Status Wait() EXCLUDES(mu_);
  bool finished() const EXCLUDES(mu_);
  JobInfo Info() const EXCLUDES(mu_);

 private:
  friend class JobRunner;
  void SetState(JobState s, Status result = Status::OK(), uint64_t now_us = 0) EXCLUDES(mu_);

  const uint64_t id_;
  const std::string kind_, target_;
  std::atomic<bool> cancel_{false};
  std::atomic<uint64_t> done_{0}, total_{0};
  mutable Mutex mu_;
  CondVar ended_{&mu_};
  JobState state_ GUARDED_BY(mu_) = JobState::kQueued;
  Status result_ GUARDED_BY(mu_);
  uint64_t started_us_ GUARDED_BY(mu_) = 0;
};

class JobRunner {
 public:
  explicit JobRunner(size_t threads);
  ~JobRunner();  // Stop()
  JobRunner(const JobRunner&) = delete;
  JobRunner& operator=(const JobRunner&) = delete;

  // Queues fn to run on a worker; returns at once. After Stop() the job is
  // created already cancelled and its function is not run.
  std::shared_ptr<Job> Start(std::string kind, std::string target,
                             std::function<Status(Job&)> fn) EXCLUDES(mu_);
  // A job made of short steps run one after another: between steps it
  // holds no worker, so a long job that often waits (a hydration keeping to
  // its rate limit, or backing off while foreground I/O runs) never keeps
  // the flusher or other jobs from a thread. `step` returns how long to
  // wait before the next step, or nullopt when the job is done; an error
  // ends it. Cancel() or Stop() end it at the next step or wait.
  using Step = std::function<Result<std::optional<std::chrono::milliseconds>>(Job&)>;
  std::shared_ptr<Job> StartSteps(std::string kind, std::string target, Step step) EXCLUDES(mu_);
  // Runs fn on a worker every `period` (the first time one period from
  // now) until Stop(). A run that overlaps the next tick delays it.
  void Every(std::chrono::milliseconds period, std::function<void()> fn) EXCLUDES(mu_);

  // Jobs not yet ended, and those that ended in the last `keep` finishes
  // (so a status report shows how recent work ended), oldest first.
  std::vector<JobInfo> List() const EXCLUDES(mu_);
  // Cancels every job and waits for them; ends timers; joins the workers.
  // Idempotent.
  void Stop() EXCLUDES(mu_);

 private:
  struct Timer;
  struct Stepper;
  void Arm(const std::shared_ptr<Timer>& t);
  std::shared_ptr<Job> NewJob(std::string kind, std::string target) EXCLUDES(mu_);
  static void RunStep(const std::shared_ptr<Stepper>& s);
  static void Finish(Job& job, Status s);

  std::unique_ptr<boost::asio::io_context> io_;
  std::shared_ptr<void> work_guard_;  // an asio work guard, type-erased
  std::vector<std::thread> workers_;
  mutable Mutex mu_;
  bool stopped_ GUARDED_BY(mu_) = false;
  uint64_t next_id_ GUARDED_BY(mu_) = 1;
  std::map<uint64_t, std::shared_ptr<Job>> jobs_ GUARDED_BY(mu_);  // live and recently ended
  std::vector<std::shared_ptr<Timer>> timers_ GUARDED_BY(mu_);
  std::vector<std::weak_ptr<Stepper>> steppers_ GUARDED_BY(mu_);  // for Stop to wake
  static constexpr size_t kKeepEnded = 16;
};

}  // namespace ovbd
