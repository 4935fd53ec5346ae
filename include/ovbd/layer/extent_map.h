// ExtentMap: a mutable set of non-overlapping sector ranges, each mapped to a
// position in a layer file or marked zeroed. A later Set() wins over what it
// overlaps, splitting older extents at sector granularity: this is what makes
// the writable upper sector-exact (a 512-byte write never disturbs its
// neighbours). Neighbours that continue each other are merged, so sequential
// writes stay one extent.
//
// Storage is a two-level sorted array (a B+-tree of height two): chunks of at
// most kChunkMax extents, and the first offset of each chunk in one flat
// array. A lookup is a binary search of that small array and of one chunk,
// both contiguous, instead of a pointer chase through a red-black tree with a
// likely cache miss per level: the map is consulted on every write and every
// read of a volume and holds up to millions of extents.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "ovbd/layer/segment.h"

namespace ovbd {

class ExtentMap {
 public:
  struct Extent {
    uint64_t length;   // sectors
    uint64_t moffset;  // sectors; for zeroed extents meaningless
    bool zeroed;
  };

  // Maps [offset, offset+length) to moffset.., or to zeros, replacing any overlap.
  void Set(uint64_t offset, uint64_t length, uint64_t moffset, bool zeroed);
  // Forgets [offset, offset+length): the range falls through to lower layers.
  void Erase(uint64_t offset, uint64_t length);
  void Clear() {
    chunks_.clear();
    firsts_.clear();
    size_ = 0;
  }

  // Calls fn(offset, length, const Extent* e_or_null, delta) for every piece of
  // [offset, offset+length) in order: mapped pieces carry the extent and the
  // sector delta into it; gaps carry nullptr.
  template <typename F>
  void Walk(uint64_t offset, uint64_t length, F&& fn) const;

  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  // Sectors mapped to data (zeroed extents excluded).
  uint64_t MappedSectors() const;
  // Segments in order, each no longer than max_len sectors (LSMT entries are
  // limited to 16383 sectors), with layer = 0.
  std::vector<Segment> ToSegments(uint32_t max_len) const;
  // Every extent in order, with its offset (for tests and tools).
  std::vector<std::pair<uint64_t, Extent>> Extents() const;

 private:
  struct Entry {
    uint64_t offset;
    Extent e;
    uint64_t end() const { return offset + e.length; }
  };
  // A position: chunk and entry within it; {chunks_.size(), 0} is the end.
  struct Pos {
    size_t c, i;
  };
  static constexpr size_t kChunkMax = 128;  // a chunk splits above this (4 KiB)

  // The first extent that ends at or after `sector` (touching included when
  // `touching`, else strictly after).
  Pos FirstEndingFrom(uint64_t sector, bool touching) const;
  // The first extent that starts after `sector` (or at it, unless `touching`).
  Pos FirstStartingFrom(uint64_t sector, bool touching) const;
  // Replaces the extents in [a, b) with `with` (in order, disjoint, after
  // what precedes a and before what follows b).
  void Replace(Pos a, Pos b, std::span<const Entry> with);
  void Update(uint64_t offset, uint64_t length, const Extent* e);

  std::vector<std::vector<Entry>> chunks_;  // each non-empty
  std::vector<uint64_t> firsts_;            // chunks_[k].front().offset
  size_t size_ = 0;
};

template <typename F>
void ExtentMap::Walk(uint64_t offset, uint64_t length, F&& fn) const {
  const uint64_t end = offset + length;
  uint64_t pos = offset;
  Pos p = FirstEndingFrom(offset, /*touching=*/false);
  for (size_t c = p.c, i = p.i; pos < end && c < chunks_.size(); ++c, i = 0) {
    const std::vector<Entry>& chunk = chunks_[c];
    for (; i < chunk.size(); ++i) {
      const Entry& x = chunk[i];
      if (x.offset >= end) return fn(pos, end - pos, static_cast<const Extent*>(nullptr), uint64_t{0});
      if (x.offset > pos) {
        fn(pos, x.offset - pos, static_cast<const Extent*>(nullptr), uint64_t{0});
        pos = x.offset;
      }
      const uint64_t piece_end = std::min(x.end(), end);
      fn(pos, piece_end - pos, &x.e, pos - x.offset);
      pos = piece_end;
      if (pos >= end) return;
    }
  }
  if (pos < end) fn(pos, end - pos, static_cast<const Extent*>(nullptr), uint64_t{0});
}

}  // namespace ovbd
