#include "ovbd/control/reply.h"

#include <nlohmann/json.hpp>

namespace ovbd {

namespace {
struct CodeEntry {
  Status::Code code;
  std::string_view name;
};
constexpr CodeEntry kCodes[] = {
    {Status::Code::kOk, "ok"},
    {Status::Code::kNotFound, "not_found"},
    {Status::Code::kCorruption, "corruption"},
    {Status::Code::kInvalidArgument, "invalid_argument"},
    {Status::Code::kIOError, "io_error"},
    {Status::Code::kNoSpace, "no_space"},
    {Status::Code::kExists, "exists"},
    {Status::Code::kBusy, "busy"},
    {Status::Code::kReadOnly, "read_only"},
    {Status::Code::kNotSupported, "not_supported"},
    {Status::Code::kTooLarge, "too_large"},
};

std::string StringMember(const nlohmann::json& o, const char* key, const char* fallback) {
  auto it = o.find(key);
  return it != o.end() && it->is_string() ? it->get<std::string>() : std::string(fallback);
}
}  // namespace

std::string ReplyText(const Reply& r) {
  std::string out;
  if (r.status.ok()) {
    out = std::string(kReplyOk) + r.output;
  } else {
    out = std::string(kReplyError) + r.status.ToString();
  }
  while (!out.empty() && out.back() == '\n') out.pop_back();
  out.push_back('\n');
  return out;
}

std::string ReplyText(const std::vector<Reply>& replies) {
  std::string out;
  for (const Reply& r : replies) out += ReplyText(r);
  return out;
}

std::string_view CodeName(Status::Code code) {
  for (const auto& e : kCodes)
    if (e.code == code) return e.name;
  return "io_error";
}

Status StatusFromCode(std::string_view code, std::string message, int os_errno) {
  Status::Code c = Status::Code::kIOError;
  for (const auto& e : kCodes)
    if (e.name == code) c = e.code;
  using C = Status::Code;
  switch (c) {
    case C::kOk: return Status::OK();
    case C::kNotFound: return Status::NotFound(std::move(message));
    case C::kCorruption: return Status::Corruption(std::move(message));
    case C::kInvalidArgument: return Status::InvalidArgument(std::move(message));
    case C::kNoSpace: return Status::NoSpace(std::move(message));
    case C::kExists: return Status::Exists(std::move(message));
    case C::kBusy: return Status::Busy(std::move(message));
    case C::kReadOnly: return Status::ReadOnly(std::move(message));
    case C::kNotSupported: return Status::NotSupported(std::move(message));
    case C::kTooLarge: return Status::TooLarge(std::move(message));
    case C::kIOError: break;
  }
  return Status::IOError(std::move(message), os_errno ? os_errno : EIO);
}

std::string RenderJsonReport(const std::vector<Reply>& replies, const std::string& result_text,
                             const std::vector<VolumeInfo>& volumes,
                             const std::vector<FailedManifest>& failed,
                             const std::vector<JobInfo>& jobs) {
  nlohmann::json reps = nlohmann::json::array();
  for (const Reply& r : replies) {
    nlohmann::json o{{"command", r.command}, {"ok", r.status.ok()}};
    if (r.status.ok()) {
      o["output"] = r.output;
    } else {
      o["code"] = CodeName(r.status.code());
      o["message"] = r.status.message();
      o["error"] = r.status.ToString();
      if (r.status.os_errno() != 0) o["errno"] = r.status.os_errno();
    }
    reps.push_back(std::move(o));
  }
  nlohmann::json vols = nlohmann::json::array();
  for (const auto& v : volumes) {
    nlohmann::json o{{"name", v.name},
                     {"snapshot", v.is_snapshot},
                     {"size", v.size},
                     {"layers", v.lowers},
                     {"upper", v.upper},
                     {"open_handles", v.open_handles},
                     {"mode", v.attrs.mode},
                     {"uid", v.attrs.uid},
                     {"gid", v.attrs.gid}};
    if (!v.failed.empty()) o["failed"] = v.failed;
    if (!v.is_snapshot) {
      o["preallocated_bytes"] = v.preallocated;
      const HydrateInfo& h = v.hydrate;
      o["hydrate"] = {{"state", HydrateStateName(h.state)},
                      {"copied", h.copied},
                      {"total", h.total},
                      {"rate", h.rate},
                      {"limit", h.limit},
                      {"eta_s", h.eta_s},
                      {"retries", h.retries},
                      {"error", h.error}};
    }
    vols.push_back(std::move(o));
  }
  nlohmann::json bad = nlohmann::json::array();
  for (const auto& f : failed) bad.push_back({{"name", f.name}, {"failed", f.why}});
  nlohmann::json js = nlohmann::json::array();
  for (const auto& j : jobs) {
    nlohmann::json o{{"id", j.id},       {"kind", j.kind},   {"target", j.target},
                     {"state", JobStateName(j.state)}, {"done", j.done}, {"total", j.total}};
    if (!j.error.empty()) o["error"] = j.error;
    js.push_back(std::move(o));
  }
  nlohmann::json doc{{"result", result_text},       {"replies", std::move(reps)},
                     {"volumes", std::move(vols)},  {"unusable_volumes", std::move(bad)},
                     {"jobs", std::move(js)}};
  // Command lines are escaped, but outputs and messages may quote names
  // from manifests: never let a bad byte make the whole document fail.
  return doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

Result<ParsedReport> ParseJsonReport(std::string_view doc) {
  nlohmann::json j = nlohmann::json::parse(doc.begin(), doc.end(), nullptr, false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::Corruption(".control reply is not a JSON document");
  }
  ParsedReport out;
  auto result = j.find("result");
  auto replies = j.find("replies");
  if (result == j.end() || !result->is_string() || replies == j.end() || !replies->is_array()) {
    return Status::Corruption(".control reply lacks \"result\" or \"replies\"");
  }
  out.result = result->get<std::string>();
  for (const auto& r : *replies) {
    if (!r.is_object() || !r.contains("ok") || !r["ok"].is_boolean()) {
      return Status::Corruption(".control reply has a malformed entry in \"replies\"");
    }
    Reply rep;
    rep.command = StringMember(r, "command", "");
    if (r["ok"].get<bool>()) {
      rep.output = StringMember(r, "output", "");
    } else {
      const std::string code = StringMember(r, "code", "io_error");
      std::string message = StringMember(r, "message", "command failed");
      const int err = r.contains("errno") && r["errno"].is_number_integer() ? r["errno"].get<int>() : 0;
      rep.status = StatusFromCode(code, std::move(message), err);
      if (rep.status.ok()) rep.status = Status::Corruption(".control reply: failed command with code ok");
    }
    out.replies.push_back(std::move(rep));
  }
  return out;
}

}  // namespace ovbd
