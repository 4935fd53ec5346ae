// Fuzz target for the control-command language: parsing arbitrary lines and
// sizes must never crash, and anything accepted must contain only printable
// ASCII words.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "ovbd/control/controller.h"
#include "ovbd/control/size.h"
#include "ovbd/store/manifest.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string in(reinterpret_cast<const char*>(data), size);
  auto c = ovbd::ParseCommand(in);
  if (c.ok()) {
    auto check = [](const std::string& w) {
      if (w.empty()) std::abort();
      for (char ch : w)
        if (static_cast<unsigned char>(ch) <= 0x20 || static_cast<unsigned char>(ch) >= 0x7f) std::abort();
    };
    check(c.value().verb);
    for (const auto& a : c.value().args) {
      check(a);
      (void)ovbd::ValidateName(a, "fuzz");
      auto s = ovbd::ParseSize(a);
      (void)s;
    }
  }
  (void)ovbd::ParseSize(in);
  return 0;
}
