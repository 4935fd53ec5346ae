// Segment: one mapping of a range of virtual sectors to data in a layer.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ovbd {

struct Segment {
  uint64_t offset = 0;   // first virtual sector
  uint64_t moffset = 0;  // sector in the layer file where the data starts
  uint32_t length = 0;   // sectors
  uint8_t layer = 0;     // position in the stack, bottom = 0 (merged index only)
  bool zeroed = false;   // reads zeros, hides everything below; no data

  uint64_t end() const { return offset + length; }
};
static_assert(sizeof(Segment) == 24, "Segment is kept compact for cache-friendly lookups");

}  // namespace ovbd
