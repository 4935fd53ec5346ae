// Sequential decompression throughput of ZFile layers (src/layer/zfile_reader.cc).
//
// A 64 MiB stream of mixed data (zeros, random bytes, text-like and
// repetitive blocks) is written once per variant with zfile::Write, 4 KiB
// blocks, into a temp directory whose files stay in the page cache. Then:
//
//   ZFileReadAt/<algo>/verify:<0|1>  zfile::Reader::ReadAt in 1 MiB chunks,
//                                    block cache disabled (cache_blocks = 0)
//   RawDecompress/<algo>             LZ4_decompress_safe / ZSTD_decompressDCtx
//                                    of the very same stored blocks (read
//                                    from the file's jump table), no CRC, no I/O
//   PlainPread                       pread of the uncompressed stream in 1 MiB
//                                    chunks (what an uncompressed layer costs)
//
// bytes_per_second counts decompressed (original) bytes everywhere.
#include <benchmark/benchmark.h>
#include <lz4.h>
#include <unistd.h>
#include <zstd.h>

#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "bench_util.h"
#include "ovbd/io/env.h"
#include "ovbd/layer/zfile.h"

namespace {

using namespace ovbd;

constexpr uint64_t kStreamBytes = 64ull << 20;
constexpr uint32_t kBlock = 4096;
constexpr size_t kChunk = 1 << 20;

// Mixed content, chosen per 4 KiB block: 15% zeros, 25% random bytes, 40%
// text-like words and numbers, 20% a short pattern with sparse noise.
std::vector<char> MakeStream() {
  std::vector<char> data(kStreamBytes);
  std::mt19937_64 rng(42);
  static const char* kWords[] = {"overlay", "block",  "device", "sector", "layer", "index",
                                 "the",     "of",     "and",    "kernel", "fuse",  "read",
                                 "write",   "volume", "upper",  "lower",  "merge", "zfile"};
  for (uint64_t b = 0; b < kStreamBytes / kBlock; ++b) {
    char* p = data.data() + b * kBlock;
    const unsigned kind = static_cast<unsigned>(rng() % 100);
    if (kind < 15) {
      std::memset(p, 0, kBlock);
    } else if (kind < 40) {
      for (uint32_t i = 0; i < kBlock; i += 8) {
        uint64_t r = rng();
        std::memcpy(p + i, &r, 8);
      }
    } else if (kind < 80) {
      uint32_t i = 0;
      while (i < kBlock) {
        char w[32];
        int n = (rng() % 4 == 0)
                    ? std::snprintf(w, sizeof w, "%llu ", static_cast<unsigned long long>(rng() % 100000))
                    : std::snprintf(w, sizeof w, "%s ", kWords[rng() % std::size(kWords)]);
        for (int k = 0; k < n && i < kBlock; ++k) p[i++] = w[k];
      }
    } else {
      const uint64_t pat = rng();
      for (uint32_t i = 0; i < kBlock; i += 8) std::memcpy(p + i, &pat, 8);
      for (int k = 0; k < 16; ++k) p[rng() % kBlock] = static_cast<char>(rng());
    }
  }
  return data;
}

// The uncompressed stream as a file, written once.
const std::string& PlainPath() {
  static std::string path = [] {
    std::string p = bench::TempDir() + "/plain.raw";
    std::vector<char> data = MakeStream();
    auto f = Env::Default()->OpenRW(p, true);
    if (!f.ok()) bench::Die("create " + p, f.status());
    Status s = f.value()->WriteAt(0, data.data(), data.size());
    if (!s.ok()) bench::Die("write " + p, s);
    return p;
  }();
  return path;
}

struct Layer {
  std::string path;
  std::unique_ptr<zfile::Reader> reader;  // cache disabled
  std::shared_ptr<const ReadableFile> base;
  uint64_t stored_bytes = 0;
  // The stored blocks, exactly as in the file (without their CRC).
  std::vector<char> blob;
  std::vector<std::pair<size_t, size_t>> blocks;  // (offset in blob, compressed length)
};

const Layer& GetLayer(zfile::Algo algo, bool verify) {
  static std::map<std::pair<int, bool>, std::unique_ptr<Layer>> cache;
  auto& slot = cache[{static_cast<int>(algo), verify}];
  if (slot) return *slot;
  auto l = std::make_unique<Layer>();
  l->path = bench::TempDir() + "/layer-" + (algo == zfile::Algo::kLz4 ? "lz4" : "zstd") +
            (verify ? "-crc" : "") + ".zfile";
  {
    auto src = Env::Default()->OpenReadable(PlainPath());
    if (!src.ok()) bench::Die("open " + PlainPath(), src.status());
    auto dst = Env::Default()->OpenRW(l->path, true);
    if (!dst.ok()) bench::Die("create " + l->path, dst.status());
    zfile::Options o;
    o.block_size = kBlock;
    o.algo = algo;
    o.verify = verify;
    Status s = zfile::Write(*src.value(), dst.value().get(), o);
    if (!s.ok()) bench::Die("zfile::Write", s);
  }
  auto base = Env::Default()->OpenReadable(l->path);
  if (!base.ok()) bench::Die("open " + l->path, base.status());
  l->base = std::shared_ptr<const ReadableFile>(std::move(base).value());
  l->stored_bytes = l->base->Size();
  auto r = zfile::Reader::Open(l->base, /*cache_blocks=*/0);
  if (!r.ok()) bench::Die("zfile::Reader::Open", r.status());
  l->reader = std::move(r).value();

  // Pull the stored blocks out through the jump table.
  const zfile::Info& info = l->reader->info();
  std::vector<char> table(info.num_blocks * 4);
  Status s = l->base->ReadExact(info.index_offset, table.size(), table.data());
  if (!s.ok()) bench::Die("jump table", s);
  const uint64_t data_start = zfile::kHeaderSize + info.dict_size;
  l->blob.resize(info.index_offset - data_start);
  s = l->base->ReadExact(data_start, l->blob.size(), l->blob.data());
  if (!s.ok()) bench::Die("blocks", s);
  size_t pos = 0;
  for (uint64_t i = 0; i < info.num_blocks; ++i) {
    uint32_t len;
    std::memcpy(&len, table.data() + i * 4, 4);  // little-endian host
    l->blocks.emplace_back(pos, len - (info.verify ? 4 : 0));
    pos += len;
  }
  slot = std::move(l);
  return *slot;
}

void BM_ZFileReadAt(benchmark::State& state, zfile::Algo algo, bool verify) {
  const Layer& l = GetLayer(algo, verify);
  std::vector<char> buf(kChunk);
  uint64_t off = 0;
  for (auto _ : state) {
    size_t got = 0;
    Status s = l.reader->ReadAt(off, kChunk, buf.data(), &got);
    if (!s.ok() || got != kChunk) {
      state.SkipWithError(s.ToString().c_str());
      break;
    }
    benchmark::DoNotOptimize(buf.data());
    off = (off + kChunk) % kStreamBytes;
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kChunk));
  state.counters["ratio"] = static_cast<double>(kStreamBytes) / static_cast<double>(l.stored_bytes);
}

void BM_RawDecompress(benchmark::State& state, zfile::Algo algo) {
  const Layer& l = GetLayer(algo, true);
  std::vector<char> out(kChunk);
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  const size_t per_chunk = kChunk / kBlock;
  size_t b = 0;
  for (auto _ : state) {
    for (size_t k = 0; k < per_chunk; ++k, b = (b + 1) % l.blocks.size()) {
      const char* src = l.blob.data() + l.blocks[b].first;
      const size_t clen = l.blocks[b].second;
      char* dst = out.data() + k * kBlock;
      if (algo == zfile::Algo::kLz4) {
        int n = LZ4_decompress_safe(src, dst, static_cast<int>(clen), kBlock);
        if (n != static_cast<int>(kBlock)) state.SkipWithError("lz4 failed");
      } else {
        size_t n = ZSTD_decompressDCtx(dctx, dst, kBlock, src, clen);
        if (n != kBlock) state.SkipWithError("zstd failed");
      }
    }
    benchmark::DoNotOptimize(out.data());
  }
  ZSTD_freeDCtx(dctx);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kChunk));
}

void BM_PlainPread(benchmark::State& state) {
  auto f = Env::Default()->OpenReadable(PlainPath());
  if (!f.ok()) bench::Die("open", f.status());
  std::vector<char> buf(kChunk);
  uint64_t off = 0;
  for (auto _ : state) {
    size_t got = 0;
    Status s = f.value()->ReadAt(off, kChunk, buf.data(), &got);
    if (!s.ok()) state.SkipWithError(s.ToString().c_str());
    benchmark::DoNotOptimize(buf.data());
    off = (off + kChunk) % kStreamBytes;
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kChunk));
}

BENCHMARK_CAPTURE(BM_ZFileReadAt, lz4/verify:1, zfile::Algo::kLz4, true);
BENCHMARK_CAPTURE(BM_ZFileReadAt, lz4/verify:0, zfile::Algo::kLz4, false);
BENCHMARK_CAPTURE(BM_RawDecompress, lz4, zfile::Algo::kLz4);
BENCHMARK_CAPTURE(BM_ZFileReadAt, zstd/verify:1, zfile::Algo::kZstd, true);
BENCHMARK_CAPTURE(BM_ZFileReadAt, zstd/verify:0, zfile::Algo::kZstd, false);
BENCHMARK_CAPTURE(BM_RawDecompress, zstd, zfile::Algo::kZstd);
BENCHMARK(BM_PlainPread);

}  // namespace

BENCHMARK_MAIN();
