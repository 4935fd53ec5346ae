// Store: a directory of volumes, their snapshots and the layer files they share.
//
//   STORE/ovbd-store.json     store marker and format version
//   STORE/lock                flock'ed by whoever has the store open for writing
//   STORE/volumes/NAME.json   one manifest per volume (snapshots inside it)
//   STORE/layers/FILE         layer files: imported layers (sha256-HEX.layer),
//                             uppers (ID.data + ID.jnl) and sealed uppers (ID.data)
//
// Every change is one atomic manifest replacement (write temp, fsync, rename,
// fsync dir), preceded by whatever new files it needs and followed by garbage
// collection of files no manifest references. A crash at any point leaves
// the old or the new manifest, so opening the store is the whole recovery.
#pragma once

#include <condition_variable>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "ovbd/io/env.h"
#include "ovbd/layer/layer_open.h"
#include "ovbd/layer/zfile.h"
#include "ovbd/store/manifest.h"
#include "ovbd/volume/volume.h"

namespace ovbd {

struct StoreOptions {
  bool read_only = false;
  LayerOpenOptions layer;
};

struct VolumeInfo {
  std::string name;        // "vm1" or "vm1@snap"
  bool is_snapshot = false;
  uint64_t size = 0;
  FileAttrs attrs;
  std::vector<std::string> lowers;
  std::string upper;
  size_t open_handles = 0;
  uint64_t allocated = 0;  // bytes the upper takes on disk (Lookup only)
  std::string failed;      // why the open volume stopped taking writes; empty if it did not
};

struct ImportOptions {
  std::optional<zfile::Options> compress;  // wrap the layer in a ZFile
  std::function<void(const char* stage, uint64_t done, uint64_t total)> progress;
};

class Store {
 public:
  static Status Init(Env* env, const std::string& dir);
  static Result<std::unique_ptr<Store>> Open(Env* env, const std::string& dir,
                                             const StoreOptions& opts = {});
  ~Store();

  const std::string& dir() const { return dir_; }
  bool read_only() const { return opts_.read_only; }
  Env* env() const { return env_; }

  // Every volume and snapshot, sorted by name.
  std::vector<VolumeInfo> List() const;
  Result<VolumeInfo> Lookup(const std::string& name) const;

  // Creates a volume over existing layer files (bottom first; copied into
  // the store, deduplicated by content digest). size 0: the top layer's size.
  Status CreateVolume(const std::string& name, uint64_t size,
                      const std::vector<std::string>& layer_paths, const FileAttrs& attrs);
  // Imports a raw disk image as the single lower layer of a new volume.
  Status ImportRaw(const std::string& name, const std::string& raw_path,
                   const ImportOptions& opts, const FileAttrs& attrs);
  Status Resize(const std::string& name, uint64_t new_size);
  Status SetAttrs(const std::string& name, const FileAttrs& attrs);

  // Snapshots, clones, deletion.
  Status Snapshot(const std::string& vol, const std::string& snap);
  Status SnapshotAll(const std::string& snap);
  Status Clone(const std::string& src_snapshot, const std::string& new_vol);
  Status Delete(const std::string& name);

  // Open volumes are shared and reference-counted by their users (FUSE
  // handles). Delete refuses a volume with open handles.
  Result<std::shared_ptr<Volume>> Acquire(const std::string& name);
  void Release(const std::string& name);

  // Commits every dirty volume (the periodic flusher and unmount call it),
  // then checks that no open layer file changed behind our back.
  Status FlushAll();
  // Re-stats every open layer file; one whose size or mtime changed is
  // marked failed (its ranges then read as errors, never as garbage).
  Status VerifyLayerFiles();
  // Removes files under layers/ that no manifest references.
  Status CollectGarbage(std::vector<std::string>* removed = nullptr);

  // Human-readable status of one volume or all.
  std::string StatusText(const std::string& name = "") const;

  std::string LayerPath(const std::string& file) const;

 private:
  Store(Env* env, std::string dir, StoreOptions opts);
  Status LoadManifests();
  Status WriteManifest(Manifest m);
  Status RemoveManifest(const std::string& name);
  Result<std::shared_ptr<lsmt::Layer>> OpenLayerFile(const std::string& file);
  Result<std::string> ImportLayerFile(const std::string& path);
  Result<std::shared_ptr<Volume>> OpenVolumeLocked(const std::string& name);
  Status SnapshotCheckLocked(const std::string& vol, const std::string& snap);
  struct FreshUpper {
    std::string id;
    std::unique_ptr<Upper> upper;
  };
  Result<FreshUpper> PrepareUpperLocked(const std::string& vol, Volume* v);
  // A snapshot's switch of one volume to a fresh upper, made while writes
  // were quiesced, until it is durable (snapshot.cc).
  struct PendingSwitch {
    std::string vol;
    std::shared_ptr<Volume> v;
    std::shared_ptr<const Stack> before;  // the stack to put back on undo
    std::shared_ptr<Upper> old;           // frozen; becomes the sealed layer
    std::shared_ptr<Upper> fresh;
    uint64_t fresh_ops = 0;               // its operations at the switch
    std::shared_ptr<lsmt::Layer> layer;   // the frozen upper as a layer
    std::string old_id, sealed_file;
    Manifest manifest;                    // what the commit writes
  };
  Result<PendingSwitch> SwitchQuiescedLocked(const std::string& vol, std::shared_ptr<Volume> v,
                                             const std::string& snap, uint64_t now_ns,
                                             FreshUpper fresh);
  Status SealSwitch(PendingSwitch& p);
  void FinishSwitch(PendingSwitch& p);
  // The switch cannot be made durable: undo it if allowed and no write
  // reached the fresh upper, else fail the volume. Returns `cause`.
  Status AbandonSwitch(PendingSwitch& p, Status cause, bool may_undo);
  // Writes a manifest as it is (no generation bump, manifests_ untouched).
  Status WriteManifestFile(const Manifest& m, bool* renamed);
  Status CollectGarbageLocked(std::vector<std::string>* removed);
  // Merges adjacent layers X,Y that are always used together (every stack
  // holding X has Y right above it and vice versa) when Y hides data of X,
  // so deleting snapshots frees that data. With `for_volume` set, merges the
  // lowest such pair of that volume regardless of hidden data (to stay
  // below 255 layers). Returns the number of merges done.
  Result<int> MergeLayersLocked(const std::string& for_volume);
  Result<std::string> WriteMergedLayer(const std::string& x, const std::string& y);
  Status InstallLowers(const std::string& vol, const std::vector<std::string>& lowers);
  Result<std::pair<const Manifest*, const SnapshotRecord*>> Resolve(const std::string& name) const;
  Status CheckWritable() const;
  Status EnsureNameFree(const std::string& name) const;
  std::string ManifestPath(const std::string& name) const;
  std::string StatusLine(const VolumeInfo& v) const;

  Env* env_;
  std::string dir_;
  StoreOptions opts_;
  std::unique_ptr<FileLock> lock_;

  mutable std::mutex mu_;
  std::condition_variable released_;  // handles_ went down
  std::map<std::string, Manifest> manifests_;             // by volume name
  std::map<std::string, std::shared_ptr<Volume>> open_;   // by full name
  std::map<std::string, size_t> handles_;                 // by full name
  std::map<std::string, std::weak_ptr<lsmt::Layer>> layer_cache_;
  std::map<std::string, FileInfo> layer_identity_;  // size and mtime at open
  bool group_pending_ = false;  // a committed manifest group is not yet applied
};

}  // namespace ovbd
