// ZFile writer: produces the same layout as `overlaybd-commit -z`
// (see docs/FORMAT.md, "ZFile"):
//
//   header (512) | block 0 [crc] | block 1 [crc] | ... | jump table | trailer (512)
//
// The output is written front to back in ~1 MiB batches; the final header is
// written last, over the placeholder at offset 0, once the index is known.

#include <algorithm>
#include <cstring>
#include <vector>

#include "ovbd/io/coding.h"
#include "ovbd/io/crc32c.h"
#include "ovbd/layer/zfile.h"
#include "zfile_codec.h"

namespace ovbd::zfile {

namespace {

constexpr size_t kBatchBytes = 1 << 20;  // source bytes read, and output bytes buffered

Status ValidateOptions(const Options& o) {
  const uint32_t bs = o.block_size;
  if (bs < kMinBlockSize || bs > kMaxBlockSize || (bs & (bs - 1)) != 0)
    return Status::InvalidArgument("zfile: block size " + std::to_string(bs) +
                                   " is not a power of two in [4096, 65536]");
  if (o.algo != Algo::kLz4 && o.algo != Algo::kZstd)
    return Status::InvalidArgument("zfile: unknown algorithm " +
                                   std::to_string(static_cast<int>(o.algo)));
  if (o.level < 0 || o.level > 255)
    return Status::InvalidArgument("zfile: compression level " + std::to_string(o.level) +
                                   " outside [0, 255]");
  return Status::OK();
}

// Buffers output and writes it at increasing offsets.
class SequentialOut {
 public:
  SequentialOut(RWFile* dst, uint64_t start) : dst_(dst), pos_(start) {
    buf_.reserve(kBatchBytes * 2);
  }
  // Space for n more bytes at the end of the buffer; call Commit(used) after.
  char* Reserve(size_t n) {
    used_ = buf_.size();
    buf_.resize(used_ + n);
    return buf_.data() + used_;
  }
  void Commit(size_t n) { buf_.resize(used_ + n); }
  void Append(const char* p, size_t n) { buf_.insert(buf_.end(), p, p + n); }
  Status MaybeFlush() { return buf_.size() >= kBatchBytes ? Flush() : Status::OK(); }
  Status Flush() {
    if (buf_.empty()) return Status::OK();
    OVBD_RETURN_IF_ERROR(dst_->WriteAt(pos_, buf_.data(), buf_.size()));
    pos_ += buf_.size();
    buf_.clear();
    return Status::OK();
  }
  // Offset the next appended byte will land at.
  uint64_t Tell() const { return pos_ + buf_.size(); }

 private:
  RWFile* dst_;
  uint64_t pos_;
  size_t used_ = 0;
  std::vector<char> buf_;
};

}  // namespace

Status Write(const ReadableFile& src, RWFile* dst, const Options& opts,
             const ProgressFn& progress) {
  using namespace internal;
  if (dst == nullptr) return Status::InvalidArgument("zfile: no destination file");
  OVBD_RETURN_IF_ERROR(ValidateOptions(opts));
  if (dst->Size() != 0)
    return Status::InvalidArgument(dst->Name() + ": ZFile destination is not empty");
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<Compressor> comp, Compressor::Create(opts.algo, opts.level));

  const uint64_t total = src.Size();
  const uint32_t bs = opts.block_size;
  const size_t bound = CompressBound(opts.algo, bs) + kCrcSize;

  HeaderTrailer ht;
  ht.size = kStructSize;
  ht.block_size = bs;
  ht.algo = static_cast<uint8_t>(opts.algo);
  ht.level = static_cast<uint8_t>(opts.level);
  ht.verify = opts.verify ? 1 : 0;

  // Placeholder header (the data-file header of an unfinished file); the
  // final one overwrites it at the end.
  char htbuf[kHeaderSize];
  ht.flags = kFlagHeader | kFlagDataFile | kFlagDigest;
  EncodeHeaderTrailer(ht, htbuf);
  SequentialOut out(dst, 0);
  out.Append(htbuf, kHeaderSize);

  std::vector<uint32_t> lengths;
  lengths.reserve(static_cast<size_t>(std::min<uint64_t>(total / bs + 1, 1 << 20)));
  std::vector<char> in(std::min<uint64_t>(std::max<uint64_t>(total, 1), kBatchBytes));
  for (uint64_t off = 0; off < total;) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(in.size(), total - off));
    size_t got = 0;
    OVBD_RETURN_IF_ERROR(src.ReadAt(off, want, in.data(), &got));
    if (got != want)
      return Status::Corruption(src.Name() + ": short read at " + std::to_string(off) +
                                " while compressing (" + std::to_string(got) + " of " +
                                std::to_string(want) + " bytes)");
    for (size_t p = 0; p < want; p += bs) {
      const size_t n = std::min<size_t>(bs, want - p);
      char* d = out.Reserve(bound);
      OVBD_ASSIGN_OR_RETURN(size_t clen, comp->Compress(in.data() + p, n, d, bound - kCrcSize));
      if (opts.verify) {
        EncodeU32(d + clen, BlockCrc(d, clen));
        clen += kCrcSize;
      }
      out.Commit(clen);
      lengths.push_back(static_cast<uint32_t>(clen));
    }
    off += want;
    OVBD_RETURN_IF_ERROR(out.MaybeFlush());
    if (progress) progress(off, total);
  }

  // Jump table, then trailer.
  ht.index_offset = out.Tell();
  ht.index_size = lengths.size();
  ht.original_size = total;
  uint32_t crc = 0;
  for (uint32_t len : lengths) {
    char b[4];
    EncodeU32(b, len);
    crc = Crc32cRaw(crc, b, 4);
    out.Append(b, 4);
    OVBD_RETURN_IF_ERROR(out.MaybeFlush());
  }
  ht.index_crc = crc;
  ht.flags = kWriterTrailerFlags;
  EncodeHeaderTrailer(ht, htbuf);
  out.Append(htbuf, kHeaderSize);
  OVBD_RETURN_IF_ERROR(out.Flush());

  ht.flags = kWriterHeaderFlags;
  EncodeHeaderTrailer(ht, htbuf);
  OVBD_RETURN_IF_ERROR(dst->WriteAt(0, htbuf, kHeaderSize));
  return dst->Sync();
}

}  // namespace ovbd::zfile
