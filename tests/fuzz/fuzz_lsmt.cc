// Fuzz target for the LSMT reader: the input is a layer file (committed or
// sealed) held in memory, or -- split at its first 4 KiB boundary after the
// header -- overlaybd's append-only data+index pair. Opening and reading
// every mapped byte must never crash, hang or allocate without bound.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mem_file.h"
#include "ovbd/layer/lsmt_layer.h"
#include "ovbd/layer/merged_index.h"

using ovbd::test::MemFile;

namespace {
void ReadEverything(const ovbd::lsmt::Layer& layer) {
  std::vector<char> buf(1 << 16);
  uint64_t budget = 64 << 20;  // reads are bounded by the file anyway
  for (const auto& s : layer.segments()) {
    if (s.zeroed) continue;
    uint64_t len = uint64_t{s.length} * 512;
    for (uint64_t d = 0; d < len && budget > 0; d += buf.size()) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), len - d));
      (void)layer.ReadData(s.moffset * 512 + d, n, buf.data());
      budget -= std::min<uint64_t>(budget, n);
    }
  }
  // The index must be usable as a stack.
  auto idx = ovbd::MergedIndex::Build({&layer.segments(), &layer.segments()});
  for (const auto& s : layer.segments()) (void)idx.FindFirst(s.offset);
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in(reinterpret_cast<const char*>(data), size);
  auto layer = ovbd::lsmt::Layer::Open(std::make_shared<MemFile>(in, "fuzz.lsmt"));
  if (layer.ok()) ReadEverything(*layer.value());
  if (size > 8192) {
    const size_t cut = 4096 + (size - 8192) / 2 / 4096 * 4096;
    auto pair = ovbd::lsmt::Layer::OpenAppendOnly(
        std::make_shared<MemFile>(in.substr(0, cut), "fuzz.data"),
        std::make_shared<MemFile>(in.substr(cut), "fuzz.index"));
    if (pair.ok()) ReadEverything(*pair.value());
  }
  return 0;
}
