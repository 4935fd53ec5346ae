// What the microbenchmarks of bench/ share: giving up on an error, and a
// temp directory for their files.
#pragma once

#include <errno.h>
#include <stdlib.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "ovbd/io/status.h"

namespace ovbd::bench {

// "PROGRAM: WHAT: STATUS" on stderr, then exit(1).
[[noreturn]] inline void Die(const std::string& what, const Status& s) {
  std::fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what.c_str(), s.ToString().c_str());
  std::exit(1);
}

// A temp directory of the program's own (ovbd-PROGRAM-XXXXXX), made on the
// first call and removed at exit.
inline const std::string& TempDir() {
  static const std::string dir = [] {
    const std::string name = std::string("ovbd-") + program_invocation_short_name + "-XXXXXX";
    std::string tmpl = (std::filesystem::temp_directory_path() / name).string();
    if (!mkdtemp(tmpl.data())) {
      std::perror("mkdtemp");
      std::exit(1);
    }
    std::atexit([] { std::filesystem::remove_all(dir); });
    return tmpl;
  }();
  return dir;
}

}  // namespace ovbd::bench
