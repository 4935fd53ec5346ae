// Encoding of the upper layer's journal (docs/FORMAT.md, "Upper journal").
// Internal to the layer library.
#pragma once

#include <cstdint>
#include <string>

#include "ovbd/io/status.h"

namespace ovbd::upper_journal {

constexpr size_t kHeaderSize = 4096;
constexpr size_t kRecordSize = 32;
constexpr uint32_t kVersion = 1;
extern const char kMagic[8];  // "OVBDJNL\x01"

enum RecordType : uint8_t {
  kData = 1,    // sectors hold data in the data file, in place
  kZero = 2,    // sectors read zeros and hide lower layers
  kForget = 3,  // sectors fall through to lower layers again
};

struct Header {
  uint64_t first_seq = 1;
  std::string uuid;  // the upper's uuid, also in the data file header
};

struct Record {
  uint8_t type = 0;
  uint64_t seq = 0;
  uint64_t offset = 0;  // sectors
  uint64_t length = 0;  // sectors
};

void EncodeHeader(const Header& h, char* out /* kHeaderSize bytes */);
Status DecodeHeader(const char* in, const std::string& what, Header* out);
void EncodeRecord(const Record& r, char* out /* kRecordSize bytes */);
// False when the checksum fails or the type is unknown.
bool DecodeRecord(const char* in, Record* out);

}  // namespace ovbd::upper_journal
