// Writing committed LSMT layers, as overlaybd's commit writes them: header,
// data appended in virtual-offset order, index padded to a multiple of 4 KiB
// with invalid entries, trailer.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "ovbd/io/env.h"
#include "ovbd/layer/lsmt_format.h"
#include "ovbd/layer/segment.h"

namespace ovbd::lsmt {

// overlaybd splits long writes into entries of at most this many sectors
// (16383 rounded down to whole 4 KiB blocks); we do the same.
constexpr uint32_t kWriterMaxEntryLength = 16320;

struct WriteOptions {
  uint64_t virtual_size = 0;  // bytes, multiple of 512
  std::string uuid;           // empty: a new random uuid
  std::string parent_uuid;    // empty: all zeros
  std::string message;        // commit message (user_tag), < 256 bytes
};

using ProgressFn = std::function<void(uint64_t done, uint64_t total)>;

class Writer {
 public:
  // `out` must be empty; it is owned by the caller and must outlive the writer.
  Writer(RWFile* out, WriteOptions opts);

  // Appends data for virtual bytes [offset, offset+len). Offsets and lengths
  // are multiples of 512 and strictly increasing across calls.
  Status AddData(uint64_t offset, const char* data, size_t len);
  // Records [offset, offset+len) as zeroed (hides lower layers, no data).
  Status AddZeroed(uint64_t offset, uint64_t len);
  // Writes index, trailer and the final header, and syncs the file.
  Status Finish();

  const std::string& uuid() const { return header_.uuid; }

 private:
  Status Check(uint64_t offset, uint64_t len);
  Status FlushData();
  void AddEntry(uint64_t offset_sec, uint64_t len_sec, uint64_t moff_sec, bool zeroed);

  RWFile* out_;
  Header header_;
  std::vector<Entry> entries_;
  std::string buf_;             // pending data, written in large chunks
  uint64_t data_pos_ = kHeaderSize;  // file offset where buf_ starts
  uint64_t next_offset_ = 0;    // smallest virtual byte offset allowed next
  Status status_;
};

// Appends `segments` (sorted, in sectors) as an index at byte `index_offset`
// of `out`, followed by a trailer built from `base` (flags set to sealed
// trailer), and with sync=true syncs. With pad=true the index is padded to
// 4 KiB with invalid entries, as overlaybd does. Returns the file size.
Result<uint64_t> WriteIndexAndTrailer(RWFile* out, uint64_t index_offset,
                                      const std::vector<Segment>& segments, Header base,
                                      bool pad, bool sync = true);

// Converts a raw disk image into a committed layer. All-zero 4 KiB blocks
// become holes. The virtual size is the image size rounded up to 512 bytes
// unless opts.virtual_size is larger.
Status CreateFromRaw(const ReadableFile& raw, RWFile* out, WriteOptions opts,
                     const ProgressFn& progress = nullptr);

}  // namespace ovbd::lsmt
