// RegistryClient: the distribution (OCI) HTTP API on top of HttpClient:
// blob range reads, existence checks, uploads, manifests; with the
// registries' authentication and mirrors.
//
// Auth, per registry (credentials from a docker config.json: "auths" ->
// HOST[:PORT] -> "auth" (base64 user:password) or "username"/"password", or
// "identitytoken"):
//  - anonymous first; on 401 with "WWW-Authenticate: Basic" the request is
//    repeated once with Basic credentials; on 401 with "Bearer realm=...,
//    service=...,scope=..." a token is fetched from the realm (GET with
//    service and scope, Basic credentials if any) and the request repeated
//    once with it. Tokens are cached per registry+scope until expires_in
//    (default 60 s) less a margin, so they are refreshed before they expire;
//    a 401 with a cached token drops it and fetches one once more.
//  - Secrets never appear in logs, statuses or error messages.
// Mirrors: an ordered list per registry; reads try each in turn (a mirror
// that fails or lacks the blob is skipped for this request), then the
// origin. Writes (upload, manifest put) go to the origin only. A mirror is
// safe because every blob is checked against its digest by the layers above.
// Retries: a failed read (connection, timeout, 5xx, 429) is retried up to
// `retries` times with jittered exponential backoff, then fails with EIO
// naming the blob (its address, never credentials) and the range.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ovbd/io/env.h"
#include "ovbd/io/http_client.h"
#include "ovbd/io/status.h"
#include "ovbd/remote/blob_ref.h"

namespace ovbd::remote {

struct RegistryOptions {
  // docker config.json with credentials; "" none. Read once, when the client
  // is made (a missing file is no credentials; a malformed one an error).
  std::string credentials_file;
  // registry "HOST[:PORT]" -> mirror base URLs ("https://mirror.example",
  // "http://127.0.0.1:5001"), tried in order before the origin.
  std::map<std::string, std::vector<std::string>> mirrors;
  // Registries spoken to over http:// (loopback registries always are).
  std::vector<std::string> plain_http;
  int retries = 3;
  std::chrono::milliseconds backoff_min{100};
  std::chrono::milliseconds backoff_max{2000};
  // Bytes per PATCH when uploading in chunks (0: one monolithic PUT).
  uint64_t upload_chunk = uint64_t{16} << 20;
};

// Progress of a long transfer: bytes done so far of total.
using TransferProgress = std::function<void(uint64_t done, uint64_t total)>;

class RegistryClient {
 public:
  static Result<std::unique_ptr<RegistryClient>> Make(RegistryOptions opts,
                                                      std::shared_ptr<HttpClient> http);
  virtual ~RegistryClient() = default;

  // The blob's size (HEAD). NotFound if the registry does not have it.
  virtual Result<uint64_t> BlobSize(const BlobRef& blob) = 0;
  // Exactly n bytes at off (a Range GET), retried as above.
  virtual Status ReadBlob(const BlobRef& blob, uint64_t off, size_t n, char* buf) = 0;

  // Whether REPO in `registry` has the blob (HEAD).
  virtual Result<bool> HasBlob(const std::string& registry, const std::string& repo,
                               const std::string& digest) = 0;
  // Uploads `src` as blob `digest` (the caller computed it): POST, then
  // PATCH chunks of upload_chunk, then PUT ?digest=, following the Location
  // each answer gives; monolithic when upload_chunk is 0 or src is small.
  virtual Status UploadBlob(const std::string& registry, const std::string& repo,
                            const std::string& digest, const ReadableFile& src,
                            const TransferProgress& progress = {}) = 0;
  // PUT /v2/REPO/manifests/REF with the given media type; returns the digest
  // the registry reports (Docker-Content-Digest), or the body's own.
  virtual Result<std::string> PutManifest(const ImageRef& image, const std::string& media_type,
                                          const std::string& body) = 0;
  // GET the manifest (Accept: OCI image manifest and index, docker v2);
  // body and media type. At most 4 MiB.
  struct Manifest {
    std::string media_type;
    std::string body;
    std::string digest;  // sha256 of body
  };
  virtual Result<Manifest> GetManifest(const ImageRef& image) = 0;
};

}  // namespace ovbd::remote
