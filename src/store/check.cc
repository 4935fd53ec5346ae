#include "ovbd/store/check.h"

#include "ovbd/store/filename.h"

#include <map>
#include <set>

#include "ovbd/layer/layer_open.h"
#include "ovbd/layer/upper.h"
#include "ovbd/store/manifest.h"
#include "ovbd/store/manifest_group.h"

namespace ovbd {

Result<CheckReport> CheckStore(Env* env, const std::string& dir, const CheckOptions& opts) {
  CheckReport rep;
  auto add = [&](std::string where, std::string what, bool repaired = false) {
    rep.findings.push_back({std::move(where), std::move(what), repaired});
  };
  if (!env->Exists(JoinPath(dir, "ovbd-store.json"))) {
    return Status::NotFound(dir + " is not an ovbd store");
  }
  // Nothing beneath the store is reached through a symlink (a user who owns
  // the store must not steer a root `check --repair` elsewhere).
  OVBD_ASSIGN_OR_RETURN(auto confinement, env->Confine(dir));
  for (const char* d : {"volumes", "layers", kManifestGroupDir, kManifestGroupStaging}) {
    auto st = env->Stat(JoinPath(dir, d));
    if (st.ok() && st->is_dir) continue;
    if (!st.ok() && st.status().IsNotFound() && d[0] == 'm') continue;
    return Status::Corruption(JoinPath(dir, d) + (st.ok() ? " is not a directory"
                                                          : ": " + st.status().ToString()) +
                              "; refusing to check (or repair) through it");
  }
  std::unique_ptr<FileLock> lock;
  if (opts.repair) {
    auto l = env->LockFile(JoinPath(dir, "lock"));
    if (!l.ok()) return l.status().Annotate("cannot repair while the store is in use");
    lock = std::move(l).value();
  }
  const std::string vdir = JoinPath(dir, "volumes");
  const std::string ldir = JoinPath(dir, "layers");

  // 0. An interrupted `snapshot --all`: recovery's first step.
  const bool staging = env->Exists(JoinPath(dir, kManifestGroupStaging));
  const bool group = env->Exists(JoinPath(dir, kManifestGroupDir));
  std::vector<ManifestFile> pending;
  if (staging || group) {
    const std::string what = group ? "a committed snapshot group not yet applied to volumes/"
                                   : "an uncommitted snapshot group (dropped on recovery)";
    if (opts.repair) {
      Status s = FinishManifestGroup(env, dir);
      add(JoinPath(dir, group ? kManifestGroupDir : kManifestGroupStaging),
          s.ok() ? what : what + ": " + s.ToString(), s.ok());
    } else {
      add(JoinPath(dir, group ? kManifestGroupDir : kManifestGroupStaging),
          what + "; the next open of the store finishes it");
      // Check what recovery will make of it.
      OVBD_ASSIGN_OR_RETURN(pending, PendingManifestGroup(env, dir, kMaxManifestBytes));
    }
  }

  // 1. Manifests. One we cannot read may reference any file: then no file
  // is called garbage (and repair removes none).
  std::map<std::string, Manifest> manifests;
  std::vector<std::string> unreadable;
  OVBD_ASSIGN_OR_RETURN(auto vfiles, env->ListDir(vdir));
  for (const auto& f : vfiles) {
    const std::string path = JoinPath(vdir, f);
    if (f.size() > 4 && f.compare(f.size() - 4, 4, ".tmp") == 0) {
      bool fixed = opts.repair && env->Remove(path).ok();
      add(path, "leftover temporary file of an interrupted change", fixed);
      continue;
    }
    if (filename::VolumeOfManifestFile(f).empty()) continue;
    auto st = env->Stat(path);
    if (!st.ok() || !st->is_regular) {
      add(path, "not a regular file (symlinks are never followed)");
      unreadable.push_back(f);
      continue;
    }
    auto text = env->ReadSmallFile(path, kMaxManifestBytes);
    if (!text.ok()) {
      add(path, text.status().ToString());
      unreadable.push_back(f);
      continue;
    }
    Manifest m;
    Status s = DecodeManifest(text.value(), path, &m);
    if (!s.ok()) {
      add(path, s.ToString());
      unreadable.push_back(f);
      continue;
    }
    if (filename::ManifestFile(m.name) != f) {
      add(path, "manifest names volume '" + m.name + "'");
      unreadable.push_back(f);
      continue;
    }
    ++rep.manifests;
    manifests[m.name] = std::move(m);
  }
  for (const auto& [file, text] : pending) {
    Manifest m;
    Status s = DecodeManifest(text, JoinPath(kManifestGroupDir, file), &m);
    if (!s.ok()) {
      add(JoinPath(JoinPath(dir, kManifestGroupDir), file), s.ToString());
      continue;
    }
    manifests[m.name] = std::move(m);
  }

  // 2. Every referenced layer exists, is a regular file and is valid.
  std::set<std::string> referenced;
  std::map<std::string, std::string> used_by;  // layer -> a user, for messages
  for (const auto& [n, m] : manifests) {
    for (const auto& l : m.lowers) used_by.emplace(l, n);
    for (const auto& s : m.snapshots)
      for (const auto& l : s.lowers) used_by.emplace(l, n + "@" + s.name);
  }
  for (const auto& [file, user] : used_by) {
    referenced.insert(file);
    const std::string path = JoinPath(ldir, file);
    const std::string stub = filename::RemoteStubOf(file);
    if (!stub.empty() && env->Exists(JoinPath(ldir, stub))) referenced.insert(stub);
    auto st = env->Stat(path);
    if (!st.ok() && st.status().IsNotFound() && !stub.empty() && env->Exists(JoinPath(ldir, stub))) {
      // A remote lower with no local copy: its address is checked when it is
      // opened; its bytes live in the registry (and the block cache).
      ++rep.remote_layers;
      continue;
    }
    if (!st.ok()) {
      add(path, "missing (used by " + user + ")");
      continue;
    }
    if (!st->is_regular) {
      add(path, "not a regular file (used by " + user + ")");
      continue;
    }
    auto layer = OpenLayer(env, path, LayerOpenOptions{0});
    if (!layer.ok()) {
      add(path, layer.status().ToString());
      continue;
    }
    ++rep.layers;
    if (opts.verify_data) {
      Status s = layer.value()->CheckData();
      if (!s.ok()) add(path, s.ToString());
    }
  }

  // 3. Uppers: each claimed once and by no one as a lower layer, both
  // files present, journal replays cleanly.
  std::map<std::string, std::string> upper_owner;
  for (const auto& [n, m] : manifests) {
    if (m.upper.empty()) continue;
    referenced.insert(filename::UpperDataFile(m.upper));
    referenced.insert(filename::UpperJournalFile(m.upper));
    if (auto [it, fresh] = upper_owner.emplace(m.upper, n); !fresh) {
      add(JoinPath(vdir, filename::ManifestFile(n)),
          "upper " + m.upper + " is also the upper of " + it->second +
              ": two volumes would write one file (both are refused when the store opens; "
              "point one at its own upper or delete it)");
      continue;
    }
    if (auto it = used_by.find(filename::UpperDataFile(m.upper)); it != used_by.end()) {
      add(JoinPath(vdir, filename::ManifestFile(n)),
          "upper " + m.upper + " is also a lower layer of " + it->second +
              " (both are refused when the store opens)");
      continue;
    }
    const std::string base = JoinPath(ldir, m.upper);
    auto u = Upper::Open(env, base, m.size, /*read_only=*/!opts.repair);
    if (u.ok()) {
      ++rep.uppers;
      const uint64_t need = u.value()->DataBytesNeeded();
      const uint64_t have = u.value()->data_file()->Size();
      if (have < need) {
        add(Upper::DataPath(base), "holds " + std::to_string(have) +
                                       " bytes but the journal maps data up to byte " +
                                       std::to_string(need) +
                                       " (truncated): the ranges past its end are lost and read "
                                       "as errors (volume " + n + ")");
      }
      if (u.value()->torn_tail_bytes() > 0) {
        add(Upper::JournalPath(base),
            "torn tail of " + std::to_string(u.value()->torn_tail_bytes()) +
                " bytes after the last valid record (an interrupted commit)" +
                (opts.repair ? "; cut off" : ""),
            opts.repair);
      }
      continue;
    }
    if (u.status().IsCorruption() &&
        u.status().message().find("valid records follow") != std::string::npos) {
      bool fixed = false;
      std::string what = u.status().ToString();
      if (opts.repair) {
        auto dropped = Upper::CutJournalAtDamage(env, base);
        fixed = dropped.ok() && Upper::Open(env, base, m.size).ok();
        if (dropped.ok()) what += "; cut the journal, dropping " + std::to_string(dropped.value()) +
                                  " records (the writes they describe are lost)";
      }
      add(Upper::JournalPath(base), what, fixed);
      continue;
    }
    add(base, u.status().ToString() + " (volume " + n + ")");
  }

  // 4. Files nothing references.
  OVBD_ASSIGN_OR_RETURN(auto lfiles, env->ListDir(ldir));
  std::string held_back;
  for (const auto& u : unreadable) held_back += (held_back.empty() ? "" : ", ") + u;
  for (const auto& f : lfiles) {
    if (referenced.count(f)) continue;
    const std::string path = JoinPath(ldir, f);
    if (!unreadable.empty()) {
      add(path, std::string("not referenced by any readable manifest (") +
                    filename::KindName(filename::Classify(f)) + "); kept: " + held_back +
                    " cannot be read and may reference it. Fix or remove that manifest, then "
                    "check again");
      continue;
    }
    bool fixed = opts.repair && env->Remove(path).ok();
    add(path, std::string("not referenced by any volume or snapshot (") +
                  filename::KindName(filename::Classify(f)) + ")",
        fixed);
  }
  if (opts.repair) (void)env->SyncDir(ldir);
  return rep;
}

}  // namespace ovbd
