// Metrics: per-volume I/O counters and latency histograms, recorded on the
// I/O path, and their rendering, together with gauges taken from the
// store's status, in the Prometheus text exposition format (version 0.0.4).
// docs/METRICS.md lists every metric.
//
// Recording is cheap by construction: the FUSE adapter resolves a volume's
// VolumeMetrics once, when a file is opened, and keeps the pointer in the
// file handle; a request then does a few relaxed atomic additions (bytes,
// one histogram bucket, the latency sum). No lock and no map lookup per
// request, and the histogram's buckets are fixed.
//
// Rendering takes a copy of every counter first, then writes the text, so
// one rendering is one consistent view: a histogram's +Inf bucket equals
// its _count, and an operations counter equals its histogram's _count.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "ovbd/io/job_runner.h"
#include "ovbd/io/mutex.h"
#include "ovbd/remote/block_cache.h"
#include "ovbd/store/store.h"

namespace ovbd {

// The Content-Type of the text format.
inline constexpr char kMetricsContentType[] = "text/plain; version=0.0.4; charset=utf-8";

// A latency histogram with fixed bounds, in nanoseconds (rendered in
// seconds): 10 us to 10 s, roughly 1-2.5-5 per decade, then +Inf.
class LatencyHistogram {
 public:
  static constexpr size_t kBounds = 19;
  static constexpr std::array<uint64_t, kBounds> kBoundsNs = {
      10'000,        25'000,        50'000,        100'000,       250'000,
      500'000,       1'000'000,     2'500'000,     5'000'000,     10'000'000,
      25'000'000,    50'000'000,    100'000'000,   250'000'000,   500'000'000,
      1'000'000'000, 2'500'000'000, 5'000'000'000, 10'000'000'000};

  void Observe(uint64_t ns) {
    size_t i = 0;
    while (i < kBounds && ns > kBoundsNs[i]) ++i;  // le: bound inclusive
    buckets_[i].fetch_add(1, std::memory_order_relaxed);
    sum_ns_.fetch_add(ns, std::memory_order_relaxed);
  }

  struct Snapshot {
    std::array<uint64_t, kBounds + 1> buckets{};  // per bucket, not cumulative; last: +Inf
    uint64_t sum_ns = 0;
    uint64_t count() const;
  };
  Snapshot Read() const;

 private:
  std::array<std::atomic<uint64_t>, kBounds + 1> buckets_{};
  std::atomic<uint64_t> sum_ns_{0};
};

// The operations the FUSE adapter records per volume.
enum class IoOp : uint8_t { kRead, kWrite, kFlush, kDiscard };
inline constexpr size_t kIoOps = 4;
const char* IoOpName(IoOp op);  // "read", "write", "flush", "discard"

// The counters of one volume (or snapshot) name. Every request counts in
// its operation's latency histogram (whose count is the number of
// operations); bytes count only what succeeded; failures also count as
// errors.
class VolumeMetrics {
 public:
  void Record(IoOp op, uint64_t bytes, uint64_t latency_ns) {
    OpCounters& c = ops_[static_cast<size_t>(op)];
    if (bytes) c.bytes.fetch_add(bytes, std::memory_order_relaxed);
    c.latency.Observe(latency_ns);
  }
  void RecordError(IoOp op, uint64_t latency_ns) {
    OpCounters& c = ops_[static_cast<size_t>(op)];
    c.errors.fetch_add(1, std::memory_order_relaxed);
    c.latency.Observe(latency_ns);
  }

  struct OpSnapshot {
    uint64_t bytes = 0, errors = 0;
    LatencyHistogram::Snapshot latency;
  };
  OpSnapshot Read(IoOp op) const;

 private:
  // One cache line (or more) per operation: readers and writers of one
  // volume do not invalidate each other's counters.
  struct alignas(64) OpCounters {
    std::atomic<uint64_t> bytes{0};
    std::atomic<uint64_t> errors{0};
    LatencyHistogram latency;
  };
  std::array<OpCounters, kIoOps> ops_;
};

// The VolumeMetrics of every name, created on first use.
class MetricsRegistry {
 public:
  // The counters of `name` (the same object for as long as anyone holds it).
  std::shared_ptr<VolumeMetrics> ForVolume(const std::string& name) EXCLUDES(mu_);
  // Every name with counters, sorted.
  std::vector<std::pair<std::string, std::shared_ptr<VolumeMetrics>>> Entries() const EXCLUDES(mu_);
  // Forgets the names not in `live` (deleted volumes and snapshots) that
  // nobody holds any more, so that a volume made again under the same name
  // starts from zero (a counter reset, to Prometheus).
  void Prune(const std::vector<VolumeInfo>& live) EXCLUDES(mu_);

 private:
  mutable Mutex mu_;
  std::map<std::string, std::shared_ptr<VolumeMetrics>> by_name_ GUARDED_BY(mu_);
};

// Writes the text format. A family is announced once (# HELP, # TYPE) and
// its samples follow it.
class MetricsWriter {
 public:
  using Labels = std::vector<std::pair<std::string_view, std::string_view>>;

  // type: "counter", "gauge", "histogram" (or "untyped").
  void Family(std::string_view name, std::string_view type, std::string_view help);
  void Sample(std::string_view name, const Labels& labels, uint64_t value);
  // `value` as written (a number in the format's syntax, e.g. "0.25", "+Inf").
  void SampleText(std::string_view name, const Labels& labels, std::string_view value);
  // A histogram's _bucket (cumulative, with le="+Inf"), _sum and _count.
  void Histogram(std::string_view name, const Labels& labels, const LatencyHistogram::Snapshot& h);

  const std::string& text() const { return out_; }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

// Label values escape backslash, double quote and newline; HELP texts
// backslash and newline.
std::string EscapeLabelValue(std::string_view v);
std::string EscapeHelp(std::string_view v);
// Nanoseconds as decimal seconds, exact and without an exponent
// ("0.000025", "2.5", "10").
std::string FormatSeconds(uint64_t ns);

// What a rendering shows besides the counters: the store's status.
struct MetricsInput {
  std::vector<VolumeInfo> volumes;  // sorted by name; `allocated`, `preallocated` filled for volumes
  std::vector<JobInfo> jobs;
  size_t unusable_volumes = 0;      // manifests refused when the store was opened
  std::vector<remote::BlobStats> remote_blobs;  // the block cache's, per blob
};

// The extension point for metrics taken from the store's status: appends
// the families computed from each VolumeInfo (size, used space, layers,
// open handles, ...), one sample per volume or snapshot. A new field of
// VolumeInfo that operators should see gets its family here.
void AppendVolumeStatusFamilies(const std::vector<VolumeInfo>& volumes, MetricsWriter* w);

// The families of the remote blobs the block cache holds or read: its
// size, cached bytes, hits, misses, bytes fetched, errors, corrupt blocks,
// one sample per blob (label `layer`, its digest).
void AppendRemoteBlobFamilies(const std::vector<remote::BlobStats>& blobs, MetricsWriter* w);

// The whole exposition: build information, the status families, jobs,
// the counters of every name in `volumes` or `counters` (zero for a name
// never opened), and the latency histograms of the names in `counters`.
std::string RenderMetrics(
    const MetricsInput& in,
    const std::vector<std::pair<std::string, std::shared_ptr<VolumeMetrics>>>& counters);

// Reads the store's status (List, the used and preallocated space of each
// volume, jobs, refused manifests).
MetricsInput CollectMetricsInput(const Store& store);
// Collects, prunes `registry` of deleted names, and renders.
std::string RenderStoreMetrics(const Store& store, MetricsRegistry* registry);

}  // namespace ovbd
