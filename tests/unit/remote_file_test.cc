// The file a remote layer is read through (RemoteBlobs::Open): whatever
// keeps its bytes from being had, the layers above and the readers of the
// volume see EIO, as for a local layer that cannot be read, with the
// reason in the message; and never a secret.
#include <gtest/gtest.h>

#include <cerrno>
#include <fstream>

#include "ovbd/remote/remote_blobs.h"
#include "scripted_http_server.h"
#include "test_util.h"

namespace ovbd::remote {
namespace {

using test::HttpReply;
using test::ScriptedConn;
using test::ScriptedHttpServer;

const std::string kDigest = "sha256:" + std::string(64, 'b');

ScriptedHttpServer::Script Always(std::string reply) {
  return [reply](ScriptedConn& c) {
    while (auto r = c.ReadRequest()) {
      if (!c.Write(reply)) return;
    }
  };
}

class RemoteFileTest : public ::testing::Test {
 protected:
  // A remote layer file over `address` (a registry:// or http:// blob),
  // 1 MiB long, with the credentials file given (if any), and the loopback
  // registry `https` (if given) spoken to over TLS.
  std::shared_ptr<const ReadableFile> OpenLayer(const std::string& address,
                                                const std::string& credentials = "",
                                                const std::string& https = "") {
    RemoteOptions o;
    o.cache.dir = dir_.Sub("cache");
    o.registry.credentials_file = credentials;
    if (!https.empty()) o.registry.https = {https};
    o.registry.retries = 0;
    o.http.request_timeout = std::chrono::milliseconds(10000);
    o.http.connect_timeout = std::chrono::milliseconds(1000);
    auto remote = RemoteBlobs::Make(Env::Default(), o);
    EXPECT_TRUE(remote.ok()) << remote.status().ToString();
    if (!remote.ok()) return nullptr;
    remote_ = *remote;
    auto blob = BlobRef::Parse(address);
    EXPECT_TRUE(blob.ok()) << blob.status().ToString();
    if (!blob.ok()) return nullptr;
    auto f = remote_->Open(*blob, 1 << 20);
    EXPECT_TRUE(f.ok()) << f.status().ToString();
    return f.ok() ? *f : nullptr;
  }
  // Reading the start of `f` fails as reading a local layer that cannot be
  // read does: an I/O error, EIO, here with `cause` in the message. The
  // status goes to `*status` (if given) for more checks.
  static void ExpectEio(const std::shared_ptr<const ReadableFile>& f, const std::string& cause,
                        Status* status = nullptr) {
    ASSERT_NE(f, nullptr);
    char buf[4096];
    size_t got = 0;
    Status s = f->ReadAt(0, sizeof buf, buf, &got);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.code(), Status::Code::kIOError) << s.ToString();
    EXPECT_EQ(s.os_errno(), EIO) << s.ToString();
    EXPECT_NE(s.message().find(cause), std::string::npos) << s.ToString();
    if (status != nullptr) *status = s;
  }
  static std::string Registry(const ScriptedHttpServer& s) {
    return "registry://127.0.0.1:" + std::to_string(s.port()) + "/team/base@" + kDigest;
  }

  test::TempDir dir_;
  std::shared_ptr<RemoteBlobs> remote_;
};

TEST_F(RemoteFileTest, CredentialsRefusedIsEioNamingTheCause) {
  ScriptedHttpServer srv(Always(HttpReply(401, "", "WWW-Authenticate: Basic realm=\"r\"\r\n")));
  const std::string creds = dir_.Sub("config.json");
  // "user:Secret-Pa55" in base64.
  std::ofstream(creds) << R"({"auths": {"127.0.0.1:)" << srv.port()
                       << R"(": {"auth": "dXNlcjpTZWNyZXQtUGE1NQ=="}}})";
  Status s;
  ASSERT_NO_FATAL_FAILURE(ExpectEio(OpenLayer(Registry(srv), creds), "were refused", &s));
  EXPECT_EQ(s.message().find("Secret-Pa55"), std::string::npos) << s.ToString();
  EXPECT_EQ(s.message().find("dXNlcjpTZWNyZXQtUGE1NQ"), std::string::npos) << s.ToString();
}

TEST_F(RemoteFileTest, NoCredentialsForARegistryThatWantsThemIsEio) {
  ScriptedHttpServer srv(Always(HttpReply(401, "", "WWW-Authenticate: Basic realm=\"r\"\r\n")));
  ExpectEio(OpenLayer(Registry(srv)), "credentials");
}

TEST_F(RemoteFileTest, AccessDeniedIsEio) {
  ScriptedHttpServer srv(Always(HttpReply(403, "denied")));
  ExpectEio(OpenLayer(Registry(srv)), "access denied");
}

TEST_F(RemoteFileTest, UntrustedCertificateIsEio) {
  test::LoopbackTls tls(dir_.Sub("ca.pem"));
  ScriptedHttpServer srv(Always(HttpReply(206, "x")), tls.server_context());
  // The CA file is not given, so nothing trusts the server.
  ExpectEio(OpenLayer(Registry(srv), "", "127.0.0.1:" + std::to_string(srv.port())), "not trusted");
}

TEST_F(RemoteFileTest, BlobTheServerLacksIsEio) {
  ScriptedHttpServer srv(Always(HttpReply(404, "")));
  ExpectEio(OpenLayer(srv.Url("/blob") + "#" + kDigest), "404");
}

}  // namespace
}  // namespace ovbd::remote
