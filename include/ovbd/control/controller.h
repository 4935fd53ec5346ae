// Controller: the command language of the `.control` file (and of `ovbd`
// against a mounted store). One line = one command; see docs/CONTROL.md.
//
//   snapshot VOL [SNAP]        snapshot --all [SNAP]     snapshot
//   clone VOL@SNAP NEWVOL      create VOL SIZE           resize VOL SIZE
//   delete VOL | VOL@SNAP      status [VOL]              flush [VOL]
//   hydrate VOL [pause|resume|cancel] [rate N]     hydrate --all [rate N]
//   gc                         json | text   (output format of this handle)
//
// Parsing rejects bad input before anything changes: unknown commands,
// missing or extra arguments, names outside [A-Za-z0-9._-]{1,128}, control
// characters, over-long lines and sizes that overflow. With a Caller, every
// command is also checked against the owner and mode of the volume it acts
// on (include/ovbd/control/access.h) before anything changes.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ovbd/control/access.h"
#include "ovbd/io/status.h"
#include "ovbd/store/store.h"

namespace ovbd {

constexpr size_t kMaxCommandLine = 4096;

struct Command {
  std::string verb;
  std::vector<std::string> args;
};

// Splits and checks one command line (a trailing newline is allowed).
Result<Command> ParseCommand(std::string_view line);

// What a command did, beyond its printed output.
struct CommandOutcome {
  std::string output;
  bool removed_names = false;  // a volume or snapshot name is gone (delete)
  std::optional<bool> json;    // `json` / `text` chose this output format
};

class Controller {
 public:
  explicit Controller(Store* store) : store_(store) {}

  // Runs one line for `caller`; nullptr means a trusted caller that the OS
  // already checked (the `ovbd` tool on a store it opened itself): no
  // per-volume checks, and `create` uses default attributes.
  Result<CommandOutcome> Run(std::string_view line, const Caller* caller);

  // The older entry point, trusted: returns the output only. Format
  // switches ("json", "text") are reported through *json_mode when given;
  // volumes made by `create` get `owner`'s uid/gid/mode.
  Result<std::string> Execute(std::string_view line, bool* json_mode = nullptr,
                              const FileAttrs* owner = nullptr);

  // The text status block: "volumes: N" and one line per volume.
  std::string StatusReport() const;

 private:
  Result<CommandOutcome> RunCommand(const Command& c, const Caller* caller,
                                    const FileAttrs* owner);
  std::string SnapshotName() const;
  Store* store_;
};

}  // namespace ovbd
