#include "ovbd/layer/upper.h"

#include <algorithm>
#include <cstring>
#include <limits>

#include "ovbd/layer/lsmt_writer.h"
#include "upper_journal.h"

namespace ovbd {

namespace uj = upper_journal;
using lsmt::kHeaderSectors;
using lsmt::kSectorSize;

namespace {
// Rewrite the journal once it holds compact_min_records_ records and at
// least four times as many as the map needs: bounds replay time and disk use.
constexpr uint64_t kCompactRatio = 4;

lsmt::Header DataHeader(const std::string& uuid, const std::string& parent, uint64_t vsize) {
  lsmt::Header h;
  h.flags = lsmt::kFlagHeader | lsmt::kFlagDataFile;
  h.virtual_size = vsize;
  h.uuid = uuid;
  h.parent_uuid = parent.empty() ? "00000000-0000-0000-0000-000000000000" : parent;
  return h;
}
}  // namespace

Upper::~Upper() = default;

Result<std::unique_ptr<Upper>> Upper::Create(Env* env, const std::string& base,
                                             uint64_t virtual_size, const std::string& uuid,
                                             const std::string& parent_uuid) {
  if (virtual_size % kSectorSize != 0) {
    return Status::InvalidArgument("volume size must be a multiple of 512 bytes");
  }
  auto u = std::unique_ptr<Upper>(new Upper());
  u->env_ = env;
  u->base_ = base;
  u->uuid_ = uuid;
  u->parent_uuid_ = parent_uuid;
  u->vsize_ = virtual_size;
  // Files this call created, removed again if a later step fails (ENOSPC,
  // EIO): a half-made upper is referenced by nothing and must not linger as
  // empty files. A file that was already there is never touched.
  std::vector<std::string> created;
  auto undo = [&](Status s) {
    u.reset();  // close them first
    for (auto it = created.rbegin(); it != created.rend(); ++it) (void)env->Remove(*it);
    return s;
  };
  {
    auto d = env->OpenRW(DataPath(base), true);
    if (!d.ok()) return undo(d.status());
    created.push_back(DataPath(base));
    char block[lsmt::kHeaderSize];
    lsmt::EncodeHeader(DataHeader(uuid, parent_uuid, virtual_size), block);
    Status s = d.value()->WriteAt(0, block, sizeof block);
    if (s.ok()) s = CheckSizeFits(d.value().get(), virtual_size);
    // The file spans the whole data area from the start (sparse, nothing
    // allocated): writes never move its end, and preallocated space and
    // discards both lie inside it (a hole cannot be punched past the end).
    if (s.ok()) s = d.value()->Truncate(DataOffset(virtual_size));
    if (s.ok()) s = d.value()->Sync();
    if (!s.ok()) return undo(s);
    u->data_ = std::move(d).value();
  }
  {
    auto j = env->OpenRW(JournalPath(base), true);
    if (!j.ok()) return undo(j.status());
    created.push_back(JournalPath(base));
    char block[uj::kHeaderSize];
    uj::Header h;
    h.first_seq = 1;
    h.uuid = uuid;
    uj::EncodeHeader(h, block);
    Status s = j.value()->WriteAt(0, block, sizeof block);
    if (s.ok()) s = j.value()->Sync();
    if (!s.ok()) return undo(s);
    MutexLock l(&u->commit_mu_);
    u->jnl_ = std::move(j).value();
    u->jnl_end_ = uj::kHeaderSize;
    u->jnl_end_seen_ = uj::kHeaderSize;
  }
  Status s = env->SyncDir(DirName(base));
  if (!s.ok()) return undo(s);
  return u;
}

Result<std::unique_ptr<Upper>> Upper::Open(Env* env, const std::string& base,
                                           uint64_t virtual_size, bool read_only) {
  auto u = std::unique_ptr<Upper>(new Upper());
  u->env_ = env;
  u->base_ = base;
  u->vsize_ = virtual_size;
  u->read_only_ = read_only;
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> d, env->OpenRW(DataPath(base), false));
  char block[lsmt::kHeaderSize];
  OVBD_RETURN_IF_ERROR(d->ReadExact(0, sizeof block, block));
  lsmt::Header dh;
  OVBD_RETURN_IF_ERROR(lsmt::DecodeHeader(block, d->Name(), &dh));
  if (!(dh.flags & lsmt::kFlagDataFile)) {
    return Status::Corruption(d->Name() + ": not an upper data file");
  }
  u->uuid_ = dh.uuid;
  u->parent_uuid_ = dh.parent_uuid;
  if (!read_only) {
    // A crash in the middle of a seal may have left an index and trailer past
    // the data area and a sealed header: the manifest still says "upper", so
    // undo the seal (the data area itself is untouched by sealing).
    if (d->Size() > DataOffset(virtual_size)) {
      OVBD_RETURN_IF_ERROR(d->Truncate(DataOffset(virtual_size)));
    }
    if (dh.flags != (lsmt::kFlagHeader | lsmt::kFlagDataFile)) {
      lsmt::EncodeHeader(DataHeader(dh.uuid, dh.parent_uuid, dh.virtual_size), block);
      OVBD_RETURN_IF_ERROR(d->WriteAt(0, block, sizeof block));
    }
    OVBD_RETURN_IF_ERROR(d->Sync());
  }
  u->data_ = std::move(d);
  MutexLock l(&u->commit_mu_);
  OVBD_ASSIGN_OR_RETURN(u->jnl_, env->OpenRW(JournalPath(base), false));
  OVBD_RETURN_IF_ERROR(u->Replay(read_only));
  // An upper made shorter (older files grew with their writes) spans the
  // whole data area from now on, as a new one does. Not one cut short
  // behind our back: that must stay visible (DataBytesNeeded > size).
  const uint64_t area = DataOffset(virtual_size);
  if (!read_only && u->data_->Size() < area && u->data_->Size() >= u->DataBytesNeeded()) {
    OVBD_RETURN_IF_ERROR(u->data_->Truncate(area));
    OVBD_RETURN_IF_ERROR(u->data_->Sync());
  }
  return u;
}

Status Upper::Replay(bool read_only) {
  const std::string& what = jnl_->Name();
  uj::ScanOptions opts;
  opts.volume_sectors = vsize_ / kSectorSize;
  ExtentMap map;
  OVBD_ASSIGN_OR_RETURN(uj::Scan scan, uj::ReadJournal(*jnl_, opts, [&](const uj::Record& r) {
    if (r.type == uj::kForget) {
      map.Erase(r.offset, r.length);
    } else {
      map.Set(r.offset, r.length, r.offset + kHeaderSectors, r.type == uj::kZero);
    }
  }));
  if (scan.header.uuid != uuid_) {
    return Status::Corruption(what + ": journal belongs to upper " + scan.header.uuid +
                              ", data file is " + uuid_);
  }
  if (scan.stop == uj::Stop::kOutOfRange) {
    return Status::Corruption(what + ": record " + std::to_string(scan.bad.seq) + " (sectors " +
                              std::to_string(scan.bad.offset) + "+" +
                              std::to_string(scan.bad.length) + ") lies beyond the volume size");
  }
  // A crash tears at most the last batch of records. If valid records with
  // later sequence numbers follow the bad one, the journal was damaged in
  // the middle: refuse to silently drop acknowledged writes.
  if (scan.later > 0) {
    return Status::Corruption(what + ": record " + std::to_string(scan.records) +
                              " is damaged and " + std::to_string(scan.later) +
                              " valid records follow it; run `ovbd check --repair`");
  }
  {
    WriterLock lk(&mu_);
    map_ = std::move(map);
  }
  jnl_records_ = scan.records;
  jnl_records_seen_ = jnl_records_;
  next_seq_ = scan.next_seq;
  jnl_end_ = scan.valid_end;
  jnl_end_seen_ = jnl_end_;
  torn_tail_bytes_ = scan.file_size - scan.valid_end;
  if (!read_only && scan.file_size != jnl_end_) {
    // Cut the torn tail so new records follow the last valid one directly.
    OVBD_RETURN_IF_ERROR(jnl_->Truncate(jnl_end_));
    OVBD_RETURN_IF_ERROR(jnl_->Sync());
  }
  return Status::OK();
}

Result<uint64_t> Upper::CutJournalAtDamage(Env* env, const std::string& base,
                                           uint64_t virtual_size) {
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> j, env->OpenRW(JournalPath(base), false));
  uj::ScanOptions opts;
  if (virtual_size > 0) opts.volume_sectors = virtual_size / kSectorSize;
  OVBD_ASSIGN_OR_RETURN(uj::Scan scan, uj::ReadJournal(*j, opts, nullptr));
  if (scan.stop == uj::Stop::kEnd) return uint64_t{0};
  OVBD_RETURN_IF_ERROR(j->Truncate(scan.valid_end));
  OVBD_RETURN_IF_ERROR(j->Sync());
  // The bad record itself (unless the file ended in a partial one) and the
  // well-formed ones after it.
  const bool whole_bad = scan.file_size - scan.valid_end >= uj::kRecordSize;
  return scan.later + (whole_bad ? 1 : 0);
}

Status Upper::CheckWritable(uint64_t off, uint64_t len) const {
  if (read_only_) return Status::ReadOnly(base_ + ": upper opened read-only");
  if (sealed_) return Status::ReadOnly(base_ + ": upper is sealed");
  if (off % kSectorSize || len % kSectorSize) {
    return Status::InvalidArgument("upper I/O must be 512-byte aligned");
  }
  const uint64_t vs = vsize_.load();
  if (off > vs || len > vs - off) {
    return Status::NoSpace("write of " + std::to_string(len) + " bytes at " + std::to_string(off) +
                           " past the end of the volume (" + std::to_string(vs) + " bytes)");
  }
  return Status::OK();
}

void Upper::Apply(uint64_t off_sec, uint64_t len_sec, uint8_t type) {
  WriterLock lk(&mu_);
  if (type == uj::kForget) {
    map_.Erase(off_sec, len_sec);
  } else {
    map_.Set(off_sec, len_sec, off_sec + kHeaderSectors, type == uj::kZero);
  }
  // Sequential writes extend the previous pending record instead of adding one.
  if (!pending_.empty()) {
    PendingOp& p = pending_.back();
    if (p.type == type && p.offset + p.length == off_sec) {
      p.length += len_sec;
      ++applied_;
      return;
    }
  }
  pending_.push_back(PendingOp{type, off_sec, len_sec});
  ++applied_;
}

Status Upper::Write(uint64_t off, const char* buf, size_t len) {
  OVBD_RETURN_IF_ERROR(CheckWritable(off, len));
  if (len == 0) return Status::OK();
  Status s;
  {
    RangeLocks::Guard range(ranges_, off, len, /*exclusive=*/false);
    Reserve(off, len);
    // Data first; the map (and later the journal) only then points at it.
    s = data_->WriteAt(DataOffset(off), buf, len);
    if (s.ok()) {
      Apply(off / kSectorSize, len / kSectorSize, uj::kData);
      return Status::OK();
    }
  }
  // Exclusive, so no other write of the range is between its data and its
  // map: what the map does not hold as data now is nobody's.
  RangeLocks::Guard range(ranges_, off, len, /*exclusive=*/true);
  ReleaseFailedWrite(off, len);
  return s;
}

void Upper::ReleaseFailedWrite(uint64_t off, uint64_t len) {
  // A write that failed part-way (ENOSPC, EIO) may have allocated blocks
  // for what it did write. Inside the file's end (it spans the data area)
  // the filesystem keeps them, unlike blocks of a failed write past the
  // end, so a full filesystem's last blocks would go to sectors nothing
  // maps and the journal's next record would find none. Reserved granules
  // allocated nothing new: left alone, so the reservation stays.
  std::vector<std::pair<uint64_t, uint64_t>> gaps;  // not data, [begin, end)
  Walk(off, len, [&](uint64_t o, uint64_t n, UpperPiece p) {
    if (p == UpperPiece::kData) return;
    if (!gaps.empty() && gaps.back().second == o) {
      gaps.back().second = o + n;
    } else {
      gaps.emplace_back(o, o + n);
    }
  });
  if (gaps.empty()) return;
  const auto reserved = GranuleRanges(/*claimed=*/false);
  size_t r = 0;
  for (auto [b, e] : gaps) {
    while (r < reserved.size() && reserved[r].second <= b) ++r;
    for (size_t k = r; k < reserved.size() && b < e; ++k) {
      const auto [rb, re] = reserved[k];
      if (rb >= e) break;
      if (rb > b) (void)data_->PunchHole(DataOffset(b), rb - b);
      b = std::max(b, re);
    }
    if (b < e) (void)data_->PunchHole(DataOffset(b), e - b);
  }
}

Status Upper::Zero(uint64_t off, uint64_t len) { return PunchAndRecord(off, len, uj::kZero); }

Status Upper::Forget(uint64_t off, uint64_t len) { return PunchAndRecord(off, len, uj::kForget); }

Status Upper::PunchAndRecord(uint64_t off, uint64_t len, uint8_t type) {
  OVBD_RETURN_IF_ERROR(CheckWritable(off, len));
  if (len == 0) return Status::OK();
  RangeLocks::Guard range(ranges_, off, len, /*exclusive=*/false);
  OVBD_RETURN_IF_ERROR(data_->PunchHole(DataOffset(off), len));
  Apply(off / kSectorSize, len / kSectorSize, type);
  return Status::OK();
}

Result<uint64_t> Upper::Fill(uint64_t off, const char* buf, size_t len) {
  OVBD_RETURN_IF_ERROR(CheckWritable(off, len));
  if (len == 0) return uint64_t{0};
  RangeLocks::Guard range(ranges_, off, len, /*exclusive=*/true);
  // No write of this range can start or be half-done now: what the map
  // says is absent stays absent until we have written it.
  struct Piece {
    uint64_t off, len;
  };
  std::vector<Piece> absent;
  Walk(off, len, [&](uint64_t o, uint64_t n, UpperPiece p) {
    if (p != UpperPiece::kAbsent) return;
    if (!absent.empty() && absent.back().off + absent.back().len == o) {
      absent.back().len += n;
    } else {
      absent.push_back({o, n});
    }
  });
  uint64_t written = 0;
  for (const Piece& p : absent) {
    // No Reserve(): the copy comes in large pieces, and reserving whole
    // granules would take space for the lowers' holes too.
    Status s = data_->WriteAt(DataOffset(p.off), buf + (p.off - off), p.len);
    if (!s.ok()) {
      ReleaseFailedWrite(p.off, p.len);  // still absent: the range lock is ours
      return s;
    }
    Apply(p.off / kSectorSize, p.len / kSectorSize, uj::kData);
    // A copy streams through the whole volume and commits every few hundred
    // MiB: start each piece's write-back now, so that the commit's
    // fdatasync waits for the last pieces only instead of writing them all
    // back while the copy stands still (what `cp` gets from the kernel's
    // background write-back).
    data_->StartWriteback(DataOffset(p.off), p.len);
    written += p.len;
  }
  return written;
}

void Upper::set_prealloc_granule(uint64_t bytes) {
  MutexLock l(&prealloc_mu_);
  prealloc_granule_ = bytes / lsmt::kHeaderSize * lsmt::kHeaderSize;
  prealloc_claimed_.clear();
  prealloc_reserved_.clear();
}

uint64_t Upper::prealloc_granule() const {
  MutexLock l(&prealloc_mu_);
  return prealloc_granule_;
}

namespace {
bool BitSet(const std::vector<uint64_t>& bits, uint64_t g) {
  return g / 64 < bits.size() && ((bits[g / 64] >> (g % 64)) & 1);
}
void SetBit(std::vector<uint64_t>* bits, uint64_t g) {
  if (bits->size() <= g / 64) bits->resize(g / 64 + 1, 0);
  (*bits)[g / 64] |= uint64_t{1} << (g % 64);
}
}  // namespace

void Upper::Reserve(uint64_t off, uint64_t len) {
  if (prealloc_unsupported_.load(std::memory_order_relaxed)) return;
  uint64_t g0, g1, gran;  // granules [g0, g1) not claimed yet, all of them claimed now
  {
    MutexLock l(&prealloc_mu_);
    gran = prealloc_granule_;
    if (gran == 0) return;
    const uint64_t first = off / gran, last = (off + len - 1) / gran;
    g0 = first;
    while (g0 <= last && BitSet(prealloc_claimed_, g0)) ++g0;
    if (g0 > last) return;  // the common case: one bit test
    g1 = g0;
    // One call for a run of new granules; a claimed one ends the run (the
    // rest, if any, is reserved by the next write there).
    while (g1 <= last && !BitSet(prealloc_claimed_, g1)) SetBit(&prealloc_claimed_, g1++);
  }
  // Outside the lock: other writers of other granules do not wait for it. A
  // write racing into a granule being reserved just allocates as usual.
  // Only inside the file: space reserved past its end could not be punched.
  const uint64_t begin = DataOffset(g0 * gran);
  const uint64_t end = std::min(DataOffset(std::min(g1 * gran, vsize_.load())), data_->Size());
  if (begin >= end) return;
  // Never the filesystem's last free space: fallocate takes what it can
  // before it fails with ENOSPC, and the journal's next record, a
  // compaction or the seal's index would then find none (a volume whose
  // commit fails stops taking writes). Not knowing counts as too little.
  auto space = env_->SpaceOf(DirName(base_));
  if (!space.ok()) return;
  const uint64_t avail = space->blocks_avail * space->block_size;
  if (avail < kPreallocHeadroom || avail - kPreallocHeadroom < end - begin) return;
  Status s = data_->Preallocate(begin, end - begin);
  if (s.code() == Status::Code::kNotSupported) prealloc_unsupported_ = true;
  // Failed: maybe part of the range was kept. Claimed, so a seal gives it
  // back; not counted as reserved, so the stats do not count on it.
  if (!s.ok()) return;
  MutexLock l(&prealloc_mu_);
  if (prealloc_granule_ != gran) return;  // forgotten meanwhile
  for (uint64_t g = g0; g < g1; ++g) SetBit(&prealloc_reserved_, g);
}

std::vector<std::pair<uint64_t, uint64_t>> Upper::GranuleRanges(bool claimed) const {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  const uint64_t vs = vsize_.load();
  MutexLock l(&prealloc_mu_);
  const uint64_t gran = prealloc_granule_;
  if (gran == 0) return out;
  const std::vector<uint64_t>& words = claimed ? prealloc_claimed_ : prealloc_reserved_;
  for (size_t w = 0; w < words.size(); ++w) {
    uint64_t bits = words[w];
    while (bits) {
      const int b = __builtin_ctzll(bits);
      bits &= bits - 1;
      const uint64_t g = w * 64 + static_cast<uint64_t>(b);
      const uint64_t begin = g * gran, end = std::min(begin + gran, vs);
      if (begin >= end) continue;
      if (!out.empty() && out.back().second == begin) {
        out.back().second = end;
      } else {
        out.emplace_back(begin, end);
      }
    }
  }
  return out;
}

uint64_t Upper::PreallocatedBytes() const {
  // Reserved granules minus what the map says of them.
  const auto ranges = GranuleRanges(/*claimed=*/false);
  uint64_t reserved = 0, mapped_in = 0;
  for (const auto& [b, e] : ranges) reserved += e - b;
  if (reserved == 0) return 0;
  ReaderLock lk(&mu_);
  for (const auto& [b, e] : ranges) {
    map_.Walk(b / kSectorSize, (e - b) / kSectorSize,
              [&](uint64_t, uint64_t n, const ExtentMap::Extent* x, uint64_t) {
                if (x) mapped_in += n * kSectorSize;  // data, or zeroed (punched)
              });
  }
  return reserved - std::min(reserved, mapped_in);
}

Status Upper::ReleaseUnmappedReservations(const std::vector<Segment>& segments) {
  // Segments are sorted and disjoint (sectors). Punch every part of a
  // claimed granule that no data segment covers: nothing maps it, so no read
  // of the sealed layer (nor of the upper, should the seal be undone) looks
  // there, and the punch changes no content anyone sees.
  size_t i = 0;
  for (const auto& [begin, end] : GranuleRanges(/*claimed=*/true)) {
    uint64_t pos = begin;
    while (i < segments.size() &&
           (segments[i].offset + segments[i].length) * kSectorSize <= pos) {
      ++i;
    }
    for (size_t k = i; k < segments.size() && pos < end; ++k) {
      const Segment& sg = segments[k];
      const uint64_t sb = sg.offset * kSectorSize, se = (sg.offset + sg.length) * kSectorSize;
      if (sb >= end) break;
      if (sg.zeroed) continue;  // punched when it was zeroed; a gap like any other
      if (sb > pos) OVBD_RETURN_IF_ERROR(data_->PunchHole(DataOffset(pos), sb - pos));
      pos = std::max(pos, se);
    }
    if (pos < end) OVBD_RETURN_IF_ERROR(data_->PunchHole(DataOffset(pos), end - pos));
  }
  return Status::OK();
}

bool Upper::dirty() const {
  ReaderLock lk(&mu_);
  return !pending_.empty();
}

uint64_t Upper::DataBytesNeeded() const {
  ReaderLock lk(&mu_);
  uint64_t end = 0;  // sectors
  for (const auto& [off, e] : map_.Extents()) {
    if (!e.zeroed) end = off + e.length;
  }
  return DataOffset(end * kSectorSize);
}

Status Upper::AppendRecords(const std::vector<PendingOp>& ops) {
  std::string buf(ops.size() * uj::kRecordSize, '\0');
  for (size_t i = 0; i < ops.size(); ++i) {
    uj::Record r;
    r.type = ops[i].type;
    r.batch_index = i <= uj::kMaxBatchIndex ? static_cast<uint32_t>(i) : 0;
    r.seq = next_seq_ + i;
    r.offset = ops[i].offset;
    r.length = ops[i].length;
    uj::EncodeRecord(r, buf.data() + i * uj::kRecordSize);
  }
  Status s = jnl_->WriteAt(jnl_end_, buf.data(), buf.size());
  if (s.ok()) s = env_->CrashPoint("upper.commit.before_journal_sync");
  if (s.ok()) s = jnl_->Sync();
  if (!s.ok()) {
    // Leave no half-written batch behind: the records are retried next time.
    (void)jnl_->Truncate(jnl_end_);
    return s;
  }
  jnl_end_ += buf.size();
  jnl_records_ += ops.size();
  jnl_end_seen_ = jnl_end_;
  jnl_records_seen_ = jnl_records_;
  next_seq_ += ops.size();
  return Status::OK();
}

Status Upper::Compact(const std::vector<Segment>& segs) {
  // Write the minimal journal to a new file and rename it over the old one:
  // a crash leaves either the old journal or the new, both complete.
  const std::string path = JournalPath(base_);
  const std::string tmp = path + ".compact";
  if (env_->Exists(tmp)) OVBD_RETURN_IF_ERROR(env_->Remove(tmp));
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> nj, env_->OpenRW(tmp, true));
  // Fresh sequence numbers past every old one, so records of the two files
  // can never be confused.
  const uint64_t first = next_seq_ + 1;
  std::string buf(uj::kHeaderSize + segs.size() * uj::kRecordSize, '\0');
  uj::Header h;
  h.first_seq = first;
  h.uuid = uuid_;
  uj::EncodeHeader(h, buf.data());
  for (size_t i = 0; i < segs.size(); ++i) {
    uj::Record r;
    r.type = segs[i].zeroed ? uj::kZero : uj::kData;
    r.seq = first + i;
    r.offset = segs[i].offset;
    r.length = segs[i].length;
    uj::EncodeRecord(r, buf.data() + uj::kHeaderSize + i * uj::kRecordSize);
  }
  Status s = nj->WriteAt(0, buf.data(), buf.size());
  if (s.ok()) s = nj->Sync();
  if (s.ok()) s = env_->CrashPoint("upper.compact.before_rename");
  if (s.ok()) s = env_->Rename(tmp, path);
  if (!s.ok()) {
    // The old journal is intact and still in use; the new one is not needed
    // (the next commit compacts again). Do not leave it behind.
    nj.reset();
    (void)env_->Remove(tmp);
    return s;
  }
  OVBD_RETURN_IF_ERROR(env_->SyncDir(DirName(path)));
  jnl_ = std::move(nj);
  jnl_end_ = buf.size();
  jnl_records_ = segs.size();
  jnl_end_seen_ = jnl_end_;
  jnl_records_seen_ = jnl_records_;
  next_seq_ = first + segs.size();
  compactions_++;
  return Status::OK();
}

Status Upper::Commit() {
  uint64_t target;
  {
    ReaderLock lk(&mu_);
    target = applied_;
  }
  MutexLock cl(&commit_mu_);
  if (committed_ >= target) return Status::OK();  // someone else's commit covered us
  std::vector<PendingOp> ops;
  std::vector<Segment> snapshot;
  uint64_t upto;
  bool compact = false;
  {
    WriterLock lk(&mu_);
    ops.swap(pending_);
    upto = applied_;
    const uint64_t after = jnl_records_ + ops.size();
    if (after >= compact_min_records_ && after > kCompactRatio * map_.size()) {
      compact = true;
      snapshot = map_.ToSegments(std::numeric_limits<uint32_t>::max());
    }
  }
  auto restore = [&] {
    // Failed commit: keep the operations pending so a later commit retries.
    WriterLock lk(&mu_);
    ops.insert(ops.end(), pending_.begin(), pending_.end());
    pending_.swap(ops);
  };
  Status s = ops.empty() && !compact ? Status::OK() : data_->Sync();
  if (s.ok()) s = env_->CrashPoint("upper.commit.after_data_sync");
  if (s.ok() && !ops.empty()) s = compact ? Compact(snapshot) : AppendRecords(ops);
  if (!s.ok()) {
    restore();
    return s;
  }
  committed_ = upto;
  commits_++;
  return Status::OK();
}

Upper::Sealed Upper::Freeze(const std::string& message) {
  Sealed out;
  {
    WriterLock lk(&mu_);
    sealed_ = true;
    out.segments = map_.ToSegments(lsmt::kMaxEntryLength);
  }
  lsmt::Header h = DataHeader(uuid_, parent_uuid_, vsize_.load());
  h.user_tag = message.substr(0, lsmt::kUserTagSize - 1);
  // The index starts at the first 4 KiB boundary past the data of the
  // whole virtual range, so it can never overlap a sector's data.
  h.index_offset =
      (DataOffset(vsize_.load()) + lsmt::kHeaderSize - 1) / lsmt::kHeaderSize * lsmt::kHeaderSize;
  h.index_size = (out.segments.size() + 255) / 256 * 256;  // padded as WriteIndexAndTrailer pads
  if (h.index_size == 0) h.index_size = 256;
  // What a reader of the sealed file sees: the trailer.
  h.flags = lsmt::kFlagDataFile | lsmt::kFlagSealed;
  out.header = h;
  return out;
}

Status Upper::WriteSeal(const lsmt::Header& trailer, const std::vector<Segment>& segments) {
  lsmt::Header h = trailer;
  // Reserved but unwritten space must not stay in the layer for good.
  OVBD_RETURN_IF_ERROR(ReleaseUnmappedReservations(segments));
  auto end = lsmt::WriteIndexAndTrailer(data_.get(), h.index_offset, segments, h,
                                        /*pad=*/true, /*sync=*/false);
  if (!end.ok()) return end.status();
  OVBD_RETURN_IF_ERROR(env_->CrashPoint("upper.seal.after_index"));
  h.flags = lsmt::kFlagHeader | lsmt::kFlagDataFile | lsmt::kFlagSealed;
  h.index_offset = 0;
  h.index_size = 0;
  char block[lsmt::kHeaderSize];
  lsmt::EncodeHeader(h, block);
  OVBD_RETURN_IF_ERROR(data_->WriteAt(0, block, sizeof block));
  // One sync covers the data written since the last commit and the index.
  return data_->Sync();
}

Result<Upper::Sealed> Upper::Seal(const std::string& message) {
  Sealed out = Freeze(message);
  Status s = WriteSeal(out.header, out.segments);
  if (!s.ok()) {
    (void)Unseal();
    return s;
  }
  return out;
}

Status Upper::Unseal() {
  WriterLock lk(&mu_);
  const uint64_t end = DataOffset(vsize_.load());
  if (data_->Size() > end) OVBD_RETURN_IF_ERROR(data_->Truncate(end));
  char block[lsmt::kHeaderSize];
  lsmt::EncodeHeader(DataHeader(uuid_, parent_uuid_, vsize_.load()), block);
  OVBD_RETURN_IF_ERROR(data_->WriteAt(0, block, sizeof block));
  sealed_ = false;
  return Status::OK();
}

Status Upper::CheckSizeFits(RWFile* data, uint64_t vsize) {
  // The data file holds sector s at 4096 + 512 s, and a seal appends an
  // index and trailer after the whole range: make sure the backing
  // filesystem allows a file that long (ext4 stops at 16 TiB) before
  // promising such a disk. Truncation only changes the apparent size.
  const uint64_t before = data->Size();
  Status s = data->Truncate(DataOffset(vsize) + 2 * lsmt::kHeaderSize);
  if (s.ok()) s = data->Truncate(before);
  if (!s.ok() && s.os_errno() == EFBIG) {
    return Status::TooLarge("a volume of " + std::to_string(vsize) +
                            " bytes is larger than the store's filesystem allows for one file");
  }
  return s;
}

Status Upper::Resize(uint64_t new_size) {
  if (new_size % kSectorSize) return Status::InvalidArgument("size must be a multiple of 512");
  if (new_size < vsize_.load()) return Status::InvalidArgument("volumes cannot shrink");
  OVBD_RETURN_IF_ERROR(CheckSizeFits(data_.get(), new_size));
  // The file spans the whole data area (see Create); not a sealed one,
  // whose index follows it.
  if (!sealed_ && !read_only_ && data_->Size() == DataOffset(vsize_.load())) {
    OVBD_RETURN_IF_ERROR(data_->Truncate(DataOffset(new_size)));
  }
  vsize_ = new_size;
  return Status::OK();
}

UpperStats Upper::Stats() const {
  UpperStats st;
  {
    ReaderLock lk(&mu_);
    st.mapped_sectors = map_.MappedSectors();
    st.extents = map_.size();
  }
  auto alloc = data_->AllocatedBytes();
  st.allocated_bytes = alloc.ok() ? alloc.value() : 0;
  st.preallocated_bytes = std::min(PreallocatedBytes(), st.allocated_bytes);
  st.journal_bytes = jnl_end_seen_.load(std::memory_order_relaxed);
  st.journal_records = jnl_records_seen_.load(std::memory_order_relaxed);
  st.commits = commits_;
  st.compactions = compactions_;
  return st;
}

std::vector<Segment> Upper::Segments() const {
  ReaderLock lk(&mu_);
  return map_.ToSegments(lsmt::kMaxEntryLength);
}

}  // namespace ovbd
