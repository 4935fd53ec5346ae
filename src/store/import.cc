// Creating volumes over layer files: the copy into the store and its
// SHA-256 run outside every store lock (the name is reserved, the copy is
// pinned), and only the manifest's commit takes the volume's command lock.
#include <openssl/evp.h>

#include <algorithm>

#include "ovbd/io/coding.h"
#include "ovbd/layer/lsmt_writer.h"
#include "ovbd/store/filename.h"
#include "store_internal.h"

namespace ovbd {

Result<std::string> Store::ImportLayerFile(const std::string& path,
                                           std::vector<std::unique_ptr<Pin>>* pins) {
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<ReadableFile> src, env_->OpenReadable(path));
  const std::string tmp_name = filename::TempFile(lsmt::NewUuid(), "import");
  pins->push_back(PinFiles({tmp_name}));
  const std::string tmp = LayerPath(tmp_name);
  auto cleanup = [&](Status s) {
    (void)env_->Remove(tmp);
    return s;
  };
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> dst, env_->OpenRW(tmp, true));
  std::unique_ptr<EVP_MD_CTX, void (*)(EVP_MD_CTX*)> md(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  EVP_DigestInit_ex(md.get(), EVP_sha256(), nullptr);
  constexpr size_t kChunk = 1 << 20;
  std::vector<char> buf(kChunk);
  const uint64_t size = src->Size();
  for (uint64_t off = 0; off < size; off += kChunk) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, size - off));
    if (Status s = src->ReadExact(off, n, buf.data()); !s.ok()) return cleanup(s);
    EVP_DigestUpdate(md.get(), buf.data(), n);
    bool zero = std::all_of(buf.begin(), buf.begin() + static_cast<ptrdiff_t>(n),
                            [](char c) { return c == 0; });
    if (!zero) {
      if (Status s = dst->WriteAt(off, buf.data(), n); !s.ok()) return cleanup(s);
    }
    if (Status s = env_->CrashPoint("import.copying"); !s.ok()) return cleanup(s);
  }
  if (Status s = dst->Truncate(size); !s.ok()) return cleanup(s);
  if (Status s = dst->Sync(); !s.ok()) return cleanup(s);
  dst.reset();
  // Validate the copy itself: the source may have changed since the caller
  // checked it.
  auto copied = OpenLayer(env_, tmp, opts_.layer);
  if (!copied.ok()) return cleanup(copied.status().Annotate(path));
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int dlen = 0;
  EVP_DigestFinal_ex(md.get(), digest, &dlen);
  const std::string name = filename::ImportedLayerFile(HexEncode(digest, dlen));
  // Adopting a stored file of the same content must not race its removal
  // by garbage collection: pin it while GC cannot be deciding.
  MutexLock g(&gc_mu_);
  pins->push_back(PinFiles({name}));
  if (env_->Exists(LayerPath(name))) {
    OVBD_RETURN_IF_ERROR(env_->Remove(tmp));  // same content already stored
  } else {
    OVBD_RETURN_IF_ERROR(env_->Rename(tmp, LayerPath(name)));
    OVBD_RETURN_IF_ERROR(env_->SyncDir(JoinPath(dir_, filename::kLayersDir)));
  }
  return name;
}

Status Store::RemoveCreatedUpper(const std::string& id) {
  const std::string base = LayerPath(id);
  Status a = env_->Remove(Upper::DataPath(base));
  Status b = env_->Remove(Upper::JournalPath(base));
  (void)a;
  (void)b;
  return env_->SyncDir(JoinPath(dir_, filename::kLayersDir));
}

Status Store::CreateVolume(const std::string& name, uint64_t size,
                           const std::vector<std::string>& layer_paths, const FileAttrs& attrs) {
  OVBD_RETURN_IF_ERROR(CheckWritable());
  OVBD_RETURN_IF_ERROR(ValidateName(name, "volume"));
  OVBD_ASSIGN_OR_RETURN(auto reservation, Reserve(name));
  if (layer_paths.size() > MergedIndex::kMaxLayers) {
    return Status::TooLarge("a volume has at most 255 layers");
  }
  if (size % lsmt::kSectorSize) {
    return Status::InvalidArgument("size " + std::to_string(size) +
                                   " is not a multiple of 512 bytes");
  }
  if (size / lsmt::kSectorSize > lsmt::kMaxOffset) {
    return Status::InvalidArgument("size " + std::to_string(size) + " is too large");
  }
  Manifest m;
  m.name = name;
  std::string parent_uuid;
  // Validate every layer and the size before anything is copied: bad input
  // changes nothing.
  for (const auto& p : layer_paths) {
    OVBD_ASSIGN_OR_RETURN(auto layer, OpenLayer(env_, p, opts_.layer));
    if (&p == &layer_paths.back()) m.size = layer->virtual_size();
    parent_uuid = layer->header().uuid;
  }
  if (size != 0) {
    if (size < m.size) {
      return Status::InvalidArgument("size " + std::to_string(size) +
                                     " is smaller than the top layer (" + std::to_string(m.size) +
                                     " bytes)");
    }
    m.size = size;
  }
  if (m.size == 0) return Status::InvalidArgument("a volume needs a size (--size) or a layer");
  std::vector<std::unique_ptr<Pin>> pins;
  for (const auto& p : layer_paths) {
    OVBD_ASSIGN_OR_RETURN(std::string file, ImportLayerFile(p, &pins));
    m.lowers.push_back(file);
  }
  const std::string id = lsmt::NewUuid();
  pins.push_back(PinFiles({filename::UpperDataFile(id), filename::UpperJournalFile(id)}));
  OVBD_ASSIGN_OR_RETURN(auto upper, Upper::Create(env_, LayerPath(id), m.size, id, parent_uuid));
  upper.reset();
  m.upper = id;
  m.attrs = attrs;
  const uint64_t now = env_->NowMicros() * 1000;
  if (!m.attrs.mtime_ns) m.attrs.mtime_ns = m.attrs.ctime_ns = m.attrs.atime_ns = now;
  OVBD_ASSIGN_OR_RETURN(auto scope, CommandScope::Enter(this, {name}, false));
  Status s = WriteManifest(std::move(m));
  if (!s.ok()) {
    (void)RemoveCreatedUpper(id);
    return s;
  }
  return Status::OK();
}

Status Store::ImportRaw(const std::string& name, const std::string& raw_path,
                        const ImportOptions& opts, const FileAttrs& attrs) {
  OVBD_RETURN_IF_ERROR(CheckWritable());
  {
    MutexLock lk(&mu_);
    OVBD_RETURN_IF_ERROR(EnsureNameFree(name));
  }
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<ReadableFile> raw, env_->OpenReadable(raw_path));
  const std::string id = lsmt::NewUuid();
  const std::string staged_name = filename::TempFile(id, "raw-import");
  const std::string zstaged_name = filename::TempFile(id, "raw-import-z");
  auto pin = PinFiles({staged_name, zstaged_name});
  const std::string staged = LayerPath(staged_name);
  const std::string zstaged = LayerPath(zstaged_name);
  auto remove_staged = [&] {
    for (const auto& f : {staged, zstaged})
      if (env_->Exists(f)) (void)env_->Remove(f);
  };
  Status s = [&]() -> Status {
    {
      OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> out, env_->OpenRW(staged, true));
      lsmt::WriteOptions wo;
      wo.message = "imported from " + raw_path.substr(raw_path.find_last_of('/') + 1);
      wo.message.resize(std::min<size_t>(wo.message.size(), 200));
      OVBD_RETURN_IF_ERROR(lsmt::CreateFromRaw(*raw, out.get(), wo, [&](uint64_t d, uint64_t t) {
        if (opts.progress) opts.progress("layer", d, t);
      }));
    }
    std::string layer_path = staged;
    if (opts.compress) {
      OVBD_ASSIGN_OR_RETURN(std::unique_ptr<ReadableFile> in, env_->OpenReadable(staged));
      OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> out, env_->OpenRW(zstaged, true));
      OVBD_RETURN_IF_ERROR(zfile::Write(*in, out.get(), *opts.compress, [&](uint64_t d, uint64_t t) {
        if (opts.progress) opts.progress("compress", d, t);
      }));
      layer_path = zstaged;
    }
    return CreateVolume(name, 0, {layer_path}, attrs);
  }();
  remove_staged();
  return s;
}

}  // namespace ovbd
