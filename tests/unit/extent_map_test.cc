// ExtentMap against a per-sector model: random Set (data and zeros) and
// Erase over a small space, so overlaps of every shape (inside, across,
// covering, touching) happen often. After every operation the map must
// answer exactly as the model and stay canonical: sorted, disjoint, and with
// no two neighbours that continue each other (the coalescing that keeps a
// sequentially written upper's index small).
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "ovbd/layer/extent_map.h"

namespace ovbd {
namespace {

constexpr uint64_t kSpace = 512;  // sectors
constexpr int64_t kHole = -1, kZero = -2;

void ExpectMatches(const ExtentMap& m, const std::vector<int64_t>& model) {
  const uint64_t space = model.size();
  std::vector<int64_t> got(space, kHole - 1);
  m.Walk(0, space, [&](uint64_t off, uint64_t len, const ExtentMap::Extent* e, uint64_t delta) {
    for (uint64_t i = 0; i < len; ++i) {
      got[off + i] = !e ? kHole : e->zeroed ? kZero : static_cast<int64_t>(e->moffset + delta + i);
    }
  });
  ASSERT_EQ(got, model);
  uint64_t prev_end = 0;
  bool first = true;
  const ExtentMap::Extent* prev = nullptr;
  for (const auto& [off, e] : m.Extents()) {
    ASSERT_GT(e.length, 0u);
    if (!first) {
      ASSERT_GE(off, prev_end) << "overlapping extents";
      const bool continues = off == prev_end && prev->zeroed == e.zeroed &&
                             (e.zeroed || prev->moffset + prev->length == e.moffset);
      ASSERT_FALSE(continues) << "uncoalesced neighbours at sector " << off;
    }
    first = false;
    prev_end = off + e.length;
    prev = &e;
  }
}

// One random change of [off, off+len), to the map and the model alike:
// data (in place, as the upper maps it, or elsewhere, so that neighbours
// sometimes continue each other and sometimes do not; in place with odds
// in_place_odds-1 : 1), zeros, or an erase.
void RandomChange(std::mt19937_64& rng, uint64_t off, uint64_t len, uint64_t in_place_odds,
                  uint64_t elsewhere, ExtentMap* m, std::vector<int64_t>* model) {
  const int kind = static_cast<int>(rng() % 10);
  if (kind < 6) {
    const uint64_t moff = rng() % in_place_odds ? off + 8 : elsewhere + rng() % 1000;
    m->Set(off, len, moff, false);
    for (uint64_t i = 0; i < len; ++i) (*model)[off + i] = static_cast<int64_t>(moff + i);
  } else if (kind < 8) {
    m->Set(off, len, 0, true);
    for (uint64_t i = 0; i < len; ++i) (*model)[off + i] = kZero;
  } else {
    m->Erase(off, len);
    for (uint64_t i = 0; i < len; ++i) (*model)[off + i] = kHole;
  }
}

TEST(ExtentMap, RandomOperationsMatchASectorModel) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    ExtentMap m;
    std::vector<int64_t> model(kSpace, kHole);
    for (int op = 0; op < 3000; ++op) {
      const uint64_t off = rng() % kSpace;
      const uint64_t len = 1 + rng() % std::min<uint64_t>(kSpace - off, rng() % 2 ? 8 : 96);
      RandomChange(rng, off, len, 3, 10000, &m, &model);
      ASSERT_NO_FATAL_FAILURE(ExpectMatches(m, model)) << "after op " << op;
    }
  }
}

// Thousands of extents, so the map spans many chunks and changes cross
// chunk boundaries: small writes and zeroes, and now and then a large write,
// zero or erase over hundreds of extents at once.
TEST(ExtentMap, ManyExtentsAcrossChunksMatchASectorModel) {
  constexpr uint64_t kBig = 1 << 15;
  for (uint64_t seed = 1; seed <= 4; ++seed) {
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    ExtentMap m;
    std::vector<int64_t> model(kBig, kHole);
    for (int op = 0; op < 20000; ++op) {
      const bool large = rng() % 200 == 0;
      const uint64_t off = rng() % kBig;
      const uint64_t len = 1 + rng() % std::min<uint64_t>(kBig - off, large ? 4096 : 4);
      RandomChange(rng, off, len, 4, 100000, &m, &model);
      if (op % 97 == 0 || large) {
        ASSERT_NO_FATAL_FAILURE(ExpectMatches(m, model)) << "after op " << op;
      }
    }
    ASSERT_NO_FATAL_FAILURE(ExpectMatches(m, model));
    EXPECT_GT(m.size(), 1000u) << "the test should spread over many chunks";
    // Erasing everything leaves nothing behind.
    m.Erase(0, kBig);
    EXPECT_TRUE(m.empty());
    EXPECT_EQ(m.Extents().size(), 0u);
  }
}

TEST(ExtentMap, SequentialWritesStayOneExtent) {
  ExtentMap m;
  for (uint64_t s = 0; s < 10000; s += 8) m.Set(s, 8, s + 8, false);
  EXPECT_EQ(m.size(), 1u);
  m.Set(4000, 8, 4008, false);  // an overwrite in place changes nothing
  EXPECT_EQ(m.size(), 1u);
  m.Set(4000, 8, 0, true);
  EXPECT_EQ(m.size(), 3u);
  m.Set(4000, 8, 4008, false);
  EXPECT_EQ(m.size(), 1u);
}

}  // namespace
}  // namespace ovbd
