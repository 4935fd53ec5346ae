// ZFile reader: validates a ZFile at open and serves its original bytes,
// decompressing blocks on demand (see docs/FORMAT.md, "ZFile").
//
// Open checks everything that can be checked without decompressing: both
// magics and digests, the flags, the compression options, that the jump
// table lies inside the file, that its entry count matches the original size,
// that every stored length is plausible, that the lengths add up to exactly
// the jump table's offset, and the jump table's CRC. Every allocation made at
// open is proportional to the file's real size, never to a count read from it
// that has not been checked against that size.
//
// Blocks are verified (CRC when the file has them) and decompressed into a
// buffer of exactly the size they must have; a block that fails either check
// is reported as kCorruption naming the file, the block and its offset.

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <list>
#include <unordered_map>
#include <vector>

#include "ovbd/io/coding.h"
#include "ovbd/io/crc32c.h"
#include "ovbd/io/mutex.h"
#include "ovbd/layer/zfile.h"
#include "zfile_codec.h"

namespace ovbd::zfile {

using internal::HeaderTrailer;

namespace {

std::string Hex(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

// Compressed bytes fetched from the base file in one read while serving
// ReadAt (a run of consecutive blocks), and while checking every block.
constexpr uint64_t kMaxRunBytes = 1 << 20;
constexpr uint64_t kCheckRunBytes = 4 << 20;
// Jump-table entries read per base read at open.
constexpr uint64_t kIndexChunkEntries = 16384;

// An LRU cache of decompressed blocks, split into independently locked shards
// (block i lives in shard i % shards) so concurrent readers rarely contend.
class BlockCache {
 public:
  using Data = std::shared_ptr<const char[]>;

  explicit BlockCache(size_t capacity) {
    const size_t nshards = capacity >= 64 ? 8 : 1;
    const size_t per = (capacity + nshards - 1) / nshards;
    for (size_t i = 0; i < nshards; ++i) shards_.push_back(std::make_unique<Shard>(per));
  }

  Data Get(uint64_t block) {
    Shard& s = ShardFor(block);
    MutexLock l(&s.mu);
    auto it = s.map.find(block);
    if (it == s.map.end()) return nullptr;
    s.lru.splice(s.lru.begin(), s.lru, it->second);
    return it->second->second;
  }

  bool Contains(uint64_t block) {
    Shard& s = ShardFor(block);
    MutexLock l(&s.mu);
    return s.map.count(block) != 0;
  }

  void Put(uint64_t block, Data data) {
    Shard& s = ShardFor(block);
    MutexLock l(&s.mu);
    auto it = s.map.find(block);
    if (it != s.map.end()) {
      it->second->second = std::move(data);
      s.lru.splice(s.lru.begin(), s.lru, it->second);
      return;
    }
    s.lru.emplace_front(block, std::move(data));
    s.map.emplace(block, s.lru.begin());
    while (s.map.size() > s.capacity) {
      s.map.erase(s.lru.back().first);
      s.lru.pop_back();
    }
  }

 private:
  struct Shard {
    explicit Shard(size_t cap) : capacity(cap) {}
    Mutex mu;
    const size_t capacity;
    std::list<std::pair<uint64_t, Data>> lru GUARDED_BY(mu);  // front: most recent
    std::unordered_map<uint64_t, std::list<std::pair<uint64_t, Data>>::iterator> map
        GUARDED_BY(mu);
  };
  Shard& ShardFor(uint64_t block) { return *shards_[block % shards_.size()]; }

  std::vector<std::unique_ptr<Shard>> shards_;
};

// Reusable scratch buffers, so concurrent ReadAt calls do not allocate on
// every call. (Per reader rather than thread_local: a ZFile's base may itself
// be a ZFile read on the same thread.)
class BufferPool {
 public:
  class Lease {
   public:
    Lease(BufferPool* pool, std::unique_ptr<std::vector<char>> buf)
        : pool_(pool), buf_(std::move(buf)) {}
    ~Lease() { pool_->Release(std::move(buf_)); }
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    char* data() { return buf_->data(); }

   private:
    BufferPool* pool_;
    std::unique_ptr<std::vector<char>> buf_;
  };

  Lease Acquire(size_t n) {
    std::unique_ptr<std::vector<char>> b;
    {
      MutexLock l(&mu_);
      if (!free_.empty()) {
        b = std::move(free_.back());
        free_.pop_back();
      }
    }
    if (!b) b = std::make_unique<std::vector<char>>();
    if (b->size() < n) b->resize(n);
    return Lease(this, std::move(b));
  }

 private:
  void Release(std::unique_ptr<std::vector<char>> b) {
    constexpr size_t kMaxIdle = 8;
    constexpr size_t kMaxKeptBytes = 2 * kCheckRunBytes;
    if (b->size() > kMaxKeptBytes) return;
    MutexLock l(&mu_);
    if (free_.size() < kMaxIdle) free_.push_back(std::move(b));
  }

  Mutex mu_;
  std::vector<std::unique_ptr<std::vector<char>>> free_ GUARDED_BY(mu_);
};

class ZFileReader final : public Reader {
 public:
  ZFileReader(std::shared_ptr<const ReadableFile> base, size_t cache_blocks)
      : base_(std::move(base)), name_(base_->Name()) {
    if (cache_blocks > 0) cache_ = std::make_unique<BlockCache>(cache_blocks);
  }

  Status Init();

  Status ReadAt(uint64_t off, size_t n, char* buf, size_t* got) const override {
    return Read(off, n, buf, got, cache_.get());
  }
  Status ReadMappedOnce(uint64_t off, size_t n, char* buf) const override {
    size_t got = 0;
    OVBD_RETURN_IF_ERROR(Read(off, n, buf, &got, nullptr));
    if (got != n) return PastEndError(*this, off + got, n - got, off + got);
    return Status::OK();
  }
  uint64_t Size() const override { return info_.original_size; }
  const std::string& Name() const override { return name_; }
  int NativeFd() const override { return -1; }
  const Info& info() const override { return info_; }
  Status CheckAllBlocks(const ProgressFn& progress) const override;

 private:
  uint64_t RawLen(uint64_t block) const {
    const uint64_t start = block * info_.block_size;
    return std::min<uint64_t>(info_.block_size, info_.original_size - start);
  }
  Status BlockError(uint64_t block, const std::string& what) const {
    return Status::Corruption(name_ + ": block " + std::to_string(block) + " at offset " +
                              std::to_string(offsets_[block]) + ": " + what);
  }
  // ReadAt through `cache` (null: decompressed blocks are neither looked up
  // nor kept; whole blocks are decompressed straight into buf).
  Status Read(uint64_t off, size_t n, char* buf, size_t* got, BlockCache* cache) const;
  // Reads the stored bytes of blocks [first, end) into dst.
  Status ReadRun(uint64_t first, uint64_t end, char* dst) const;
  // Verifies and decompresses one block whose stored bytes are at `stored`
  // into dst (RawLen(block) bytes).
  Status DecodeBlock(uint64_t block, const char* stored, char* dst) const;

  std::shared_ptr<const ReadableFile> base_;
  std::string name_;
  Info info_;
  // offsets_[i]: file offset of block i's stored bytes; offsets_[n]: end of
  // the last block (== index_offset).
  std::vector<uint64_t> offsets_;
  std::unique_ptr<BlockCache> cache_;
  mutable BufferPool buffers_;
  mutable internal::DecompressorPool decompressors_;
};

Status CheckFlags(const std::string& what, uint64_t flags, bool want_header) {
  using namespace internal;
  if (flags & ~kKnownFlags)
    return Status::NotSupported(what + ": unknown flag bits in " + Hex(flags));
  if (((flags & kFlagHeader) != 0) != want_header)
    return Status::Corruption(what + ": flags " + Hex(flags) +
                              (want_header ? " lack the header bit" : " have the header bit"));
  if (!(flags & kFlagDataFile))
    return Status::NotSupported(what + ": flags " + Hex(flags) + " mark an index-type file");
  if (flags & kFlagIndexCompressed)
    return Status::NotSupported(what + ": compressed jump table is not supported");
  return Status::OK();
}

Status ZFileReader::Init() {
  using namespace internal;
  const uint64_t fsize = base_->Size();
  if (fsize < 2 * kHeaderSize)
    return Status::Corruption(name_ + ": " + std::to_string(fsize) +
                              " bytes is too small for a ZFile (header + trailer = 1024)");
  char hbuf[kHeaderSize];
  char tbuf[kHeaderSize];
  OVBD_RETURN_IF_ERROR(base_->ReadExact(0, kHeaderSize, hbuf));
  if (!HasMagic(hbuf, kHeaderSize)) return Status::Corruption(name_ + ": not a ZFile (bad magic)");
  const uint64_t trailer_off = fsize - kHeaderSize;
  OVBD_RETURN_IF_ERROR(base_->ReadExact(trailer_off, kHeaderSize, tbuf));

  HeaderTrailer h, t;
  OVBD_RETURN_IF_ERROR(DecodeHeaderTrailer(hbuf, name_ + ": header", &h));
  OVBD_RETURN_IF_ERROR(DecodeHeaderTrailer(tbuf, name_ + ": trailer", &t));
  OVBD_RETURN_IF_ERROR(CheckFlags(name_ + ": header", h.flags, true));
  OVBD_RETURN_IF_ERROR(CheckFlags(name_ + ": trailer", t.flags, false));
  if (!(t.flags & kFlagSealed))
    return Status::Corruption(name_ + ": trailer flags " + Hex(t.flags) +
                              " lack the sealed bit (unfinished file)");
  for (const HeaderTrailer* p : {&h, &t}) {
    if (p->size < kStructSize || p->size > kHeaderSize)
      return Status::Corruption(name_ + ": " + (p == &h ? "header" : "trailer") + " size field " +
                                std::to_string(p->size) + " outside [96, 512]");
  }

  // The header carries the real index fields only when bit 3 is set (it was
  // rewritten once the file was complete); otherwise they are in the trailer.
  const bool header_has_index = (h.flags & kFlagInfoValid) != 0;
  const HeaderTrailer& ht = header_has_index ? h : t;
  if (header_has_index) {
    auto disagree = [&](const char* field) {
      return Status::Corruption(name_ + ": header and trailer disagree on " + field);
    };
    if (h.index_offset != t.index_offset) return disagree("index_offset");
    if (h.index_size != t.index_size) return disagree("index_size");
    if (h.original_size != t.original_size) return disagree("original_file_size");
    if (h.index_crc != t.index_crc) return disagree("index_crc");
    if (h.block_size != t.block_size) return disagree("block_size");
    if (h.algo != t.algo) return disagree("algorithm");
    if (h.use_dict != t.use_dict) return disagree("use_dict");
    if (h.dict_size != t.dict_size) return disagree("dict_size");
    if (h.verify != t.verify) return disagree("verify");
  }

  // Compression options.
  const uint32_t bs = ht.block_size;
  if (bs < kMinBlockSize || bs > kMaxBlockSize || (bs & (bs - 1)) != 0)
    return Status::Corruption(name_ + ": block size " + std::to_string(bs) +
                              " is not a power of two in [4096, 65536]");
  if (ht.algo != static_cast<uint8_t>(Algo::kLz4) && ht.algo != static_cast<uint8_t>(Algo::kZstd))
    return Status::NotSupported(name_ + ": unknown compression algorithm " +
                                std::to_string(ht.algo));
  if (ht.use_dict != 0)
    return Status::NotSupported(name_ + ": compression dictionaries are not supported");
  if (ht.verify > 1)
    return Status::Corruption(name_ + ": verify field is " + std::to_string(ht.verify));

  // Where things are.
  const uint64_t data_start = kHeaderSize + static_cast<uint64_t>(ht.dict_size);
  const uint64_t n = ht.index_size;
  if (ht.index_offset < data_start || ht.index_offset > trailer_off)
    return Status::Corruption(name_ + ": jump table offset " + std::to_string(ht.index_offset) +
                              " outside [" + std::to_string(data_start) + ", " +
                              std::to_string(trailer_off) + "]");
  if (n > (trailer_off - ht.index_offset) / 4)
    return Status::Corruption(name_ + ": jump table of " + std::to_string(n) + " entries at " +
                              std::to_string(ht.index_offset) + " runs past the trailer at " +
                              std::to_string(trailer_off));
  const uint64_t want_blocks = ht.original_size / bs + (ht.original_size % bs != 0 ? 1 : 0);
  if (n != want_blocks)
    return Status::Corruption(name_ + ": jump table has " + std::to_string(n) +
                              " entries but original size " + std::to_string(ht.original_size) +
                              " needs " + std::to_string(want_blocks) + " blocks of " +
                              std::to_string(bs));
  const uint64_t min_len = ht.verify ? kCrcSize + 1 : 1;
  const uint64_t max_len = MaxStoredLength(bs);
  if (n * min_len > ht.index_offset - data_start)
    return Status::Corruption(name_ + ": " + std::to_string(n) + " blocks cannot fit in the " +
                              std::to_string(ht.index_offset - data_start) +
                              " bytes before the jump table");

  info_.header_flags = h.flags;
  info_.trailer_flags = t.flags;
  info_.index_offset = ht.index_offset;
  info_.num_blocks = n;
  info_.original_size = ht.original_size;
  info_.index_crc = ht.index_crc;
  info_.block_size = bs;
  info_.algo = static_cast<Algo>(ht.algo);
  info_.level = ht.level;
  info_.verify = ht.verify != 0;
  info_.dict_size = ht.dict_size;
  info_.header_has_index = header_has_index;

  // The jump table: n is now bounded by the file size, so this allocation is.
  offsets_.resize(n + 1);
  std::vector<char> chunk(std::min(n, kIndexChunkEntries) * 4);
  uint32_t crc = 0;
  uint64_t pos = data_start;
  uint64_t bad_entry = UINT64_MAX;
  uint32_t bad_len = 0;
  for (uint64_t i = 0; i < n;) {
    const uint64_t cnt = std::min(n - i, kIndexChunkEntries);
    OVBD_RETURN_IF_ERROR(base_->ReadExact(ht.index_offset + i * 4, cnt * 4, chunk.data()));
    crc = Crc32cRaw(crc, chunk.data(), cnt * 4);
    for (uint64_t k = 0; k < cnt; ++k, ++i) {
      const uint32_t len = DecodeU32(chunk.data() + k * 4);
      if ((len < min_len || len > max_len) && bad_entry == UINT64_MAX) {
        bad_entry = i;
        bad_len = len;
      }
      offsets_[i] = pos;
      pos += len;
    }
  }
  offsets_[n] = pos;
  // Files from writers predating the digest flag carry no usable index_crc.
  if (ht.flags & kFlagDigest) {
    if (crc != ht.index_crc) {
      char msg[80];
      std::snprintf(msg, sizeof msg, "(stored %08x, computed %08x)", ht.index_crc, crc);
      return Status::Corruption(name_ + ": jump table CRC mismatch " + msg);
    }
  }
  if (bad_entry != UINT64_MAX)
    return Status::Corruption(name_ + ": jump table entry " + std::to_string(bad_entry) +
                              ": stored length " + std::to_string(bad_len) + " outside [" +
                              std::to_string(min_len) + ", " + std::to_string(max_len) + "]");
  if (pos != ht.index_offset)
    return Status::Corruption(name_ + ": blocks end at " + std::to_string(pos) +
                              " but the jump table starts at " + std::to_string(ht.index_offset));
  return Status::OK();
}

Status ZFileReader::ReadRun(uint64_t first, uint64_t end, char* dst) const {
  const uint64_t off = offsets_[first];
  const uint64_t len = offsets_[end] - off;
  // The jump table was checked against the file's size at open: a short read
  // means the file was truncated since, which is EIO naming the blocks.
  Status s = base_->ReadMapped(off, len, dst);
  if (!s.ok())
    return s.Annotate(name_ + ": reading blocks " + std::to_string(first) + ".." +
                      std::to_string(end - 1));
  return Status::OK();
}

Status ZFileReader::DecodeBlock(uint64_t block, const char* stored, char* dst) const {
  size_t clen = offsets_[block + 1] - offsets_[block];
  if (info_.verify) {
    clen -= internal::kCrcSize;
    const uint32_t want = DecodeU32(stored + clen);
    const uint32_t got = internal::BlockCrc(stored, clen);
    if (want != got) {
      char msg[80];
      std::snprintf(msg, sizeof msg, "checksum mismatch (stored %08x, computed %08x)", want, got);
      return BlockError(block, msg);
    }
  }
  std::string why;
  if (!decompressors_.Decompress(info_.algo, stored, clen, dst, RawLen(block), &why))
    return BlockError(block, why);
  return Status::OK();
}

Status ZFileReader::Read(uint64_t off, size_t n, char* buf, size_t* got, BlockCache* cache) const {
  *got = 0;
  const uint64_t size = info_.original_size;
  if (n == 0 || off >= size) return Status::OK();
  n = static_cast<size_t>(std::min<uint64_t>(n, size - off));
  const uint64_t bs = info_.block_size;
  const uint64_t end = off + n;
  const uint64_t last = (end - 1) / bs;

  // Copies the part of block b (decompressed at src) that [off, end) covers.
  auto copy_out = [&](uint64_t b, const char* src) {
    const uint64_t bstart = b * bs;
    const uint64_t from = std::max(off, bstart);
    const uint64_t to = std::min(end, bstart + RawLen(b));
    std::memcpy(buf + (from - off), src + (from - bstart), to - from);
  };

  uint64_t b = off / bs;
  while (b <= last) {
    if (cache) {
      if (BlockCache::Data d = cache->Get(b)) {
        copy_out(b, d.get());
        ++b;
        continue;
      }
    }
    // A run of consecutive uncached blocks fetched with one base read.
    uint64_t e = b + 1;
    while (e <= last && offsets_[e + 1] - offsets_[b] <= kMaxRunBytes &&
           !(cache && cache->Contains(e)))
      ++e;
    BufferPool::Lease stored = buffers_.Acquire(offsets_[e] - offsets_[b]);
    OVBD_RETURN_IF_ERROR(ReadRun(b, e, stored.data()));
    auto decode_run = [&]() -> Status {
      for (uint64_t i = b; i < e; ++i) {
        const char* src = stored.data() + (offsets_[i] - offsets_[b]);
        const uint64_t raw = RawLen(i);
        if (cache) {
          std::shared_ptr<char[]> d(new char[raw]);
          OVBD_RETURN_IF_ERROR(DecodeBlock(i, src, d.get()));
          copy_out(i, d.get());
          cache->Put(i, std::move(d));
        } else if (i * bs >= off && i * bs + raw <= end) {
          OVBD_RETURN_IF_ERROR(DecodeBlock(i, src, buf + (i * bs - off)));
        } else {
          BufferPool::Lease tmp = buffers_.Acquire(raw);
          OVBD_RETURN_IF_ERROR(DecodeBlock(i, src, tmp.data()));
          copy_out(i, tmp.data());
        }
      }
      return Status::OK();
    };
    Status decoded = decode_run();
    // Bytes that fail their check may have been damaged in a cache below
    // (a remote blob's block cache): drop that copy and read once more from
    // the source. Bad bytes are never served either way.
    if (decoded.IsCorruption() && base_->Refetch(offsets_[b], offsets_[e] - offsets_[b])) {
      OVBD_RETURN_IF_ERROR(ReadRun(b, e, stored.data()));
      decoded = decode_run();
    }
    OVBD_RETURN_IF_ERROR(decoded);
    b = e;
  }
  *got = n;
  return Status::OK();
}

Status ZFileReader::CheckAllBlocks(const ProgressFn& progress) const {
  const uint64_t n = info_.num_blocks;
  BufferPool::Lease raw = buffers_.Acquire(info_.block_size);
  for (uint64_t b = 0; b < n;) {
    uint64_t e = b + 1;
    while (e < n && offsets_[e + 1] - offsets_[b] <= kCheckRunBytes) ++e;
    BufferPool::Lease stored = buffers_.Acquire(offsets_[e] - offsets_[b]);
    OVBD_RETURN_IF_ERROR(ReadRun(b, e, stored.data()));
    for (uint64_t i = b; i < e; ++i)
      OVBD_RETURN_IF_ERROR(DecodeBlock(i, stored.data() + (offsets_[i] - offsets_[b]), raw.data()));
    b = e;
    if (progress) progress(std::min<uint64_t>(b * info_.block_size, info_.original_size),
                           info_.original_size);
  }
  return Status::OK();
}

}  // namespace

Result<bool> IsZFile(const ReadableFile& f) {
  char buf[internal::kMagicSize];
  size_t got = 0;
  OVBD_RETURN_IF_ERROR(f.ReadAt(0, sizeof buf, buf, &got));
  return internal::HasMagic(buf, got);
}

Result<std::unique_ptr<Reader>> Reader::Open(std::shared_ptr<const ReadableFile> base,
                                             size_t cache_blocks) {
  if (!base) return Status::InvalidArgument("zfile: no base file");
  auto r = std::make_unique<ZFileReader>(std::move(base), cache_blocks);
  OVBD_RETURN_IF_ERROR(r->Init());
  return std::unique_ptr<Reader>(std::move(r));
}

}  // namespace ovbd::zfile
