// Encoding of the upper layer's journal (docs/FORMAT.md, "Upper journal").
// Internal to the layer library.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "ovbd/io/env.h"
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
  // Position of the record in the commit that appended it (0 for the first;
  // 0 for every record a compaction wrote, and past kMaxBatchIndex). Lets
  // recovery tell a commit torn out of order by a power cut from damage.
  uint32_t batch_index = 0;
  uint64_t seq = 0;
  uint64_t offset = 0;  // sectors
  uint64_t length = 0;  // sectors
};

void EncodeHeader(const Header& h, char* out /* kHeaderSize bytes */);
Status DecodeHeader(const char* in, const std::string& what, Header* out);
constexpr uint32_t kMaxBatchIndex = (1u << 24) - 1;  // 24 bits on disk
void EncodeRecord(const Record& r, char* out /* kRecordSize bytes */);
// False when the checksum fails or the type is unknown.
bool DecodeRecord(const char* in, Record* out);

// The journal reader: records in, validated mapping records out. It is the
// one reader behind replay (Upper::Open, and so `ovbd check`), repair
// (Upper::CutJournalAtDamage) and the fuzzer; what to do with a journal that
// stops early is the caller's policy.
//
// A record is valid when its checksum and type are right, its sequence
// number is the next one, and its range is non-empty and inside the volume.
// The scan stops at the first record that is not, or where the data run the
// records are in ends (SEEK_HOLE: a hole holds no record). It reads only up
// to there, however large the file claims to be; when asked to look
// past the stop for valid records (damage in the middle rather than a torn
// tail), it reads only the file's data, skipping holes (NextData), so a
// journal extended sparsely costs nothing more to open.
enum class Stop : uint8_t {
  kEnd,         // every byte after the header is a valid record
  kTorn,        // a bad checksum, type or sequence number, or a partial record
  kOutOfRange,  // a well-formed record whose range is empty or past the volume
};

struct ScanOptions {
  uint64_t volume_sectors = UINT64_MAX;  // records must lie inside [0, volume_sectors)
  bool look_past_stop = true;            // count valid records after the stop
};

struct Scan {
  Header header;
  uint64_t records = 0;    // valid records, in order from header.first_seq
  uint64_t valid_end = 0;  // byte offset just past the last valid record
  uint64_t next_seq = 0;   // the sequence number the next record must carry
  uint64_t file_size = 0;
  Stop stop = Stop::kEnd;
  Record bad;              // the record that stopped the scan (kOutOfRange)
  // Records after the stop with a good checksum that belong to a commit
  // *after* the one the stop is in (only with look_past_stop): if any, the
  // journal was damaged in the middle, not torn at its end by a crash. A
  // commit appends its records in one write and syncs before the next
  // commit appends, so only the last commit can be torn, and a power cut may
  // keep its sectors in any order: valid records of that same commit after
  // a bad one are a torn tail (their commit never completed), not damage.
  // A record's commit starts at seq - batch_index.
  uint64_t later = 0;
};

// Reads the journal in `f`, calling on_record for each valid record in order.
// Fails only when the header is bad or the file cannot be read.
Result<Scan> ReadJournal(const ReadableFile& f, const ScanOptions& opts,
                         const std::function<void(const Record&)>& on_record);

}  // namespace ovbd::upper_journal
