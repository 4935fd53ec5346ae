#include "ovbd/layer/merged_index.h"

#include <algorithm>
#include <bit>

#include "ovbd/layer/extent_map.h"

namespace ovbd {

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
  idx.segs_ = Overlay(layers, /*keep_zeroed=*/false);
  idx.segs_.shrink_to_fit();
  idx.BuildBuckets();
  return idx;
}

void MergedIndex::BuildBuckets() {
  buckets_.clear();
  if (segs_.empty()) return;
  const uint64_t span = segs_.back().end();
  // About one slot per segment, rounded to a power of two.
  const uint64_t want = std::bit_ceil(static_cast<uint64_t>(segs_.size()));
  unsigned shift = 0;
  while ((span >> shift) > want) ++shift;
  shift_ = shift;
  const uint64_t nb = (span >> shift) + 2;
  buckets_.resize(nb);
  size_t i = 0;
  for (uint64_t b = 0; b < nb; ++b) {
    const uint64_t sector = b << shift;
    while (i < segs_.size() && segs_[i].end() <= sector) ++i;
    buckets_[b] = static_cast<uint32_t>(i);
  }
}

size_t MergedIndex::FindFirstSlow(uint64_t sector, size_t lo, size_t hi) const {
  // First index in [lo, hi) whose end is after `sector`; hi if none.
  auto it = std::partition_point(segs_.begin() + static_cast<ptrdiff_t>(lo),
                                 segs_.begin() + static_cast<ptrdiff_t>(hi),
                                 [&](const Segment& s) { return s.end() <= sector; });
  return static_cast<size_t>(it - segs_.begin());
}

}  // namespace ovbd
