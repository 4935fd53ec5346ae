// Opening a layer file whatever its encoding: a committed/sealed LSMT layer,
// or one wrapped in a ZFile (detected by magic).
#pragma once

#include <memory>
#include <string>

#include "ovbd/io/env.h"
#include "ovbd/layer/lsmt_layer.h"

namespace ovbd {

struct LayerOpenOptions {
  size_t zfile_cache_blocks = 1024;  // decompressed blocks kept per ZFile layer
};

Result<std::shared_ptr<lsmt::Layer>> OpenLayer(Env* env, const std::string& path,
                                               const LayerOpenOptions& opts = {});
// Same, over an already opened file (e.g. in memory, remote).
Result<std::shared_ptr<lsmt::Layer>> OpenLayer(std::shared_ptr<const ReadableFile> file,
                                               const LayerOpenOptions& opts = {});

}  // namespace ovbd
