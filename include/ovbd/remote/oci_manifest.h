// OCI image manifests for overlaybd images: what push writes and what
// `create --from` reads. The layers are listed bottom-up; each carries
// overlaybd's annotations so overlaybd's own tools use the same image:
//   containerd.io/snapshot/overlaybd/blob-digest   the layer blob's digest
//   containerd.io/snapshot/overlaybd/blob-size     its size in bytes
// plus, from ovbdfs, the volume's virtual size on the manifest itself
// (io.ovbdfs.volume-size). The config blob is a minimal OCI image config.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "ovbd/io/status.h"

namespace ovbd::remote {

inline constexpr char kOciManifestType[] = "application/vnd.oci.image.manifest.v1+json";
inline constexpr char kOciConfigType[] = "application/vnd.oci.image.config.v1+json";
inline constexpr char kDockerManifestType[] = "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr char kOverlaybdLayerType[] = "application/vnd.oci.image.layer.v1.tar";
inline constexpr char kBlobDigestAnnotation[] = "containerd.io/snapshot/overlaybd/blob-digest";
inline constexpr char kBlobSizeAnnotation[] = "containerd.io/snapshot/overlaybd/blob-size";
inline constexpr char kVolumeSizeAnnotation[] = "io.ovbdfs.volume-size";

struct Descriptor {
  std::string media_type;
  std::string digest;  // "sha256:HEX"
  uint64_t size = 0;
};

struct ImageManifest {
  Descriptor config;
  std::vector<Descriptor> layers;  // bottom first
  uint64_t volume_size = 0;        // 0: not given (take the layers' own)
};

std::string EncodeImageManifest(const ImageManifest& m);
// Accepts OCI and docker v2 image manifests (not indexes: kNotSupported).
// Every digest validated; at most 255 layers; at most 4 MiB of text.
Result<ImageManifest> DecodeImageManifest(std::string_view json);
// The config blob push writes for `layers` (rootfs diff_ids = layer digests).
std::string EncodeImageConfig(const std::vector<Descriptor>& layers);

}  // namespace ovbd::remote
