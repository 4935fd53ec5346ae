// Fuzz target for the upper journal: replaying arbitrary journal bytes must
// never crash, hang or allocate without bound, and whatever opens must be a
// map a volume can trust: sorted, disjoint extents inside the virtual size,
// data extents pointing at their own place in the data file.
//
// Input: byte 0 picks the mode, the rest is the record area (after a valid
// header). In mode "raw" the bytes are the records as they are on disk, so
// checksums guard them; in mode "fields" each 32 bytes are record fields
// (type, seq delta, offset, length) that get a valid checksum, so the replay
// logic itself (sequence gaps, ranges, forget/zero/data) is explored.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#include "ovbd/io/coding.h"
#include "ovbd/io/env.h"
#include "ovbd/layer/upper.h"
#include "upper_journal.h"

namespace {

namespace uj = ovbd::upper_journal;
constexpr uint64_t kVsize = 64ull << 20;
constexpr size_t kMaxRecords = 1 << 14;  // bounds one input's replay

struct Fixture {
  std::string dir, base;
  std::string uuid;
};

// One upper data file, made once; each input replaces only its journal.
const Fixture& Setup() {
  static Fixture* f = [] {
    auto* fx = new Fixture;
    char tmpl[] = "/tmp/ovbd-fuzz-journal-XXXXXX";
    if (!mkdtemp(tmpl)) std::abort();
    fx->dir = tmpl;
    fx->base = fx->dir + "/u";
    fx->uuid = ovbd::lsmt::NewUuid();
    auto u = ovbd::Upper::Create(ovbd::Env::Default(), fx->base, kVsize, fx->uuid, "");
    if (!u.ok()) std::abort();
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(Setup().dir, ec);
    });
    return fx;
  }();
  return *f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const Fixture& fx = Setup();
  if (size == 0) return 0;
  const bool fields = data[0] & 1;
  ++data;
  --size;
  std::string jnl(uj::kHeaderSize, '\0');
  uj::Header h;
  h.first_seq = 1;
  h.uuid = fx.uuid;
  uj::EncodeHeader(h, jnl.data());
  if (fields) {
    uint64_t seq = 1;
    for (size_t i = 0; i + 32 <= size && i / 32 < kMaxRecords; i += 32) {
      const uint8_t* p = data + i;
      uj::Record r;
      r.type = p[0] % 4;                 // 0 is an invalid type
      seq += static_cast<int8_t>(p[1]);  // mostly in order, sometimes not
      r.seq = seq++;
      r.offset = ovbd::DecodeU64(reinterpret_cast<const char*>(p + 8)) % (2 * kVsize / 512);
      r.length = ovbd::DecodeU64(reinterpret_cast<const char*>(p + 16)) % 4096;
      char rec[uj::kRecordSize];
      uj::EncodeRecord(r, rec);
      jnl.append(rec, sizeof rec);
    }
  } else {
    jnl.append(reinterpret_cast<const char*>(data), std::min(size, kMaxRecords * uj::kRecordSize));
  }
  ovbd::Env* env = ovbd::Env::Default();
  {
    auto f = env->OpenRW(ovbd::Upper::JournalPath(fx.base), false);
    if (!f.ok() || !f.value()->Truncate(0).ok() ||
        !f.value()->WriteAt(0, jnl.data(), jnl.size()).ok()) {
      std::abort();
    }
  }
  // Read-only: no syncs, no repair, the same replay.
  auto u = ovbd::Upper::Open(env, fx.base, kVsize, /*read_only=*/true);
  if (!u.ok()) return 0;
  uint64_t prev_end = 0;
  for (const auto& s : u.value()->Segments()) {
    if (s.length == 0 || s.offset < prev_end) std::abort();           // sorted, disjoint
    if (s.offset + s.length > kVsize / 512) std::abort();             // inside the volume
    if (!s.zeroed && s.moffset != s.offset + 4096 / 512) std::abort();  // data in place
    prev_end = s.offset + s.length;
  }
  uint64_t covered = 0;
  u.value()->Walk(0, kVsize, [&](uint64_t, uint64_t n, ovbd::UpperPiece) { covered += n; });
  if (covered != kVsize) std::abort();
  return 0;
}
