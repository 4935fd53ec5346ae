#include "cache_record.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "ovbd/io/coding.h"
#include "ovbd/io/crc32c.h"
#include "ovbd/remote/blob_ref.h"

namespace ovbd::remote::cache_record {

const char kMagic[8] = {'O', 'V', 'B', 'D', 'B', 'C', 'I', '\x01'};

namespace {
constexpr size_t kOffVersion = 8;
constexpr size_t kOffHeaderSize = 12;
constexpr size_t kOffRecordSize = 16;
constexpr size_t kOffBlockSize = 20;
constexpr size_t kOffBlobSize = 24;
constexpr size_t kOffDigest = 32;  // the 64 hex digits of the sha256 digest
constexpr size_t kDigestHex = 64;
constexpr size_t kOffCrc = 96;  // crc32c of bytes [0, 96)
static_assert(kOffDigest + kDigestHex == kOffCrc && kOffCrc + 4 <= kHeaderSize);

constexpr uint32_t kMinBlockSize = 64 << 10;
constexpr uint32_t kMaxBlockSize = 16 << 20;

// Record layout.
constexpr size_t kRecCrc = 0;  // crc32c of bytes [4, 32)
constexpr size_t kRecType = 4;
constexpr size_t kRecReservedA = 5;  // 3 bytes, zero
constexpr size_t kRecBlock = 8;
constexpr size_t kRecDataCrc = 16;
constexpr size_t kRecReservedB = 20;  // 4 bytes, zero
constexpr size_t kRecStamp = 24;
static_assert(kRecStamp + 8 == kRecordSize);

// Records are read in pieces of this many bytes (a multiple of the record size).
constexpr size_t kReadChunk = 64 * kRecordSize * 32;
static_assert(kReadChunk % kRecordSize == 0);

bool BlockRecord(uint8_t type) { return type == kBlock || type == kDrop; }
}  // namespace

void EncodeHeader(const Header& h, char* out) {
  std::memset(out, 0, kHeaderSize);
  std::memcpy(out, kMagic, sizeof(kMagic));
  EncodeU32(out + kOffVersion, kVersion);
  EncodeU32(out + kOffHeaderSize, kHeaderSize);
  EncodeU32(out + kOffRecordSize, kRecordSize);
  EncodeU32(out + kOffBlockSize, h.block_size);
  EncodeU64(out + kOffBlobSize, h.blob_size);
  const std::string_view hex = std::string_view(h.digest).substr(std::min<size_t>(7, h.digest.size()));
  std::memcpy(out + kOffDigest, hex.data(), std::min(hex.size(), kDigestHex));
  EncodeU32(out + kOffCrc, Crc32c(out, kOffCrc));
}

Status DecodeHeader(const char* in, const std::string& what, Header* h) {
  if (std::memcmp(in, kMagic, sizeof(kMagic)) != 0) {
    return Status::Corruption(what + ": not a block cache record file (bad magic)");
  }
  if (DecodeU32(in + kOffCrc) != Crc32c(in, kOffCrc)) {
    return Status::Corruption(what + ": record file header checksum mismatch");
  }
  if (DecodeU32(in + kOffVersion) != kVersion) {
    return Status::NotSupported(what + ": record file version " +
                                std::to_string(DecodeU32(in + kOffVersion)));
  }
  if (DecodeU32(in + kOffHeaderSize) != kHeaderSize ||
      DecodeU32(in + kOffRecordSize) != kRecordSize) {
    return Status::Corruption(what + ": unexpected record file header or record size");
  }
  const uint32_t bs = DecodeU32(in + kOffBlockSize);
  if (bs < kMinBlockSize || bs > kMaxBlockSize || (bs & (bs - 1)) != 0) {
    return Status::Corruption(what + ": bad block size " + std::to_string(bs));
  }
  const uint64_t size = DecodeU64(in + kOffBlobSize);
  if (size / bs >= kMaxBlocks) {
    return Status::Corruption(what + ": blob size " + std::to_string(size) + " past the limit");
  }
  std::string digest = "sha256:" + std::string(in + kOffDigest, kDigestHex);
  if (!ValidateDigest(digest).ok()) return Status::Corruption(what + ": bad digest in header");
  h->block_size = bs;
  h->blob_size = size;
  h->digest = std::move(digest);
  return Status::OK();
}

void EncodeRecord(const Record& r, char* out) {
  std::memset(out, 0, kRecordSize);
  out[kRecType] = static_cast<char>(r.type);
  EncodeU64(out + kRecBlock, r.block);
  EncodeU32(out + kRecDataCrc, r.data_crc);
  EncodeU64(out + kRecStamp, r.stamp);
  EncodeU32(out + kRecCrc, Crc32c(out + 4, kRecordSize - 4));
}

bool DecodeRecord(const char* in, Record* r) {
  if (DecodeU32(in + kRecCrc) != Crc32c(in + 4, kRecordSize - 4)) return false;
  const auto type = static_cast<uint8_t>(in[kRecType]);
  if (type < kBlock || type > kVerified) return false;
  for (size_t i = 0; i < 3; ++i) {
    if (in[kRecReservedA + i] != 0) return false;
  }
  if (DecodeU32(in + kRecReservedB) != 0) return false;
  r->type = type;
  r->block = DecodeU64(in + kRecBlock);
  r->data_crc = DecodeU32(in + kRecDataCrc);
  r->stamp = DecodeU64(in + kRecStamp);
  return true;
}

Result<ScanResult> ReadIndex(const ReadableFile& f, const std::function<void(const Record&)>& fn) {
  ScanResult out;
  const uint64_t size = f.Size();
  if (size < kHeaderSize) {
    return Status::Corruption(f.Name() + ": record file shorter than its header");
  }
  char hdr[kHeaderSize];
  OVBD_RETURN_IF_ERROR(f.ReadExact(0, kHeaderSize, hdr));
  OVBD_RETURN_IF_ERROR(DecodeHeader(hdr, f.Name(), &out.header));
  const uint64_t bs = out.header.block_size;
  const uint64_t blocks = (out.header.blob_size + bs - 1) / bs;

  uint64_t bad_since_good = 0;
  std::vector<char> buf(kReadChunk);
  uint64_t pos = kHeaderSize;
  while (pos < size) {
    OVBD_ASSIGN_OR_RETURN(ReadableFile::DataRun run, f.NextData(pos));
    if (run.begin >= size || run.end <= run.begin) break;
    // Start at the record holding run.begin (a run may begin mid-record).
    uint64_t at = std::max(pos, kHeaderSize + (run.begin - kHeaderSize) / kRecordSize * kRecordSize);
    const uint64_t end = std::min(run.end, size);
    while (at < end) {
      // Whole records only; a partial one at the very end is a torn tail.
      const uint64_t whole = (std::min<uint64_t>(end, at + kReadChunk) - at) / kRecordSize * kRecordSize;
      if (whole == 0) {  // a record cut short by a hole or by the end of the file
        ++bad_since_good;
        at += kRecordSize;
        break;
      }
      OVBD_RETURN_IF_ERROR(f.ReadExact(at, whole, buf.data()));
      for (uint64_t i = 0; i < whole; i += kRecordSize) {
        Record r;
        const bool good = DecodeRecord(buf.data() + i, &r) && (!BlockRecord(r.type) || r.block < blocks);
        if (!good) {
          ++bad_since_good;
          continue;
        }
        out.bad += bad_since_good;
        bad_since_good = 0;
        ++out.good;
        out.valid_end = at + i + kRecordSize;
        fn(r);
      }
      at += whole;
    }
    pos = at;  // on a record boundary
  }
  out.torn = bad_since_good;
  return out;
}

}  // namespace ovbd::remote::cache_record
