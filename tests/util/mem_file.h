// An in-memory ReadableFile for tests and fuzz targets.
#pragma once

#include <algorithm>
#include <cstring>
#include <string>

#include "ovbd/io/env.h"

namespace ovbd::test {

class MemFile : public ReadableFile {
 public:
  explicit MemFile(std::string data, std::string name = "mem.zfile")
      : data_(std::move(data)), name_(std::move(name)) {}
  Status ReadAt(uint64_t off, size_t n, char* buf, size_t* got) const override {
    *got = 0;
    if (off >= data_.size()) return Status::OK();
    *got = static_cast<size_t>(std::min<uint64_t>(n, data_.size() - off));
    std::memcpy(buf, data_.data() + off, *got);
    return Status::OK();
  }
  uint64_t Size() const override { return data_.size(); }
  const std::string& Name() const override { return name_; }

 private:
  std::string data_;
  std::string name_;
};

}  // namespace ovbd::test
