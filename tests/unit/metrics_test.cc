// Metrics: the text exposition format (checked line by line by a parser of
// the format's rules: families announced once, samples under their family,
// label escaping, cumulative histograms ending in +Inf that equal _count),
// the values rendered, the registry's lifetime rules, concurrent recording
// while rendering, and the gauges taken from a real store.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <set>
#include <thread>

#include "ovbd/control/metrics.h"
#include "ovbd/io/env.h"
#include "ovbd/store/store.h"
#include "test_util.h"

namespace ovbd {
namespace {

// ---- a parser of the text format (version 0.0.4) --------------------------------------

struct ParsedSample {
  std::string name;
  std::map<std::string, std::string> labels;  // unescaped
  double value = 0;
  std::string raw_value;
};

struct Parsed {
  std::map<std::string, std::string> type;  // family -> type
  std::map<std::string, std::string> help;  // family -> help (unescaped)
  std::vector<ParsedSample> samples;
  std::vector<std::string> errors;

  // The value of the one sample `name` with exactly `labels`; NaN if none.
  double Value(const std::string& name, const std::map<std::string, std::string>& labels) const {
    for (const auto& s : samples) {
      if (s.name == name && s.labels == labels) return s.value;
    }
    return std::nan("");
  }
  size_t Count(const std::string& name) const {
    size_t n = 0;
    for (const auto& s : samples) n += s.name == name;
    return n;
  }
};

bool ValidName(const std::string& n) {
  if (n.empty() || !(std::isalpha(static_cast<unsigned char>(n[0])) || n[0] == '_' || n[0] == ':')) return false;
  for (char c : n) {
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == ':')) return false;
  }
  return true;
}

// The family a sample name belongs to, given the family being read.
bool BelongsTo(const std::string& sample, const std::string& family, const std::string& type) {
  if (sample == family) return type != "histogram";
  if (type != "histogram") return false;
  for (const char* suffix : {"_bucket", "_sum", "_count"}) {
    if (sample == family + suffix) return true;
  }
  return false;
}

Parsed Parse(const std::string& text) {
  Parsed p;
  auto err = [&](size_t line, const std::string& why) {
    p.errors.push_back("line " + std::to_string(line) + ": " + why);
  };
  if (text.empty() || text.back() != '\n') p.errors.push_back("text does not end in a newline");
  std::string family, ftype;
  std::set<std::string> seen_families;
  size_t pos = 0, ln = 0;
  while (pos < text.size()) {
    const size_t nl = text.find('\n', pos);
    const std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    ++ln;
    if (line.empty()) continue;
    if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) {
      const bool is_help = line[2] == 'H';
      const std::string rest = line.substr(7);
      const size_t sp = rest.find(' ');
      const std::string name = rest.substr(0, sp);
      const std::string arg = sp == std::string::npos ? "" : rest.substr(sp + 1);
      if (!ValidName(name)) err(ln, "bad family name '" + name + "'");
      if (is_help) {
        if (p.help.count(name)) err(ln, "second HELP for " + name);
        std::string h;
        for (size_t i = 0; i < arg.size(); ++i) {
          if (arg[i] == '\\' && i + 1 < arg.size()) {
            ++i;
            if (arg[i] == 'n') {
              h += '\n';
            } else if (arg[i] == '\\') {
              h += '\\';
            } else {
              err(ln, "bad escape in HELP");
            }
          } else {
            h += arg[i];
          }
        }
        p.help[name] = h;
        if (seen_families.count(name) && name != family) err(ln, "family " + name + " seen before");
      } else {
        static const std::set<std::string> kTypes = {"counter", "gauge", "histogram", "summary", "untyped"};
        if (!kTypes.count(arg)) err(ln, "bad type '" + arg + "'");
        if (p.type.count(name)) err(ln, "second TYPE for " + name);
        if (seen_families.count(name) && name != family) err(ln, "family " + name + " seen before");
        p.type[name] = arg;
        family = name;
        ftype = arg;
        seen_families.insert(name);
      }
      continue;
    }
    if (line[0] == '#') continue;  // a comment
    ParsedSample s;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') ++i;
    s.name = line.substr(0, i);
    if (!ValidName(s.name)) err(ln, "bad sample name '" + s.name + "'");
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        size_t eq = line.find('=', i);
        if (eq == std::string::npos) {
          err(ln, "label without =");
          break;
        }
        const std::string key = line.substr(i, eq - i);
        if (!ValidName(key) || key.find(':') != std::string::npos) err(ln, "bad label name '" + key + "'");
        i = eq + 1;
        if (i >= line.size() || line[i] != '"') {
          err(ln, "label value not quoted");
          break;
        }
        ++i;
        std::string v;
        bool closed = false;
        while (i < line.size()) {
          const char c = line[i++];
          if (c == '"') {
            closed = true;
            break;
          }
          if (c == '\\') {
            if (i >= line.size()) break;
            const char e = line[i++];
            if (e == 'n') {
              v += '\n';
            } else if (e == '\\' || e == '"') {
              v += e;
            } else {
              err(ln, "bad escape in a label value");
            }
          } else {
            v += c;
          }
        }
        if (!closed) err(ln, "unterminated label value");
        if (s.labels.count(key)) err(ln, "label " + key + " twice");
        s.labels[key] = v;
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (i >= line.size() || line[i] != '}') err(ln, "labels not closed");
      ++i;
    }
    if (i >= line.size() || line[i] != ' ') {
      err(ln, "no value");
      continue;
    }
    s.raw_value = line.substr(i + 1);
    if (s.raw_value.find(' ') != std::string::npos) err(ln, "timestamps are not expected");
    char* end = nullptr;
    s.value = std::strtod(s.raw_value.c_str(), &end);
    if (s.raw_value.empty() || *end != '\0') err(ln, "bad value '" + s.raw_value + "'");
    if (family.empty() || !BelongsTo(s.name, family, ftype)) {
      err(ln, "sample " + s.name + " outside its family (current: " + family + ")");
    }
    p.samples.push_back(std::move(s));
  }
  for (const auto& [name, t] : p.type) {
    if (!p.help.count(name)) p.errors.push_back("no HELP for " + name);
  }
  // Histograms: per label set, le ascending, counts not decreasing, +Inf
  // last and equal to _count; _sum present.
  for (const auto& [name, t] : p.type) {
    if (t != "histogram") continue;
    std::map<std::map<std::string, std::string>, std::vector<std::pair<double, double>>> series;
    for (const auto& s : p.samples) {
      if (s.name != name + "_bucket") continue;
      auto labels = s.labels;
      if (!labels.count("le")) {
        p.errors.push_back(name + ": bucket without le");
        continue;
      }
      const std::string le = labels["le"];
      labels.erase("le");
      series[labels].emplace_back(le == "+Inf" ? INFINITY : std::strtod(le.c_str(), nullptr), s.value);
    }
    for (const auto& [labels, buckets] : series) {
      for (size_t k = 1; k < buckets.size(); ++k) {
        if (!(buckets[k].first > buckets[k - 1].first)) p.errors.push_back(name + ": le not ascending");
        if (buckets[k].second < buckets[k - 1].second) p.errors.push_back(name + ": buckets not cumulative");
      }
      if (buckets.empty() || !std::isinf(buckets.back().first)) {
        p.errors.push_back(name + ": no +Inf bucket");
        continue;
      }
      if (p.Value(name + "_count", labels) != buckets.back().second) {
        p.errors.push_back(name + ": _count differs from the +Inf bucket");
      }
      if (std::isnan(p.Value(name + "_sum", labels))) p.errors.push_back(name + ": no _sum");
    }
  }
  return p;
}

std::string Errors(const Parsed& p) {
  std::string s;
  for (const auto& e : p.errors) s += e + "\n";
  return s;
}

VolumeInfo Vol(const std::string& name, uint64_t size, bool snapshot = false) {
  VolumeInfo v;
  v.name = name;
  v.size = size;
  v.is_snapshot = snapshot;
  return v;
}

// ---- the pieces ------------------------------------------------------------------------

TEST(MetricsFormatTest, SecondsAreExactDecimals) {
  EXPECT_EQ(FormatSeconds(0), "0");
  EXPECT_EQ(FormatSeconds(1), "0.000000001");
  EXPECT_EQ(FormatSeconds(10'000), "0.00001");
  EXPECT_EQ(FormatSeconds(25'000), "0.000025");
  EXPECT_EQ(FormatSeconds(2'500'000'000), "2.5");
  EXPECT_EQ(FormatSeconds(10'000'000'000), "10");
  EXPECT_EQ(FormatSeconds(1'234'567'890'123), "1234.567890123");
}

TEST(MetricsFormatTest, EscapesLabelValuesAndHelp) {
  EXPECT_EQ(EscapeLabelValue("plain-name_1.2@s"), "plain-name_1.2@s");
  EXPECT_EQ(EscapeLabelValue("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  EXPECT_EQ(EscapeHelp("a\\b\"c\nd"), "a\\\\b\"c\\nd");  // quotes stay in HELP
}

TEST(MetricsFormatTest, HistogramBoundsAreInclusiveAndCumulative) {
  LatencyHistogram h;
  h.Observe(0);
  h.Observe(10'000);       // exactly the first bound: le="0.00001"
  h.Observe(10'001);       // the next bucket
  h.Observe(3'000'000);    // 3 ms: le="0.005"
  h.Observe(60'000'000'000);  // a minute: +Inf only
  const auto snap = h.Read();
  EXPECT_EQ(snap.count(), 5u);
  EXPECT_EQ(snap.sum_ns, 10'000u + 10'001u + 3'000'000u + 60'000'000'000u);
  MetricsWriter w;
  w.Family("t_seconds", "histogram", "test");
  w.Histogram("t_seconds", {{"volume", "v"}}, snap);
  const Parsed p = Parse(w.text());
  ASSERT_TRUE(p.errors.empty()) << Errors(p) << w.text();
  auto bucket = [&](const char* le) { return p.Value("t_seconds_bucket", {{"volume", "v"}, {"le", le}}); };
  EXPECT_EQ(bucket("0.00001"), 2);
  EXPECT_EQ(bucket("0.000025"), 3);
  EXPECT_EQ(bucket("0.0025"), 3);
  EXPECT_EQ(bucket("0.005"), 4);
  EXPECT_EQ(bucket("10"), 4);
  EXPECT_EQ(bucket("+Inf"), 5);
  EXPECT_EQ(p.Count("t_seconds_bucket"), LatencyHistogram::kBounds + 1);
  EXPECT_EQ(p.Value("t_seconds_count", {{"volume", "v"}}), 5);
  EXPECT_DOUBLE_EQ(p.Value("t_seconds_sum", {{"volume", "v"}}), 60.003020001);
}

// ---- a whole rendering -----------------------------------------------------------------

TEST(MetricsRenderTest, CountersGaugesAndHistogramsOfEveryVolume) {
  MetricsInput in;
  in.volumes = {Vol("idle", 1 << 20), Vol("vm1", 64 << 20), Vol("vm1@s1", 32 << 20, true)};
  in.volumes[1].allocated = 8192;
  in.volumes[1].preallocated = 4096;
  in.volumes[1].lowers = {"a", "b"};
  in.volumes[1].open_handles = 3;
  in.volumes[1].failed = "io error: x";
  in.volumes[2].lowers = {"a"};
  in.unusable_volumes = 2;
  JobInfo running, queued, done;
  running.state = JobState::kRunning;
  queued.state = JobState::kQueued;
  done.state = JobState::kDone;
  in.jobs = {running, queued, done};

  MetricsRegistry reg;
  auto vm1 = reg.ForVolume("vm1");
  vm1->Record(IoOp::kRead, 4096, 20'000);
  vm1->Record(IoOp::kRead, 8192, 30'000);
  vm1->RecordError(IoOp::kRead, 1'000'000);
  vm1->Record(IoOp::kWrite, 512, 40'000);
  vm1->Record(IoOp::kFlush, 0, 2'000'000);
  vm1->Record(IoOp::kDiscard, 1 << 20, 100'000);
  vm1->RecordError(IoOp::kDiscard, 5);
  // Counters of a name the store no longer lists (deleted, still open).
  reg.ForVolume("gone")->Record(IoOp::kWrite, 1, 1);

  const std::string text = RenderMetrics(in, reg.Entries());
  const Parsed p = Parse(text);
  ASSERT_TRUE(p.errors.empty()) << Errors(p) << text;

  const std::map<std::string, std::string> v1 = {{"volume", "vm1"}};
  EXPECT_EQ(p.Value("ovbdfs_read_bytes_total", v1), 12288);
  EXPECT_EQ(p.Value("ovbdfs_read_operations_total", v1), 3);  // the failed one too
  EXPECT_EQ(p.Value("ovbdfs_write_bytes_total", v1), 512);
  EXPECT_EQ(p.Value("ovbdfs_write_operations_total", v1), 1);
  EXPECT_EQ(p.Value("ovbdfs_flush_operations_total", v1), 1);
  EXPECT_EQ(p.Value("ovbdfs_discard_bytes_total", v1), 1 << 20);
  EXPECT_EQ(p.Value("ovbdfs_discard_operations_total", v1), 2);
  EXPECT_EQ(p.Value("ovbdfs_errors_total", {{"volume", "vm1"}, {"op", "read"}}), 1);
  EXPECT_EQ(p.Value("ovbdfs_errors_total", {{"volume", "vm1"}, {"op", "write"}}), 0);
  EXPECT_EQ(p.Value("ovbdfs_errors_total", {{"volume", "vm1"}, {"op", "discard"}}), 1);
  EXPECT_EQ(p.Value("ovbdfs_read_latency_seconds_count", v1), 3);
  EXPECT_EQ(p.Value("ovbdfs_read_latency_seconds_bucket", {{"volume", "vm1"}, {"le", "0.000025"}}), 1);
  EXPECT_EQ(p.Value("ovbdfs_read_latency_seconds_bucket", {{"volume", "vm1"}, {"le", "0.00005"}}), 2);
  EXPECT_DOUBLE_EQ(p.Value("ovbdfs_read_latency_seconds_sum", v1), 0.00105);
  EXPECT_EQ(p.Value("ovbdfs_flush_latency_seconds_bucket", {{"volume", "vm1"}, {"le", "0.0025"}}), 1);
  EXPECT_EQ(p.type.at("ovbdfs_read_bytes_total"), "counter");
  EXPECT_EQ(p.type.at("ovbdfs_write_latency_seconds"), "histogram");
  EXPECT_EQ(p.type.at("ovbdfs_volume_size_bytes"), "gauge");

  // A listed volume never opened reads zeros; an unlisted one still held
  // shows.
  EXPECT_EQ(p.Value("ovbdfs_read_bytes_total", {{"volume", "idle"}}), 0);
  // Histograms only for names with counters (22 lines each).
  EXPECT_TRUE(std::isnan(p.Value("ovbdfs_read_latency_seconds_count", {{"volume", "idle"}})));
  EXPECT_EQ(p.Value("ovbdfs_read_latency_seconds_count", {{"volume", "gone"}}), 0);
  EXPECT_EQ(p.Value("ovbdfs_write_bytes_total", {{"volume", "gone"}}), 1);

  // Gauges from the status.
  EXPECT_EQ(p.Value("ovbdfs_volume_size_bytes", v1), 64 << 20);
  EXPECT_EQ(p.Value("ovbdfs_volume_size_bytes", {{"volume", "vm1@s1"}}), 32 << 20);
  EXPECT_EQ(p.Value("ovbdfs_volume_used_bytes", v1), 8192);
  EXPECT_TRUE(std::isnan(p.Value("ovbdfs_volume_used_bytes", {{"volume", "vm1@s1"}})));  // no upper
  EXPECT_EQ(p.Value("ovbdfs_volume_preallocated_bytes", v1), 4096);
  EXPECT_EQ(p.Value("ovbdfs_volume_preallocated_bytes", {{"volume", "idle"}}), 0);
  EXPECT_TRUE(std::isnan(p.Value("ovbdfs_volume_preallocated_bytes", {{"volume", "vm1@s1"}})));
  EXPECT_EQ(p.Value("ovbdfs_volume_layers", v1), 2);
  EXPECT_EQ(p.Value("ovbdfs_volume_layers", {{"volume", "vm1@s1"}}), 1);
  EXPECT_EQ(p.Value("ovbdfs_open_handles", v1), 3);
  EXPECT_EQ(p.Value("ovbdfs_volume_failed", v1), 1);
  EXPECT_EQ(p.Value("ovbdfs_volume_failed", {{"volume", "idle"}}), 0);
  EXPECT_EQ(p.Value("ovbdfs_volume_info", {{"volume", "vm1@s1"}, {"kind", "snapshot"}}), 1);
  EXPECT_EQ(p.Value("ovbdfs_volume_info", {{"volume", "vm1"}, {"kind", "volume"}}), 1);
  EXPECT_EQ(p.Value("ovbdfs_unusable_volumes", {}), 2);
  EXPECT_EQ(p.Value("ovbdfs_jobs_running", {}), 1);
  EXPECT_EQ(p.Value("ovbdfs_jobs_queued", {}), 1);
  EXPECT_EQ(p.Count("ovbdfs_build_info"), 1u);
}

TEST(MetricsRenderTest, HydrationProgressAndRemoteLayers) {
  MetricsInput in;
  in.volumes = {Vol("idle", 1 << 20), Vol("vm1", 64 << 20), Vol("vm1@s1", 32 << 20, true)};
  in.volumes[1].hydrate.state = HydrateState::kRunning;
  in.volumes[1].hydrate.copied = 3 << 20;
  in.volumes[1].hydrate.total = 10 << 20;
  in.volumes[1].hydrate.rate = 1 << 20;
  in.volumes[1].hydrate.retries = 2;
  remote::BlobStats a, b;
  a.digest = "sha256:" + std::string(64, 'a');
  a.size = 1 << 30;
  a.cached_bytes = 4 << 20;
  a.hits = 7;
  a.misses = 4;
  a.fetched_bytes = 4 << 20;
  a.errors = 1;
  a.corrupt = 1;
  b.digest = "sha256:" + std::string(64, 'b');
  b.size = 100;
  in.remote_blobs = {a, b};

  const std::string text = RenderMetrics(in, {});
  const Parsed p = Parse(text);
  ASSERT_TRUE(p.errors.empty()) << Errors(p) << text;
  const std::map<std::string, std::string> v1 = {{"volume", "vm1"}};
  EXPECT_EQ(p.Value("ovbdfs_volume_hydrate_state", {{"volume", "vm1"}, {"state", "running"}}), 1);
  EXPECT_EQ(p.Value("ovbdfs_volume_hydrate_state", {{"volume", "idle"}, {"state", "idle"}}), 1);
  EXPECT_EQ(p.Count("ovbdfs_volume_hydrate_state"), 2u);  // not for snapshots
  EXPECT_EQ(p.Value("ovbdfs_volume_hydrate_copied_bytes", v1), 3 << 20);
  EXPECT_EQ(p.Value("ovbdfs_volume_hydrate_total_bytes", v1), 10 << 20);
  EXPECT_EQ(p.Value("ovbdfs_volume_hydrate_rate_bytes_per_second", v1), 1 << 20);
  EXPECT_EQ(p.Value("ovbdfs_volume_hydrate_retries", v1), 2);
  // Progress only while there is any.
  EXPECT_TRUE(std::isnan(p.Value("ovbdfs_volume_hydrate_copied_bytes", {{"volume", "idle"}})));

  const std::map<std::string, std::string> la = {{"layer", a.digest}};
  EXPECT_EQ(p.Value("ovbdfs_remote_layer_size_bytes", la), 1 << 30);
  EXPECT_EQ(p.Value("ovbdfs_remote_layer_cached_bytes", la), 4 << 20);
  EXPECT_EQ(p.Value("ovbdfs_remote_cache_hits_total", la), 7);
  EXPECT_EQ(p.Value("ovbdfs_remote_cache_misses_total", la), 4);
  EXPECT_EQ(p.Value("ovbdfs_remote_fetched_bytes_total", la), 4 << 20);
  EXPECT_EQ(p.Value("ovbdfs_remote_errors_total", la), 1);
  EXPECT_EQ(p.Value("ovbdfs_remote_corrupt_blocks_total", la), 1);
  EXPECT_EQ(p.Value("ovbdfs_remote_layer_size_bytes", {{"layer", b.digest}}), 100);
  EXPECT_EQ(p.Value("ovbdfs_remote_fetched_bytes_total", {{"layer", b.digest}}), 0);
  EXPECT_EQ(p.type.at("ovbdfs_remote_fetched_bytes_total"), "counter");
  EXPECT_EQ(p.type.at("ovbdfs_remote_layer_cached_bytes"), "gauge");

  // A store without remote layers still declares the families, empty.
  in.remote_blobs.clear();
  const Parsed q = Parse(RenderMetrics(in, {}));
  ASSERT_TRUE(q.errors.empty()) << Errors(q);
  EXPECT_EQ(q.Count("ovbdfs_remote_fetched_bytes_total"), 0u);
}

TEST(MetricsRenderTest, LabelValuesSurviveEscaping) {
  // Store names cannot hold these bytes, but the format must not break if
  // a label ever does.
  const std::string odd = "we\"ird\\name\nx";
  MetricsInput in;
  in.volumes = {Vol(odd, 4096)};
  MetricsRegistry reg;
  reg.ForVolume(odd)->Record(IoOp::kWrite, 7, 1000);
  const std::string text = RenderMetrics(in, reg.Entries());
  const Parsed p = Parse(text);
  ASSERT_TRUE(p.errors.empty()) << Errors(p) << text;
  EXPECT_EQ(p.Value("ovbdfs_write_bytes_total", {{"volume", odd}}), 7);
  EXPECT_EQ(p.Value("ovbdfs_volume_size_bytes", {{"volume", odd}}), 4096);
}

TEST(MetricsRenderTest, TheParserCatchesBrokenText) {
  // The checks above can fail: each of these breaks one rule.
  const char* broken[] = {
      "# HELP a x\n# TYPE a counter\na 1\n# HELP a x\n# TYPE a counter\na 2\n",      // family twice
      "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 0\nh_count 1\n",
      "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 0\nh_count 1\n",  // no +Inf
      "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0\nh_count 1\n",
      "# HELP a x\n# TYPE a gauge\na{v=\"x\"y\"} 1\n",                                // bad quoting
      "# HELP a x\n# TYPE a gauge\nb 1\n",                                           // outside family
      "# HELP a x\n# TYPE a gauge\na one\n",                                         // bad value
      "# HELP a x\n# TYPE a gauge\na 1",                                             // no final newline
  };
  for (const char* t : broken) EXPECT_FALSE(Parse(t).errors.empty()) << t;
}

TEST(MetricsRenderTest, EachRenderingIsConsistentWhileRequestsAreRecorded) {
  MetricsRegistry reg;
  auto m = reg.ForVolume("vm1");
  MetricsInput in;
  in.volumes = {Vol("vm1", 1 << 30)};
  std::atomic<bool> stop{false};
  constexpr int kThreads = 4, kPerThread = 200000;
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        m->Record(IoOp::kRead, 4096, static_cast<uint64_t>((i * 7919 + t) % 50'000'000));
        m->Record(IoOp::kWrite, 512, 30'000);
      }
    });
  }
  int renders = 0;
  auto check = [&](const std::string& text) {
    const Parsed p = Parse(text);
    EXPECT_TRUE(p.errors.empty()) << Errors(p);
    const std::map<std::string, std::string> v = {{"volume", "vm1"}};
    // The operations counter is the histogram's count in the same view.
    EXPECT_EQ(p.Value("ovbdfs_read_operations_total", v), p.Value("ovbdfs_read_latency_seconds_count", v));
  };
  while (renders < 20 || !stop.load()) {
    check(RenderMetrics(in, reg.Entries()));
    if (++renders >= 20) stop = true;
  }
  for (auto& t : writers) t.join();
  const Parsed p = Parse(RenderMetrics(in, reg.Entries()));
  ASSERT_TRUE(p.errors.empty()) << Errors(p);
  const std::map<std::string, std::string> v = {{"volume", "vm1"}};
  EXPECT_EQ(p.Value("ovbdfs_read_operations_total", v), kThreads * kPerThread);
  EXPECT_EQ(p.Value("ovbdfs_read_bytes_total", v), 4096.0 * kThreads * kPerThread);
  EXPECT_EQ(p.Value("ovbdfs_write_bytes_total", v), 512.0 * kThreads * kPerThread);
  EXPECT_EQ(p.Value("ovbdfs_write_latency_seconds_bucket", {{"volume", "vm1"}, {"le", "0.00005"}}),
            kThreads * kPerThread);
}

// ---- the registry ----------------------------------------------------------------------

TEST(MetricsRegistryTest, OneObjectPerNameUntilDeletedAndReleased) {
  MetricsRegistry reg;
  auto a = reg.ForVolume("a");
  EXPECT_EQ(reg.ForVolume("a"), a);
  a->Record(IoOp::kWrite, 10, 1);
  reg.ForVolume("b");
  // "a" is deleted from the store but still held (an open handle): kept.
  reg.Prune({Vol("b", 1)});
  auto entries = reg.Entries();
  ASSERT_EQ(entries.size(), 2u);
  EXPECT_EQ(entries[0].first, "a");
  EXPECT_EQ(reg.ForVolume("a"), a);
  // Released: forgotten, and a volume made again under the name starts at 0.
  a.reset();
  entries.clear();  // (a listing holds references too)
  reg.Prune({Vol("b", 1)});
  entries = reg.Entries();
  ASSERT_EQ(entries.size(), 1u);
  EXPECT_EQ(entries[0].first, "b");
  EXPECT_EQ(reg.ForVolume("a")->Read(IoOp::kWrite).bytes, 0u);
  // Listed names are kept even when nobody holds them.
  reg.Prune({Vol("a", 1), Vol("b", 1)});
  EXPECT_EQ(reg.Entries().size(), 2u);
}

// ---- from a real store -----------------------------------------------------------------

TEST(MetricsStoreTest, GaugesFollowTheStore) {
  test::TempDir dir;
  const std::string path = dir.Sub("store");
  ASSERT_TRUE(Store::Init(Env::Default(), path).ok());
  auto opened = Store::Open(Env::Default(), path);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  Store& store = *opened.value();
  FileAttrs attrs;
  attrs.mode = 0644;
  ASSERT_TRUE(store.CreateVolume("vm1", 8 << 20, {}, attrs).ok());
  ASSERT_TRUE(store.CreateVolume("vm2", 4 << 20, {}, attrs).ok());
  auto v = store.Acquire("vm1");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  std::vector<char> data(1 << 20, 'x');
  ASSERT_TRUE(v.value()->Write(0, data.data(), data.size()).ok());
  ASSERT_TRUE(v.value()->Flush().ok());
  ASSERT_TRUE(store.Snapshot("vm1", "s1").ok());

  MetricsRegistry reg;
  reg.ForVolume("vm1")->Record(IoOp::kWrite, data.size(), 50'000);
  std::string text = RenderStoreMetrics(store, &reg);
  Parsed p = Parse(text);
  ASSERT_TRUE(p.errors.empty()) << Errors(p) << text;
  const std::map<std::string, std::string> v1 = {{"volume", "vm1"}};
  EXPECT_EQ(p.Value("ovbdfs_volume_size_bytes", v1), 8 << 20);
  EXPECT_EQ(p.Value("ovbdfs_volume_size_bytes", {{"volume", "vm2"}}), 4 << 20);
  EXPECT_EQ(p.Value("ovbdfs_volume_size_bytes", {{"volume", "vm1@s1"}}), 8 << 20);
  EXPECT_EQ(p.Value("ovbdfs_open_handles", v1), 1);
  EXPECT_EQ(p.Value("ovbdfs_open_handles", {{"volume", "vm2"}}), 0);
  EXPECT_EQ(p.Value("ovbdfs_volume_layers", v1), 1);  // the snapshot sealed the upper into a layer
  EXPECT_EQ(p.Value("ovbdfs_volume_layers", {{"volume", "vm2"}}), 0);
  EXPECT_GE(p.Value("ovbdfs_volume_used_bytes", {{"volume", "vm2"}}), 0);
  EXPECT_EQ(p.Value("ovbdfs_write_bytes_total", v1), 1 << 20);
  EXPECT_EQ(p.Value("ovbdfs_write_bytes_total", {{"volume", "vm2"}}), 0);

  // The fresh upper holds what is written after the snapshot.
  ASSERT_TRUE(v.value()->Write(0, data.data(), data.size()).ok());
  ASSERT_TRUE(v.value()->Flush().ok());
  p = Parse(RenderStoreMetrics(store, &reg));
  EXPECT_GE(p.Value("ovbdfs_volume_used_bytes", v1), 1 << 20);

  // Deleted (and released): its series go away.
  store.Release("vm1");
  v = Result<std::shared_ptr<Volume>>(Status::NotFound("released"));
  ASSERT_TRUE(store.Delete("vm2").ok());
  p = Parse(RenderStoreMetrics(store, &reg));
  EXPECT_TRUE(std::isnan(p.Value("ovbdfs_volume_size_bytes", {{"volume", "vm2"}})));
  EXPECT_TRUE(std::isnan(p.Value("ovbdfs_write_bytes_total", {{"volume", "vm2"}})));
  EXPECT_EQ(p.Value("ovbdfs_open_handles", v1), 0);
}

}  // namespace
}  // namespace ovbd
