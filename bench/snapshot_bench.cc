// Snapshot latency and the write stall it causes, against the number of
// upper mappings and the amount of data the upper holds.
//
//   snapshot_bench [--dir DIR] [--runs N] [--big-gib G] [--only MAPPINGS:GIB]
//
// For each (mappings, data) case: a store with one volume whose upper holds
// `mappings` extents totalling `data` bytes (written and committed first),
// then a writer thread issues 4 KiB writes while the main thread takes a
// snapshot. Reported: snapshot latency (command start to return) and the
// longest single write during it (the stall), medians of N runs, as one
// markdown table; and, for the 1 GiB cases, the latency of the same snapshot
// with no writer (the command's own cost, with nothing unflushed to sync).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "ovbd/store/store.h"

using namespace ovbd;
using Clock = std::chrono::steady_clock;

namespace {

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v[v.size() / 2];
}

struct Sample {
  double latency_ms;
  double stall_ms;
};

Sample RunOnce(const std::string& root, uint64_t mappings, uint64_t data, int run, bool load) {
  const std::string path = root + "/store-" + std::to_string(mappings) + "-" +
                           std::to_string(data) + "-" + std::to_string(run);
  std::filesystem::remove_all(path);
  if (!Store::Init(Env::Default(), path).ok()) std::abort();
  auto so = Store::Open(Env::Default(), path);
  if (!so.ok()) std::abort();
  Store* store = so.value().get();
  // Extents of data/mappings bytes, each followed by an equal gap so they
  // stay separate mappings.
  const uint64_t ext = std::max<uint64_t>(4096, data / mappings / 4096 * 4096);
  const uint64_t size = 2 * ext * mappings + (64 << 20);
  if (!store->CreateVolume("v", size, {}, {}).ok()) std::abort();
  auto v = store->Acquire("v").value();
  std::vector<char> buf(std::min<uint64_t>(ext, 8 << 20), '\x5a');
  for (uint64_t i = 0; i < mappings; ++i) {
    for (uint64_t d = 0; d < ext; d += buf.size()) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), ext - d));
      if (!v->Write(2 * ext * i + d, buf.data(), n).ok()) std::abort();
    }
  }
  if (!v->Flush().ok()) std::abort();
  // Writer thread: 4 KiB writes in the free tail of the volume.
  std::atomic<bool> stop{false};
  std::atomic<double> worst{0};
  std::atomic<bool> during{false};
  std::thread writer([&] {
    std::mt19937_64 rng(run);
    std::vector<char> b(4096, '\x33');
    const uint64_t base = 2 * ext * mappings;
    while (load && !stop) {
      auto t0 = Clock::now();
      (void)v->Write(base + (rng() % 16384) * 4096, b.data(), b.size());
      double ms = Ms(Clock::now() - t0);
      if (during && ms > worst) worst = ms;
    }
  });
  if (load) std::this_thread::sleep_for(std::chrono::milliseconds(50));  // writer warm-up
  during = true;
  auto t0 = Clock::now();
  if (!store->Snapshot("v", "s").ok()) std::abort();
  const double lat = Ms(Clock::now() - t0);
  if (load) std::this_thread::sleep_for(std::chrono::milliseconds(20));  // a write stuck behind it
  during = false;
  stop = true;
  writer.join();
  store->Release("v");
  v.reset();
  so.value().reset();
  std::filesystem::remove_all(path);
  return {lat, worst.load()};
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "/var/tmp";
  int runs = 3;
  uint64_t big_gib = 16;
  uint64_t only_m = 0, only_g = 0;  // --only: one case (for profiling)
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--dir") {
      dir = argv[i + 1];
    } else if (a == "--runs") {
      runs = std::atoi(argv[i + 1]);
    } else if (a == "--big-gib") {
      big_gib = std::strtoull(argv[i + 1], nullptr, 10);
    } else if (a == "--only") {
      char* colon = nullptr;
      only_m = std::strtoull(argv[i + 1], &colon, 10);
      only_g = (colon && *colon == ':') ? std::strtoull(colon + 1, nullptr, 10) : 1;
    }
  }
  const std::string root = dir + "/ovbd-snapshot-bench";
  std::filesystem::create_directories(root);
  std::printf(
      "| upper mappings | data in upper | latency, idle (median ms) | latency under writes "
      "(median ms) | write stall (median of max ms) |\n");
  std::printf("|---:|---:|---:|---:|---:|\n");
  const uint64_t gib = 1ull << 30;
  std::vector<std::pair<uint64_t, uint64_t>> cases = {
      {1000, gib}, {100000, gib}, {1000000, gib}, {1000, big_gib * gib}, {100000, big_gib * gib}};
  if (only_m != 0) cases = {{only_m, only_g * gib}};
  for (auto [m, d] : cases) {
    std::vector<double> idle, lat, stall;
    for (int r = 0; r < runs; ++r) {
      // Idle: the command's own cost (nothing unflushed to sync). Filling
      // the upper twice is skipped for the big-data cases.
      if (d <= gib) idle.push_back(RunOnce(root, m, d, r, /*load=*/false).latency_ms);
      Sample res = RunOnce(root, m, d, r, /*load=*/true);
      lat.push_back(res.latency_ms);
      stall.push_back(res.stall_ms);
    }
    char idle_s[32] = "-";
    if (!idle.empty()) std::snprintf(idle_s, sizeof idle_s, "%.1f", Median(idle));
    std::printf("| %llu | %llu GiB | %s | %.1f | %.1f |\n", static_cast<unsigned long long>(m),
                static_cast<unsigned long long>(d / gib), idle_s, Median(lat), Median(stall));
    std::fflush(stdout);
  }
  std::filesystem::remove_all(root);
  return 0;
}
