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
  if (zeroed) moffset = 0;
  const Extent want{length, moffset, zeroed};
  const uint64_t end = offset + length;
  // One tree descent; everything else walks from it. This runs for every
  // write a volume takes, on a map of up to millions of extents, so it
  // avoids the descents a split-then-erase-then-insert would cost.
  auto it = map_.upper_bound(offset);  // the first extent starting after `offset`
  if (it != map_.begin()) {
    auto p = std::prev(it);
    const uint64_t p_start = p->first;
    const uint64_t p_end = p_start + p->second.length;
    if (p_end > end) {
      // p holds the whole range with some left over on the right: keep that
      // tail, then p's head (if any) and the new extent.
      const Extent& pe = p->second;
      map_.emplace_hint(it, end, Extent{p_end - end, pe.zeroed ? 0 : pe.moffset + (end - p_start),
                                        pe.zeroed});
      if (p_start == offset) {
        p->second = want;
        Coalesce(p);
      } else {
        p->second.length = offset - p_start;
        Coalesce(map_.emplace_hint(std::next(p), offset, want));
      }
      return;
    }
    if (p_end > offset) {
      if (p_start == offset) {
        it = p;  // covered entirely: dropped (or reused) below
      } else {
        p->second.length = offset - p_start;  // keep its head
      }
    }
  }
  // Drop the extents that start inside the range, keeping the right part of
  // the last one if it sticks out; reuse a node that starts at `offset`.
  auto cur = map_.end();
  while (it != map_.end() && it->first < end) {
    const uint64_t e_start = it->first;
    const uint64_t e_end = e_start + it->second.length;
    if (e_end > end) {
      const Extent& e = it->second;
      const Extent tail{e_end - end, e.zeroed ? 0 : e.moffset + (end - e_start), e.zeroed};
      auto node = map_.extract(it++);
      node.key() = end;
      node.mapped() = tail;
      it = map_.insert(it, std::move(node));
      break;
    }
    if (e_start == offset && cur == map_.end()) {
      cur = it++;
      continue;
    }
    it = map_.erase(it);
  }
  if (cur != map_.end()) {
    cur->second = want;
  } else {
    cur = map_.emplace_hint(it, offset, want);
  }
  Coalesce(cur);
}

void ExtentMap::Coalesce(std::map<uint64_t, Extent>::iterator it) {
  // Merge with neighbours that continue the same mapping, so sequential
  // writes keep the map (and the sealed index) small.
  if (it != map_.begin()) {
    auto prev = std::prev(it);
    Extent& p = prev->second;
    const Extent& c = it->second;
    if (prev->first + p.length == it->first && p.zeroed == c.zeroed &&
        (c.zeroed || p.moffset + p.length == c.moffset)) {
      p.length += c.length;
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
