// Helpers shared by the unit tests: temp directories, sha256, random data.
#pragma once

#include <openssl/evp.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "ovbd/io/coding.h"
#include "ovbd/io/env.h"

namespace ovbd::test {

// A fresh directory under $TMPDIR (else /tmp), removed with everything in it
// at scope exit. Its path is empty if it could not be made.
class TempDir {
 public:
  TempDir() {
    std::error_code ec;
    std::filesystem::path base = std::filesystem::temp_directory_path(ec);
    if (ec) base = "/tmp";
    std::string tmpl = (base / "ovbd-test-XXXXXX").string();
    if (mkdtemp(tmpl.data())) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

inline std::string Sha256Hex(const void* data, size_t n) {
  unsigned char d[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_Digest(data, n, d, &len, EVP_sha256(), nullptr);
  return HexEncode(d, len);
}

inline std::vector<char> RandomBytes(std::mt19937_64& rng, size_t n) {
  std::vector<char> v(n);
  for (size_t i = 0; i < n; i += 8) {
    uint64_t x = rng();
    for (size_t k = 0; k < 8 && i + k < n; ++k) v[i + k] = static_cast<char>(x >> (8 * k));
  }
  return v;
}

inline std::string DataPath(const std::string& rel) { return std::string(OVBD_TEST_DATA) + "/" + rel; }

// Writes a whole file through the env (test setup).
inline Status WriteWholeFile(Env* env, const std::string& path, const std::vector<char>& data) {
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> f, env->OpenRW(path, true));
  OVBD_RETURN_IF_ERROR(f->WriteAt(0, data.data(), data.size()));
  return f->Sync();
}

// Inverts the bits of `mask` in the byte at off of the file at path, in place
// (damage for a test to find).
inline Status FlipBits(Env* env, const std::string& path, uint64_t off, char mask = 1) {
  OVBD_ASSIGN_OR_RETURN(std::unique_ptr<RWFile> f, env->OpenRW(path, false));
  char byte = 0;
  OVBD_RETURN_IF_ERROR(f->ReadExact(off, 1, &byte));
  byte = static_cast<char>(byte ^ mask);
  OVBD_RETURN_IF_ERROR(f->WriteAt(off, &byte, 1));
  return f->Sync();
}

}  // namespace ovbd::test
