// Fuzz target for OCI image manifests as registries hand them over:
// decoding arbitrary bytes must never crash, and whatever decodes must
// obey the limits (255 layers, valid digests) and survive an encode/decode
// round trip unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "ovbd/remote/blob_ref.h"
#include "ovbd/remote/oci_manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ovbd::remote;
  const std::string in(reinterpret_cast<const char*>(data), size);
  auto m = DecodeImageManifest(in);
  if (!m.ok()) return 0;
  if (m->layers.size() > 255 || !ValidateDigest(m->config.digest).ok()) std::abort();
  for (const Descriptor& l : m->layers) {
    if (!ValidateDigest(l.digest).ok() || l.media_type.empty()) std::abort();
  }
  const std::string text = EncodeImageManifest(*m);
  auto again = DecodeImageManifest(text);
  if (!again.ok() || EncodeImageManifest(*again) != text) std::abort();
  if (again->layers.size() != m->layers.size() || again->volume_size != m->volume_size) std::abort();
  for (const Descriptor& l : again->layers) {
    if (!l.overlaybd) std::abort();  // encoding annotates every layer
  }
  (void)EncodeImageConfig(m->layers);
  return 0;
}
