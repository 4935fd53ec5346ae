#include "zfile_codec.h"

#include <lz4.h>
#include <lz4hc.h>
#include <zstd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "ovbd/io/coding.h"
#include "ovbd/io/crc32c.h"

namespace ovbd::zfile::internal {

const char kMagic[kMagicSize] = {'Z', 'F', 'i', 'l', 'e', '\0', '\1', '\0',  // magic0
                                 't', 'u', 'j', 'i', '.', 'y', 'y', 'f',     // magic1
                                 '@', 'A', 'l', 'i', 'b', 'a', 'b', 'a'};

bool HasMagic(const char* p, size_t n) {
  return n >= kMagicSize && std::memcmp(p, kMagic, kMagicSize) == 0;
}

uint32_t ComputeDigest(const char* buf512) {
  static const char kZero[4] = {0, 0, 0, 0};
  uint32_t crc = Crc32cRaw(0, buf512, kOffDigest);
  crc = Crc32cRaw(crc, kZero, 4);
  return Crc32cRaw(crc, buf512 + kOffDigest + 4, kHeaderSize - kOffDigest - 4);
}

void EncodeHeaderTrailer(const HeaderTrailer& ht, char* out) {
  std::memset(out, 0, kHeaderSize);
  std::memcpy(out + kOffMagic0, kMagic, kMagicSize);
  EncodeU32(out + kOffSize, ht.size);
  EncodeU64(out + kOffFlags, ht.flags);
  EncodeU64(out + kOffIndexOffset, ht.index_offset);
  EncodeU64(out + kOffIndexSize, ht.index_size);
  EncodeU64(out + kOffOriginalSize, ht.original_size);
  EncodeU32(out + kOffIndexCrc, ht.index_crc);
  EncodeU32(out + kOffReserved0, ht.reserved0);
  EncodeU32(out + kOffBlockSize, ht.block_size);
  out[kOffAlgo] = static_cast<char>(ht.algo);
  out[kOffLevel] = static_cast<char>(ht.level);
  out[kOffUseDict] = static_cast<char>(ht.use_dict);
  EncodeU32(out + kOffArgs, ht.args);
  EncodeU32(out + kOffDictSize, ht.dict_size);
  out[kOffVerify] = static_cast<char>(ht.verify);
  // Digest last: it covers every other byte.
  EncodeU32(out + kOffDigest, (ht.flags & kFlagDigest) ? ComputeDigest(out) : 0);
}

Status DecodeHeaderTrailer(const char* in, const std::string& what, HeaderTrailer* ht) {
  if (!HasMagic(in, kHeaderSize)) return Status::Corruption(what + ": bad ZFile magic");
  ht->size = DecodeU32(in + kOffSize);
  ht->digest = DecodeU32(in + kOffDigest);
  ht->flags = DecodeU64(in + kOffFlags);
  ht->index_offset = DecodeU64(in + kOffIndexOffset);
  ht->index_size = DecodeU64(in + kOffIndexSize);
  ht->original_size = DecodeU64(in + kOffOriginalSize);
  ht->index_crc = DecodeU32(in + kOffIndexCrc);
  ht->reserved0 = DecodeU32(in + kOffReserved0);
  ht->block_size = DecodeU32(in + kOffBlockSize);
  ht->algo = static_cast<uint8_t>(in[kOffAlgo]);
  ht->level = static_cast<uint8_t>(in[kOffLevel]);
  ht->use_dict = static_cast<uint8_t>(in[kOffUseDict]);
  ht->args = DecodeU32(in + kOffArgs);
  ht->dict_size = DecodeU32(in + kOffDictSize);
  ht->verify = static_cast<uint8_t>(in[kOffVerify]);
  if (ht->flags & kFlagDigest) {
    const uint32_t want = ComputeDigest(in);
    if (want != ht->digest) {
      char msg[96];
      std::snprintf(msg, sizeof msg, ": digest mismatch (stored %08x, computed %08x)", ht->digest,
                    want);
      return Status::Corruption(what + msg);
    }
  } else {
    // Old writers (before the digest flag) left the digest, the index CRC
    // and the high flag bits uninitialised: overlaybd's own published base
    // layer carries garbage there. Without the digest flag only the known
    // flag bits mean anything, and neither checksum field is trusted.
    ht->flags &= kKnownFlags;
    ht->digest = 0;
    ht->index_crc = 0;
  }
  return Status::OK();
}

uint32_t BlockCrc(const char* p, size_t n) { return Crc32cRaw(kBlockCrcSeed, p, n); }

size_t CompressBound(Algo algo, size_t n) {
  if (algo == Algo::kZstd) return ZSTD_compressBound(n);
  return static_cast<size_t>(LZ4_compressBound(static_cast<int>(n)));
}

// ---- Compressor ----

Result<std::unique_ptr<Compressor>> Compressor::Create(Algo algo, int level) {
  if (level < 0) return Status::InvalidArgument("zfile: negative compression level");
  std::unique_ptr<Compressor> c(new Compressor(algo, level));
  switch (algo) {
    case Algo::kLz4:
      if (level > 0) {
        c->lz4hc_state_.reset(new char[static_cast<size_t>(LZ4_sizeofStateHC())]);
      }
      break;
    case Algo::kZstd:
      if (level > ZSTD_maxCLevel())
        return Status::InvalidArgument("zfile: zstd level " + std::to_string(level) +
                                       " above maximum " + std::to_string(ZSTD_maxCLevel()));
      c->zctx_ = ZSTD_createCCtx();
      if (c->zctx_ == nullptr) return Status::IOError("zfile: ZSTD_createCCtx", ENOMEM);
      break;
    default:
      return Status::NotSupported("zfile: unknown compression algorithm " +
                                  std::to_string(static_cast<int>(algo)));
  }
  return c;
}

Compressor::~Compressor() {
  if (zctx_ != nullptr) ZSTD_freeCCtx(zctx_);
}

Result<size_t> Compressor::Compress(const char* src, size_t n, char* dst, size_t cap) {
  if (algo_ == Algo::kZstd) {
    const int lvl = level_ == 0 ? ZSTD_CLEVEL_DEFAULT : level_;
    const size_t r = ZSTD_compressCCtx(zctx_, dst, cap, src, n, lvl);
    if (ZSTD_isError(r))
      return Status::InvalidArgument(std::string("zfile: zstd compression failed: ") +
                                     ZSTD_getErrorName(r));
    return r;
  }
  const int isrc = static_cast<int>(n);
  const int icap = static_cast<int>(std::min<size_t>(cap, static_cast<size_t>(INT32_MAX)));
  int r;
  if (level_ > 0) {
    r = LZ4_compress_HC_extStateHC(lz4hc_state_.get(), src, dst, isrc, icap, level_);
  } else {
    r = LZ4_compress_default(src, dst, isrc, icap);
  }
  if (r <= 0) return Status::InvalidArgument("zfile: lz4 compression failed");
  return static_cast<size_t>(r);
}

// ---- DecompressorPool ----

DecompressorPool::~DecompressorPool() {
  for (ZSTD_DCtx* d : free_) ZSTD_freeDCtx(d);
}

ZSTD_DCtx* DecompressorPool::Acquire() {
  {
    MutexLock l(&mu_);
    if (!free_.empty()) {
      ZSTD_DCtx* d = free_.back();
      free_.pop_back();
      return d;
    }
  }
  return ZSTD_createDCtx();
}

void DecompressorPool::Release(ZSTD_DCtx* d) {
  constexpr size_t kMaxIdle = 16;
  {
    MutexLock l(&mu_);
    if (free_.size() < kMaxIdle) {
      free_.push_back(d);
      return;
    }
  }
  ZSTD_freeDCtx(d);
}

bool DecompressorPool::Decompress(Algo algo, const char* src, size_t n, char* dst,
                                  size_t expected, std::string* why) {
  if (algo == Algo::kLz4) {
    if (n > static_cast<size_t>(INT32_MAX) || expected > static_cast<size_t>(INT32_MAX)) {
      *why = "block too large for lz4";
      return false;
    }
    // The safe decoder never reads past src+n nor writes past dst+expected.
    const int r = LZ4_decompress_safe(src, dst, static_cast<int>(n), static_cast<int>(expected));
    if (r < 0) {
      *why = "lz4 decompression failed (malformed block)";
      return false;
    }
    if (static_cast<size_t>(r) != expected) {
      *why = "lz4 block decompressed to " + std::to_string(r) + " bytes, expected " +
             std::to_string(expected);
      return false;
    }
    return true;
  }
  if (algo == Algo::kZstd) {
    ZSTD_DCtx* d = Acquire();
    if (d == nullptr) {
      *why = "cannot allocate a zstd context";
      return false;
    }
    const size_t r = ZSTD_decompressDCtx(d, dst, expected, src, n);
    Release(d);
    if (ZSTD_isError(r)) {
      *why = std::string("zstd decompression failed: ") + ZSTD_getErrorName(r);
      return false;
    }
    if (r != expected) {
      *why = "zstd block decompressed to " + std::to_string(r) + " bytes, expected " +
             std::to_string(expected);
      return false;
    }
    return true;
  }
  *why = "unknown compression algorithm";
  return false;
}

}  // namespace ovbd::zfile::internal
