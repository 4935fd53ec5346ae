#include "ovbd/layer/lsmt_writer.h"

#include <algorithm>
#include <cstring>
#include <memory>

namespace ovbd::lsmt {
namespace {
constexpr size_t kFlushBytes = 4 << 20;
const std::string kZeroUuid = "00000000-0000-0000-0000-000000000000";
}  // namespace

Writer::Writer(RWFile* out, WriteOptions opts) : out_(out) {
  header_.flags = kFlagHeader | kFlagDataFile | kFlagSealed;
  header_.virtual_size = opts.virtual_size;
  header_.uuid = opts.uuid.empty() ? NewUuid() : opts.uuid;
  header_.parent_uuid = opts.parent_uuid.empty() ? kZeroUuid : opts.parent_uuid;
  header_.user_tag = opts.message;
  if (opts.virtual_size % kSectorSize != 0) {
    status_ = Status::InvalidArgument("virtual size must be a multiple of 512");
  } else if (opts.message.size() >= kUserTagSize) {
    status_ = Status::InvalidArgument("commit message longer than 255 bytes");
  } else if (!IsValidUuid(header_.uuid) || !IsValidUuid(header_.parent_uuid)) {
    status_ = Status::InvalidArgument("uuid must look like XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX");
  }
}

Status Writer::Check(uint64_t offset, uint64_t len) {
  if (!status_.ok()) return status_;
  if (offset % kSectorSize || len % kSectorSize) {
    return Status::InvalidArgument("layer writes must be 512-byte aligned");
  }
  if (offset < next_offset_) return Status::InvalidArgument("layer writes must be in order");
  if (offset + len > header_.virtual_size) {
    return Status::InvalidArgument("layer write past the virtual size");
  }
  next_offset_ = offset + len;
  return Status::OK();
}

void Writer::AddEntry(uint64_t off, uint64_t len, uint64_t moff, bool zeroed) {
  // Extend the previous entry when this one continues it.
  if (!entries_.empty()) {
    Entry& p = entries_.back();
    if (p.offset + p.length == off && p.zeroed == zeroed &&
        (zeroed || p.moffset + p.length == moff)) {
      uint64_t room = kWriterMaxEntryLength - std::min<uint64_t>(p.length, kWriterMaxEntryLength);
      uint64_t take = std::min(room, len);
      p.length += static_cast<uint32_t>(take);
      off += take;
      moff += take;
      len -= take;
    }
  }
  while (len > 0) {
    Entry e;
    e.offset = off;
    e.length = static_cast<uint32_t>(std::min<uint64_t>(kWriterMaxEntryLength, len));
    e.moffset = moff;
    e.zeroed = zeroed;
    entries_.push_back(e);
    off += e.length;
    moff += zeroed ? 0 : e.length;
    len -= e.length;
  }
}

Status Writer::FlushData() {
  if (buf_.empty()) return Status::OK();
  OVBD_RETURN_IF_ERROR(out_->WriteAt(data_pos_, buf_.data(), buf_.size()));
  data_pos_ += buf_.size();
  buf_.clear();
  return Status::OK();
}

Status Writer::AddData(uint64_t offset, const char* data, size_t len) {
  OVBD_RETURN_IF_ERROR(Check(offset, len));
  if (len == 0) return Status::OK();
  const uint64_t moff = (data_pos_ + buf_.size()) / kSectorSize;
  AddEntry(offset / kSectorSize, len / kSectorSize, moff, false);
  buf_.append(data, len);
  if (buf_.size() >= kFlushBytes) return status_ = FlushData();
  return Status::OK();
}

Status Writer::AddZeroed(uint64_t offset, uint64_t len) {
  OVBD_RETURN_IF_ERROR(Check(offset, len));
  // Zeroed entries carry the current data position, as overlaybd writes them.
  AddEntry(offset / kSectorSize, len / kSectorSize, (data_pos_ + buf_.size()) / kSectorSize,
           true);
  return Status::OK();
}

Status Writer::Finish() {
  if (!status_.ok()) return status_;
  OVBD_RETURN_IF_ERROR(FlushData());
  std::vector<Segment> segs;
  segs.reserve(entries_.size());
  for (const Entry& e : entries_) {
    Segment s;
    s.offset = e.offset;
    s.length = e.length;
    s.moffset = e.moffset;
    s.zeroed = e.zeroed;
    segs.push_back(s);
  }
  OVBD_ASSIGN_OR_RETURN(uint64_t end, WriteIndexAndTrailer(out_, data_pos_, segs, header_, true));
  (void)end;
  // The header of a committed layer carries no index location: readers use
  // the trailer (this is what overlaybd writes).
  char block[kHeaderSize];
  Header h = header_;
  h.index_offset = 0;
  h.index_size = 0;
  EncodeHeader(h, block);
  OVBD_RETURN_IF_ERROR(out_->WriteAt(0, block, kHeaderSize));
  return out_->Sync();
}

Result<uint64_t> WriteIndexAndTrailer(RWFile* out, uint64_t index_offset,
                                      const std::vector<Segment>& segments, Header base,
                                      bool pad, bool sync) {
  const uint64_t per_block = kHeaderSize / kEntrySize;
  uint64_t count = segments.size();
  if (pad) count = (count + per_block - 1) / per_block * per_block;
  if (pad && count == 0) count = per_block;
  std::string buf(count * kEntrySize + kHeaderSize, '\0');
  for (size_t i = 0; i < segments.size(); ++i) {
    const Segment& s = segments[i];
    Entry e;
    e.offset = s.offset;
    e.length = s.length;
    e.moffset = s.moffset;
    e.zeroed = s.zeroed;
    EncodeEntry(e, buf.data() + i * kEntrySize);
  }
  Entry padding;
  padding.offset = kInvalidOffset;
  for (uint64_t i = segments.size(); i < count; ++i)
    EncodeEntry(padding, buf.data() + i * kEntrySize);
  base.flags = kFlagDataFile | kFlagSealed;
  base.index_offset = index_offset;
  base.index_size = count;
  EncodeHeader(base, buf.data() + count * kEntrySize);
  OVBD_RETURN_IF_ERROR(out->WriteAt(index_offset, buf.data(), buf.size()));
  const uint64_t end = index_offset + buf.size();
  if (out->Size() > end) OVBD_RETURN_IF_ERROR(out->Truncate(end));
  if (sync) OVBD_RETURN_IF_ERROR(out->Sync());
  return end;
}

Status CreateFromRaw(const ReadableFile& raw, RWFile* out, WriteOptions opts,
                     const ProgressFn& progress) {
  const uint64_t size = raw.Size();
  const uint64_t rounded = (size + kSectorSize - 1) / kSectorSize * kSectorSize;
  opts.virtual_size = std::max(opts.virtual_size, rounded);
  Writer w(out, opts);
  constexpr size_t kChunk = 1 << 20;
  constexpr size_t kBlock = 4096;
  std::unique_ptr<char[]> buf(new char[kChunk]);
  for (uint64_t off = 0; off < size; off += kChunk) {
    const size_t n = static_cast<size_t>(std::min<uint64_t>(kChunk, size - off));
    OVBD_RETURN_IF_ERROR(raw.ReadExact(off, n, buf.get()));
    // Zero-pad the last partial sector.
    const size_t padded = (n + kSectorSize - 1) / kSectorSize * kSectorSize;
    std::memset(buf.get() + n, 0, padded - n);
    size_t run_start = 0, run_len = 0;
    for (size_t b = 0; b < padded; b += kBlock) {
      const size_t len = std::min(kBlock, padded - b);
      bool zero = true;
      for (size_t i = 0; i < len && zero; i += 8) {
        uint64_t v = 0;
        std::memcpy(&v, buf.get() + b + i, std::min<size_t>(8, len - i));
        zero = v == 0;
      }
      if (zero) {
        if (run_len) OVBD_RETURN_IF_ERROR(w.AddData(off + run_start, buf.get() + run_start, run_len));
        run_len = 0;
        continue;
      }
      if (run_len == 0) run_start = b;
      run_len += len;
    }
    if (run_len) OVBD_RETURN_IF_ERROR(w.AddData(off + run_start, buf.get() + run_start, run_len));
    if (progress) progress(off + n, size);
  }
  return w.Finish();
}

}  // namespace ovbd::lsmt
