// The small RAII helpers every Store command uses, shared by the store's
// source files (not part of the public interface).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ovbd/store/store.h"

namespace ovbd {

// Holds group_mu_ (shared, or exclusive) and the command locks of a set of
// volumes for one command. Lock and unlock happen in different functions,
// which the analysis cannot follow; the order is the one in store.h.
class Store::CommandScope {
 public:
  // Finishes a manifest group left pending before taking the locks.
  static Result<std::unique_ptr<CommandScope>> Enter(Store* s, std::vector<std::string> vols,
                                                     bool exclusive);
  ~CommandScope();

 private:
  CommandScope(Store* s, bool exclusive) : store_(s), exclusive_(exclusive) {}
  Store* store_;
  bool exclusive_;
  bool locked_ = false;
  VolumeLocks::Guard guard_;
};

// A name being created: taken for every other command, still absent for
// List and Lookup until the manifest exists.
class Store::Reservation {
 public:
  Reservation(Store* s, std::string name) : store_(s), name_(std::move(name)) {}
  ~Reservation();

 private:
  Store* store_;
  std::string name_;
};

// Files in flight: garbage collection keeps them while the pin lives.
class Store::Pin {
 public:
  Pin(Store* s, std::vector<std::string> files) : store_(s), files_(std::move(files)) {}
  ~Pin();

 private:
  Store* store_;
  std::vector<std::string> files_;
};

}  // namespace ovbd
