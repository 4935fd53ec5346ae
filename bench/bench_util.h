// What the microbenchmarks of bench/ share: giving up on an error, and a
// temp directory for their files.
#pragma once

#include <errno.h>
#include <stdlib.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <system_error>

#include "ovbd/io/status.h"

namespace ovbd::bench {

// "PROGRAM: WHAT: STATUS" on stderr, then exit(1).
[[noreturn]] inline void Die(const std::string& what, const Status& s) {
  std::fprintf(stderr, "%s: %s: %s\n", program_invocation_short_name, what.c_str(), s.ToString().c_str());
  std::exit(1);
}

// A temp directory of the program's own (ovbd-PROGRAM-XXXXXX), made on the
// first call and removed at exit. (By the destructor of a static: an atexit
// handler registered while the static is being made would run after it is
// gone, and remove whatever its freed bytes name.)
inline const std::string& TempDir() {
  struct Dir {
    Dir() {
      const std::string name = std::string("ovbd-") + program_invocation_short_name + "-XXXXXX";
      path = (std::filesystem::temp_directory_path() / name).string();
      if (!mkdtemp(path.data())) {
        std::perror("mkdtemp");
        std::exit(1);
      }
    }
    ~Dir() {
      std::error_code ec;
      std::filesystem::remove_all(path, ec);
    }
    std::string path;
  };
  static const Dir dir;
  return dir.path;
}

}  // namespace ovbd::bench
