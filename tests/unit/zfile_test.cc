// ZFile reader and writer: the overlaybd reference fixtures, round trips,
// byte-exact reproduction of overlaybd's output, concurrency and hostile input.
#include "ovbd/layer/zfile.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "ovbd/io/coding.h"
#include "ovbd/io/crc32c.h"
#include "ovbd/io/env.h"
#include "mem_file.h"
#include "test_util.h"

namespace ovbd::zfile {
namespace {

const std::string kDir = std::string(OVBD_TEST_DATA) + "/overlaybd/64MiB/";

// A ReadableFile over bytes in memory.
using test::MemFile;

std::string ReadWholeFile(const std::string& path) {
  auto f = Env::Default()->OpenReadable(path);
  EXPECT_TRUE(f.ok()) << f.status().ToString();
  if (!f.ok()) return {};
  std::string out((*f)->Size(), '\0');
  Status s = (*f)->ReadExact(0, out.size(), out.data());
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

// Reads all of f with ReadAt calls of `chunk` bytes, checking short reads
// happen only at the end.
Result<std::string> ReadAllVia(const ReadableFile& f, size_t chunk) {
  std::string out;
  std::vector<char> buf(chunk);
  uint64_t off = 0;
  for (;;) {
    size_t got = 0;
    OVBD_RETURN_IF_ERROR(f.ReadAt(off, chunk, buf.data(), &got));
    out.append(buf.data(), got);
    off += got;
    if (got < chunk) break;
  }
  if (out.size() != f.Size()) return Status::Corruption("size mismatch");
  return out;
}

Result<std::unique_ptr<Reader>> OpenMem(std::string bytes, size_t cache = 16) {
  return Reader::Open(std::make_shared<MemFile>(std::move(bytes)), cache);
}

using test::TempDir;

// Compresses `src` into a new file in `dir` and returns the file's bytes.
std::string Compress(const TempDir& dir, const std::string& name, const ReadableFile& src,
                     const Options& o, const ProgressFn& progress = nullptr) {
  const std::string path = dir.Sub(name);
  {
    auto dst = Env::Default()->OpenRW(path, /*create=*/true);
    EXPECT_TRUE(dst.ok()) << dst.status().ToString();
    if (!dst.ok()) return {};
    Status s = Write(src, dst->get(), o, progress);
    EXPECT_TRUE(s.ok()) << s.ToString();
  }
  return ReadWholeFile(path);
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(rng());
  return s;
}

// Text-like, compressible, with some runs of zeros and random stretches.
std::string MixedBytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  static const char* kWords[] = {"overlay ", "block ",  "device ", "layer ",  "zfile ",
                                 "lz4 ",     "zstd ",   "sector ", "extent ", "\n"};
  std::string s;
  s.reserve(n);
  while (s.size() < n) {
    const int kind = static_cast<int>(rng() % 10);
    const size_t len = std::min<size_t>(n - s.size(), 1 + rng() % 9000);
    if (kind < 6) {
      while (s.size() < n && len > 0) {
        s += kWords[rng() % 10];
        if (s.size() > n) s.resize(n);
        if (rng() % 97 == 0) break;
      }
    } else if (kind < 8) {
      s.append(len, '\0');
    } else {
      for (size_t i = 0; i < len; ++i) s.push_back(static_cast<char>(rng()));
    }
  }
  s.resize(n);
  return s;
}

// ---- Header patching helpers for hostile-input tests ----

uint32_t Digest(const char* ht) {
  std::string copy(ht, 512);
  std::memset(copy.data() + 28, 0, 4);
  return Crc32cRaw(0, copy.data(), 512);
}
void FixDigest(std::string* f, size_t base) {
  EncodeU32(f->data() + base + 28, Digest(f->data() + base));
}
// Sets a field (width 1, 4 or 8) at `off` in both header and trailer and
// recomputes their digests.
void PatchBoth(std::string* f, size_t off, uint64_t v, int width) {
  for (size_t base : {size_t{0}, f->size() - 512}) {
    char* p = f->data() + base + off;
    if (width == 8) EncodeU64(p, v);
    else if (width == 4) EncodeU32(p, static_cast<uint32_t>(v));
    else p[0] = static_cast<char>(v);
    FixDigest(f, base);
  }
}
uint64_t IndexOffset(const std::string& f) { return DecodeU64(f.data() + 40); }
uint64_t IndexCount(const std::string& f) { return DecodeU64(f.data() + 48); }
uint64_t BlockOffset(const std::string& f, uint64_t block) {
  uint64_t off = 512;
  for (uint64_t i = 0; i < block; ++i) off += DecodeU32(f.data() + IndexOffset(f) + 4 * i);
  return off;
}
void RecomputeIndexCrc(std::string* f) {
  const uint32_t crc = Crc32cRaw(0, f->data() + IndexOffset(*f), 4 * IndexCount(*f));
  PatchBoth(f, 64, crc, 4);
}

// ---- Fixtures ----

// A parameterised case's name: its zfile's file name, with every character
// gtest does not allow in a name turned into '_'.
template <class Case>
std::string NamedByZFile(const ::testing::TestParamInfo<Case>& i) {
  std::string n = i.param.zfile;
  for (char& ch : n)
    if (!isalnum(static_cast<unsigned char>(ch))) ch = '_';
  return n;
}

struct FixtureCase {
  const char* zfile;
  const char* plain;
  uint32_t block_size;
  Algo algo;
  uint64_t header_flags;
};

class FixtureTest : public ::testing::TestWithParam<FixtureCase> {};

TEST_P(FixtureTest, DecodesToTheUncompressedLayer) {
  const FixtureCase& c = GetParam();
  const std::string want = ReadWholeFile(kDir + c.plain);
  ASSERT_FALSE(want.empty());
  auto base = Env::Default()->OpenReadable(kDir + c.zfile);
  ASSERT_TRUE(base.ok()) << base.status().ToString();
  std::shared_ptr<const ReadableFile> shared(std::move(*base));
  auto is = IsZFile(*shared);
  ASSERT_TRUE(is.ok());
  EXPECT_TRUE(*is);

  auto r = Reader::Open(shared, 64);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const Info& info = (*r)->info();
  EXPECT_EQ(info.block_size, c.block_size);
  EXPECT_EQ(info.algo, c.algo);
  EXPECT_TRUE(info.verify);
  EXPECT_EQ(info.header_flags, c.header_flags);
  EXPECT_EQ(info.trailer_flags, 0x16u);
  EXPECT_EQ(info.header_has_index, (c.header_flags & 8) != 0);
  EXPECT_EQ(info.original_size, want.size());
  EXPECT_EQ(info.num_blocks, (want.size() + c.block_size - 1) / c.block_size);
  EXPECT_EQ(info.index_offset + 4 * info.num_blocks + 512, shared->Size());
  EXPECT_EQ((*r)->Size(), want.size());
  EXPECT_EQ((*r)->NativeFd(), -1);
  EXPECT_EQ((*r)->Name(), shared->Name());

  for (size_t chunk : {size_t{1} << 20, size_t{131072 + 4095}}) {
    auto got = ReadAllVia(**r, chunk);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    EXPECT_TRUE(*got == want) << c.zfile << " differs from " << c.plain << " (chunk " << chunk
                              << ")";
  }
  uint64_t last_done = 0;
  Status s = (*r)->CheckAllBlocks([&](uint64_t done, uint64_t total) {
    EXPECT_GE(done, last_done);
    EXPECT_EQ(total, want.size());
    last_done = done;
  });
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(last_done, want.size());

  // Without a cache too.
  auto r0 = Reader::Open(shared, 0);
  ASSERT_TRUE(r0.ok());
  auto got0 = ReadAllVia(**r0, 3 * 4096 + 100);
  ASSERT_TRUE(got0.ok()) << got0.status().ToString();
  EXPECT_TRUE(*got0 == want);
}

INSTANTIATE_TEST_SUITE_P(
    Overlaybd, FixtureTest,
    ::testing::Values(FixtureCase{"l1.lz4.zfile", "l1.lsmt", 4096, Algo::kLz4, 0x1b},
                      FixtureCase{"l1.zstd.zfile", "l1.lsmt", 4096, Algo::kZstd, 0x1b},
                      FixtureCase{"l1.lz4-bs32k.zfile", "l1.lsmt", 32768, Algo::kLz4, 0x1b},
                      FixtureCase{"l1.lz4-bs64k.zfile", "l1.lsmt", 65536, Algo::kLz4, 0x1b},
                      FixtureCase{"l1.lsmt.ovbdzfile-lz4", "l1.lsmt", 4096, Algo::kLz4, 0x13},
                      FixtureCase{"l2.lz4.zfile", "l2.lsmt", 4096, Algo::kLz4, 0x1b},
                      FixtureCase{"l2.zstd.zfile", "l2.lsmt", 4096, Algo::kZstd, 0x1b}),
    NamedByZFile<FixtureCase>);

TEST(ZFileFixture, PlainLayersAreNotZFiles) {
  for (const char* name : {"l1.lsmt", "l2.lsmt", "l2.sealed"}) {
    auto f = Env::Default()->OpenReadable(kDir + name);
    ASSERT_TRUE(f.ok());
    auto is = IsZFile(**f);
    ASSERT_TRUE(is.ok());
    EXPECT_FALSE(*is) << name;
    std::shared_ptr<const ReadableFile> shared(std::move(*f));
    auto r = Reader::Open(shared);
    ASSERT_FALSE(r.ok());
    EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
  }
  MemFile tiny("ZFi");
  auto is = IsZFile(tiny);
  ASSERT_TRUE(is.ok());
  EXPECT_FALSE(*is);
}

// The 64 KiB-block fixture holds a block that compresses to more than 64 KiB.
TEST(ZFileFixture, Bs64kHasABlockLargerThanTheBlockSize) {
  const std::string f = ReadWholeFile(kDir + "l1.lz4-bs64k.zfile");
  uint32_t max_len = 0;
  for (uint64_t i = 0; i < IndexCount(f); ++i)
    max_len = std::max(max_len, DecodeU32(f.data() + IndexOffset(f) + 4 * i));
  EXPECT_EQ(max_len, 65798u);  // 65794 compressed bytes + 4-byte CRC
}

// ---- Byte-exact reproduction of overlaybd-commit -z output ----

struct ReproCase {
  const char* plain;
  const char* zfile;
  uint32_t block_size;
  Algo algo;
};

class ReproduceTest : public ::testing::TestWithParam<ReproCase> {};

TEST_P(ReproduceTest, MatchesOverlaybd) {
  const ReproCase& c = GetParam();
  TempDir dir;
  auto src = Env::Default()->OpenReadable(kDir + c.plain);
  ASSERT_TRUE(src.ok());
  Options o;
  o.block_size = c.block_size;
  o.algo = c.algo;
  o.verify = true;
  const std::string ours = Compress(dir, "out.zfile", **src, o);
  const std::string theirs = ReadWholeFile(kDir + c.zfile);
  if (c.algo == Algo::kLz4) {
    // LZ4_compress_default is deterministic across lz4 releases in use, so
    // the whole file must be identical: header, blocks, CRCs, index, trailer.
    ASSERT_EQ(ours.size(), theirs.size());
    EXPECT_TRUE(ours == theirs) << "first difference at byte "
                                << (std::mismatch(ours.begin(), ours.end(), theirs.begin()).first -
                                    ours.begin());
  } else {
    // zstd output depends on the library version: compare the structure.
    // (With libzstd 1.5.4 the output is byte-identical as well; this is
    // reported below as a note, not required.)
    ASSERT_GE(ours.size(), 1024u);
    EXPECT_EQ(ours.substr(0, 24), theirs.substr(0, 24));
    EXPECT_EQ(DecodeU64(ours.data() + 32), DecodeU64(theirs.data() + 32));  // flags
    EXPECT_EQ(IndexCount(ours), IndexCount(theirs));
    EXPECT_EQ(DecodeU64(ours.data() + 56), DecodeU64(theirs.data() + 56));  // original size
    EXPECT_EQ(ours.substr(72, 24), theirs.substr(72, 24));                 // options
    std::printf("zstd byte-identical to %s: %s\n", c.zfile, ours == theirs ? "yes" : "no");
  }
  auto r = OpenMem(ours);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE((*r)->CheckAllBlocks().ok());
}

INSTANTIATE_TEST_SUITE_P(
    Overlaybd, ReproduceTest,
    ::testing::Values(ReproCase{"l2.lsmt", "l2.lz4.zfile", 4096, Algo::kLz4},
                      ReproCase{"l1.lsmt", "l1.lz4.zfile", 4096, Algo::kLz4},
                      ReproCase{"l1.lsmt", "l1.lz4-bs32k.zfile", 32768, Algo::kLz4},
                      ReproCase{"l1.lsmt", "l1.lz4-bs64k.zfile", 65536, Algo::kLz4},
                      ReproCase{"l2.lsmt", "l2.zstd.zfile", 4096, Algo::kZstd},
                      ReproCase{"l1.lsmt", "l1.zstd.zfile", 4096, Algo::kZstd}),
    NamedByZFile<ReproCase>);

// ---- Round trips ----

struct RoundTripCase {
  Algo algo;
  uint32_t block_size;
  bool verify;
  int level;
};

class RoundTripTest : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(RoundTripTest, SizesAndContents) {
  const RoundTripCase& c = GetParam();
  TempDir dir;
  const uint64_t bs = c.block_size;
  const std::vector<uint64_t> sizes = {0, 1, bs - 1, bs, bs + 1, 3 * bs + 17, 700000};
  int k = 0;
  for (uint64_t size : sizes) {
    for (int kind = 0; kind < 2; ++kind) {
      SCOPED_TRACE("size " + std::to_string(size) + (kind ? " random" : " mixed"));
      const std::string data = kind ? RandomBytes(size, 7 + k) : MixedBytes(size, 11 + k);
      MemFile src(data, "src");
      Options o;
      o.algo = c.algo;
      o.block_size = c.block_size;
      o.verify = c.verify;
      o.level = c.level;
      std::vector<uint64_t> progress;
      const std::string z = Compress(dir, "rt" + std::to_string(k++), src, o,
                                     [&](uint64_t done, uint64_t total) {
                                       EXPECT_EQ(total, size);
                                       progress.push_back(done);
                                     });
      ASSERT_GE(z.size(), 1024u);
      EXPECT_TRUE(std::is_sorted(progress.begin(), progress.end()));
      if (size > 0) {
        ASSERT_FALSE(progress.empty());
        EXPECT_EQ(progress.back(), size);
      }
      EXPECT_EQ(DecodeU64(z.data() + 32), 0x1bu);
      EXPECT_EQ(DecodeU64(z.data() + z.size() - 512 + 32), 0x16u);
      EXPECT_EQ(DecodeU32(z.data() + 24), 96u);

      auto r = OpenMem(z, 8);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      EXPECT_EQ((*r)->Size(), size);
      EXPECT_EQ((*r)->info().num_blocks, (size + bs - 1) / bs);
      EXPECT_EQ((*r)->info().verify, c.verify);
      EXPECT_EQ((*r)->info().level, c.level);
      for (size_t chunk : {size_t{4096}, size_t{1000}, size_t{1} << 20}) {
        auto got = ReadAllVia(**r, chunk);
        ASSERT_TRUE(got.ok()) << got.status().ToString();
        EXPECT_TRUE(*got == data);
      }
      EXPECT_TRUE((*r)->CheckAllBlocks().ok());
      // A read-once scan (hydration) gives the same bytes, at any alignment.
      for (uint64_t from : {uint64_t{0}, uint64_t{1}, bs - 1, bs, bs + 7}) {
        if (from >= size) continue;
        std::vector<char> once(size - from);
        Status s = (*r)->ReadMappedOnce(from, once.size(), once.data());
        ASSERT_TRUE(s.ok()) << s.ToString();
        EXPECT_TRUE(std::string(once.data(), once.size()) == data.substr(from));
        EXPECT_FALSE((*r)->ReadMappedOnce(from, once.size() + 1, once.data()).ok());
      }
      // Reads past the end are short, at the end empty.
      char b[64];
      size_t got = 99;
      ASSERT_TRUE((*r)->ReadAt(size, sizeof b, b, &got).ok());
      EXPECT_EQ(got, 0u);
      ASSERT_TRUE((*r)->ReadAt(size + 12345, sizeof b, b, &got).ok());
      EXPECT_EQ(got, 0u);
      if (size >= 10) {
        ASSERT_TRUE((*r)->ReadAt(size - 10, sizeof b, b, &got).ok());
        EXPECT_EQ(got, 10u);
        EXPECT_EQ(std::string(b, 10), data.substr(size - 10));
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, RoundTripTest,
                         ::testing::Values(RoundTripCase{Algo::kLz4, 4096, true, 0},
                                           RoundTripCase{Algo::kLz4, 32768, true, 0},
                                           RoundTripCase{Algo::kLz4, 65536, true, 0},
                                           RoundTripCase{Algo::kLz4, 4096, false, 0},
                                           RoundTripCase{Algo::kLz4, 8192, true, 9},
                                           RoundTripCase{Algo::kZstd, 4096, true, 0},
                                           RoundTripCase{Algo::kZstd, 32768, true, 0},
                                           RoundTripCase{Algo::kZstd, 65536, false, 0},
                                           RoundTripCase{Algo::kZstd, 16384, true, 19}));

TEST(ZFileWrite, RejectsBadOptionsAndNonEmptyDestination) {
  TempDir dir;
  MemFile src("hello");
  auto dst = Env::Default()->OpenRW(dir.Sub("x"), true);
  ASSERT_TRUE(dst.ok());
  for (uint32_t bs : {0u, 2048u, 4095u, 12288u, 131072u}) {
    Options o;
    o.block_size = bs;
    EXPECT_EQ(Write(src, dst->get(), o).code(), Status::Code::kInvalidArgument) << bs;
  }
  Options o;
  o.algo = static_cast<Algo>(3);
  EXPECT_EQ(Write(src, dst->get(), o).code(), Status::Code::kInvalidArgument);
  o = Options();
  o.level = -1;
  EXPECT_EQ(Write(src, dst->get(), o).code(), Status::Code::kInvalidArgument);
  ASSERT_TRUE((*dst)->WriteAt(0, "x", 1).ok());
  EXPECT_EQ(Write(src, dst->get(), Options()).code(), Status::Code::kInvalidArgument);
}

// ---- Concurrency ----

TEST(ZFileConcurrency, ParallelRandomReads) {
  const std::string data = MixedBytes(3 << 20, 99) + RandomBytes(300000, 5);
  TempDir dir;
  for (Algo algo : {Algo::kLz4, Algo::kZstd}) {
    Options o;
    o.algo = algo;
    o.block_size = 8192;
    MemFile src(data);
    const std::string z = Compress(dir, algo == Algo::kLz4 ? "c.lz4" : "c.zstd", src, o);
    for (size_t cache : {size_t{0}, size_t{3}, size_t{256}}) {
      auto r = OpenMem(z, cache);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      const Reader& reader = **r;
      std::atomic<int> failures{0};
      std::vector<std::thread> threads;
      for (int t = 0; t < 6; ++t) {
        threads.emplace_back([&, t] {
          std::mt19937_64 rng(1000 + t);
          std::vector<char> buf(300000);
          for (int i = 0; i < 150; ++i) {
            const uint64_t off = rng() % (data.size() + 1000);
            const size_t n = 1 + rng() % (i % 5 == 0 ? buf.size() : 9000);
            size_t got = 0;
            Status s = reader.ReadAt(off, n, buf.data(), &got);
            const size_t want = off >= data.size() ? 0 : std::min<size_t>(n, data.size() - off);
            if (!s.ok() || got != want || std::memcmp(buf.data(), data.data() + off, got) != 0)
              ++failures;
          }
        });
      }
      for (auto& th : threads) th.join();
      EXPECT_EQ(failures.load(), 0) << "cache " << cache;
    }
  }
}

// ---- Hostile input ----

class ZFileHostile : public ::testing::Test {
 protected:
  void SetUp() override {
    good_ = ReadWholeFile(kDir + "l2.lz4.zfile");
    plain_ = ReadWholeFile(kDir + "l2.lsmt");
    ASSERT_EQ(good_.size(), 35552u);
  }
  std::string good_;
  std::string plain_;
};

TEST_F(ZFileHostile, TruncatedAtManyLengths) {
  std::vector<size_t> lens = {0, 1, 23, 24, 100, 511, 512, 513, 1023, 1024, 1025};
  for (size_t l = 1100; l < good_.size(); l += 331) lens.push_back(l);
  for (size_t l = good_.size() - 600; l < good_.size(); ++l) lens.push_back(l);
  for (size_t l : lens) {
    auto r = OpenMem(good_.substr(0, l));
    EXPECT_FALSE(r.ok()) << "length " << l;
    if (!r.ok()) {
      EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
    }
  }
  // Cut the tail but keep a valid trailer: the index no longer fits.
  std::string cut = good_.substr(0, 20000) + good_.substr(good_.size() - 512);
  auto r = OpenMem(cut);
  ASSERT_FALSE(r.ok());
  EXPECT_TRUE(r.status().IsCorruption());
}

TEST_F(ZFileHostile, EveryHeaderAndTrailerByteFlipIsCaught) {
  for (size_t base : {size_t{0}, good_.size() - 512}) {
    for (size_t i = 0; i < 512; ++i) {
      std::string f = good_;
      f[base + i] ^= static_cast<char>(0x5a);
      auto r = OpenMem(std::move(f));
      ASSERT_FALSE(r.ok()) << "flip at " << base + i;
      EXPECT_TRUE(r.status().IsCorruption() ||
                  r.status().code() == Status::Code::kNotSupported)
          << r.status().ToString();
      // Past the magic every byte is covered by the digest, except that a
      // flip clearing the digest flag itself (flags byte at 32) turns the
      // structure into the old, digest-less format: it is still refused,
      // by the flag checks.
      if (i >= 24 && i != 32) {
        EXPECT_NE(r.status().message().find("digest"), std::string::npos)
            << r.status().ToString();
      }
    }
  }
}

TEST_F(ZFileHostile, WrongMagic) {
  std::string f = good_;
  f[3] = 'X';
  auto is = IsZFile(MemFile(f));
  ASSERT_TRUE(is.ok());
  EXPECT_FALSE(*is);
  auto r = OpenMem(f);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("magic"), std::string::npos) << r.status().ToString();
  // magic1 too, with the digest fixed up.
  f = good_;
  f[20] = 'X';
  FixDigest(&f, 0);
  r = OpenMem(f);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("magic"), std::string::npos);
  // A good header in front of a trailer with a bad magic.
  f = good_;
  f[f.size() - 512 + 1] = 'x';
  r = OpenMem(f);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("trailer"), std::string::npos);
}

TEST_F(ZFileHostile, IndexOffsetBeyondFile) {
  for (uint64_t off : {uint64_t{good_.size()}, uint64_t{good_.size()} - 511, uint64_t{1} << 62,
                       ~uint64_t{0}, uint64_t{100}, uint64_t{0}}) {
    std::string f = good_;
    PatchBoth(&f, 40, off, 8);
    auto r = OpenMem(f);
    ASSERT_FALSE(r.ok()) << off;
    EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
  }
}

TEST_F(ZFileHostile, HugeBlockCountsAndSizes) {
  for (uint64_t n : {uint64_t{1} << 40, ~uint64_t{0}, uint64_t{1} << 29, uint64_t{29},
                     uint64_t{27}, uint64_t{0}}) {
    std::string f = good_;
    PatchBoth(&f, 48, n, 8);
    auto r = OpenMem(f);
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
    // With a matching original size as well.
    PatchBoth(&f, 56, n * 4096, 8);
    r = OpenMem(f);
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
  }
  for (uint64_t size : {uint64_t{0}, uint64_t{111104} + 4096, ~uint64_t{0}}) {
    std::string f = good_;
    PatchBoth(&f, 56, size, 8);
    auto r = OpenMem(f);
    ASSERT_FALSE(r.ok()) << size;
  }
  // The last block may be short: an original size one byte less still has
  // 28 blocks, and the decompressed last block is then too long.
  std::string f = good_;
  PatchBoth(&f, 56, 111104 - 1, 8);
  auto r = OpenMem(f);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  Status s = (*r)->CheckAllBlocks();
  ASSERT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("block 27"), std::string::npos) << s.ToString();
}

TEST_F(ZFileHostile, BadOptions) {
  struct P {
    size_t off;
    uint64_t v;
    int width;
    Status::Code code;
  };
  const P cases[] = {
      {72, 4095, 4, Status::Code::kCorruption},     {72, 8192, 4, Status::Code::kCorruption},
      {72, 2048, 4, Status::Code::kCorruption},     {72, 131072, 4, Status::Code::kCorruption},
      {72, 0, 4, Status::Code::kCorruption},        {76, 0, 1, Status::Code::kNotSupported},
      {76, 3, 1, Status::Code::kNotSupported},      {78, 1, 1, Status::Code::kNotSupported},
      {88, 2, 1, Status::Code::kCorruption},        {84, 1u << 31, 4, Status::Code::kCorruption},
      {32, 0x1b | 0x20, 8, Status::Code::kNotSupported},
      {32, 0x1b | 0x100, 8, Status::Code::kNotSupported},
      {24, 12, 4, Status::Code::kCorruption},
  };
  for (const P& p : cases) {
    std::string f = good_;
    PatchBoth(&f, p.off, p.v, p.width);
    auto r = OpenMem(f);
    ASSERT_FALSE(r.ok()) << p.off << "=" << p.v;
    EXPECT_EQ(r.status().code(), p.code) << r.status().ToString();
  }
  // verify=0 on a file that has CRCs: the stored lengths still add up, but
  // each block then carries 4 trailing bytes that break decompression.
  std::string f = good_;
  PatchBoth(&f, 88, 0, 1);
  auto r = OpenMem(f);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE((*r)->CheckAllBlocks().IsCorruption());
}

TEST_F(ZFileHostile, FlagsAndHeaderTrailerAgreement) {
  const size_t t = good_.size() - 512;
  auto open_with = [&](size_t base, size_t off, uint64_t v, int width) {
    std::string f = good_;
    char* p = f.data() + base + off;
    if (width == 8) EncodeU64(p, v);
    else if (width == 4) EncodeU32(p, static_cast<uint32_t>(v));
    else *p = static_cast<char>(v);
    FixDigest(&f, base);
    return OpenMem(f);
  };
  // Trailer not sealed, trailer marked as header, header marked as trailer.
  EXPECT_FALSE(open_with(t, 32, 0x12, 8).ok());
  EXPECT_FALSE(open_with(t, 32, 0x17, 8).ok());
  EXPECT_FALSE(open_with(0, 32, 0x1a, 8).ok());
  // An index-type file.
  EXPECT_FALSE(open_with(0, 32, 0x19, 8).ok());
  // Header claims the index but disagrees with the trailer.
  EXPECT_FALSE(open_with(0, 48, 27, 8).ok());
  EXPECT_FALSE(open_with(0, 64, 1, 4).ok());
  EXPECT_FALSE(open_with(t, 72, 8192, 4).ok());
  // Header without bit 3 and zero index fields: the trailer is used.
  std::string f = good_;
  EncodeU64(f.data() + 32, 0x13);
  for (size_t off : {40, 48, 56}) EncodeU64(f.data() + off, 0);
  EncodeU32(f.data() + 64, 0);
  FixDigest(&f, 0);
  auto r = OpenMem(f);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_FALSE((*r)->info().header_has_index);
  auto got = ReadAllVia(**r, 65536);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(*got == plain_);
  // A legacy file without the digest flag (digest field zero) is accepted.
  f = good_;
  for (size_t base : {size_t{0}, t}) {
    EncodeU64(f.data() + base + 32, DecodeU64(f.data() + base + 32) & ~uint64_t{0x10});
    EncodeU32(f.data() + base + 28, 0);
  }
  r = OpenMem(f);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  // ... but a digest flag cleared with the digest left in place is not.
  f = good_;
  EncodeU64(f.data() + 32, 0x0b);
  EXPECT_FALSE(OpenMem(f).ok());
}

TEST_F(ZFileHostile, CorruptBlockNamesTheBlock) {
  for (bool crc_bytes : {false, true}) {
    std::string f = good_;
    const uint64_t off = BlockOffset(f, 5);
    const uint32_t len = DecodeU32(f.data() + IndexOffset(f) + 4 * 5);
    f[off + (crc_bytes ? len - 2 : len / 2)] ^= 1;
    for (size_t cache : {size_t{0}, size_t{16}}) {
      auto r = OpenMem(f, cache);
      ASSERT_TRUE(r.ok()) << r.status().ToString();
      std::vector<char> buf(plain_.size());
      size_t got = 0;
      Status s = (*r)->ReadAt(0, buf.size(), buf.data(), &got);
      ASSERT_TRUE(s.IsCorruption()) << s.ToString();
      EXPECT_NE(s.message().find("mem.zfile: block 5 at offset " + std::to_string(off)),
                std::string::npos)
          << s.ToString();
      EXPECT_NE(s.message().find("checksum"), std::string::npos) << s.ToString();
      s = (*r)->CheckAllBlocks();
      ASSERT_TRUE(s.IsCorruption());
      EXPECT_NE(s.message().find("block 5 "), std::string::npos) << s.ToString();
      // Blocks around it still read fine.
      ASSERT_TRUE((*r)->ReadAt(0, 5 * 4096, buf.data(), &got).ok());
      EXPECT_EQ(std::string(buf.data(), got), plain_.substr(0, 5 * 4096));
      ASSERT_TRUE((*r)->ReadAt(6 * 4096, 4096, buf.data(), &got).ok());
      EXPECT_EQ(std::string(buf.data(), got), plain_.substr(6 * 4096, 4096));
      ASSERT_TRUE((*r)->ReadAt(5 * 4096 + 100, 10, buf.data(), &got).IsCorruption());
      s = (*r)->ReadMappedOnce(4 * 4096, 3 * 4096, buf.data());
      ASSERT_TRUE(s.IsCorruption()) << s.ToString();
      EXPECT_NE(s.message().find("block 5 "), std::string::npos) << s.ToString();
    }
  }
}

// A file that counts the reads that reach it.
class CountingFile final : public ReadableFile {
 public:
  explicit CountingFile(std::string bytes) : f_(std::move(bytes), "counted.zfile") {}
  Status ReadAt(uint64_t off, size_t n, char* buf, size_t* got) const override {
    ++reads;
    return f_.ReadAt(off, n, buf, got);
  }
  uint64_t Size() const override { return f_.Size(); }
  const std::string& Name() const override { return f_.Name(); }
  mutable int reads = 0;

 private:
  MemFile f_;
};

TEST_F(ZFileHostile, AReadOnceScanNeitherUsesNorFillsTheBlockCache) {
  auto base = std::make_shared<CountingFile>(good_);
  auto r = Reader::Open(base, 64);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::vector<char> buf(8 * 4096);
  // A scan of blocks 0..7 leaves nothing cached: a read of them reaches the
  // file again.
  ASSERT_TRUE((*r)->ReadMappedOnce(0, buf.size(), buf.data()).ok());
  EXPECT_EQ(std::string(buf.data(), buf.size()), plain_.substr(0, buf.size()));
  const int after_scan = base->reads;
  size_t got = 0;
  ASSERT_TRUE((*r)->ReadAt(0, buf.size(), buf.data(), &got).ok());
  EXPECT_GT(base->reads, after_scan);
  // Now cached for foreground reads: those hit the cache, the scan does not.
  const int cached = base->reads;
  ASSERT_TRUE((*r)->ReadAt(0, buf.size(), buf.data(), &got).ok());
  EXPECT_EQ(base->reads, cached);
  ASSERT_TRUE((*r)->ReadMappedOnce(0, buf.size(), buf.data()).ok());
  EXPECT_GT(base->reads, cached);
  EXPECT_EQ(std::string(buf.data(), buf.size()), plain_.substr(0, buf.size()));
}

TEST_F(ZFileHostile, CorruptBlockWithMatchingCrcFailsDecompression) {
  // Damage the compressed bytes of block 3 (4 KiB of zeros: 26 bytes of lz4,
  // 19 of zstd) and recompute its CRC: only the decompressor's own checks
  // and the exact-size check remain. Every change is caught or decodes to
  // the same bytes; none crashes.
  for (const char* name : {"l2.lz4.zfile", "l2.zstd.zfile"}) {
    const std::string orig = ReadWholeFile(kDir + name);
    const uint64_t off = BlockOffset(orig, 3);
    const uint32_t len = DecodeU32(orig.data() + IndexOffset(orig) + 4 * 3) - 4;
    int detected = 0;
    for (uint32_t pos = 0; pos < len; ++pos) {
      for (int x : {0x01, 0x80, 0xff}) {
        std::string f = orig;
        f[off + pos] ^= static_cast<char>(x);
        EncodeU32(f.data() + off + len, Crc32cRaw(100007, f.data() + off, len));
        auto r = OpenMem(f);
        ASSERT_TRUE(r.ok());
        Status s = (*r)->CheckAllBlocks();
        if (!s.ok()) {
          ++detected;
          EXPECT_TRUE(s.IsCorruption());
          EXPECT_NE(s.message().find("block 3 "), std::string::npos) << s.ToString();
        }
      }
    }
    EXPECT_GT(detected, 0) << name;
  }
}

TEST_F(ZFileHostile, CorruptJumpTable) {
  const uint64_t io = IndexOffset(good_);
  // A changed entry: the index CRC catches it.
  std::string f = good_;
  EncodeU32(f.data() + io + 12, DecodeU32(f.data() + io + 12) + 1);
  auto r = OpenMem(f);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("jump table CRC"), std::string::npos)
      << r.status().ToString();
  // Same with the CRC recomputed: the lengths no longer add up.
  RecomputeIndexCrc(&f);
  r = OpenMem(f);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("blocks end at"), std::string::npos)
      << r.status().ToString();
  // Implausible entries.
  for (uint32_t v : {0u, 4u, 8192u + 1025u, 0xffffffffu}) {
    f = good_;
    EncodeU32(f.data() + io + 8, v);
    RecomputeIndexCrc(&f);
    r = OpenMem(f);
    ASSERT_FALSE(r.ok()) << v;
    EXPECT_NE(r.status().message().find("entry 2"), std::string::npos) << r.status().ToString();
  }
  // Two entries swapped (the sum holds): the blocks fail their checks.
  f = good_;
  const uint32_t a = DecodeU32(f.data() + io + 0);
  const uint32_t b = DecodeU32(f.data() + io + 4);
  ASSERT_NE(a, b);
  EncodeU32(f.data() + io + 0, b);
  EncodeU32(f.data() + io + 4, a);
  RecomputeIndexCrc(&f);
  r = OpenMem(f);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  Status s = (*r)->CheckAllBlocks();
  ASSERT_TRUE(s.IsCorruption());
  EXPECT_NE(s.message().find("block 0 "), std::string::npos) << s.ToString();
}

TEST_F(ZFileHostile, RandomMutationsNeverCrash) {
  std::mt19937 rng(4242);
  // A small file without CRCs, so damage reaches the decompressors.
  TempDir dir;
  Options o;
  o.verify = false;
  MemFile src(MixedBytes(40000, 3));
  const std::string nocrc = Compress(dir, "nocrc", src, o);
  o.algo = Algo::kZstd;
  const std::string nocrc_zstd = Compress(dir, "nocrc.zstd", src, o);
  for (const std::string* base : {static_cast<const std::string*>(&good_), &nocrc, &nocrc_zstd}) {
    for (int it = 0; it < 300; ++it) {
      std::string f = *base;
      const int flips = 1 + static_cast<int>(rng() % 8);
      for (int k = 0; k < flips; ++k) f[rng() % f.size()] ^= static_cast<char>(1 + rng() % 255);
      if (rng() % 2) {
        FixDigest(&f, 0);
        FixDigest(&f, f.size() - 512);
      }
      auto r = OpenMem(f, rng() % 2 ? 4 : 0);
      if (!r.ok()) continue;
      std::vector<char> buf(50000);
      size_t got = 0;
      for (uint64_t off = 0; off < (*r)->Size(); off += got) {
        if (!(*r)->ReadAt(off, buf.size(), buf.data(), &got).ok() || got == 0) break;
      }
      (void)(*r)->CheckAllBlocks();
    }
  }
}

}  // namespace
}  // namespace ovbd::zfile
