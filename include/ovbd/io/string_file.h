// StringFile: a ReadableFile over bytes held in memory (an image config
// built on the fly, a layer made in a test).
#pragma once

#include <algorithm>
#include <cstring>
#include <string>

#include "ovbd/io/env.h"

namespace ovbd {

class StringFile : public ReadableFile {
 public:
  explicit StringFile(std::string data, std::string name)
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
  const std::string data_;
  const std::string name_;
};

}  // namespace ovbd
