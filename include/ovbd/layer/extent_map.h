// ExtentMap: a mutable set of non-overlapping sector ranges, each mapped to a
// position in a layer file or marked zeroed. A later Set() wins over what it
// overlaps, splitting older extents at sector granularity: this is what makes
// the writable upper sector-exact (a 512-byte write never disturbs its
// neighbours).
#pragma once

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <map>
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
  void Clear() { map_.clear(); }

  // Calls fn(offset, length, const Extent* e_or_null, delta) for every piece of
  // [offset, offset+length) in order: mapped pieces carry the extent and the
  // sector delta into it; gaps carry nullptr.
  template <typename F>
  void Walk(uint64_t offset, uint64_t length, F&& fn) const;

  size_t size() const { return map_.size(); }
  bool empty() const { return map_.empty(); }
  // Sectors mapped to data (zeroed extents excluded).
  uint64_t MappedSectors() const;
  // Segments in order, each no longer than max_len sectors (LSMT entries are
  // limited to 16383 sectors), with layer = 0.
  std::vector<Segment> ToSegments(uint32_t max_len) const;

  const std::map<uint64_t, Extent>& raw() const { return map_; }

 private:
  // Splits the extent containing `at` (if any) so that `at` starts an extent.
  void SplitAt(uint64_t at);
  // Merges the extent at `it` with neighbours that continue its mapping.
  void Coalesce(std::map<uint64_t, Extent>::iterator it);

  std::map<uint64_t, Extent> map_;
};

template <typename F>
void ExtentMap::Walk(uint64_t offset, uint64_t length, F&& fn) const {
  const uint64_t end = offset + length;
  uint64_t pos = offset;
  auto it = map_.upper_bound(offset);
  if (it != map_.begin()) {
    auto prev = std::prev(it);
    if (prev->first + prev->second.length > offset) it = prev;
  }
  for (; pos < end && it != map_.end() && it->first < end; ++it) {
    if (it->first > pos) {
      fn(pos, it->first - pos, static_cast<const Extent*>(nullptr), uint64_t{0});
      pos = it->first;
    }
    uint64_t ext_end = it->first + it->second.length;
    uint64_t piece_end = ext_end < end ? ext_end : end;
    fn(pos, piece_end - pos, &it->second, pos - it->first);
    pos = piece_end;
  }
  if (pos < end) fn(pos, end - pos, static_cast<const Extent*>(nullptr), uint64_t{0});
}

}  // namespace ovbd
