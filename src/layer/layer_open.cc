#include "ovbd/layer/layer_open.h"

#include "ovbd/layer/zfile.h"

namespace ovbd {

Result<std::shared_ptr<lsmt::Layer>> OpenLayer(std::shared_ptr<const ReadableFile> file,
                                               const LayerOpenOptions& opts) {
  OVBD_ASSIGN_OR_RETURN(bool is_zfile, zfile::IsZFile(*file));
  if (is_zfile) {
    OVBD_ASSIGN_OR_RETURN(std::unique_ptr<zfile::Reader> z,
                          zfile::Reader::Open(file, opts.zfile_cache_blocks));
    file = std::shared_ptr<const ReadableFile>(std::move(z));
  }
  return lsmt::Layer::Open(std::move(file));
}

Result<std::shared_ptr<lsmt::Layer>> OpenLayer(Env* env, const std::string& path,
                                               const LayerOpenOptions& opts) {
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<ReadableFile> f, env->OpenReadable(path));
  return OpenLayer(std::shared_ptr<const ReadableFile>(std::move(f)), opts);
}

}  // namespace ovbd
