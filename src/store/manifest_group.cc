#include "ovbd/store/manifest_group.h"

namespace ovbd {

namespace {

constexpr char kVolumesDir[] = "volumes";

Status RemoveTree(Env* env, const std::string& dir) {
  OVBD_ASSIGN_OR_RETURN(auto names, env->ListDir(dir));
  for (const auto& n : names) OVBD_RETURN_IF_ERROR(env->Remove(JoinPath(dir, n)));
  return env->RemoveDir(dir);
}

}  // namespace

Status CommitManifestGroup(Env* env, const std::string& store_dir,
                           const std::vector<ManifestFile>& files, bool* committed) {
  *committed = false;
  const std::string staging = JoinPath(store_dir, kManifestGroupStaging);
  const std::string group = JoinPath(store_dir, kManifestGroupDir);
  // A group left by an earlier failure must be finished first, or its older
  // manifests would be applied over these at the next recovery.
  OVBD_RETURN_IF_ERROR(FinishManifestGroup(env, store_dir));
  OVBD_RETURN_IF_ERROR(env->CreateDir(staging));
  for (const auto& [name, text] : files) {
    OVBD_RETURN_IF_ERROR(env->WriteFileSynced(JoinPath(staging, name), text));
  }
  OVBD_RETURN_IF_ERROR(env->SyncDir(staging));
  OVBD_RETURN_IF_ERROR(env->CrashPoint("manifest_group.before_commit"));
  OVBD_RETURN_IF_ERROR(env->Rename(staging, group));
  *committed = true;
  return env->SyncDir(store_dir);
}

Status FinishManifestGroup(Env* env, const std::string& store_dir) {
  const std::string staging = JoinPath(store_dir, kManifestGroupStaging);
  const std::string group = JoinPath(store_dir, kManifestGroupDir);
  if (env->Exists(staging)) {
    OVBD_RETURN_IF_ERROR(RemoveTree(env, staging));  // never committed
    OVBD_RETURN_IF_ERROR(env->SyncDir(store_dir));
  }
  if (!env->Exists(group)) return Status::OK();
  const std::string vdir = JoinPath(store_dir, kVolumesDir);
  OVBD_ASSIGN_OR_RETURN(auto names, env->ListDir(group));
  for (const auto& n : names) {
    // Each rename is atomic; after a crash part way, the files still here
    // are the ones left to move.
    OVBD_RETURN_IF_ERROR(env->Rename(JoinPath(group, n), JoinPath(vdir, n)));
    OVBD_RETURN_IF_ERROR(env->CrashPoint("manifest_group.after_apply_one"));
  }
  OVBD_RETURN_IF_ERROR(env->SyncDir(vdir));
  OVBD_RETURN_IF_ERROR(env->RemoveDir(group));
  return env->SyncDir(store_dir);
}

Result<std::vector<ManifestFile>> PendingManifestGroup(Env* env, const std::string& store_dir,
                                                       size_t max_file_bytes) {
  std::vector<ManifestFile> out;
  const std::string group = JoinPath(store_dir, kManifestGroupDir);
  if (!env->Exists(group)) return out;
  OVBD_ASSIGN_OR_RETURN(auto names, env->ListDir(group));
  for (const auto& n : names) {
    OVBD_ASSIGN_OR_RETURN(std::string text, env->ReadSmallFile(JoinPath(group, n), max_file_bytes));
    out.emplace_back(n, std::move(text));
  }
  return out;
}

}  // namespace ovbd
