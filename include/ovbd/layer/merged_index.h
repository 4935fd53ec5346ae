// MergedIndex: the read-only lower layers of a volume flattened into one
// sorted array of segments, each tagged with the layer that owns it.
//
// Built once when a stack is opened (O(total entries · log)), so a lookup
// costs the same whether the stack has 1 layer or 255. Lookups go through a
// direct-mapped bucket table (one slot per 2^shift sectors, sized to about
// one slot per segment) that narrows the search to the few segments sharing
// the slot; only a pathologically skewed index falls back to a binary search
// over a slot's range.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "ovbd/layer/segment.h"

namespace ovbd {

class MergedIndex {
 public:
  static constexpr size_t kMaxLayers = 255;

  MergedIndex() = default;
  // `layers` are the layers' segment lists, bottom first (at most 255).
  // Upper layers win; zeroed ranges hide lower data and, since nothing is
  // below the bottom, are dropped: a gap in the merged index reads zeros.
  static MergedIndex Build(const std::vector<const std::vector<Segment>*>& layers);

  // The same overlay as a plain sorted list. With keep_zeroed the zeroed
  // ranges of upper layers stay in it (as zeroed segments): what merging
  // layers into one needs, since the result may sit above other layers.
  static std::vector<Segment> Overlay(const std::vector<const std::vector<Segment>*>& layers,
                                      bool keep_zeroed);

  // Index of the first segment whose end is after `sector` (size() if none).
  size_t FindFirst(uint64_t sector) const {
    if (segs_.empty()) return 0;
    uint64_t b = sector >> shift_;
    if (b >= buckets_.size() - 1) return FindFirstSlow(sector, buckets_.back(), segs_.size());
    uint32_t lo = buckets_[b], hi = buckets_[b + 1];
    // Common case: the slot's first candidate already covers the sector.
    if (lo < segs_.size() && segs_[lo].end() > sector) return lo;
    return FindFirstSlow(sector, lo + 1, hi < segs_.size() ? hi + 1 : segs_.size());
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
    return segs_.capacity() * sizeof(Segment) + buckets_.capacity() * sizeof(uint32_t);
  }

 private:
  size_t FindFirstSlow(uint64_t sector, size_t lo, size_t hi) const;
  void BuildBuckets();

  std::vector<Segment> segs_;
  std::vector<uint32_t> buckets_;  // buckets_[b] = FindFirst(b << shift_)
  unsigned shift_ = 63;
};

}  // namespace ovbd
