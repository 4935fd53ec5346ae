// JobRunner: jobs run off the caller's thread, report progress and state,
// end when cancelled, and Stop() waits for every one of them.
#include "ovbd/io/job_runner.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <future>
#include <optional>
#include <thread>

namespace ovbd {
namespace {

TEST(JobRunner, RunsReportsAndEnds) {
  JobRunner r(2);
  std::promise<void> go;
  auto started = go.get_future().share();
  auto job = r.Start("copy", "vm1", [started](Job& j) {
    started.wait();
    j.SetProgress(5, 10);
    return Status::OK();
  });
  EXPECT_EQ(job->kind(), "copy");
  bool listed = false;
  for (const auto& i : r.List()) listed |= i.id == job->id();
  EXPECT_TRUE(listed);
  go.set_value();
  EXPECT_TRUE(job->Wait().ok());
  JobInfo i = job->Info();
  EXPECT_EQ(i.state, JobState::kDone);
  EXPECT_EQ(i.done, 5u);
  EXPECT_EQ(i.total, 10u);
  auto bad = r.Start("copy", "vm2", [](Job&) { return Status::NoSpace("disk full"); });
  EXPECT_EQ(bad->Wait().code(), Status::Code::kNoSpace);
  EXPECT_EQ(bad->Info().state, JobState::kFailed);
  EXPECT_NE(bad->Info().error.find("disk full"), std::string::npos);
}

TEST(JobRunner, StopCancelsAndWaitsForRunningJobs) {
  auto r = std::make_unique<JobRunner>(2);
  std::atomic<bool> in_job{false}, returned{false};
  auto job = r->Start("merge", "vm1", [&](Job& j) {
    in_job = true;
    while (!j.cancelled()) std::this_thread::yield();
    returned = true;
    return j.CancelledStatus();
  });
  while (!in_job) std::this_thread::yield();
  r->Stop();
  EXPECT_TRUE(returned.load());  // Stop() returned only after the job did
  EXPECT_EQ(job->Info().state, JobState::kCancelled);
  EXPECT_EQ(job->Wait().os_errno(), ECANCELED);
  // After Stop(), a new job is cancelled without running.
  std::atomic<bool> ran{false};
  auto late = r->Start("merge", "vm2", [&](Job&) {
    ran = true;
    return Status::OK();
  });
  EXPECT_EQ(late->Info().state, JobState::kCancelled);
  EXPECT_FALSE(ran.load());
}

TEST(JobRunner, PeriodicTaskRunsUntilStop) {
  JobRunner r(1);
  std::mutex mu;
  std::condition_variable cv;
  int runs = 0;
  r.Every(std::chrono::milliseconds(1), [&] {
    std::lock_guard lk(mu);
    ++runs;
    cv.notify_all();
  });
  {
    std::unique_lock lk(mu);
    ASSERT_TRUE(cv.wait_for(lk, std::chrono::seconds(30), [&] { return runs >= 3; }));
  }
  r.Stop();
  int after;
  {
    std::lock_guard lk(mu);
    after = runs;
  }
  // No run starts after Stop() returned.
  auto job = r.Start("x", "y", [](Job&) { return Status::OK(); });
  (void)job->Wait();
  std::lock_guard lk(mu);
  EXPECT_EQ(runs, after);
}

TEST(JobRunner, SteppedJobRunsStepsAndLeavesWorkersFree) {
  JobRunner r(1);  // one worker: a waiting stepped job must not hold it
  std::atomic<int> steps{0};
  auto stepped = r.StartSteps("hydrate", "vm1", [&](Job& j) -> Result<std::optional<std::chrono::milliseconds>> {
    j.SetProgress(static_cast<uint64_t>(++steps), 5);
    if (steps == 5) return std::optional<std::chrono::milliseconds>();
    return std::optional<std::chrono::milliseconds>(std::chrono::milliseconds(steps % 2 ? 0 : 20));
  });
  EXPECT_TRUE(stepped->Wait().ok());
  // While a stepped job waits (an hour here) between steps, another job
  // gets the only worker.
  std::atomic<bool> waiting{false};
  auto sleeper = r.StartSteps("hydrate", "vm2", [&](Job&) -> Result<std::optional<std::chrono::milliseconds>> {
    waiting = true;
    return std::optional<std::chrono::milliseconds>(std::chrono::hours(1));
  });
  while (!waiting) std::this_thread::yield();
  std::promise<void> ran;
  auto ran_f = ran.get_future();
  auto other = r.Start("merge", "x", [&](Job&) {
    ran.set_value();
    return Status::OK();
  });
  EXPECT_EQ(ran_f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
  EXPECT_TRUE(other->Wait().ok());
  EXPECT_FALSE(sleeper->finished());
  EXPECT_EQ(steps.load(), 5);
  EXPECT_EQ(stepped->Info().state, JobState::kDone);
  EXPECT_EQ(stepped->Info().done, 5u);
}

TEST(JobRunner, SteppedJobFailsCancelsAndStopsWhileWaiting) {
  JobRunner r(2);
  auto failing = r.StartSteps("hydrate", "a", [](Job&) -> Result<std::optional<std::chrono::milliseconds>> {
    return Status::IOError("read failed", EIO);
  });
  EXPECT_FALSE(failing->Wait().ok());
  EXPECT_EQ(failing->Info().state, JobState::kFailed);

  std::atomic<int> steps{0};
  auto cancelled = r.StartSteps("hydrate", "b", [&](Job&) -> Result<std::optional<std::chrono::milliseconds>> {
    ++steps;
    return std::optional<std::chrono::milliseconds>(std::chrono::milliseconds(1));
  });
  while (steps < 3) std::this_thread::yield();
  cancelled->Cancel();
  EXPECT_EQ(cancelled->Wait().os_errno(), ECANCELED);
  EXPECT_EQ(cancelled->Info().state, JobState::kCancelled);

  // A job waiting an hour for its next step: Stop() wakes it and returns.
  std::atomic<bool> waiting{false};
  auto sleeper = r.StartSteps("hydrate", "c", [&](Job&) -> Result<std::optional<std::chrono::milliseconds>> {
    waiting = true;
    return std::optional<std::chrono::milliseconds>(std::chrono::hours(1));
  });
  while (!waiting) std::this_thread::yield();
  const auto t0 = std::chrono::steady_clock::now();
  r.Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(10));
  EXPECT_EQ(sleeper->Info().state, JobState::kCancelled);
}

}  // namespace
}  // namespace ovbd
