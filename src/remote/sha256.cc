#include "sha256.h"

#include <openssl/evp.h>

#include "ovbd/io/coding.h"

namespace ovbd::remote {

std::string Sha256Digest(std::string_view data) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), d, &len, EVP_sha256(), nullptr);
  return "sha256:" + HexEncode(d, len);
}

}  // namespace ovbd::remote
