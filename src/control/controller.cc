#include "ovbd/control/controller.h"

#include <ctime>

#include <nlohmann/json.hpp>

#include "ovbd/control/size.h"

namespace ovbd {

namespace {
const char* kUsage =
    "commands: snapshot VOL [SNAP] | snapshot --all [SNAP] | clone VOL@SNAP NEWVOL | "
    "create VOL SIZE | resize VOL SIZE | delete NAME | status [VOL] | flush [VOL] | gc | json | "
    "text";

Status Arity(const Command& c, size_t min, size_t max, const char* usage) {
  if (c.args.size() < min || c.args.size() > max) {
    return Status::InvalidArgument(c.verb + ": expected " + usage + ", got " +
                                   std::to_string(c.args.size()) + " argument(s)");
  }
  return Status::OK();
}

Status CheckFullName(const std::string& n) {
  auto at = n.find('@');
  if (at == std::string::npos) return ValidateName(n, "volume");
  if (n.find('@', at + 1) != std::string::npos) {
    return Status::InvalidArgument("name '" + n + "' has more than one '@'");
  }
  OVBD_RETURN_IF_ERROR(ValidateName(n.substr(0, at), "volume"));
  return ValidateName(n.substr(at + 1), "snapshot");
}
}  // namespace

Result<Command> ParseCommand(std::string_view line) {
  if (line.size() > kMaxCommandLine) {
    return Status::InvalidArgument("command longer than " + std::to_string(kMaxCommandLine) +
                                   " bytes");
  }
  if (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  Command c;
  std::string cur;
  bool have = false;
  for (char ch : line) {
    const unsigned char u = static_cast<unsigned char>(ch);
    if (ch == ' ' || ch == '\t' || ch == '\r') {
      if (have) {
        (c.verb.empty() ? c.verb : c.args.emplace_back()) = std::move(cur);
        cur.clear();
        have = false;
      }
      continue;
    }
    if (u < 0x20 || u == 0x7f) {
      return Status::InvalidArgument(u == 0 ? std::string("command contains a NUL byte")
                                            : "command contains control character " +
                                                  std::to_string(u));
    }
    if (u >= 0x80) return Status::InvalidArgument("command contains a non-ASCII byte");
    cur.push_back(ch);
    have = true;
  }
  if (have) (c.verb.empty() ? c.verb : c.args.emplace_back()) = std::move(cur);
  if (c.verb.empty()) return Status::InvalidArgument(std::string("empty command; ") + kUsage);
  return c;
}

std::string Controller::SnapshotName() const {
  // A time-based default name: sortable, unique to the second, valid.
  std::time_t t = static_cast<std::time_t>(store_->env()->NowMicros() / 1000000);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y%m%dT%H%M%SZ", &tm);
  return buf;
}

Result<std::string> Controller::Execute(std::string_view line, bool* json_mode,
                                        const FileAttrs* owner) {
  OVBD_ASSIGN_OR_RETURN(Command c, ParseCommand(line));
  const auto& a = c.args;
  if (c.verb == "snapshot") {
    if (a.empty() || a[0] == "--all") {
      OVBD_RETURN_IF_ERROR(Arity(c, 0, 2, "[--all] [SNAP]"));
      const std::string snap = a.size() == 2 ? a[1] : SnapshotName();
      OVBD_RETURN_IF_ERROR(ValidateName(snap, "snapshot"));
      OVBD_RETURN_IF_ERROR(store_->SnapshotAll(snap));
      return "snapshot of every volume taken as @" + snap;
    }
    OVBD_RETURN_IF_ERROR(Arity(c, 1, 2, "VOL [SNAP]"));
    OVBD_RETURN_IF_ERROR(ValidateName(a[0], "volume"));
    const std::string snap = a.size() == 2 ? a[1] : SnapshotName();
    OVBD_RETURN_IF_ERROR(ValidateName(snap, "snapshot"));
    OVBD_RETURN_IF_ERROR(store_->Snapshot(a[0], snap));
    return "snapshot " + a[0] + "@" + snap + " created";
  }
  if (c.verb == "clone") {
    OVBD_RETURN_IF_ERROR(Arity(c, 2, 2, "VOL@SNAP NEWVOL"));
    OVBD_RETURN_IF_ERROR(CheckFullName(a[0]));
    OVBD_RETURN_IF_ERROR(ValidateName(a[1], "volume"));
    OVBD_RETURN_IF_ERROR(store_->Clone(a[0], a[1]));
    return "clone " + a[1] + " of " + a[0] + " created";
  }
  if (c.verb == "create" || c.verb == "resize") {
    OVBD_RETURN_IF_ERROR(Arity(c, 2, 2, "VOL SIZE"));
    OVBD_RETURN_IF_ERROR(ValidateName(a[0], "volume"));
    OVBD_ASSIGN_OR_RETURN(uint64_t size, ParseSize(a[1]));
    if (size == 0) return Status::InvalidArgument("size must be greater than zero");
    if (c.verb == "create") {
      FileAttrs attrs;
      if (owner) attrs = *owner;
      OVBD_RETURN_IF_ERROR(store_->CreateVolume(a[0], size, {}, attrs));
      return "volume " + a[0] + " created (" + FormatSize(size) + ")";
    }
    OVBD_RETURN_IF_ERROR(store_->Resize(a[0], size));
    return "volume " + a[0] + " resized to " + FormatSize(size);
  }
  if (c.verb == "delete") {
    OVBD_RETURN_IF_ERROR(Arity(c, 1, 1, "VOL or VOL@SNAP"));
    OVBD_RETURN_IF_ERROR(CheckFullName(a[0]));
    OVBD_RETURN_IF_ERROR(store_->Delete(a[0]));
    return a[0] + " deleted";
  }
  if (c.verb == "status") {
    OVBD_RETURN_IF_ERROR(Arity(c, 0, 1, "[VOL]"));
    if (a.empty()) return Report(json_mode && *json_mode);
    OVBD_RETURN_IF_ERROR(CheckFullName(a[0]));
    OVBD_ASSIGN_OR_RETURN(auto info, store_->Lookup(a[0]));
    (void)info;
    return store_->StatusText(a[0]);
  }
  if (c.verb == "flush") {
    OVBD_RETURN_IF_ERROR(Arity(c, 0, 1, "[VOL]"));
    if (!a.empty()) {
      OVBD_RETURN_IF_ERROR(ValidateName(a[0], "volume"));
      OVBD_ASSIGN_OR_RETURN(auto v, store_->Acquire(a[0]));
      Status s = v->Flush();
      store_->Release(a[0]);
      OVBD_RETURN_IF_ERROR(s);
      return a[0] + " flushed";
    }
    OVBD_RETURN_IF_ERROR(store_->FlushAll());
    return std::string("all volumes flushed");
  }
  if (c.verb == "gc") {
    OVBD_RETURN_IF_ERROR(Arity(c, 0, 0, "no arguments"));
    std::vector<std::string> removed;
    OVBD_RETURN_IF_ERROR(store_->CollectGarbage(&removed));
    return "removed " + std::to_string(removed.size()) + " unreferenced file(s)";
  }
  if (c.verb == "json" || c.verb == "text") {
    OVBD_RETURN_IF_ERROR(Arity(c, 0, 0, "no arguments"));
    if (json_mode) *json_mode = c.verb == "json";
    return "output format: " + c.verb;
  }
  return Status::InvalidArgument("unknown command '" + c.verb + "'; " + kUsage);
}

std::string Controller::Report(bool json, const std::string& last_result) const {
  auto vols = store_->List();
  if (!json) {
    std::string out = "volumes: " + std::to_string(vols.size()) + "\n";
    out += store_->StatusText();
    return out;
  }
  nlohmann::json arr = nlohmann::json::array();
  for (const auto& v : vols) {
    nlohmann::json o{{"name", v.name},
                     {"snapshot", v.is_snapshot},
                     {"size", v.size},
                     {"layers", v.lowers},
                     {"upper", v.upper},
                     {"open_handles", v.open_handles},
                     {"mode", v.attrs.mode}};
    if (!v.failed.empty()) o["failed"] = v.failed;
    arr.push_back(std::move(o));
  }
  nlohmann::json doc{{"volumes", arr}};
  if (!last_result.empty()) doc["result"] = last_result;
  return doc.dump(2) + "\n";
}

}  // namespace ovbd
