// Sizes as users type them: "10G", "512M", "4096" (suffixes K/M/G/T are
// powers of 1024; an optional trailing "i" or "iB"/"B" is accepted).
#pragma once

#include <cstdint>
#include <string>

#include "ovbd/io/status.h"

namespace ovbd {

Result<uint64_t> ParseSize(const std::string& text);
std::string FormatSize(uint64_t bytes);  // "10 GiB", "1.5 MiB", "512 B"

}  // namespace ovbd
