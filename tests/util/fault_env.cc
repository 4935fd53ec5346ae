// FaultInjectionEnv: see fault_env.h for the model.
//
// Bookkeeping, all under one mutex:
//  - FileState per path opened with OpenRW: the current size and the list of
//    data operations since the last Sync(), each with the bytes (and size) it
//    replaced, read from the real file just before the operation. Undoing them
//    newest first gives back the synced contents exactly; undoing only some of
//    them per sector gives the other power-loss outcomes.
//  - DirRecord per namespace change since the last SyncDir() of its directory,
//    with a copy of any file the change destroyed (Remove, Rename over).
// Saved bytes leave out all-zero 4 KiB blocks, and restored all-zero blocks
// are punched, so sparse layer files stay sparse and cheap to track.
#include "fault_env.h"

#include "ovbd/io/mutex.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <utility>

namespace ovbd {
namespace {

constexpr uint64_t kSector = FaultInjectionEnv::kSectorSize;
constexpr uint64_t kBlock = 4096;      // sparse granularity of saved and restored bytes
constexpr uint64_t kIoChunk = 1 << 20;  // bytes read or restored per call

constexpr uint32_t Bit(FaultFilter f) { return static_cast<uint32_t>(f); }

bool AllZero(const char* p, size_t n) {
  static const char kZeros[kBlock] = {};
  while (n > 0) {
    size_t k = std::min<size_t>(n, kBlock);
    if (std::memcmp(p, kZeros, k) != 0) return false;
    p += k;
    n -= k;
  }
  return true;
}

Status CrashedError() { return Status::IOError("fault env: process crashed (simulated)", EIO); }
Status DeadError(const std::string& name) {
  return Status::IOError("fault env: " + name + ": handle from before a simulated crash", EIO);
}

// The ranges of [off, end) that may hold data, found with SEEK_DATA/SEEK_HOLE
// when the file has a descriptor, so that saving a range of a big sparse file
// does not read its holes. The whole range when that is not possible.
std::vector<std::pair<uint64_t, uint64_t>> DataExtents(int fd, uint64_t off, uint64_t end) {
  if (off >= end) return {};
  if (fd < 0) return {{off, end}};
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (uint64_t pos = off; pos < end;) {
    const off_t d = ::lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
    if (d < 0) {
      if (errno == ENXIO) break;  // no data at or after pos
      return {{off, end}};
    }
    if (static_cast<uint64_t>(d) >= end) break;
    const off_t h = ::lseek(fd, d, SEEK_HOLE);
    if (h < 0) return {{off, end}};
    out.emplace_back(static_cast<uint64_t>(d), std::min(static_cast<uint64_t>(h), end));
    pos = static_cast<uint64_t>(h);
  }
  return out;
}

// The contents of [off, off+len) of a file at one moment. All-zero 4 KiB
// blocks (and anything past the end of the file) are not stored: they read
// back as zeros.
class SavedBytes {
 public:
  Status Capture(const ReadableFile& f, uint64_t off, uint64_t len) {
    chunks_.clear();
    std::string buf;
    for (const auto& [ext_off, ext_end] : DataExtents(f.NativeFd(), off, off + len)) {
      for (uint64_t pos = ext_off; pos < ext_end;) {
        size_t n = static_cast<size_t>(std::min<uint64_t>(kIoChunk, ext_end - pos));
        buf.resize(n);
        size_t got = 0;
        OVBD_RETURN_IF_ERROR(f.ReadAt(pos, n, buf.data(), &got));
        for (size_t i = 0; i < got;) {
          const uint64_t at = pos + i;
          const size_t bl = static_cast<size_t>(std::min<uint64_t>(got - i, kBlock - at % kBlock));
          if (!AllZero(buf.data() + i, bl)) {
            if (!chunks_.empty() && chunks_.back().first + chunks_.back().second.size() == at) {
              chunks_.back().second.append(buf.data() + i, bl);
            } else {
              chunks_.emplace_back(at, std::string(buf.data() + i, bl));
            }
          }
          i += bl;
        }
        if (got < n) return Status::OK();  // end of file: the rest reads as zeros
        pos += n;
      }
    }
    return Status::OK();
  }

  // Fills out[0, b-a) with the saved bytes of [a, b), which lies in the range.
  void CopyOut(uint64_t a, uint64_t b, char* out) const {
    std::memset(out, 0, static_cast<size_t>(b - a));
    auto it = std::upper_bound(chunks_.begin(), chunks_.end(), a,
                               [](uint64_t v, const auto& c) { return v < c.first; });
    if (it != chunks_.begin()) --it;
    for (; it != chunks_.end() && it->first < b; ++it) {
      const uint64_t cs = it->first, ce = cs + it->second.size();
      const uint64_t s = std::max(a, cs), e = std::min(b, ce);
      if (s < e) std::memcpy(out + (s - a), it->second.data() + (s - cs), static_cast<size_t>(e - s));
    }
  }

  const std::vector<std::pair<uint64_t, std::string>>& chunks() const { return chunks_; }

 private:
  std::vector<std::pair<uint64_t, std::string>> chunks_;  // sorted, non-overlapping
};

enum class OpKind { kWrite, kPunch, kTruncate };

// One unsynced data change: the bytes [a, b) changed; old holds what
// [a, min(b, old_size)) contained before (bytes past old_size were not part
// of the file and read as zeros once it is extended again).
struct Op {
  uint64_t seq = 0;
  OpKind kind = OpKind::kWrite;
  uint64_t a = 0, b = 0;
  uint64_t old_size = 0, new_size = 0;
  SavedBytes old;
};

struct FileState {
  std::string path;  // normalized; follows renames done through the env
  uint64_t size = 0;
  std::vector<Op> ops;  // since the last Sync(), oldest first
  bool unlinked = false;  // removed or replaced through the env: no longer tracked
};

// A file (or empty directory) destroyed by a Remove or a Rename over it.
struct Snapshot {
  bool valid = false;
  bool is_dir = false;
  uint64_t size = 0;
  SavedBytes data;
  std::shared_ptr<FileState> state;  // its unsynced changes at that moment
};

enum class RecKind { kCreateFile, kCreateDir, kRemoveDir, kRename, kRemove };

struct DirRecord {
  RecKind kind;
  std::string dir;   // the directory whose SyncDir makes it durable
  std::string path;  // the created/removed path, or the rename target
  std::string from;  // rename source
  Snapshot snap;
};

struct FailRule {
  int err;
  uint32_t mask;
  std::string substr;
  double probability;
};

// Which write kTornLast tears and how much of it it keeps.
struct TornChoice {
  bool active = false;
  uint64_t seq = 0;
  uint64_t a = 0;         // the write's first byte
  uint64_t keep_end = 0;  // end of the kept prefix (== a: nothing kept)
};

class FaultLock;

}  // namespace

struct FaultInjectionEnv::Impl {
  explicit Impl(Env* b, uint64_t seed) : base(b), rng(seed) {}

  Env* const base;
  Mutex mu;
  std::mt19937_64 rng GUARDED_BY(mu);

  uint64_t generation GUARDED_BY(mu) = 0;
  bool crashed GUARDED_BY(mu) = false;
  uint64_t seq GUARDED_BY(mu) = 0;
  uint64_t mutating GUARDED_BY(mu) = 0;
  std::map<std::string, int, std::less<>> armed GUARDED_BY(mu);
  std::map<std::string, std::function<void()>, std::less<>> hooks GUARDED_BY(mu);  // OnCrashPoint
  bool crash_after_armed GUARDED_BY(mu) = false;
  uint64_t crash_after_left GUARDED_BY(mu) = 0;
  uint64_t crash_after_total GUARDED_BY(mu) = 0;
  bool tear GUARDED_BY(mu) = false;
  std::vector<std::string> seen GUARDED_BY(mu);
  std::vector<FailRule> rules GUARDED_BY(mu);
  // Keyed by NormalizePath(): one entry per file however a caller spells it.
  std::map<std::string, std::shared_ptr<FileState>> files GUARDED_BY(mu);
  std::vector<DirRecord> records GUARDED_BY(mu);  // oldest first
  std::set<FaultLock*> locks GUARDED_BY(mu);

  uint64_t Uniform(uint64_t lo, uint64_t hi) REQUIRES(mu) {  // inclusive
    return std::uniform_int_distribution<uint64_t>(lo, hi)(rng);
  }

  void EnterCrashed() REQUIRES(mu);
  void ReleaseLocks() REQUIRES(mu);

  // Decides whether an operation may run (mu held). `what` may combine
  // filters: a rule on any of them applies. gen: the handle's
  // generation, or null for calls on the env. *crashing is set when this call
  // is the one CrashAfterOps() crashes.
  Status Admit(FaultFilter what, std::string_view p1, std::string_view p2, const uint64_t* gen,
               bool is_mutating, bool* crashing = nullptr) REQUIRES(mu) {
    if (crashed) return CrashedError();
    if (gen != nullptr && *gen != generation) return DeadError(std::string(p1));
    if (is_mutating) {
      ++mutating;
      if (crash_after_armed) {
        if (crash_after_left == 0) {
          crash_after_armed = false;
          EnterCrashed();
          if (crashing != nullptr) *crashing = true;
          return Status::IOError("fault env: crash after " + std::to_string(crash_after_total) +
                                     " mutating operations",
                                 EIO);
        }
        --crash_after_left;
      }
    }
    for (const FailRule& r : rules) {
      if ((r.mask & Bit(what)) == 0) continue;
      if (!r.substr.empty() && p1.find(r.substr) == std::string_view::npos &&
          p2.find(r.substr) == std::string_view::npos) {
        continue;
      }
      if (r.probability < 1.0 &&
          !(std::uniform_real_distribution<double>(0.0, 1.0)(rng) < r.probability)) {
        continue;
      }
      return Status::IOError("fault env: injected error on " + std::string(p1) + ": " +
                                 std::strerror(r.err),
                             r.err);
    }
    return Status::OK();
  }

  // CreateDir or RemoveDir (kind says which): admitted, done, and recorded
  // as a change to the parent directory, lost unless it is synced.
  Status ChangeDir(RecKind kind, const std::string& path) EXCLUDES(mu) {
    MutexLock l(&mu);
    OVBD_RETURN_IF_ERROR(Admit(FaultFilter::kNamespace, path, {}, nullptr, true));
    OVBD_RETURN_IF_ERROR(kind == RecKind::kCreateDir ? base->CreateDir(path) : base->RemoveDir(path));
    const std::string key = NormalizePath(path);
    records.push_back(DirRecord{kind, DirName(key), key, {}, {}});
    return Status::OK();
  }

  // Admit() for a metadata query on a handle, taking the lock itself.
  Status AdmitMetadata(std::string_view name, uint64_t gen) EXCLUDES(mu) {
    MutexLock l(&mu);
    return Admit(FaultFilter::kMetadata, name, {}, &gen, false);
  }

  // Bytes of a WriteAt(off, n) that a torn crash keeps: a random strict
  // prefix of its sectors, as a byte count (possibly 0).
  uint64_t TornPrefix(uint64_t off, uint64_t n) REQUIRES(mu) {
    if (n == 0) return 0;
    const uint64_t s0 = off / kSector, s1 = (off + n - 1) / kSector;
    const uint64_t k = Uniform(0, s1 - s0);  // sectors kept, < sector count
    const uint64_t end = std::min(off + n, (s0 + k) * kSector);
    return end > off ? end - off : 0;
  }

  // --- Tracked data operations (mu held) ---

  Status TrackedWrite(FileState& st, RWFile& f, uint64_t off, const char* buf, size_t n)
      REQUIRES(mu) {
    if (st.unlinked || n == 0) return f.WriteAt(off, buf, n);
    Op op;
    op.seq = ++seq;
    op.kind = OpKind::kWrite;
    op.a = off;
    op.b = off + n;
    op.old_size = st.size;
    if (off < st.size) {
      OVBD_RETURN_IF_ERROR(op.old.Capture(f, off, std::min<uint64_t>(op.b, st.size) - off)
                               .Annotate("fault env: saving old contents"));
    }
    Status s = f.WriteAt(off, buf, n);
    // A failed write may have written part: keep the record, undoing it is harmless.
    op.new_size = s.ok() ? std::max(st.size, op.b) : st.size;
    st.size = op.new_size;
    st.ops.push_back(std::move(op));
    return s;
  }

  Status TrackedPunch(FileState& st, RWFile& f, uint64_t off, uint64_t len) REQUIRES(mu) {
    const uint64_t end = len > UINT64_MAX - off ? UINT64_MAX : off + len;
    if (st.unlinked || len == 0 || off >= st.size) return f.PunchHole(off, len);
    Op op;
    op.seq = ++seq;
    op.kind = OpKind::kPunch;
    op.a = off;
    op.b = std::min(end, st.size);  // KEEP_SIZE: nothing changes past the end
    op.old_size = op.new_size = st.size;
    OVBD_RETURN_IF_ERROR(
        op.old.Capture(f, op.a, op.b - op.a).Annotate("fault env: saving old contents"));
    Status s = f.PunchHole(off, len);
    if (s.ok()) st.ops.push_back(std::move(op));
    return s;
  }

  Status TrackedTruncate(FileState& st, RWFile& f, uint64_t size) REQUIRES(mu) {
    if (st.unlinked || size == st.size) return f.Truncate(size);
    Op op;
    op.seq = ++seq;
    op.kind = OpKind::kTruncate;
    op.a = std::min(size, st.size);
    op.b = std::max(size, st.size);
    op.old_size = st.size;
    op.new_size = size;
    if (size < st.size) {
      OVBD_RETURN_IF_ERROR(
          op.old.Capture(f, size, st.size - size).Annotate("fault env: saving old contents"));
    }
    Status s = f.Truncate(size);
    if (s.ok()) {
      st.size = size;
      st.ops.push_back(std::move(op));
    }
    return s;
  }

  // Copies the regular file at path (current contents) into *snap.
  Status TakeSnapshot(const std::string& path, Snapshot* snap) {
    auto st = base->Stat(path);
    if (!st.ok()) return st.status().IsNotFound() ? Status::OK() : st.status();
    if (st->is_dir) {
      snap->valid = true;
      snap->is_dir = true;
      return Status::OK();
    }
    if (!st->is_regular) return Status::OK();  // e.g. a symlink: cannot be recreated
    OVBD_ASSIGN_OR_RETURN(std::unique_ptr<ReadableFile> f, base->OpenReadable(path));
    OVBD_RETURN_IF_ERROR(snap->data.Capture(*f, 0, f->Size()));
    snap->size = f->Size();
    snap->valid = true;
    return Status::OK();
  }

  // Marks the tracked file at key as replaced/removed and hands its state over.
  std::shared_ptr<FileState> Detach(const std::string& key) REQUIRES(mu) {
    auto it = files.find(key);
    if (it == files.end()) return nullptr;
    std::shared_ptr<FileState> st = std::move(it->second);
    files.erase(it);
    st->unlinked = true;
    return st;
  }

  // --- Power loss (mu held) ---

  // Writes data[0, len) at off, punching the all-zero whole 4 KiB blocks.
  static Status WriteSparse(RWFile& f, uint64_t off, const char* data, size_t len) {
    size_t run = 0;
    bool run_zero = false;
    auto flush = [&](size_t end) -> Status {
      if (end == run) return Status::OK();
      if (run_zero && f.PunchHole(off + run, end - run).ok()) return Status::OK();
      return f.WriteAt(off + run, data + run, end - run);  // (zeros if punching failed)
    };
    for (size_t i = 0; i < len;) {
      const uint64_t at = off + i;
      const size_t bl = static_cast<size_t>(std::min<uint64_t>(len - i, kBlock - at % kBlock));
      const bool zero = bl == kBlock && AllZero(data + i, bl);
      if (i > run && zero != run_zero) {
        OVBD_RETURN_IF_ERROR(flush(i));
        run = i;
      }
      if (i == run) run_zero = zero;
      i += bl;
    }
    return flush(len);
  }

  // Puts back the bytes [ra, rb) that op replaced.
  static Status RestoreRange(RWFile& f, const Op& op, uint64_t ra, uint64_t rb) {
    std::string buf;
    for (uint64_t pa = ra; pa < rb;) {
      const uint64_t pb = std::min(rb, pa + kIoChunk);
      buf.assign(static_cast<size_t>(pb - pa), '\0');
      if (pa < op.old_size) op.old.CopyOut(pa, std::min(pb, op.old_size), buf.data());
      OVBD_RETURN_IF_ERROR(WriteSparse(f, pa, buf.data(), buf.size()));
      pa = pb;
    }
    return Status::OK();
  }

  // Calls fn(first, end) for the runs of sectors [first, end) where undoing op
  // can change something: all of a write; for a punch or truncate only where
  // the replaced bytes were not zeros (elsewhere old and new both read zero),
  // so a huge punch or truncate of a sparse file costs nothing.
  template <typename Fn>
  static void ForEachSectorRun(const Op& op, Fn&& fn) {
    if (op.kind == OpKind::kWrite) {
      fn(op.a / kSector, (op.b - 1) / kSector + 1);
      return;
    }
    for (const auto& [cs, bytes] : op.old.chunks()) {
      const uint64_t s = std::max(op.a, cs), e = std::min(op.b, cs + bytes.size());
      if (s < e) fn(s / kSector, (e - 1) / kSector + 1);
    }
  }

  // Rewrites the file at path into what the power cut leaves of st's
  // unsynced changes.
  Status RevertFile(const FileState& st, const std::string& path, PowerLossMode mode,
                    const TornChoice& torn) REQUIRES(mu) {
    if (st.ops.empty()) return Status::OK();
    OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> f, base->OpenRW(path, /*create=*/false));
    const uint64_t synced_size = st.ops.front().old_size;
    uint64_t final_size = synced_size;

    // kRandomSectors: each sector goes back `revert` of the `versions`
    // changes it saw since the sync (uniformly 0..versions), so it ends up as
    // exactly one of the versions it went through.
    struct Plan {
      uint32_t versions = 0, revert = 0, seen = 0;
    };
    std::map<uint64_t, Plan> plan;  // ordered: a seed gives the same result every run
    bool torn_here = false;
    uint64_t keep_first = 0, keep_end = 0;  // kTornLast: kept sectors [keep_first, keep_end)
    if (mode == PowerLossMode::kRandomSectors) {
      const uint64_t i = Uniform(0, st.ops.size());
      final_size = i == 0 ? synced_size : st.ops[i - 1].new_size;
      for (const Op& op : st.ops) {
        ForEachSectorRun(op, [&](uint64_t sb, uint64_t se) {
          for (uint64_t s = sb; s < se; ++s) ++plan[s].versions;
        });
      }
      for (auto& [s, p] : plan) p.revert = static_cast<uint32_t>(Uniform(0, p.versions));
    } else if (mode == PowerLossMode::kTornLast && torn.active) {
      for (const Op& op : st.ops) torn_here = torn_here || op.seq == torn.seq;
      if (torn_here) {
        keep_first = torn.a / kSector;
        keep_end = (torn.keep_end + kSector - 1) / kSector;
        final_size = std::max(synced_size, torn.keep_end);
      }
    }
    auto revert_sector = [&](const Op& op, uint64_t s) {
      if (mode == PowerLossMode::kRandomSectors) {
        Plan& p = plan[s];
        return p.seen++ < p.revert;
      }
      // kTornLast: the kept sectors hold their contents as of the torn write;
      // everything else (and anything newer) is lost.
      if (!torn_here || op.seq > torn.seq) return true;
      return !(s >= keep_first && s < keep_end);
    };

    // Undo newest first, in runs of consecutive reverted sectors; bytes at
    // or past final_size are cut off by the final truncate anyway.
    Status status;
    for (auto it = st.ops.rbegin(); it != st.ops.rend() && status.ok(); ++it) {
      const Op& op = *it;
      auto restore = [&](uint64_t s_begin, uint64_t s_end) {
        const uint64_t ra = std::max(op.a, s_begin * kSector);
        const uint64_t rb = std::min({op.b, s_end * kSector, final_size});
        if (status.ok() && ra < rb) status = RestoreRange(*f, op, ra, rb);
      };
      ForEachSectorRun(op, [&](uint64_t sb, uint64_t se) {
        if (mode == PowerLossMode::kDropAll) return restore(sb, se);
        uint64_t run = sb;
        for (uint64_t s = sb; s < se; ++s) {
          if (!revert_sector(op, s)) {
            restore(run, s);
            run = s + 1;
          }
        }
        restore(run, se);
      });
    }
    OVBD_RETURN_IF_ERROR(status);
    OVBD_RETURN_IF_ERROR(f->Truncate(final_size));
    return f->Sync();
  }

  Status RemoveTree(const std::string& path) {
    auto st = base->Stat(path);
    if (!st.ok()) return st.status().IsNotFound() ? Status::OK() : st.status();
    if (!st->is_dir) return base->Remove(path);
    OVBD_ASSIGN_OR_RETURN(std::vector<std::string> names, base->ListDir(path));
    for (const std::string& n : names) OVBD_RETURN_IF_ERROR(RemoveTree(JoinPath(path, n)));
    return base->RemoveDir(path);
  }

  Status RestoreSnapshot(const std::string& path, const Snapshot& snap, PowerLossMode mode,
                         const TornChoice& torn) REQUIRES(mu) {
    if (!snap.valid) return Status::OK();
    auto st = base->Stat(path);
    if (snap.is_dir) {
      if (st.ok() && st->is_dir) return Status::OK();
      return base->CreateDir(path);
    }
    if (st.ok()) {
      if (st->is_dir) return Status::Exists("fault env: cannot restore " + path + ": a directory");
      OVBD_RETURN_IF_ERROR(base->Remove(path));
    }
    {
      OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> f, base->OpenRW(path, /*create=*/true));
      for (const auto& [off, bytes] : snap.data.chunks()) {
        OVBD_RETURN_IF_ERROR(f->WriteAt(off, bytes.data(), bytes.size()));
      }
      OVBD_RETURN_IF_ERROR(f->Truncate(snap.size));
      OVBD_RETURN_IF_ERROR(f->Sync());
    }
    if (snap.state) return RevertFile(*snap.state, path, mode, torn);
    return Status::OK();
  }

  Status Undo(const DirRecord& r, PowerLossMode mode, const TornChoice& torn) REQUIRES(mu) {
    switch (r.kind) {
      case RecKind::kCreateFile: {
        auto st = base->Stat(r.path);
        if (st.ok() && !st->is_dir) return base->Remove(r.path);
        return Status::OK();
      }
      case RecKind::kCreateDir:
        return RemoveTree(r.path);
      case RecKind::kRemoveDir: {
        auto st = base->Stat(r.path);
        if (st.ok() && st->is_dir) return Status::OK();
        return base->CreateDir(r.path);
      }
      case RecKind::kRename:
        if (base->Stat(r.path).ok()) OVBD_RETURN_IF_ERROR(base->Rename(r.path, r.from));
        return RestoreSnapshot(r.path, r.snap, mode, torn);
      case RecKind::kRemove:
        return RestoreSnapshot(r.path, r.snap, mode, torn);
    }
    return Status::OK();
  }

  Status PowerLoss(PowerLossMode mode) REQUIRES(mu) {
    TornChoice torn;
    if (mode == PowerLossMode::kTornLast) {
      const Op* last = nullptr;
      auto consider = [&](const FileState& st) {
        for (const Op& op : st.ops) {
          if (op.kind == OpKind::kWrite && (last == nullptr || op.seq > last->seq)) last = &op;
        }
      };
      for (const auto& kv : files) consider(*kv.second);
      for (const DirRecord& r : records) {
        if (r.snap.state) consider(*r.snap.state);
      }
      if (last != nullptr) {
        torn.seq = last->seq;
        torn.a = last->a;
        torn.keep_end = last->a + TornPrefix(last->a, last->b - last->a);
        torn.active = torn.keep_end > torn.a;  // nothing kept: same as kDropAll
      }
    }
    Status first;
    auto note = [&](const Status& s, const std::string& what) {
      if (first.ok() && !s.ok()) first = s.Annotate("fault env: power loss: " + what);
    };
    for (const auto& kv : files) note(RevertFile(*kv.second, kv.second->path, mode, torn), kv.first);
    for (auto it = records.rbegin(); it != records.rend(); ++it) note(Undo(*it, mode, torn), it->path);
    files.clear();
    records.clear();
    crashed = false;
    armed.clear();
    crash_after_armed = false;
    ++generation;
    ReleaseLocks();
    return first;
  }
};

namespace {

using Impl = FaultInjectionEnv::Impl;

class FaultLock final : public FileLock {
 public:
  FaultLock(std::shared_ptr<Impl> impl, std::unique_ptr<FileLock> base)
      : impl_(std::move(impl)), base_(std::move(base)) {}
  ~FaultLock() override {
    MutexLock l(&impl_->mu);
    impl_->locks.erase(this);
    base_.reset();
  }
  void Release() { base_.reset(); }  // mu held

 private:
  std::shared_ptr<Impl> impl_;
  std::unique_ptr<FileLock> base_;
};

// What both kinds of open file share: reads and metadata queries, each
// admitted by the fault rules before it reaches the wrapped file F.
template <class F>
class FaultReader : public F {
 public:
  FaultReader(std::shared_ptr<Impl> impl, std::unique_ptr<F> base, uint64_t gen)
      : impl_(std::move(impl)), base_(std::move(base)), gen_(gen) {}

  Status ReadAt(uint64_t off, size_t n, char* buf, size_t* got) const override {
    {
      MutexLock l(&impl_->mu);
      Status s = impl_->Admit(FaultFilter::kReads, Name(), {}, &gen_, false);
      if (!s.ok()) {
        *got = 0;
        return s;
      }
    }
    return base_->ReadAt(off, n, buf, got);
  }
  uint64_t Size() const override { return base_->Size(); }
  const std::string& Name() const override { return base_->Name(); }
  Status CheckRange(uint64_t off, uint64_t n) const override {
    OVBD_RETURN_IF_ERROR(impl_->AdmitMetadata(Name(), gen_));
    return base_->CheckRange(off, n);
  }
  Result<ReadableFile::DataRun> NextData(uint64_t off) const override {
    OVBD_RETURN_IF_ERROR(impl_->AdmitMetadata(Name(), gen_));
    return base_->NextData(off);
  }

 protected:
  const std::shared_ptr<Impl> impl_;
  const std::unique_ptr<F> base_;
  const uint64_t gen_;
};

using FaultReadable = FaultReader<ReadableFile>;

class FaultRWFile final : public FaultReader<RWFile> {
 public:
  FaultRWFile(std::shared_ptr<Impl> impl, std::shared_ptr<FileState> state,
              std::unique_ptr<RWFile> base, uint64_t gen)
      : FaultReader(std::move(impl), std::move(base), gen), state_(std::move(state)) {}

  Status WriteAt(uint64_t off, const char* buf, size_t n) override {
    MutexLock l(&impl_->mu);
    bool crashing = false;
    Status s = impl_->Admit(FaultFilter::kWrites, Name(), {}, &gen_, true, &crashing);
    if (!s.ok()) {
      if (crashing && impl_->tear) {
        const uint64_t keep = impl_->TornPrefix(off, n);
        if (keep > 0) {
          Status torn = impl_->TrackedWrite(*state_, *base_, off, buf, static_cast<size_t>(keep));
          (void)torn;  // the caller sees the crash either way
        }
      }
      return s;
    }
    return impl_->TrackedWrite(*state_, *base_, off, buf, n);
  }

  Status Sync() override {
    MutexLock l(&impl_->mu);
    OVBD_RETURN_IF_ERROR(impl_->Admit(FaultFilter::kSyncs, Name(), {}, &gen_, true));
    OVBD_RETURN_IF_ERROR(base_->Sync());
    state_->ops.clear();
    return Status::OK();
  }

  Status PunchHole(uint64_t off, uint64_t len) override {
    MutexLock l(&impl_->mu);
    OVBD_RETURN_IF_ERROR(impl_->Admit(FaultFilter::kPunch, Name(), {}, &gen_, true));
    return impl_->TrackedPunch(*state_, *base_, off, len);
  }

  Status Truncate(uint64_t size) override {
    MutexLock l(&impl_->mu);
    OVBD_RETURN_IF_ERROR(impl_->Admit(FaultFilter::kWrites, Name(), {}, &gen_, true));
    return impl_->TrackedTruncate(*state_, *base_, size);
  }

  Result<uint64_t> AllocatedBytes() const override {
    MutexLock l(&impl_->mu);
    OVBD_RETURN_IF_ERROR(impl_->Admit(FaultFilter::kMetadata, Name(), {}, &gen_, false));
    return base_->AllocatedBytes();
  }

  // Reserves space only: no byte reads differently, so there is nothing for
  // a power loss to undo and it is not a mutating operation (CrashAfterOps
  // does not count it). Fails like any call once crashed.
  Status Preallocate(uint64_t off, uint64_t len) override {
    MutexLock l(&impl_->mu);
    OVBD_RETURN_IF_ERROR(impl_->Admit(FaultFilter::kPrealloc, Name(), {}, &gen_, false));
    return base_->Preallocate(off, len);
  }

  // A hint that changes neither content nor durability (what is durable is
  // still decided by Sync): forwarded, never recorded.
  void StartWriteback(uint64_t off, uint64_t len) override { base_->StartWriteback(off, len); }

 private:
  const std::shared_ptr<FileState> state_;
};

}  // namespace

void FaultInjectionEnv::Impl::ReleaseLocks() {
  for (FaultLock* l : locks) l->Release();
}

void FaultInjectionEnv::Impl::EnterCrashed() {
  crashed = true;
  ReleaseLocks();  // the dead process's flocks go away with it
}

FaultInjectionEnv::FaultInjectionEnv(Env* base, uint64_t seed)
    : EnvWrapper(base), impl_(std::make_shared<Impl>(base, seed)) {}

FaultInjectionEnv::~FaultInjectionEnv() = default;

Result<std::unique_ptr<ReadableFile>> FaultInjectionEnv::OpenReadable(const std::string& path) {
  MutexLock l(&impl_->mu);
  OVBD_RETURN_IF_ERROR(impl_->Admit(FaultFilter::kOpen, path, {}, nullptr, false));
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<ReadableFile> f, impl_->base->OpenReadable(path));
  return std::unique_ptr<ReadableFile>(
      std::make_unique<FaultReadable>(impl_, std::move(f), impl_->generation));
}

Result<std::unique_ptr<RWFile>> FaultInjectionEnv::OpenRW(const std::string& path, bool create) {
  MutexLock l(&impl_->mu);
  OVBD_RETURN_IF_ERROR(impl_->Admit(FaultFilter::kOpen, path, {}, nullptr, create));
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> f, impl_->base->OpenRW(path, create));
  const std::string key = NormalizePath(path);
  std::shared_ptr<FileState>& st = impl_->files[key];
  if (create || !st) {
    if (st) st->unlinked = true;  // replaced behind our back: forget it
    st = std::make_shared<FileState>();
    st->path = key;
  }
  st->size = f->Size();  // fresh from fstat
  if (create) {
    DirRecord r{RecKind::kCreateFile, DirName(key), key, {}, {}};
    impl_->records.push_back(std::move(r));
  }
  return std::unique_ptr<RWFile>(
      std::make_unique<FaultRWFile>(impl_, st, std::move(f), impl_->generation));
}

Status FaultInjectionEnv::Rename(const std::string& from, const std::string& to) {
  MutexLock l(&impl_->mu);
  OVBD_RETURN_IF_ERROR(impl_->Admit(FaultFilter::kNamespace, from, to, nullptr, true));
  const std::string kf = NormalizePath(from), kt = NormalizePath(to);
  if (kf == kt) return impl_->base->Rename(from, to);
  Snapshot snap;
  OVBD_RETURN_IF_ERROR(
      impl_->TakeSnapshot(to, &snap).Annotate("fault env: saving rename target " + to));
  OVBD_RETURN_IF_ERROR(impl_->base->Rename(from, to));
  snap.state = impl_->Detach(kt);
  // Tracked files move with the name (a renamed directory takes its files along).
  std::vector<std::string> moved;
  for (auto it = impl_->files.lower_bound(kf); it != impl_->files.end(); ++it) {
    const std::string& k = it->first;
    if (k.compare(0, kf.size(), kf) != 0) break;
    if (k.size() == kf.size() || k[kf.size()] == '/') moved.push_back(k);
  }
  for (const std::string& k : moved) {
    auto node = impl_->files.extract(k);
    std::string nk = kt + k.substr(kf.size());
    node.mapped()->path = nk;
    node.key() = nk;
    impl_->files.insert(std::move(node));
  }
  impl_->records.push_back(DirRecord{RecKind::kRename, DirName(kt), kt, kf, std::move(snap)});
  return Status::OK();
}

Status FaultInjectionEnv::Remove(const std::string& path) {
  MutexLock l(&impl_->mu);
  OVBD_RETURN_IF_ERROR(impl_->Admit(FaultFilter::kNamespace, path, {}, nullptr, true));
  const std::string key = NormalizePath(path);
  Snapshot snap;
  OVBD_RETURN_IF_ERROR(
      impl_->TakeSnapshot(path, &snap).Annotate("fault env: saving removed file " + path));
  OVBD_RETURN_IF_ERROR(impl_->base->Remove(path));
  snap.state = impl_->Detach(key);
  impl_->records.push_back(DirRecord{RecKind::kRemove, DirName(key), key, {}, std::move(snap)});
  return Status::OK();
}

Status FaultInjectionEnv::CreateDir(const std::string& path) {
  return impl_->ChangeDir(RecKind::kCreateDir, path);
}

Status FaultInjectionEnv::RemoveDir(const std::string& path) {
  return impl_->ChangeDir(RecKind::kRemoveDir, path);
}

Status FaultInjectionEnv::SyncDir(const std::string& path) {
  MutexLock l(&impl_->mu);
  OVBD_RETURN_IF_ERROR(
      impl_->Admit(FaultFilter::kSyncs | FaultFilter::kDirSync, path, {}, nullptr, true));
  OVBD_RETURN_IF_ERROR(impl_->base->SyncDir(path));
  const std::string key = NormalizePath(path);
  auto& rs = impl_->records;
  rs.erase(std::remove_if(rs.begin(), rs.end(), [&](const DirRecord& r) { return r.dir == key; }),
           rs.end());
  return Status::OK();
}

Result<std::vector<std::string>> FaultInjectionEnv::ListDir(const std::string& path) {
  MutexLock l(&impl_->mu);
  OVBD_RETURN_IF_ERROR(impl_->Admit(FaultFilter::kMetadata, path, {}, nullptr, false));
  return impl_->base->ListDir(path);
}

Result<FileInfo> FaultInjectionEnv::Stat(const std::string& path) {
  MutexLock l(&impl_->mu);
  OVBD_RETURN_IF_ERROR(impl_->Admit(FaultFilter::kMetadata, path, {}, nullptr, false));
  return impl_->base->Stat(path);
}

Result<std::unique_ptr<FileLock>> FaultInjectionEnv::LockFile(const std::string& path) {
  MutexLock l(&impl_->mu);
  OVBD_RETURN_IF_ERROR(impl_->Admit(FaultFilter::kOpen, path, {}, nullptr, false));
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<FileLock> base, impl_->base->LockFile(path));
  auto lock = std::make_unique<FaultLock>(impl_, std::move(base));
  impl_->locks.insert(lock.get());
  return std::unique_ptr<FileLock>(std::move(lock));
}

Result<FsSpace> FaultInjectionEnv::SpaceOf(const std::string& path) {
  MutexLock l(&impl_->mu);
  OVBD_RETURN_IF_ERROR(impl_->Admit(FaultFilter::kMetadata, path, {}, nullptr, false));
  return impl_->base->SpaceOf(path);
}

Status FaultInjectionEnv::CrashPoint(std::string_view name) {
  std::function<void()> hook;
  {
    MutexLock l(&impl_->mu);
    if (impl_->crashed) return CrashedError();
    impl_->seen.emplace_back(name);
    auto it = impl_->armed.find(name);
    if (it != impl_->armed.end() && --it->second <= 0) {
      impl_->armed.erase(it);
      impl_->EnterCrashed();
      return Status::IOError("crash at " + std::string(name), EIO);
    }
    if (auto h = impl_->hooks.find(name); h != impl_->hooks.end()) hook = h->second;
  }
  if (hook) hook();
  return Status::OK();
}

void FaultInjectionEnv::OnCrashPoint(std::string name, std::function<void()> fn) {
  MutexLock l(&impl_->mu);
  if (fn) {
    impl_->hooks[std::move(name)] = std::move(fn);
  } else {
    impl_->hooks.erase(name);
  }
}

Status FaultInjectionEnv::SimulatePowerLoss(PowerLossMode mode) {
  MutexLock l(&impl_->mu);
  return impl_->PowerLoss(mode);
}

void FaultInjectionEnv::CrashAt(std::string name, int nth) {
  MutexLock l(&impl_->mu);
  impl_->armed[std::move(name)] = std::max(nth, 1);
}

void FaultInjectionEnv::CrashAfterOps(uint64_t n) {
  MutexLock l(&impl_->mu);
  impl_->crash_after_armed = true;
  impl_->crash_after_left = n;
  impl_->crash_after_total = n;
}

void FaultInjectionEnv::CrashNow() {
  MutexLock l(&impl_->mu);
  if (impl_->crashed) return;
  impl_->crash_after_armed = false;
  impl_->EnterCrashed();
}

void FaultInjectionEnv::SetTearOnCrash(bool tear) {
  MutexLock l(&impl_->mu);
  impl_->tear = tear;
}

void FaultInjectionEnv::DisarmCrashes() {
  MutexLock l(&impl_->mu);
  impl_->armed.clear();
  impl_->crash_after_armed = false;
}

void FaultInjectionEnv::Revive() {
  MutexLock l(&impl_->mu);
  impl_->crashed = false;
  impl_->armed.clear();
  impl_->crash_after_armed = false;
  ++impl_->generation;
  impl_->ReleaseLocks();
}

bool FaultInjectionEnv::crashed() const {
  MutexLock l(&impl_->mu);
  return impl_->crashed;
}

std::vector<std::string> FaultInjectionEnv::crash_points_seen() const {
  MutexLock l(&impl_->mu);
  return impl_->seen;
}

void FaultInjectionEnv::ClearCrashPointsSeen() {
  MutexLock l(&impl_->mu);
  impl_->seen.clear();
}

uint64_t FaultInjectionEnv::mutating_ops() const {
  MutexLock l(&impl_->mu);
  return impl_->mutating;
}

void FaultInjectionEnv::FailWith(int err, FaultFilter filter, double probability) {
  FailWith(err, filter, std::string(), probability);
}

void FaultInjectionEnv::FailWith(int err, FaultFilter filter, std::string path_substr,
                                 double probability) {
  MutexLock l(&impl_->mu);
  impl_->rules.push_back(FailRule{err, Bit(filter), std::move(path_substr), probability});
}

void FaultInjectionEnv::ClearFailures() {
  MutexLock l(&impl_->mu);
  impl_->rules.clear();
}

size_t FaultInjectionEnv::unsynced_file_count() const {
  MutexLock l(&impl_->mu);
  size_t n = 0;
  for (const auto& kv : impl_->files) n += kv.second->ops.empty() ? 0 : 1;
  return n;
}

}  // namespace ovbd
