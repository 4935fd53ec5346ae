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
//
// The journal reader is checked on its own (on the bytes in memory: every
// record it returns is valid, in order and in range, and where it stopped is
// consistent), and against Upper::Open, which must accept exactly the
// journals the reader's output does not condemn and rebuild exactly the map
// those records describe.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>

#include <vector>

#include "mem_file.h"
#include "ovbd/io/coding.h"
#include "ovbd/io/env.h"
#include "ovbd/layer/extent_map.h"
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
  // The reader alone.
  const ovbd::test::MemFile mem(jnl, "fuzz.jnl");
  uj::ScanOptions opts;
  opts.volume_sectors = kVsize / 512;
  std::vector<uj::Record> records;
  auto scan = uj::ReadJournal(mem, opts, [&](const uj::Record& r) { records.push_back(r); });
  if (!scan.ok()) std::abort();  // the header is valid: nothing else may fail
  const uj::Scan& sc = scan.value();
  if (sc.records != records.size()) std::abort();
  if (sc.valid_end != uj::kHeaderSize + records.size() * uj::kRecordSize) std::abort();
  if (sc.next_seq != h.first_seq + records.size()) std::abort();
  if ((sc.stop == uj::Stop::kEnd) != (sc.valid_end == jnl.size())) std::abort();
  if (sc.stop == uj::Stop::kEnd && sc.later != 0) std::abort();
  ovbd::ExtentMap want;
  for (size_t i = 0; i < records.size(); ++i) {
    const uj::Record& r = records[i];
    if (r.seq != h.first_seq + i) std::abort();
    if (r.type < uj::kData || r.type > uj::kForget) std::abort();
    if (r.length == 0 || r.offset + r.length > kVsize / 512) std::abort();
    if (r.type == uj::kForget) {
      want.Erase(r.offset, r.length);
    } else {
      want.Set(r.offset, r.length, r.offset + 4096 / 512, r.type == uj::kZero);
    }
  }
  const bool condemned = sc.stop == uj::Stop::kOutOfRange || sc.later > 0;

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
  if (u.ok() == condemned) std::abort();  // replay's policy, applied to the reader's verdict
  if (!u.ok()) return 0;
  const auto got = u.value()->Segments();
  const auto expect = want.ToSegments(ovbd::lsmt::kMaxEntryLength);
  if (got.size() != expect.size()) std::abort();
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i].offset != expect[i].offset || got[i].length != expect[i].length ||
        got[i].zeroed != expect[i].zeroed || (!got[i].zeroed && got[i].moffset != expect[i].moffset)) {
      std::abort();
    }
  }
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
