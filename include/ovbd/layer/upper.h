// Upper: a volume's writable, thin-provisioned copy-on-write layer.
//
// Two files (format in docs/FORMAT.md, "Upper layer"):
//  - NAME.data: a 4 KiB LSMT header, then every written sector *at its
//    virtual offset* (file offset 4096 + 512 * sector). The file is sparse:
//    only written ranges take space. Overwrites land in place, so the file
//    never grows from rewriting the same range.
//  - NAME.jnl: a header and an append-only sequence of checksummed 32-byte
//    records "sectors [o, o+n) now hold data / read zeros". Replaying them in
//    order rebuilds the sector-exact map. A torn or corrupt tail is dropped.
//    When the journal grows well past the size of the map it is rewritten
//    (compacted) as the minimal record list, atomically by rename.
//
// Ordering rule that makes crashes safe: a record is written to the journal
// only after the data file has been fdatasync'ed past the write it describes.
// Without a Commit() writes may be lost in a crash, but every sector then
// reads its old contents (the map never points at unsynced data) or, for
// in-place overwrites, whatever the disk kept of that sector: old or new.
//
// Sealing appends an LSMT index (built from the map, O(index)) and trailer
// to the data file, which thereby becomes a valid committed LSMT layer.
//
// Preallocation: the first write into a granule of the virtual range
// (prealloc_granule(), 1 MiB by default) first reserves the granule's space
// in the data file (RWFile::Preallocate, fallocate with KEEP_SIZE), so the
// filesystem does not allocate block by block. It is only a reservation:
// the map alone decides what a range reads (a preallocated range the map
// does not mention reads from the lowers), a discard still frees exactly
// its range, and the seal gives back every preallocated range the sealed
// index does not map. Preallocated-but-unwritten space is counted in
// allocated_bytes (it is taken on disk) and shown apart as
// preallocated_bytes. Two things never reserve: hydration's Fill (it copies
// in large pieces, and only the lowers' data: whole granules would also
// take the space of the lowers' holes, which hydration does not count on),
// and any write while the filesystem has less than kPreallocHeadroom free
// besides the granules (a reservation must not take the space the journal
// and the seal still need; fallocate failing with ENOSPC keeps what it got).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "ovbd/io/env.h"
#include "ovbd/io/mutex.h"
#include "ovbd/layer/extent_map.h"
#include "ovbd/layer/lsmt_format.h"
#include "ovbd/layer/range_locks.h"

namespace ovbd {

struct UpperStats {
  uint64_t mapped_sectors = 0;    // sectors holding data
  uint64_t extents = 0;           // map entries (data + zeroed)
  uint64_t allocated_bytes = 0;   // space taken by the data file (st_blocks), preallocation included
  // Of allocated_bytes, what this upper reserved ahead of writes (since it
  // was opened) and that holds nothing yet: the granules it preallocated
  // minus what the map says of them (data, or zeroed and so punched). What
  // a seal gives back; reservations of an earlier run are not tracked.
  // Computed without I/O (PreallocatedBytes()).
  uint64_t preallocated_bytes = 0;
  uint64_t journal_bytes = 0;
  uint64_t journal_records = 0;
  uint64_t commits = 0;
  uint64_t compactions = 0;
};

// What the upper says about a piece of a read.
enum class UpperPiece : uint8_t { kAbsent, kData, kZero };

class Upper {
 public:
  // Creates a new, empty upper (both files must not exist) and syncs it. On
  // failure it removes the files it created (never one that was there).
  static Result<std::unique_ptr<Upper>> Create(Env* env, const std::string& base_path,
                                               uint64_t virtual_size, const std::string& uuid,
                                               const std::string& parent_uuid);
  // Opens an existing upper, replaying its journal. A torn tail is cut off
  // (with `read_only` it is only ignored).
  static Result<std::unique_ptr<Upper>> Open(Env* env, const std::string& base_path,
                                             uint64_t virtual_size, bool read_only = false);
  ~Upper();

  // Repair for a journal damaged in the middle (Open refuses it): cuts it at
  // the first bad record, losing the records after it. Returns how many
  // records were dropped (the bad one and the well-formed ones after it).
  // With `virtual_size` (bytes; 0: unknown) a record past it counts as bad too.
  static Result<uint64_t> CutJournalAtDamage(Env* env, const std::string& base_path,
                                             uint64_t virtual_size = 0);

  static std::string DataPath(const std::string& base) { return base + ".data"; }
  static std::string JournalPath(const std::string& base) { return base + ".jnl"; }

  // Sector-aligned I/O. `off` and `len` are bytes, multiples of 512.
  Status Write(uint64_t off, const char* buf, size_t len);
  // Makes [off, off+len) read zeros and hide lower layers; frees its space.
  Status Zero(uint64_t off, uint64_t len);
  // Forgets [off, off+len): it reads from the lower layers again.
  Status Forget(uint64_t off, uint64_t len);
  // Hydration: writes the sectors of [off, off+len) that the map still
  // holds nothing for (kAbsent) from buf (buf[0] is the byte at off), and
  // leaves every other sector alone. The check and the write are one step
  // against Write, Zero and Forget of overlapping ranges (RangeLocks), so a
  // foreground write or discard, before or during the fill, is never
  // overwritten. Returns the bytes written. Reserves nothing (see the top);
  // into a granule a write reserved, it maps just the sectors it wrote.
  Result<uint64_t> Fill(uint64_t off, const char* buf, size_t len);

  // Calls fn(offset_bytes, length_bytes, UpperPiece) for each piece of the
  // byte range (sector-aligned); for kData the bytes are in data_file() at
  // DataOffset(offset).
  template <typename F>
  void Walk(uint64_t off, uint64_t len, F&& fn) const EXCLUDES(mu_) {
    ReaderLock lk(&mu_);
    map_.Walk(off / lsmt::kSectorSize, len / lsmt::kSectorSize,
              [&](uint64_t o, uint64_t n, const ExtentMap::Extent* e, uint64_t) {
                UpperPiece p = !e ? UpperPiece::kAbsent
                                  : (e->zeroed ? UpperPiece::kZero : UpperPiece::kData);
                fn(o * lsmt::kSectorSize, n * lsmt::kSectorSize, p);
              });
  }
  static uint64_t DataOffset(uint64_t virtual_off) { return lsmt::kHeaderSize + virtual_off; }
  const std::shared_ptr<RWFile>& data_file() const { return data_; }
  // How long the data file must be for every sector the map says holds data
  // to be in it: DataOffset() of the end of the last data extent (the header
  // size when none). A shorter file was truncated behind our back; reads of
  // the ranges past its end fail with EIO, and `ovbd check` can compare this
  // with the file's size. O(extents).
  uint64_t DataBytesNeeded() const EXCLUDES(mu_);

  // Durability point: data first (fdatasync), then the journal records.
  // Concurrent callers share one commit.
  Status Commit() EXCLUDES(commit_mu_, mu_);
  bool dirty() const EXCLUDES(mu_);

  // Turns the data file into a committed LSMT layer in place: appends the
  // index and trailer, marks the header sealed, and syncs the data file once
  // (which also makes every write so far durable there; the journal is not
  // needed any more once the caller records the file as a layer). Writes are
  // refused afterwards. Cost: O(extents). Returns the sealed layer's header
  // and index, so the caller need not read them back.
  struct Sealed {
    lsmt::Header header;
    std::vector<Segment> segments;
  };
  Result<Sealed> Seal(const std::string& message);
  // Seal in two steps, so a snapshot can switch the volume to a fresh upper
  // without waiting for the disk:
  //  - Freeze: refuses writes from now on and returns the index and trailer
  //    the file will have. No I/O; O(extents). The file's data is already
  //    where the index says, so the result can serve reads at once.
  //  - WriteSeal: appends that index and trailer, marks the header sealed and
  //    syncs the data file. On failure, Unseal() restores the upper.
  Sealed Freeze(const std::string& message);
  Status WriteSeal(const lsmt::Header& trailer, const std::vector<Segment>& segments);
  // Operations (writes, zeroes, forgets) applied since this upper was
  // created or opened.
  uint64_t operations() const EXCLUDES(mu_) {
    ReaderLock lk(&mu_);
    return applied_;
  }
  // Undoes a Seal whose snapshot could not be recorded: drops the appended
  // index and trailer and accepts writes again. The journal and the
  // pending operations were never touched, so nothing is lost.
  Status Unseal();

  // kTooLarge when the filesystem holding `data` cannot hold the data file
  // of a volume of `vsize` bytes (probed with truncate, which allocates
  // nothing; `data`'s size is restored).
  static Status CheckSizeFits(RWFile* data, uint64_t vsize);

  // Grows the virtual size (never shrinks).
  Status Resize(uint64_t new_size);
  uint64_t virtual_size() const { return vsize_.load(); }
  const std::string& uuid() const { return uuid_; }
  UpperStats Stats() const;
  // Bytes of torn journal tail found when this upper was opened (cut off
  // unless opened read-only).
  uint64_t torn_tail_bytes() const { return torn_tail_bytes_; }
  // The journal is rewritten once it holds at least this many records (and
  // four times what the map needs). Tests lower it to exercise compaction.
  void set_compact_min_records(uint64_t n) EXCLUDES(commit_mu_) {
    MutexLock l(&commit_mu_);
    compact_min_records_ = n;
  }
  // A copy of the current map as LSMT segments (moffset in data-file sectors).
  std::vector<Segment> Segments() const;

  // Granule of preallocation in bytes of virtual range (a multiple of 4096;
  // 0 turns it off). Set before writes; changing it forgets which granules
  // were reserved.
  static constexpr uint64_t kDefaultPreallocGranule = uint64_t{1} << 20;
  void set_prealloc_granule(uint64_t bytes) EXCLUDES(prealloc_mu_);
  uint64_t prealloc_granule() const EXCLUDES(prealloc_mu_);
  // Free space (Env::SpaceOf of the upper's directory) a reservation must
  // leave on the filesystem; below it writes allocate as they come.
  static constexpr uint64_t kPreallocHeadroom = uint64_t{64} << 20;
  // UpperStats::preallocated_bytes without the stat of the data file (and
  // without its clamp to allocated_bytes): for status listings. O(reserved
  // granules + extents in them).
  uint64_t PreallocatedBytes() const EXCLUDES(prealloc_mu_, mu_);

 private:
  struct PendingOp {
    uint8_t type;
    uint64_t offset, length;  // sectors
  };

  Upper() = default;
  Status CheckWritable(uint64_t off, uint64_t len) const;
  void Apply(uint64_t off_sec, uint64_t len_sec, uint8_t type) EXCLUDES(mu_);
  // Zero and Forget: frees the data of [off, off+len) and records `type`
  // (uj::kZero or uj::kForget) for the range.
  Status PunchAndRecord(uint64_t off, uint64_t len, uint8_t type);
  Status Replay(bool read_only) REQUIRES(commit_mu_) EXCLUDES(mu_);
  Status AppendRecords(const std::vector<PendingOp>& ops) REQUIRES(commit_mu_);
  Status Compact(const std::vector<Segment>& segs) REQUIRES(commit_mu_);
  // Reserves the granules [off, off+len) touches that are not claimed yet.
  // Never fails: a failed or skipped reservation only means the filesystem
  // allocates at write time, as without preallocation.
  void Reserve(uint64_t off, uint64_t len) EXCLUDES(prealloc_mu_);
  // The claimed (or else the reserved) granules as merged virtual byte
  // ranges [begin, end).
  std::vector<std::pair<uint64_t, uint64_t>> GranuleRanges(bool claimed) const
      EXCLUDES(prealloc_mu_);
  // After a failed data write of [off, off+len), with that range locked
  // exclusive: punches what the map does not hold as data there (outside
  // reserved granules), so blocks the write got before failing are given
  // back. Best effort.
  void ReleaseFailedWrite(uint64_t off, uint64_t len) EXCLUDES(prealloc_mu_, mu_);
  // Frees the space of claimed granules that `segments` does not map as data.
  Status ReleaseUnmappedReservations(const std::vector<Segment>& segments);

  // Set while the upper is made (Create, Open), then never changed.
  Env* env_ = nullptr;
  std::string base_;
  std::string uuid_, parent_uuid_;
  std::shared_ptr<RWFile> data_;
  bool read_only_ = false;
  uint64_t torn_tail_bytes_ = 0;

  std::atomic<uint64_t> vsize_{0};
  std::atomic<uint64_t> commits_{0}, compactions_{0};
  std::atomic<bool> sealed_{false};

  // One commit at a time. Lock order: commit_mu_, then mu_.
  mutable Mutex commit_mu_ ACQUIRED_BEFORE(mu_);
  std::unique_ptr<RWFile> jnl_ GUARDED_BY(commit_mu_);
  uint64_t committed_ GUARDED_BY(commit_mu_) = 0;    // operations durable in the journal
  uint64_t jnl_end_ GUARDED_BY(commit_mu_) = 0;      // byte offset where the next record goes
  uint64_t jnl_records_ GUARDED_BY(commit_mu_) = 0;
  // Copies of the two for Stats(), which must not wait for a commit (it
  // holds commit_mu_ through its fsyncs, and status asks often).
  std::atomic<uint64_t> jnl_end_seen_{0}, jnl_records_seen_{0};
  uint64_t next_seq_ GUARDED_BY(commit_mu_) = 1;     // sequence number of the next record
  uint64_t compact_min_records_ GUARDED_BY(commit_mu_) = uint64_t{1} << 16;

  // Orders fills against writes of the same range (range_locks.h). Taken
  // before mu_ and never while commit_mu_ is held.
  RangeLocks ranges_;

  // Granules of the virtual range, one bit each: claimed by a first write
  // (whether or not the reservation was made: a write tests only this, and
  // a seal punches what is unmapped in all of them, since a failed
  // fallocate may have kept part of its range), and of those, reserved (the
  // fallocate succeeded: what preallocated_bytes counts). Taken alone, never
  // together with another of the upper's mutexes.
  mutable Mutex prealloc_mu_;
  uint64_t prealloc_granule_ GUARDED_BY(prealloc_mu_) = kDefaultPreallocGranule;
  std::vector<uint64_t> prealloc_claimed_ GUARDED_BY(prealloc_mu_);
  std::vector<uint64_t> prealloc_reserved_ GUARDED_BY(prealloc_mu_);
  std::atomic<bool> prealloc_unsupported_{false};

  // The map; readers share it, writers update it after their data write.
  mutable SharedMutex mu_;
  ExtentMap map_ GUARDED_BY(mu_);
  std::vector<PendingOp> pending_ GUARDED_BY(mu_);  // applied to map_, not yet in the journal
  uint64_t applied_ GUARDED_BY(mu_) = 0;            // operations applied so far
};

}  // namespace ovbd
