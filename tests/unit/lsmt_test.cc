// LSMT format: encoding, writer round trips, and hostile input.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "ovbd/io/coding.h"
#include "ovbd/layer/layer_open.h"
#include "ovbd/layer/lsmt_layer.h"
#include "ovbd/layer/lsmt_writer.h"
#include "mem_file.h"
#include "test_util.h"

namespace ovbd::lsmt {
namespace {

using test::MemFile;  // in-memory: hostile inputs need no disk

// Builds a committed layer image by hand: header, data, index, trailer.
std::string BuildLayer(const std::vector<Entry>& entries, uint64_t vsize, size_t data_sectors,
                       uint64_t index_size_override = UINT64_MAX) {
  std::string f(kHeaderSize + data_sectors * kSectorSize, '\x5a');
  Header h;
  h.flags = kFlagHeader | kFlagDataFile | kFlagSealed;
  h.virtual_size = vsize;
  h.uuid = NewUuid();
  EncodeHeader(h, f.data());
  const uint64_t index_offset = f.size();
  for (const Entry& e : entries) {
    char b[kEntrySize];
    EncodeEntry(e, b);
    f.append(b, kEntrySize);
  }
  Header t = h;
  t.flags = kFlagDataFile | kFlagSealed;
  t.index_offset = index_offset;
  t.index_size = index_size_override == UINT64_MAX ? entries.size() : index_size_override;
  std::string tb(kHeaderSize, '\0');
  EncodeHeader(t, tb.data());
  f += tb;
  return f;
}

Result<std::shared_ptr<Layer>> OpenMem(std::string bytes) {
  return Layer::Open(std::make_shared<MemFile>(std::move(bytes)));
}

TEST(LsmtFormat, EntryBitLayoutMatchesOverlaybd) {
  // The first index entry of the fixture l1.lsmt: offset 0, length 128, moffset 8.
  const unsigned char bytes[16] = {0, 0, 0, 0, 0, 0, 0, 2, 8, 0, 0, 0, 0, 0, 0, 0};
  Entry e = DecodeEntry(reinterpret_cast<const char*>(bytes));
  EXPECT_EQ(e.offset, 0u);
  EXPECT_EQ(e.length, 128u);
  EXPECT_EQ(e.moffset, 8u);
  EXPECT_FALSE(e.zeroed);
  char out[16];
  EncodeEntry(e, out);
  EXPECT_EQ(std::memcmp(out, bytes, 16), 0);
  Entry z{kMaxOffset - 1, kMaxEntryLength, kMaxMOffset, true, 7};
  EncodeEntry(z, out);
  Entry back = DecodeEntry(out);
  EXPECT_EQ(back.offset, z.offset);
  EXPECT_EQ(back.length, z.length);
  EXPECT_EQ(back.moffset, z.moffset);
  EXPECT_TRUE(back.zeroed);
  EXPECT_EQ(back.tag, 7);
}

TEST(LsmtFormat, HeaderRoundTrip) {
  Header h;
  h.flags = 7;
  h.index_offset = 123 * 512;
  h.index_size = 256;
  h.virtual_size = 1ull << 40;
  h.uuid = NewUuid();
  h.parent_uuid = NewUuid();
  h.user_tag = "a message";
  char b[kHeaderSize];
  EncodeHeader(h, b);
  EXPECT_EQ(DecodeU32(b + kOffSize), kHeaderFieldsSize);
  Header d;
  ASSERT_TRUE(DecodeHeader(b, "x", &d).ok());
  EXPECT_EQ(d.flags, h.flags);
  EXPECT_EQ(d.index_offset, h.index_offset);
  EXPECT_EQ(d.virtual_size, h.virtual_size);
  EXPECT_EQ(d.uuid, h.uuid);
  EXPECT_EQ(d.parent_uuid, h.parent_uuid);
  EXPECT_EQ(d.user_tag, h.user_tag);
  EXPECT_TRUE(IsValidUuid(h.uuid));
}

TEST(LsmtWriter, RawImageRoundTripSkipsZeroBlocks) {
  test::TempDir dir;
  Env* env = Env::Default();
  std::mt19937_64 rng(1);
  const size_t size = (8 << 20) + 1000;  // not a multiple of 512: padded
  std::vector<char> raw(size, 0);
  // Data in some blocks, a long run crossing the 16320-sector entry limit.
  for (size_t off : {size_t{0}, size_t{4096 * 3}, size_t{1 << 20}}) {
    auto r = test::RandomBytes(rng, 4096);
    std::memcpy(raw.data() + off, r.data(), r.size());
  }
  auto big = test::RandomBytes(rng, 9 << 19);  // 4.5 MiB = 9216 sectors
  std::memcpy(raw.data() + (2 << 20), big.data(), big.size());
  raw[size - 1] = 1;
  ASSERT_TRUE(test::WriteWholeFile(env, dir.Sub("raw"), raw).ok());
  auto in = env->OpenReadable(dir.Sub("raw"));
  auto out = env->OpenRW(dir.Sub("layer"), true);
  ASSERT_TRUE(in.ok() && out.ok());
  WriteOptions wo;
  wo.message = "test";
  ASSERT_TRUE(CreateFromRaw(*in.value(), out.value().get(), wo).ok());
  auto layer = OpenLayer(env, dir.Sub("layer"));
  ASSERT_TRUE(layer.ok()) << layer.status().ToString();
  EXPECT_EQ(layer.value()->virtual_size(), (size + 511) / 512 * 512);
  EXPECT_EQ(layer.value()->padding_entries() + layer.value()->segments().size(), 256u);
  uint64_t mapped = 0;
  for (const auto& s : layer.value()->segments()) {
    EXPECT_LE(s.length, kWriterMaxEntryLength);
    mapped += s.length;
  }
  // Only the non-zero 4 KiB blocks are stored.
  // The last, partial block is stored only up to the padded virtual size.
  EXPECT_EQ(mapped * 512, 3 * 4096 + big.size() + 1024);
  // Content: read back through the index.
  std::vector<char> back(size, 0);
  for (const auto& s : layer.value()->segments()) {
    uint64_t n = std::min<uint64_t>(s.length * 512, size - s.offset * 512);
    ASSERT_TRUE(layer.value()->ReadData(s.moffset * 512, n, back.data() + s.offset * 512).ok());
  }
  EXPECT_EQ(back, raw);
}

TEST(LsmtWriter, RejectsOutOfOrderAndUnaligned) {
  test::TempDir dir;
  auto out = Env::Default()->OpenRW(dir.Sub("l"), true);
  ASSERT_TRUE(out.ok());
  WriteOptions wo;
  wo.virtual_size = 1 << 20;
  Writer w(out.value().get(), wo);
  std::vector<char> d(4096, 1);
  ASSERT_TRUE(w.AddData(8192, d.data(), d.size()).ok());
  EXPECT_FALSE(w.AddData(0, d.data(), d.size()).ok());
  EXPECT_FALSE(w.AddData(20000, d.data(), 100).ok());
  EXPECT_FALSE(w.AddData(1 << 20, d.data(), d.size()).ok());
}

// --- Hostile input: each gives a clear error, never a crash or a huge allocation.

TEST(LsmtHostile, TruncatedAtEveryInterestingLength) {
  std::string good = BuildLayer({{0, 8, 8, false, 0}}, 1 << 20, 8);
  ASSERT_TRUE(OpenMem(good).ok());
  for (size_t len : {size_t{0}, size_t{100}, size_t{4095}, size_t{4096}, size_t{8191},
                     good.size() - 4096, good.size() - 1}) {
    auto r = OpenMem(good.substr(0, len));
    EXPECT_FALSE(r.ok()) << len;
    EXPECT_TRUE(r.status().IsCorruption()) << len << ": " << r.status().ToString();
  }
}

TEST(LsmtHostile, WrongMagics) {
  std::string f = BuildLayer({}, 1 << 20, 0);
  std::string a = f, b = f, c = f;
  a[0] = 'X';
  b[10] ^= 1;
  c[c.size() - 4096 + 3] = 'Q';  // trailer magic
  for (auto* s : {&a, &b, &c}) {
    auto r = OpenMem(*s);
    ASSERT_FALSE(r.ok());
    EXPECT_NE(r.status().message().find("LSMT"), std::string::npos) << r.status().ToString();
  }
}

TEST(LsmtHostile, IndexOutsideFile) {
  std::string f = BuildLayer({{0, 8, 8, false, 0}}, 1 << 20, 8);
  Header t;
  ASSERT_TRUE(DecodeHeader(f.data() + f.size() - 4096, "t", &t).ok());
  for (uint64_t off : {uint64_t{0}, uint64_t{1} << 40, uint64_t{f.size()}}) {
    t.index_offset = off;
    std::string g = f;
    EncodeHeader(t, g.data() + g.size() - 4096);
    auto r = OpenMem(g);
    EXPECT_FALSE(r.ok()) << off;
  }
}

TEST(LsmtHostile, HugeIndexCountIsRefusedWithoutAllocating) {
  std::string f = BuildLayer({}, 1 << 20, 0, /*index_size_override=*/uint64_t{1} << 40);
  auto r = OpenMem(f);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kTooLarge) << r.status().ToString();
  // Just over the limit overlaybd enforces.
  f = BuildLayer({}, 1 << 20, 0, kMaxReadOnlyEntries + 1);
  r = OpenMem(f);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kTooLarge);
}

TEST(LsmtHostile, BadEntries) {
  const uint64_t vs = 1 << 20;  // 2048 sectors
  struct Case {
    const char* what;
    std::vector<Entry> entries;
  } cases[] = {
      {"overlap", {{0, 16, 8, false, 0}, {8, 8, 8, false, 0}}},
      {"unsorted", {{100, 8, 8, false, 0}, {0, 8, 8, false, 0}}},
      {"past virtual size", {{2040, 16, 8, false, 0}}},
      {"data before header", {{0, 8, 0, false, 0}}},
      {"data past index", {{0, 8, 12, false, 0}}},
      {"zero length", {{0, 0, 8, false, 0}}},
  };
  for (const auto& c : cases) {
    auto r = OpenMem(BuildLayer(c.entries, vs, 8));
    EXPECT_FALSE(r.ok()) << c.what;
    EXPECT_TRUE(r.status().IsCorruption()) << c.what << ": " << r.status().ToString();
  }
  // Zeroed entries carry no data, so their moffset is not checked.
  EXPECT_TRUE(OpenMem(BuildLayer({{0, 8, 999999, true, 0}}, vs, 0)).ok());
}

TEST(LsmtHostile, RandomCorruptionNeverCrashes) {
  std::mt19937_64 rng(7);
  std::string good = BuildLayer({{0, 8, 8, false, 0}, {16, 4, 16, false, 0}}, 1 << 20, 16);
  for (int i = 0; i < 2000; ++i) {
    std::string f = good;
    int flips = 1 + static_cast<int>(rng() % 8);
    for (int k = 0; k < flips; ++k) f[rng() % f.size()] ^= static_cast<char>(1 + rng() % 255);
    auto r = OpenMem(f);
    if (r.ok()) {
      for (const auto& s : r.value()->segments()) {
        EXPECT_LE(s.end(), (uint64_t{1} << 20) / 512);
      }
    }
  }
}

}  // namespace
}  // namespace ovbd::lsmt
