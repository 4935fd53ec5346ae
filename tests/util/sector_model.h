// A model of a volume for crash tests: per 512-byte sector, every version it
// may legitimately hold after a crash (what it held at the last commit, and
// each version written to it since).
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace ovbd::test {

class SectorModel {
 public:
  static constexpr uint64_t kSector = 512;

  // A volume that holds `contents` durably (its size a multiple of kSector).
  explicit SectorModel(std::vector<char> contents)
      : current_(std::move(contents)), allowed_(current_.size() / kSector) {
    Commit();
  }

  // A write of len bytes at off (data), or a discard (nullptr: zeros). It
  // may or may not survive a crash until the next Commit().
  void Apply(uint64_t off, const char* data, uint64_t len) {
    if (data) {
      std::memcpy(current_.data() + off, data, len);
    } else {
      std::memset(current_.data() + off, 0, len);
    }
    for (uint64_t s = off / kSector; s < (off + len + kSector - 1) / kSector; ++s)
      allowed_[s].insert(Sector(s));
  }

  // Everything applied is durable: each sector may hold only what it holds now.
  void Commit() {
    for (uint64_t s = 0; s < allowed_.size(); ++s) allowed_[s] = {Sector(s)};
  }

  // The first sector of `now` (what the volume reads after a crash) that
  // holds a version it never had since the last commit; none if all are fine.
  std::optional<uint64_t> FirstImpossibleSector(const std::vector<char>& now) const {
    for (uint64_t s = 0; s < allowed_.size(); ++s) {
      if (!allowed_[s].count(std::string(now.data() + s * kSector, kSector))) return s;
    }
    return std::nullopt;
  }

  // Continues from `now` (read back after recovery), durable from here on.
  void Recovered(std::vector<char> now) {
    current_ = std::move(now);
    Commit();
  }

  const std::vector<char>& current() const { return current_; }

 private:
  std::string Sector(uint64_t s) const { return std::string(current_.data() + s * kSector, kSector); }

  std::vector<char> current_;
  std::vector<std::set<std::string>> allowed_;  // sector -> its possible contents
};

}  // namespace ovbd::test
