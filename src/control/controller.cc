#include "ovbd/control/controller.h"

#include <ctime>
#include <optional>

#include "ovbd/control/reply.h"
#include "ovbd/control/size.h"

namespace ovbd {

namespace {
const char* kUsage =
    "commands: snapshot VOL [SNAP] | snapshot --all [SNAP] | clone VOL@SNAP NEWVOL | "
    "create VOL SIZE | resize VOL SIZE | delete NAME | "
    "hydrate VOL [pause|resume|cancel] [rate N] | hydrate --all [rate N] | status [VOL] | "
    "flush [VOL] | gc | json | text";

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

std::string Uid(uint32_t uid) { return "uid " + std::to_string(uid); }

// The checks of one command against the volume it acts on. A name that does
// not exist passes: the store then reports it exactly as it would for anyone.
// `mask` is kMayRead or kMayWrite.
Status CheckMode(Store* store, const Caller* caller, unsigned mask, const std::string& verb,
                 const std::string& name) {
  if (!caller || caller->root()) return Status::OK();
  auto info = store->Lookup(name);
  if (!info.ok()) return Status::OK();
  if (MayAccess(*caller, info->attrs, mask)) return Status::OK();
  return AccessDenied(verb + " " + name, std::string("needs ") +
                                             (mask == kMayWrite ? "write" : "read") +
                                             " permission on " + name + " for " + Uid(caller->uid));
}
Status CheckRead(Store* store, const Caller* caller, const std::string& verb,
                 const std::string& name) {
  return CheckMode(store, caller, kMayRead, verb, name);
}
Status CheckWrite(Store* store, const Caller* caller, const std::string& verb,
                  const std::string& name) {
  return CheckMode(store, caller, kMayWrite, verb, name);
}

Status CheckOwner(Store* store, const Caller* caller, const std::string& verb,
                  const std::string& name) {
  if (!caller || caller->root()) return Status::OK();
  auto info = store->Lookup(name);
  if (!info.ok()) return Status::OK();
  if (OwnsOrRoot(*caller, info->attrs)) return Status::OK();
  return NotPermitted(verb + " " + name, "only its owner, " + Uid(info->attrs.uid) +
                                             ", or root may " + verb + " it");
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

Result<CommandOutcome> Controller::Run(std::string_view line, const Caller* caller) {
  OVBD_ASSIGN_OR_RETURN(Command c, ParseCommand(line));
  return RunCommand(c, caller, nullptr);
}

Result<std::string> Controller::Execute(std::string_view line, bool* json_mode,
                                        const FileAttrs* owner) {
  OVBD_ASSIGN_OR_RETURN(Command c, ParseCommand(line));
  OVBD_ASSIGN_OR_RETURN(CommandOutcome o, RunCommand(c, nullptr, owner));
  if (json_mode && o.json) *json_mode = *o.json;
  return std::move(o.output);
}

Result<CommandOutcome> Controller::RunCommand(const Command& c, const Caller* caller,
                                              const FileAttrs* owner) {
  const auto& a = c.args;
  CommandOutcome out;
  if (c.verb == "snapshot") {
    if (a.empty() || a[0] == "--all") {
      OVBD_RETURN_IF_ERROR(Arity(c, 0, 2, "[--all] [SNAP]"));
      const std::string snap = a.size() == 2 ? a[1] : SnapshotName();
      OVBD_RETURN_IF_ERROR(ValidateName(snap, "snapshot"));
      // One snapshot of everything reads everything: the caller must be
      // able to read every volume (commands are serialized, so no volume
      // appears between this check and the snapshot).
      if (caller && !caller->root()) {
        for (const VolumeInfo& v : store_->List()) {
          if (v.is_snapshot || MayAccess(*caller, v.attrs, kMayRead)) continue;
          return AccessDenied("snapshot --all", "needs read permission on every volume; " +
                                                    Uid(caller->uid) + " cannot read " + v.name);
        }
      }
      OVBD_RETURN_IF_ERROR(store_->SnapshotAll(snap));
      out.output = "snapshot of every volume taken as @" + snap;
      return out;
    }
    OVBD_RETURN_IF_ERROR(Arity(c, 1, 2, "VOL [SNAP]"));
    OVBD_RETURN_IF_ERROR(ValidateName(a[0], "volume"));
    const std::string snap = a.size() == 2 ? a[1] : SnapshotName();
    OVBD_RETURN_IF_ERROR(ValidateName(snap, "snapshot"));
    OVBD_RETURN_IF_ERROR(CheckRead(store_, caller, "snapshot", a[0]));
    OVBD_RETURN_IF_ERROR(store_->Snapshot(a[0], snap));
    out.output = "snapshot " + a[0] + "@" + snap + " created";
    return out;
  }
  if (c.verb == "clone") {
    OVBD_RETURN_IF_ERROR(Arity(c, 2, 2, "VOL@SNAP NEWVOL"));
    OVBD_RETURN_IF_ERROR(CheckFullName(a[0]));
    OVBD_RETURN_IF_ERROR(ValidateName(a[1], "volume"));
    OVBD_RETURN_IF_ERROR(CheckRead(store_, caller, "clone", a[0]));
    // The clone is the caller's, as a copied file would be: owned from the
    // manifest's first write, so no crash can leave it with another owner.
    std::optional<std::pair<uint32_t, uint32_t>> owner;
    if (caller) owner = std::make_pair(caller->uid, caller->gid);
    OVBD_RETURN_IF_ERROR(store_->Clone(a[0], a[1], owner));
    out.output = "clone " + a[1] + " of " + a[0] + " created";
    return out;
  }
  if (c.verb == "create" || c.verb == "resize") {
    OVBD_RETURN_IF_ERROR(Arity(c, 2, 2, "VOL SIZE"));
    OVBD_RETURN_IF_ERROR(ValidateName(a[0], "volume"));
    OVBD_ASSIGN_OR_RETURN(uint64_t size, ParseSize(a[1]));
    if (size == 0) return Status::InvalidArgument("size must be greater than zero");
    if (c.verb == "create") {
      FileAttrs attrs;
      if (owner) attrs = *owner;
      if (caller) {
        // New volumes belong to whoever asked for them.
        attrs = FileAttrs{};
        attrs.uid = caller->uid;
        attrs.gid = caller->gid;
        attrs.mode = 0644;
      }
      OVBD_RETURN_IF_ERROR(store_->CreateVolume(a[0], size, {}, attrs));
      out.output = "volume " + a[0] + " created (" + FormatSize(size) + ")";
      return out;
    }
    OVBD_RETURN_IF_ERROR(CheckOwner(store_, caller, "resize", a[0]));
    OVBD_RETURN_IF_ERROR(store_->Resize(a[0], size));
    out.output = "volume " + a[0] + " resized to " + FormatSize(size);
    return out;
  }
  if (c.verb == "delete") {
    OVBD_RETURN_IF_ERROR(Arity(c, 1, 1, "VOL or VOL@SNAP"));
    OVBD_RETURN_IF_ERROR(CheckFullName(a[0]));
    OVBD_RETURN_IF_ERROR(CheckOwner(store_, caller, "delete", a[0]));
    OVBD_RETURN_IF_ERROR(store_->Delete(a[0]));
    out.output = a[0] + " deleted";
    out.removed_names = true;
    return out;
  }
  if (c.verb == "hydrate") {
    // hydrate VOL [start|pause|resume|cancel] [rate N] | hydrate --all [rate N]
    static constexpr char kHydrateUsage[] =
        "VOL [pause|resume|cancel] [rate N[K|M|G]], or --all [rate N]";
    OVBD_RETURN_IF_ERROR(Arity(c, 1, 4, kHydrateUsage));
    std::optional<HydrateAction> action;
    std::optional<uint64_t> rate;
    for (size_t i = 1; i < a.size(); ++i) {
      if (a[i] == "rate") {
        if (i + 1 >= a.size()) {
          return Status::InvalidArgument("hydrate: 'rate' needs a value (bytes per second, "
                                         "K/M/G suffixes; 0 means unlimited)");
        }
        if (rate) return Status::InvalidArgument("hydrate: 'rate' given twice");
        OVBD_ASSIGN_OR_RETURN(uint64_t r, ParseSize(a[i + 1]));
        rate = r;
        ++i;
      } else if (!action && (a[i] == "start" || a[i] == "pause" || a[i] == "resume" ||
                             a[i] == "cancel")) {
        action = a[i] == "pause"    ? HydrateAction::kPause
                 : a[i] == "resume" ? HydrateAction::kResume
                 : a[i] == "cancel" ? HydrateAction::kCancel
                                    : HydrateAction::kStart;
      } else {
        return Status::InvalidArgument("hydrate: unexpected '" + a[i] + "'; expected " +
                                       kHydrateUsage);
      }
    }
    if (rate && (action == HydrateAction::kPause || action == HydrateAction::kCancel)) {
      return Status::InvalidArgument("hydrate: 'rate' goes with start or resume, not with " +
                                     a[1]);
    }
    if (a[0] == "--all") {
      if (action && action != HydrateAction::kStart) {
        return Status::InvalidArgument("hydrate --all only starts; pause, resume or cancel "
                                       "one volume at a time");
      }
      if (caller && !caller->root()) {
        for (const VolumeInfo& v : store_->List()) {
          if (v.is_snapshot || v.lowers.empty() || MayAccess(*caller, v.attrs, kMayWrite)) continue;
          return AccessDenied("hydrate --all", "needs write permission on every volume with "
                                               "layers; " + Uid(caller->uid) + " cannot write " +
                                               v.name);
        }
      }
      OVBD_ASSIGN_OR_RETURN(auto started, store_->HydrateAll(rate));
      out.output = "hydrating " + std::to_string(started.size()) + " volume(s)";
      for (const auto& v : started) out.output += " " + v;
      return out;
    }
    OVBD_RETURN_IF_ERROR(ValidateName(a[0], "volume"));
    OVBD_RETURN_IF_ERROR(CheckWrite(store_, caller, "hydrate", a[0]));
    if (!action) action = rate ? HydrateAction::kRate : HydrateAction::kStart;
    OVBD_ASSIGN_OR_RETURN(HydrateState st, store_->Hydrate(a[0], *action, rate));
    out.output = "hydrate " + a[0] + " " + HydrateStateName(st);
    return out;
  }
  if (c.verb == "status") {
    OVBD_RETURN_IF_ERROR(Arity(c, 0, 1, "[VOL]"));
    if (a.empty()) {
      out.output = StatusReport();
      return out;
    }
    OVBD_RETURN_IF_ERROR(CheckFullName(a[0]));
    OVBD_ASSIGN_OR_RETURN(auto info, store_->Lookup(a[0]));
    (void)info;
    out.output = store_->StatusText(a[0]);
    return out;
  }
  if (c.verb == "flush") {
    OVBD_RETURN_IF_ERROR(Arity(c, 0, 1, "[VOL]"));
    if (!a.empty()) {
      OVBD_RETURN_IF_ERROR(ValidateName(a[0], "volume"));
      OVBD_ASSIGN_OR_RETURN(auto v, store_->Acquire(a[0]));
      Status s = v->Flush();
      store_->Release(a[0]);
      OVBD_RETURN_IF_ERROR(s);
      out.output = a[0] + " flushed";
      return out;
    }
    OVBD_RETURN_IF_ERROR(store_->FlushAll());
    out.output = "all volumes flushed";
    return out;
  }
  if (c.verb == "gc") {
    OVBD_RETURN_IF_ERROR(Arity(c, 0, 0, "no arguments"));
    std::vector<std::string> removed;
    OVBD_RETURN_IF_ERROR(store_->CollectGarbage(&removed));
    out.output = "removed " + std::to_string(removed.size()) + " unreferenced file(s)";
    return out;
  }
  if (c.verb == "json" || c.verb == "text") {
    OVBD_RETURN_IF_ERROR(Arity(c, 0, 0, "no arguments"));
    out.json = c.verb == "json";
    out.output = "output format: " + c.verb;
    return out;
  }
  return Status::InvalidArgument("unknown command '" + c.verb + "'; " + kUsage);
}

std::string Controller::StatusReport() const {
  auto vols = store_->List();
  std::string out = std::string(kStatusHeader) + std::to_string(vols.size()) + "\n";
  out += store_->StatusText();
  return out;
}

}  // namespace ovbd
