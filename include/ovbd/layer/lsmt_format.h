// LSMT: OverlayBD's layer format (see docs/FORMAT.md, "LSMT layer").
//
// Encoding and decoding of the 4 KiB header/trailer and the 16-byte index
// entry. Everything is explicit little-endian; nothing here reads files.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "ovbd/io/status.h"

namespace ovbd::lsmt {

constexpr uint64_t kSectorSize = 512;
constexpr size_t kHeaderSize = 4096;      // header at 0, trailer at file_size - 4096
constexpr uint64_t kHeaderSectors = kHeaderSize / kSectorSize;
constexpr size_t kEntrySize = 16;
constexpr size_t kHeaderFieldsSize = 390;  // value of the `size` field: bytes actually used
constexpr size_t kUuidSize = 37;           // 36 characters + NUL
constexpr size_t kUserTagSize = 256;

constexpr uint64_t kMaxOffset = (uint64_t{1} << 50) - 1;      // 50-bit sector offset
constexpr uint64_t kInvalidOffset = kMaxOffset;                // padding entries
constexpr uint32_t kMaxEntryLength = (uint32_t{1} << 14) - 1;  // 14-bit length: 16383 sectors
constexpr uint64_t kMaxMOffset = (uint64_t{1} << 55) - 1;      // 55-bit data offset
// overlaybd refuses read-only indexes with more entries than this; so do we.
constexpr uint64_t kMaxReadOnlyEntries = uint64_t{1} << 20;

// Header/trailer flags.
constexpr uint32_t kFlagHeader = 1u << 0;    // this is a header (vs trailer)
constexpr uint32_t kFlagDataFile = 1u << 1;  // file holds data (vs index-only file)
constexpr uint32_t kFlagSealed = 1u << 2;    // trailer written: index is valid
constexpr uint32_t kFlagSparseRW = 1u << 4;  // overlaybd's sparse writable layer

// Field offsets inside the header block.
constexpr size_t kOffMagic0 = 0;
constexpr size_t kOffMagic1 = 8;
constexpr size_t kOffSize = 24;
constexpr size_t kOffFlags = 28;
constexpr size_t kOffIndexOffset = 32;
constexpr size_t kOffIndexSize = 40;
constexpr size_t kOffVirtualSize = 48;
constexpr size_t kOffUuid = 56;
constexpr size_t kOffParentUuid = 93;
constexpr size_t kOffVersion = 132;
constexpr size_t kOffSubVersion = 133;
constexpr size_t kOffUserTag = 134;
static_assert(kOffUserTag + kUserTagSize == kHeaderFieldsSize);
static_assert(kOffParentUuid + kUuidSize == kOffVersion - 2);
static_assert(kHeaderFieldsSize <= kHeaderSize);

extern const char kMagic0[8];   // "LSMT\0\1\2\0"
extern const char kMagic1[16];  // 65 7e 63 d2 94 44 08 4c a2 d2 c8 ec 4f cf ae 8a

struct Header {
  uint32_t flags = 0;
  uint64_t index_offset = 0;  // bytes
  uint64_t index_size = 0;    // entries, padding included
  uint64_t virtual_size = 0;  // bytes
  std::string uuid;           // 36 characters, upper-case, or empty
  std::string parent_uuid;
  uint8_t version = 1;
  uint8_t sub_version = 1;
  std::string user_tag;       // commit message, < 256 bytes

  bool is_header() const { return flags & kFlagHeader; }
  bool is_sealed() const { return flags & kFlagSealed; }
};

// Writes a full 4096-byte block (zero padded).
void EncodeHeader(const Header& h, char* out);
// Decodes and validates magics and string fields; `what` names the file.
Status DecodeHeader(const char* in, const std::string& what, Header* out);

// One index entry. Units are sectors.
struct Entry {
  uint64_t offset = 0;   // virtual offset
  uint32_t length = 0;   // 1..16383
  uint64_t moffset = 0;  // offset of the data in the layer file
  bool zeroed = false;   // range reads zeros and hides lower layers; no data
  uint8_t tag = 0;       // 0 on disk

  bool is_padding() const { return offset == kInvalidOffset; }
};

void EncodeEntry(const Entry& e, char* out);
Entry DecodeEntry(const char* in);

// A uuid in the textual form overlaybd writes: 8-4-4-4-12 upper-case hex.
std::string NewUuid();
bool IsValidUuid(const std::string& s);

}  // namespace ovbd::lsmt
