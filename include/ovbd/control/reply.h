// The reply format of `.control`, defined once: the daemon renders it, the
// `ovbd` tool parses it (docs/CONTROL.md, "Reading results").
//
// Text (what `cat .control` shows): one line per command of the last write
// through the handle, "ok: OUTPUT" or "error: MESSAGE" (a multi-line output,
// such as `status`, continues on the lines after its "ok: " line), then the
// status block ("volumes: N" and one line per volume). A handle that has not
// run a command shows the mount's most recent result prefixed with
// "last command: " instead.
//
// JSON (after `json`): one document
//   {"result": TEXT, "replies": [REPLY...], "volumes": [VOLUME...]}
// where TEXT is the text form of the replies, each REPLY is
//   {"command": LINE, "ok": true, "output": OUTPUT} or
//   {"command": LINE, "ok": false, "code": CODE, "message": MESSAGE,
//    "error": TEXT[, "errno": N]}
// (CODE names the Status category, see CodeName), and each VOLUME is
//   {"name", "snapshot", "size", "layers", "upper", "open_handles", "mode",
//    "uid", "gid"[, "failed"][, "hydrate"]}, where "hydrate" (volumes only)
//   is {"state", "copied", "total", "rate", "limit", "eta_s", "retries",
//   "error"} as in Store's HydrateInfo.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "ovbd/io/status.h"
#include "ovbd/store/store.h"

namespace ovbd {

inline constexpr std::string_view kReplyOk = "ok: ";
inline constexpr std::string_view kReplyError = "error: ";
inline constexpr std::string_view kReplyLastCommand = "last command: ";
inline constexpr std::string_view kStatusHeader = "volumes: ";

// The outcome of one command line.
struct Reply {
  std::string command;  // the line as written, escaped as in the log
  Status status;
  std::string output;   // what the command printed (on success)
};

// "ok: OUTPUT\n" or "error: STATUS\n" (exactly one trailing newline).
std::string ReplyText(const Reply& r);
std::string ReplyText(const std::vector<Reply>& replies);

// Stable names of Status categories ("not_found", "invalid_argument", ...)
// and back: StatusFromCode rebuilds a Status equal to the one sent (same
// category, message and errno). An unknown code gives an I/O error.
std::string_view CodeName(Status::Code code);
Status StatusFromCode(std::string_view code, std::string message, int os_errno);

// The JSON document of a read in json mode.
std::string RenderJsonReport(const std::vector<Reply>& replies, const std::string& result_text,
                             const std::vector<VolumeInfo>& volumes,
                             const std::vector<FailedManifest>& failed = {},
                             const std::vector<JobInfo>& jobs = {});

struct ParsedReport {
  std::string result;
  std::vector<Reply> replies;
};
// Parses what RenderJsonReport made; Corruption if it is not that.
Result<ParsedReport> ParseJsonReport(std::string_view doc);

}  // namespace ovbd
