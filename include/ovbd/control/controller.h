// Controller: the command language of the `.control` file (and of `ovbd`
// against a mounted store). One line = one command; see docs/CONTROL.md.
//
//   snapshot VOL [SNAP]        snapshot --all [SNAP]     snapshot
//   clone VOL@SNAP NEWVOL      create VOL SIZE           resize VOL SIZE
//   delete VOL | VOL@SNAP      status [VOL]              flush [VOL]
//   gc                         json | text   (output format of this handle)
//
// Parsing rejects bad input before anything changes: unknown commands,
// missing or extra arguments, names outside [A-Za-z0-9._-]{1,128}, control
// characters, over-long lines and sizes that overflow.
#pragma once

#include <string>
#include <string_view>
#include <vector>

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

class Controller {
 public:
  explicit Controller(Store* store) : store_(store) {}

  // Runs one line. Returns a one-line result; format switches ("json",
  // "text") are reported through *json_mode when given.
  // Volumes made by `create` get `owner`'s uid/gid/mode (the FUSE adapter
  // passes the caller's credentials).
  Result<std::string> Execute(std::string_view line, bool* json_mode = nullptr,
                              const FileAttrs* owner = nullptr);
  // Status of every volume, as text or as a JSON document.
  // In JSON the result of the last command is the "result" member.
  std::string Report(bool json, const std::string& last_result = "") const;

 private:
  std::string SnapshotName() const;
  Store* store_;
};

}  // namespace ovbd
