// The content digest of the distribution API: "sha256:" + lowercase hex.
#pragma once

#include <string>
#include <string_view>

namespace ovbd::remote {

std::string Sha256Digest(std::string_view data);

}  // namespace ovbd::remote
