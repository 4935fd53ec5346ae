#include "ovbd/io/job_runner.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <cerrno>

namespace ovbd {

namespace {
uint64_t NowUs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}
}  // namespace

const char* JobStateName(JobState s) {
  switch (s) {
    case JobState::kQueued: return "queued";
    case JobState::kRunning: return "running";
    case JobState::kDone: return "done";
    case JobState::kFailed: return "failed";
    case JobState::kCancelled: return "cancelled";
  }
  return "?";
}

Job::Job(uint64_t id, std::string kind, std::string target)
    : id_(id), kind_(std::move(kind)), target_(std::move(target)) {}

Status Job::CancelledStatus() const {
  return Status::IOError(kind_ + " " + target_ + ": cancelled", ECANCELED);
}

void Job::SetState(JobState s, Status result, uint64_t now_us) {
  MutexLock lk(&mu_);
  state_ = s;
  if (s == JobState::kRunning) started_us_ = now_us;
  if (s == JobState::kDone || s == JobState::kFailed || s == JobState::kCancelled) {
    result_ = std::move(result);
    ended_.SignalAll();
  }
}

bool Job::finished() const {
  MutexLock lk(&mu_);
  return state_ == JobState::kDone || state_ == JobState::kFailed ||
         state_ == JobState::kCancelled;
}

Status Job::Wait() {
  MutexLock lk(&mu_);
  ended_.Wait([this] {
    mu_.AssertHeld();
    return state_ == JobState::kDone || state_ == JobState::kFailed ||
           state_ == JobState::kCancelled;
  });
  return result_;
}

JobInfo Job::Info() const {
  JobInfo i;
  i.id = id_;
  i.kind = kind_;
  i.target = target_;
  i.done = done_.load(std::memory_order_relaxed);
  i.total = total_.load(std::memory_order_relaxed);
  MutexLock lk(&mu_);
  i.state = state_;
  i.started_us = started_us_;
  if (!result_.ok()) i.error = result_.ToString();
  return i;
}

struct JobRunner::Timer {
  explicit Timer(boost::asio::io_context& io) : timer(io) {}
  boost::asio::steady_timer timer;
  std::chrono::milliseconds period{0};
  std::function<void()> fn;
};

JobRunner::JobRunner(size_t threads) : io_(std::make_unique<boost::asio::io_context>()) {
  if (threads == 0) threads = 1;
  // The guard keeps run() from returning while no work is queued; Stop()
  // drops it.
  work_guard_ = std::make_shared<
      boost::asio::executor_work_guard<boost::asio::io_context::executor_type>>(io_->get_executor());
  for (size_t i = 0; i < threads; ++i) workers_.emplace_back([this] { io_->run(); });
}

JobRunner::~JobRunner() { Stop(); }

// Records how a job's function ended.
void JobRunner::Finish(Job& job, Status s) {
  if (s.ok()) {
    job.SetState(JobState::kDone);
  } else if (job.cancelled() && s.os_errno() == ECANCELED) {
    job.SetState(JobState::kCancelled, std::move(s));
  } else {
    job.SetState(JobState::kFailed, std::move(s));
  }
}

// A stepped job: its steps and its timer live on one strand, so they never
// run at once and Stop() can cancel the timer safely from any thread.
struct JobRunner::Stepper {
  Stepper(boost::asio::io_context& io, std::shared_ptr<Job> j, Step s)
      : strand(boost::asio::make_strand(io)), timer(strand), job(std::move(j)), step(std::move(s)) {}
  boost::asio::strand<boost::asio::io_context::executor_type> strand;
  boost::asio::steady_timer timer;
  std::shared_ptr<Job> job;
  Step step;
  bool started = false;  // touched only on the strand
};

void JobRunner::RunStep(const std::shared_ptr<Stepper>& s) {
  Job& job = *s->job;
  if (job.cancelled()) return job.SetState(JobState::kCancelled, job.CancelledStatus());
  if (!s->started) {
    s->started = true;
    job.SetState(JobState::kRunning, Status::OK(), NowUs());
  }
  auto next = s->step(job);
  if (!next.ok()) return Finish(job, next.status());
  if (!next.value()) return Finish(job, Status::OK());
  const auto delay = *next.value();
  if (delay.count() <= 0) {
    boost::asio::post(s->strand, [s] { RunStep(s); });
    return;
  }
  s->timer.expires_after(delay);
  s->timer.async_wait([s](const boost::system::error_code& ec) {
    if (ec) {
      // Cancelled by Stop(): the job ends without another step.
      s->job->Cancel();
      return s->job->SetState(JobState::kCancelled, s->job->CancelledStatus());
    }
    RunStep(s);
  });
}

std::shared_ptr<Job> JobRunner::StartSteps(std::string kind, std::string target, Step step) {
  std::shared_ptr<Job> job = NewJob(std::move(kind), std::move(target));
  if (job->finished()) return job;  // the runner is stopped
  auto s = std::make_shared<Stepper>(*io_, job, std::move(step));
  {
    MutexLock lk(&mu_);
    if (stopped_) {
      job->Cancel();
      job->SetState(JobState::kCancelled, job->CancelledStatus());
      return job;
    }
    std::erase_if(steppers_, [](const std::weak_ptr<Stepper>& w) { return w.expired(); });
    steppers_.push_back(s);
  }
  boost::asio::post(s->strand, [s] { RunStep(s); });
  return job;
}

std::shared_ptr<Job> JobRunner::NewJob(std::string kind, std::string target) {
  std::shared_ptr<Job> job;
  {
    MutexLock lk(&mu_);
    job = std::make_shared<Job>(next_id_++, std::move(kind), std::move(target));
    if (stopped_) {
      job->Cancel();
      job->SetState(JobState::kCancelled, job->CancelledStatus());
      return job;
    }
    jobs_[job->id()] = job;
    // Forget the oldest ended jobs beyond what status shows.
    size_t ended = 0;
    for (auto it = jobs_.rbegin(); it != jobs_.rend(); ++it) ended += it->second->finished();
    for (auto it = jobs_.begin(); ended > kKeepEnded && it != jobs_.end();) {
      if (it->second->finished()) {
        it = jobs_.erase(it);
        --ended;
      } else {
        ++it;
      }
    }
  }
  return job;
}

std::shared_ptr<Job> JobRunner::Start(std::string kind, std::string target,
                                      std::function<Status(Job&)> fn) {
  std::shared_ptr<Job> job = NewJob(std::move(kind), std::move(target));
  if (job->finished()) return job;  // the runner is stopped
  boost::asio::post(*io_, [job, fn = std::move(fn)] {
    if (job->cancelled()) {
      job->SetState(JobState::kCancelled, job->CancelledStatus());
      return;
    }
    job->SetState(JobState::kRunning, Status::OK(), NowUs());
    Finish(*job, fn(*job));
  });
  return job;
}

void JobRunner::Arm(const std::shared_ptr<Timer>& t) {
  t->timer.expires_after(t->period);
  t->timer.async_wait([this, t](const boost::system::error_code& ec) {
    if (ec) return;  // cancelled by Stop()
    t->fn();
    MutexLock lk(&mu_);
    if (!stopped_) Arm(t);
  });
}

void JobRunner::Every(std::chrono::milliseconds period, std::function<void()> fn) {
  MutexLock lk(&mu_);
  if (stopped_) return;
  auto t = std::make_shared<Timer>(*io_);
  t->period = period;
  t->fn = std::move(fn);
  timers_.push_back(t);
  // Arming from this thread races nothing: the timer is not yet waited on.
  Arm(t);
}

std::vector<JobInfo> JobRunner::List() const {
  std::vector<std::shared_ptr<Job>> jobs;
  {
    MutexLock lk(&mu_);
    for (const auto& [id, j] : jobs_) jobs.push_back(j);
  }
  std::vector<JobInfo> out;
  for (const auto& j : jobs) out.push_back(j->Info());
  return out;
}

void JobRunner::Stop() {
  std::vector<std::shared_ptr<Job>> jobs;
  std::vector<std::shared_ptr<Timer>> timers;
  std::vector<std::shared_ptr<Stepper>> steppers;
  {
    MutexLock lk(&mu_);
    if (stopped_) return;
    stopped_ = true;
    for (const auto& [id, j] : jobs_) jobs.push_back(j);
    timers.swap(timers_);
    for (const auto& w : steppers_) {
      if (auto s = w.lock()) steppers.push_back(std::move(s));
    }
    steppers_.clear();
  }
  for (const auto& j : jobs) j->Cancel();
  // A stepped job waiting for its next step is woken to see the cancel.
  for (const auto& s : steppers) {
    boost::asio::post(s->strand, [s] { s->timer.cancel(); });
  }
  // Timer cancellation must run on the context (timers are not thread-safe).
  for (const auto& t : timers) {
    boost::asio::post(*io_, [t] { t->timer.cancel(); });
  }
  for (const auto& j : jobs) (void)j->Wait();
  work_guard_.reset();
  // Let queued handlers (the timers' cancellations) run, then end.
  for (auto& w : workers_) {
    if (w.joinable()) w.join();
  }
}

}  // namespace ovbd
