#include "ovbd/io/job_runner.h"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
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

std::shared_ptr<Job> JobRunner::Start(std::string kind, std::string target,
                                      std::function<Status(Job&)> fn) {
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
  boost::asio::post(*io_, [job, fn = std::move(fn)] {
    if (job->cancelled()) {
      job->SetState(JobState::kCancelled, job->CancelledStatus());
      return;
    }
    job->SetState(JobState::kRunning, Status::OK(), NowUs());
    Status s = fn(*job);
    if (s.ok()) {
      job->SetState(JobState::kDone);
    } else if (job->cancelled() && s.os_errno() == ECANCELED) {
      job->SetState(JobState::kCancelled, std::move(s));
    } else {
      job->SetState(JobState::kFailed, std::move(s));
    }
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
  {
    MutexLock lk(&mu_);
    if (stopped_) return;
    stopped_ = true;
    for (const auto& [id, j] : jobs_) jobs.push_back(j);
    timers.swap(timers_);
  }
  for (const auto& j : jobs) j->Cancel();
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
