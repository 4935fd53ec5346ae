// CRC-32C (Castagnoli), with the SSE4.2 instruction when the CPU has it.
//
// Two conventions are in use on disk:
//  - Crc32cRaw(init, data): the bare CRC register, no pre/post inversion. This
//    is what OverlayBD's ZFile calls "crc32c" (header digest and index CRC use
//    init 0, block checksums init 100007), so it must be reproduced exactly.
//  - Crc32c(data): the standard iSCSI CRC-32C (init and final xor 0xFFFFFFFF),
//    used by ovbdfs's own formats (upper journal, checkpoints).
#pragma once

#include <cstddef>
#include <cstdint>

namespace ovbd {

uint32_t Crc32cRaw(uint32_t crc, const void* data, size_t n);
// The table-driven path of Crc32cRaw, whatever the CPU: for tests that the
// SSE4.2 path computes the same function.
uint32_t Crc32cRawSoftware(uint32_t crc, const void* data, size_t n);

inline uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t n) {
  return ~Crc32cRaw(~crc, data, n);
}
inline uint32_t Crc32c(const void* data, size_t n) { return Crc32cExtend(0, data, n); }

}  // namespace ovbd
