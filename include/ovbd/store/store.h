// Store: a directory of volumes, their snapshots and the layer files they
// share. The layout and every file name are in ovbd/store/filename.h.
//
// Every change is one atomic manifest replacement (write temp, fsync, rename,
// fsync dir), preceded by whatever new files it needs and followed by garbage
// collection of files no manifest references. A crash at any point leaves
// the old or the new manifest, so opening the store is the whole recovery.
//
// Concurrency. Metadata (List, Lookup, Acquire of an open volume, status)
// takes only the state lock `mu_`, which guards in-memory tables and is
// never held across I/O. Commands are ordered per volume by a command lock
// per volume name; the long part of a command (copying and hashing an
// import, writing a merged layer, sealing an upper) runs outside the state
// lock on inputs that cannot change under it, and its result is committed
// in a short step that re-checks what it relied on. Files in flight are
// pinned so garbage collection leaves them alone. Merges run as jobs on the
// store's JobRunner, which also runs the periodic flusher.
//
// Lock order (docs/ARCHITECTURE.md): group_mu_ -> volume command locks (in
// name order) -> gc_mu_ -> mu_ -> a Volume's locks -> an Upper's locks.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "ovbd/io/env.h"
#include "ovbd/io/job_runner.h"
#include "ovbd/io/mutex.h"
#include "ovbd/layer/layer_open.h"
#include "ovbd/layer/zfile.h"
#include "ovbd/remote/remote_blobs.h"
#include "ovbd/store/manifest.h"
#include "ovbd/store/volume_locks.h"
#include "ovbd/volume/volume.h"

namespace ovbd {

struct StoreOptions {
  bool read_only = false;
  LayerOpenOptions layer;
  // Commit dirty volumes this often (0: only on flush); the daemon sets it.
  unsigned flush_interval_ms = 0;
  // Worker threads for background jobs (merges, the flusher).
  size_t job_threads = 2;
  // Start the job threads in Open. A daemon that forks after opening the
  // store (threads do not survive fork) says false and calls StartJobs().
  bool start_jobs = true;
  // Told about a periodic flush that failed (the daemon logs it).
  std::function<void(const Status&)> on_flush_error;
  // Resume the hydrations the manifests say are running (the daemon does;
  // a tool opening the store for one command does not).
  bool resume_hydration = false;
  // The rate limit of a hydration started without one, in bytes per
  // second (0: unlimited). The job also backs off while foreground I/O
  // runs, so this bounds its impact on an idle-looking but busy disk.
  uint64_t default_hydrate_rate = uint64_t{64} << 20;
  // A failed hydration step is retried after this, doubled per failure,
  // five times; then the hydration stops in `error`.
  unsigned hydrate_backoff_ms = 200;
  // Accept a store whose directories belong to another user who is not
  // root. Off by default: that user could otherwise steer what this
  // process (often root) creates and removes (docs/RELIABILITY.md).
  bool allow_foreign_owner = false;
  // Reads layers that live in a registry or at a URL (their cache, the
  // registry client). Null: a store whose lowers are all local; a remote
  // lower then fails to open with a message saying so.
  std::shared_ptr<remote::RemoteBlobs> remote;
};

// A volume's hydration as status shows it.
struct HydrateInfo {
  HydrateState state = HydrateState::kIdle;
  uint64_t copied = 0;   // bytes copied into the upper so far (this run)
  uint64_t total = 0;    // copied + what is left to copy
  uint64_t rate = 0;     // bytes per second, recently
  uint64_t limit = 0;    // bytes per second; 0: unlimited
  uint64_t eta_s = 0;    // seconds left at the current rate (0: unknown)
  uint64_t retries = 0;  // failed steps retried
  std::string error;     // why it stopped (kError)
};

enum class HydrateAction { kStart, kPause, kResume, kCancel, kRate };

struct VolumeInfo {
  std::string name;        // "vm1" or "vm1@snap"
  bool is_snapshot = false;
  uint64_t size = 0;
  FileAttrs attrs;
  std::vector<std::string> lowers;
  std::string upper;
  size_t open_handles = 0;
  uint64_t allocated = 0;  // bytes the upper takes on disk (Lookup only)
  // Of those, what the open upper reserved ahead of writes and holds
  // nothing yet (Upper::PreallocatedBytes); 0 for a volume not open.
  // FillPreallocated only.
  uint64_t preallocated = 0;
  std::string failed;      // why the open volume stopped taking writes; empty if it did not
  HydrateInfo hydrate;     // volumes only
};

// A manifest that could not be used; the rest of the store works without it.
struct FailedManifest {
  std::string name;  // the volume name its file claims ("NAME.json")
  std::string why;
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
  // Stops background jobs (cancelling them) and commits every dirty volume.
  ~Store();
  // Starts the job threads and the periodic flusher; idempotent.
  void StartJobs() EXCLUDES(mu_);

  const std::string& dir() const { return dir_; }
  bool read_only() const { return opts_.read_only; }
  Env* env() const { return env_; }

  // Every volume and snapshot, sorted by name.
  std::vector<VolumeInfo> List() const EXCLUDES(mu_);
  Result<VolumeInfo> Lookup(const std::string& name) const EXCLUDES(mu_);
  // Sets `preallocated` of the open volumes in `vols` (List or Lookup
  // results). For status reports only: it walks each such volume's map
  // over its reserved granules, which List and Lookup, asked on every
  // getattr and permission check, do not.
  void FillPreallocated(std::vector<VolumeInfo>* vols) const EXCLUDES(mu_);
  // Manifests that were refused when the store was opened, with the reason.
  std::vector<FailedManifest> FailedManifests() const EXCLUDES(mu_);
  // Background jobs, running and recently ended.
  std::vector<JobInfo> Jobs() const;

  // Creates a volume over existing layer files (bottom first; copied into
  // the store, deduplicated by content digest). size 0: the top layer's size.
  Status CreateVolume(const std::string& name, uint64_t size,
                      const std::vector<std::string>& layer_paths, const FileAttrs& attrs)
      EXCLUDES(mu_);
  // Creates a volume over the layers of an image in a registry
  // ("registry://HOST[:PORT]/REPO:TAG" or "...@sha256:DIGEST"). The layers
  // stay remote and are read lazily through the block cache (their
  // addresses kept in layers/sha256-HEX.remote; a layer another image
  // brought is read from this image's registry from now on), unless
  // `pull`: then each is downloaded now, checked against its digest, and
  // stored locally. Layers already stored locally are used as they are.
  Status CreateFromImage(const std::string& name, const std::string& image, bool pull,
                         const FileAttrs& attrs, const ImportOptions& opts = {}) EXCLUDES(mu_);
  // Imports a raw disk image as the single lower layer of a new volume.
  Status ImportRaw(const std::string& name, const std::string& raw_path,
                   const ImportOptions& opts, const FileAttrs& attrs) EXCLUDES(mu_);
  Status Resize(const std::string& name, uint64_t new_size) EXCLUDES(mu_);
  Status SetAttrs(const std::string& name, const FileAttrs& attrs) EXCLUDES(mu_);

  // Snapshots, clones, deletion.
  Status Snapshot(const std::string& vol, const std::string& snap) EXCLUDES(mu_);
  Status SnapshotAll(const std::string& snap) EXCLUDES(mu_);
  // The clone has the source's attributes; with `owner` (uid, gid), it
  // belongs to that user from its first manifest on.
  Status Clone(const std::string& src_snapshot, const std::string& new_vol,
               std::optional<std::pair<uint32_t, uint32_t>> owner = std::nullopt) EXCLUDES(mu_);
  // Deletes, collects the garbage, then merges layers that can now be
  // merged (as a job, waited for: the space is back when Delete returns).
  Status Delete(const std::string& name) EXCLUDES(mu_);

  // Hydration (hydrate.cc): copies what `vol` reads from its lower layers
  // into its upper in the background; when everything is there the lowers
  // leave its manifest in one atomic change and layers nothing else uses
  // are collected. kStart and kResume start or resume (kNoSpace when the
  // store's filesystem cannot hold what is left to copy); kPause stops the
  // job and remembers it; kCancel stops and forgets it; kRate sets the
  // limit (bytes/s, 0: unlimited) and starts an idle or failed one. `rate`
  // with kStart/kResume sets the limit too. Returns the resulting state.
  Result<HydrateState> Hydrate(const std::string& vol, HydrateAction action,
                               std::optional<uint64_t> rate = std::nullopt) EXCLUDES(mu_);
  // kStart for every volume that has lower layers; the names started.
  Result<std::vector<std::string>> HydrateAll(std::optional<uint64_t> rate = std::nullopt)
      EXCLUDES(mu_);

  // Open volumes are shared and reference-counted by their users (FUSE
  // handles). Delete refuses a volume with open handles.
  Result<std::shared_ptr<Volume>> Acquire(const std::string& name) EXCLUDES(mu_);
  void Release(const std::string& name) EXCLUDES(mu_);

  // Commits every dirty volume (the periodic flusher and unmount call it),
  // then checks that no open layer file changed behind our back.
  Status FlushAll() EXCLUDES(mu_);
  // Re-stats every open layer file; one whose size or mtime changed is
  // marked failed (its ranges then read as errors, never as garbage).
  Status VerifyLayerFiles() EXCLUDES(mu_);
  // Removes files under layers/ that no manifest references.
  Status CollectGarbage(std::vector<std::string>* removed = nullptr) EXCLUDES(mu_);

  // Human-readable status of one volume or all.
  std::string StatusText(const std::string& name = "") const EXCLUDES(mu_);
  // What the block cache counted for each remote blob it holds or read
  // since it was opened (nothing when the store has no remote layers).
  std::vector<remote::BlobStats> RemoteCacheStats() const;

  std::string LayerPath(const std::string& file) const;
  // The bytes of lower layer `file` as stored (not decompressed): the local
  // file, or for a remote lower its blob, read through the cache. What push
  // uploads.
  Result<std::shared_ptr<const ReadableFile>> OpenLayerBytes(const std::string& file) EXCLUDES(mu_);

 private:
  Store(Env* env, std::string dir, StoreOptions opts);
  // The store's directories are real directories (no symlinks) owned by us
  // or root (unless allowed otherwise).
  static Status CheckLayout(Env* env, const std::string& dir, const StoreOptions& opts);

  // --- manifests (manifests.cc)
  Status LoadManifests() EXCLUDES(mu_);
  // Refuses volumes that claim another's upper (two writers of one file).
  void RefuseSharedUppers() REQUIRES(mu_);
  // Writes `m` (generation bumped) and records it. Caller holds m.name's
  // command lock.
  Status WriteManifest(Manifest m) EXCLUDES(mu_);
  // Writes a manifest file as it is (manifests_ untouched).
  Status WriteManifestFile(const Manifest& m, bool* renamed) EXCLUDES(mu_);
  Status RemoveManifest(const std::string& name) EXCLUDES(mu_);
  std::string ManifestPath(const std::string& name) const;
  Result<std::pair<const Manifest*, const SnapshotRecord*>> Resolve(const std::string& name) const
      REQUIRES(mu_);
  Result<Manifest> ManifestCopy(const std::string& vol) const EXCLUDES(mu_);
  // A copy of what `name` resolves to: its volume's manifest, and the
  // snapshot record when `name` is VOL@SNAP.
  struct Resolved {
    Manifest manifest;
    std::optional<SnapshotRecord> snapshot;
  };
  Result<Resolved> ResolveCopy(const std::string& name) const EXCLUDES(mu_);
  Status CheckWritable() const;
  Status EnsureNameFree(const std::string& name) const REQUIRES(mu_);

  // --- commands: the group lock and per-volume ordering (commands.cc)
  // Holds group_mu_ shared (exclusive for `exclusive`) and the command
  // locks of `vols`, after finishing a manifest group left pending.
  class CommandScope;
  Status FinishPendingGroup() EXCLUDES(mu_);
  // A name reserved for a volume being created: no other command may take
  // it, and the name is still free for List/Lookup until the commit.
  class Reservation;
  Result<std::unique_ptr<Reservation>> Reserve(const std::string& name) EXCLUDES(mu_);

  // --- pins: files in flight that garbage collection must keep (gc.cc)
  class Pin;
  std::unique_ptr<Pin> PinFiles(std::vector<std::string> files) EXCLUDES(mu_);
  Status CollectGarbageNow(std::vector<std::string>* removed) EXCLUDES(mu_, gc_mu_);

  // --- layer files shared by every stack that uses them (layer_cache.cc)
  Result<std::shared_ptr<lsmt::Layer>> OpenLayerFile(const std::string& file) EXCLUDES(mu_);
  void CacheLayer(const std::string& file, std::shared_ptr<lsmt::Layer> layer) EXCLUDES(mu_);

  // --- remote layers (remote_layers.cc)
  // Opens lower `file` from the address its stub names (no local copy).
  Result<std::shared_ptr<lsmt::Layer>> OpenRemoteLayer(const std::string& file) EXCLUDES(mu_);
  // The address and size the stub of remote lower `file` names.
  Result<std::pair<remote::BlobRef, uint64_t>> LocateRemote(const std::string& file) EXCLUDES(mu_);
  // Writes the stub of a remote layer (atomically): a new one, or over one
  // naming another address (the newest address given is where the layer is
  // read from). Corruption if the existing stub gives the blob another size.
  Status WriteRemoteStub(const std::string& file, const remote::BlobRef& ref, uint64_t size)
      EXCLUDES(mu_);

  // --- import (import.cc)
  // Copies a layer file into layers/ under its content digest (pinned by
  // the returned pin until the caller's manifest references it).
  Result<std::string> ImportLayerFile(const std::string& path, std::vector<std::unique_ptr<Pin>>* pins)
      EXCLUDES(mu_);
  // The last step of creating a volume over lowers already in place (and
  // pinned): a fresh upper, then the manifest `m` (name, size, lowers,
  // attrs set) under the name's command lock; the upper goes if that fails.
  Status CommitNewVolume(Manifest m, const std::string& parent_uuid,
                         std::vector<std::unique_ptr<Pin>>* pins) EXCLUDES(mu_);
  // The same from an open file; with `expect_hex`, a content whose digest
  // differs is refused (kCorruption) and nothing is kept.
  Result<std::string> ImportLayerFrom(const ReadableFile& src, const std::string& what,
                                      const std::string& expect_hex,
                                      std::vector<std::unique_ptr<Pin>>* pins,
                                      const ImportOptions& opts = {}) EXCLUDES(mu_);

  // --- the open-volume table (open_volumes.cc)
  Result<std::shared_ptr<Volume>> OpenVolume(const std::string& name, bool take_handle)
      EXCLUDES(mu_);

  // --- snapshots (snapshot.cc)
  Status SnapshotCheck(const std::string& vol, const std::string& snap) EXCLUDES(mu_);
  struct FreshUpper {
    std::string id;
    std::unique_ptr<Upper> upper;
    std::unique_ptr<Pin> pin;
  };
  Result<FreshUpper> PrepareUpper(const Manifest& m, Volume* v) EXCLUDES(mu_);
  // A snapshot's switch of one volume to a fresh upper, made while writes
  // were quiesced, until it is durable.
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
    std::unique_ptr<Pin> pin;             // the fresh upper's files
  };
  // Inside WithWritesQuiesced: no I/O, no store lock.
  Result<PendingSwitch> SwitchQuiesced(Manifest m, std::shared_ptr<Volume> v,
                                       const std::string& snap, uint64_t now_ns, FreshUpper fresh);
  Status SealSwitch(PendingSwitch& p);
  void FinishSwitch(PendingSwitch& p) EXCLUDES(mu_);
  // The switch cannot be made durable: undo it if allowed and no write
  // reached the fresh upper, else fail the volume. Returns `cause`.
  Status AbandonSwitch(PendingSwitch& p, Status cause, bool may_undo);

  // --- clone, delete, resize (lifecycle.cc)
  Status RemoveCreatedUpper(const std::string& id);

  // --- merging (merge.cc)
  // Merges adjacent layers X,Y that are always used together (every stack
  // holding X has Y right above it and vice versa) when Y hides data of X,
  // so deleting snapshots frees that data. Runs until nothing is left to
  // merge or the job is cancelled. Returns the number of merges.
  Result<int> MergeHidden(Job* job) EXCLUDES(mu_);
  // Merges the lowest pair of `vol`'s lowers that only `vol`'s stacks use,
  // regardless of hidden data (to stay below 255 layers). The caller holds
  // vol's command lock; only vol's manifest is rewritten.
  Result<int> MergeForVolume(const std::string& vol) EXCLUDES(mu_);
  struct MergePlan {
    std::string x, y;
  };
  // Writes the merged layer of x and y; returns its file name (pinned).
  Result<std::string> WriteMerged(const MergePlan& plan, Job* job, std::unique_ptr<Pin>* pin)
      EXCLUDES(mu_);
  // Replaces x,y by xy in `vol`'s manifest where they are adjacent, and in
  // the open volumes it names. Caller holds vol's command lock.
  Status InstallMerged(const std::string& vol, const MergePlan& plan, const std::string& xy)
      EXCLUDES(mu_);
  Status InstallLowers(const std::string& name, const std::vector<std::string>& lowers)
      EXCLUDES(mu_);

  // --- hydration (hydrate.cc)
  class Hydration;
  class Hydrator;
  // Starts the job of `h` (one already running keeps going).
  void StartHydrationJob(const std::shared_ptr<Hydration>& h) EXCLUDES(mu_);
  // The persisted part of a hydration: `vol`'s manifest with `rec`.
  // Caller holds vol's command lock.
  Status RecordHydrate(const std::string& vol, const HydrateRecord& rec) EXCLUDES(mu_);
  // The job's last step: when `st` (the volume's stack) reads nothing from
  // its lowers any more, makes the upper durable, drops the lowers from the
  // manifest and the open volume, and collects the garbage. Returns false
  // when the stack changed or a gap remains (the job scans again).
  Result<bool> FinishHydration(const std::shared_ptr<Hydration>& h, uint64_t epoch,
                               const std::shared_ptr<Volume>& v,
                               const std::shared_ptr<const Stack>& st) EXCLUDES(mu_);
  // The job stopped for good on an error: recorded in the manifest.
  void FailHydration(const std::shared_ptr<Hydration>& h, uint64_t epoch, const Status& why)
      EXCLUDES(mu_);
  HydrateInfo HydrateInfoOf(const std::string& vol, const Manifest& m) const REQUIRES(mu_);
  void ResumeHydrations() EXCLUDES(mu_);

  // --- status (status.cc)
  std::string StatusLine(const VolumeInfo& v) const;

  Env* env_;
  std::string dir_;
  StoreOptions opts_;
  // Paths beneath dir_ never follow a symlink; released last.
  std::unique_ptr<Confinement> confinement_;
  std::unique_ptr<FileLock> lock_;
  mutable Mutex jobs_mu_;  // guards the creation of jobs_ only
  std::unique_ptr<JobRunner> jobs_;  // set once; read without a lock after
  JobRunner* Runner() EXCLUDES(jobs_mu_);

  // Exclusive for `snapshot --all` and for finishing a pending manifest
  // group (both touch every manifest); shared for every other command.
  SharedMutex group_mu_ ACQUIRED_BEFORE(gc_mu_, mu_);
  VolumeLocks vlocks_;  // per volume name, taken after group_mu_, before gc_mu_
  // Serialises garbage collection with the one step that may adopt an
  // existing file (an import finding its digest already stored).
  Mutex gc_mu_ ACQUIRED_BEFORE(mu_);
  // Only one hidden-data merge at a time (they would pick the same pairs).
  Mutex merge_mu_;

  mutable Mutex mu_;
  CondVar changed_{&mu_};  // handles released, an open finished
  std::map<std::string, Manifest> manifests_ GUARDED_BY(mu_);          // by volume name
  std::map<std::string, std::string> failed_manifests_ GUARDED_BY(mu_);  // name -> why
  bool manifests_unreadable_ GUARDED_BY(mu_) = false;  // GC must not trust the set
  std::map<std::string, std::shared_ptr<Volume>> open_ GUARDED_BY(mu_);  // by full name
  std::set<std::string> opening_ GUARDED_BY(mu_);      // being opened outside the lock
  std::map<std::string, size_t> handles_ GUARDED_BY(mu_);               // by full name
  struct CachedLayer {
    std::weak_ptr<lsmt::Layer> layer;
    FileInfo identity;  // size and mtime at open
    bool remote = false;  // read from its address: no local file to re-stat
  };
  std::map<std::string, CachedLayer> layer_cache_ GUARDED_BY(mu_);
  std::multiset<std::string> pinned_ GUARDED_BY(mu_);
  std::set<std::string> reserved_ GUARDED_BY(mu_);
  bool group_pending_ GUARDED_BY(mu_) = false;  // a committed manifest group is not yet applied
  std::map<std::string, std::shared_ptr<Hydration>> hydrations_ GUARDED_BY(mu_);  // by volume
};

}  // namespace ovbd
