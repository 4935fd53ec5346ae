// Manifests: loading them at open (one bad manifest refuses only its own
// volume), and replacing one atomically.
#include <algorithm>
#include <map>

#include "ovbd/store/filename.h"
#include "ovbd/store/manifest_group.h"
#include "store_internal.h"

namespace ovbd {

Status Store::LoadManifests() {
  const std::string vdir = JoinPath(dir_, filename::kVolumesDir);
  // A committed manifest group is applied before anything else looks at the
  // manifests (GC included: the group's fresh uppers are referenced only
  // there). Read-only, its manifests are overlaid in memory below.
  if (!opts_.read_only) OVBD_RETURN_IF_ERROR(FinishManifestGroup(env_, dir_));
  OVBD_ASSIGN_OR_RETURN(auto names, env_->ListDir(vdir));
  std::sort(names.begin(), names.end());
  std::map<std::string, Manifest> loaded;
  std::map<std::string, std::string> failed;
  auto load = [&](const std::string& claimed, const std::string& path,
                  const Result<std::string>& text) {
    if (!text.ok()) {
      failed[claimed] = text.status().ToString();
      return;
    }
    Manifest m;
    Status s = DecodeManifest(text.value(), path, &m);
    if (!s.ok()) {
      failed[claimed] = s.ToString();
      return;
    }
    if (m.name != claimed) {
      failed[claimed] = path + ": manifest names volume '" + m.name + "'";
      return;
    }
    failed.erase(claimed);
    loaded[m.name] = std::move(m);
  };
  for (const std::string& f : names) {
    const std::string path = JoinPath(vdir, f);
    if (filename::IsTemp(f)) {
      if (!opts_.read_only) OVBD_RETURN_IF_ERROR(env_->Remove(path));  // interrupted write
      continue;
    }
    const std::string claimed = filename::VolumeOfManifestFile(f);
    if (claimed.empty()) continue;
    auto fi = env_->Stat(path);
    if (!fi.ok()) {
      failed[claimed] = fi.status().ToString();
      continue;
    }
    if (!fi->is_regular) {
      failed[claimed] = path + ": not a regular file (symlinks are never followed)";
      continue;
    }
    load(claimed, path, env_->ReadSmallFile(path, kMaxManifestBytes));
  }
  if (opts_.read_only) {
    OVBD_ASSIGN_OR_RETURN(auto pending, PendingManifestGroup(env_, dir_, kMaxManifestBytes));
    for (const auto& [file, text] : pending) {
      load(filename::VolumeOfManifestFile(file), JoinPath(kManifestGroupDir, file), text);
    }
  }
  MutexLock lk(&mu_);
  manifests_ = std::move(loaded);
  failed_manifests_ = std::move(failed);
  // A manifest we could not read may name any file: nothing may be
  // collected while one exists (docs/RELIABILITY.md).
  manifests_unreadable_ = !failed_manifests_.empty();
  RefuseSharedUppers();
  return Status::OK();
}

void Store::RefuseSharedUppers() {
  // Who claims each upper, and which uppers' data files someone reads as a
  // lower: either way two users would share a file one of them writes.
  std::map<std::string, std::vector<std::string>> upper_claims;
  std::map<std::string, std::vector<std::string>> lower_users;  // layer file -> volumes
  for (const auto& [n, m] : manifests_) {
    if (!m.upper.empty()) upper_claims[m.upper].push_back(n);
    for (const auto& l : m.lowers) lower_users[l].push_back(n);
    for (const auto& s : m.snapshots)
      for (const auto& l : s.lowers) lower_users[l].push_back(n);
  }
  std::map<std::string, std::string> refuse;
  for (const auto& [upper, claimants] : upper_claims) {
    if (claimants.size() > 1) {
      std::string all;
      for (const auto& c : claimants) all += (all.empty() ? "" : ", ") + c;
      for (const auto& c : claimants) {
        refuse[c] = "upper " + upper + " is claimed by more than one volume (" + all +
                    "); refusing them all rather than let two volumes write one file";
      }
    }
    auto readers = lower_users.find(filename::UpperDataFile(upper));
    if (readers != lower_users.end()) {
      for (const auto& r : readers->second) {
        refuse[r] = "layer " + filename::UpperDataFile(upper) + " is also the writable upper of " +
                    claimants.front();
      }
      for (const auto& c : claimants) {
        refuse[c] = "its upper " + upper + " is also a lower layer of " + readers->second.front();
      }
    }
  }
  for (const auto& [n, why] : refuse) {
    failed_manifests_[n] = why;
    manifests_.erase(n);
    // Their files are known but must not be collected either.
    manifests_unreadable_ = true;
  }
}

Status Store::WriteManifestFile(const Manifest& m, bool* renamed) {
  *renamed = false;
  return env_->WriteFileAtomic(ManifestPath(m.name), EncodeManifest(m), renamed);
}

Status Store::WriteManifest(Manifest m) {
  m.generation++;
  bool renamed = false;
  OVBD_RETURN_IF_ERROR(WriteManifestFile(m, &renamed));
  MutexLock lk(&mu_);
  const std::string name = m.name;
  manifests_[name] = std::move(m);
  return Status::OK();
}

Status Store::RemoveManifest(const std::string& name) {
  OVBD_RETURN_IF_ERROR(env_->Remove(ManifestPath(name)));
  OVBD_RETURN_IF_ERROR(env_->SyncDir(JoinPath(dir_, filename::kVolumesDir)));
  MutexLock lk(&mu_);
  manifests_.erase(name);
  return Status::OK();
}

}  // namespace ovbd
