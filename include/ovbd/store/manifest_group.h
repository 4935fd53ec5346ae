// Manifest groups: several volume manifests replaced as one atomic change
// (a consistency-group snapshot touches every volume's manifest; a crash
// between two of the renames must not leave some volumes with the snapshot
// and others without).
//
// Redo log in the store directory (docs/FORMAT.md, "Manifest groups"):
//  1. the new manifests are written and synced into `manifest-group.tmp/`,
//     and that directory is synced;
//  2. it is renamed to `manifest-group/` and the store directory is synced:
//     the commit point;
//  3. each file is renamed over its volume's manifest in `volumes/`, that
//     directory is synced, and `manifest-group/` is removed.
// Recovery finishes step 3 for a `manifest-group/` and drops a
// `manifest-group.tmp/`.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "ovbd/io/env.h"

namespace ovbd {

inline constexpr char kManifestGroupDir[] = "manifest-group";
inline constexpr char kManifestGroupStaging[] = "manifest-group.tmp";

// One manifest: its file name in volumes/ ("NAME.json") and its text.
using ManifestFile = std::pair<std::string, std::string>;

// Steps 1 and 2. On failure, *committed tells whether the commit point may
// have been passed (the group rename was made): if not, nothing changed.
Status CommitManifestGroup(Env* env, const std::string& store_dir,
                           const std::vector<ManifestFile>& files, bool* committed);

// Step 3 for a committed group, and removal of an uncommitted staging
// directory. No-op when there is neither.
Status FinishManifestGroup(Env* env, const std::string& store_dir);

// The manifests of a committed, unfinished group (empty if none), for
// read-only views of the store, which must see what recovery will make.
Result<std::vector<ManifestFile>> PendingManifestGroup(Env* env, const std::string& store_dir,
                                                       size_t max_file_bytes);

}  // namespace ovbd
