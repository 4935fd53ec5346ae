#include "upper_journal.h"

#include <algorithm>
#include <cstring>
#include <vector>

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
  const uint32_t bi = r.batch_index <= kMaxBatchIndex ? r.batch_index : 0;
  out[5] = static_cast<char>(bi & 0xff);
  out[6] = static_cast<char>((bi >> 8) & 0xff);
  out[7] = static_cast<char>((bi >> 16) & 0xff);
  EncodeU64(out + 8, r.seq);
  EncodeU64(out + 16, r.offset);
  EncodeU64(out + 24, r.length);
  EncodeU32(out, Crc32c(out + 4, kRecordSize - 4));
}

bool DecodeRecord(const char* in, Record* r) {
  if (DecodeU32(in) != Crc32c(in + 4, kRecordSize - 4)) return false;
  r->type = static_cast<uint8_t>(in[4]);
  if (r->type < kData || r->type > kForget) return false;
  r->batch_index = static_cast<uint32_t>(static_cast<uint8_t>(in[5])) |
                   static_cast<uint32_t>(static_cast<uint8_t>(in[6])) << 8 |
                   static_cast<uint32_t>(static_cast<uint8_t>(in[7])) << 16;
  r->seq = DecodeU64(in + 8);
  r->offset = DecodeU64(in + 16);
  r->length = DecodeU64(in + 24);
  return true;
}

namespace {
constexpr uint64_t kChunkRecords = 4096;  // 128 KiB per read

// Counts the records at or after `from` (a record boundary) that have a good
// checksum and belong to a commit that began after sequence number `stop`
// (the record the scan stopped at), reading only the data runs of the file:
// holes read as zeros and cannot hold a record.
Result<uint64_t> CountLater(const ReadableFile& f, uint64_t from, uint64_t stop) {
  const uint64_t size = f.Size();
  auto boundary_at_or_before = [](uint64_t x) {
    return kHeaderSize + (x - kHeaderSize) / kRecordSize * kRecordSize;
  };
  std::vector<char> buf(kChunkRecords * kRecordSize);
  uint64_t later = 0;
  uint64_t pos = from;  // a record boundary; every record before it is counted
  while (pos + kRecordSize <= size) {
    OVBD_ASSIGN_OR_RETURN(ReadableFile::DataRun run, f.NextData(pos));
    if (run.begin >= run.end) break;  // only a hole from pos on
    // The record that holds run.begin starts at or before it.
    uint64_t at = std::max(pos, boundary_at_or_before(std::max(run.begin, kHeaderSize)));
    const uint64_t end = std::min(run.end, size);
    while (at < end && at + kRecordSize <= size) {
      const uint64_t n = std::min({kChunkRecords, (end - at + kRecordSize - 1) / kRecordSize,
                                   (size - at) / kRecordSize});
      OVBD_RETURN_IF_ERROR(f.ReadExact(at, n * kRecordSize, buf.data()));
      for (uint64_t i = 0; i < n; ++i) {
        Record r;
        // seq - batch_index is where r's commit began; a record from before
        // the stop (seq <= stop) is no evidence either way.
        if (DecodeRecord(buf.data() + i * kRecordSize, &r) && r.seq > stop &&
            r.seq - r.batch_index > stop) {
          ++later;
        }
      }
      at += n * kRecordSize;
    }
    pos = at;
  }
  return later;
}
}  // namespace

Result<Scan> ReadJournal(const ReadableFile& f, const ScanOptions& opts,
                         const std::function<void(const Record&)>& on_record) {
  Scan out;
  out.file_size = f.Size();
  char hb[kHeaderSize];
  OVBD_RETURN_IF_ERROR(f.ReadExact(0, sizeof hb, hb));
  OVBD_RETURN_IF_ERROR(DecodeHeader(hb, f.Name(), &out.header));
  const uint64_t size = out.file_size;
  const uint64_t vsec = opts.volume_sectors;
  out.next_seq = out.header.first_seq;
  out.valid_end = kHeaderSize;
  std::vector<char> buf(kChunkRecords * kRecordSize);
  bool stopped = false;
  while (!stopped && out.valid_end + kRecordSize <= size) {
    // Read no further than the data run the next record is in: a hole reads
    // as zeros, which is never a valid record, so the scan stops there.
    OVBD_ASSIGN_OR_RETURN(ReadableFile::DataRun run, f.NextData(out.valid_end));
    if (run.begin >= run.end || run.begin >= out.valid_end + kRecordSize) {
      out.stop = Stop::kTorn;
      stopped = true;
      break;
    }
    const uint64_t in_run = (std::min(run.end, size) - out.valid_end + kRecordSize - 1) / kRecordSize;
    const uint64_t n = std::min<uint64_t>({kChunkRecords, in_run, (size - out.valid_end) / kRecordSize});
    OVBD_RETURN_IF_ERROR(f.ReadExact(out.valid_end, n * kRecordSize, buf.data()));
    for (uint64_t k = 0; k < n; ++k) {
      Record r;
      if (!DecodeRecord(buf.data() + k * kRecordSize, &r) || r.seq != out.next_seq) {
        out.stop = Stop::kTorn;
        stopped = true;
        break;
      }
      if (r.length == 0 || r.offset > vsec || r.length > vsec - r.offset) {
        out.stop = Stop::kOutOfRange;
        out.bad = r;
        stopped = true;
        break;
      }
      if (on_record) on_record(r);
      ++out.records;
      ++out.next_seq;
      out.valid_end += kRecordSize;
    }
  }
  if (!stopped && out.valid_end != size) out.stop = Stop::kTorn;  // a partial record
  if (stopped && opts.look_past_stop) {
    OVBD_ASSIGN_OR_RETURN(out.later, CountLater(f, out.valid_end + kRecordSize, out.next_seq));
  }
  return out;
}

}  // namespace ovbd::upper_journal
