// The registry configuration file (-o registry_config=, --registry-config)
// as the daemon and ovbd read it: what each setting makes the remote
// layers do, and the refusals of settings that make no sense.
#include <gtest/gtest.h>

#include <fstream>

#include "ovbd/remote/remote_blobs.h"
#include "scripted_http_server.h"
#include "test_util.h"

namespace ovbd::remote {
namespace {

using test::ScriptedConn;
using test::ScriptedHttpServer;

const std::string kDigest = "sha256:" + std::string(64, 'a');

// Answers every request as a registry holding one 5-byte blob.
ScriptedHttpServer::Script BlobOfFive() {
  return [](ScriptedConn& c) {
    while (auto r = c.ReadRequest()) {
      if (!c.Write("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")) return;
    }
  };
}

class RegistryConfigTest : public ::testing::Test {
 protected:
  // Remote layers made as the daemon makes them, from a config file with `json`.
  Result<std::shared_ptr<RemoteBlobs>> Make(const std::string& json) {
    const std::string cfg = dir_.Sub("registry.json");
    std::ofstream(cfg, std::ios::trunc) << json;
    RemoteSettings s;
    s.cache_dir = dir_.Sub("cache");
    s.credentials = dir_.Sub("no-credentials.json");
    s.registry_config = cfg;
    return MakeRemoteFromOptions(Env::Default(), s);
  }
  static BlobRef Blob(uint16_t port) {
    auto b = BlobRef::Parse("registry://127.0.0.1:" + std::to_string(port) + "/team/base@" + kDigest);
    EXPECT_TRUE(b.ok()) << b.status().ToString();
    return b.ok() ? *b : BlobRef();
  }
  static std::string Timeouts() { return R"("timeout_ms": 3000, "connect_timeout_ms": 1000, "retries": 0)"; }

  test::TempDir dir_;
  test::LoopbackTls tls_{dir_.Sub("ca.pem")};
};

TEST_F(RegistryConfigTest, HttpsMakesALoopbackRegistrySpeakTls) {
  ScriptedHttpServer tls(BlobOfFive(), tls_.server_context());
  const std::string reg = "127.0.0.1:" + std::to_string(tls.port());
  auto remote = Make(R"({"https": [")" + reg + R"("], "ca_file": ")" + tls_.ca_file() + R"(", )" + Timeouts() + "}");
  ASSERT_TRUE(remote.ok()) << remote.status().ToString();
  auto size = (*remote)->Size(Blob(tls.port()));
  ASSERT_TRUE(size.ok()) << size.status().ToString();
  EXPECT_EQ(*size, 5u);
}

TEST_F(RegistryConfigTest, LoopbackRegistryNotListedInHttpsIsPlainHttp) {
  // The same TLS server, not listed: spoken to in plain HTTP, which fails;
  // a plain server on loopback works without any setting.
  ScriptedHttpServer tls(BlobOfFive(), tls_.server_context());
  ScriptedHttpServer plain(BlobOfFive());
  auto remote = Make(R"({"ca_file": ")" + tls_.ca_file() + R"(", )" + Timeouts() + "}");
  ASSERT_TRUE(remote.ok()) << remote.status().ToString();
  EXPECT_FALSE((*remote)->Size(Blob(tls.port())).ok());
  auto size = (*remote)->Size(Blob(plain.port()));
  ASSERT_TRUE(size.ok()) << size.status().ToString();
  EXPECT_EQ(*size, 5u);
}

TEST_F(RegistryConfigTest, HttpsWithoutTheCaIsRefusedAsUntrusted) {
  ScriptedHttpServer tls(BlobOfFive(), tls_.server_context());
  const std::string reg = "127.0.0.1:" + std::to_string(tls.port());
  auto remote = Make(R"({"https": [")" + reg + R"("]})");
  ASSERT_TRUE(remote.ok()) << remote.status().ToString();
  auto size = (*remote)->Size(Blob(tls.port()));
  ASSERT_FALSE(size.ok());
  EXPECT_NE(size.status().message().find("not trusted"), std::string::npos) << size.status().ToString();
}

TEST_F(RegistryConfigTest, HttpsEntriesMustBeRegistries) {
  for (const char* bad : {R"({"https": "127.0.0.1:5000"})", R"({"https": [5000]})",
                          R"({"https": ["127.0.0.1:5000/path"]})", R"({"https": [""]})"}) {
    auto r = Make(bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("https"), std::string::npos) << r.status().ToString();
  }
}

TEST_F(RegistryConfigTest, RegistryInBothPlainHttpAndHttpsIsRefused) {
  auto r = Make(R"({"plain_http": ["Reg.Example:5000"], "https": ["reg.example:5000"]})");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument);
  EXPECT_NE(r.status().message().find("both plain_http and https"), std::string::npos)
      << r.status().ToString();
}

TEST_F(RegistryConfigTest, UnknownSettingIsRefusedNamingTheKnownOnes) {
  auto r = Make(R"({"htps": ["127.0.0.1:5000"]})");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("unknown setting 'htps'"), std::string::npos) << r.status().ToString();
  EXPECT_NE(r.status().message().find("https"), std::string::npos) << r.status().ToString();
}

}  // namespace
}  // namespace ovbd::remote
