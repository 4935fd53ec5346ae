#include "ovbd/store/manifest.h"

#include <limits>
#include <type_traits>

#include <nlohmann/json.hpp>

#include "ovbd/layer/lsmt_layer.h"
#include "ovbd/layer/merged_index.h"

namespace ovbd {

using nlohmann::json;

namespace {
bool NameChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-';
}

Status CheckNameChars(const std::string& name, const char* what) {
  if (name.empty()) return Status::InvalidArgument(std::string(what) + " name is empty");
  if (name.size() > kMaxNameLength) {
    return Status::InvalidArgument(std::string(what) + " name is longer than 128 characters");
  }
  if (name.front() == '.') {
    return Status::InvalidArgument(std::string(what) + " name '" + name +
                                   "' must not start with '.'");
  }
  for (char c : name) {
    if (!NameChar(c)) {
      std::string shown = (c >= 0x20 && c < 0x7f) ? std::string(1, c) : "\\x" + [&] {
        char b[4];
        std::snprintf(b, sizeof b, "%02x", static_cast<unsigned char>(c));
        return std::string(b);
      }();
      return Status::InvalidArgument(std::string(what) + " name contains '" + shown +
                                     "': only letters, digits, '.', '_' and '-' are allowed");
    }
  }
  return Status::OK();
}

json AttrsToJson(const FileAttrs& a) {
  return json{{"mode", a.mode}, {"uid", a.uid},           {"gid", a.gid},
              {"atime_ns", a.atime_ns}, {"mtime_ns", a.mtime_ns}, {"ctime_ns", a.ctime_ns}};
}

// Typed getters that fail with a message instead of throwing on bad input.
template <typename T>
Status Get(const json& j, const char* key, const std::string& what, T* out, bool required = true) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (!required) return Status::OK();
    return Status::Corruption(what + ": missing field '" + key + "'");
  }
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    // Numbers must be integers that fit: a float (or an integer too large
    // for 64 bits, which the parser turns into one) or a negative value for
    // an unsigned field is corruption, never a silently converted value.
    const auto bad_range = [&] {
      return Status::Corruption(what + ": field '" + key + "' is out of range");
    };
    if (it->is_number_unsigned()) {
      const uint64_t v = it->template get<uint64_t>();
      if (v > static_cast<uint64_t>(std::numeric_limits<T>::max())) return bad_range();
      *out = static_cast<T>(v);
    } else if (it->is_number_integer()) {
      const int64_t v = it->template get<int64_t>();
      if (v < static_cast<int64_t>(std::numeric_limits<T>::min())) return bad_range();
      if (v > 0 && static_cast<uint64_t>(v) > static_cast<uint64_t>(std::numeric_limits<T>::max())) {
        return bad_range();
      }
      *out = static_cast<T>(v);
    } else {
      return Status::Corruption(what + ": field '" + key + "' is not an integer");
    }
  } else {
    try {
      *out = it->template get<T>();
    } catch (const std::exception&) {
      return Status::Corruption(what + ": field '" + key + "' has the wrong type");
    }
  }
  return Status::OK();
}

Status AttrsFromJson(const json& j, const std::string& what, FileAttrs* a) {
  if (!j.is_object()) return Status::Corruption(what + ": attrs is not an object");
  OVBD_RETURN_IF_ERROR(Get(j, "mode", what, &a->mode));
  OVBD_RETURN_IF_ERROR(Get(j, "uid", what, &a->uid));
  OVBD_RETURN_IF_ERROR(Get(j, "gid", what, &a->gid));
  OVBD_RETURN_IF_ERROR(Get(j, "atime_ns", what, &a->atime_ns, false));
  OVBD_RETURN_IF_ERROR(Get(j, "mtime_ns", what, &a->mtime_ns, false));
  OVBD_RETURN_IF_ERROR(Get(j, "ctime_ns", what, &a->ctime_ns, false));
  a->mode &= 07777;
  return Status::OK();
}

Status LowersFromJson(const json& j, const char* key, const std::string& what,
                      std::vector<std::string>* out) {
  OVBD_RETURN_IF_ERROR(Get(j, key, what, out));
  if (out->size() > MergedIndex::kMaxLayers) {
    return Status::Corruption(what + ": more than 255 layers");
  }
  for (const auto& l : *out) {
    Status s = ValidateLayerFileName(l);
    if (!s.ok()) return Status::Corruption(what + ": " + s.message());
  }
  return Status::OK();
}
}  // namespace

Status ValidateName(const std::string& name, const char* what) {
  return CheckNameChars(name, what);
}

Status ValidateLayerFileName(const std::string& name) { return CheckNameChars(name, "layer file"); }

const char* HydrateStateName(HydrateState s) {
  switch (s) {
    case HydrateState::kIdle: return "idle";
    case HydrateState::kRunning: return "running";
    case HydrateState::kPaused: return "paused";
    case HydrateState::kDone: return "done";
    case HydrateState::kError: return "error";
  }
  return "idle";
}

bool ParseHydrateState(const std::string& name, HydrateState* out) {
  for (HydrateState s : {HydrateState::kIdle, HydrateState::kRunning, HydrateState::kPaused,
                         HydrateState::kDone, HydrateState::kError}) {
    if (name == HydrateStateName(s)) {
      *out = s;
      return true;
    }
  }
  return false;
}

const SnapshotRecord* Manifest::FindSnapshot(const std::string& snap) const {
  for (const auto& s : snapshots)
    if (s.name == snap) return &s;
  return nullptr;
}

std::string EncodeManifest(const Manifest& m) {
  json snaps = json::array();
  for (const auto& s : m.snapshots) {
    snaps.push_back(json{{"name", s.name},
                         {"size", s.size},
                         {"lowers", s.lowers},
                         {"created_ns", s.created_ns},
                         {"attrs", AttrsToJson(s.attrs)}});
  }
  json j{{"format", "ovbd-volume"},  {"version", kManifestVersion}, {"name", m.name},
         {"size", m.size},           {"lowers", m.lowers},         {"upper", m.upper},
         {"attrs", AttrsToJson(m.attrs)}, {"snapshots", snaps},   {"generation", m.generation},
         {"deleted", m.deleted}};
  if (m.hydrate.state != HydrateState::kIdle) {
    json h{{"state", HydrateStateName(m.hydrate.state)}, {"rate", m.hydrate.rate}};
    if (!m.hydrate.error.empty()) h["error"] = m.hydrate.error;
    j["hydrate"] = std::move(h);
  }
  return j.dump(2) + "\n";
}

Status DecodeManifest(const std::string& text, const std::string& what, Manifest* m) {
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return Status::Corruption(what + ": not a JSON object");
  }
  std::string format;
  int version = 0;
  OVBD_RETURN_IF_ERROR(Get(j, "format", what, &format));
  if (format != "ovbd-volume") return Status::Corruption(what + ": not a volume manifest");
  OVBD_RETURN_IF_ERROR(Get(j, "version", what, &version));
  if (version != kManifestVersion) {
    return Status::NotSupported(what + ": manifest version " + std::to_string(version));
  }
  OVBD_RETURN_IF_ERROR(Get(j, "name", what, &m->name));
  Status ns = ValidateName(m->name, "volume");
  if (!ns.ok()) return Status::Corruption(what + ": " + ns.message());
  OVBD_RETURN_IF_ERROR(Get(j, "size", what, &m->size));
  if (m->size % lsmt::kSectorSize != 0 || m->size / lsmt::kSectorSize > lsmt::kMaxOffset) {
    return Status::Corruption(what + ": invalid size " + std::to_string(m->size));
  }
  OVBD_RETURN_IF_ERROR(LowersFromJson(j, "lowers", what, &m->lowers));
  OVBD_RETURN_IF_ERROR(Get(j, "upper", what, &m->upper));
  if (!m->upper.empty()) {
    Status s = ValidateLayerFileName(m->upper);
    if (!s.ok()) return Status::Corruption(what + ": upper: " + s.message());
  }
  if (j.contains("attrs")) OVBD_RETURN_IF_ERROR(AttrsFromJson(j["attrs"], what, &m->attrs));
  OVBD_RETURN_IF_ERROR(Get(j, "generation", what, &m->generation, false));
  OVBD_RETURN_IF_ERROR(Get(j, "deleted", what, &m->deleted, false));
  if (m->deleted && !m->upper.empty()) {
    return Status::Corruption(what + ": a deleted volume cannot have an upper");
  }
  if (j.contains("hydrate")) {
    const json& hj = j["hydrate"];
    if (!hj.is_object()) return Status::Corruption(what + ": hydrate is not an object");
    std::string state;
    OVBD_RETURN_IF_ERROR(Get(hj, "state", what, &state));
    if (!ParseHydrateState(state, &m->hydrate.state)) {
      return Status::Corruption(what + ": unknown hydrate state '" + state + "'");
    }
    OVBD_RETURN_IF_ERROR(Get(hj, "rate", what, &m->hydrate.rate, false));
    OVBD_RETURN_IF_ERROR(Get(hj, "error", what, &m->hydrate.error, false));
    if (m->hydrate.error.size() > 4096) m->hydrate.error.resize(4096);
    if (m->deleted) m->hydrate = HydrateRecord{};
  }
  if (j.contains("snapshots")) {
    const json& sj = j["snapshots"];
    if (!sj.is_array()) return Status::Corruption(what + ": snapshots is not an array");
    for (const json& e : sj) {
      if (!e.is_object()) return Status::Corruption(what + ": snapshot is not an object");
      SnapshotRecord s;
      OVBD_RETURN_IF_ERROR(Get(e, "name", what, &s.name));
      Status vs = ValidateName(s.name, "snapshot");
      if (!vs.ok()) return Status::Corruption(what + ": " + vs.message());
      if (m->FindSnapshot(s.name)) {
        return Status::Corruption(what + ": duplicate snapshot '" + s.name + "'");
      }
      OVBD_RETURN_IF_ERROR(Get(e, "size", what, &s.size));
      if (s.size % lsmt::kSectorSize != 0 || s.size / lsmt::kSectorSize > lsmt::kMaxOffset) {
        return Status::Corruption(what + ": snapshot " + s.name + ": invalid size");
      }
      OVBD_RETURN_IF_ERROR(LowersFromJson(e, "lowers", what, &s.lowers));
      OVBD_RETURN_IF_ERROR(Get(e, "created_ns", what, &s.created_ns, false));
      if (e.contains("attrs")) OVBD_RETURN_IF_ERROR(AttrsFromJson(e["attrs"], what, &s.attrs));
      m->snapshots.push_back(std::move(s));
    }
  }
  return Status::OK();
}

}  // namespace ovbd
