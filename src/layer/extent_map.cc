#include "ovbd/layer/extent_map.h"

namespace ovbd {

ExtentMap::Pos ExtentMap::FirstEndingFrom(uint64_t sector, bool touching) const {
  // Ends are sorted like starts (the extents are disjoint). The answer is in
  // the last chunk that starts before `sector` (at or before, when only an
  // end strictly after `sector` counts), or it is the next chunk's first:
  // every extent of an earlier chunk ends by the next chunk's start.
  const auto bound = touching ? std::lower_bound(firsts_.begin(), firsts_.end(), sector)
                              : std::upper_bound(firsts_.begin(), firsts_.end(), sector);
  size_t c = static_cast<size_t>(bound - firsts_.begin());
  if (c == 0) return {0, 0};
  --c;
  const std::vector<Entry>& chunk = chunks_[c];
  auto it = std::partition_point(chunk.begin(), chunk.end(), [&](const Entry& x) {
    return touching ? x.end() < sector : x.end() <= sector;
  });
  if (it == chunk.end()) return {c + 1, 0};
  return {c, static_cast<size_t>(it - chunk.begin())};
}

ExtentMap::Pos ExtentMap::FirstStartingFrom(uint64_t sector, bool touching) const {
  size_t c = static_cast<size_t>(std::upper_bound(firsts_.begin(), firsts_.end(), sector) -
                                 firsts_.begin());
  if (c == 0) return {0, 0};
  --c;
  const std::vector<Entry>& chunk = chunks_[c];
  auto it = std::partition_point(chunk.begin(), chunk.end(), [&](const Entry& x) {
    return touching ? x.offset <= sector : x.offset < sector;
  });
  if (it == chunk.end()) return {c + 1, 0};
  return {c, static_cast<size_t>(it - chunk.begin())};
}

void ExtentMap::Replace(Pos a, Pos b, std::span<const Entry> with) {
  size_t removed = 0;
  if (a.c == b.c) {
    removed = b.i - a.i;
  } else {
    removed = chunks_[a.c].size() - a.i + b.i;
    for (size_t c = a.c + 1; c < b.c; ++c) removed += chunks_[c].size();
  }
  size_ = size_ - removed + with.size();
  if (a.c == chunks_.size()) {
    // Past the last extent: append (to the last chunk if there is one).
    if (with.empty()) return;
    if (chunks_.empty()) {
      chunks_.emplace_back();
      firsts_.push_back(0);
    }
    a = {chunks_.size() - 1, chunks_.back().size()};
    b = a;
  }
  // Common case: the change stays within one chunk.
  if (a.c == b.c) {
    std::vector<Entry>& chunk = chunks_[a.c];
    const size_t keep = b.i - a.i;
    const size_t n = std::min(keep, with.size());
    std::copy(with.begin(), with.begin() + static_cast<ptrdiff_t>(n),
              chunk.begin() + static_cast<ptrdiff_t>(a.i));
    if (with.size() > keep) {
      chunk.insert(chunk.begin() + static_cast<ptrdiff_t>(b.i),
                   with.begin() + static_cast<ptrdiff_t>(keep), with.end());
    } else if (with.size() < keep) {
      chunk.erase(chunk.begin() + static_cast<ptrdiff_t>(a.i + n),
                  chunk.begin() + static_cast<ptrdiff_t>(b.i));
    }
  } else {
    // Across chunks: a's chunk keeps its head plus `with`, b's chunk its
    // tail; the chunks between go.
    std::vector<Entry>& first = chunks_[a.c];
    first.resize(a.i);
    first.insert(first.end(), with.begin(), with.end());
    size_t last = b.c;
    if (b.c < chunks_.size()) {
      std::vector<Entry>& tail = chunks_[b.c];
      tail.erase(tail.begin(), tail.begin() + static_cast<ptrdiff_t>(b.i));
      if (first.size() + tail.size() <= kChunkMax) {
        first.insert(first.end(), tail.begin(), tail.end());
        last = b.c + 1;
      }
    }
    chunks_.erase(chunks_.begin() + static_cast<ptrdiff_t>(a.c + 1),
                  chunks_.begin() + static_cast<ptrdiff_t>(last));
    firsts_.erase(firsts_.begin() + static_cast<ptrdiff_t>(a.c + 1),
                  firsts_.begin() + static_cast<ptrdiff_t>(last));
    if (a.c + 1 < chunks_.size()) {
      if (chunks_[a.c + 1].empty()) {
        chunks_.erase(chunks_.begin() + static_cast<ptrdiff_t>(a.c + 1));
        firsts_.erase(firsts_.begin() + static_cast<ptrdiff_t>(a.c + 1));
      } else {
        firsts_[a.c + 1] = chunks_[a.c + 1].front().offset;
      }
    }
  }
  // Keep chunk a.c within bounds and its key current.
  std::vector<Entry>& chunk = chunks_[a.c];
  if (chunk.empty()) {
    chunks_.erase(chunks_.begin() + static_cast<ptrdiff_t>(a.c));
    firsts_.erase(firsts_.begin() + static_cast<ptrdiff_t>(a.c));
    return;
  }
  firsts_[a.c] = chunk.front().offset;
  if (chunk.size() > kChunkMax) {
    // Split into halves (a bulk replace may have made it much larger).
    std::vector<std::vector<Entry>> parts;
    const size_t per = kChunkMax / 2;
    for (size_t k = per; k < chunk.size(); k += per) {
      parts.emplace_back(chunk.begin() + static_cast<ptrdiff_t>(k),
                         chunk.begin() + static_cast<ptrdiff_t>(std::min(chunk.size(), k + per)));
    }
    chunk.resize(per);
    std::vector<uint64_t> keys;
    for (const auto& p : parts) keys.push_back(p.front().offset);
    chunks_.insert(chunks_.begin() + static_cast<ptrdiff_t>(a.c + 1),
                   std::make_move_iterator(parts.begin()), std::make_move_iterator(parts.end()));
    firsts_.insert(firsts_.begin() + static_cast<ptrdiff_t>(a.c + 1), keys.begin(), keys.end());
  }
}

void ExtentMap::Update(uint64_t offset, uint64_t length, const Extent* want) {
  const uint64_t end = offset + length;
  // Every extent overlapping the range, plus (when setting) the ones that
  // merely touch it, which the new extent may continue.
  const bool touching = want != nullptr;
  const Pos a = FirstEndingFrom(offset, touching);
  const Pos b = FirstStartingFrom(end, touching);
  // At most three extents replace the range: the head of one that starts
  // before it, the new one, the tail of one that ends after it. A fixed
  // array: this runs on every write, and the heap is not needed.
  Entry with[3];
  size_t n = 0;
  // Appends x, merging it into the previous entry when it continues it.
  auto add = [&](const Entry& x) {
    if (n > 0) {
      Entry& p = with[n - 1];
      if (p.end() == x.offset && p.e.zeroed == x.e.zeroed &&
          (x.e.zeroed || p.e.moffset + p.e.length == x.e.moffset)) {
        p.e.length += x.e.length;
        return;
      }
    }
    with[n++] = x;
  };
  auto at = [&](Pos p) -> const Entry& { return chunks_[p.c][p.i]; };
  const bool any = a.c < b.c || (a.c == b.c && a.i < b.i);
  if (any) {
    const Entry& x = at(a);
    if (x.offset < offset) {
      Entry head = x;
      head.e.length = std::min(x.end(), offset) - x.offset;
      add(head);
    }
  }
  if (want) add(Entry{offset, *want});
  if (any) {
    Pos last = b;
    if (last.i > 0) {
      --last.i;
    } else {
      --last.c;
      last.i = chunks_[last.c].size() - 1;
    }
    const Entry& y = at(last);
    if (y.end() > end) {
      const uint64_t from = std::max(y.offset, end);
      Entry tail{from, Extent{y.end() - from, y.e.zeroed ? 0 : y.e.moffset + (from - y.offset),
                              y.e.zeroed}};
      add(tail);
    }
  }
  Replace(a, b, std::span<const Entry>(with, n));
}

void ExtentMap::Set(uint64_t offset, uint64_t length, uint64_t moffset, bool zeroed) {
  if (length == 0) return;
  const Extent want{length, zeroed ? 0 : moffset, zeroed};
  Update(offset, length, &want);
}

void ExtentMap::Erase(uint64_t offset, uint64_t length) {
  if (length == 0) return;
  Update(offset, length, nullptr);
}

uint64_t ExtentMap::MappedSectors() const {
  uint64_t n = 0;
  for (const auto& chunk : chunks_)
    for (const Entry& x : chunk)
      if (!x.e.zeroed) n += x.e.length;
  return n;
}

std::vector<Segment> ExtentMap::ToSegments(uint32_t max_len) const {
  std::vector<Segment> out;
  out.reserve(size_);
  for (const auto& chunk : chunks_) {
    for (const Entry& x : chunk) {
      uint64_t done = 0;
      while (done < x.e.length) {
        uint32_t n = static_cast<uint32_t>(std::min<uint64_t>(max_len, x.e.length - done));
        Segment s;
        s.offset = x.offset + done;
        s.moffset = x.e.zeroed ? 0 : x.e.moffset + done;
        s.length = n;
        s.zeroed = x.e.zeroed;
        out.push_back(s);
        done += n;
      }
    }
  }
  return out;
}

std::vector<std::pair<uint64_t, ExtentMap::Extent>> ExtentMap::Extents() const {
  std::vector<std::pair<uint64_t, Extent>> out;
  out.reserve(size_);
  for (const auto& chunk : chunks_)
    for (const Entry& x : chunk) out.emplace_back(x.offset, x.e);
  return out;
}

}  // namespace ovbd
