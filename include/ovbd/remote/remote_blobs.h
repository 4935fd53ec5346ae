// RemoteBlobs: what a store uses to read layers that live in a registry or
// at a URL. It owns the block cache and the registry client, and hands out
// ReadableFiles over remote blobs: reads come from the cache, and a missing
// block is fetched (once, whoever else wants it) from the registry's
// mirrors or origin and kept. The layer readers (LSMT, ZFile) stack on such
// a file unchanged, so a ZFile layer is fetched by compressed block.
//
// The cache directory is opened on first use, so a store with no remote
// layers never takes it, and a daemon started while the registry is down
// still serves every cached block (nothing here asks the registry until a
// block is missing).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ovbd/io/env.h"
#include "ovbd/io/http_client.h"
#include "ovbd/io/mutex.h"
#include "ovbd/remote/blob_ref.h"
#include "ovbd/remote/block_cache.h"
#include "ovbd/remote/registry_client.h"

namespace ovbd::remote {

class RemoteBlobs;

struct RemoteOptions {
  BlockCacheOptions cache;  // cache.dir "" : DefaultCacheDir()
  RegistryOptions registry;
  HttpClientOptions http;
};

// Reads a registry configuration file (JSON, docs/FORMAT.md "Registry
// configuration") into `opts`: mirrors, registries spoken to over plain
// HTTP, loopback ones spoken to over TLS, timeouts, retries, a CA bundle.
// Unknown keys are refused, so a misspelt setting is not silently ignored.
Status ParseRegistryConfig(std::string_view json, RemoteOptions* opts);

// What users give the daemon (-o cache_dir=, cache_size=, credentials=,
// registry_config=) and ovbd (--cache-dir, ...): "" means the default.
struct RemoteSettings {
  std::string cache_dir;
  std::string cache_size;       // "16G"
  std::string credentials;      // docker config.json
  std::string registry_config;  // JSON, see ParseRegistryConfig
};
// RemoteBlobs made from them; errors name the setting at fault.
Result<std::shared_ptr<RemoteBlobs>> MakeRemoteFromOptions(Env* env, const RemoteSettings& s);

// /var/cache/ovbdfs for root; $XDG_CACHE_HOME/ovbdfs or ~/.cache/ovbdfs
// for anyone else.
std::string DefaultCacheDir();
// ~/.docker/config.json (DOCKER_CONFIG/config.json if that is set), or ""
// without a home.
std::string DefaultCredentialsFile();

class RemoteBlobs {
 public:
  // Makes the registry client (reads the credentials file) but opens
  // nothing else yet.
  static Result<std::shared_ptr<RemoteBlobs>> Make(Env* env, RemoteOptions opts);
  // Over a given HTTP client (tests wrap the real one to inject faults).
  static Result<std::shared_ptr<RemoteBlobs>> Make(Env* env, RemoteOptions opts,
                                                   std::shared_ptr<HttpClient> http);

  // A file over the blob, `size` bytes long (as its manifest or stub says).
  Result<std::shared_ptr<const ReadableFile>> Open(const BlobRef& blob, uint64_t size);
  // The blob's size as its server reports it (HEAD).
  Result<uint64_t> Size(const BlobRef& blob);
  // Reads n bytes at off straight from the server, bypassing the cache
  // (pull and push stream whole blobs and must not flood the cache).
  Status ReadDirect(const BlobRef& blob, uint64_t off, size_t n, char* buf);

  // Waits for the cache's readaheads: their fetchers call back into this.
  ~RemoteBlobs();
  RemoteBlobs(const RemoteBlobs&) = delete;
  RemoteBlobs& operator=(const RemoteBlobs&) = delete;

  RegistryClient& registry() { return *registry_; }
  // The cache, opened now if it was not. kBusy when another process has it.
  Result<std::shared_ptr<BlockCache>> cache();
  // Stats of every blob in the cache, if it is open (else nothing).
  std::vector<BlobStats> CacheStats();

 private:
  RemoteBlobs(Env* env, RemoteOptions opts, std::shared_ptr<HttpClient> http,
              std::unique_ptr<RegistryClient> registry);
  Status Fetch(const BlobRef& blob, uint64_t off, size_t n, char* buf);

  Env* const env_;
  const RemoteOptions opts_;
  const std::shared_ptr<HttpClient> http_;
  const std::unique_ptr<RegistryClient> registry_;
  Mutex mu_;
  std::shared_ptr<BlockCache> cache_ GUARDED_BY(mu_);
};

}  // namespace ovbd::remote
