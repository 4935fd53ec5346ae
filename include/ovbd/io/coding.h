// Explicit little-endian encoding of on-disk integers. Disk bytes are never
// reinterpreted through structs or bitfields: every field is read and written
// here, one byte order on every host.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

namespace ovbd {

inline void EncodeU16(char* p, uint16_t v) {
  for (int i = 0; i < 2; ++i) p[i] = static_cast<char>(v >> (8 * i));
}
inline void EncodeU32(char* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<char>(v >> (8 * i));
}
inline void EncodeU64(char* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<char>(v >> (8 * i));
}
inline uint16_t DecodeU16(const char* p) {
  uint16_t v = 0;
  for (int i = 1; i >= 0; --i) v = static_cast<uint16_t>((v << 8) | static_cast<uint8_t>(p[i]));
  return v;
}
inline uint32_t DecodeU32(const char* p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}
inline uint64_t DecodeU64(const char* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

inline void PutU32(std::string* s, uint32_t v) {
  char b[4];
  EncodeU32(b, v);
  s->append(b, 4);
}
inline void PutU64(std::string* s, uint64_t v) {
  char b[8];
  EncodeU64(b, v);
  s->append(b, 8);
}

// Lower-case hexadecimal of n bytes, two digits each (digests in file names).
inline std::string HexEncode(const void* data, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  const auto* p = static_cast<const unsigned char*>(data);
  std::string s;
  s.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    s.push_back(kDigits[p[i] >> 4]);
    s.push_back(kDigits[p[i] & 15]);
  }
  return s;
}

// Reads a NUL-terminated string from a fixed-size on-disk field (never past it).
inline std::string DecodeFixedString(const char* p, size_t field_size) {
  size_t n = 0;
  while (n < field_size && p[n] != '\0') ++n;
  return std::string(p, n);
}

}  // namespace ovbd
