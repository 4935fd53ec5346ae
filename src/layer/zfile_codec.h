// Internal to the ZFile reader and writer: the 512-byte header/trailer
// encoding, the checksum conventions and thin wrappers over lz4 and zstd.
// See docs/FORMAT.md ("ZFile") for the on-disk layout these functions encode.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ovbd/io/mutex.h"
#include "ovbd/io/status.h"
#include "ovbd/layer/zfile.h"

struct ZSTD_CCtx_s;
struct ZSTD_DCtx_s;

namespace ovbd::zfile::internal {

// Header/trailer flag bits (u64 at offset 32).
constexpr uint64_t kFlagHeader = 1u << 0;           // 1: header, 0: trailer
constexpr uint64_t kFlagDataFile = 1u << 1;         // 1: data file (always set in practice)
constexpr uint64_t kFlagSealed = 1u << 2;           // set in the trailer of a finished file
constexpr uint64_t kFlagInfoValid = 1u << 3;        // header carries the index fields too
constexpr uint64_t kFlagDigest = 1u << 4;           // the digest field at 28 is valid
constexpr uint64_t kFlagIndexCompressed = 1u << 5;  // jump table compressed (not supported)
constexpr uint64_t kKnownFlags = (1u << 6) - 1;

// What overlaybd-commit -z writes (and so do we).
constexpr uint64_t kWriterHeaderFlags = kFlagHeader | kFlagDataFile | kFlagInfoValid | kFlagDigest;
constexpr uint64_t kWriterTrailerFlags = kFlagDataFile | kFlagSealed | kFlagDigest;

// Field offsets inside the 512-byte header/trailer.
constexpr size_t kOffMagic0 = 0;
constexpr size_t kOffMagic1 = 8;
constexpr size_t kOffSize = 24;
constexpr size_t kOffDigest = 28;
constexpr size_t kOffFlags = 32;
constexpr size_t kOffIndexOffset = 40;
constexpr size_t kOffIndexSize = 48;
constexpr size_t kOffOriginalSize = 56;
constexpr size_t kOffIndexCrc = 64;
constexpr size_t kOffReserved0 = 68;
constexpr size_t kOffBlockSize = 72;
constexpr size_t kOffAlgo = 76;
constexpr size_t kOffLevel = 77;
constexpr size_t kOffUseDict = 78;
constexpr size_t kOffArgs = 80;
constexpr size_t kOffDictSize = 84;
constexpr size_t kOffVerify = 88;

constexpr uint32_t kStructSize = 96;        // value of the `size` field we write
constexpr uint32_t kBlockCrcSeed = 100007;  // initial CRC register of block checksums
constexpr size_t kMagicSize = 24;           // magic0 + magic1
constexpr size_t kCrcSize = 4;              // per-block checksum when verify=1

// The 24 magic bytes at offset 0 ("ZFile\0\1\0" + "tuji.yyf@Alibaba").
extern const char kMagic[kMagicSize];

// True when p[0..n) starts with the ZFile magic.
bool HasMagic(const char* p, size_t n);

// A decoded header or trailer. Raw values: nothing here is validated beyond
// the magic and the digest.
struct HeaderTrailer {
  uint32_t size = kStructSize;
  uint32_t digest = 0;
  uint64_t flags = 0;
  uint64_t index_offset = 0;
  uint64_t index_size = 0;  // number of jump-table entries (blocks)
  uint64_t original_size = 0;
  uint32_t index_crc = 0;
  uint32_t reserved0 = 0;
  uint32_t block_size = 0;
  uint8_t algo = 0;
  uint8_t level = 0;
  uint8_t use_dict = 0;
  uint32_t args = 0;
  uint32_t dict_size = 0;
  uint8_t verify = 0;
};

// The digest convention: Crc32cRaw(0) over all 512 bytes with the digest
// field read as zero.
uint32_t ComputeDigest(const char* buf512);

// Encodes `ht` into 512 bytes (unused bytes zero). When ht.flags has
// kFlagDigest the digest field is computed; otherwise it is written as 0.
void EncodeHeaderTrailer(const HeaderTrailer& ht, char* out512);

// Decodes 512 bytes; checks the magic and (when kFlagDigest is set) the
// digest, or that the digest field is 0 when it is not (pre-digest writers).
// `what` names the structure in messages ("<file>: header").
Status DecodeHeaderTrailer(const char* in512, const std::string& what, HeaderTrailer* out);

// Checksum of one stored block: Crc32cRaw(100007) over the compressed bytes.
uint32_t BlockCrc(const char* p, size_t n);

// Largest stored length (compressed + checksum) the reader accepts for one
// block of `block_size` bytes. Covers the worst-case expansion of lz4 and
// zstd with room to spare.
inline uint64_t MaxStoredLength(uint32_t block_size) {
  return static_cast<uint64_t>(block_size) * 2 + 1024;
}

// Worst-case compressed size of n bytes for the algorithm (no checksum).
size_t CompressBound(Algo algo, size_t n);

// One compressor, owned by one thread at a time.
class Compressor {
 public:
  // level 0 picks the default (lz4: LZ4_compress_default; zstd: 3).
  static Result<std::unique_ptr<Compressor>> Create(Algo algo, int level);
  ~Compressor();
  Compressor(const Compressor&) = delete;
  Compressor& operator=(const Compressor&) = delete;

  // Compresses src[0..n) into dst (capacity >= CompressBound(algo, n)).
  Result<size_t> Compress(const char* src, size_t n, char* dst, size_t cap);

 private:
  Compressor(Algo algo, int level) : algo_(algo), level_(level) {}
  Algo algo_;
  int level_;
  ZSTD_CCtx_s* zctx_ = nullptr;
  std::unique_ptr<char[]> lz4hc_state_;
};

// Decompression contexts shared by concurrent readers: Acquire hands out an
// exclusive context (creating one when none is free), Release returns it.
class DecompressorPool {
 public:
  DecompressorPool() = default;
  ~DecompressorPool();
  DecompressorPool(const DecompressorPool&) = delete;
  DecompressorPool& operator=(const DecompressorPool&) = delete;

  // Decompresses src[0..n) into dst, which must come out as exactly
  // `expected` bytes. On failure *why says what went wrong.
  bool Decompress(Algo algo, const char* src, size_t n, char* dst, size_t expected,
                  std::string* why);

 private:
  ZSTD_DCtx_s* Acquire();
  void Release(ZSTD_DCtx_s* ctx);

  Mutex mu_;
  std::vector<ZSTD_DCtx_s*> free_ GUARDED_BY(mu_);
};

}  // namespace ovbd::zfile::internal
