// Fuzz target for volume manifests: decoding arbitrary bytes must never
// crash, and whatever decodes must name only valid layer files and survive
// an encode/decode round trip unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "ovbd/store/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in(reinterpret_cast<const char*>(data), size);
  ovbd::Manifest m;
  if (!ovbd::DecodeManifest(in, "fuzz.json", &m).ok()) return 0;
  for (const auto& l : m.lowers) {
    if (!ovbd::ValidateLayerFileName(l).ok() || l.find('/') != std::string::npos) std::abort();
  }
  ovbd::Manifest again;
  if (!ovbd::DecodeManifest(ovbd::EncodeManifest(m), "again", &again).ok()) std::abort();
  if (ovbd::EncodeManifest(again) != ovbd::EncodeManifest(m)) std::abort();
  return 0;
}
