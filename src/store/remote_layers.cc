// Remote lower layers: a lower "sha256-HEX.layer" with no local copy is read
// from the address its stub "sha256-HEX.remote" names, through the block
// cache of StoreOptions::remote. The manifest names the layer by digest as
// always, so snapshots, clones, merges and garbage collection treat remote
// and local lowers alike, and a pull (the blob downloaded, checked against
// its digest and stored as sha256-HEX.layer) needs no manifest change.
#include <nlohmann/json.hpp>

#include "ovbd/remote/oci_manifest.h"
#include "ovbd/store/filename.h"
#include "store_internal.h"

namespace ovbd {

namespace {

using nlohmann::json;

constexpr size_t kMaxStubBytes = 16 << 10;
constexpr char kStubFormat[] = "ovbd-remote-layer";
// A layer's blob is at most this large (LSMT offsets are 50-bit sectors).
constexpr uint64_t kMaxBlobBytes = uint64_t{1} << 50;

std::string HexOfLayerFile(const std::string& file) {
  // "sha256-" HEX ".layer"
  return file.substr(7, file.size() - 7 - 6);
}

std::string EncodeStub(const remote::BlobRef& ref, uint64_t size) {
  json j;
  j["format"] = kStubFormat;
  j["version"] = 1;
  j["address"] = ref.ToString();
  j["size"] = size;
  return j.dump(2) + "\n";
}

Status DecodeStub(const std::string& text, const std::string& file, remote::BlobRef* ref,
                  uint64_t* size) {
  auto bad = [&](const std::string& why) { return Status::Corruption(file + ": " + why); };
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  if (!j.contains("format") || j["format"] != kStubFormat) return bad("not a remote layer address");
  if (!j.contains("version") || !j["version"].is_number_integer() || j["version"] != 1) {
    return bad("unsupported version");
  }
  if (!j.contains("address") || !j["address"].is_string()) return bad("no address");
  if (!j.contains("size") || !j["size"].is_number_unsigned()) return bad("no size");
  auto r = remote::BlobRef::Parse(j["address"].get<std::string>());
  if (!r.ok()) return bad(r.status().message());
  *ref = std::move(r).value();
  *size = j["size"].get<uint64_t>();
  if (*size == 0 || *size > kMaxBlobBytes) return bad("size out of range");
  return Status::OK();
}

// Reads a remote blob straight from its server, bypassing the cache: what
// a pull copies from (a whole blob must not push everything else out of the
// cache, and it is stored locally at once anyway).
class DirectRemoteFile final : public ReadableFile {
 public:
  DirectRemoteFile(remote::RemoteBlobs* remote, remote::BlobRef ref, uint64_t size)
      : remote_(remote), ref_(std::move(ref)), size_(size), name_(ref_.ToString()) {}
  Status ReadAt(uint64_t off, size_t n, char* buf, size_t* got) const override {
    *got = 0;
    if (off >= size_ || n == 0) return Status::OK();
    n = static_cast<size_t>(std::min<uint64_t>(n, size_ - off));
    OVBD_RETURN_IF_ERROR(remote_->ReadDirect(ref_, off, n, buf));
    *got = n;
    return Status::OK();
  }
  uint64_t Size() const override { return size_; }
  const std::string& Name() const override { return name_; }

 private:
  remote::RemoteBlobs* const remote_;
  const remote::BlobRef ref_;
  const uint64_t size_;
  const std::string name_;
};

}  // namespace

Result<std::shared_ptr<const ReadableFile>> Store::OpenLayerBytes(const std::string& file) {
  OVBD_RETURN_IF_ERROR(ValidateLayerFileName(file));
  if (env_->Exists(LayerPath(file))) {
    OVBD_ASSIGN_OR_RETURN(std::unique_ptr<ReadableFile> f, env_->OpenReadable(LayerPath(file)));
    return std::shared_ptr<const ReadableFile>(std::move(f));
  }
  OVBD_ASSIGN_OR_RETURN(auto located, LocateRemote(file));
  return opts_.remote->Open(located.first, located.second);
}

Result<std::pair<remote::BlobRef, uint64_t>> Store::LocateRemote(const std::string& file) {
  const std::string stub_file = filename::RemoteStubOf(file);
  if (stub_file.empty() || !env_->Exists(LayerPath(stub_file))) {
    return Status::NotFound(LayerPath(file) + ": no such layer, here or remote");
  }
  OVBD_ASSIGN_OR_RETURN(std::string text, env_->ReadSmallFile(LayerPath(stub_file), kMaxStubBytes));
  remote::BlobRef ref;
  uint64_t size = 0;
  OVBD_RETURN_IF_ERROR(DecodeStub(text, LayerPath(stub_file), &ref, &size));
  if (ref.digest != "sha256:" + HexOfLayerFile(file)) {
    return Status::Corruption(LayerPath(stub_file) + ": its address names " + ref.digest +
                              ", not the layer's own digest");
  }
  if (!opts_.remote) {
    return Status::NotSupported(file + " is read from " + ref.ToString() +
                                ", but this store was opened without remote access");
  }
  return std::make_pair(ref, size);
}

Result<std::shared_ptr<lsmt::Layer>> Store::OpenRemoteLayer(const std::string& file) {
  OVBD_ASSIGN_OR_RETURN(auto located, LocateRemote(file));
  const remote::BlobRef& ref = located.first;
  OVBD_ASSIGN_OR_RETURN(auto blob, opts_.remote->Open(ref, located.second));
  auto layer = OpenLayer(blob, opts_.layer);
  if (!layer.ok() && layer.status().IsCorruption() && blob->Refetch(0, blob->Size())) {
    // The cache keeps what a server sent, checked against nothing but its
    // own CRC: a header or index that does not hold up may be what a
    // faulty server (or mirror) sent once. Dropped and fetched again, once,
    // before the layer is called corrupt; else it would stay unreadable
    // from a cache that never forgets it.
    layer = OpenLayer(std::move(blob), opts_.layer);
  }
  if (!layer.ok()) return layer.status().Annotate(ref.ToString());
  return layer;
}

Status Store::WriteRemoteStub(const std::string& file, const remote::BlobRef& ref, uint64_t size) {
  const std::string path = LayerPath(filename::RemoteStubOf(file));
  const std::string text = EncodeStub(ref, size);
  if (env_->Exists(path)) {
    // The same digest is the same bytes from any address, but not every
    // address can be reached, or read with the credentials at hand: the
    // one just given (whose image was just read) replaces the older one,
    // so a volume made from a registry is read from it even when another
    // image brought the layer first. The size is the digest's own: an
    // image that gives another one is wrong, and changes nothing.
    OVBD_ASSIGN_OR_RETURN(std::string old_text, env_->ReadSmallFile(path, kMaxStubBytes));
    if (old_text == text) return Status::OK();
    remote::BlobRef old_ref;
    uint64_t old_size = 0;
    if (DecodeStub(old_text, path, &old_ref, &old_size).ok() && old_size != size) {
      return Status::Corruption(ref.ToString() + ": the image gives its size as " + std::to_string(size) +
                                " bytes, but the store has it as " + std::to_string(old_size));
    }
  }
  return env_->WriteFileAtomic(path, text);
}

Status Store::CreateFromImage(const std::string& name, const std::string& image, bool pull,
                              const FileAttrs& attrs, const ImportOptions& opts) {
  OVBD_RETURN_IF_ERROR(CheckWritable());
  OVBD_RETURN_IF_ERROR(ValidateName(name, "volume"));
  OVBD_ASSIGN_OR_RETURN(remote::ImageRef ref, remote::ImageRef::Parse(image));
  if (!opts_.remote) {
    return Status::NotSupported("creating " + name + " from " + image +
                                ": this store was opened without remote access");
  }
  OVBD_ASSIGN_OR_RETURN(auto reservation, Reserve(name));
  OVBD_ASSIGN_OR_RETURN(auto got, opts_.remote->registry().GetManifest(ref));
  auto manifest = remote::DecodeImageManifest(got.body);
  if (!manifest.ok()) return manifest.status().Annotate(ref.ToString());
  if (manifest->layers.empty()) return Status::InvalidArgument(ref.ToString() + ": the image has no layers");
  if (manifest->layers.size() > MergedIndex::kMaxLayers) {
    return Status::TooLarge(ref.ToString() + ": a volume has at most 255 layers");
  }

  Manifest m;
  m.name = name;
  std::vector<std::unique_ptr<Pin>> pins;
  std::vector<std::shared_ptr<lsmt::Layer>> opened;
  for (const auto& d : manifest->layers) {
    remote::BlobRef blob;
    blob.registry = ref.registry;
    blob.repo = ref.repo;
    blob.digest = d.digest;
    const std::string hex = d.digest.substr(7);
    const std::string file = filename::ImportedLayerFile(hex);
    {
      // Adopting a stored file must not race its collection (see import.cc).
      MutexLock g(&gc_mu_);
      pins.push_back(PinFiles({file, filename::RemoteStubOf(file)}));
    }
    if (!env_->Exists(LayerPath(file))) {
      OVBD_RETURN_IF_ERROR(WriteRemoteStub(file, blob, d.size));
      if (pull) {
        DirectRemoteFile src(opts_.remote.get(), blob, d.size);
        OVBD_ASSIGN_OR_RETURN(std::string stored, ImportLayerFrom(src, blob.ToString(), hex, &pins, opts));
        (void)stored;
      }
    }
    // Validates the layer (through the cache when it stays remote) before
    // any manifest names it.
    OVBD_ASSIGN_OR_RETURN(auto layer, OpenLayerFile(file));
    opened.push_back(layer);
    m.lowers.push_back(file);
  }
  m.size = std::max(opened.back()->virtual_size(), manifest->volume_size);
  if (m.size % lsmt::kSectorSize || m.size == 0) {
    return Status::InvalidArgument(ref.ToString() + ": volume size " + std::to_string(m.size) +
                                   " is not a positive multiple of 512 bytes");
  }
  const std::string parent_uuid = opened.back()->header().uuid;
  m.attrs = attrs;
  return CommitNewVolume(std::move(m), parent_uuid, &pins);
}

}  // namespace ovbd
