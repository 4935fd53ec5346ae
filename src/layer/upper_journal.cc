#include "upper_journal.h"

#include <cstring>

#include "ovbd/io/coding.h"
#include "ovbd/io/crc32c.h"

namespace ovbd::upper_journal {

const char kMagic[8] = {'O', 'V', 'B', 'D', 'J', 'N', 'L', '\x01'};

namespace {
constexpr size_t kOffVersion = 8;
constexpr size_t kOffRecordSize = 12;
constexpr size_t kOffFirstSeq = 16;
constexpr size_t kOffUuid = 24;
constexpr size_t kUuidSize = 37;
constexpr size_t kOffCrc = 64;  // crc32c of bytes [0, 64)
static_assert(kOffUuid + kUuidSize <= kOffCrc);
}  // namespace

void EncodeHeader(const Header& h, char* out) {
  std::memset(out, 0, kHeaderSize);
  std::memcpy(out, kMagic, sizeof(kMagic));
  EncodeU32(out + kOffVersion, kVersion);
  EncodeU32(out + kOffRecordSize, kRecordSize);
  EncodeU64(out + kOffFirstSeq, h.first_seq);
  std::memcpy(out + kOffUuid, h.uuid.data(), std::min(h.uuid.size(), kUuidSize - 1));
  EncodeU32(out + kOffCrc, Crc32c(out, kOffCrc));
}

Status DecodeHeader(const char* in, const std::string& what, Header* h) {
  if (std::memcmp(in, kMagic, sizeof(kMagic)) != 0) {
    return Status::Corruption(what + ": not an ovbd upper journal (bad magic)");
  }
  if (DecodeU32(in + kOffCrc) != Crc32c(in, kOffCrc)) {
    return Status::Corruption(what + ": journal header checksum mismatch");
  }
  if (DecodeU32(in + kOffVersion) != kVersion) {
    return Status::NotSupported(what + ": journal version " +
                                std::to_string(DecodeU32(in + kOffVersion)));
  }
  if (DecodeU32(in + kOffRecordSize) != kRecordSize) {
    return Status::Corruption(what + ": unexpected journal record size");
  }
  h->first_seq = DecodeU64(in + kOffFirstSeq);
  h->uuid = DecodeFixedString(in + kOffUuid, kUuidSize);
  return Status::OK();
}

void EncodeRecord(const Record& r, char* out) {
  std::memset(out, 0, kRecordSize);
  out[4] = static_cast<char>(r.type);
  EncodeU64(out + 8, r.seq);
  EncodeU64(out + 16, r.offset);
  EncodeU64(out + 24, r.length);
  EncodeU32(out, Crc32c(out + 4, kRecordSize - 4));
}

bool DecodeRecord(const char* in, Record* r) {
  if (DecodeU32(in) != Crc32c(in + 4, kRecordSize - 4)) return false;
  r->type = static_cast<uint8_t>(in[4]);
  if (r->type < kData || r->type > kForget) return false;
  r->seq = DecodeU64(in + 8);
  r->offset = DecodeU64(in + 16);
  r->length = DecodeU64(in + 24);
  return true;
}

}  // namespace ovbd::upper_journal
