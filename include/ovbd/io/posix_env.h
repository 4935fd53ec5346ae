// The POSIX Env: Env::Default() is one, made with the default options.
#pragma once

#include <memory>

#include "ovbd/io/env.h"

namespace ovbd {

struct PosixEnvOptions {
  // Confined paths are resolved with openat2(RESOLVE_BENEATH |
  // RESOLVE_NO_SYMLINKS) when the kernel has it. False walks them one
  // component at a time with openat(O_NOFOLLOW | O_DIRECTORY), which is what
  // happens anyway on kernels without openat2 (so tests can check both).
  bool use_openat2 = true;
};

// A separate POSIX Env (its own set of confined roots).
std::unique_ptr<Env> NewPosixEnv(const PosixEnvOptions& opts = {});

}  // namespace ovbd
