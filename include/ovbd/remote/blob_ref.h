// Addresses of remote layers and images.
//
//   registry://HOST[:PORT]/REPO@sha256:HEX   a blob in an OCI registry
//   https://HOST[:PORT]/PATH#sha256:HEX      a blob at a plain URL (http:// too)
//   registry://HOST[:PORT]/REPO:TAG          an image (push, create --from)
//   registry://HOST[:PORT]/REPO@sha256:HEX   an image by manifest digest
//
// REPO is the distribution grammar: path components of [a-z0-9] separated
// by '.', '_', '__' or '-'+, joined by '/'; TAG is [A-Za-z0-9_][A-Za-z0-9._-]{0,127}.
// A blob's identity is its digest: the same digest at two addresses is the
// same bytes (and shares one cache entry).
#pragma once

#include <string>
#include <string_view>

#include "ovbd/io/status.h"

namespace ovbd::remote {

// "sha256:" + 64 lowercase hex digits.
Status ValidateDigest(std::string_view digest);

struct BlobRef {
  enum class Kind { kRegistry, kUrl };
  Kind kind = Kind::kRegistry;
  std::string registry;  // "HOST[:PORT]" (kRegistry)
  std::string repo;      // (kRegistry)
  std::string url;       // the URL without its fragment (kUrl)
  std::string digest;    // "sha256:HEX"

  static Result<BlobRef> Parse(std::string_view text);
  std::string ToString() const;
};

struct ImageRef {
  std::string registry;  // "HOST[:PORT]"
  std::string repo;
  std::string tag;     // one of tag and digest is set
  std::string digest;  // "sha256:HEX"

  static Result<ImageRef> Parse(std::string_view text);
  std::string ToString() const;
  // What the manifest endpoint takes: the digest if set, else the tag.
  const std::string& reference() const { return digest.empty() ? tag : digest; }
};

}  // namespace ovbd::remote
