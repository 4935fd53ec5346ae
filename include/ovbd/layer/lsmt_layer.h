// A read-only LSMT layer: header, trailer and validated index in memory, data
// read on demand from the (possibly decompressing) file beneath it.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "ovbd/io/env.h"
#include "ovbd/io/mutex.h"
#include "ovbd/layer/lsmt_format.h"
#include "ovbd/layer/segment.h"

namespace ovbd::lsmt {

class Layer {
 public:
  // Opens a committed or sealed layer: the trailer (last 4 KiB) is
  // authoritative. Every index entry is checked against the file size and the
  // virtual size; entries must be sorted and non-overlapping.
  static Result<std::shared_ptr<Layer>> Open(std::shared_ptr<const ReadableFile> file);

  // Opens overlaybd's append-only writable pair (data file + index file) as a
  // read-only layer: index entries are applied in file order, later ones win.
  static Result<std::shared_ptr<Layer>> OpenAppendOnly(std::shared_ptr<const ReadableFile> data,
                                                       std::shared_ptr<const ReadableFile> index);

  // A layer whose header and index the caller just wrote itself (a sealed
  // upper): no need to read them back.
  static std::shared_ptr<Layer> FromWritten(std::shared_ptr<const ReadableFile> file,
                                            Header trailer, std::vector<Segment> segments);

  const Header& header() const { return header_; }
  uint64_t virtual_size() const { return header_.virtual_size; }
  // Sorted, non-overlapping, padding removed. Units: sectors.
  const std::vector<Segment>& segments() const { return segments_; }
  uint64_t padding_entries() const { return padding_entries_; }
  const ReadableFile& file() const { return *file_; }
  const std::shared_ptr<const ReadableFile>& file_ptr() const { return file_; }

  // Reads the data of a mapped piece: `n` bytes at byte offset `moff_bytes`
  // of the layer file. A file that came up short (truncated while in use)
  // is EIO naming the file and the missing range.
  Status ReadData(uint64_t moff_bytes, size_t n, char* buf) const {
    if (failed_.load(std::memory_order_acquire)) return FailedStatus();
    return file_->ReadMapped(moff_bytes, n, buf);
  }
  // ReadData for a scan that reads each byte once (hydration): a ZFile's
  // cache of decompressed blocks is neither consulted nor filled.
  Status ReadDataOnce(uint64_t moff_bytes, size_t n, char* buf) const {
    if (failed_.load(std::memory_order_acquire)) return FailedStatus();
    return file_->ReadMappedOnce(moff_bytes, n, buf);
  }

  // Marks the layer unusable (its file changed behind our back): every
  // later read of its data fails instead of serving whatever is there now.
  void MarkFailed(const std::string& why) EXCLUDES(failed_mu_);
  bool failed() const { return failed_.load(std::memory_order_acquire); }
  Status FailedStatus() const EXCLUDES(failed_mu_);

  // Reads every mapped byte once (through ZFile CRCs when compressed).
  Status CheckData(const std::function<void(uint64_t, uint64_t)>& progress = nullptr) const;

 private:
  Layer() = default;
  Header header_;
  std::vector<Segment> segments_;
  uint64_t padding_entries_ = 0;
  std::shared_ptr<const ReadableFile> file_;
  std::atomic<bool> failed_{false};  // set once failed_why_ is
  mutable Mutex failed_mu_;
  std::string failed_why_ GUARDED_BY(failed_mu_);
};

// Validates decoded entries into segments; used by Open and by fuzzing.
// data_begin/data_end bound the data area in sectors.
Status ValidateIndex(const std::vector<Entry>& entries, uint64_t virtual_sectors,
                     uint64_t data_begin, uint64_t data_end, const std::string& what,
                     std::vector<Segment>* out, uint64_t* padding);

}  // namespace ovbd::lsmt
