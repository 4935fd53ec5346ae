// Volume manifests: the small JSON document per volume that names its size,
// its lower layers, its upper, its snapshots and its file attributes.
// Format in docs/FORMAT.md, "Store". Parsing treats the file as hostile:
// every name is validated so no manifest can point outside the store.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "ovbd/io/status.h"

namespace ovbd {

constexpr int kManifestVersion = 1;
constexpr size_t kMaxNameLength = 128;
constexpr size_t kMaxManifestBytes = 16 << 20;

// Volume and snapshot names: [A-Za-z0-9._-]{1,128}, not starting with '.'
// (which keeps ".control", "." and ".." out of the namespace).
Status ValidateName(const std::string& name, const char* what);
// Layer file names inside STORE/layers/: same alphabet, no '/', no leading '.'.
Status ValidateLayerFileName(const std::string& name);

struct FileAttrs {
  uint32_t mode = 0644;  // permission bits only
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint64_t atime_ns = 0;
  uint64_t mtime_ns = 0;
  uint64_t ctime_ns = 0;
};

struct SnapshotRecord {
  std::string name;
  uint64_t size = 0;
  std::vector<std::string> lowers;  // layer files, bottom first
  uint64_t created_ns = 0;
  FileAttrs attrs;
};

// Hydration of a volume (copying what it reads from its lowers into its
// upper until it needs none). The manifest keeps what was asked, so a
// restart resumes a running hydration and remembers a paused or failed one.
enum class HydrateState : uint8_t { kIdle, kRunning, kPaused, kDone, kError };
const char* HydrateStateName(HydrateState s);  // "idle", "running", ...
bool ParseHydrateState(const std::string& name, HydrateState* out);

struct HydrateRecord {
  HydrateState state = HydrateState::kIdle;  // kIdle: no record in the file
  uint64_t rate = 0;                         // bytes per second; 0: unlimited
  std::string error;                         // why it stopped (kError)
};

struct Manifest {
  std::string name;
  uint64_t size = 0;
  std::vector<std::string> lowers;  // layer files, bottom first
  std::string upper;                // upper id (files layers/ID.data, ID.jnl)
  FileAttrs attrs;
  std::vector<SnapshotRecord> snapshots;
  uint64_t generation = 0;          // bumped on every change
  // A deleted volume whose snapshots live on: no upper, not listed itself.
  bool deleted = false;
  HydrateRecord hydrate;

  const SnapshotRecord* FindSnapshot(const std::string& snap) const;
};

std::string EncodeManifest(const Manifest& m);
Status DecodeManifest(const std::string& text, const std::string& what, Manifest* out);

}  // namespace ovbd
