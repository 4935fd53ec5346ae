// An in-memory ReadableFile for tests and fuzz targets.
#pragma once

#include <string>

#include "ovbd/io/string_file.h"

namespace ovbd::test {

class MemFile : public StringFile {
 public:
  explicit MemFile(std::string data, std::string name = "mem.zfile")
      : StringFile(std::move(data), std::move(name)) {}
};

}  // namespace ovbd::test
