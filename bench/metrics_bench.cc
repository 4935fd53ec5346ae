// What recording one request costs the FUSE adapter
// (include/ovbd/control/metrics.h, src/fuse/ovbd_fs.cc): the two monotonic
// clock reads, the copy of the handle's counter pointer that outlives the
// reply, and VolumeMetrics::Record. With ->Threads(N), N threads record into
// the counters of one volume at once (the contended case: every FUSE worker
// on one busy volume).
//
//   Record           Record alone
//   RequestOverhead  everything a request adds
//   RequestOverheadWithoutCopy   the same without the pointer copy
//   Render/N         rendering with N volumes (an open of .metrics, a scrape)
#include <benchmark/benchmark.h>
#include <time.h>

#include <memory>
#include <string>

#include "ovbd/control/metrics.h"

namespace {

uint64_t MonotonicNs() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

std::shared_ptr<ovbd::VolumeMetrics>& Shared() {
  static auto m = std::make_shared<ovbd::VolumeMetrics>();
  return m;
}

void Record(benchmark::State& state) {
  ovbd::VolumeMetrics* m = Shared().get();
  uint64_t lat = 20'000;
  for (auto _ : state) {
    m->Record(ovbd::IoOp::kRead, 4096, lat);
    lat = lat * 33 % 3'000'000 + 10'000;  // spread over the buckets
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(Record)->Threads(1)->Threads(2)->Threads(8)->UseRealTime();

void RequestOverhead(benchmark::State& state) {
  const std::shared_ptr<ovbd::VolumeMetrics>& handle = Shared();
  for (auto _ : state) {
    const uint64_t t0 = MonotonicNs();
    std::shared_ptr<ovbd::VolumeMetrics> keep = handle;
    benchmark::DoNotOptimize(keep);
    keep->Record(ovbd::IoOp::kRead, 4096, MonotonicNs() - t0);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(RequestOverhead)->Threads(1)->Threads(2)->Threads(8)->UseRealTime();

// The same without the pointer copy: what that copy costs.
void RequestOverheadWithoutCopy(benchmark::State& state) {
  ovbd::VolumeMetrics* m = Shared().get();
  for (auto _ : state) {
    const uint64_t t0 = MonotonicNs();
    m->Record(ovbd::IoOp::kRead, 4096, MonotonicNs() - t0);
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(RequestOverheadWithoutCopy)->Threads(1)->Threads(2)->Threads(8)->UseRealTime();

void Render(benchmark::State& state) {
  ovbd::MetricsInput in;
  ovbd::MetricsRegistry reg;
  for (int i = 0; i < state.range(0); ++i) {
    ovbd::VolumeInfo v;
    v.name = "vm" + std::to_string(i);
    v.size = 1ull << 34;
    in.volumes.push_back(v);
    reg.ForVolume(v.name)->Record(ovbd::IoOp::kRead, 4096, 20'000);
  }
  size_t bytes = 0;
  for (auto _ : state) bytes = ovbd::RenderMetrics(in, reg.Entries()).size();
  state.counters["bytes"] = static_cast<double>(bytes);
}
BENCHMARK(Render)->Arg(1)->Arg(100)->Arg(1000);

}  // namespace

BENCHMARK_MAIN();
