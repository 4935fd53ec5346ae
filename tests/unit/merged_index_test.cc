// MergedIndex against a brute-force reference: random stacks of layers are
// resolved sector by sector (top layer wins, zeroed hides, gaps read zeros)
// and every lookup and walk of the merged index must agree.
#include "ovbd/layer/merged_index.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <random>
#include <vector>

namespace ovbd {
namespace {

// What one sector reads as.
struct Cell {
  int layer = -1;  // -1: zeros (gap, or hidden by a zeroed range)
  uint64_t msector = 0;
  bool operator==(const Cell& o) const {
    return layer == o.layer && (layer < 0 || msector == o.msector);
  }
};

// Sector-by-sector resolution of a stack, over [0, span).
std::vector<Cell> Reference(const std::vector<std::vector<Segment>>& layers, uint64_t span) {
  std::vector<Cell> cells(span);
  for (size_t li = 0; li < layers.size(); ++li) {  // bottom first: later wins
    for (const Segment& s : layers[li]) {
      for (uint64_t k = 0; k < s.length; ++k) {
        Cell& c = cells[s.offset + k];
        if (s.zeroed) {
          c = Cell{};
        } else {
          c.layer = static_cast<int>(li);
          c.msector = s.moffset + k;
        }
      }
    }
  }
  return cells;
}

// A sorted, non-overlapping random segment list within [0, span).
std::vector<Segment> RandomLayer(std::mt19937_64& rng, uint64_t span, uint32_t max_len,
                                 uint32_t max_gap, double zeroed_frac) {
  std::vector<Segment> v;
  std::uniform_int_distribution<uint32_t> len(1, max_len);
  std::uniform_int_distribution<uint32_t> gap(0, max_gap);
  std::bernoulli_distribution zero(zeroed_frac);
  uint64_t pos = gap(rng), mpos = 8 + rng() % 1000;
  while (true) {
    Segment s;
    s.offset = pos;
    s.length = len(rng);
    if (s.end() > span) break;
    s.zeroed = zero(rng);
    // Sometimes contiguous in the file with the previous one (Build may join).
    mpos += (rng() % 3 == 0) ? 0 : 1 + rng() % 50;
    s.moffset = s.zeroed ? 0 : mpos;
    if (!s.zeroed) mpos += s.length;
    v.push_back(s);
    pos = s.end() + gap(rng);
  }
  return v;
}

MergedIndex BuildFrom(const std::vector<std::vector<Segment>>& layers) {
  std::vector<const std::vector<Segment>*> ptrs;
  for (const auto& l : layers) ptrs.push_back(&l);
  return MergedIndex::Build(ptrs);
}

size_t BruteFindFirst(const MergedIndex& idx, uint64_t sector) {
  const auto& segs = idx.segments();
  for (size_t i = 0; i < segs.size(); ++i)
    if (segs[i].end() > sector) return i;
  return segs.size();
}

// Checks the structure, every FindFirst in [0, span + 64) and walks of
// random ranges against the reference.
void CheckAgainstReference(const std::vector<std::vector<Segment>>& layers, uint64_t span,
                           std::mt19937_64& rng) {
  const MergedIndex idx = BuildFrom(layers);
  const std::vector<Cell> ref = Reference(layers, span);
  const auto& segs = idx.segments();

  // Sorted, disjoint, no zeroed or empty segments, layer in range.
  for (size_t i = 0; i < segs.size(); ++i) {
    ASSERT_FALSE(segs[i].zeroed);
    ASSERT_GT(segs[i].length, 0u);
    ASSERT_LT(segs[i].layer, layers.size());
    if (i > 0) {
      ASSERT_LE(segs[i - 1].end(), segs[i].offset);
    }
  }

  for (uint64_t sector = 0; sector < span + 64; ++sector) {
    ASSERT_EQ(idx.FindFirst(sector), BruteFindFirst(idx, sector)) << "sector " << sector;
  }
  ASSERT_EQ(idx.FindFirst(UINT64_MAX), segs.size());
  ASSERT_EQ(idx.FindFirst(uint64_t{1} << 60), segs.size());

  // Walks: pieces tile the range in order and match the reference per sector.
  std::uniform_int_distribution<uint64_t> off(0, span + 16);
  std::uniform_int_distribution<uint64_t> len(1, 300);
  for (int t = 0; t < 2000; ++t) {
    const uint64_t o = off(rng), n = (t % 7 == 0) ? span + 32 : len(rng);
    uint64_t pos = o;
    idx.Walk(o, n, [&](uint64_t po, uint64_t pn, const Segment* s) {
      ASSERT_EQ(po, pos);
      ASSERT_GT(pn, 0u);
      for (uint64_t k = 0; k < pn; ++k) {
        const uint64_t sector = po + k;
        Cell got;
        if (s) {
          ASSERT_GE(sector, s->offset);
          ASSERT_LT(sector, s->end());
          got.layer = s->layer;
          got.msector = s->moffset + (sector - s->offset);
        }
        const Cell want = sector < span ? ref[sector] : Cell{};
        ASSERT_EQ(got, want) << "sector " << sector << " walk " << o << "+" << n;
      }
      pos += pn;
    });
    ASSERT_EQ(pos, o + n);
  }
}

TEST(MergedIndexTest, EmptyStacks) {
  std::mt19937_64 rng(1);
  CheckAgainstReference({}, 64, rng);
  CheckAgainstReference({{}, {}, {}}, 64, rng);
  const MergedIndex idx;
  EXPECT_EQ(idx.FindFirst(0), 0u);
  EXPECT_EQ(idx.FindFirst(12345), 0u);
  int calls = 0;
  idx.Walk(10, 5, [&](uint64_t o, uint64_t n, const Segment* s) {
    EXPECT_EQ(o, 10u);
    EXPECT_EQ(n, 5u);
    EXPECT_EQ(s, nullptr);
    ++calls;
  });
  EXPECT_EQ(calls, 1);
}

TEST(MergedIndexTest, OnlyZeroedRangesLeaveNothing) {
  std::mt19937_64 rng(2);
  std::vector<std::vector<Segment>> layers(2);
  layers[0].push_back(Segment{10, 0, 5, 0, true});
  layers[1].push_back(Segment{100, 0, 50, 0, true});
  EXPECT_EQ(BuildFrom(layers).size(), 0u);
  CheckAgainstReference(layers, 200, rng);
}

TEST(MergedIndexTest, UpperWinsAndZeroedHides) {
  std::mt19937_64 rng(3);
  std::vector<std::vector<Segment>> layers(3);
  layers[0].push_back(Segment{0, 100, 64, 0, false});   // bottom: [0, 64)
  layers[1].push_back(Segment{8, 500, 8, 0, false});    // middle: [8, 16)
  layers[2].push_back(Segment{12, 0, 40, 0, true});     // top zeroes [12, 52)
  const MergedIndex idx = BuildFrom(layers);
  std::vector<std::tuple<uint64_t, uint64_t, int, uint64_t>> got;
  idx.Walk(0, 64, [&](uint64_t o, uint64_t n, const Segment* s) {
    got.emplace_back(o, n, s ? s->layer : -1, s ? s->moffset + (o - s->offset) : 0);
  });
  const std::vector<std::tuple<uint64_t, uint64_t, int, uint64_t>> want = {
      {0, 8, 0, 100}, {8, 4, 1, 500}, {12, 40, -1, 0}, {52, 12, 0, 152}};
  EXPECT_EQ(got, want);
  CheckAgainstReference(layers, 80, rng);
}

TEST(MergedIndexTest, RandomStacksMatchReference) {
  std::mt19937_64 rng(20240601);
  for (int round = 0; round < 60; ++round) {
    const size_t nlayers = 1 + rng() % (round % 3 == 0 ? 64 : 6);
    const uint64_t span = 256 + rng() % 6000;
    std::vector<std::vector<Segment>> layers(nlayers);
    for (auto& l : layers) {
      // Mix of dense (many tiny segments: slots that overflow) and sparse layers.
      const bool dense = rng() % 2;
      l = RandomLayer(rng, span, dense ? 3 : 200, dense ? 2 : 400, 0.15);
    }
    SCOPED_TRACE("round " + std::to_string(round));
    CheckAgainstReference(layers, span, rng);
    if (HasFatalFailure()) return;
  }
}

TEST(MergedIndexTest, WithTopEqualsBuildOfTheWholeStack) {
  // A snapshot puts the sealed upper on top of an existing index: the
  // incremental index must read exactly like one built from scratch.
  std::mt19937_64 rng(77);
  for (int round = 0; round < 40; ++round) {
    const size_t nlayers = 1 + rng() % 5;
    const uint64_t span = 256 + rng() % 4000;
    std::vector<std::vector<Segment>> layers(nlayers + 1);
    for (auto& l : layers) {
      const bool dense = rng() % 2;
      l = RandomLayer(rng, span, dense ? 3 : 150, dense ? 2 : 300, 0.2);
    }
    std::vector<std::vector<Segment>> lower(layers.begin(), layers.end() - 1);
    const MergedIndex below = BuildFrom(lower);
    const MergedIndex inc =
        MergedIndex::WithTop(below, layers.back(), static_cast<uint8_t>(nlayers));
    const std::vector<Cell> ref = Reference(layers, span);
    SCOPED_TRACE("round " + std::to_string(round));
    for (uint64_t sector = 0; sector < span + 32; ++sector) {
      ASSERT_EQ(inc.FindFirst(sector), BruteFindFirst(inc, sector)) << "sector " << sector;
    }
    inc.Walk(0, span + 32, [&](uint64_t o, uint64_t n, const Segment* s) {
      for (uint64_t k = 0; k < n; ++k) {
        Cell got;
        if (s) {
          got.layer = s->layer;
          got.msector = s->moffset + (o + k - s->offset);
        }
        const Cell want = o + k < span ? ref[o + k] : Cell{};
        ASSERT_EQ(got, want) << "sector " << o + k;
      }
    });
    if (HasFatalFailure()) return;
  }
}

TEST(MergedIndexTest, DenseRunInsideSparseIndex) {
  // A skewed index: long segments far apart plus a burst of 1-sector
  // segments, so some slots hold many segment ends.
  std::mt19937_64 rng(5);
  std::vector<std::vector<Segment>> layers(1);
  uint64_t m = 0;
  for (uint64_t o = 0; o < 4000; o += 1000) layers[0].push_back(Segment{o, m += 2000, 900, 0, false});
  for (uint64_t o = 2900; o < 3000; o += 2) layers[0].push_back(Segment{o, m += 7, 1, 0, false});
  std::sort(layers[0].begin(), layers[0].end(),
            [](const Segment& a, const Segment& b) { return a.offset < b.offset; });
  CheckAgainstReference(layers, 4200, rng);
}

TEST(MergedIndexTest, FarOffsetsAndLayerIndependence) {
  // Segments near the top of a 2^49-sector space: slot widths hit their cap.
  const uint64_t far = uint64_t{1} << 49;
  std::vector<std::vector<Segment>> layers(1);
  layers[0] = {Segment{0, 8, 16, 0, false}, Segment{far, 100, 16383, 0, false},
               Segment{far + 20000, 20000, 8, 0, false}};
  const MergedIndex idx = BuildFrom(layers);
  ASSERT_EQ(idx.size(), 3u);
  for (uint64_t s : {uint64_t{0}, uint64_t{15}, uint64_t{16}, far - 1, far, far + 16382,
                     far + 16383, far + 19999, far + 20007, far + 20008, far * 2}) {
    EXPECT_EQ(idx.FindFirst(s), BruteFindFirst(idx, s)) << s;
  }
  // Starting far from zero (slot 0 is not at sector 0).
  layers[0] = {Segment{far, 100, 16, 0, false}, Segment{far + 64, 200, 16, 0, false}};
  const MergedIndex idx2 = BuildFrom(layers);
  for (uint64_t s : {uint64_t{0}, far - 1, far, far + 15, far + 16, far + 63, far + 64,
                     far + 79, far + 80}) {
    EXPECT_EQ(idx2.FindFirst(s), BruteFindFirst(idx2, s)) << s;
  }

  // The same disjoint layout split over 1 or 64 layers gives the same index.
  std::mt19937_64 rng(9);
  std::vector<Segment> all = RandomLayer(rng, 200000, 128, 128, 0.0);
  uint64_t mo = 0;
  for (Segment& s : all) {  // never contiguous in the file: nothing joins
    s.moffset = mo;
    mo += s.length + 1;
  }
  std::vector<std::vector<Segment>> one{all}, many(64);
  for (const Segment& s : all) many[rng() % 64].push_back(s);
  const MergedIndex a = BuildFrom(one), b = BuildFrom(many);
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    ASSERT_EQ(a.segments()[i].offset, b.segments()[i].offset);
    ASSERT_EQ(a.segments()[i].length, b.segments()[i].length);
    ASSERT_EQ(a.segments()[i].moffset, b.segments()[i].moffset);
  }
  for (int t = 0; t < 100000; ++t) {
    const uint64_t s = rng() % 210000;
    ASSERT_EQ(a.FindFirst(s), b.FindFirst(s));
  }
}

}  // namespace
}  // namespace ovbd

namespace ovbd {
namespace {

// Adding a layer on top incrementally (what a snapshot does) gives exactly
// the index a full rebuild gives.
TEST(MergedIndexTest, WithTopEqualsFullRebuild) {
  std::mt19937_64 rng(77);
  for (int round = 0; round < 80; ++round) {
    const uint64_t span = 256 + rng() % 6000;
    std::vector<std::vector<Segment>> layers(1 + rng() % 8);
    for (auto& l : layers) {
      const bool dense = rng() % 2;
      l = RandomLayer(rng, span, dense ? 3 : 200, dense ? 2 : 400, 0.2);
    }
    std::vector<const std::vector<Segment>*> below;
    for (size_t i = 0; i + 1 < layers.size(); ++i) below.push_back(&layers[i]);
    std::vector<const std::vector<Segment>*> all = below;
    all.push_back(&layers.back());
    MergedIndex inc = MergedIndex::WithTop(MergedIndex::Build(below), layers.back(),
                                           static_cast<uint8_t>(layers.size() - 1));
    MergedIndex full = MergedIndex::Build(all);
    // Compare the content each sector resolves to.
    for (uint64_t s = 0; s < span; ++s) {
      auto resolve = [&](const MergedIndex& idx) {
        std::pair<int, uint64_t> r{-1, 0};
        idx.Walk(s, 1, [&](uint64_t o, uint64_t, const Segment* seg) {
          if (seg) r = {seg->layer, seg->moffset + (o - seg->offset)};
        });
        return r;
      };
      ASSERT_EQ(resolve(inc), resolve(full)) << "round " << round << " sector " << s;
    }
  }
}

}  // namespace
}  // namespace ovbd
