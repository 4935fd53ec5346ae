// Base64 (RFC 4648, standard alphabet) for what the registry protocol
// carries in it: Basic credentials and docker config "auth" fields.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace ovbd::remote {

std::string Base64Encode(std::string_view in);
// Strict: the standard alphabet, padding to a multiple of 4 (or none at
// all), no whitespace, no bits set past the end. nullopt otherwise.
std::optional<std::string> Base64Decode(std::string_view in);

}  // namespace ovbd::remote
