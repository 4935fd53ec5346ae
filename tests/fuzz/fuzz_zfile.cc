// Fuzz target for the ZFile reader: the input is a whole ZFile held in
// memory. Opening, reading it in several chunk patterns and checking every
// block must never crash, hang or allocate more than a small multiple of the
// input (plus bounded scratch buffers).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "ovbd/io/coding.h"
#include "ovbd/io/crc32c.h"
#include "ovbd/io/env.h"
#include "mem_file.h"
#include "ovbd/layer/zfile.h"

namespace {

using ovbd::test::MemFile;

// Decompressed bytes read per pattern at most: a tiny input can describe a
// large (but valid) stream of highly compressible blocks.
constexpr uint64_t kMaxReadPerPattern = 32u << 20;

// Random bytes almost never carry valid checksums, which would keep the
// fuzzer in front of the digest checks. So each input is also tried
// "repaired": block CRCs, the jump-table CRC and both digests recomputed
// wherever the (unvalidated, bounds-checked here) fields allow it.
std::string Repair(std::string f) {
  using ovbd::Crc32cRaw;
  using ovbd::DecodeU32;
  using ovbd::DecodeU64;
  using ovbd::EncodeU32;
  const size_t size = f.size();
  if (size < 1024) return f;
  const size_t tr = size - 512;
  const bool header_has_index = (DecodeU64(f.data() + 32) & 8) != 0;
  const char* src = f.data() + (header_has_index ? 0 : tr);
  const uint64_t index_offset = DecodeU64(src + 40);
  const uint64_t n = DecodeU64(src + 48);
  const uint64_t data_start = 512 + uint64_t{DecodeU32(src + 84)};
  const bool verify = src[88] == 1;
  if (index_offset <= tr && n <= (tr - index_offset) / 4) {
    if (verify) {
      uint64_t pos = data_start;
      for (uint64_t i = 0; i < n; ++i) {
        const uint32_t len = DecodeU32(f.data() + index_offset + 4 * i);
        if (len < 5 || pos + len > index_offset) break;
        EncodeU32(f.data() + pos + len - 4, Crc32cRaw(100007, f.data() + pos, len - 4));
        pos += len;
      }
    }
    const uint32_t crc = Crc32cRaw(0, f.data() + index_offset, 4 * n);
    EncodeU32(f.data() + 64, crc);
    EncodeU32(f.data() + tr + 64, crc);
  }
  for (size_t base : {size_t{0}, tr}) {
    EncodeU32(f.data() + base + 28, 0);
    EncodeU32(f.data() + base + 28, Crc32cRaw(0, f.data() + base, 512));
  }
  return f;
}

void Exercise(std::string bytes) {
  const size_t size = bytes.size();
  auto file = std::make_shared<MemFile>(std::move(bytes));
  (void)ovbd::zfile::IsZFile(*file);
  // Cache sizes vary with the input so both the cached and uncached paths run.
  const size_t cache = size % 3 == 0 ? 0 : (size % 3 == 1 ? 2 : 64);
  auto r = ovbd::zfile::Reader::Open(file, cache);
  if (!r.ok()) return;
  const ovbd::zfile::Reader& z = **r;
  const uint64_t total = z.Size();

  std::vector<char> buf(200000);
  for (size_t chunk : {size_t{4096}, size_t{1000}, size_t{65536 + 513}, buf.size()}) {
    uint64_t off = chunk == 1000 ? 7 : 0;
    const uint64_t limit = std::min<uint64_t>(total, kMaxReadPerPattern);
    while (off < limit) {
      size_t got = 0;
      if (!z.ReadAt(off, chunk, buf.data(), &got).ok()) break;
      if (got == 0) __builtin_trap();  // a short read may only happen at the end
      off += got;
    }
  }
  // Reads at and past the end are empty.
  size_t got = 1;
  if (!z.ReadAt(total, 16, buf.data(), &got).ok() || got != 0) __builtin_trap();
  if (total <= (64u << 20)) (void)z.CheckAllBlocks();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string bytes(reinterpret_cast<const char*>(data), size);
  Exercise(bytes);
  Exercise(Repair(std::move(bytes)));
  return 0;
}
