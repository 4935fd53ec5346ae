// RegistryClient against a scripted registry: the protocol details a real
// registry does not vary (relative upload locations, locations with and
// without a query, 5xx and 429 answers, a token server on the same host,
// manifests whose digest is not what it should be), asserted request by
// request.
#include <gtest/gtest.h>

#include <mutex>

#include "mem_file.h"
#include "ovbd/remote/registry_client.h"
#include "scripted_http_server.h"
#include "test_util.h"

namespace ovbd::remote {
namespace {

using ovbd::test::HttpReply;
using ovbd::test::MemFile;
using ovbd::test::ScriptedConn;
using ovbd::test::ScriptedHttpServer;
using ovbd::test::SeenRequest;

std::string DigestOf(const std::string& s) { return "sha256:" + ovbd::test::Sha256Hex(s.data(), s.size()); }

// Answers each request with what the handler returns (whole response
// bytes), and keeps every request it saw.
class FakeRegistry {
 public:
  using Handler = std::function<std::string(const SeenRequest&)>;
  explicit FakeRegistry(Handler h)
      : handler_(std::move(h)), server_([this](ScriptedConn& c) { Serve(c); }) {}

  std::string address() const { return "127.0.0.1:" + std::to_string(server_.port()); }
  std::vector<SeenRequest> seen() {
    std::lock_guard<std::mutex> l(mu_);
    return seen_;
  }
  // Requests whose target starts with `prefix`.
  int Count(const std::string& prefix) {
    int n = 0;
    for (const auto& r : seen()) n += r.target.rfind(prefix, 0) == 0;
    return n;
  }

 private:
  void Serve(ScriptedConn& c) {
    while (auto req = c.ReadRequest()) {
      std::string resp;
      {
        std::lock_guard<std::mutex> l(mu_);
        seen_.push_back(*req);
        resp = handler_(*req);
      }
      if (!c.Write(resp)) return;
    }
  }

  Handler handler_;
  std::mutex mu_;
  std::vector<SeenRequest> seen_;
  ScriptedHttpServer server_;  // last: stopped before the rest goes
};

std::unique_ptr<RegistryClient> Client(RegistryOptions opts = {}) {
  opts.backoff_min = std::chrono::milliseconds(1);
  opts.backoff_max = std::chrono::milliseconds(4);
  HttpClientOptions http;
  http.request_timeout = std::chrono::milliseconds(5000);
  auto c = RegistryClient::Make(std::move(opts), HttpClient::Make(http));
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(c.value()) : nullptr;
}

std::string Partial(const std::string& blob, const SeenRequest& r) {
  // "bytes=B-E"
  std::string range = r.Header("Range").value_or("bytes=0-0");
  uint64_t b = std::stoull(range.substr(6, range.find('-') - 6));
  uint64_t e = std::stoull(range.substr(range.find('-') + 1));
  return HttpReply(206, blob.substr(b, e - b + 1),
                   "Content-Range: bytes " + std::to_string(b) + "-" + std::to_string(e) + "/" +
                       std::to_string(blob.size()) + "\r\n");
}

TEST(RegistryProtocol, ChunkedUploadFollowsEveryLocation) {
  const std::string blob(2500, 'x');
  const std::string digest = DigestOf(blob);
  std::string self;  // the server's own base URL, for an absolute Location
  FakeRegistry reg([&](const SeenRequest& r) -> std::string {
    if (r.method == "POST" && r.target == "/v2/a/b/blobs/uploads/") {
      return HttpReply(202, "", "Location: /v2/a/b/blobs/uploads/u1\r\n");  // relative, no query
    }
    if (r.method == "PATCH" && r.target == "/v2/a/b/blobs/uploads/u1") {
      return HttpReply(202, "", "Location: u1?_state=s%3D1\r\nRange: 0-999\r\n");  // relative to the directory
    }
    if (r.method == "PATCH" && r.target == "/v2/a/b/blobs/uploads/u1?_state=s%3D1") {
      return HttpReply(202, "", "Location: " + self + "/v2/a/b/blobs/uploads/u1?_state=s2\r\n");  // absolute
    }
    if (r.method == "PATCH" && r.target == "/v2/a/b/blobs/uploads/u1?_state=s2") {
      return HttpReply(202, "", "Location: /v2/a/b/blobs/uploads/u1?_state=s3&x=\r\n");
    }
    if (r.method == "PUT" && r.target == "/v2/a/b/blobs/uploads/u1?_state=s3&x=&digest=sha256%3A" + digest.substr(7)) {
      return HttpReply(201, "", "Docker-Content-Digest: " + digest + "\r\n");
    }
    return HttpReply(400, "unexpected");
  });
  self = "http://" + reg.address();
  RegistryOptions opts;
  opts.upload_chunk = 1000;
  auto c = Client(opts);
  MemFile f(blob, "blob");
  std::vector<uint64_t> done;
  Status s = c->UploadBlob(reg.address(), "a/b", digest, f, [&](uint64_t d, uint64_t) { done.push_back(d); });
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(done, (std::vector<uint64_t>{1000, 2000, 2500, 2500}));

  auto seen = reg.seen();
  ASSERT_EQ(seen.size(), 5u);
  const char* ranges[] = {"0-999", "1000-1999", "2000-2499"};
  std::string sent;
  for (int i = 0; i < 3; ++i) {
    const SeenRequest& p = seen[1 + i];
    EXPECT_EQ(p.method, "PATCH");
    EXPECT_EQ(p.Header("Content-Range").value_or(""), ranges[i]);
    EXPECT_EQ(p.Header("Content-Type").value_or(""), "application/octet-stream");
    sent += p.body;
  }
  EXPECT_EQ(sent, blob);
  EXPECT_EQ(seen[4].method, "PUT");
  EXPECT_TRUE(seen[4].body.empty());
}

TEST(RegistryProtocol, MonolithicUploadAppendsTheDigestToTheLocationsQuery) {
  const std::string blob = "small blob";
  const std::string digest = DigestOf(blob);
  FakeRegistry reg([&](const SeenRequest& r) -> std::string {
    if (r.method == "POST") return HttpReply(202, "", "Location: /up/x?a=1\r\n");
    if (r.method == "PUT" && r.target == "/up/x?a=1&digest=sha256%3A" + digest.substr(7) && r.body == blob &&
        r.Header("Content-Type").value_or("") == "application/octet-stream") {
      return HttpReply(201, "");
    }
    return HttpReply(400, "unexpected");
  });
  auto c = Client();
  MemFile f(blob, "blob");
  Status s = c->UploadBlob(reg.address(), "a", digest, f);
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(reg.seen().size(), 2u);

  // A registry that stores it under another digest is caught.
  FakeRegistry liar([&](const SeenRequest& r) -> std::string {
    if (r.method == "POST") return HttpReply(202, "", "Location: /up/y\r\n");
    return HttpReply(201, "", "Docker-Content-Digest: " + DigestOf("other") + "\r\n");
  });
  s = c->UploadBlob(liar.address(), "a", digest, f);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
}

TEST(RegistryProtocol, ServerErrorsAndThrottlingAreRetried) {
  const std::string blob(5000, 'r');
  int gets = 0;
  FakeRegistry reg([&](const SeenRequest& r) -> std::string {
    ++gets;
    if (gets == 1) return HttpReply(503, "busy");
    if (gets == 2) return HttpReply(429, "slow down", "Retry-After: 0\r\n");
    return Partial(blob, r);
  });
  auto c = Client();
  const BlobRef ref = BlobRef::Parse("registry://" + reg.address() + "/a@" + DigestOf(blob)).value();
  std::string got(100, '\0');
  Status s = c->ReadBlob(ref, 4900, 100, got.data());
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(got, blob.substr(4900));
  EXPECT_EQ(gets, 3);
  EXPECT_EQ(reg.seen()[2].Header("Range").value_or(""), "bytes=4900-4999");
}

TEST(RegistryProtocol, RetriesAreBoundedAndClientErrorsAreNotRetried) {
  int status = 500;
  FakeRegistry reg([&](const SeenRequest&) { return HttpReply(status, "{\"errors\":[{\"code\":\"X\",\"message\":\"broken\"}]}"); });
  RegistryOptions opts;
  opts.retries = 2;
  auto c = Client(opts);
  const BlobRef ref = BlobRef::Parse("registry://" + reg.address() + "/a@" + DigestOf("b")).value();
  char buf[8];
  Status s = c->ReadBlob(ref, 0, sizeof buf, buf);
  EXPECT_EQ(s.os_errno(), EIO) << s.ToString();
  EXPECT_NE(s.message().find("500 (X: broken)"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("3 attempts"), std::string::npos) << s.message();
  EXPECT_EQ(reg.seen().size(), 3u);

  status = 404;
  s = c->ReadBlob(ref, 0, sizeof buf, buf);
  EXPECT_EQ(s.os_errno(), EIO) << s.ToString();
  EXPECT_EQ(reg.seen().size(), 4u);  // one more, not three
}

TEST(RegistryProtocol, BearerTokenFetchedWithServiceScopeAndCredentialsThenReused) {
  test::TempDir dir;
  const std::string blob(3000, 't');
  const std::string token = "T0ken-Secret-123";
  std::string realm;
  bool revoked = false;
  FakeRegistry reg([&](const SeenRequest& r) -> std::string {
    if (r.target.rfind("/token?", 0) == 0) {
      // user:pw is "dXNlcjpwdw==".
      if (r.target != "/token?service=svc%20x&scope=repository%3Aa%2Fb%3Apull" ||
          r.Header("Authorization").value_or("") != "Basic dXNlcjpwdw==") {
        return HttpReply(401, "");
      }
      return HttpReply(200, "{\"token\": \"" + token + "\", \"expires_in\": 300}");
    }
    if (!revoked && r.Header("Authorization").value_or("") == "Bearer " + token) return Partial(blob, r);
    return HttpReply(401, "",
                     "WWW-Authenticate: Bearer realm=\"" + realm +
                         "\",service=\"svc x\",scope=\"repository:a/b:pull\"" +
                         (revoked ? ",error=\"invalid_token\"" : "") + "\r\n");
  });
  realm = "http://" + reg.address() + "/token";
  const std::string creds = dir.Sub("config.json");
  const std::string json = "{\"auths\": {\"" + reg.address() + "\": {\"username\": \"user\", \"password\": \"pw\"}}}";
  ASSERT_TRUE(test::WriteWholeFile(Env::Default(), creds, std::vector<char>(json.begin(), json.end())).ok());
  RegistryOptions opts;
  opts.credentials_file = creds;
  auto c = Client(opts);
  const BlobRef ref = BlobRef::Parse("registry://" + reg.address() + "/a/b@" + DigestOf(blob)).value();
  for (int i = 0; i < 3; ++i) {
    std::string got(10, '\0');
    Status s = c->ReadBlob(ref, static_cast<uint64_t>(i) * 100, got.size(), got.data());
    ASSERT_TRUE(s.ok()) << s.ToString();
  }
  EXPECT_EQ(reg.Count("/token"), 1);
  EXPECT_EQ(reg.Count("/v2/"), 4);  // one anonymous try, then three with the token

  // Refused: the cached token is dropped and one more is fetched; refused
  // again, that is the answer. The token is never in the message.
  revoked = true;
  char buf[10];
  Status s = c->ReadBlob(ref, 0, sizeof buf, buf);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.os_errno(), EACCES) << s.ToString();
  EXPECT_NE(s.message().find("invalid_token"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find(token), std::string::npos) << s.message();
  EXPECT_EQ(reg.Count("/token"), 2);
}

TEST(RegistryProtocol, ManifestDigestsAreChecked) {
  const std::string body = R"({"schemaVersion":2})";
  std::string named = DigestOf(body);
  std::string big;
  FakeRegistry reg([&](const SeenRequest& r) -> std::string {
    if (r.target.find("/manifests/big") != std::string::npos) return HttpReply(200, big);
    return HttpReply(200, body,
                     "Content-Type: application/vnd.oci.image.manifest.v1+json; charset=utf-8\r\n"
                     "Docker-Content-Digest: " + named + "\r\n");
  });
  auto c = Client();
  auto ref = ImageRef::Parse("registry://" + reg.address() + "/a:v1").value();
  auto m = c->GetManifest(ref);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->media_type, "application/vnd.oci.image.manifest.v1+json");
  EXPECT_EQ(m->digest, named);
  const std::string accept = reg.seen()[0].Header("Accept").value_or("");
  for (const char* t : {"application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
                        "application/vnd.docker.distribution.manifest.v2+json",
                        "application/vnd.docker.distribution.manifest.list.v2+json"}) {
    EXPECT_NE(accept.find(t), std::string::npos) << accept;
  }

  named = DigestOf("something else");
  m = c->GetManifest(ref);
  EXPECT_TRUE(!m.ok() && m.status().IsCorruption()) << m.status().ToString();

  named = DigestOf(body);
  auto by_digest = ImageRef::Parse("registry://" + reg.address() + "/a@" + DigestOf("another")).value();
  m = c->GetManifest(by_digest);
  EXPECT_TRUE(!m.ok() && m.status().IsCorruption()) << m.status().ToString();

  big.assign((4 << 20) + 1, ' ');
  m = c->GetManifest(ImageRef::Parse("registry://" + reg.address() + "/a:big").value());
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), Status::Code::kTooLarge) << m.status().ToString();
}

}  // namespace
}  // namespace ovbd::remote
