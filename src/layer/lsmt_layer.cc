#include "ovbd/layer/lsmt_layer.h"

#include <memory>

#include "ovbd/layer/extent_map.h"

namespace ovbd::lsmt {

Status ValidateIndex(const std::vector<Entry>& entries, uint64_t virtual_sectors,
                     uint64_t data_begin, uint64_t data_end, const std::string& what,
                     std::vector<Segment>* out, uint64_t* padding) {
  out->clear();
  out->reserve(entries.size());
  *padding = 0;
  uint64_t prev_end = 0;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (e.is_padding()) {
      ++*padding;
      continue;
    }
    auto bad = [&](const std::string& why) {
      return Status::Corruption(what + ": index entry " + std::to_string(i) + " (offset " +
                                std::to_string(e.offset) + ", length " +
                                std::to_string(e.length) + " sectors): " + why);
    };
    if (e.length == 0) return bad("zero length");
    if (e.offset + e.length > virtual_sectors) return bad("extends past the virtual size");
    if (e.offset < prev_end) return bad("overlaps or is out of order with the previous entry");
    if (!e.zeroed && (e.moffset < data_begin || e.moffset + e.length > data_end)) {
      return bad("data at sector " + std::to_string(e.moffset) + " lies outside the data area");
    }
    prev_end = e.offset + e.length;
    Segment s;
    s.offset = e.offset;
    s.length = e.length;
    s.moffset = e.zeroed ? 0 : e.moffset;
    s.zeroed = e.zeroed;
    out->push_back(s);
  }
  return Status::OK();
}

namespace {

Status ReadEntries(const ReadableFile& f, uint64_t offset, uint64_t count,
                   std::vector<Entry>* out) {
  // Read in bounded chunks: the count was checked against the file size, so
  // memory use is bounded by the file itself.
  constexpr uint64_t kChunk = 4096;
  std::vector<char> buf(kChunk * kEntrySize);
  out->clear();
  out->reserve(count);
  for (uint64_t done = 0; done < count;) {
    uint64_t n = std::min(kChunk, count - done);
    OVBD_RETURN_IF_ERROR(f.ReadExact(offset + done * kEntrySize, n * kEntrySize, buf.data()));
    for (uint64_t i = 0; i < n; ++i) out->push_back(DecodeEntry(buf.data() + i * kEntrySize));
    done += n;
  }
  return Status::OK();
}

}  // namespace

Result<std::shared_ptr<Layer>> Layer::Open(std::shared_ptr<const ReadableFile> file) {
  const std::string& what = file->Name();
  const uint64_t size = file->Size();
  if (size < 2 * kHeaderSize) {
    return Status::Corruption(what + ": " + std::to_string(size) +
                              " bytes is too small for an LSMT layer (header + trailer)");
  }
  char block[kHeaderSize];
  Header head;
  OVBD_RETURN_IF_ERROR(file->ReadExact(0, kHeaderSize, block));
  OVBD_RETURN_IF_ERROR(DecodeHeader(block, what + " (header)", &head));
  if (!head.is_header()) return Status::Corruption(what + ": header block lacks the header flag");

  auto layer = std::shared_ptr<Layer>(new Layer());
  OVBD_RETURN_IF_ERROR(file->ReadExact(size - kHeaderSize, kHeaderSize, block));
  Status st = DecodeHeader(block, what + " (trailer)", &layer->header_);
  if (!st.ok()) {
    return Status::Corruption(what + ": no valid trailer (an unsealed writable layer?): " +
                              st.message());
  }
  Header& h = layer->header_;
  if (h.is_header() || !h.is_sealed()) {
    return Status::Corruption(what + ": trailer flags 0x" + [&] {
      char b[16];
      std::snprintf(b, sizeof b, "%x", h.flags);
      return std::string(b);
    }() + " do not mark a sealed trailer");
  }
  if (h.index_size > kMaxReadOnlyEntries) {
    return Status::TooLarge(what + ": index has " + std::to_string(h.index_size) +
                            " entries, more than the limit of " +
                            std::to_string(kMaxReadOnlyEntries));
  }
  const uint64_t index_end_limit = size - kHeaderSize;
  if (h.index_offset < kHeaderSize || h.index_offset > index_end_limit ||
      h.index_size > (index_end_limit - h.index_offset) / kEntrySize) {
    return Status::Corruption(what + ": index (offset " + std::to_string(h.index_offset) + ", " +
                              std::to_string(h.index_size) + " entries) lies outside the file");
  }
  std::vector<Entry> entries;
  OVBD_RETURN_IF_ERROR(ReadEntries(*file, h.index_offset, h.index_size, &entries));
  OVBD_RETURN_IF_ERROR(ValidateIndex(entries, h.virtual_size / kSectorSize, kHeaderSectors,
                                     h.index_offset / kSectorSize, what, &layer->segments_,
                                     &layer->padding_entries_));
  layer->file_ = std::move(file);
  return layer;
}

Result<std::shared_ptr<Layer>> Layer::OpenAppendOnly(std::shared_ptr<const ReadableFile> data,
                                                     std::shared_ptr<const ReadableFile> index) {
  char block[kHeaderSize];
  Header dh, ih;
  OVBD_RETURN_IF_ERROR(data->ReadExact(0, kHeaderSize, block));
  OVBD_RETURN_IF_ERROR(DecodeHeader(block, data->Name() + " (data header)", &dh));
  OVBD_RETURN_IF_ERROR(index->ReadExact(0, kHeaderSize, block));
  OVBD_RETURN_IF_ERROR(DecodeHeader(block, index->Name() + " (index header)", &ih));
  if (!(dh.flags & kFlagDataFile) || (ih.flags & kFlagDataFile)) {
    return Status::Corruption(data->Name() + ": data/index flags do not describe a writable pair");
  }
  if (dh.virtual_size != ih.virtual_size) {
    return Status::Corruption(data->Name() + ": data and index disagree on the virtual size");
  }
  const uint64_t count = (index->Size() - kHeaderSize) / kEntrySize;
  if (count > kMaxReadOnlyEntries * 16) {
    return Status::TooLarge(index->Name() + ": " + std::to_string(count) + " index records");
  }
  std::vector<Entry> entries;
  OVBD_RETURN_IF_ERROR(ReadEntries(*index, kHeaderSize, count, &entries));
  const uint64_t vsec = dh.virtual_size / kSectorSize;
  const uint64_t data_end = data->Size() / kSectorSize;
  ExtentMap map;
  for (size_t i = 0; i < entries.size(); ++i) {
    const Entry& e = entries[i];
    if (e.is_padding()) continue;
    if (e.length == 0 || e.offset + e.length > vsec ||
        (!e.zeroed && (e.moffset < kHeaderSectors || e.moffset + e.length > data_end))) {
      return Status::Corruption(index->Name() + ": record " + std::to_string(i) +
                                " is out of bounds");
    }
    map.Set(e.offset, e.length, e.moffset, e.zeroed);
  }
  auto layer = std::shared_ptr<Layer>(new Layer());
  layer->header_ = dh;
  layer->segments_ = map.ToSegments(kMaxEntryLength);
  layer->file_ = std::move(data);
  return layer;
}

std::shared_ptr<Layer> Layer::FromWritten(std::shared_ptr<const ReadableFile> file,
                                          Header trailer, std::vector<Segment> segments) {
  auto layer = std::shared_ptr<Layer>(new Layer());
  layer->header_ = std::move(trailer);
  layer->segments_ = std::move(segments);
  layer->padding_entries_ = layer->header_.index_size - layer->segments_.size();
  layer->file_ = std::move(file);
  return layer;
}

void Layer::MarkFailed(const std::string& why) {
  MutexLock lk(&failed_mu_);
  failed_why_ = why;
  failed_.store(true, std::memory_order_release);
}

Status Layer::FailedStatus() const {
  MutexLock lk(&failed_mu_);
  return Status::Corruption(file_->Name() + ": layer unusable: " + failed_why_);
}

Status Layer::CheckData(const std::function<void(uint64_t, uint64_t)>& progress) const {
  std::vector<char> buf(1 << 20);
  uint64_t total = 0, done = 0;
  for (const Segment& s : segments_)
    if (!s.zeroed) total += s.length;
  for (const Segment& s : segments_) {
    if (s.zeroed) continue;
    for (uint64_t d = 0; d < s.length;) {
      uint64_t n = std::min<uint64_t>(buf.size() / kSectorSize, s.length - d);
      OVBD_RETURN_IF_ERROR(ReadData((s.moffset + d) * kSectorSize, n * kSectorSize, buf.data()));
      d += n;
      done += n;
      if (progress) progress(done, total);
    }
  }
  return Status::OK();
}

}  // namespace ovbd::lsmt
