// FaultInjectionEnv: an Env for crash-consistency and error-path tests.
// Part of the testing library (ovbd_testing), which no production target links.
//
// It wraps a real Env (normally Env::Default(), working under a temp dir) and
// forwards every call, while remembering what a machine crash could still
// take away:
//  - for each file opened with OpenRW, every WriteAt / PunchHole / Truncate
//    since that file's last Sync(), with the bytes and size they replaced;
//  - every file creation (OpenRW create=true), Rename, Remove, CreateDir and
//    RemoveDir since the last SyncDir() of the directory holding the result
//    (for Rename: the target's directory). A Rename over an existing file and
//    a Remove keep a copy of the old file until that directory is synced.
//
// SimulatePowerLoss() then rewrites the real files into a state a power cut
// could have left, and a test reopens them with the same env to check recovery.
//
// Separately, the env can model the *process* dying: CrashAt() (at a named
// Env::CrashPoint) or CrashAfterOps() put it in the crashed state, where every
// call on the env and on every object it handed out fails with EIO and
// touches nothing. Then either SimulatePowerLoss() (machine crash) or
// Revive() (process crash only: the kernel keeps all written data).
//
// File objects handed out before a crash, a power loss or a Revive() are dead
// for good: every call on them fails with EIO. Locks taken through the env are
// released when it crashes (the dead process's locks go away).
//
// Limits (this is test infrastructure): one mutex serializes all mutating
// calls; paths are compared after lexical normalization (make them absolute or
// always relative to the same working directory); changes made to the tree by
// anything other than this env are not tracked; files opened through the env
// report NativeFd() == -1 so that every read goes through the fault filters
// (CheckRange and NextData are forwarded, as metadata calls).
// The objects handed out may outlive the env (they share its state), but the
// base Env must outlive them all.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ovbd/io/env.h"

namespace ovbd {

// What SimulatePowerLoss() keeps of the data written since the last Sync().
enum class PowerLossMode {
  // Every unsynced write, punch and truncate is reverted (newest first); each
  // file gets back the contents and size it had at its last Sync().
  kDropAll,
  // Each 512-byte sector touched since the last Sync() independently ends up
  // as one of the versions it went through (the synced one, or the result of
  // any later write to it): a sector is never a mix of two versions. The file
  // size is likewise one of the sizes the file had since its last Sync().
  kRandomSectors,
  // As kDropAll, except that the most recent unsynced WriteAt (over all files)
  // keeps a random strict prefix of its sectors: a write torn by the power cut.
  kTornLast,
};

// Which operations FailWith() applies to; combine with '|'.
enum class FaultFilter : uint32_t {
  kReads = 1u << 0,      // ReadAt on any file from the env
  kWrites = 1u << 1,     // RWFile::WriteAt, RWFile::Truncate
  kSyncs = 1u << 2,      // RWFile::Sync, Env::SyncDir
  kPunch = 1u << 3,      // RWFile::PunchHole
  kOpen = 1u << 4,       // OpenReadable, OpenRW (with or without create), LockFile
  kNamespace = 1u << 5,  // Rename, Remove, CreateDir, RemoveDir
  kMetadata = 1u << 6,   // Stat, ListDir, SpaceOf, AllocatedBytes, CheckRange, NextData
  kDirSync = 1u << 7,    // Env::SyncDir only (kSyncs covers it too)
  kPrealloc = 1u << 8,   // RWFile::Preallocate (changes no content, never undone by a crash)
  kAll = 0xffffffffu,
};
constexpr FaultFilter operator|(FaultFilter a, FaultFilter b) {
  return static_cast<FaultFilter>(static_cast<uint32_t>(a) | static_cast<uint32_t>(b));
}

class FaultInjectionEnv : public EnvWrapper {
 public:
  // The granularity of atomic writes assumed by SimulatePowerLoss().
  static constexpr uint64_t kSectorSize = 512;

  // `seed` drives every random choice (sector versions, tear points, failure
  // probabilities), so a run is reproducible.
  explicit FaultInjectionEnv(Env* base = Env::Default(), uint64_t seed = 0);
  ~FaultInjectionEnv() override;
  FaultInjectionEnv(const FaultInjectionEnv&) = delete;
  FaultInjectionEnv& operator=(const FaultInjectionEnv&) = delete;

  // --- Env ---
  Result<std::unique_ptr<ReadableFile>> OpenReadable(const std::string& path) override;
  Result<std::unique_ptr<RWFile>> OpenRW(const std::string& path, bool create) override;
  Status Rename(const std::string& from, const std::string& to) override;
  Status Remove(const std::string& path) override;
  Status CreateDir(const std::string& path) override;
  Status RemoveDir(const std::string& path) override;
  Status SyncDir(const std::string& path) override;
  Result<std::vector<std::string>> ListDir(const std::string& path) override;
  Result<FileInfo> Stat(const std::string& path) override;
  Result<std::unique_ptr<FileLock>> LockFile(const std::string& path) override;
  Result<FsSpace> SpaceOf(const std::string& path) override;
  // NowMicros and Confine are forwarded unchanged (EnvWrapper).
  // Records the name (see crash_points_seen()) and crashes if it is armed.
  Status CrashPoint(std::string_view name) override;

  // --- Machine crash ---

  // Reverts everything not yet durable, as described at PowerLossMode, then
  // undoes (newest first) the creations, renames, removals and directory
  // changes whose directory was not synced since: created files and
  // directories are deleted (with their contents), renamed files move back
  // (and a file they replaced comes back), removed files come back. Works in
  // the crashed state too. Afterwards nothing is pending, the crashed state
  // and every armed crash are cleared, and all objects handed out before are
  // dead. FailWith() rules stay in force. Returns the first error met while
  // rewriting the real files (it still tries the rest).
  Status SimulatePowerLoss(PowerLossMode mode = PowerLossMode::kDropAll);

  // --- Process crash ---

  // Arms a crash at the nth call (counted from now) of CrashPoint(name): that
  // call returns IOError("crash at <name>", EIO) and the env is crashed.
  // Re-arming a name replaces its count; several names may be armed at once.
  void CrashAt(std::string name, int nth = 1);
  // Arms a crash at the (n+1)th mutating operation from now (WriteAt, Sync,
  // PunchHole, Truncate, Rename, Remove, CreateDir, RemoveDir, SyncDir,
  // OpenRW with create): the first n succeed, the next one fails with EIO
  // without taking effect (see SetTearOnCrash) and the env is crashed.
  void CrashAfterOps(uint64_t n);
  // Crashes now, between two operations (none is torn): the process dies at
  // this instant, whatever its other threads were about to do. Unlike
  // CrashAfterOps(0), which crashes at the next mutating operation and so
  // lets a busy process change its state (and what it would answer) until
  // then. No effect when already crashed.
  void CrashNow();
  // When on, a WriteAt that is the crashing operation of CrashAfterOps()
  // writes a random strict prefix of its sectors (possibly none) before
  // failing. Off by default.
  void SetTearOnCrash(bool tear);
  // Disarms every CrashAt() and CrashAfterOps() without crashing.
  void DisarmCrashes();
  // Leaves the crashed state without reverting anything: models a process
  // crash where the kernel keeps every completed write (the unsynced ones
  // stay pending for a later SimulatePowerLoss). Old objects stay dead and
  // armed crashes are cleared.
  void Revive();
  bool crashed() const;
  // Runs `fn` each time CrashPoint(name) is passed without crashing (on the
  // caller's thread, after the env's own lock is dropped): lets a test act
  // at an exact step of a command, e.g. write to a volume mid-snapshot.
  // An empty fn removes the hook.
  void OnCrashPoint(std::string name, std::function<void()> fn);

  // Names passed to CrashPoint() while not crashed, in call order (repeats
  // kept), since construction or the last ClearCrashPointsSeen(). Run an
  // operation once, then arm CrashAt(name, k) for each entry to crash there.
  std::vector<std::string> crash_points_seen() const;
  void ClearCrashPointsSeen();
  // Mutating operations attempted (including failed and crashing ones) since
  // construction; they are the unit of CrashAfterOps().
  uint64_t mutating_ops() const;

  // --- Errors while running ---

  // From now on, operations selected by `filter` fail with IOError(err)
  // (ENOSPC and EDQUOT become kNoSpace, as Status maps them) with the given
  // probability, without touching the real file. With `path_substr`, only
  // operations on a path containing it (either path of a Rename; a file's
  // path as opened). Rules accumulate; the first that fires wins.
  void FailWith(int err, FaultFilter filter, double probability = 1.0);
  void FailWith(int err, FaultFilter filter, std::string path_substr, double probability = 1.0);
  void ClearFailures();

  // Number of files with unsynced data changes (for tests of the env itself).
  size_t unsynced_file_count() const;

  struct Impl;  // implementation detail, shared with the objects handed out

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace ovbd
