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
constexpr size_t kReplayChunkRecords = 4096;

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
  {
    OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> d, env->OpenRW(DataPath(base), true));
    char block[lsmt::kHeaderSize];
    lsmt::EncodeHeader(DataHeader(uuid, parent_uuid, virtual_size), block);
    OVBD_RETURN_IF_ERROR(d->WriteAt(0, block, sizeof block));
    OVBD_RETURN_IF_ERROR(CheckSizeFits(d.get(), virtual_size));
    OVBD_RETURN_IF_ERROR(d->Sync());
    u->data_ = std::move(d);
  }
  {
    OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> j, env->OpenRW(JournalPath(base), true));
    char block[uj::kHeaderSize];
    uj::Header h;
    h.first_seq = 1;
    h.uuid = uuid;
    uj::EncodeHeader(h, block);
    OVBD_RETURN_IF_ERROR(j->WriteAt(0, block, sizeof block));
    OVBD_RETURN_IF_ERROR(j->Sync());
    u->jnl_ = std::move(j);
  }
  OVBD_RETURN_IF_ERROR(env->SyncDir(DirName(base)));
  u->jnl_end_ = uj::kHeaderSize;
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
  OVBD_ASSIGN_OR_RETURN(u->jnl_, env->OpenRW(JournalPath(base), false));
  OVBD_RETURN_IF_ERROR(u->Replay(read_only));
  return u;
}

Status Upper::Replay(bool read_only) {
  const std::string& what = jnl_->Name();
  char hb[uj::kHeaderSize];
  OVBD_RETURN_IF_ERROR(jnl_->ReadExact(0, sizeof hb, hb));
  uj::Header h;
  OVBD_RETURN_IF_ERROR(uj::DecodeHeader(hb, what, &h));
  if (h.uuid != uuid_) {
    return Status::Corruption(what + ": journal belongs to upper " + h.uuid + ", data file is " +
                              uuid_);
  }
  const uint64_t vsec = vsize_ / kSectorSize;
  const uint64_t size = jnl_->Size();
  const uint64_t total = size < uj::kHeaderSize ? 0 : (size - uj::kHeaderSize) / uj::kRecordSize;
  std::vector<char> buf(kReplayChunkRecords * uj::kRecordSize);
  uint64_t expect = h.first_seq;
  uint64_t good = 0;
  bool torn = false;
  for (uint64_t i = 0; i < total && !torn;) {
    const uint64_t n = std::min<uint64_t>(kReplayChunkRecords, total - i);
    OVBD_RETURN_IF_ERROR(
        jnl_->ReadExact(uj::kHeaderSize + i * uj::kRecordSize, n * uj::kRecordSize, buf.data()));
    for (uint64_t k = 0; k < n; ++k) {
      uj::Record r;
      if (!uj::DecodeRecord(buf.data() + k * uj::kRecordSize, &r) || r.seq != expect) {
        torn = true;
        break;
      }
      if (r.length == 0 || r.offset > vsec || r.length > vsec - r.offset) {
        return Status::Corruption(what + ": record " + std::to_string(r.seq) + " (sectors " +
                                  std::to_string(r.offset) + "+" + std::to_string(r.length) +
                                  ") lies beyond the volume size");
      }
      if (r.type == uj::kForget) {
        map_.Erase(r.offset, r.length);
      } else {
        map_.Set(r.offset, r.length, r.offset + kHeaderSectors, r.type == uj::kZero);
      }
      ++expect;
      ++good;
    }
    i += n;
  }
  if (torn) {
    // A crash tears at most the last batch of records. If valid records with
    // later sequence numbers follow the bad one, the journal was damaged in
    // the middle: refuse to silently drop acknowledged writes.
    uint64_t later = 0;
    for (uint64_t i = good + 1; i < total; ++i) {
      char rb[uj::kRecordSize];
      OVBD_RETURN_IF_ERROR(jnl_->ReadExact(uj::kHeaderSize + i * uj::kRecordSize, sizeof rb, rb));
      uj::Record r;
      if (uj::DecodeRecord(rb, &r) && r.seq > expect) ++later;
    }
    if (later > 0) {
      return Status::Corruption(what + ": record " + std::to_string(good) + " is damaged and " +
                                std::to_string(later) +
                                " valid records follow it; run `ovbd check --repair`");
    }
  }
  jnl_records_ = good;
  next_seq_ = expect;
  jnl_end_ = uj::kHeaderSize + good * uj::kRecordSize;
  torn_tail_bytes_ = jnl_->Size() > jnl_end_ ? jnl_->Size() - jnl_end_ : 0;
  if (!read_only && jnl_->Size() != jnl_end_) {
    // Cut the torn tail so new records follow the last valid one directly.
    OVBD_RETURN_IF_ERROR(jnl_->Truncate(jnl_end_));
    OVBD_RETURN_IF_ERROR(jnl_->Sync());
  }
  return Status::OK();
}

Result<uint64_t> Upper::CutJournalAtDamage(Env* env, const std::string& base) {
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> j, env->OpenRW(JournalPath(base), false));
  char hb[uj::kHeaderSize];
  OVBD_RETURN_IF_ERROR(j->ReadExact(0, sizeof hb, hb));
  uj::Header h;
  OVBD_RETURN_IF_ERROR(uj::DecodeHeader(hb, j->Name(), &h));
  const uint64_t total = (j->Size() - std::min<uint64_t>(j->Size(), uj::kHeaderSize)) /
                         uj::kRecordSize;
  uint64_t good = 0;
  for (; good < total; ++good) {
    char rb[uj::kRecordSize];
    OVBD_RETURN_IF_ERROR(j->ReadExact(uj::kHeaderSize + good * uj::kRecordSize, sizeof rb, rb));
    uj::Record r;
    if (!uj::DecodeRecord(rb, &r) || r.seq != h.first_seq + good) break;
  }
  OVBD_RETURN_IF_ERROR(j->Truncate(uj::kHeaderSize + good * uj::kRecordSize));
  OVBD_RETURN_IF_ERROR(j->Sync());
  return total - good;
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
  std::unique_lock lk(mu_);
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
  // Data first; the map (and later the journal) only then points at it.
  OVBD_RETURN_IF_ERROR(data_->WriteAt(DataOffset(off), buf, len));
  Apply(off / kSectorSize, len / kSectorSize, uj::kData);
  return Status::OK();
}

Status Upper::Zero(uint64_t off, uint64_t len) {
  OVBD_RETURN_IF_ERROR(CheckWritable(off, len));
  if (len == 0) return Status::OK();
  OVBD_RETURN_IF_ERROR(data_->PunchHole(DataOffset(off), len));
  Apply(off / kSectorSize, len / kSectorSize, uj::kZero);
  return Status::OK();
}

Status Upper::Forget(uint64_t off, uint64_t len) {
  OVBD_RETURN_IF_ERROR(CheckWritable(off, len));
  if (len == 0) return Status::OK();
  OVBD_RETURN_IF_ERROR(data_->PunchHole(DataOffset(off), len));
  Apply(off / kSectorSize, len / kSectorSize, uj::kForget);
  return Status::OK();
}

bool Upper::dirty() const {
  std::shared_lock lk(mu_);
  return !pending_.empty();
}

Status Upper::AppendRecords(const std::vector<PendingOp>& ops) {
  std::string buf(ops.size() * uj::kRecordSize, '\0');
  for (size_t i = 0; i < ops.size(); ++i) {
    uj::Record r;
    r.type = ops[i].type;
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
  OVBD_RETURN_IF_ERROR(nj->WriteAt(0, buf.data(), buf.size()));
  OVBD_RETURN_IF_ERROR(nj->Sync());
  OVBD_RETURN_IF_ERROR(env_->CrashPoint("upper.compact.before_rename"));
  OVBD_RETURN_IF_ERROR(env_->Rename(tmp, path));
  OVBD_RETURN_IF_ERROR(env_->SyncDir(DirName(path)));
  jnl_ = std::move(nj);
  jnl_end_ = buf.size();
  jnl_records_ = segs.size();
  next_seq_ = first + segs.size();
  compactions_++;
  return Status::OK();
}

Status Upper::Commit() {
  uint64_t target;
  {
    std::shared_lock lk(mu_);
    target = applied_;
  }
  std::lock_guard cl(commit_mu_);
  if (committed_ >= target) return Status::OK();  // someone else's commit covered us
  std::vector<PendingOp> ops;
  std::vector<Segment> snapshot;
  uint64_t upto;
  bool compact = false;
  {
    std::unique_lock lk(mu_);
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
    std::unique_lock lk(mu_);
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
    std::unique_lock lk(mu_);
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
  std::unique_lock lk(mu_);
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
  vsize_ = new_size;
  return Status::OK();
}

UpperStats Upper::Stats() const {
  UpperStats st;
  {
    std::shared_lock lk(mu_);
    st.mapped_sectors = map_.MappedSectors();
    st.extents = map_.size();
  }
  auto alloc = data_->AllocatedBytes();
  st.allocated_bytes = alloc.ok() ? alloc.value() : 0;
  std::lock_guard cl(commit_mu_);
  st.journal_bytes = jnl_end_;
  st.journal_records = jnl_records_;
  st.commits = commits_;
  st.compactions = compactions_;
  return st;
}

std::vector<Segment> Upper::Segments() const {
  std::shared_lock lk(mu_);
  return map_.ToSegments(lsmt::kMaxEntryLength);
}

}  // namespace ovbd
