// Volume: one disk image = a stack of read-only lower layers (merged into one
// flat index) under a writable upper. Byte-granular reads and writes; the
// upper only ever sees whole sectors (sub-sector edges are read-modify-written
// from the merged view).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <shared_mutex>
#include <string>
#include <vector>

#include "ovbd/io/env.h"
#include "ovbd/io/mutex.h"
#include "ovbd/layer/lsmt_layer.h"
#include "ovbd/layer/merged_index.h"
#include "ovbd/layer/upper.h"
#include "ovbd/volume/write_gate.h"

namespace ovbd {

// An immutable view of a volume's layers. Replaced as a whole (snapshot,
// merge); readers that hold one keep every file in it alive.
struct Stack {
  std::vector<std::shared_ptr<lsmt::Layer>> lowers;  // bottom first
  MergedIndex index;
  std::shared_ptr<Upper> upper;  // null for read-only snapshots

  static std::shared_ptr<Stack> Make(std::vector<std::shared_ptr<lsmt::Layer>> lowers,
                                     std::shared_ptr<Upper> upper);
  // `below` with `layer` added on top and a new upper; O(index), no re-sort.
  static std::shared_ptr<Stack> WithTop(const Stack& below, std::shared_ptr<lsmt::Layer> layer,
                                        std::shared_ptr<Upper> upper);
};

// Where the bytes of one piece of a read come from.
struct ReadPiece {
  uint64_t length = 0;
  const ReadableFile* file = nullptr;  // null: the piece reads zeros
  uint64_t file_offset = 0;
};

// A read resolved to pieces; holds the stack so the files stay open.
struct ReadPlan {
  std::shared_ptr<const Stack> stack;
  std::vector<ReadPiece> pieces;
  uint64_t length = 0;  // total bytes (already clipped to the volume size)
};

struct VolumeStats {
  uint64_t size = 0;
  size_t layers = 0;
  size_t index_segments = 0;
  UpperStats upper;
};

class Volume {
 public:
  // `upper` may be null: the volume is then read-only (a snapshot).
  Volume(std::string name, uint64_t size, std::vector<std::shared_ptr<lsmt::Layer>> lowers,
         std::shared_ptr<Upper> upper, bool read_only);
  ~Volume();

  const std::string& name() const { return name_; }
  uint64_t size() const { return size_.load(); }
  bool read_only() const { return read_only_; }

  // Resolves [off, off+len) (clipped to the size) into pieces.
  Result<ReadPlan> PlanRead(uint64_t off, uint64_t len) const;
  // Reads into buf; returns the number of bytes (short only at the end).
  Result<size_t> Read(uint64_t off, size_t len, char* buf) const;
  // Writes at any offset and length. Returns the bytes written: short when
  // the write crosses the end, kNoSpace when it starts at or past it.
  Result<size_t> Write(uint64_t off, const char* buf, size_t len);
  // Makes the range read zeros (fallocate PUNCH_HOLE / ZERO_RANGE) and frees
  // what the upper held there.
  Status Discard(uint64_t off, uint64_t len);
  // fsync: every write acknowledged before is durable when this returns.
  Status Flush();
  bool dirty() const;
  // Grows the volume. (The store persists the new size first.)
  Status Grow(uint64_t new_size);

  // Runs fn while no write, discard or flush is in flight and none can
  // start; reads continue. Used for snapshots and stack changes.
  Status WithWritesQuiesced(const std::function<Status()>& fn);
  // Installs a new stack; only inside WithWritesQuiesced.
  void InstallStack(std::shared_ptr<const Stack> stack);
  std::shared_ptr<const Stack> stack() const;

  // The metadata barrier. A snapshot switches the volume to a fresh upper
  // while writes are quiesced and lets writes resume before the switch is
  // durable (the seal's sync and the manifest's rename happen after). Until
  // then a flush must not return: what it would make durable lives in an
  // upper that recovery would not know. BeginCommit (inside
  // WithWritesQuiesced) holds back flushes; EndCommit releases them; Fail
  // ends the barrier for good when the switch could not be made durable
  // nor undone: writes and flushes then fail with `why` until the store is
  // reopened, which returns to the last durable state (nothing a flush
  // acknowledged is lost).
  void BeginCommit();
  void EndCommit();
  void Fail(Status why);
  // OK, or the error the volume failed with.
  Status health() const;

  VolumeStats Stats() const;
  // What the upper reserved ahead of writes and holds nothing yet
  // (Upper::PreallocatedBytes); 0 without an upper. No I/O.
  uint64_t PreallocatedBytes() const;

  // --- hydration: copying what the volume reads from its lowers into its
  // upper while it stays in use (the store's hydrate job drives it).
  //
  // Bytes of [off, off+len) (sector-aligned) that `st` reads from its
  // lowers' data because its upper holds nothing there: what hydrating the
  // range would copy. Holes and zeroed ranges of the lowers need no copy:
  // with no lowers left, a range the upper lacks reads zeros anyway.
  uint64_t BytesFromLowers(const Stack& st, uint64_t off, uint64_t len) const;
  // Copies those bytes of [off, off+len) (sector-aligned) from st's lowers
  // into its upper, in reads of whole pieces (ZFile decompressed and
  // checked), then Upper::Fill, which writes only what is still absent.
  // The fill happens inside the write gate and only while `st` is still
  // the volume's stack (a snapshot or merge installs another: then nothing
  // is written and the result is kBusy: read again from the new stack).
  // Returns the bytes written. Errors name the range and the layer.
  // HydrateRange is ReadForHydrate then FillHydrated; a caller that wants
  // the next range read while the last one is written calls them apart.
  Result<uint64_t> HydrateRange(const std::shared_ptr<const Stack>& st, uint64_t off,
                                uint64_t len, std::vector<char>* scratch = nullptr);

  // A range read from the lowers, waiting to be filled into the upper.
  struct HydrateChunk {
    struct Piece {
      uint64_t off, len;  // bytes, in the volume
      const lsmt::Layer* layer;
      uint64_t moff;  // bytes, in the layer file
    };
    std::shared_ptr<const Stack> st;  // the stack the pieces were read from
    std::vector<Piece> pieces;        // what st reads from its lowers, in order
    std::vector<char> buf;            // their bytes, from pieces.front().off
  };
  // The read half: what `st` reads from its lowers in [off, off+len), read
  // into *c (its buffer reused). Takes no lock of the volume's: the lowers
  // are immutable and `st` keeps them alive, so it may run on any thread
  // beside foreground I/O and the fill of an earlier chunk.
  Status ReadForHydrate(const std::shared_ptr<const Stack>& st, uint64_t off, uint64_t len,
                        HydrateChunk* c) const;
  // The write half: fills c's bytes into the upper where it is still
  // absent (foreground writes made meanwhile win), inside the write gate,
  // and only while c.st is still the volume's stack (else kBusy).
  Result<uint64_t> FillHydrated(const HydrateChunk& c);
  // While on, the ranges reads take from the lowers are noted for the
  // hydration job to copy next (copy-on-read), and foreground operations
  // are counted for its back-off.
  void SetCopyOnRead(bool on) { copy_on_read_.store(on, std::memory_order_relaxed); }
  bool copy_on_read() const { return copy_on_read_.load(std::memory_order_relaxed); }
  // Reads, writes and discards started while copy-on-read was on.
  uint64_t foreground_ops() const { return foreground_ops_.load(std::memory_order_relaxed); }
  // Bytes copied into the upper by HydrateRange.
  uint64_t hydrated_bytes() const { return hydrated_bytes_.load(std::memory_order_relaxed); }
  // The ranges (offset, length; sector-aligned) reads took from the lowers
  // since the last call, oldest first, adjacent ones joined; at most
  // kMaxReadRanges are kept.
  std::vector<std::pair<uint64_t, uint64_t>> TakeReadRanges();
  static constexpr size_t kMaxReadRanges = 4096;

 private:
  Status ReadAligned(const Stack& st, uint64_t off, uint64_t len, char* buf) const;
  // *from_lowers (if given) is set when a piece reads a lower's data.
  Status PlanAligned(const Stack& st, uint64_t off, uint64_t len, std::vector<ReadPiece>* out,
                     bool* from_lowers = nullptr) const;
  void NoteLowerRead(uint64_t off, uint64_t len) const EXCLUDES(cor_mu_);
  void CountForeground() const {
    if (copy_on_read_.load(std::memory_order_relaxed)) {
      foreground_ops_.fetch_add(1, std::memory_order_relaxed);
    }
  }
  Mutex& StripeFor(uint64_t byte_off) { return stripes_[(byte_off >> 12) % stripes_.size()]; }

  const std::string name_;
  std::atomic<uint64_t> size_;
  const bool read_only_;

  mutable Mutex stack_mu_;  // guards the pointer, not the stack
  std::shared_ptr<const Stack> stack_ GUARDED_BY(stack_mu_);

  WriteGate gate_;  // writes, discards, flushes and fills pass it; quiescing closes it

  // Hydration's view of foreground activity (copy-on-read on).
  std::atomic<bool> copy_on_read_{false};
  mutable std::atomic<uint64_t> foreground_ops_{0};
  std::atomic<uint64_t> hydrated_bytes_{0};
  mutable Mutex cor_mu_;  // leaf
  mutable std::vector<std::pair<uint64_t, uint64_t>> cor_ranges_ GUARDED_BY(cor_mu_);

  // Leaf lock, held only for the fields below. Flush holds it across the
  // upper's commit (so no barrier begins meanwhile); health() therefore
  // reads failed_flag_ first and takes it only for a failed volume.
  mutable Mutex commit_mu_;
  CondVar commit_cv_{&commit_mu_};
  bool commit_pending_ GUARDED_BY(commit_mu_) = false;
  Status failed_ GUARDED_BY(commit_mu_);
  std::atomic<bool> failed_flag_{false};  // failed_ is set (read without the lock)
  // Serialises read-modify-write of partial sectors that share a 4 KiB block.
  std::array<Mutex, 64> stripes_;
};

}  // namespace ovbd
