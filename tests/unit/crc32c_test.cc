#include "ovbd/io/crc32c.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace ovbd {
namespace {

TEST(Crc32c, StandardCheckValue) {
  const char* s = "123456789";
  EXPECT_EQ(Crc32c(s, 9), 0xE3069283u);
}

TEST(Crc32c, Rfc3720Vectors) {
  // iSCSI (RFC 3720, B.4) test patterns.
  std::vector<uint8_t> buf(32, 0);
  EXPECT_EQ(Crc32c(buf.data(), buf.size()), 0x8A9136AAu);
  std::fill(buf.begin(), buf.end(), 0xFF);
  EXPECT_EQ(Crc32c(buf.data(), buf.size()), 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) buf[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(Crc32c(buf.data(), buf.size()), 0x46DD794Eu);
  for (int i = 0; i < 32; ++i) buf[i] = static_cast<uint8_t>(31 - i);
  EXPECT_EQ(Crc32c(buf.data(), buf.size()), 0x113FDB5Cu);
}

TEST(Crc32c, EmptyInput) {
  EXPECT_EQ(Crc32c("", 0), 0u);
  EXPECT_EQ(Crc32cRaw(0, "", 0), 0u);
  EXPECT_EQ(Crc32cRaw(100007, "", 0), 100007u);
}

TEST(Crc32c, RawIsTheRegisterWithoutInversion) {
  const std::string s = "The quick brown fox jumps over the lazy dog";
  // Crc32c = pre- and post-inverted register.
  EXPECT_EQ(Crc32c(s.data(), s.size()), ~Crc32cRaw(0xFFFFFFFFu, s.data(), s.size()));
  EXPECT_EQ(Crc32c(s.data(), s.size()), 0x22620404u);
  // The raw register chains across pieces, with any initial value.
  for (uint32_t init : {0u, 100007u, 0xDEADBEEFu}) {
    for (size_t cut = 0; cut <= s.size(); ++cut) {
      uint32_t a = Crc32cRaw(init, s.data(), cut);
      EXPECT_EQ(Crc32cRaw(a, s.data() + cut, s.size() - cut), Crc32cRaw(init, s.data(), s.size()))
          << "init " << init << " cut " << cut;
    }
  }
  // And Extend chains the standard CRC.
  for (size_t cut = 0; cut <= s.size(); ++cut) {
    uint32_t a = Crc32c(s.data(), cut);
    EXPECT_EQ(Crc32cExtend(a, s.data() + cut, s.size() - cut), Crc32c(s.data(), s.size()));
  }
  // Raw with init 0 over zeros stays 0 (no inversion): ZFile relies on it.
  std::vector<char> zeros(100, 0);
  EXPECT_EQ(Crc32cRaw(0, zeros.data(), zeros.size()), 0u);
  EXPECT_NE(Crc32c(zeros.data(), zeros.size()), 0u);
}

TEST(Crc32c, SoftwareMatchesKnownValues) {
  EXPECT_EQ(~Crc32cRawSoftware(0xFFFFFFFFu, "123456789", 9), 0xE3069283u);
}

TEST(Crc32c, HardwareAndSoftwareAgree) {
  std::mt19937_64 rng(42);
  std::vector<uint8_t> buf(4096 + 64);
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  // Every length up to 300 (covers all tails of the 8-byte steps) at every
  // alignment 0..15, then some long ones.
  for (size_t align = 0; align < 16; ++align) {
    for (size_t len = 0; len <= 300; ++len) {
      const uint32_t init = static_cast<uint32_t>(rng());
      ASSERT_EQ(Crc32cRaw(init, buf.data() + align, len),
                Crc32cRawSoftware(init, buf.data() + align, len))
          << "align " << align << " len " << len;
    }
  }
  for (int i = 0; i < 200; ++i) {
    const size_t align = rng() % 64;
    const size_t len = rng() % (buf.size() - align + 1);
    const uint32_t init = static_cast<uint32_t>(rng());
    ASSERT_EQ(Crc32cRaw(init, buf.data() + align, len),
              Crc32cRawSoftware(init, buf.data() + align, len))
        << "align " << align << " len " << len;
  }
}

TEST(Crc32c, DetectsSingleBitFlips) {
  std::string s(1000, 'x');
  const uint32_t good = Crc32c(s.data(), s.size());
  for (size_t i = 0; i < s.size(); i += 37) {
    for (int bit = 0; bit < 8; ++bit) {
      s[i] = static_cast<char>(s[i] ^ (1 << bit));
      EXPECT_NE(Crc32c(s.data(), s.size()), good);
      s[i] = static_cast<char>(s[i] ^ (1 << bit));
    }
  }
}

}  // namespace
}  // namespace ovbd
