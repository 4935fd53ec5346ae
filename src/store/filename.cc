#include "ovbd/store/filename.h"

#include <cstring>

namespace ovbd::filename {

namespace {
bool EndsWith(const std::string& s, const char* suffix) {
  const size_t n = std::strlen(suffix);
  return s.size() > n && s.compare(s.size() - n, n, suffix) == 0;
}
bool StartsWith(const std::string& s, const char* prefix) {
  return s.rfind(prefix, 0) == 0;
}
}  // namespace

std::string ManifestFile(const std::string& volume) { return volume + kManifestSuffix; }

std::string VolumeOfManifestFile(const std::string& file) {
  if (!EndsWith(file, kManifestSuffix)) return "";
  return file.substr(0, file.size() - std::strlen(kManifestSuffix));
}

std::string UpperDataFile(const std::string& id) { return id + ".data"; }
std::string UpperJournalFile(const std::string& id) { return id + ".jnl"; }
std::string ImportedLayerFile(const std::string& hex) { return "sha256-" + hex + ".layer"; }
std::string RemoteLayerFile(const std::string& hex) { return "sha256-" + hex + ".remote"; }
std::string RemoteStubOf(const std::string& f) {
  if (Classify(f) != Kind::kImportedLayer) return "";
  return f.substr(0, f.size() - std::strlen(".layer")) + ".remote";
}
std::string MergedLayerFile(const std::string& id) { return id + ".lsmt"; }
std::string TempFile(const std::string& id, const std::string& what) {
  return id + "." + what + kTempSuffix;
}

bool IsTemp(const std::string& file) { return EndsWith(file, kTempSuffix); }

Kind Classify(const std::string& f) {
  if (IsTemp(f)) return Kind::kTemp;
  if (EndsWith(f, kManifestSuffix)) return Kind::kManifest;
  if (StartsWith(f, "sha256-") && EndsWith(f, ".layer")) return Kind::kImportedLayer;
  if (StartsWith(f, "sha256-") && EndsWith(f, ".remote")) return Kind::kRemoteLayer;
  if (EndsWith(f, ".data")) return Kind::kUpperData;
  if (EndsWith(f, ".jnl")) return Kind::kUpperJournal;
  if (EndsWith(f, ".lsmt")) return Kind::kMergedLayer;
  return Kind::kUnknown;
}

const char* KindName(Kind k) {
  switch (k) {
    case Kind::kManifest: return "manifest";
    case Kind::kImportedLayer: return "imported layer";
    case Kind::kRemoteLayer: return "remote layer address";
    case Kind::kUpperData: return "upper data (or sealed layer)";
    case Kind::kUpperJournal: return "upper journal";
    case Kind::kMergedLayer: return "merged layer";
    case Kind::kTemp: return "temporary file";
    case Kind::kUnknown: return "unknown file";
  }
  return "?";
}

}  // namespace ovbd::filename
