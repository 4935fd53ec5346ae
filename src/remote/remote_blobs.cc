#include "ovbd/remote/remote_blobs.h"

#include <pwd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace ovbd::remote {

namespace {

std::string HomeDir() {
  if (const char* h = std::getenv("HOME"); h && *h) return h;
  if (const passwd* pw = getpwuid(geteuid()); pw && pw->pw_dir) return pw->pw_dir;
  return "";
}

// A remote blob as the layers above see it: a ReadableFile whose bytes come
// from the block cache, fetched on a miss.
class RemoteFile final : public ReadableFile {
 public:
  RemoteFile(std::shared_ptr<CachedBlob> blob, BlockFetcher fetch, std::string name)
      : blob_(std::move(blob)), fetch_(std::move(fetch)), name_(std::move(name)) {}

  Status ReadAt(uint64_t off, size_t n, char* buf, size_t* got) const override {
    *got = 0;
    const uint64_t size = blob_->size();
    if (off >= size || n == 0) return Status::OK();
    n = static_cast<size_t>(std::min<uint64_t>(n, size - off));
    Status s = blob_->Read(off, n, buf, fetch_);
    if (s.code() == Status::Code::kCorruption) return s.Annotate(name_);
    if (!s.ok()) {
      // Bytes that cannot be had, whatever the reason (credentials refused,
      // a certificate not trusted, a blob the server lacks, a server gone),
      // are EIO to the layers above and to whoever reads the volume, as an
      // unreadable local layer would be; the message keeps the reason.
      return Status::IOError(s.Annotate(name_).message(), EIO);
    }
    *got = n;
    return Status::OK();
  }
  uint64_t Size() const override { return blob_->size(); }
  const std::string& Name() const override { return name_; }
  bool Refetch(uint64_t off, uint64_t n) const override {
    return blob_->Invalidate(off, n).ok();
  }

 private:
  const std::shared_ptr<CachedBlob> blob_;
  const BlockFetcher fetch_;
  const std::string name_;
};

}  // namespace

std::string DefaultCacheDir() {
  if (geteuid() == 0) return "/var/cache/ovbdfs";
  if (const char* x = std::getenv("XDG_CACHE_HOME"); x && *x == '/') return std::string(x) + "/ovbdfs";
  const std::string home = HomeDir();
  return home.empty() ? "" : home + "/.cache/ovbdfs";
}

std::string DefaultCredentialsFile() {
  if (const char* d = std::getenv("DOCKER_CONFIG"); d && *d) return std::string(d) + "/config.json";
  const std::string home = HomeDir();
  return home.empty() ? "" : home + "/.docker/config.json";
}

Result<std::shared_ptr<RemoteBlobs>> RemoteBlobs::Make(Env* env, RemoteOptions opts) {
  std::shared_ptr<HttpClient> http = HttpClient::Make(opts.http);
  return Make(env, std::move(opts), std::move(http));
}

Result<std::shared_ptr<RemoteBlobs>> RemoteBlobs::Make(Env* env, RemoteOptions opts,
                                                      std::shared_ptr<HttpClient> http) {
  if (opts.cache.dir.empty()) opts.cache.dir = DefaultCacheDir();
  if (opts.cache.dir.empty()) {
    return Status::InvalidArgument("no cache directory: set one (cache_dir=DIR) or HOME");
  }
  OVBD_ASSIGN_OR_RETURN(auto registry, RegistryClient::Make(opts.registry, http));
  return std::shared_ptr<RemoteBlobs>(
      new RemoteBlobs(env, std::move(opts), std::move(http), std::move(registry)));
}

RemoteBlobs::RemoteBlobs(Env* env, RemoteOptions opts, std::shared_ptr<HttpClient> http,
                         std::unique_ptr<RegistryClient> registry)
    : env_(env), opts_(std::move(opts)), http_(std::move(http)), registry_(std::move(registry)) {}

RemoteBlobs::~RemoteBlobs() {
  std::shared_ptr<BlockCache> c;
  {
    MutexLock lk(&mu_);
    c = cache_;
  }
  if (c) c->WaitIdle();
}

Result<std::shared_ptr<BlockCache>> RemoteBlobs::cache() {
  MutexLock lk(&mu_);
  if (!cache_) {
    auto c = BlockCache::Open(env_, opts_.cache);
    if (!c.ok()) return c.status().Annotate("block cache " + opts_.cache.dir);
    cache_ = std::move(c).value();
  }
  return cache_;
}

std::vector<BlobStats> RemoteBlobs::CacheStats() {
  std::shared_ptr<BlockCache> c;
  {
    MutexLock lk(&mu_);
    c = cache_;
  }
  return c ? c->Stats() : std::vector<BlobStats>{};
}

Status RemoteBlobs::ReadDirect(const BlobRef& blob, uint64_t off, size_t n, char* buf) {
  if (blob.kind == BlobRef::Kind::kRegistry) return registry_->ReadBlob(blob, off, n, buf);
  OVBD_ASSIGN_OR_RETURN(Url url, Url::Parse(blob.url));
  ClientRequest req;
  req.url = url;
  req.range_begin = off;
  req.range_end = off + n;
  // The registry client retries; a plain URL gets the same bounded number
  // of attempts here.
  Status last;
  for (int attempt = 0; attempt <= opts_.registry.retries; ++attempt) {
    auto r = http_->Do(req);
    if (r.ok() && r->status == 206 && r->body.size() == n) {
      std::memcpy(buf, r->body.data(), n);
      return Status::OK();
    }
    if (r.ok() && r->status >= 400 && r->status < 500 && r->status != 429) {
      return Status::IOError(blob.ToString() + ": bytes " + std::to_string(off) + "+" +
                                 std::to_string(n) + ": HTTP " + std::to_string(r->status),
                             r->status == 404 ? ENOENT : EIO);
    }
    last = r.ok() ? Status::IOError("HTTP " + std::to_string(r->status), EIO) : r.status();
  }
  return Status::IOError(blob.ToString() + ": bytes " + std::to_string(off) + "+" +
                             std::to_string(n) + ": " + last.ToString(),
                         EIO);
}

Result<uint64_t> RemoteBlobs::Size(const BlobRef& blob) {
  if (blob.kind == BlobRef::Kind::kRegistry) return registry_->BlobSize(blob);
  OVBD_ASSIGN_OR_RETURN(Url url, Url::Parse(blob.url));
  ClientRequest req;
  req.method = "HEAD";
  req.url = url;
  OVBD_ASSIGN_OR_RETURN(auto r, http_->Do(req));
  if (r.status != 200) {
    return Status::IOError(blob.ToString() + ": HTTP " + std::to_string(r.status),
                           r.status == 404 ? ENOENT : EIO);
  }
  const std::string* len = r.Header("Content-Length");
  if (!len) return Status::IOError(blob.ToString() + ": no Content-Length", EPROTO);
  char* end = nullptr;
  const unsigned long long v = std::strtoull(len->c_str(), &end, 10);
  if (len->empty() || *end != '\0') return Status::IOError(blob.ToString() + ": bad Content-Length", EPROTO);
  return static_cast<uint64_t>(v);
}

Result<std::shared_ptr<const ReadableFile>> RemoteBlobs::Open(const BlobRef& blob, uint64_t size) {
  OVBD_ASSIGN_OR_RETURN(auto c, cache());
  OVBD_ASSIGN_OR_RETURN(auto cached, c->Blob(blob.digest, size));
  BlockFetcher fetch = [this, blob](uint64_t off, size_t n, char* buf) {
    return ReadDirect(blob, off, n, buf);
  };
  return std::shared_ptr<const ReadableFile>(
      std::make_shared<RemoteFile>(std::move(cached), std::move(fetch), blob.ToString()));
}

}  // namespace ovbd::remote
