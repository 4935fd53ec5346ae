// Golden test: layers made by overlaybd's own tools (tests/data/overlaybd)
// flatten to the sha256 their README documents, and the decoded index of
// each file is what docs/FORMAT.md says it is. If the spec and the code
// drift apart, this fails.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "ovbd/layer/layer_open.h"
#include "ovbd/layer/lsmt_writer.h"
#include "ovbd/volume/volume.h"
#include "test_util.h"

namespace ovbd {
namespace {

using test::DataPath;

// From tests/data/overlaybd/64MiB/README.md.
const char* kShaL1 = "182f42453adf7bd52e533e0fb6fa029ba33978178ce8e368292b9ccdeb93cf9d";
const char* kShaL1L2 = "8cf45c1c330369de12391603145147f9dfec50147c9ded71475b0d5f9e408929";
constexpr uint64_t kSize = 64 << 20;

std::shared_ptr<lsmt::Layer> Open(const std::string& name) {
  auto l = OpenLayer(Env::Default(), DataPath("overlaybd/64MiB/" + name));
  EXPECT_TRUE(l.ok()) << name << ": " << l.status().ToString();
  return l.ok() ? l.value() : nullptr;
}

std::string FlattenSha(std::vector<std::shared_ptr<lsmt::Layer>> stack) {
  Volume v("fixture", kSize, std::move(stack), nullptr, true);
  std::vector<char> buf(kSize);
  auto n = v.Read(0, kSize, buf.data());
  EXPECT_TRUE(n.ok()) << n.status().ToString();
  EXPECT_EQ(n.value(), kSize);
  return test::Sha256Hex(buf.data(), buf.size());
}

class L1Fixture : public ::testing::TestWithParam<const char*> {};

TEST_P(L1Fixture, FlattensToDocumentedSha) {
  auto l1 = Open(GetParam());
  ASSERT_NE(l1, nullptr);
  EXPECT_EQ(l1->virtual_size(), kSize);
  EXPECT_EQ(l1->header().uuid, "0B7E1A2C-1D3F-4E5A-8B6C-000000000001");
  EXPECT_EQ(l1->header().user_tag, "ovbd-ref L1");
  EXPECT_EQ(l1->segments().size(), 9u);
  EXPECT_EQ(l1->padding_entries(), 247u);
  EXPECT_EQ(FlattenSha({l1}), kShaL1);
}

INSTANTIATE_TEST_SUITE_P(AllEncodings, L1Fixture,
                         ::testing::Values("l1.lsmt", "l1.lz4.zfile", "l1.zstd.zfile",
                                           "l1.lz4-bs32k.zfile", "l1.lz4-bs64k.zfile",
                                           "l1.lsmt.ovbdzfile-lz4"));

class L2Fixture : public ::testing::TestWithParam<const char*> {};

TEST_P(L2Fixture, StackFlattensToDocumentedSha) {
  auto l1 = Open("l1.lsmt");
  auto l2 = Open(GetParam());
  ASSERT_NE(l1, nullptr);
  ASSERT_NE(l2, nullptr);
  EXPECT_EQ(l2->header().parent_uuid, "0B7E1A2C-1D3F-4E5A-8B6C-000000000001");
  EXPECT_EQ(FlattenSha({l1, l2}), kShaL1L2);
}

INSTANTIATE_TEST_SUITE_P(AllEncodings, L2Fixture,
                         ::testing::Values("l2.lsmt", "l2.lz4.zfile", "l2.zstd.zfile",
                                           "l2.sealed"));

TEST(Fixtures, CompressedL1UnderCompressedL2) {
  EXPECT_EQ(FlattenSha({Open("l1.zstd.zfile"), Open("l2.lz4.zfile")}), kShaL1L2);
}

TEST(Fixtures, AppendOnlyWritablePairAsUpper) {
  Env* env = Env::Default();
  auto data = env->OpenReadable(DataPath("overlaybd/64MiB/l2-rw.data"));
  auto index = env->OpenReadable(DataPath("overlaybd/64MiB/l2-rw.index"));
  ASSERT_TRUE(data.ok() && index.ok());
  auto l2 = lsmt::Layer::OpenAppendOnly(std::shared_ptr<const ReadableFile>(std::move(data).value()),
                                        std::shared_ptr<const ReadableFile>(std::move(index).value()));
  ASSERT_TRUE(l2.ok()) << l2.status().ToString();
  EXPECT_EQ(FlattenSha({Open("l1.lsmt"), l2.value()}), kShaL1L2);
}

// The committed index of l2 as decoded in tests/data/overlaybd/INDEX-DUMP.txt.
TEST(Fixtures, L2IndexMatchesDump) {
  auto l2 = Open("l2.lsmt");
  ASSERT_NE(l2, nullptr);
  struct E { uint64_t off, len, moff; bool zeroed; };
  const E want[] = {{3, 2, 0, true},        {9, 6, 8, false},        {2044, 6, 14, false},
                    {32896, 128, 20, false}, {40963, 20, 148, false}, {67624, 64, 0, true},
                    {83968, 128, 0, true},   {84096, 8, 168, false},  {84104, 376, 0, true},
                    {98304, 24, 176, false}, {131071, 1, 200, false}};
  ASSERT_EQ(l2->segments().size(), std::size(want));
  for (size_t i = 0; i < std::size(want); ++i) {
    const Segment& s = l2->segments()[i];
    EXPECT_EQ(s.offset, want[i].off) << i;
    EXPECT_EQ(s.length, want[i].len) << i;
    EXPECT_EQ(s.zeroed, want[i].zeroed) << i;
    if (!want[i].zeroed) {
      EXPECT_EQ(s.moffset, want[i].moff) << i;
    }
  }
}

// A layer written by our writer from the flattened L1 content has the same
// content, and the same index layout overlaybd's commit produced.
TEST(Fixtures, RewrittenL1RoundTrips) {
  test::TempDir dir;
  Env* env = Env::Default();
  auto l1 = Open("l1.lsmt");
  ASSERT_NE(l1, nullptr);
  Volume v("l1", kSize, {l1}, nullptr, true);
  std::vector<char> buf(kSize);
  ASSERT_TRUE(v.Read(0, kSize, buf.data()).ok());
  ASSERT_TRUE(test::WriteWholeFile(env, dir.Sub("raw"), buf).ok());
  auto raw = env->OpenReadable(dir.Sub("raw"));
  auto out = env->OpenRW(dir.Sub("l1.ours"), true);
  ASSERT_TRUE(raw.ok() && out.ok());
  lsmt::WriteOptions wo;
  wo.uuid = "0B7E1A2C-1D3F-4E5A-8B6C-000000000001";
  wo.message = "ovbd-ref L1";
  ASSERT_TRUE(lsmt::CreateFromRaw(*raw.value(), out.value().get(), wo).ok());
  auto ours = OpenLayer(env, dir.Sub("l1.ours"));
  ASSERT_TRUE(ours.ok()) << ours.status().ToString();
  EXPECT_EQ(FlattenSha({ours.value()}), kShaL1);
  // The fixture's explicit zero write (W 25165824+65536) becomes a hole here:
  // all-zero blocks are skipped. Every other entry matches overlaybd's.
  std::vector<Segment> theirs;
  for (const auto& s : l1->segments())
    if (s.offset != 49152) theirs.push_back(s);
  ASSERT_EQ(ours.value()->segments().size(), theirs.size());
  for (size_t i = 0; i < theirs.size(); ++i) {
    EXPECT_EQ(ours.value()->segments()[i].offset, theirs[i].offset) << i;
    EXPECT_EQ(ours.value()->segments()[i].length, theirs[i].length) << i;
  }
}

// A layer truncated while in use (`truncate -s 300000 LAYER` under a mounted
// volume) must never read short or as zeros: every read that reaches past the
// new end fails with EIO naming the layer file and the missing range, through
// the plan a zero-copy reply would splice from as well as through Read().
class TruncatedLayer : public ::testing::TestWithParam<const char*> {};

TEST_P(TruncatedLayer, ReadsPastTheNewEndFailWithEio) {
  test::TempDir dir;
  Env* env = Env::Default();
  const std::string path = dir.Sub(GetParam());
  ASSERT_TRUE(env->CopyFile(DataPath(std::string("overlaybd/64MiB/") + GetParam()), path).ok());
  auto layer = OpenLayer(env, path);
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  Volume v("l1", kSize, {layer.value()}, nullptr, true);
  std::vector<char> before(kSize);
  ASSERT_TRUE(v.Read(0, kSize, before.data()).ok());

  ASSERT_EQ(::truncate(path.c_str(), 300000), 0);
  std::vector<char> buf(kSize);
  auto whole = v.Read(0, kSize, buf.data());
  ASSERT_FALSE(whole.ok()) << "read " << whole.value() << " bytes of a truncated layer";
  EXPECT_EQ(whole.status().code(), Status::Code::kIOError) << whole.status().ToString();
  EXPECT_EQ(whole.status().os_errno(), EIO) << whole.status().ToString();
  EXPECT_NE(whole.status().message().find(path), std::string::npos) << whole.status().ToString();
  EXPECT_NE(whole.status().message().find("bytes ["), std::string::npos)
      << whole.status().ToString();

  // Each mapped range: readable while its bytes are still in the file, EIO
  // once they are not, whether read here or handed out as a plan.
  size_t failed = 0, served = 0;
  const bool compressed = std::string(GetParam()).find("zfile") != std::string::npos;
  for (const Segment& s : layer.value()->segments()) {
    if (s.zeroed) continue;
    const uint64_t off = s.offset * 512, len = s.length * 512;
    auto plan = v.PlanRead(off, len);
    auto r = v.Read(off, len, buf.data());
    const bool inside = !compressed && (s.moffset + s.length) * 512 <= 300000;
    if (inside) {
      ASSERT_TRUE(plan.ok()) << plan.status().ToString();
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      EXPECT_EQ(std::memcmp(buf.data(), before.data() + off, len), 0);
      ++served;
      continue;
    }
    if (!r.ok()) {
      EXPECT_EQ(r.status().os_errno(), EIO) << r.status().ToString();
      ++failed;
    }
    if (!compressed) {
      // The plan names file pieces to splice from: it must not be handed out.
      ASSERT_FALSE(plan.ok()) << "plan for sectors " << s.offset << "+" << s.length;
      EXPECT_EQ(plan.status().os_errno(), EIO);
      EXPECT_NE(plan.status().message().find(path), std::string::npos);
      ASSERT_FALSE(r.ok());
    }
  }
  EXPECT_GT(failed, 0u);
  if (!compressed) {
    EXPECT_GT(served, 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(Encodings, TruncatedLayer,
                         ::testing::Values("l1.lsmt", "l1.lz4.zfile", "l1.zstd.zfile"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& c : n)
                             if (c == '.') c = '_';
                           return n;
                         });

}  // namespace
}  // namespace ovbd
