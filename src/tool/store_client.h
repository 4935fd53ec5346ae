// The store-management subcommands of `ovbd`. Each runs against the store
// directly, or -- when an ovbdfs daemon has it mounted (and locked) --
// through the mount's .control file, so both paths give the same result.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

#include "ovbd/io/status.h"

namespace ovbd::tool {

void RegisterStoreCommands(CLI::App& app, const std::function<void(const Status&)>& run);

}  // namespace ovbd::tool
