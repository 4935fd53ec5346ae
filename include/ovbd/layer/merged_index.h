// MergedIndex: the read-only lower layers of a volume flattened into one
// sorted array of segments, each tagged with the layer that owns it.
//
// Built once when a stack is opened (O(total entries · log)), so a lookup
// costs the same whether the stack has 1 layer or 255. Lookups go through a
// direct-mapped slot table: the index's span is cut into slots of 2^shift
// sectors (about one slot per two segments), and each 16-byte slot holds the
// answer for its first sector plus the slot-relative ends of the first three
// segments that end inside it. A lookup is one slot load and three
// branch-free compares, so independent lookups overlap their cache misses
// (see docs/PERFORMANCE.md). Only a lookup past the third end of a slot in
// which more than three segments end (a locally dense index) binary-searches
// that slot's segments, and only an index too sparse for a table of bounded
// size (segments tens of TiB apart) goes without a table.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <vector>

#include "ovbd/layer/segment.h"

namespace ovbd {

namespace internal {
// Storage for large lookup tables: blocks of 2 MiB or more are mapped
// 2 MiB-aligned and advised for transparent huge pages before first touch,
// so random lookups do not pay a page walk each (see docs/PERFORMANCE.md).
void* AllocTable(size_t bytes);
void FreeTable(void* p, size_t bytes);
// Advises the 2 MiB-aligned middle of [p, p+bytes) for huge pages.
void AdviseHugePages(void* p, size_t bytes);

template <typename T>
struct TableAllocator {
  using value_type = T;
  TableAllocator() = default;
  template <typename U>
  TableAllocator(const TableAllocator<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(AllocTable(n * sizeof(T))); }
  void deallocate(T* p, size_t n) { FreeTable(p, n * sizeof(T)); }
  template <typename U>
  bool operator==(const TableAllocator<U>&) const { return true; }
};
}  // namespace internal

class MergedIndex {
 public:
  static constexpr size_t kMaxLayers = 255;

  MergedIndex() = default;
  // `layers` are the layers' segment lists, bottom first (at most 255).
  // Upper layers win; zeroed ranges hide lower data and, since nothing is
  // below the bottom, are dropped: a gap in the merged index reads zeros.
  static MergedIndex Build(const std::vector<const std::vector<Segment>*>& layers);

  // The index of `below` with one more layer on top (tagged `layer`), in
  // O(n + m): what a snapshot needs, since the sealed upper lands on top.
  static MergedIndex WithTop(const MergedIndex& below, const std::vector<Segment>& top,
                             uint8_t layer);

  // The same overlay as a plain sorted list. With keep_zeroed the zeroed
  // ranges of upper layers stay in it (as zeroed segments): what merging
  // layers into one needs, since the result may sit above other layers.
  static std::vector<Segment> Overlay(const std::vector<const std::vector<Segment>*>& layers,
                                      bool keep_zeroed);

  // Index of the first segment whose end is after `sector` (size() if none).
  size_t FindFirst(uint64_t sector) const {
    const uint64_t rel = sector - base_;  // wraps for sector < base_
    if (rel >= limit_) [[unlikely]]
      return FindFirstOutside(sector);
    const Slot& s = slots_[rel >> shift_];
    const uint32_t r = static_cast<uint32_t>(rel & mask_);
    const size_t i = (s.first & kIndexMask) + (s.end[0] <= r) + (s.end[1] <= r) + (s.end[2] <= r);
    // Only when more than three segments end in the slot and the sector
    // lies beyond the third does the answer need a search.
    if (((s.first >> 31) & (s.end[2] <= r)) != 0) [[unlikely]]
      return FindFirstOverflow(sector, rel >> shift_);
    return i;
  }

  // Calls fn(offset, length, const Segment* seg_or_null) for each piece of
  // [offset, offset+length) in sectors; seg is null for holes (read zeros).
  // For mapped pieces the data is at seg->moffset + (offset - seg->offset).
  template <typename F>
  void Walk(uint64_t offset, uint64_t length, F&& fn) const {
    const uint64_t end = offset + length;
    uint64_t pos = offset;
    for (size_t i = FindFirst(offset); pos < end && i < segs_.size(); ++i) {
      const Segment& s = segs_[i];
      if (s.offset >= end) break;
      if (s.offset > pos) {
        fn(pos, s.offset - pos, static_cast<const Segment*>(nullptr));
        pos = s.offset;
      }
      uint64_t piece_end = s.end() < end ? s.end() : end;
      fn(pos, piece_end - pos, &s);
      pos = piece_end;
    }
    if (pos < end) fn(pos, end - pos, static_cast<const Segment*>(nullptr));
  }

  const std::vector<Segment>& segments() const { return segs_; }
  size_t size() const { return segs_.size(); }
  size_t MemoryBytes() const {
    return segs_.capacity() * sizeof(Segment) + slots_.capacity() * sizeof(Slot);
  }

 private:
  // One slot of the lookup table (4 per cache line).
  struct Slot {
    // FindFirst(slot start); kOverflow set when more than 3 segments end in
    // the slot (then end[] holds the first three).
    uint32_t first;
    // Ends, relative to the slot start, of segments first, first+1, first+2
    // when they end inside the slot (in (0, 2^shift]); kNoEnd otherwise.
    uint32_t end[3];
  };
  static_assert(sizeof(Slot) == 16, "four slots per cache line");
  static constexpr uint32_t kOverflow = 1u << 31;
  static constexpr uint32_t kIndexMask = kOverflow - 1;
  static constexpr uint32_t kNoEnd = UINT32_MAX;  // above every r (shift <= 31)
  static constexpr unsigned kMaxShift = 31;       // so slot-relative ends fit 32 bits

  // Out of [base_, base_ + limit_), or no slot table: a binary search.
  size_t FindFirstOutside(uint64_t sector) const;
  // Past the third end of an overflowing slot.
  size_t FindFirstOverflow(uint64_t sector, uint64_t slot) const;
  void BuildSlots();

  std::vector<Segment> segs_;
  // One slot per 2^shift_ sectors from base_, plus a sentinel slot whose
  // `first` is size(). Empty when the index has no table.
  std::vector<Slot, internal::TableAllocator<Slot>> slots_;
  uint64_t base_ = 0;   // slot 0 starts at the first segment's offset
  uint64_t limit_ = 0;  // sectors the table covers (0 without a table)
  uint64_t mask_ = 0;   // 2^shift_ - 1
  unsigned shift_ = 0;
};

}  // namespace ovbd
