// RegistryClient over HttpClient: the distribution API's blob and manifest
// endpoints, with mirrors and retries for reads. Authentication is
// RegistryAuth's (registry_auth.h); what a refusal means, registry_errors.h.
#include "ovbd/remote/registry_client.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
#include <random>
#include <thread>

#include "ovbd/io/mutex.h"
#include "ovbd/remote/auth.h"
#include "query.h"
#include "registry_auth.h"
#include "registry_errors.h"
#include "sha256.h"

namespace ovbd::remote {

namespace {

using Clock = std::chrono::steady_clock;

constexpr uint64_t kMaxMonolithic = uint64_t{256} << 20;
constexpr uint64_t kFallbackChunk = uint64_t{16} << 20;
constexpr size_t kMaxManifestBytes = 4 << 20;
constexpr size_t kMaxCredentialsFile = 1 << 20;
constexpr auto kMirrorCoolOff = std::chrono::seconds(30);

constexpr char kAcceptManifests[] =
    "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json";

std::string Lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

bool Listed(const std::vector<std::string>& list, const std::string& reg) {
  return std::any_of(list.begin(), list.end(), [&](const std::string& s) { return Lower(s) == reg; });
}

// What a blob read asks of the token server ("" for a plain URL).
std::string PullScope(const BlobRef& b) {
  return b.kind == BlobRef::Kind::kRegistry ? "repository:" + b.repo + ":pull" : "";
}

std::string Range(uint64_t off, uint64_t n) {
  return "bytes [" + std::to_string(off) + ", " + std::to_string(off + n) + ")";
}

// Where a request goes, and whose credentials and tokens it carries there.
struct Target {
  Url url;
  std::string auth_host;
  bool mirror = false;
};

// A server's base URL (scheme://host[:port][/prefix]) with a path under it.
Url Under(const Url& base, const std::string& path) {
  Url u = base;
  std::string t = u.target.substr(0, u.target.find('?'));
  while (!t.empty() && t.back() == '/') t.pop_back();
  u.target = t + path;
  return u;
}

bool SameServer(const Url& a, const Url& b) {
  return a.scheme == b.scheme && a.host == b.host && a.port == b.port;
}

// The Content-Type of a response without its parameters.
std::string MediaType(const ClientResponse& r) {
  const std::string* ct = r.Header("Content-Type");
  if (ct == nullptr) return "";
  std::string t = ct->substr(0, ct->find(';'));
  while (!t.empty() && (t.back() == ' ' || t.back() == '\t')) t.pop_back();
  size_t b = t.find_first_not_of(" \t");
  return b == std::string::npos ? "" : Lower(t.substr(b));
}

bool ParseU64(const std::string& s, uint64_t* v) {
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *v);
  return !s.empty() && ec == std::errc() && end == s.data() + s.size();
}

// Uniform in [d/2, d] for d = min(max, min * 2^attempt): spread out, so
// threads that failed together do not all come back together.
std::chrono::milliseconds BackoffDelay(const RegistryOptions& o, int attempt) {
  int64_t d = std::max<int64_t>(1, o.backoff_min.count());
  for (int i = 0; i < attempt && d < o.backoff_max.count(); ++i) d *= 2;
  d = std::min<int64_t>(d, std::max<int64_t>(1, o.backoff_max.count()));
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<int64_t> pick(d / 2, d);
  return std::chrono::milliseconds(pick(rng));
}

class Client final : public RegistryClient {
 public:
  Client(RegistryOptions opts, std::shared_ptr<HttpClient> http,
         std::map<std::string, Credentials> creds, std::map<std::string, std::vector<Url>> mirrors)
      : opts_(std::move(opts)),
        auth_(std::move(http), std::move(creds)),
        mirrors_(std::move(mirrors)) {}

  Result<uint64_t> BlobSize(const BlobRef& blob) override;
  Status ReadBlob(const BlobRef& blob, uint64_t off, size_t n, char* buf) override;
  Result<bool> HasBlob(const std::string& registry, const std::string& repo,
                       const std::string& digest) override;
  Status UploadBlob(const std::string& registry, const std::string& repo, const std::string& digest,
                    const ReadableFile& src, const TransferProgress& progress) override;
  Result<std::string> PutManifest(const ImageRef& image, const std::string& media_type,
                                  const std::string& body) override;
  Result<Manifest> GetManifest(const ImageRef& image) override;

 private:
  Result<Url> OriginBase(const std::string& registry) const;
  // Mirrors first (if `use_mirrors`), then the origin, for `path`.
  Result<std::vector<Target>> Targets(const std::string& registry, const std::string& path,
                                      bool use_mirrors) const;
  Result<std::vector<Target>> BlobTargets(const BlobRef& blob) const;
  // A read: each mirror once (passing over those that fail), then the last
  // target (the origin) with retries. A response is returned whatever its
  // status; an error only when no server answered.
  Result<ClientResponse> Read(const std::vector<Target>& targets, const std::string& scope,
                              ClientRequest req, int* attempts);
  Result<ClientResponse> Write(const Target& t, const std::string& scope, ClientRequest req) {
    req.url = t.url;
    return auth_.Do(t.auth_host, scope, std::move(req));
  }

  bool CoolingOff(const Url& u) {
    MutexLock l(&mu_);
    auto it = down_until_.find(u.scheme + "://" + u.Authority());
    return it != down_until_.end() && Clock::now() < it->second;
  }
  void MarkDown(const Url& u) {
    MutexLock l(&mu_);
    down_until_[u.scheme + "://" + u.Authority()] = Clock::now() + kMirrorCoolOff;
  }

  const RegistryOptions opts_;
  RegistryAuth auth_;
  const std::map<std::string, std::vector<Url>> mirrors_;  // keyed by lowercase registry
  Mutex mu_;
  std::map<std::string, Clock::time_point> down_until_ GUARDED_BY(mu_);
};

Result<Url> Client::OriginBase(const std::string& registry) const {
  // Docker Hub's API is served under another name than its images'.
  const std::string host = registry == "docker.io" ? "registry-1.docker.io" : registry;
  auto probe = Url::Parse("http://" + host + "/");
  if (!probe.ok()) return Status::InvalidArgument("bad registry '" + registry + "'");
  const bool plain = Listed(opts_.plain_http, registry) ||
                     (probe->IsLoopback() && !Listed(opts_.https, registry));
  return Url::Parse((plain ? "http://" : "https://") + host + "/");
}

Result<std::vector<Target>> Client::Targets(const std::string& registry, const std::string& path,
                                             bool use_mirrors) const {
  std::vector<Target> out;
  if (use_mirrors) {
    if (auto it = mirrors_.find(registry); it != mirrors_.end()) {
      for (const Url& m : it->second) out.push_back({Under(m, path), Lower(m.Authority()), true});
    }
  }
  OVBD_ASSIGN_OR_RETURN(Url base, OriginBase(registry));
  out.push_back({Under(base, path), registry, false});
  return out;
}

Result<std::vector<Target>> Client::BlobTargets(const BlobRef& blob) const {
  if (blob.kind == BlobRef::Kind::kUrl) {
    OVBD_ASSIGN_OR_RETURN(Url u, Url::Parse(blob.url));
    std::string host = Lower(u.Authority());
    return std::vector<Target>{{std::move(u), std::move(host), false}};
  }
  return Targets(Lower(blob.registry), "/v2/" + blob.repo + "/blobs/" + blob.digest, true);
}

Result<ClientResponse> Client::Read(const std::vector<Target>& targets, const std::string& scope,
                                    ClientRequest req, int* attempts) {
  *attempts = 0;
  for (size_t i = 0; i + 1 < targets.size(); ++i) {
    const Target& t = targets[i];
    if (CoolingOff(t.url)) continue;
    req.url = t.url;
    auto r = auth_.Do(t.auth_host, scope, req);
    if (r.ok() && r->status >= 200 && r->status <= 299) return r;
    // Not there, or refusing: this request goes elsewhere. Unreachable:
    // the next ones too, for a while, without waiting on it first.
    if (!r.ok() && Retryable(r.status())) MarkDown(t.url);
  }
  const Target& origin = targets.back();
  req.url = origin.url;
  for (int attempt = 0;; ++attempt) {
    ++*attempts;
    auto r = auth_.Do(origin.auth_host, scope, req);
    const bool again = r.ok() ? Retryable(*r) : Retryable(r.status());
    if (!again || attempt >= opts_.retries) return r;
    std::this_thread::sleep_for(BackoffDelay(opts_, attempt));
  }
}

Result<uint64_t> Client::BlobSize(const BlobRef& blob) {
  const std::string what = blob.ToString();
  OVBD_ASSIGN_OR_RETURN(std::vector<Target> targets, BlobTargets(blob));
  ClientRequest req;
  req.method = "HEAD";
  int attempts = 0;
  auto r = Read(targets, PullScope(blob), std::move(req), &attempts);
  if (!r.ok()) return r.status().Annotate(what);
  if (r->status == 404) return Status::NotFound(what + ": no such blob");
  if (r->status != 200) return ResponseError(what, *r);
  const std::string* len = r->Header("Content-Length");
  uint64_t size = 0;
  if (len == nullptr || !ParseU64(*len, &size)) {
    return Status::IOError(what + ": the server gave no size (Content-Length)", EPROTO);
  }
  if (const std::string* d = r->Header("Docker-Content-Digest");
      d != nullptr && blob.kind == BlobRef::Kind::kRegistry && *d != blob.digest) {
    return Status::Corruption(what + ": the server names another digest for it");
  }
  return size;
}

Status Client::ReadBlob(const BlobRef& blob, uint64_t off, size_t n, char* buf) {
  if (n == 0) return Status::OK();
  const std::string what = blob.ToString() + ": " + Range(off, n);
  // Everything but refused authentication is EIO to the reader: the bytes
  // are not to be had (the message says why).
  auto fail = [&](const Status& s, const std::string& extra = "") {
    return Status::IOError(s.message() + extra, s.os_errno() == EACCES ? EACCES : EIO);
  };
  if (off > UINT64_MAX - n) return fail(Status::InvalidArgument(what + ": past 2^64"));
  auto targets = BlobTargets(blob);
  if (!targets.ok()) return fail(targets.status().Annotate(what));
  ClientRequest req;
  req.range_begin = off;
  req.range_end = off + n;
  int attempts = 0;
  auto r = Read(*targets, PullScope(blob), std::move(req), &attempts);
  const std::string tries = attempts > 1 ? " (" + std::to_string(attempts) + " attempts)" : "";
  if (!r.ok()) return fail(r.status().Annotate(what), tries);
  if (r->status != 206) return fail(ResponseError(what, *r), tries);
  if (r->body.size() != n) {
    return fail(Status::IOError(what + ": the server sent " + std::to_string(r->body.size()) + " bytes", EPROTO));
  }
  std::memcpy(buf, r->body.data(), n);
  return Status::OK();
}

Result<bool> Client::HasBlob(const std::string& registry, const std::string& repo,
                             const std::string& digest) {
  OVBD_ASSIGN_OR_RETURN(BlobRef blob, BlobRef::Parse("registry://" + registry + "/" + repo + "@" + digest));
  const std::string what = blob.ToString();
  OVBD_ASSIGN_OR_RETURN(std::vector<Target> targets,
                        Targets(Lower(blob.registry), "/v2/" + repo + "/blobs/" + digest, false));
  ClientRequest req;
  req.method = "HEAD";
  int attempts = 0;
  auto r = Read(targets, "repository:" + repo + ":pull", std::move(req), &attempts);
  if (!r.ok()) return r.status().Annotate(what);
  if (r->status == 200) return true;
  if (r->status == 404) return false;
  return ResponseError(what, *r);
}

Status Client::UploadBlob(const std::string& registry, const std::string& repo,
                          const std::string& digest, const ReadableFile& src,
                          const TransferProgress& progress) {
  OVBD_ASSIGN_OR_RETURN(BlobRef blob, BlobRef::Parse("registry://" + registry + "/" + repo + "@" + digest));
  const std::string reg = Lower(blob.registry);
  const std::string what = "upload of " + blob.ToString();
  const std::string scope = "repository:" + repo + ":pull,push";
  OVBD_ASSIGN_OR_RETURN(std::vector<Target> targets, Targets(reg, "/v2/" + repo + "/blobs/uploads/", false));
  const Url origin = targets.back().url;

  // Each answer names where the upload goes on (Location): relative or
  // absolute, perhaps with a query of its own. Credentials go along only
  // while it stays on the registry's server.
  auto next = [&](const ClientResponse& resp, Target* t) -> Status {
    const std::string* loc = resp.Header("Location");
    if (loc == nullptr) return Status::IOError(what + ": the registry gave no upload location", EPROTO);
    auto u = resp.url.Resolve(*loc);
    if (!u.ok()) return Status::IOError(what + ": the registry gave a bad upload location", EPROTO);
    t->auth_host = SameServer(*u, origin) ? reg : Lower(u->Authority());
    t->url = std::move(*u);
    return Status::OK();
  };
  auto expect = [&](const Result<ClientResponse>& r, int status, const char* step) -> Status {
    if (!r.ok()) return r.status().Annotate(what + " (" + step + ")");
    if (r->status != status) return ResponseError(what + " (" + step + ")", r.value());
    return Status::OK();
  };
  auto read = [&](uint64_t off, uint64_t n, std::string* out) -> Status {
    out->resize(n);
    return src.ReadExact(off, n, out->data()).Annotate(what);
  };

  ClientRequest start;
  start.method = "POST";
  auto r = Write(targets.back(), scope, start);
  OVBD_RETURN_IF_ERROR(expect(r, 202, "start"));
  Target t;
  OVBD_RETURN_IF_ERROR(next(*r, &t));

  const uint64_t total = src.Size();
  const uint64_t chunk = opts_.upload_chunk == 0 ? kFallbackChunk : opts_.upload_chunk;
  const bool monolithic = opts_.upload_chunk == 0 ? total <= kMaxMonolithic : total <= chunk;
  ClientRequest put;
  put.method = "PUT";
  put.headers.emplace_back("Content-Type", "application/octet-stream");
  if (monolithic) {
    OVBD_RETURN_IF_ERROR(read(0, total, &put.body));
  } else {
    for (uint64_t off = 0; off < total;) {
      const uint64_t n = std::min(chunk, total - off);
      ClientRequest patch;
      patch.method = "PATCH";
      patch.headers.emplace_back("Content-Type", "application/octet-stream");
      patch.headers.emplace_back("Content-Range", std::to_string(off) + "-" + std::to_string(off + n - 1));
      OVBD_RETURN_IF_ERROR(read(off, n, &patch.body));
      r = Write(t, scope, std::move(patch));
      OVBD_RETURN_IF_ERROR(expect(r, 202, "chunk"));
      OVBD_RETURN_IF_ERROR(next(*r, &t));
      off += n;
      if (progress) progress(off, total);
    }
  }
  AppendQuery(&t.url, "digest", digest);
  r = Write(t, scope, std::move(put));
  OVBD_RETURN_IF_ERROR(expect(r, 201, "commit"));
  if (const std::string* d = r->Header("Docker-Content-Digest"); d != nullptr && *d != digest) {
    return Status::Corruption(what + ": the registry stored it as another digest");
  }
  if (progress) progress(total, total);
  return Status::OK();
}

Result<std::string> Client::PutManifest(const ImageRef& image, const std::string& media_type,
                                        const std::string& body) {
  OVBD_ASSIGN_OR_RETURN(ImageRef ref, ImageRef::Parse(image.ToString()));
  const std::string what = "PUT manifest " + ref.ToString();
  const std::string own = Sha256Digest(body);
  if (!ref.digest.empty() && ref.digest != own) {
    return Status::InvalidArgument(what + ": the manifest's digest is " + own);
  }
  if (body.size() > kMaxManifestBytes) return Status::TooLarge(what + ": larger than 4 MiB");
  OVBD_ASSIGN_OR_RETURN(std::vector<Target> targets,
                        Targets(Lower(ref.registry), "/v2/" + ref.repo + "/manifests/" + ref.reference(), false));
  ClientRequest req;
  req.method = "PUT";
  req.headers.emplace_back("Content-Type", media_type);
  req.body = body;
  auto r = Write(targets.back(), "repository:" + ref.repo + ":pull,push", std::move(req));
  if (!r.ok()) return r.status().Annotate(what);
  if (r->status != 201 && r->status != 200) return ResponseError(what, *r);
  if (const std::string* d = r->Header("Docker-Content-Digest"); d != nullptr) {
    if (!ValidateDigest(*d).ok() || *d != own) {
      return Status::Corruption(what + ": the registry stored it as another digest");
    }
  }
  return own;
}

Result<RegistryClient::Manifest> Client::GetManifest(const ImageRef& image) {
  OVBD_ASSIGN_OR_RETURN(ImageRef ref, ImageRef::Parse(image.ToString()));
  const std::string what = "manifest " + ref.ToString();
  // A mirror's word is taken only for a digest, which the body is checked
  // against; a tag is resolved by the origin.
  OVBD_ASSIGN_OR_RETURN(std::vector<Target> targets,
                        Targets(Lower(ref.registry), "/v2/" + ref.repo + "/manifests/" + ref.reference(),
                                !ref.digest.empty()));
  ClientRequest req;
  req.headers.emplace_back("Accept", kAcceptManifests);
  int attempts = 0;
  auto r = Read(targets, "repository:" + ref.repo + ":pull", std::move(req), &attempts);
  if (!r.ok()) return r.status().Annotate(what);
  if (r->status == 404) return Status::NotFound(what + ": no such image");
  if (r->status != 200) return ResponseError(what, *r);
  if (r->body.size() > kMaxManifestBytes) return Status::TooLarge(what + ": larger than 4 MiB");
  Manifest m;
  m.digest = Sha256Digest(r->body);
  m.media_type = MediaType(*r);
  if (const std::string* d = r->Header("Docker-Content-Digest"); d != nullptr && *d != m.digest) {
    return Status::Corruption(what + ": its body does not have the digest the registry names");
  }
  if (!ref.digest.empty() && ref.digest != m.digest) {
    return Status::Corruption(what + ": the server sent a manifest with another digest");
  }
  m.body = std::move(r->body);
  return m;
}

}  // namespace

Result<std::unique_ptr<RegistryClient>> RegistryClient::Make(RegistryOptions opts,
                                                             std::shared_ptr<HttpClient> http) {
  if (!http) return Status::InvalidArgument("registry client: no HTTP client");
  if (opts.retries < 0) return Status::InvalidArgument("registry client: negative retries");
  std::map<std::string, Credentials> creds;
  if (!opts.credentials_file.empty()) {
    auto text = Env::Default()->ReadSmallFile(opts.credentials_file, kMaxCredentialsFile);
    if (text.ok()) {
      auto parsed = ParseDockerConfig(*text);
      if (!parsed.ok()) return parsed.status().Annotate(opts.credentials_file);
      creds = std::move(*parsed);
    } else if (!text.status().IsNotFound()) {
      return text.status().Annotate("credentials file " + opts.credentials_file);
    }
  }
  std::map<std::string, std::vector<Url>> mirrors;
  for (const auto& [reg, list] : opts.mirrors) {
    for (const std::string& m : list) {
      auto u = Url::Parse(m);
      if (!u.ok()) return u.status().Annotate("mirror of " + reg);
      mirrors[Lower(reg)].push_back(std::move(*u));
    }
  }
  return std::unique_ptr<RegistryClient>(
      new Client(std::move(opts), std::move(http), std::move(creds), std::move(mirrors)));
}

}  // namespace ovbd::remote
