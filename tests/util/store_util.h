// Helpers shared by the tests of the store: opening one, a fixture with a
// fresh store, reading whole volumes, the layer files manifests refer to.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "ovbd/store/store.h"
#include "test_util.h"

namespace ovbd::test {

// Opens the store at path; a failure is a test failure (and nullptr).
inline std::unique_ptr<Store> OpenStore(Env* env, const std::string& path,
                                        const StoreOptions& opts = {}) {
  auto s = Store::Open(env, path, opts);
  EXPECT_TRUE(s.ok()) << path << ": " << s.status().ToString();
  return s.ok() ? std::move(s).value() : nullptr;
}

// Every byte of volume (or snapshot) name. Empty, and a test failure, when
// it cannot be acquired or read.
inline std::vector<char> ReadVolume(Store* s, const std::string& name) {
  auto v = s->Acquire(name);
  EXPECT_TRUE(v.ok()) << name << ": " << v.status().ToString();
  if (!v.ok()) return {};
  std::vector<char> buf(v.value()->size());
  auto n = v.value()->Read(0, buf.size(), buf.data());
  EXPECT_TRUE(n.ok()) << name << ": " << n.status().ToString();
  s->Release(name);
  return n.ok() ? buf : std::vector<char>{};
}

// The names in layers/ that the store's manifests refer to: every lower
// layer, and each upper's data file and journal.
inline std::set<std::string> ReferencedLayerFiles(Store* s) {
  std::set<std::string> referenced;
  for (const auto& v : s->List()) {
    for (const auto& l : v.lowers) referenced.insert(l);
    if (!v.upper.empty()) {
      referenced.insert(v.upper + ".data");
      referenced.insert(v.upper + ".jnl");
    }
  }
  return referenced;
}

// A fresh store in a temporary directory, open in store_ (on Env::Default()).
class FreshStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = dir_.Sub("store");
    ASSERT_TRUE(Store::Init(Env::Default(), path_).ok());
    store_ = OpenStore(Env::Default(), path_);
    ASSERT_NE(store_, nullptr);
  }

  TempDir dir_;
  std::string path_;
  std::unique_ptr<Store> store_;
};

}  // namespace ovbd::test
