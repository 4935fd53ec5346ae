// The store-management subcommands of `ovbd`. Each runs against the store
// directly, or -- when an ovbdfs daemon has it mounted (and locked) --
// through the mount's .control file, so both paths give the same result.
#pragma once

#include <functional>

#include <CLI/CLI.hpp>

#include "ovbd/io/status.h"

namespace ovbd::tool {

// `run` receives each subcommand's outcome; it is kept (copied) by the
// callbacks, which run after this function has returned.
void RegisterStoreCommands(CLI::App& app, std::function<void(const Status&)> run);

}  // namespace ovbd::tool
