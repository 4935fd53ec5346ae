// Microbenchmarks of MergedIndex lookups (include/ovbd/layer/merged_index.h).
//
//   FindFirst/N           N segments in one layer, random query sectors,
//                         independent lookups (throughput: items_per_second)
//   FindFirstChained/N    the same, but each query depends on the previous
//                         answer, so lookups cannot overlap (latency)
//   Walk4K/N              Walk of a random 4 KiB (8-sector) range
//   FindFirstLayers/N/L   N segments spread over L layers: /disjoint assigns
//                         each segment of one random layout to a random layer
//                         (the merged index is identical for every L);
//                         /overlap gives each layer its own random layout of
//                         N/L segments over the same span (upper ones win)
//   Build/N/L             MergedIndex::Build of N segments over L layers
//
// Segment layout: lengths uniform in [1, 128] sectors, gaps uniform in
// [0, 128] sectors (a quarter of neighbours touch), so N segments span about
// N * 64 KiB of virtual space (64 GiB at N = 1M). Queries are uniform over
// the whole span and precomputed (2^20 of them), so the timed loop does only
// lookups.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <tuple>
#include <vector>

#include "ovbd/layer/merged_index.h"

namespace {

using ovbd::MergedIndex;
using ovbd::Segment;

constexpr size_t kQueries = size_t{1} << 20;
constexpr int kBatch = 64;  // lookups per benchmark-loop iteration

// A sorted, non-overlapping random layout of n segments starting at `start`.
// moffsets are spaced so that no two neighbours are contiguous in the file
// (nothing gets joined by Build).
std::vector<Segment> RandomLayout(size_t n, uint64_t gap_scale, std::mt19937_64& rng) {
  std::vector<Segment> v;
  v.reserve(n);
  std::uniform_int_distribution<uint32_t> len(1, 128);
  std::uniform_int_distribution<uint64_t> gap(0, 128 * gap_scale);
  uint64_t pos = 0, mpos = 8;
  for (size_t i = 0; i < n; ++i) {
    pos += gap(rng);
    Segment s;
    s.offset = pos;
    s.length = len(rng);
    s.moffset = mpos;
    mpos += s.length + 1;
    pos += s.length;
    v.push_back(s);
  }
  return v;
}

struct Fixture {
  MergedIndex index;
  std::vector<uint64_t> queries;  // kQueries random sectors in [0, span)
  uint64_t span = 0;
};

enum class Split { kDisjoint, kOverlap };

const Fixture& GetFixture(size_t n, size_t layers, Split split) {
  static std::map<std::tuple<size_t, size_t, Split>, std::unique_ptr<Fixture>> cache;
  auto& slot = cache[{n, layers, split}];
  if (slot) return *slot;
  auto f = std::make_unique<Fixture>();
  // Disjoint splits of the same n share one seed: the same layout, so the
  // merged indexes differ only in their layer tags.
  std::mt19937_64 rng(0x0bd0 + n * 131 + (split == Split::kOverlap ? layers : 0));
  std::vector<std::vector<Segment>> per(layers);
  if (split == Split::kDisjoint || layers == 1) {
    std::vector<Segment> all = RandomLayout(n, 1, rng);
    std::uniform_int_distribution<size_t> pick(0, layers - 1);
    for (const Segment& s : all) per[pick(rng)].push_back(s);
  } else {
    // Each layer spreads its n/layers segments over the same span.
    for (size_t l = 0; l < layers; ++l) per[l] = RandomLayout(n / layers, layers, rng);
  }
  std::vector<const std::vector<Segment>*> ptrs;
  for (const auto& p : per) ptrs.push_back(&p);
  f->index = MergedIndex::Build(ptrs);
  f->span = f->index.segments().empty() ? 1 : f->index.segments().back().end();
  std::uniform_int_distribution<uint64_t> q(0, f->span - 1);
  f->queries.resize(kQueries);
  for (auto& x : f->queries) x = q(rng);
  slot = std::move(f);
  return *slot;
}

void Counters(benchmark::State& state, const Fixture& f, int64_t items) {
  state.SetItemsProcessed(items);
  state.counters["merged_segs"] = static_cast<double>(f.index.size());
  state.counters["index_MiB"] = static_cast<double>(f.index.MemoryBytes()) / (1 << 20);
}

void RunFindFirst(benchmark::State& state, const Fixture& f) {
  const uint64_t* q = f.queries.data();
  size_t qi = 0;
  uint64_t acc = 0;
  for (auto _ : state) {
    for (int k = 0; k < kBatch; ++k) acc += f.index.FindFirst(q[(qi + k) & (kQueries - 1)]);
    qi += kBatch;
    benchmark::DoNotOptimize(acc);
  }
  Counters(state, f, static_cast<int64_t>(state.iterations()) * kBatch);
}

void BM_FindFirst(benchmark::State& state) {
  RunFindFirst(state, GetFixture(static_cast<size_t>(state.range(0)), 1, Split::kDisjoint));
}

void BM_FindFirstChained(benchmark::State& state) {
  const Fixture& f = GetFixture(static_cast<size_t>(state.range(0)), 1, Split::kDisjoint);
  const uint64_t* q = f.queries.data();
  size_t qi = 0;
  size_t r = 0;
  for (auto _ : state) {
    for (int k = 0; k < kBatch; ++k) {
      // The next query's address depends on this answer (r & 1 is 0 or 1).
      r = f.index.FindFirst(q[(qi + k + (r & 1)) & (kQueries - 1)]);
    }
    qi += kBatch;
    benchmark::DoNotOptimize(r);
  }
  Counters(state, f, static_cast<int64_t>(state.iterations()) * kBatch);
}

void BM_Walk4K(benchmark::State& state) {
  const Fixture& f = GetFixture(static_cast<size_t>(state.range(0)), 1, Split::kDisjoint);
  const uint64_t* q = f.queries.data();
  size_t qi = 0;
  uint64_t acc = 0, pieces = 0;
  for (auto _ : state) {
    for (int k = 0; k < kBatch; ++k) {
      f.index.Walk(q[(qi + k) & (kQueries - 1)], 8,
                   [&](uint64_t off, uint64_t len, const Segment* s) {
                     acc += s ? s->moffset + (off - s->offset) : len;
                     ++pieces;
                   });
    }
    qi += kBatch;
    benchmark::DoNotOptimize(acc);
  }
  Counters(state, f, static_cast<int64_t>(state.iterations()) * kBatch);
  state.counters["pieces_per_walk"] =
      static_cast<double>(pieces) / static_cast<double>(state.iterations() * kBatch);
}

void BM_FindFirstLayersDisjoint(benchmark::State& state) {
  RunFindFirst(state, GetFixture(static_cast<size_t>(state.range(0)),
                                 static_cast<size_t>(state.range(1)), Split::kDisjoint));
}

void BM_FindFirstLayersOverlap(benchmark::State& state) {
  RunFindFirst(state, GetFixture(static_cast<size_t>(state.range(0)),
                                 static_cast<size_t>(state.range(1)), Split::kOverlap));
}

void BM_Build(benchmark::State& state) {
  const size_t n = static_cast<size_t>(state.range(0));
  const size_t layers = static_cast<size_t>(state.range(1));
  std::mt19937_64 rng(7);
  std::vector<std::vector<Segment>> per(layers);
  for (size_t l = 0; l < layers; ++l) per[l] = RandomLayout(n / layers, layers, rng);
  std::vector<const std::vector<Segment>*> ptrs;
  for (const auto& p : per) ptrs.push_back(&p);
  size_t merged = 0;
  for (auto _ : state) {
    MergedIndex idx = MergedIndex::Build(ptrs);
    merged = idx.size();
    benchmark::DoNotOptimize(idx);
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * n));
  state.counters["merged_segs"] = static_cast<double>(merged);
}

BENCHMARK(BM_FindFirst)->Arg(1000)->Arg(10000)->Arg(100000)->Arg(1000000);
BENCHMARK(BM_FindFirstChained)->Arg(1000)->Arg(10000)->Arg(100000)->Arg(1000000);
BENCHMARK(BM_Walk4K)->Arg(1000)->Arg(10000)->Arg(100000)->Arg(1000000);
BENCHMARK(BM_FindFirstLayersDisjoint)
    ->ArgNames({"segs", "layers"})
    ->Args({1000000, 1})
    ->Args({1000000, 64});
BENCHMARK(BM_FindFirstLayersOverlap)
    ->ArgNames({"segs", "layers"})
    ->Args({1000000, 1})
    ->Args({1000000, 64});
BENCHMARK(BM_Build)
    ->ArgNames({"segs", "layers"})
    ->Args({1000000, 1})
    ->Args({1000000, 64})
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);

}  // namespace

BENCHMARK_MAIN();
