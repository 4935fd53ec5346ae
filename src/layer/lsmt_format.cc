#include "ovbd/layer/lsmt_format.h"

#include <cctype>
#include <cstdio>
#include <cstring>
#include <random>

#include "ovbd/io/coding.h"

namespace ovbd::lsmt {

const char kMagic0[8] = {'L', 'S', 'M', 'T', '\0', '\1', '\2', '\0'};
const char kMagic1[16] = {'\x65', '\x7e', '\x63', '\xd2', '\x94', '\x44', '\x08', '\x4c',
                          '\xa2', '\xd2', '\xc8', '\xec', '\x4f', '\xcf', '\xae', '\x8a'};

namespace {
void PutString(char* out, const std::string& s, size_t field) {
  // Always leaves room for the terminating NUL.
  std::memcpy(out, s.data(), std::min(s.size(), field - 1));
}
}  // namespace

void EncodeHeader(const Header& h, char* out) {
  std::memset(out, 0, kHeaderSize);
  std::memcpy(out + kOffMagic0, kMagic0, sizeof(kMagic0));
  std::memcpy(out + kOffMagic1, kMagic1, sizeof(kMagic1));
  EncodeU32(out + kOffSize, static_cast<uint32_t>(kHeaderFieldsSize));
  EncodeU32(out + kOffFlags, h.flags);
  EncodeU64(out + kOffIndexOffset, h.index_offset);
  EncodeU64(out + kOffIndexSize, h.index_size);
  EncodeU64(out + kOffVirtualSize, h.virtual_size);
  PutString(out + kOffUuid, h.uuid, kUuidSize);
  PutString(out + kOffParentUuid, h.parent_uuid, kUuidSize);
  out[kOffVersion] = static_cast<char>(h.version);
  out[kOffSubVersion] = static_cast<char>(h.sub_version);
  PutString(out + kOffUserTag, h.user_tag, kUserTagSize);
}

Status DecodeHeader(const char* in, const std::string& what, Header* h) {
  if (std::memcmp(in + kOffMagic0, kMagic0, 4) != 0 ||
      std::memcmp(in + kOffMagic0, kMagic0, sizeof(kMagic0)) != 0) {
    return Status::Corruption(what + ": not an LSMT layer (bad magic0)");
  }
  if (std::memcmp(in + kOffMagic1, kMagic1, sizeof(kMagic1)) != 0) {
    return Status::Corruption(what + ": not an LSMT layer (bad magic1)");
  }
  h->flags = DecodeU32(in + kOffFlags);
  h->index_offset = DecodeU64(in + kOffIndexOffset);
  h->index_size = DecodeU64(in + kOffIndexSize);
  h->virtual_size = DecodeU64(in + kOffVirtualSize);
  h->uuid = DecodeFixedString(in + kOffUuid, kUuidSize);
  h->parent_uuid = DecodeFixedString(in + kOffParentUuid, kUuidSize);
  h->version = static_cast<uint8_t>(in[kOffVersion]);
  h->sub_version = static_cast<uint8_t>(in[kOffSubVersion]);
  h->user_tag = DecodeFixedString(in + kOffUserTag, kUserTagSize);
  if (h->virtual_size % kSectorSize != 0) {
    return Status::Corruption(what + ": virtual size " + std::to_string(h->virtual_size) +
                              " is not a multiple of 512");
  }
  if (h->virtual_size / kSectorSize > kMaxOffset) {
    return Status::Corruption(what + ": virtual size " + std::to_string(h->virtual_size) +
                              " exceeds the 50-bit sector range");
  }
  return Status::OK();
}

void EncodeEntry(const Entry& e, char* out) {
  uint64_t w0 = (e.offset & kMaxOffset) | (uint64_t{e.length & kMaxEntryLength} << 50);
  uint64_t w1 = (e.moffset & kMaxMOffset) | (uint64_t{e.zeroed ? 1u : 0u} << 55) |
                (uint64_t{e.tag} << 56);
  EncodeU64(out, w0);
  EncodeU64(out + 8, w1);
}

Entry DecodeEntry(const char* in) {
  uint64_t w0 = DecodeU64(in);
  uint64_t w1 = DecodeU64(in + 8);
  Entry e;
  e.offset = w0 & kMaxOffset;
  e.length = static_cast<uint32_t>(w0 >> 50);
  e.moffset = w1 & kMaxMOffset;
  e.zeroed = (w1 >> 55) & 1;
  e.tag = static_cast<uint8_t>(w1 >> 56);
  return e;
}

std::string NewUuid() {
  std::random_device rd;
  std::mt19937_64 rng((uint64_t{rd()} << 32) ^ rd());
  uint64_t a = rng(), b = rng();
  // Version 4, variant 1.
  a = (a & ~uint64_t{0xF000}) | 0x4000;
  b = (b & ~(uint64_t{0xC} << 60)) | (uint64_t{0x8} << 60);
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%08X-%04X-%04X-%04X-%012llX", static_cast<unsigned>(a >> 32),
                static_cast<unsigned>((a >> 16) & 0xFFFF), static_cast<unsigned>(a & 0xFFFF),
                static_cast<unsigned>(b >> 48),
                static_cast<unsigned long long>(b & 0xFFFFFFFFFFFFull));
  return buf;
}

bool IsValidUuid(const std::string& s) {
  if (s.size() != 36) return false;
  for (size_t i = 0; i < s.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash != (s[i] == '-')) return false;
    if (!dash && !std::isxdigit(static_cast<unsigned char>(s[i]))) return false;
  }
  return true;
}

}  // namespace ovbd::lsmt
