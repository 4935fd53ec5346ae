// The small RAII helpers every Store command uses, shared by the store's
// source files (not part of the public interface).
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "ovbd/store/store.h"

namespace ovbd {

// Holds group_mu_ (shared, or exclusive) and the command locks of a set of
// volumes for one command. Lock and unlock happen in different functions,
// which the analysis cannot follow; the order is the one in store.h.
class Store::CommandScope {
 public:
  // Finishes a manifest group left pending before taking the locks.
  static Result<std::unique_ptr<CommandScope>> Enter(Store* s, std::vector<std::string> vols,
                                                     bool exclusive);
  ~CommandScope();

 private:
  CommandScope(Store* s, bool exclusive) : store_(s), exclusive_(exclusive) {}
  Store* store_;
  bool exclusive_;
  bool locked_ = false;
  VolumeLocks::Guard guard_;
};

// A name being created: taken for every other command, still absent for
// List and Lookup until the manifest exists.
class Store::Reservation {
 public:
  Reservation(Store* s, std::string name) : store_(s), name_(std::move(name)) {}
  ~Reservation();

 private:
  Store* store_;
  std::string name_;
};

// Files in flight: garbage collection keeps them while the pin lives.
class Store::Pin {
 public:
  Pin(Store* s, std::vector<std::string> files) : store_(s), files_(std::move(files)) {}
  ~Pin();

 private:
  Store* store_;
  std::vector<std::string> files_;
};

}  // namespace ovbd

namespace ovbd {

// One volume's hydration, shared by the commands that steer it, its job
// and status. The manifest holds what must survive a restart (state, rate,
// error); this holds the rest.
class Store::Hydration {
 public:
  explicit Hydration(std::string v) : vol(std::move(v)) {}
  const std::string vol;
  std::atomic<HydrateState> state{HydrateState::kIdle};
  std::atomic<uint64_t> limit{0};  // bytes per second; 0: unlimited
  // Progress of the current run, published by the job for status.
  std::atomic<uint64_t> copied{0}, total{0}, rate{0}, retries{0};

  std::string error() const EXCLUDES(mu_) {
    MutexLock lk(&mu_);
    return error_;
  }
  void set_error(std::string e) EXCLUDES(mu_) {
    MutexLock lk(&mu_);
    error_ = std::move(e);
  }
  // A new run: the old job is cancelled, and later steps of older jobs
  // see they are stale and stop. Then SetJob(epoch, its job).
  uint64_t BeginRun() EXCLUDES(mu_) {
    MutexLock lk(&mu_);
    if (job_) job_->Cancel();
    job_.reset();
    return ++epoch_;
  }
  void SetJob(uint64_t epoch, std::shared_ptr<Job> job) EXCLUDES(mu_) {
    MutexLock lk(&mu_);
    if (epoch == epoch_) {
      job_ = std::move(job);
    } else {
      job->Cancel();  // superseded before it was recorded
    }
  }
  uint64_t epoch() const EXCLUDES(mu_) {
    MutexLock lk(&mu_);
    return epoch_;
  }
  // Stops the current job, if any (it ends at its next step).
  void CancelJob() EXCLUDES(mu_) {
    MutexLock lk(&mu_);
    if (job_) job_->Cancel();
    job_.reset();
    ++epoch_;
  }
  bool job_running() const EXCLUDES(mu_) {
    MutexLock lk(&mu_);
    return job_ && !job_->finished();
  }

 private:
  mutable Mutex mu_;
  std::string error_ GUARDED_BY(mu_);
  std::shared_ptr<Job> job_ GUARDED_BY(mu_);
  uint64_t epoch_ GUARDED_BY(mu_) = 0;
};

}  // namespace ovbd
