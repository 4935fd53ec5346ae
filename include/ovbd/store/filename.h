// Every name in a store directory, made and parsed in one place. Garbage
// collection, recovery and `ovbd check` all classify files with these
// functions, so they cannot disagree about what a file is.
//
//   STORE/ovbd-store.json              store marker and format version
//   STORE/lock                         flock'ed by whoever has the store open for writing
//   STORE/volumes/NAME.json            one manifest per volume (snapshots inside it)
//   STORE/volumes/NAME.json.tmp        a manifest being replaced (atomic write)
//   STORE/manifest-group.tmp/, manifest-group/
//                                      a `snapshot --all` being staged / committed
//   STORE/layers/sha256-HEX.layer      an imported layer, named by its content digest
//   STORE/layers/sha256-HEX.remote     where the layer sha256-HEX.layer lives remotely
//                                      (its address and size), for a lower read from
//                                      a registry or URL while no local copy exists
//   STORE/layers/ID.data, ID.jnl       an upper (data at virtual offsets + its journal)
//   STORE/layers/ID.data               a sealed upper (the .jnl is gone): a lower layer
//   STORE/layers/ID.lsmt               a layer written by merging two others
//   STORE/layers/*.tmp                 a file being written (import, merge, size probe)
#pragma once

#include <string>

namespace ovbd::filename {

inline constexpr char kStoreMarker[] = "ovbd-store.json";
inline constexpr char kLockFile[] = "lock";
inline constexpr char kVolumesDir[] = "volumes";
inline constexpr char kLayersDir[] = "layers";
inline constexpr char kManifestSuffix[] = ".json";
inline constexpr char kTempSuffix[] = ".tmp";

// volumes/: "vm1" <-> "vm1.json".
std::string ManifestFile(const std::string& volume);
// The volume a manifest file name claims, or "" if `file` is not one.
std::string VolumeOfManifestFile(const std::string& file);

// layers/.
std::string UpperDataFile(const std::string& id);
std::string UpperJournalFile(const std::string& id);
std::string ImportedLayerFile(const std::string& sha256_hex);
std::string RemoteLayerFile(const std::string& sha256_hex);
// "sha256-HEX.layer" -> "sha256-HEX.remote"; "" for any other kind of file.
std::string RemoteStubOf(const std::string& layer_file);
std::string MergedLayerFile(const std::string& id);
// A temporary under layers/ (or volumes/): unique per use.
std::string TempFile(const std::string& id, const std::string& what);

bool IsTemp(const std::string& file);

enum class Kind { kManifest, kImportedLayer, kRemoteLayer, kUpperData, kUpperJournal, kMergedLayer, kTemp, kUnknown };
Kind Classify(const std::string& layer_or_manifest_file);
const char* KindName(Kind k);

}  // namespace ovbd::filename
