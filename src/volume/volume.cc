#include "ovbd/volume/volume.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <optional>

namespace ovbd {

using lsmt::kSectorSize;

namespace {
constexpr uint64_t kSectorMask = kSectorSize - 1;
uint64_t AlignDown(uint64_t v) { return v & ~kSectorMask; }
uint64_t AlignUp(uint64_t v) { return (v + kSectorMask) & ~kSectorMask; }
}  // namespace

std::shared_ptr<Stack> Stack::Make(std::vector<std::shared_ptr<lsmt::Layer>> lowers,
                                   std::shared_ptr<Upper> upper) {
  auto st = std::make_shared<Stack>();
  std::vector<const std::vector<Segment>*> segs;
  segs.reserve(lowers.size());
  for (const auto& l : lowers) segs.push_back(&l->segments());
  st->index = MergedIndex::Build(segs);
  st->lowers = std::move(lowers);
  st->upper = std::move(upper);
  return st;
}

std::shared_ptr<Stack> Stack::WithTop(const Stack& below, std::shared_ptr<lsmt::Layer> layer,
                                     std::shared_ptr<Upper> upper) {
  auto st = std::make_shared<Stack>();
  st->index = MergedIndex::WithTop(below.index, layer->segments(),
                                   static_cast<uint8_t>(below.lowers.size()));
  st->lowers = below.lowers;
  st->lowers.push_back(std::move(layer));
  st->upper = std::move(upper);
  return st;
}

Volume::Volume(std::string name, uint64_t size, std::vector<std::shared_ptr<lsmt::Layer>> lowers,
               std::shared_ptr<Upper> upper, bool read_only)
    : name_(std::move(name)), size_(size), read_only_(read_only || upper == nullptr) {
  MutexLock lk(&stack_mu_);
  stack_ = Stack::Make(std::move(lowers), std::move(upper));
}

Volume::~Volume() = default;

std::shared_ptr<const Stack> Volume::stack() const {
  MutexLock lk(&stack_mu_);
  return stack_;
}

void Volume::InstallStack(std::shared_ptr<const Stack> st) {
  MutexLock lk(&stack_mu_);
  stack_ = std::move(st);
}

Status Volume::PlanAligned(const Stack& st, uint64_t off, uint64_t len,
                           std::vector<ReadPiece>* out, bool* from_lowers) const {
  Status failed;
  auto add = [out](uint64_t n, const ReadableFile* f, uint64_t foff) {
    if (!out->empty()) {
      ReadPiece& p = out->back();
      // Extend contiguous pieces: fewer, larger reads and splices.
      if (p.file == f && (f == nullptr || p.file_offset + p.length == foff)) {
        p.length += n;
        return;
      }
    }
    out->push_back(ReadPiece{n, f, foff});
  };
  auto lower = [&](uint64_t o, uint64_t n) {
    st.index.Walk(o / kSectorSize, n / kSectorSize,
                  [&](uint64_t so, uint64_t sn, const Segment* seg) {
                    if (!seg) return add(sn * kSectorSize, nullptr, 0);
                    if (from_lowers) *from_lowers = true;
                    const auto& layer = st.lowers[seg->layer];
                    // A layer whose file changed behind our back serves
                    // nothing: the ranges it maps fail, the rest still work.
                    if (layer->failed() && failed.ok()) failed = layer->FailedStatus();
                    add(sn * kSectorSize, &layer->file(),
                        (seg->moffset + (so - seg->offset)) * kSectorSize);
                  });
  };
  if (!st.upper) {
    lower(off, len);
    return failed;
  }
  st.upper->Walk(off, len, [&](uint64_t o, uint64_t n, UpperPiece p) {
    switch (p) {
      case UpperPiece::kData: return add(n, st.upper->data_file().get(), Upper::DataOffset(o));
      case UpperPiece::kZero: return add(n, nullptr, 0);
      case UpperPiece::kAbsent: return lower(o, n);
    }
  });
  return failed;
}

namespace {
// A piece of a plan may be spliced straight from its file's descriptor, and a
// splice cannot tell a short read from the end of the volume: a layer or
// upper data file truncated behind our back would silently read short. So
// before a plan is handed out, every file in it is checked against its
// current size (one fstat per file; for files without a descriptor a
// comparison with their size): a piece past the end is EIO, naming the file
// and the range.
Status CheckPiecesInFiles(const std::vector<ReadPiece>& pieces) {
  // A plan holds few pieces and fewer files: check each file once, at the
  // end of its farthest piece.
  constexpr size_t kMaxFiles = 8;
  const ReadPiece* farthest[kMaxFiles];
  size_t nfiles = 0;
  for (const ReadPiece& p : pieces) {
    if (!p.file) continue;
    size_t i = 0;
    while (i < nfiles && farthest[i]->file != p.file) ++i;
    if (i == nfiles) {
      if (nfiles == kMaxFiles) {  // unusual: check this piece on its own
        OVBD_RETURN_IF_ERROR(p.file->CheckRange(p.file_offset, p.length));
        continue;
      }
      farthest[nfiles++] = &p;
    } else if (p.file_offset + p.length > farthest[i]->file_offset + farthest[i]->length) {
      farthest[i] = &p;
    }
  }
  for (size_t i = 0; i < nfiles; ++i) {
    const ReadPiece& p = *farthest[i];
    Status s = p.file->CheckRange(p.file_offset, p.length);
    if (s.ok()) continue;
    // Name the first piece of that file that does not fit (error path only).
    for (const ReadPiece& q : pieces) {
      if (q.file != p.file) continue;
      Status first = q.file->CheckRange(q.file_offset, q.length);
      if (!first.ok()) return first;
    }
    return s;
  }
  return Status::OK();
}
}  // namespace

Result<ReadPlan> Volume::PlanRead(uint64_t off, uint64_t len) const {
  ReadPlan plan;
  plan.stack = stack();

  const uint64_t size = size_.load();
  if (off >= size || len == 0) return plan;
  len = std::min(len, size - off);
  plan.length = len;
  const uint64_t aoff = AlignDown(off);
  const uint64_t aend = AlignUp(off + len);
  CountForeground();
  bool from_lowers = false;
  OVBD_RETURN_IF_ERROR(PlanAligned(*plan.stack, aoff, aend - aoff, &plan.pieces, &from_lowers));
  if (from_lowers && copy_on_read()) {
    // Copy-on-read, deferred: the read is served from the lowers as usual
    // (no write on the read path) and its range goes to the hydration job,
    // which copies it next, while the data is still in the page cache (or
    // a remote layer's block cache): nothing is fetched twice.
    NoteLowerRead(aoff, aend - aoff);
  }
  // Trim the sector padding off both ends: within a piece the mapping is
  // linear, so byte-granular trimming is exact.
  uint64_t head = off - aoff;
  while (head > 0) {
    ReadPiece& p = plan.pieces.front();
    uint64_t cut = std::min(head, p.length);
    p.length -= cut;
    if (p.file) p.file_offset += cut;
    head -= cut;
    if (p.length == 0) plan.pieces.erase(plan.pieces.begin());
  }
  uint64_t tail = aend - (off + len);
  while (tail > 0) {
    ReadPiece& p = plan.pieces.back();
    uint64_t cut = std::min(tail, p.length);
    p.length -= cut;
    tail -= cut;
    if (p.length == 0) plan.pieces.pop_back();
  }
  OVBD_RETURN_IF_ERROR(CheckPiecesInFiles(plan.pieces));
  return plan;
}

namespace {
// Reads the pieces of a plan into consecutive memory at buf.
Status ReadPieces(const std::vector<ReadPiece>& pieces, char* buf) {
  for (const ReadPiece& piece : pieces) {
    if (!piece.file) {
      std::memset(buf, 0, piece.length);
    } else {
      // Every mapped byte was written to its file (an upper's data before its
      // map entry), so a short read means the file shrank under us: EIO.
      OVBD_RETURN_IF_ERROR(piece.file->ReadMapped(piece.file_offset, piece.length, buf));
    }
    buf += piece.length;
  }
  return Status::OK();
}
}  // namespace

Result<size_t> Volume::Read(uint64_t off, size_t len, char* buf) const {
  OVBD_ASSIGN_OR_RETURN(ReadPlan plan, PlanRead(off, len));
  OVBD_RETURN_IF_ERROR(ReadPieces(plan.pieces, buf));
  return static_cast<size_t>(plan.length);
}

Status Volume::ReadAligned(const Stack& st, uint64_t off, uint64_t len, char* buf) const {
  std::vector<ReadPiece> pieces;
  OVBD_RETURN_IF_ERROR(PlanAligned(st, off, len, &pieces));
  return ReadPieces(pieces, buf);
}

Result<size_t> Volume::Write(uint64_t off, const char* buf, size_t len) {
  if (read_only_) return Status::ReadOnly(name_ + " is read-only");
  CountForeground();
  WriteGate::Writer gate(gate_);
  if (failed_flag_.load()) return health();
  const uint64_t size = size_.load();
  if (off >= size) {
    return Status::NoSpace(name_ + ": write at " + std::to_string(off) + " is past the end (" +
                           std::to_string(size) + " bytes)");
  }
  len = static_cast<size_t>(std::min<uint64_t>(len, size - off));
  if (len == 0) return size_t{0};
  auto st = stack();
  const uint64_t head = off & kSectorMask;
  const uint64_t tail = (off + len) & kSectorMask;
  if (head == 0 && tail == 0) {
    OVBD_RETURN_IF_ERROR(st->upper->Write(off, buf, len));
    return len;
  }
  // Partial sectors: read the edge sectors from the merged view, overlay the
  // new bytes, write whole sectors. Stripe locks keep two partial writes to
  // the same sector from losing each other's bytes.
  const uint64_t aoff = AlignDown(off);
  const uint64_t aend = AlignUp(off + len);
  Mutex& m1 = StripeFor(aoff);
  Mutex& m2 = StripeFor(aend - 1);
  // Always in stripe order, so two writes can never deadlock.
  Mutex* first = std::min(&m1, &m2, std::less<Mutex*>());
  Mutex* second = std::max(&m1, &m2, std::less<Mutex*>());
  MutexLock l1(first);
  std::optional<MutexLock> l2;
  if (second != first) l2.emplace(second);
  std::vector<char> tmp(aend - aoff);
  if (head) OVBD_RETURN_IF_ERROR(ReadAligned(*st, aoff, kSectorSize, tmp.data()));
  if (tail && (aend - kSectorSize != aoff || !head)) {
    OVBD_RETURN_IF_ERROR(
        ReadAligned(*st, aend - kSectorSize, kSectorSize, tmp.data() + tmp.size() - kSectorSize));
  }
  std::memcpy(tmp.data() + head, buf, len);
  OVBD_RETURN_IF_ERROR(st->upper->Write(aoff, tmp.data(), tmp.size()));
  return len;
}

Status Volume::Discard(uint64_t off, uint64_t len) {
  if (read_only_) return Status::ReadOnly(name_ + " is read-only");
  const uint64_t size = size_.load();
  if (off >= size || len == 0) return Status::OK();
  len = std::min(len, size - off);
  CountForeground();
  // Whole sectors are zeroed in the upper; partial edge sectors get explicit
  // zero bytes so their other bytes survive.
  const uint64_t inner_begin = AlignUp(off);
  const uint64_t inner_end = AlignDown(off + len);
  static const char kZeros[kSectorSize] = {};
  if (inner_begin >= inner_end) {
    std::vector<char> z(len, 0);
    return Write(off, z.data(), len).status();
  }
  if (inner_begin > off) {
    OVBD_RETURN_IF_ERROR(Write(off, kZeros, inner_begin - off).status());
  }
  if (off + len > inner_end) {
    OVBD_RETURN_IF_ERROR(Write(inner_end, kZeros, off + len - inner_end).status());
  }
  WriteGate::Writer gate(gate_);
  if (failed_flag_.load()) return health();
  return stack()->upper->Zero(inner_begin, inner_end - inner_begin);
}

Status Volume::Flush() {
  if (read_only_) return Status::OK();
  for (;;) {
    WriteGate::Writer gate(gate_);
    {
      MutexLock l(&commit_mu_);
      if (!failed_.ok()) return failed_;
      // Seen inside the gate: no barrier can begin until this flush leaves
      // it, so the upper committed below is the one the store has recorded.
      if (!commit_pending_) return stack()->upper->Commit();
    }
    gate.Leave();  // the barrier's owner may need to quiesce to undo it
    MutexLock l(&commit_mu_);
    commit_cv_.Wait([&] {
      commit_mu_.AssertHeld();
      return !commit_pending_;
    });
  }
}

void Volume::BeginCommit() {
  MutexLock l(&commit_mu_);
  commit_pending_ = true;
}

void Volume::EndCommit() {
  MutexLock l(&commit_mu_);
  commit_pending_ = false;
  commit_cv_.SignalAll();
}

void Volume::Fail(Status why) {
  MutexLock l(&commit_mu_);
  failed_ = Status::IOError(name_ + ": failed (" + why.ToString() +
                            "); reopen the store to return to its last durable state",
                            EIO);
  failed_flag_ = true;
  commit_pending_ = false;
  commit_cv_.SignalAll();
}

Status Volume::health() const {
  // The store asks under its state lock; a flush may hold commit_mu_
  // through an fsync, so a healthy volume answers without it.
  if (!failed_flag_.load()) return Status::OK();
  MutexLock l(&commit_mu_);
  return failed_;
}

bool Volume::dirty() const {
  auto st = stack();
  return st->upper && st->upper->dirty();
}

Status Volume::Grow(uint64_t new_size) {
  if (read_only_) return Status::ReadOnly(name_ + " is read-only");
  if (new_size < size_.load()) {
    return Status::InvalidArgument(name_ + ": volumes can only grow (" +
                                   std::to_string(size_.load()) + " -> " +
                                   std::to_string(new_size) + " refused)");
  }
  WriteGate::Closed gate(gate_);
  OVBD_RETURN_IF_ERROR(stack()->upper->Resize(new_size));
  size_ = new_size;
  return Status::OK();
}

Status Volume::WithWritesQuiesced(const std::function<Status()>& fn) {
  WriteGate::Closed gate(gate_);
  return fn();
}

namespace {
// Calls fn(offset, length, segment) (sectors) for each piece of the byte
// range [off, off+len) that `st` reads from a lower's data: mapped by the
// merged index where the upper (if any) holds nothing. What hydration
// copies.
template <typename F>
void ForEachLowerData(const Stack& st, uint64_t off, uint64_t len, F&& fn) {
  if (st.lowers.empty()) return;
  auto lower = [&](uint64_t o, uint64_t n) {
    st.index.Walk(o / kSectorSize, n / kSectorSize,
                  [&](uint64_t so, uint64_t sn, const Segment* seg) {
                    if (seg) fn(so, sn, *seg);
                  });
  };
  if (!st.upper) return lower(off, len);
  st.upper->Walk(off, len, [&](uint64_t o, uint64_t n, UpperPiece p) {
    if (p == UpperPiece::kAbsent) lower(o, n);
  });
}
}  // namespace

uint64_t Volume::BytesFromLowers(const Stack& st, uint64_t off, uint64_t len) const {
  uint64_t bytes = 0;
  ForEachLowerData(st, off, len, [&](uint64_t, uint64_t sn, const Segment&) { bytes += sn * kSectorSize; });
  return bytes;
}

void Volume::NoteLowerRead(uint64_t off, uint64_t len) const {
  MutexLock lk(&cor_mu_);
  if (!cor_ranges_.empty()) {
    auto& last = cor_ranges_.back();
    if (last.first + last.second == off) {
      last.second += len;
      return;
    }
  }
  // Bounded: past it the job's scan still reaches the range in its turn.
  if (cor_ranges_.size() < kMaxReadRanges) cor_ranges_.emplace_back(off, len);
}

std::vector<std::pair<uint64_t, uint64_t>> Volume::TakeReadRanges() {
  MutexLock lk(&cor_mu_);
  std::vector<std::pair<uint64_t, uint64_t>> out;
  out.swap(cor_ranges_);
  return out;
}

Result<uint64_t> Volume::HydrateRange(const std::shared_ptr<const Stack>& st, uint64_t off,
                                      uint64_t len, std::vector<char>* scratch) {
  HydrateChunk c;
  if (scratch) c.buf.swap(*scratch);
  Status r = ReadForHydrate(st, off, len, &c);
  Result<uint64_t> w = r.ok() ? FillHydrated(c) : Result<uint64_t>(r);
  if (scratch) c.buf.swap(*scratch);
  return w;
}

Status Volume::ReadForHydrate(const std::shared_ptr<const Stack>& st, uint64_t off, uint64_t len,
                              HydrateChunk* c) const {
  c->st = st;
  c->pieces.clear();
  if (read_only_ || !st->upper) return Status::ReadOnly(name_ + " is read-only");
  if (st->lowers.empty() || len == 0) return Status::OK();
  // What to copy: the lowers' data under the upper's absent ranges, as
  // runs contiguous in the volume (a run may cross layers).
  ForEachLowerData(*st, off, len, [&](uint64_t so, uint64_t sn, const Segment& seg) {
    c->pieces.push_back({so * kSectorSize, sn * kSectorSize, st->lowers[seg.layer].get(),
                         (seg.moffset + (so - seg.offset)) * kSectorSize});
  });
  if (c->pieces.empty()) return Status::OK();
  const uint64_t base = c->pieces.front().off;
  const uint64_t span = c->pieces.back().off + c->pieces.back().len - base;
  if (c->buf.size() < span) c->buf.resize(span);
  for (const HydrateChunk::Piece& p : c->pieces) {
    // Each byte is read once: the layer's own cache of decompressed blocks
    // is left to foreground reads.
    Status s = p.layer->ReadDataOnce(p.moff, p.len, c->buf.data() + (p.off - base));
    if (!s.ok()) {
      c->pieces.clear();
      return s.Annotate(name_ + ": hydrating [" + std::to_string(p.off) + ", " +
                        std::to_string(p.off + p.len) + ") from layer " + p.layer->file().Name());
    }
  }
  return Status::OK();
}

Result<uint64_t> Volume::FillHydrated(const HydrateChunk& c) {
  if (c.pieces.empty()) return uint64_t{0};
  const auto& pieces = c.pieces;
  const uint64_t base = pieces.front().off;
  WriteGate::Writer gate(gate_);
  if (failed_flag_.load()) return health();
  // Inside the gate no stack can be installed: if c.st is still current,
  // the lowers just read are the ones below this upper.
  if (stack() != c.st) return Status::Busy(name_ + ": stack changed while hydrating");
  uint64_t written = 0;
  size_t i = 0;
  while (i < pieces.size()) {
    size_t j = i + 1;
    while (j < pieces.size() && pieces[j].off == pieces[j - 1].off + pieces[j - 1].len) ++j;
    const uint64_t roff = pieces[i].off;
    const uint64_t rlen = pieces[j - 1].off + pieces[j - 1].len - roff;
    auto w = c.st->upper->Fill(roff, c.buf.data() + (roff - base), rlen);
    if (!w.ok()) {
      return w.status().Annotate(name_ + ": hydrating [" + std::to_string(roff) + ", " +
                                 std::to_string(roff + rlen) + ") into the upper");
    }
    written += w.value();
    i = j;
  }
  hydrated_bytes_.fetch_add(written, std::memory_order_relaxed);
  return written;
}

VolumeStats Volume::Stats() const {
  auto st = stack();
  VolumeStats s;
  s.size = size_.load();
  s.layers = st->lowers.size();
  s.index_segments = st->index.size();
  if (st->upper) s.upper = st->upper->Stats();
  return s;
}

uint64_t Volume::PreallocatedBytes() const {
  auto st = stack();
  return st->upper ? st->upper->PreallocatedBytes() : 0;
}

}  // namespace ovbd
