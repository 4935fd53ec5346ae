// Merging two adjacent layers of a stack into one committed LSMT layer with
// the same content as the pair (the upper one wins where both map data).
#pragma once

#include <functional>
#include <vector>

#include "ovbd/layer/lsmt_layer.h"
#include "ovbd/layer/lsmt_writer.h"

namespace ovbd::lsmt {

// Called between chunks with bytes copied so far and in all; returning
// false stops the merge (the function then returns `stopped`).
using MergeProgressFn = std::function<bool(uint64_t done, uint64_t total)>;

// The segments of the pair as one layer: lower's, overlaid by upper's.
std::vector<Segment> MergedSegments(const Layer& lower, const Layer& upper);
// Bytes of data of `lower` that `upper` hides (what merging frees).
uint64_t HiddenBytes(const Layer& lower, const Layer& upper);

// Writes the merged layer into `out` (empty). `wo.virtual_size` 0 means the
// larger of the two.
Status WriteMergedLayer(const Layer& lower, const Layer& upper, RWFile* out, WriteOptions wo,
                        const MergeProgressFn& progress, const Status& stopped);

}  // namespace ovbd::lsmt
