#include "ovbd/layer/merged_index.h"

#include <sys/mman.h>

#include <algorithm>
#include <bit>
#include <cstdlib>

#include "ovbd/layer/extent_map.h"

namespace ovbd {

namespace internal {

namespace {
constexpr size_t kHugePage = size_t{2} << 20;
}  // namespace

// Memory hints, not file access: the one OS call outside io/ (an Env would
// add nothing a test could inject).
void* AllocTable(size_t bytes) {
  if (bytes < kHugePage) return ::operator new(bytes);
  // Map 2 MiB more than needed and trim to a 2 MiB-aligned window, so every
  // page of the table can be a huge page.
  const size_t len = (bytes + kHugePage - 1) & ~(kHugePage - 1);
  void* raw = mmap(nullptr, len + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  const uintptr_t r = reinterpret_cast<uintptr_t>(raw);
  const uintptr_t a = (r + kHugePage - 1) & ~(uintptr_t{kHugePage} - 1);
  if (a > r) munmap(raw, a - r);
  if (a + len < r + len + kHugePage) munmap(reinterpret_cast<void*>(a + len), r + kHugePage - a);
  void* p = reinterpret_cast<void*>(a);
  (void)madvise(p, len, MADV_HUGEPAGE);  // best effort: THP may be off
  return p;
}

void AdviseHugePages(void* p, size_t bytes) {
  if (bytes < 2 * kHugePage) return;
  const uintptr_t a = (reinterpret_cast<uintptr_t>(p) + kHugePage - 1) & ~(uintptr_t{kHugePage} - 1);
  const uintptr_t e = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(uintptr_t{kHugePage} - 1);
  if (e > a) (void)madvise(reinterpret_cast<void*>(a), e - a, MADV_HUGEPAGE);
}

void FreeTable(void* p, size_t bytes) {
  if (bytes < kHugePage) return ::operator delete(p);
  munmap(p, (bytes + kHugePage - 1) & ~(kHugePage - 1));
}

}  // namespace internal

std::vector<Segment> MergedIndex::Overlay(const std::vector<const std::vector<Segment>*>& layers,
                                          bool keep_zeroed) {
  std::vector<Segment> segs;
  const size_t n = std::min(layers.size(), kMaxLayers);
  // Sweep from the top layer down. `covered` holds every range some higher
  // layer already decided (as zeroed extents, which coalesce into few
  // nodes); each lower segment contributes only its uncovered pieces.
  ExtentMap covered;
  for (size_t li = n; li-- > 0;) {
    for (const Segment& s : *layers[li]) {
      covered.Walk(s.offset, s.length,
                   [&](uint64_t off, uint64_t len, const ExtentMap::Extent* e, uint64_t) {
                     if (e != nullptr || (s.zeroed && !keep_zeroed)) return;
                     Segment piece;
                     piece.offset = off;
                     piece.length = static_cast<uint32_t>(len);
                     piece.moffset = s.zeroed ? 0 : s.moffset + (off - s.offset);
                     piece.zeroed = s.zeroed;
                     piece.layer = static_cast<uint8_t>(li);
                     segs.push_back(piece);
                   });
      covered.Set(s.offset, s.length, 0, true);
    }
  }
  std::sort(segs.begin(), segs.end(),
            [](const Segment& a, const Segment& b) { return a.offset < b.offset; });
  // Join pieces that continue each other in the same layer.
  std::vector<Segment> out;
  out.reserve(segs.size());
  for (const Segment& s : segs) {
    if (!out.empty()) {
      Segment& p = out.back();
      if (p.end() == s.offset && p.layer == s.layer && p.zeroed == s.zeroed &&
          (s.zeroed || p.moffset + p.length == s.moffset) &&
          uint64_t{p.length} + s.length < (uint64_t{1} << 31)) {
        p.length += s.length;
        continue;
      }
    }
    out.push_back(s);
  }
  return out;
}

MergedIndex MergedIndex::Build(const std::vector<const std::vector<Segment>*>& layers) {
  MergedIndex idx;
  const std::vector<Segment> segs = Overlay(layers, /*keep_zeroed=*/false);
  // Exact-size storage, advised for huge pages before it is first written
  // (best effort: only the 2 MiB-aligned middle of a fresh block benefits).
  idx.segs_.reserve(segs.size());
  internal::AdviseHugePages(idx.segs_.data(), segs.size() * sizeof(Segment));
  idx.segs_.assign(segs.begin(), segs.end());
  idx.BuildSlots();
  return idx;
}

MergedIndex MergedIndex::WithTop(const MergedIndex& below, const std::vector<Segment>& top,
                                 uint8_t layer) {
  MergedIndex idx;
  idx.segs_.reserve(below.segs_.size() + top.size());
  auto emit = [&](Segment s) {
    if (s.length == 0) return;
    if (!idx.segs_.empty()) {
      Segment& p = idx.segs_.back();
      if (p.end() == s.offset && p.layer == s.layer && p.moffset + p.length == s.moffset &&
          uint64_t{p.length} + s.length < (uint64_t{1} << 31)) {
        p.length += s.length;
        return;
      }
    }
    idx.segs_.push_back(s);
  };
  // Walk both sorted lists at once: a top segment (data or zeroed) hides
  // whatever of `below` it covers.
  size_t i = 0;
  Segment cur{};
  bool have = false;
  auto next_below = [&]() {
    have = i < below.segs_.size();
    if (have) cur = below.segs_[i++];
  };
  auto cut_front = [&](uint64_t n) {
    cur.offset += n;
    cur.moffset += n;
    cur.length -= static_cast<uint32_t>(n);
  };
  next_below();
  for (const Segment& t : top) {
    while (have && cur.end() <= t.offset) {  // below pieces entirely before t
      emit(cur);
      next_below();
    }
    if (have && cur.offset < t.offset) {  // a below piece starting before t: keep its head
      Segment head = cur;
      head.length = static_cast<uint32_t>(t.offset - cur.offset);
      emit(head);
      cut_front(t.offset - cur.offset);
    }
    if (!t.zeroed) {
      Segment s = t;
      s.layer = layer;
      emit(s);
    }
    while (have && cur.offset < t.end()) {  // drop what t covers
      if (cur.end() <= t.end()) {
        next_below();
      } else {
        cut_front(t.end() - cur.offset);
      }
    }
  }
  while (have) {
    emit(cur);
    next_below();
  }
  idx.segs_.shrink_to_fit();
  idx.BuildSlots();
  return idx;
}

void MergedIndex::BuildSlots() {
  slots_.clear();
  base_ = limit_ = mask_ = 0;
  shift_ = 0;
  const size_t n = segs_.size();
  // No table for an empty index, nor past 2^31 segments (48 GiB of them: not
  // a real index); FindFirstOutside then binary-searches.
  if (n == 0 || n > kIndexMask) return;
  const uint64_t base = segs_.front().offset;
  const uint64_t limit = segs_.back().end() - base;
  // The widest slots (at most 2^31 sectors) that still give one slot per
  // two segments: 8 bytes of table per segment, two segment ends per slot
  // on average, and a search only past the third of them.
  const uint64_t want = (n + 1) / 2;
  unsigned shift = 0;
  while (shift < kMaxShift && (limit >> (shift + 1)) + 1 >= want) ++shift;
  const uint64_t nslots = (limit >> shift) + 1;
  // Segments spread so thin that even 2^31-sector slots outnumber them
  // many times over: a table would only cost memory.
  if (nslots > 4 * n && nslots > (uint64_t{1} << 16)) return;
  base_ = base;
  limit_ = limit;
  shift_ = shift;
  mask_ = (uint64_t{1} << shift) - 1;
  slots_.resize(nslots + 1);  // + the sentinel
  size_t i = 0;
  for (uint64_t b = 0; b < nslots; ++b) {
    const uint64_t start = b << shift;
    const uint64_t stop = start + (uint64_t{1} << shift);
    Slot& sl = slots_[b];
    sl.first = static_cast<uint32_t>(i);
    sl.end[0] = sl.end[1] = sl.end[2] = kNoEnd;
    // Every segment ending inside (start, stop] belongs to this slot; the
    // next slot starts at the first segment that ends beyond it.
    unsigned c = 0;
    for (; i < n && segs_[i].end() - base_ <= stop; ++i, ++c) {
      if (c < 3) sl.end[c] = static_cast<uint32_t>(segs_[i].end() - base_ - start);
    }
    if (c > 3) sl.first |= kOverflow;
  }
  slots_[nslots] = Slot{static_cast<uint32_t>(n), {kNoEnd, kNoEnd, kNoEnd}};
}

size_t MergedIndex::FindFirstOutside(uint64_t sector) const {
  if (!slots_.empty()) return sector < base_ ? 0 : segs_.size();
  // First index whose end is after `sector`; size() if none.
  auto it = std::partition_point(segs_.begin(), segs_.end(),
                                 [&](const Segment& s) { return s.end() <= sector; });
  return static_cast<size_t>(it - segs_.begin());
}

size_t MergedIndex::FindFirstOverflow(uint64_t sector, uint64_t slot) const {
  // The three recorded ends are exact and all at or before `sector`; the
  // next slot's first segment ends beyond this slot, hence beyond `sector`.
  const size_t lo = (slots_[slot].first & kIndexMask) + 3;
  const size_t hi = slots_[slot + 1].first & kIndexMask;
  auto it = std::partition_point(segs_.begin() + static_cast<ptrdiff_t>(lo),
                                 segs_.begin() + static_cast<ptrdiff_t>(hi),
                                 [&](const Segment& s) { return s.end() <= sector; });
  return static_cast<size_t>(it - segs_.begin());
}

}  // namespace ovbd
