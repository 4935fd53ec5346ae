// Encoding of the block cache's record files, blobs/sha256-HEX.idx
// (docs/FORMAT.md, "Block cache"). Internal to the remote library.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "ovbd/io/env.h"
#include "ovbd/io/status.h"

namespace ovbd::remote::cache_record {

constexpr size_t kHeaderSize = 128;
constexpr size_t kRecordSize = 32;
// Records start at kHeaderSize and are kRecordSize apart, so none crosses a
// 512-byte sector: a power cut keeps each record whole or not at all.
static_assert(kHeaderSize % kRecordSize == 0 && 512 % kRecordSize == 0);
constexpr uint32_t kVersion = 1;
extern const char kMagic[8];  // "OVBDBCI\x01"

// The most blocks one blob may have: bounds the memory of its block map.
constexpr uint64_t kMaxBlocks = uint64_t{1} << 24;

struct Header {
  uint32_t block_size = 0;
  uint64_t blob_size = 0;
  std::string digest;  // "sha256:HEX"
};

enum RecordType : uint8_t {
  kBlock = 1,     // block `block` is present; its bytes have CRC32C `data_crc`
  kDrop = 2,      // block `block` is gone (evicted, invalidated, found damaged)
  kPin = 3,       // the blob is pinned
  kUnpin = 4,     // the blob is no longer pinned
  kVerified = 5,  // the whole blob was checked against its digest
};

struct Record {
  uint8_t type = 0;
  uint64_t block = 0;     // kBlock, kDrop
  uint32_t data_crc = 0;  // kBlock
  // Cache-wide sequence number of the record: orders the blocks of every
  // blob for the LRU rebuilt at open.
  uint64_t stamp = 0;
};

void EncodeHeader(const Header& h, char* out /* kHeaderSize bytes */);
// Checks magic, checksum, version, sizes and the digest's form.
Status DecodeHeader(const char* in, const std::string& what, Header* out);
void EncodeRecord(const Record& r, char* out /* kRecordSize bytes */);
// False when the checksum fails, the type is unknown or a reserved byte is set.
bool DecodeRecord(const char* in, Record* out);

// What ReadIndex found besides the records it handed over.
struct ScanResult {
  Header header;
  uint64_t good = 0;   // records handed to the callback
  uint64_t bad = 0;    // damaged records followed by good ones (dropped one by one)
  uint64_t torn = 0;   // bad records (or a partial one) after the last good one
  // Just past the last good record: where the next record is appended.
  uint64_t valid_end = kHeaderSize;
};

// Reads a record file: the header (an error if it is damaged), then every
// record in order, handing each good one whose block lies inside the blob
// to `fn`. A bad record is skipped alone; bad records after the last good
// one are the torn tail of an interrupted append. Reads only the file's
// data runs (a hole holds no record), in bounded pieces.
Result<ScanResult> ReadIndex(const ReadableFile& f, const std::function<void(const Record&)>& fn);

}  // namespace ovbd::remote::cache_record
