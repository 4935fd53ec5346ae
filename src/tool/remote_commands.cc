// ovbd push, ovbd cache.
//
// push uploads the layers of a snapshot, bottom first, as ZFile blobs: a
// layer stored as a ZFile goes as it is (its file name is its digest); any
// other (an LSMT layer, a sealed upper, a merged layer) is written as a
// committed LSMT layer and compressed with lz4 into a temporary file first.
// Blobs the repository has already are skipped (HEAD). Then the image
// config and the manifest (docs/FORMAT.md, "Images in a registry").
#include "remote_commands.h"

#include <openssl/evp.h>
#include <unistd.h>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "ovbd/control/size.h"
#include "ovbd/io/coding.h"
#include "ovbd/io/string_file.h"
#include "ovbd/layer/layer_open.h"
#include "ovbd/layer/lsmt_writer.h"
#include "ovbd/layer/zfile.h"
#include "ovbd/remote/oci_manifest.h"
#include "ovbd/store/filename.h"
#include "ovbd/store/store.h"
#include "progress_bar.h"

namespace ovbd::tool {

namespace {

Env* env() { return Env::Default(); }

Result<std::string> Sha256Of(const ReadableFile& f) {
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr);
  constexpr size_t kChunk = 4 << 20;
  std::vector<char> buf(kChunk);
  for (uint64_t off = 0; off < f.Size(); off += kChunk) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, f.Size() - off));
    OVBD_RETURN_IF_ERROR(f.ReadExact(off, n, buf.data()));
    EVP_DigestUpdate(md.get(), buf.data(), n);
  }
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int dlen = 0;
  EVP_DigestFinal_ex(md.get(), d, &dlen);
  return "sha256:" + HexEncode(d, dlen);
}

std::string TempDir() {
  const char* t = std::getenv("TMPDIR");
  return t && *t ? t : "/tmp";
}

// A temporary file removed when this goes.
struct TempFile {
  std::string path;
  ~TempFile() {
    if (!path.empty()) (void)env()->Remove(path);
  }
};

// Writes `layer` as a committed LSMT layer into `out`.
Status WriteCommitted(const lsmt::Layer& layer, RWFile* out) {
  lsmt::WriteOptions wo;
  wo.virtual_size = layer.virtual_size();
  wo.uuid = layer.header().uuid;
  wo.parent_uuid = layer.header().parent_uuid;
  lsmt::Writer w(out, wo);
  std::vector<char> buf;
  for (const Segment& s : layer.segments()) {
    if (s.zeroed) {
      OVBD_RETURN_IF_ERROR(w.AddZeroed(s.offset * lsmt::kSectorSize, uint64_t{s.length} * lsmt::kSectorSize));
      continue;
    }
    buf.resize(size_t{s.length} * lsmt::kSectorSize);
    OVBD_RETURN_IF_ERROR(layer.ReadData(s.moffset * lsmt::kSectorSize, buf.size(), buf.data()));
    OVBD_RETURN_IF_ERROR(w.AddData(s.offset * lsmt::kSectorSize, buf.data(), buf.size()));
  }
  return w.Finish();
}

// The blob to push for one lower layer: the file itself when it is a ZFile,
// else a compressed copy made in `tmp`.
struct Blob {
  std::shared_ptr<const ReadableFile> file;
  std::string digest;
};

Result<Blob> BlobOf(Store& st, const std::string& lower, TempFile* tmp_lsmt, TempFile* tmp_z) {
  OVBD_ASSIGN_OR_RETURN(std::shared_ptr<const ReadableFile> raw, st.OpenLayerBytes(lower));
  OVBD_ASSIGN_OR_RETURN(bool z, zfile::IsZFile(*raw));
  if (z) {
    Blob b;
    b.file = raw;
    if (filename::Classify(lower) == filename::Kind::kImportedLayer) {
      b.digest = "sha256:" + lower.substr(7, lower.size() - 7 - 6);  // named by its digest
    } else {
      OVBD_ASSIGN_OR_RETURN(b.digest, Sha256Of(*b.file));
    }
    return b;
  }
  OVBD_ASSIGN_OR_RETURN(auto layer, OpenLayer(raw));
  const std::string base = TempDir() + "/ovbd-push-" + std::to_string(getpid()) + "-" + lower;
  tmp_lsmt->path = base + ".lsmt";
  tmp_z->path = base + ".zfile";
  (void)env()->Remove(tmp_lsmt->path);
  (void)env()->Remove(tmp_z->path);
  {
    OVBD_ASSIGN_OR_RETURN(auto out, env()->OpenRW(tmp_lsmt->path, true));
    OVBD_RETURN_IF_ERROR(WriteCommitted(*layer, out.get()));
  }
  {
    OVBD_ASSIGN_OR_RETURN(auto src, env()->OpenReadable(tmp_lsmt->path));
    OVBD_ASSIGN_OR_RETURN(auto out, env()->OpenRW(tmp_z->path, true));
    zfile::Options zo;
    zo.algo = zfile::Algo::kLz4;
    ProgressBar bar("compress " + lower.substr(0, 14), 24, true);
    OVBD_RETURN_IF_ERROR(zfile::Write(*src, out.get(), zo, [&](uint64_t d, uint64_t t) { bar(d, t); }));
  }
  (void)env()->Remove(tmp_lsmt->path);
  tmp_lsmt->path.clear();
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<ReadableFile> zf, env()->OpenReadable(tmp_z->path));
  Blob b;
  b.file = std::shared_ptr<const ReadableFile>(std::move(zf));
  OVBD_ASSIGN_OR_RETURN(b.digest, Sha256Of(*b.file));
  return b;
}

Status Push(const std::string& dir, const std::string& snapshot, const std::string& image) {
  OVBD_ASSIGN_OR_RETURN(remote::ImageRef ref, remote::ImageRef::Parse(image));
  if (ref.tag.empty()) return Status::InvalidArgument("push to a tag: registry://HOST[:PORT]/REPO:TAG");
  if (snapshot.find('@') == std::string::npos) {
    return Status::InvalidArgument("push a snapshot, VOL@SNAP (a volume's upper changes while it is in use)");
  }
  OVBD_ASSIGN_OR_RETURN(auto rb, ToolRemote());
  StoreOptions so;
  so.read_only = true;  // layers of a snapshot never change: a mounted store is fine
  so.remote = rb;
  so.start_jobs = false;
  OVBD_ASSIGN_OR_RETURN(auto st, Store::Open(env(), dir, so));
  OVBD_ASSIGN_OR_RETURN(VolumeInfo info, st->Lookup(snapshot));
  if (info.lowers.empty()) return Status::InvalidArgument(snapshot + " has no layers to push");
  remote::ImageManifest m;
  m.volume_size = info.size;
  for (const auto& lower : info.lowers) {
    TempFile tl, tz;
    OVBD_ASSIGN_OR_RETURN(Blob b, BlobOf(*st, lower, &tl, &tz));
    remote::Descriptor d;
    d.media_type = remote::kOverlaybdLayerType;
    d.digest = b.digest;
    d.size = b.file->Size();
    OVBD_ASSIGN_OR_RETURN(bool has, rb->registry().HasBlob(ref.registry, ref.repo, d.digest));
    if (has) {
      std::printf("layer %s: already there (%s)\n", d.digest.c_str(), FormatSize(d.size).c_str());
    } else {
      ProgressBar bar("upload " + d.digest.substr(7, 12), 24, true);
      OVBD_RETURN_IF_ERROR(rb->registry().UploadBlob(ref.registry, ref.repo, d.digest, *b.file,
                                                     [&](uint64_t x, uint64_t t) { bar(x, t); }));
      std::printf("layer %s: pushed (%s)\n", d.digest.c_str(), FormatSize(d.size).c_str());
    }
    m.layers.push_back(d);
  }
  const std::string config = remote::EncodeImageConfig(m.layers);
  auto cfile = std::make_shared<StringFile>(config, "image config");
  m.config.media_type = remote::kOciConfigType;
  OVBD_ASSIGN_OR_RETURN(m.config.digest, Sha256Of(*cfile));
  m.config.size = config.size();
  OVBD_ASSIGN_OR_RETURN(bool has_cfg, rb->registry().HasBlob(ref.registry, ref.repo, m.config.digest));
  if (!has_cfg) {
    OVBD_RETURN_IF_ERROR(rb->registry().UploadBlob(ref.registry, ref.repo, m.config.digest, *cfile));
  }
  OVBD_ASSIGN_OR_RETURN(std::string digest,
                        rb->registry().PutManifest(ref, remote::kOciManifestType,
                                                   remote::EncodeImageManifest(m)));
  std::printf("pushed %s to %s (%s)\n", snapshot.c_str(), ref.ToString().c_str(), digest.c_str());
  return Status::OK();
}

// The cache, or an error that says what to do when a mounted daemon holds
// it (one process uses a cache directory at a time).
Result<std::shared_ptr<remote::BlockCache>> OpenToolCache() {
  OVBD_ASSIGN_OR_RETURN(auto rb, ToolRemote());
  auto cache = rb->cache();
  if (cache.status().code() == Status::Code::kBusy) {
    return Status::Busy(cache.status().message() +
                        "; a mounted ovbdfs uses it: its counters are in `ovbd status STORE` "
                        "(the remote lines) and the mount's .metrics, and its bound is the "
                        "mount's -o cache_size= (or give this command another --cache-dir)");
  }
  return cache;
}

Status CacheStatus() {
  OVBD_ASSIGN_OR_RETURN(auto cache, OpenToolCache());
  uint64_t total = 0;
  for (const auto& b : cache->Stats()) {
    total += b.cached_bytes;
    std::printf("%s  %s of %s cached%s%s\n", b.digest.c_str(), FormatSize(b.cached_bytes).c_str(),
                FormatSize(b.size).c_str(), b.complete ? ", complete" : "", b.pinned ? ", pinned" : "");
  }
  std::printf("total %s in %s blocks of %s\n", FormatSize(total).c_str(),
              FormatSize(cache->block_size()).c_str(),
              (RemoteFlags().cache_dir.empty() ? remote::DefaultCacheDir() : RemoteFlags().cache_dir).c_str());
  return Status::OK();
}

Status CachePrune(const std::string& max_text) {
  uint64_t max = 0;
  if (!max_text.empty()) {
    OVBD_ASSIGN_OR_RETURN(max, ParseSize(max_text));
  }
  OVBD_ASSIGN_OR_RETURN(auto cache, OpenToolCache());
  OVBD_ASSIGN_OR_RETURN(uint64_t freed, cache->Prune(max));
  std::printf("freed %s; %s cached\n", FormatSize(freed).c_str(), FormatSize(cache->cached_bytes()).c_str());
  return Status::OK();
}

}  // namespace

remote::RemoteSettings& RemoteFlags() {
  static remote::RemoteSettings s;
  return s;
}

namespace {
std::shared_ptr<remote::RemoteBlobs>& ToolRemoteSlot() {
  static std::shared_ptr<remote::RemoteBlobs> made;
  return made;
}
}  // namespace

Result<std::shared_ptr<remote::RemoteBlobs>> ToolRemote() {
  auto& made = ToolRemoteSlot();
  if (!made) {
    OVBD_ASSIGN_OR_RETURN(made, remote::MakeRemoteFromOptions(env(), RemoteFlags()));
  }
  return made;
}

void ReleaseToolRemote() { ToolRemoteSlot().reset(); }

void RegisterRemoteCommands(CLI::App& app, std::function<void(const Status&)> run) {
  auto& f = RemoteFlags();
  app.add_option("--cache-dir", f.cache_dir, "Block cache of remote layers (default /var/cache/ovbdfs "
                                             "for root, ~/.cache/ovbdfs otherwise)");
  app.add_option("--cache-size", f.cache_size, "Bound of that cache (K/M/G/T; default 16G)");
  app.add_option("--credentials", f.credentials,
                 "Registry credentials, docker config.json format (default ~/.docker/config.json)");
  app.add_option("--registry-config", f.registry_config,
                 "Registry settings: mirrors, plain-HTTP registries, timeouts (JSON)");

  static std::string dir, snapshot, image, max_size;
  auto* pu = app.add_subcommand("push", "Upload a snapshot's layers and an image manifest to a registry");
  pu->add_option("DIR", dir, "Store directory")->required();
  pu->add_option("SNAPSHOT", snapshot, "VOL@SNAP")->required();
  pu->add_option("IMAGE", image, "registry://HOST[:PORT]/REPO:TAG")->required();
  pu->callback([run] { run(Push(dir, snapshot, image)); });

  auto* ca = app.add_subcommand("cache", "Inspect or shrink the block cache of remote layers");
  ca->require_subcommand(1);
  auto* cs = ca->add_subcommand("status", "Blobs in the cache and the bytes each holds");
  cs->callback([run] { run(CacheStatus()); });
  auto* cp = ca->add_subcommand("prune", "Evict least recently used blocks");
  cp->add_option("--max-size", max_size, "Keep at most this much (K/M/G; default: nothing)");
  cp->callback([run] { run(CachePrune(max_size)); });
}

}  // namespace ovbd::tool
