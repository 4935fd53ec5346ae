#include "ovbd/layer/layer_merge.h"

#include <algorithm>

#include "ovbd/layer/merged_index.h"

namespace ovbd::lsmt {

std::vector<Segment> MergedSegments(const Layer& lower, const Layer& upper) {
  return MergedIndex::Overlay({&lower.segments(), &upper.segments()}, true);
}

uint64_t HiddenBytes(const Layer& lower, const Layer& upper) {
  uint64_t kept = 0, total = 0;
  for (const auto& sg : MergedSegments(lower, upper))
    if (!sg.zeroed && sg.layer == 0) kept += sg.length;
  for (const auto& sg : lower.segments())
    if (!sg.zeroed) total += sg.length;
  return (total - std::min(kept, total)) * kSectorSize;
}

Status WriteMergedLayer(const Layer& lower, const Layer& upper, RWFile* out, WriteOptions wo,
                        const MergeProgressFn& progress, const Status& stopped) {
  const auto segs = MergedSegments(lower, upper);
  if (wo.virtual_size == 0) wo.virtual_size = std::max(lower.virtual_size(), upper.virtual_size());
  uint64_t total = 0, done = 0;
  for (const Segment& sg : segs)
    if (!sg.zeroed) total += uint64_t{sg.length} * kSectorSize;
  const Layer* pair[2] = {&lower, &upper};
  Writer w(out, std::move(wo));
  std::vector<char> buf(4 << 20);
  for (const Segment& sg : segs) {
    if (sg.zeroed) {
      OVBD_RETURN_IF_ERROR(w.AddZeroed(sg.offset * kSectorSize, uint64_t{sg.length} * kSectorSize));
      continue;
    }
    const Layer& layer = *pair[sg.layer];
    for (uint64_t s = 0; s < sg.length;) {
      const uint64_t n = std::min<uint64_t>(buf.size() / kSectorSize, sg.length - s);
      OVBD_RETURN_IF_ERROR(layer.ReadData((sg.moffset + s) * kSectorSize, n * kSectorSize, buf.data()));
      OVBD_RETURN_IF_ERROR(w.AddData((sg.offset + s) * kSectorSize, buf.data(), n * kSectorSize));
      s += n;
      done += n * kSectorSize;
      if (progress && !progress(done, total)) return stopped;
    }
  }
  return w.Finish();
}

}  // namespace ovbd::lsmt
