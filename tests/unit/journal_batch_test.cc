// Recovery of an upper journal whose last commit was torn out of order by a
// power cut (a bad record followed by good records of the same commit: a
// torn tail, cut at open) against damage to an earlier commit (good records
// of a later commit follow: refused, repair needed).
#include <gtest/gtest.h>

#include <cstring>

#include "ovbd/layer/upper.h"
#include "test_util.h"

namespace ovbd {
namespace {

constexpr uint64_t kVol = 64 << 20;
constexpr uint64_t kHeader = 4096, kRecord = 32;

// Two commits: the first of 10 writes, the second of 10; every write a
// separate record (non-adjacent ranges).
void MakeTwoCommits(const std::string& base) {
  auto up = Upper::Create(Env::Default(), base, kVol, lsmt::NewUuid(), "");
  ASSERT_TRUE(up.ok());
  std::vector<char> d(4096, 'd');
  for (int c = 0; c < 2; ++c) {
    for (int i = 0; i < 10; ++i) {
      ASSERT_TRUE(up.value()->Write((c * 10 + i) * 2 * 4096, d.data(), d.size()).ok());
    }
    ASSERT_TRUE(up.value()->Commit().ok());
  }
}

void Damage(const std::string& base, uint64_t record) {
  auto f = Env::Default()->OpenRW(Upper::JournalPath(base), false);
  ASSERT_TRUE(f.ok());
  char junk[kRecord];
  std::memset(junk, 0x5a, sizeof junk);
  ASSERT_TRUE(f.value()->WriteAt(kHeader + record * kRecord, junk, sizeof junk).ok());
}

TEST(JournalBatch, DamageInTheLastCommitIsATornTail) {
  test::TempDir dir;
  const std::string base = dir.Sub("u");
  MakeTwoCommits(base);
  Damage(base, 14);  // inside the second commit, good records follow
  auto up = Upper::Open(Env::Default(), base, kVol);
  ASSERT_TRUE(up.ok()) << up.status().ToString();
  // The first commit and the second's first four records survive.
  EXPECT_EQ(up.value()->Stats().mapped_sectors, 14u * 8);
}

TEST(JournalBatch, DamageInAnEarlierCommitIsRefused) {
  test::TempDir dir;
  const std::string base = dir.Sub("u");
  MakeTwoCommits(base);
  Damage(base, 4);  // inside the first commit: the second commit follows
  auto up = Upper::Open(Env::Default(), base, kVol);
  ASSERT_FALSE(up.ok());
  EXPECT_EQ(up.status().code(), Status::Code::kCorruption) << up.status().ToString();
}

}  // namespace
}  // namespace ovbd
