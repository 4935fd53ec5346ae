#include "ovbd/control/metrics.h"

#include <algorithm>
#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <set>

#include "ovbd/version.h"

namespace ovbd {

uint64_t LatencyHistogram::Snapshot::count() const {
  uint64_t n = 0;
  for (uint64_t b : buckets) n += b;
  return n;
}

LatencyHistogram::Snapshot LatencyHistogram::Read() const {
  Snapshot s;
  for (size_t i = 0; i < buckets_.size(); ++i) s.buckets[i] = buckets_[i].load(std::memory_order_relaxed);
  s.sum_ns = sum_ns_.load(std::memory_order_relaxed);
  return s;
}

const char* IoOpName(IoOp op) {
  switch (op) {
    case IoOp::kRead: return "read";
    case IoOp::kWrite: return "write";
    case IoOp::kFlush: return "flush";
    case IoOp::kDiscard: return "discard";
  }
  return "?";
}

VolumeMetrics::OpSnapshot VolumeMetrics::Read(IoOp op) const {
  const OpCounters& c = ops_[static_cast<size_t>(op)];
  OpSnapshot s;
  s.bytes = c.bytes.load(std::memory_order_relaxed);
  s.errors = c.errors.load(std::memory_order_relaxed);
  s.latency = c.latency.Read();
  return s;
}

// ---- registry -----------------------------------------------------------------------

std::shared_ptr<VolumeMetrics> MetricsRegistry::ForVolume(const std::string& name) {
  MutexLock lk(&mu_);
  std::shared_ptr<VolumeMetrics>& m = by_name_[name];
  if (!m) m = std::make_shared<VolumeMetrics>();
  return m;
}

std::vector<std::pair<std::string, std::shared_ptr<VolumeMetrics>>> MetricsRegistry::Entries() const {
  MutexLock lk(&mu_);
  return {by_name_.begin(), by_name_.end()};
}

void MetricsRegistry::Prune(const std::vector<VolumeInfo>& live) {
  std::set<std::string_view> names;
  for (const VolumeInfo& v : live) names.insert(v.name);
  MutexLock lk(&mu_);
  for (auto it = by_name_.begin(); it != by_name_.end();) {
    // use_count 1: only the registry holds it, so no handle can record
    // into it any more (a handle takes its reference at open).
    if (!names.count(it->first) && it->second.use_count() == 1) {
      it = by_name_.erase(it);
    } else {
      ++it;
    }
  }
}

// ---- the text format -----------------------------------------------------------------

namespace {

// The text format escapes backslashes and newlines everywhere, and double
// quotes only inside label values (which it quotes).
std::string Escape(std::string_view v, bool quotes) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"' && quotes) {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

std::string EscapeLabelValue(std::string_view v) { return Escape(v, /*quotes=*/true); }
std::string EscapeHelp(std::string_view v) { return Escape(v, /*quotes=*/false); }

std::string FormatSeconds(uint64_t ns) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%" PRIu64 ".%09" PRIu64, ns / 1000000000u, ns % 1000000000u);
  std::string s = buf;
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s;
}

void MetricsWriter::Family(std::string_view name, std::string_view type, std::string_view help) {
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  out_ += EscapeHelp(help);
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += ' ';
  out_ += type;
  out_ += '\n';
}

void MetricsWriter::SampleText(std::string_view name, const Labels& labels, std::string_view value) {
  out_ += name;
  if (!labels.empty()) {
    out_ += '{';
    bool first = true;
    for (const auto& [k, v] : labels) {
      if (!first) out_ += ',';
      first = false;
      out_ += k;
      out_ += "=\"";
      if (v.find_first_of("\\\"\n") == std::string_view::npos) {
        out_ += v;  // the usual case: nothing to escape
      } else {
        out_ += EscapeLabelValue(v);
      }
      out_ += '"';
    }
    out_ += '}';
  }
  out_ += ' ';
  out_ += value;
  out_ += '\n';
}

void MetricsWriter::Sample(std::string_view name, const Labels& labels, uint64_t value) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, value);
  SampleText(name, labels, std::string_view(buf, static_cast<size_t>(r.ptr - buf)));
}

void MetricsWriter::Histogram(std::string_view name, const Labels& labels,
                              const LatencyHistogram::Snapshot& h) {
  static const std::array<std::string, LatencyHistogram::kBounds + 1> kLe = [] {
    std::array<std::string, LatencyHistogram::kBounds + 1> le;
    for (size_t i = 0; i < LatencyHistogram::kBounds; ++i) le[i] = FormatSeconds(LatencyHistogram::kBoundsNs[i]);
    le.back() = "+Inf";
    return le;
  }();
  const std::string bucket = std::string(name) + "_bucket";
  Labels with_le = labels;
  with_le.emplace_back("le", "");
  uint64_t cumulative = 0;
  for (size_t i = 0; i <= LatencyHistogram::kBounds; ++i) {
    cumulative += h.buckets[i];
    with_le.back().second = kLe[i];
    Sample(bucket, with_le, cumulative);
  }
  SampleText(std::string(name) + "_sum", labels, FormatSeconds(h.sum_ns));
  Sample(std::string(name) + "_count", labels, cumulative);
}

// ---- families --------------------------------------------------------------------------

namespace {

using Labels = MetricsWriter::Labels;

// One gauge family with a sample per entry of `volumes` that `has` accepts.
template <typename Has, typename Value>
void GaugePerVolume(const std::vector<VolumeInfo>& volumes, MetricsWriter* w, std::string_view name,
                    std::string_view help, Has has, Value value) {
  w->Family(name, "gauge", help);
  for (const VolumeInfo& v : volumes) {
    if (has(v)) w->Sample(name, {{"volume", v.name}}, value(v));
  }
}

}  // namespace

void AppendVolumeStatusFamilies(const std::vector<VolumeInfo>& volumes, MetricsWriter* w) {
  auto all = [](const VolumeInfo&) { return true; };
  auto writable = [](const VolumeInfo& v) { return !v.is_snapshot; };
  w->Family("ovbdfs_volume_info", "gauge",
            "Always 1: one sample per volume and snapshot file, with its kind (volume or snapshot).");
  for (const VolumeInfo& v : volumes) {
    w->Sample("ovbdfs_volume_info", {{"volume", v.name}, {"kind", v.is_snapshot ? "snapshot" : "volume"}},
              1);
  }
  GaugePerVolume(volumes, w, "ovbdfs_volume_size_bytes", "Virtual size of the volume or snapshot.",
                 all, [](const VolumeInfo& v) { return v.size; });
  GaugePerVolume(volumes, w, "ovbdfs_volume_used_bytes",
                 "Space the volume's writable upper takes on the store's filesystem.", writable,
                 [](const VolumeInfo& v) { return v.allocated; });
  GaugePerVolume(volumes, w, "ovbdfs_volume_preallocated_bytes",
                 "Of the used space, what the open upper reserved ahead of first writes and holds "
                 "nothing yet (0 when not open).",
                 writable, [](const VolumeInfo& v) { return v.preallocated; });
  GaugePerVolume(volumes, w, "ovbdfs_volume_layers", "Read-only lower layers under the volume.", all,
                 [](const VolumeInfo& v) { return static_cast<uint64_t>(v.lowers.size()); });
  GaugePerVolume(volumes, w, "ovbdfs_open_handles", "Open file handles of the volume or snapshot.",
                 all, [](const VolumeInfo& v) { return static_cast<uint64_t>(v.open_handles); });
  GaugePerVolume(volumes, w, "ovbdfs_volume_failed",
                 "1 when the volume stopped taking writes (status says why; remount to recover).",
                 writable, [](const VolumeInfo& v) { return v.failed.empty() ? 0u : 1u; });

  // Hydration: one state sample per volume (label `state`, as status
  // names it), and its progress while it has any (not idle).
  w->Family("ovbdfs_volume_hydrate_state", "gauge",
            "Always 1: the volume's hydration state (idle, running, paused, done, error).");
  for (const VolumeInfo& v : volumes) {
    if (!writable(v)) continue;
    w->Sample("ovbdfs_volume_hydrate_state",
              {{"volume", v.name}, {"state", HydrateStateName(v.hydrate.state)}}, 1);
  }
  auto hydrating = [](const VolumeInfo& v) {
    return !v.is_snapshot && v.hydrate.state != HydrateState::kIdle;
  };
  struct HydrateGauge {
    const char* name;
    const char* help;
    uint64_t HydrateInfo::*value;
  };
  static const HydrateGauge kHydrateGauges[] = {
      {"ovbdfs_volume_hydrate_copied_bytes",
       "Bytes hydration has copied from the lowers into the upper (this run).", &HydrateInfo::copied},
      {"ovbdfs_volume_hydrate_total_bytes", "Bytes copied plus what is left to copy.",
       &HydrateInfo::total},
      {"ovbdfs_volume_hydrate_rate_bytes_per_second", "Hydration's recent copy rate.",
       &HydrateInfo::rate},
      {"ovbdfs_volume_hydrate_retries", "Failed hydration steps retried in this run.",
       &HydrateInfo::retries},
  };
  for (const HydrateGauge& g : kHydrateGauges) {
    GaugePerVolume(volumes, w, g.name, g.help, hydrating,
                   [&g](const VolumeInfo& v) { return v.hydrate.*g.value; });
  }
}

void AppendRemoteBlobFamilies(const std::vector<remote::BlobStats>& blobs, MetricsWriter* w) {
  struct Field {
    const char* name;
    const char* type;
    const char* help;
    uint64_t remote::BlobStats::*value;
  };
  static const Field kFields[] = {
      {"ovbdfs_remote_layer_size_bytes", "gauge", "Size of the remote blob.",
       &remote::BlobStats::size},
      {"ovbdfs_remote_layer_cached_bytes", "gauge", "Of the blob, what the block cache holds.",
       &remote::BlobStats::cached_bytes},
      {"ovbdfs_remote_cache_hits_total", "counter",
       "Blocks of the blob that reads found in the cache.", &remote::BlobStats::hits},
      {"ovbdfs_remote_cache_misses_total", "counter",
       "Blocks of the blob that reads had to fetch (or wait for).", &remote::BlobStats::misses},
      {"ovbdfs_remote_fetched_bytes_total", "counter",
       "Bytes of the blob fetched from its registry or server.", &remote::BlobStats::fetched_bytes},
      {"ovbdfs_remote_errors_total", "counter",
       "Fetches of the blob that failed, and cache I/O that failed.", &remote::BlobStats::errors},
      {"ovbdfs_remote_corrupt_blocks_total", "counter",
       "Cached blocks of the blob that failed their checksum (dropped and fetched again).",
       &remote::BlobStats::corrupt},
  };
  for (const Field& f : kFields) {
    w->Family(f.name, f.type, f.help);
    for (const remote::BlobStats& b : blobs) w->Sample(f.name, {{"layer", b.digest}}, b.*f.value);
  }
}

std::string RenderMetrics(
    const MetricsInput& in,
    const std::vector<std::pair<std::string, std::shared_ptr<VolumeMetrics>>>& counters) {
  // Copy every counter first: the text below is one view.
  struct Row {
    std::array<VolumeMetrics::OpSnapshot, kIoOps> ops;
    bool recorded = false;  // has counters: opened since the mount
  };
  std::map<std::string, Row> rows;
  for (const VolumeInfo& v : in.volumes) rows[v.name];
  for (const auto& [name, m] : counters) {
    Row& r = rows[name];
    r.recorded = true;
    for (size_t i = 0; i < kIoOps; ++i) r.ops[i] = m->Read(static_cast<IoOp>(i));
  }

  MetricsWriter w;
  w.Family("ovbdfs_build_info", "gauge", "Always 1; the version of the ovbdfs daemon.");
  w.Sample("ovbdfs_build_info", {{"version", OVBD_VERSION}}, 1);

  AppendVolumeStatusFamilies(in.volumes, &w);

  AppendRemoteBlobFamilies(in.remote_blobs, &w);

  w.Family("ovbdfs_unusable_volumes", "gauge",
           "Manifests refused when the store was opened (status lists them with the reason).");
  w.Sample("ovbdfs_unusable_volumes", {}, in.unusable_volumes);
  uint64_t running = 0, queued = 0;
  for (const JobInfo& j : in.jobs) {
    if (j.state == JobState::kRunning) ++running;
    if (j.state == JobState::kQueued) ++queued;
  }
  w.Family("ovbdfs_jobs_running", "gauge", "Background jobs (merges, ...) running now.");
  w.Sample("ovbdfs_jobs_running", {}, running);
  w.Family("ovbdfs_jobs_queued", "gauge", "Background jobs waiting for a worker.");
  w.Sample("ovbdfs_jobs_queued", {}, queued);

  auto op_of = [](const Row& r, IoOp op) -> const VolumeMetrics::OpSnapshot& {
    return r.ops[static_cast<size_t>(op)];
  };
  struct Counter {
    const char* name;
    const char* help;
    IoOp op;
    bool bytes;  // else operations
  };
  static const Counter kCounters[] = {
      {"ovbdfs_read_bytes_total", "Bytes read from the volume.", IoOp::kRead, true},
      {"ovbdfs_read_operations_total", "Read requests, failed ones included.", IoOp::kRead, false},
      {"ovbdfs_write_bytes_total", "Bytes written to the volume.", IoOp::kWrite, true},
      {"ovbdfs_write_operations_total", "Write requests, failed ones included.", IoOp::kWrite, false},
      {"ovbdfs_discard_bytes_total", "Bytes discarded (punched or zeroed).", IoOp::kDiscard, true},
      {"ovbdfs_discard_operations_total", "Discard requests, failed ones included.", IoOp::kDiscard,
       false},
      {"ovbdfs_flush_operations_total", "Flushes (fsync, fdatasync, close of a written file).",
       IoOp::kFlush, false},
  };
  for (const Counter& c : kCounters) {
    w.Family(c.name, "counter", c.help);
    for (const auto& [name, r] : rows) {
      const auto& o = op_of(r, c.op);
      w.Sample(c.name, {{"volume", name}}, c.bytes ? o.bytes : o.latency.count());
    }
  }
  w.Family("ovbdfs_errors_total", "counter", "Requests that failed, by operation.");
  for (const auto& [name, r] : rows) {
    for (size_t i = 0; i < kIoOps; ++i) {
      w.Sample("ovbdfs_errors_total", {{"volume", name}, {"op", IoOpName(static_cast<IoOp>(i))}},
               r.ops[i].errors);
    }
  }
  struct Hist {
    const char* name;
    const char* help;
    IoOp op;
  };
  static const Hist kHists[] = {
      {"ovbdfs_read_latency_seconds", "Time from a read request to its reply.", IoOp::kRead},
      {"ovbdfs_write_latency_seconds", "Time from a write request to its reply.", IoOp::kWrite},
      {"ovbdfs_flush_latency_seconds", "Time from a flush request to its reply.", IoOp::kFlush},
      {"ovbdfs_discard_latency_seconds", "Time from a discard request to its reply.", IoOp::kDiscard},
  };
  // Histograms take 22 lines per volume each: only for names opened since
  // the mount (a store may hold thousands of snapshots nobody reads).
  for (const Hist& h : kHists) {
    w.Family(h.name, "histogram", h.help);
    for (const auto& [name, r] : rows) {
      if (r.recorded) w.Histogram(h.name, {{"volume", name}}, op_of(r, h.op).latency);
    }
  }
  return w.Take();
}

MetricsInput CollectMetricsInput(const Store& store) {
  MetricsInput in;
  in.volumes = store.List();
  // List leaves out the used space (a stat per upper): Lookup has it.
  for (VolumeInfo& v : in.volumes) {
    if (v.is_snapshot) continue;
    auto full = store.Lookup(v.name);
    if (full.ok()) v.allocated = full->allocated;
  }
  // The preallocated part of it, never more than it (as in status).
  store.FillPreallocated(&in.volumes);
  for (VolumeInfo& v : in.volumes) v.preallocated = std::min(v.preallocated, v.allocated);
  in.jobs = store.Jobs();
  in.unusable_volumes = store.FailedManifests().size();
  in.remote_blobs = store.RemoteCacheStats();
  return in;
}

std::string RenderStoreMetrics(const Store& store, MetricsRegistry* registry) {
  MetricsInput in = CollectMetricsInput(store);
  registry->Prune(in.volumes);
  return RenderMetrics(in, registry->Entries());
}

}  // namespace ovbd
