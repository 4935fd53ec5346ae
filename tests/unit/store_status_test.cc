// What the store's status says of an upper's preallocated space: the text
// (`preallocated=`) and the JSON report ("preallocated_bytes") a .control
// handle returns, and the metrics, all show it appear with a first write,
// shrink as writes use it, go with a seal (a snapshot's fresh upper has
// reserved nothing) and with the volume.
#include <gtest/gtest.h>

#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ovbd/control/access.h"
#include "ovbd/control/metrics.h"
#include "ovbd/control/session.h"
#include "ovbd/layer/upper.h"
#include "store_util.h"

namespace ovbd {
namespace {

constexpr uint64_t kAbsent = std::numeric_limits<uint64_t>::max();
constexpr uint64_t kGranule = Upper::kDefaultPreallocGranule;

class StoreStatusTest : public test::FreshStoreTest {
 protected:
  // Whether the store's filesystem preallocates, with more free space than
  // the upper leaves alone.
  bool PreallocWorks() {
    auto space = Env::Default()->SpaceOf(path_);
    if (!space.ok() ||
        space->blocks_avail * space->block_size < Upper::kPreallocHeadroom + 64 * kGranule) {
      return false;
    }
    auto f = Env::Default()->OpenRW(dir_.Sub("probe"), true);
    if (!f.ok() || !f.value()->Preallocate(0, kGranule).ok()) return false;
    auto a = f.value()->AllocatedBytes();
    return a.ok() && a.value() >= kGranule;
  }

  // The number after " KEY=" in `text`.
  static uint64_t TextFigure(const std::string& text, const std::string& key) {
    const size_t at = text.find(" " + key + "=");
    if (at == std::string::npos) return kAbsent;
    return std::stoull(text.substr(at + key.size() + 2));
  }

  // What a .control handle in JSON mode returns after "status": the
  // document, whose one reply's output is the text status.
  nlohmann::json Report() {
    ControlServer server(store_.get());
    auto s = server.NewSession();
    Caller root;
    EXPECT_TRUE(s->Write("json\nstatus\n", root).ok());
    std::string doc;
    for (std::string part; !(part = s->Read(4096)).empty();) doc += part;
    auto j = nlohmann::json::parse(doc, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << doc;
    return j;
  }
  static std::string StatusText(const nlohmann::json& report) {
    return report.at("replies").at(1).at("output").get<std::string>();
  }
  // "preallocated_bytes" of `vol` in the report.
  static uint64_t JsonFigure(const nlohmann::json& report, const std::string& vol) {
    for (const auto& v : report.at("volumes")) {
      if (v.at("name") != vol) continue;
      if (!v.contains("preallocated_bytes")) return kAbsent;
      return v.at("preallocated_bytes").get<uint64_t>();
    }
    return kAbsent;
  }
  // The line of `vol` (not its snapshots') in a status text.
  static std::string LineOf(const std::string& text, const std::string& vol) {
    for (size_t at = 0; at < text.size();) {
      const size_t nl = text.find('\n', at);
      const std::string line = text.substr(at, nl == std::string::npos ? nl : nl - at);
      if (line.rfind(vol + " ", 0) == 0) return line;
      if (nl == std::string::npos) break;
      at = nl + 1;
    }
    return "";
  }

  // What the metrics would show for `vol`.
  uint64_t MetricsFigure(const std::string& vol) {
    for (const VolumeInfo& v : CollectMetricsInput(*store_).volumes) {
      if (v.name == vol) return v.preallocated;
    }
    return kAbsent;
  }

  void Write(Volume* v, uint64_t off) {
    std::vector<char> data(4096, 'x');
    auto n = v->Write(off, data.data(), data.size());
    ASSERT_TRUE(n.ok()) << n.status().ToString();
  }

  // Every figure of `vol` says `want`.
  void ExpectPreallocated(const std::string& vol, uint64_t want, const char* when) {
    SCOPED_TRACE(when);
    const nlohmann::json report = Report();
    const std::string line = LineOf(StatusText(report), vol);
    EXPECT_EQ(TextFigure(line, "preallocated"), want) << line;
    EXPECT_EQ(JsonFigure(report, vol), want);
    EXPECT_EQ(MetricsFigure(vol), want);
  }

  uint64_t LayersAllocated() {
    uint64_t total = 0;
    for (const auto& e : std::filesystem::directory_iterator(path_ + "/layers")) {
      auto st = Env::Default()->Stat(e.path().string());
      if (st.ok()) total += st->allocated;
    }
    return total;
  }
};

TEST_F(StoreStatusTest, PreallocatedGrowsOnAFirstWriteAndGoesWithSealAndDelete) {
  if (!PreallocWorks()) GTEST_SKIP() << "the store's filesystem does not preallocate (or is full)";
  FileAttrs attrs;
  attrs.mode = 0644;
  ASSERT_TRUE(store_->CreateVolume("vm", 16 << 20, {}, attrs).ok());
  auto v = store_->Acquire("vm");
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  ExpectPreallocated("vm", 0, "fresh");

  Write(v.value().get(), kGranule + 8192);
  ExpectPreallocated("vm", kGranule - 4096, "after a first write");
  EXPECT_GE(TextFigure(LineOf(StatusText(Report()), "vm"), "used"), kGranule)
      << "used= counts the reservation";
  // A write into the granule uses the reservation; one elsewhere reserves.
  Write(v.value().get(), kGranule + 65536);
  ExpectPreallocated("vm", kGranule - 8192, "after a second write into the granule");
  Write(v.value().get(), 5 * kGranule);
  ExpectPreallocated("vm", 2 * kGranule - 12288, "after a write into another granule");

  // A snapshot seals the upper (giving its unwritten reservations back) and
  // the volume goes on in a fresh one, which has reserved nothing.
  ASSERT_TRUE(v.value()->Flush().ok());
  ASSERT_TRUE(store_->Snapshot("vm", "s1").ok());
  ExpectPreallocated("vm", 0, "after the snapshot");
  EXPECT_EQ(JsonFigure(Report(), "vm@s1"), kAbsent) << "a snapshot has no upper";
  EXPECT_LT(LayersAllocated(), kGranule) << "the sealed layer kept its reservations";

  Write(v.value().get(), 3 * kGranule);
  ExpectPreallocated("vm", kGranule - 4096, "after the fresh upper's first write");
  store_->Release("vm");
  v = Result<std::shared_ptr<Volume>>(Status::NotFound("released"));
  const uint64_t before = LayersAllocated();
  ASSERT_TRUE(store_->Delete("vm").ok());
  EXPECT_GE(before - LayersAllocated(), kGranule) << "the delete did not give the space back";
  const nlohmann::json report = Report();
  EXPECT_EQ(JsonFigure(report, "vm"), kAbsent);
  EXPECT_EQ(MetricsFigure("vm"), kAbsent);
  EXPECT_EQ(StatusText(report).find("preallocated="), std::string::npos) << StatusText(report);
}

}  // namespace
}  // namespace ovbd
