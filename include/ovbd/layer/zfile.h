// ZFile: OverlayBD's block-compressed container (see docs/FORMAT.md, "ZFile").
//
// A ZFile wraps any byte stream (in practice an LSMT layer) as fixed-size
// blocks compressed one by one with lz4 or zstd, a jump table of compressed
// lengths, and a 512-byte header and trailer. Reading one yields a
// ReadableFile of the original bytes, so the LSMT reader stacks on top of it
// unchanged.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "ovbd/io/env.h"

namespace ovbd::zfile {

constexpr size_t kHeaderSize = 512;   // header and trailer are both 512 bytes
constexpr uint32_t kMinBlockSize = 4096;
constexpr uint32_t kMaxBlockSize = 65536;

enum class Algo : uint8_t { kLz4 = 1, kZstd = 2 };

struct Options {
  uint32_t block_size = 4096;  // power of two, 4 KiB .. 64 KiB
  Algo algo = Algo::kLz4;
  int level = 0;               // 0: the algorithm's default
  bool verify = true;          // per-block CRC32C
};

// What the header/trailer of a ZFile says (decoded, validated).
struct Info {
  uint64_t header_flags = 0;
  uint64_t trailer_flags = 0;
  uint64_t index_offset = 0;    // byte offset of the jump table
  uint64_t num_blocks = 0;      // jump-table entries
  uint64_t original_size = 0;   // bytes of the wrapped stream
  uint32_t index_crc = 0;
  uint32_t block_size = 0;
  Algo algo = Algo::kLz4;
  uint8_t level = 0;
  bool verify = false;
  uint32_t dict_size = 0;
  bool header_has_index = false;  // header flag bit 3
};

// Called with (done, total) units of work during long operations.
using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;

// True when the file starts with the ZFile magic (cheap; no validation).
Result<bool> IsZFile(const ReadableFile& f);

// A decompressing, thread-safe view of a ZFile. ReadAt of a range whose
// block fails its CRC or does not decompress to the expected size returns
// kCorruption naming the file and the block; it never returns garbage.
class Reader : public ReadableFile {
 public:
  // Validates header, trailer, digests and the jump table. `cache_blocks`
  // decompressed blocks are kept in an LRU cache (0 disables it).
  static Result<std::unique_ptr<Reader>> Open(std::shared_ptr<const ReadableFile> base,
                                              size_t cache_blocks = 256);
  virtual const Info& info() const = 0;
  // Decompresses every block and checks every CRC; first error wins.
  virtual Status CheckAllBlocks(const ProgressFn& progress = nullptr) const = 0;
};

// Compresses all of `src` into `dst` (which must be empty) and syncs it.
Status Write(const ReadableFile& src, RWFile* dst, const Options& opts,
             const ProgressFn& progress = nullptr);

}  // namespace ovbd::zfile
