// JobRunner: jobs run off the caller's thread, report progress and state,
// end when cancelled, and Stop() waits for every one of them.
#include "ovbd/io/job_runner.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <future>

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

}  // namespace
}  // namespace ovbd
