// ovbd: the offline companion of ovbdfs. Makes, inspects and checks layers,
// flattens stacks, and manages stores -- directly when the store is not
// mounted, through its .control file when it is.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "ovbd/control/controller.h"
#include "ovbd/control/size.h"
#include "ovbd/layer/layer_open.h"
#include "ovbd/layer/lsmt_writer.h"
#include "ovbd/layer/merged_index.h"
#include "ovbd/layer/zfile.h"
#include "ovbd/store/store.h"
#include "ovbd/version.h"
#include "ovbd/volume/volume.h"
#include "progress_bar.h"
#include "remote_commands.h"
#include "store_client.h"

namespace ovbd::tool {
namespace {

Env* env() { return Env::Default(); }

int Fail(const Status& s) {
  std::fprintf(stderr, "ovbd: %s\n", s.ToString().c_str());
  // A mounted store is reached through its .control, which only the user who
  // mounted it may write (docs/CONTROL.md, "Who may use it").
  if ((s.os_errno() == EACCES || s.os_errno() == EPERM) &&
      s.message().find("/.control") != std::string::npos) {
    std::fprintf(stderr,
                 "  The store is mounted, and its .control belongs to the user who mounted it:\n"
                 "  run this as that user or as root (with -o allow_other, that user's group may "
                 "too).\n");
  }
  switch (s.code()) {
    case Status::Code::kInvalidArgument: return 2;
    case Status::Code::kCorruption: return 3;
    default: return 1;
  }
}

Result<zfile::Options> CompressOptions(const std::string& algo, const std::string& block) {
  zfile::Options z;
  if (algo == "lz4") {
    z.algo = zfile::Algo::kLz4;
  } else if (algo == "zstd") {
    z.algo = zfile::Algo::kZstd;
  } else {
    return Status::InvalidArgument("--compress must be lz4 or zstd, not '" + algo + "'");
  }
  OVBD_ASSIGN_OR_RETURN(uint64_t bs, ParseSize(block));
  if (bs < zfile::kMinBlockSize || bs > zfile::kMaxBlockSize || (bs & (bs - 1)) != 0) {
    return Status::InvalidArgument("--block-size must be a power of two from 4K to 64K");
  }
  z.block_size = static_cast<uint32_t>(bs);
  return z;
}

// ---- layer create ----------------------------------------------------------
Status LayerCreate(const std::string& from, const std::string& out, const std::string& compress,
                   const std::string& block, const std::string& parent, const std::string& msg,
                   const std::string& uuid) {
  std::optional<zfile::Options> z;
  if (!compress.empty()) {
    OVBD_ASSIGN_OR_RETURN(zfile::Options zo, CompressOptions(compress, block));
    z = zo;
  }
  if (env()->Exists(out)) return Status::Exists(out + " already exists");
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<ReadableFile> raw, env()->OpenReadable(from));
  const std::string staged = z ? out + ".lsmt.tmp" : out + ".tmp";
  if (env()->Exists(staged)) OVBD_RETURN_IF_ERROR(env()->Remove(staged));
  lsmt::WriteOptions wo;
  wo.parent_uuid = parent;
  wo.message = msg;
  wo.uuid = uuid;
  Status s;
  {
    OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> f, env()->OpenRW(staged, true));
    ProgressBar p("layer");
    s = lsmt::CreateFromRaw(*raw, f.get(), wo, std::ref(p));
  }
  if (s.ok() && z) {
    const std::string ztmp = out + ".tmp";
    if (env()->Exists(ztmp)) OVBD_RETURN_IF_ERROR(env()->Remove(ztmp));
    OVBD_ASSIGN_OR_RETURN(std::unique_ptr<ReadableFile> in, env()->OpenReadable(staged));
    {
      OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> f, env()->OpenRW(ztmp, true));
      ProgressBar p("compress");
      s = zfile::Write(*in, f.get(), *z, std::ref(p));
    }
    (void)env()->Remove(staged);
    if (s.ok()) s = env()->Rename(ztmp, out);
    else (void)env()->Remove(ztmp);
  } else if (s.ok()) {
    s = env()->Rename(staged, out);
  } else {
    (void)env()->Remove(staged);
  }
  OVBD_RETURN_IF_ERROR(s);
  return env()->SyncDir(DirName(out));
}

// ---- layer info / check --------------------------------------------------------
Status LayerInfo(const std::string& path, bool json) {
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<ReadableFile> raw, env()->OpenReadable(path));
  std::shared_ptr<const ReadableFile> file(std::move(raw));
  OVBD_ASSIGN_OR_RETURN(bool is_z, zfile::IsZFile(*file));
  std::optional<zfile::Info> zi;
  uint64_t stored = file->Size();
  if (is_z) {
    OVBD_ASSIGN_OR_RETURN(std::unique_ptr<zfile::Reader> z, zfile::Reader::Open(file, 0));
    zi = z->info();
    file = std::shared_ptr<const ReadableFile>(std::move(z));
  }
  OVBD_ASSIGN_OR_RETURN(auto layer, lsmt::Layer::Open(file));
  const auto& h = layer->header();
  uint64_t mapped = 0, zeroed = 0;
  for (const auto& s : layer->segments()) (s.zeroed ? zeroed : mapped) += s.length;
  if (json) {
    nlohmann::json j{{"file", path},
                     {"format", is_z ? "zfile+lsmt" : "lsmt"},
                     {"file_size", stored},
                     {"virtual_size", h.virtual_size},
                     {"uuid", h.uuid},
                     {"parent_uuid", h.parent_uuid},
                     {"message", h.user_tag},
                     {"version", h.version},
                     {"sub_version", h.sub_version},
                     {"trailer_flags", h.flags},
                     {"index_offset", h.index_offset},
                     {"index_entries", layer->segments().size()},
                     {"padding_entries", layer->padding_entries()},
                     {"mapped_bytes", mapped * 512},
                     {"zeroed_bytes", zeroed * 512}};
    if (zi) {
      j["zfile"] = {{"algorithm", zi->algo == zfile::Algo::kLz4 ? "lz4" : "zstd"},
                    {"block_size", zi->block_size},
                    {"blocks", zi->num_blocks},
                    {"verify", zi->verify},
                    {"original_size", zi->original_size}};
    }
    std::cout << j.dump(2) << "\n";
    return Status::OK();
  }
  std::printf("file:          %s\n", path.c_str());
  std::printf("format:        %s\n", is_z ? "ZFile-compressed LSMT layer" : "LSMT layer");
  std::printf("file size:     %s (%llu bytes)\n", FormatSize(stored).c_str(),
              static_cast<unsigned long long>(stored));
  std::printf("virtual size:  %s (%llu bytes)\n", FormatSize(h.virtual_size).c_str(),
              static_cast<unsigned long long>(h.virtual_size));
  std::printf("uuid:          %s\n", h.uuid.c_str());
  std::printf("parent uuid:   %s\n", h.parent_uuid.c_str());
  std::printf("message:       %s\n", h.user_tag.c_str());
  std::printf("version:       %u.%u\n", h.version, h.sub_version);
  std::printf("index:         %zu entries (+%llu padding) at offset %llu\n",
              layer->segments().size(), static_cast<unsigned long long>(layer->padding_entries()),
              static_cast<unsigned long long>(h.index_offset));
  std::printf("mapped:        %s\n", FormatSize(mapped * 512).c_str());
  std::printf("zeroed:        %s\n", FormatSize(zeroed * 512).c_str());
  if (zi) {
    std::printf("compression:   %s, %u-byte blocks, %llu blocks, checksums %s\n",
                zi->algo == zfile::Algo::kLz4 ? "lz4" : "zstd", zi->block_size,
                static_cast<unsigned long long>(zi->num_blocks), zi->verify ? "on" : "off");
  }
  return Status::OK();
}

Status LayerCheck(const std::string& path) {
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<ReadableFile> raw, env()->OpenReadable(path));
  std::shared_ptr<const ReadableFile> file(std::move(raw));
  OVBD_ASSIGN_OR_RETURN(bool is_z, zfile::IsZFile(*file));
  if (is_z) {
    OVBD_ASSIGN_OR_RETURN(std::unique_ptr<zfile::Reader> z, zfile::Reader::Open(file, 0));
    {
      ProgressBar p("blocks");
      OVBD_RETURN_IF_ERROR(z->CheckAllBlocks(std::ref(p)));
    }
    file = std::shared_ptr<const ReadableFile>(std::move(z));
  }
  OVBD_ASSIGN_OR_RETURN(auto layer, lsmt::Layer::Open(file));
  {
    ProgressBar p("data");
    OVBD_RETURN_IF_ERROR(layer->CheckData(std::ref(p)));
  }
  std::printf("%s: ok (%zu index entries%s)\n", path.c_str(), layer->segments().size(),
              is_z ? ", every block checksum verified" : "");
  return Status::OK();
}

// ---- flatten -------------------------------------------------------------------
Status Flatten(const std::vector<std::string>& layers, const std::string& out) {
  std::vector<std::shared_ptr<lsmt::Layer>> stack;
  uint64_t size = 0;
  for (const auto& p : layers) {
    OVBD_ASSIGN_OR_RETURN(auto l, OpenLayer(env(), p));
    size = std::max(size, l->virtual_size());
    stack.push_back(std::move(l));
  }
  Volume vol("flatten", size, std::move(stack), nullptr, true);
  if (env()->Exists(out)) return Status::Exists(out + " already exists");
  const std::string tmp = out + ".tmp";
  if (env()->Exists(tmp)) OVBD_RETURN_IF_ERROR(env()->Remove(tmp));
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> f, env()->OpenRW(tmp, true));
  constexpr size_t kChunk = 4 << 20;
  std::vector<char> buf(kChunk);
  ProgressBar p("flatten");
  for (uint64_t off = 0; off < size; off += kChunk) {
    OVBD_ASSIGN_OR_RETURN(size_t n, vol.Read(off, kChunk, buf.data()));
    // Leave holes where the merged view reads zeros.
    bool zero = std::all_of(buf.begin(), buf.begin() + static_cast<ptrdiff_t>(n),
                            [](char c) { return c == 0; });
    if (!zero) OVBD_RETURN_IF_ERROR(f->WriteAt(off, buf.data(), n));
    p(off + n, size);
  }
  OVBD_RETURN_IF_ERROR(f->Truncate(size));
  OVBD_RETURN_IF_ERROR(f->Sync());
  OVBD_RETURN_IF_ERROR(env()->Rename(tmp, out));
  return env()->SyncDir(DirName(out));
}

}  // namespace
}  // namespace ovbd::tool

int main(int argc, char** argv) {
  using namespace ovbd;
  using namespace ovbd::tool;
  CLI::App app{"ovbd: make, inspect and check OverlayBD layers; manage ovbdfs stores"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("ovbd ") + OVBD_VERSION);
  int rc = 0;
  auto run = [&rc](const Status& s) { rc = s.ok() ? 0 : Fail(s); };

  // layer
  auto* layer = app.add_subcommand("layer", "Make, inspect and check layer files");
  layer->require_subcommand(1);
  std::string from, out, compress, block = "4K", parent, msg, uuid;
  auto* lc = layer->add_subcommand("create", "Turn a raw disk image into a committed LSMT layer");
  lc->add_option("--from", from, "Raw image to read")->required()->check(CLI::ExistingFile);
  lc->add_option("OUT", out, "Layer file to write")->required();
  lc->add_option("--compress", compress, "Wrap in a ZFile compressed with lz4 or zstd");
  lc->add_option("--block-size", block, "ZFile block size, 4K..64K (default 4K)");
  lc->add_option("--parent", parent, "Parent layer uuid");
  lc->add_option("--message", msg, "Commit message (< 256 bytes)");
  lc->add_option("--uuid", uuid, "Layer uuid (default: random)");
  lc->callback([&] { run(LayerCreate(from, out, compress, block, parent, msg, uuid)); });

  std::string file;
  bool json = false;
  auto* li = layer->add_subcommand("info", "Show a layer's header, index and compression");
  li->add_option("FILE", file, "Layer file")->required();
  li->add_flag("--json", json, "Machine-readable output");
  li->callback([&] { run(LayerInfo(file, json)); });

  auto* lk = layer->add_subcommand("check", "Verify every index entry and block checksum");
  lk->add_option("FILE", file, "Layer file")->required();
  lk->callback([&] { run(LayerCheck(file)); });

  std::vector<std::string> layers;
  auto* fl = app.add_subcommand("flatten", "Export the merged view of a stack to a raw image");
  fl->add_option("LAYER", layers, "Layers, bottom first")->required();
  fl->add_option("-o,--output", out, "Raw image to write")->required();
  fl->callback([&] { run(Flatten(layers, out)); });

  // store / volume / snapshot commands
  RegisterStoreCommands(app, run);
  RegisterRemoteCommands(app, run);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  // Closes the block cache and the registry connections while everything
  // they use still exists (not in the static destructors after main).
  ReleaseToolRemote();
  return rc;
}
