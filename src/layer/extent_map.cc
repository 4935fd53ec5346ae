#include "ovbd/layer/extent_map.h"

#include <algorithm>
#include <iterator>

namespace ovbd {

void ExtentMap::SplitAt(uint64_t at) {
  auto it = map_.upper_bound(at);
  if (it == map_.begin()) return;
  --it;
  const uint64_t start = it->first;
  Extent& e = it->second;
  if (start == at || start + e.length <= at) return;
  const uint64_t head = at - start;
  Extent tail{e.length - head, e.zeroed ? 0 : e.moffset + head, e.zeroed};
  e.length = head;
  map_.emplace_hint(std::next(it), at, tail);
}

void ExtentMap::Erase(uint64_t offset, uint64_t length) {
  if (length == 0) return;
  SplitAt(offset);
  SplitAt(offset + length);
  auto first = map_.lower_bound(offset);
  auto last = map_.lower_bound(offset + length);
  map_.erase(first, last);
}

void ExtentMap::Set(uint64_t offset, uint64_t length, uint64_t moffset, bool zeroed) {
  if (length == 0) return;
  Erase(offset, length);
  if (zeroed) moffset = 0;
  auto it = map_.emplace(offset, Extent{length, moffset, zeroed}).first;
  // Coalesce with neighbours that continue the same mapping, so sequential
  // writes keep the map (and the sealed index) small.
  if (it != map_.begin()) {
    auto prev = std::prev(it);
    Extent& p = prev->second;
    if (prev->first + p.length == offset && p.zeroed == zeroed &&
        (zeroed || p.moffset + p.length == moffset)) {
      p.length += length;
      map_.erase(it);
      it = prev;
    }
  }
  auto next = std::next(it);
  if (next != map_.end()) {
    Extent& c = it->second;
    const Extent& n = next->second;
    if (it->first + c.length == next->first && n.zeroed == c.zeroed &&
        (c.zeroed || c.moffset + c.length == n.moffset)) {
      c.length += n.length;
      map_.erase(next);
    }
  }
}

uint64_t ExtentMap::MappedSectors() const {
  uint64_t n = 0;
  for (const auto& [off, e] : map_)
    if (!e.zeroed) n += e.length;
  return n;
}

std::vector<Segment> ExtentMap::ToSegments(uint32_t max_len) const {
  std::vector<Segment> out;
  out.reserve(map_.size());
  for (const auto& [off, e] : map_) {
    uint64_t done = 0;
    while (done < e.length) {
      uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(max_len, e.length - done));
      Segment s;
      s.offset = off + done;
      s.moffset = e.zeroed ? 0 : e.moffset + done;
      s.length = n;
      s.zeroed = e.zeroed;
      out.push_back(s);
      done += n;
    }
  }
  return out;
}

}  // namespace ovbd
