// What a hit of the remote block cache costs over a plain pread
// (src/remote/cache_blob.cc).
//
// A 64 MiB blob, 1 MiB blocks, is fetched once into a cache in a temp
// directory (the fetcher copies from memory), so every read below is a hit
// on data in the page cache. Then, at random 4 KiB-aligned offsets:
//
//   CachedRead4k     CachedBlob::Read of 4 KiB (blob mutex twice, LRU touch,
//                    one pread into the caller's buffer)
//   PlainPread4k     ReadableFile::ReadAt of 4 KiB from the cache's own data
//                    file, opened with Env::Default() (the floor)
//
// Both also run with 2 threads on the same blob (->Threads(2)), where the
// blob's mutex and the LRU's are shared.
#include <benchmark/benchmark.h>

#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "bench_util.h"
#include "ovbd/io/env.h"
#include "ovbd/remote/block_cache.h"

namespace {

using namespace ovbd;

constexpr uint64_t kBlobBytes = 64ull << 20;
constexpr size_t kRead = 4096;
const std::string kDigest = "sha256:" + std::string(64, 'c');  // any valid name will do

struct Fixture {
  std::vector<char> content;
  std::shared_ptr<remote::BlockCache> cache;
  std::shared_ptr<remote::CachedBlob> blob;
  std::unique_ptr<ReadableFile> plain;

  Fixture() : content(kBlobBytes) {
    std::mt19937_64 rng(1);
    for (auto& c : content) c = static_cast<char>(rng());
    remote::BlockCacheOptions o;
    o.dir = bench::TempDir() + "/cache";
    auto c = remote::BlockCache::Open(Env::Default(), o);
    if (!c.ok()) bench::Die("open", c.status());
    cache = c.value();
    auto b = cache->Blob(kDigest, kBlobBytes);
    if (!b.ok()) bench::Die("blob", b.status());
    blob = b.value();
    std::vector<char> buf(1 << 20);
    for (uint64_t off = 0; off < kBlobBytes; off += buf.size()) {
      Status s = blob->Read(off, buf.size(), buf.data(), Fetcher());
      if (!s.ok()) bench::Die("warm", s);
    }
    auto f = Env::Default()->OpenReadable(o.dir + "/blobs/sha256-" + kDigest.substr(7) + ".data");
    if (!f.ok()) bench::Die("open data", f.status());
    plain = std::move(f).value();
  }
  remote::BlockFetcher Fetcher() {
    return [this](uint64_t off, size_t n, char* buf) {
      std::memcpy(buf, content.data() + off, n);
      return Status::OK();
    };
  }
};

Fixture& F() {
  static Fixture* f = new Fixture();
  return *f;
}

void CachedRead4k(benchmark::State& state) {
  Fixture& f = F();
  const remote::BlockFetcher fetch = f.Fetcher();
  std::mt19937_64 rng(state.thread_index() + 7);
  char buf[kRead];
  for (auto _ : state) {
    const uint64_t off = (rng() % (kBlobBytes / kRead)) * kRead;
    Status s = f.blob->Read(off, kRead, buf, fetch);
    if (!s.ok()) bench::Die("read", s);
    benchmark::DoNotOptimize(buf);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRead));
}
BENCHMARK(CachedRead4k)->Threads(1)->Threads(2);

void PlainPread4k(benchmark::State& state) {
  Fixture& f = F();
  std::mt19937_64 rng(state.thread_index() + 7);
  char buf[kRead];
  for (auto _ : state) {
    const uint64_t off = (rng() % (kBlobBytes / kRead)) * kRead;
    size_t got = 0;
    Status s = f.plain->ReadAt(off, kRead, buf, &got);
    if (!s.ok() || got != kRead) bench::Die("pread", s);
    benchmark::DoNotOptimize(buf);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * kRead));
}
BENCHMARK(PlainPread4k)->Threads(1)->Threads(2);

}  // namespace

BENCHMARK_MAIN();
