// The registry subcommands of `ovbd`: push, cache status/prune; and the
// remote-access settings every store command shares (--cache-dir, ...).
#pragma once

#include <functional>
#include <memory>

#include <CLI/CLI.hpp>

#include "ovbd/io/status.h"
#include "ovbd/remote/remote_blobs.h"

namespace ovbd::tool {

// The settings given on the command line (app-level options).
remote::RemoteSettings& RemoteFlags();
// RemoteBlobs made from them once, on first use.
Result<std::shared_ptr<remote::RemoteBlobs>> ToolRemote();
// Drops the tool's RemoteBlobs (before main returns).
void ReleaseToolRemote();

void RegisterRemoteCommands(CLI::App& app, std::function<void(const Status&)> run);

}  // namespace ovbd::tool
