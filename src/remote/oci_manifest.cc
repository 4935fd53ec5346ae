// OCI image manifests and configs (docs/FORMAT.md, "Images in a registry").
// Encoding is deterministic (fixed key order, no whitespace) so the same
// image always has the same manifest digest. Decoding takes a registry's
// word for nothing: sizes, digests and counts are all checked.
#include "ovbd/remote/oci_manifest.h"

#include <charconv>
#include <limits>

#include <nlohmann/json.hpp>

#include "ovbd/remote/blob_ref.h"

namespace ovbd::remote {

using nlohmann::json;
using nlohmann::ordered_json;

namespace {

constexpr size_t kMaxManifestBytes = 4 << 20;
constexpr size_t kMaxLayers = 255;
constexpr size_t kMaxMediaTypeLength = 255;

constexpr char kOciIndexType[] = "application/vnd.oci.image.index.v1+json";
constexpr char kDockerListType[] = "application/vnd.docker.distribution.manifest.list.v2+json";

// The platform of the config: a disk image runs anywhere, but registries
// and runtimes filter by it, so it is the build's own (in GOARCH terms).
#if defined(__x86_64__)
constexpr char kArchitecture[] = "amd64";
#elif defined(__aarch64__)
constexpr char kArchitecture[] = "arm64";
#elif defined(__i386__)
constexpr char kArchitecture[] = "386";
#elif defined(__arm__)
constexpr char kArchitecture[] = "arm";
#elif defined(__powerpc64__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
constexpr char kArchitecture[] = "ppc64le";
#elif defined(__s390x__)
constexpr char kArchitecture[] = "s390x";
#elif defined(__riscv) && __riscv_xlen == 64
constexpr char kArchitecture[] = "riscv64";
#else
constexpr char kArchitecture[] = "unknown";
#endif

// A server's string as shown in a message: bounded, control bytes masked.
std::string Printable(std::string_view s) {
  std::string out(s.substr(0, 128));
  for (auto& c : out) {
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
  }
  return out;
}

Status Bad(const std::string& why) { return Status::InvalidArgument("image manifest: " + why); }

// A decimal string (annotation values are strings): digits only, fits in 64 bits.
bool ParseDecimal(const std::string& s, uint64_t* v) {
  if (s.empty() || s.size() > 20) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
  return ec == std::errc() && end == s.data() + s.size();
}

Status GetString(const json& obj, const char* key, const std::string& what, std::string* out,
                 bool required) {
  auto it = obj.find(key);
  if (it == obj.end() || it->is_null()) {
    if (required) return Bad(what + " has no '" + key + "'");
    return Status::OK();
  }
  if (!it->is_string()) return Bad(what + ": '" + key + "' is not a string");
  *out = it->get<std::string>();
  return Status::OK();
}

Status DecodeDescriptor(const json& j, const std::string& what, Descriptor* d) {
  if (!j.is_object()) return Bad(what + " is not an object");
  OVBD_RETURN_IF_ERROR(GetString(j, "mediaType", what, &d->media_type, true));
  if (d->media_type.empty() || d->media_type.size() > kMaxMediaTypeLength) {
    return Bad(what + ": bad media type");
  }
  OVBD_RETURN_IF_ERROR(GetString(j, "digest", what, &d->digest, true));
  if (Status s = ValidateDigest(d->digest); !s.ok()) return Bad(what + ": " + s.message());
  auto size = j.find("size");
  if (size == j.end() || !size->is_number_integer() ||
      (!size->is_number_unsigned() && size->get<int64_t>() < 0)) {
    return Bad(what + ": 'size' is missing or not a non-negative integer");
  }
  d->size = size->get<uint64_t>();
  auto ann = j.find("annotations");
  if (ann == j.end() || ann->is_null()) return Status::OK();
  if (!ann->is_object()) return Bad(what + ": 'annotations' is not an object");
  std::string blob_digest, blob_size;
  OVBD_RETURN_IF_ERROR(GetString(*ann, kBlobDigestAnnotation, what, &blob_digest, false));
  OVBD_RETURN_IF_ERROR(GetString(*ann, kBlobSizeAnnotation, what, &blob_size, false));
  if (!blob_digest.empty()) {
    // overlaybd names the layer's own blob: the descriptor and its
    // annotation must agree, or one of them is lying about the bytes.
    if (Status s = ValidateDigest(blob_digest); !s.ok()) {
      return Bad(what + ": overlaybd blob-digest annotation: " + s.message());
    }
    if (blob_digest != d->digest) return Bad(what + ": overlaybd blob-digest annotation disagrees with its digest");
    d->overlaybd = true;
  }
  if (!blob_size.empty()) {
    uint64_t v = 0;
    if (!ParseDecimal(blob_size, &v)) return Bad(what + ": overlaybd blob-size annotation is not a number");
    if (v != d->size) return Bad(what + ": overlaybd blob-size annotation disagrees with its size");
  }
  return Status::OK();
}

// Compact, and never throwing: a string that is not UTF-8 (only a caller's
// own, never a decoded one) is written with replacement characters.
std::string Dump(const ordered_json& j) {
  return j.dump(-1, ' ', false, ordered_json::error_handler_t::replace);
}

ordered_json EncodeDescriptor(const Descriptor& d, const char* default_type) {
  ordered_json j;
  j["mediaType"] = d.media_type.empty() ? std::string(default_type) : d.media_type;
  j["digest"] = d.digest;
  j["size"] = d.size;
  return j;
}

}  // namespace

std::string EncodeImageManifest(const ImageManifest& m) {
  ordered_json j;
  j["schemaVersion"] = 2;
  j["mediaType"] = kOciManifestType;
  j["config"] = EncodeDescriptor(m.config, kOciConfigType);
  ordered_json layers = ordered_json::array();
  for (const Descriptor& l : m.layers) {
    ordered_json e = EncodeDescriptor(l, kOverlaybdLayerType);
    e["annotations"] = ordered_json{{kBlobDigestAnnotation, l.digest},
                                    {kBlobSizeAnnotation, std::to_string(l.size)}};
    layers.push_back(std::move(e));
  }
  j["layers"] = std::move(layers);
  if (m.volume_size != 0) {
    j["annotations"] = ordered_json{{kVolumeSizeAnnotation, std::to_string(m.volume_size)}};
  }
  return Dump(j);
}

Result<ImageManifest> DecodeImageManifest(std::string_view text) {
  if (text.size() > kMaxManifestBytes) return Status::TooLarge("image manifest larger than 4 MiB");
  json j = json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Bad("not valid JSON");
  if (!j.is_object()) return Bad("not a JSON object");
  std::string media_type;
  OVBD_RETURN_IF_ERROR(GetString(j, "mediaType", "the manifest", &media_type, false));
  if (media_type == kOciIndexType || media_type == kDockerListType ||
      (media_type.empty() && j.contains("manifests"))) {
    return Status::NotSupported(
        "image manifest: an image index (a multi-platform image) is not supported: name the "
        "platform's manifest by its digest");
  }
  auto version = j.find("schemaVersion");
  if (version == j.end() || !version->is_number_integer()) return Bad("no schemaVersion");
  if (version->get<int64_t>() != 2) {
    return Status::NotSupported("image manifest: schemaVersion " +
                                std::to_string(version->get<int64_t>()) + " is not supported");
  }
  if (!media_type.empty() && media_type != kOciManifestType && media_type != kDockerManifestType) {
    return Status::NotSupported("image manifest: media type '" + Printable(media_type) +
                                "' is not an image manifest");
  }
  ImageManifest m;
  auto config = j.find("config");
  if (config == j.end()) return Bad("no config");
  OVBD_RETURN_IF_ERROR(DecodeDescriptor(*config, "config", &m.config));
  auto layers = j.find("layers");
  if (layers == j.end() || !layers->is_array()) return Bad("'layers' is missing or not an array");
  if (layers->size() > kMaxLayers) {
    return Status::TooLarge("image manifest: " + std::to_string(layers->size()) +
                            " layers, more than 255");
  }
  m.layers.reserve(layers->size());
  for (size_t i = 0; i < layers->size(); ++i) {
    Descriptor d;
    OVBD_RETURN_IF_ERROR(DecodeDescriptor((*layers)[i], "layer " + std::to_string(i), &d));
    m.layers.push_back(std::move(d));
  }
  auto ann = j.find("annotations");
  if (ann != j.end() && !ann->is_null()) {
    if (!ann->is_object()) return Bad("'annotations' is not an object");
    std::string vs;
    OVBD_RETURN_IF_ERROR(GetString(*ann, kVolumeSizeAnnotation, "the manifest", &vs, false));
    if (!vs.empty() && (!ParseDecimal(vs, &m.volume_size) || m.volume_size == 0)) {
      return Bad(std::string(kVolumeSizeAnnotation) + " is not a positive number");
    }
  }
  return m;
}

std::string EncodeImageConfig(const std::vector<Descriptor>& layers) {
  ordered_json diff_ids = ordered_json::array();
  for (const Descriptor& l : layers) diff_ids.push_back(l.digest);
  ordered_json j;
  j["architecture"] = kArchitecture;
  j["os"] = "linux";
  j["config"] = ordered_json::object();
  j["rootfs"] = ordered_json{{"type", "layers"}, {"diff_ids", std::move(diff_ids)}};
  return Dump(j);
}

}  // namespace ovbd::remote
