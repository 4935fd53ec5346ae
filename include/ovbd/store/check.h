// fsck for a store: verifies every manifest, layer, upper journal and
// reference, reports each problem with its location, and with `repair`
// fixes what can be fixed without guessing (unreferenced files, torn or
// damaged journal tails, leftover temporary files).
#pragma once

#include <string>
#include <vector>

#include "ovbd/io/env.h"

namespace ovbd {

struct CheckOptions {
  bool repair = false;
  bool verify_data = true;  // read every mapped byte (ZFile block checksums)
};

struct CheckFinding {
  std::string where;   // file or volume
  std::string what;    // the problem
  bool repaired = false;
};

struct CheckReport {
  std::vector<CheckFinding> findings;
  size_t manifests = 0, layers = 0, uppers = 0;
  size_t remote_layers = 0;  // lowers read from a registry or URL (not checked offline)
  bool clean() const {
    for (const auto& f : findings)
      if (!f.repaired) return false;
    return true;
  }
};

// The store must not be mounted when repairing (the store lock is taken).
Result<CheckReport> CheckStore(Env* env, const std::string& dir, const CheckOptions& opts);

}  // namespace ovbd
