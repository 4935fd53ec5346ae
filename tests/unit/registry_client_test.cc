// RegistryClient against real servers: Debian's docker-registry
// (distribution 2.8) on 127.0.0.1, with no auth, htpasswd Basic auth, or
// Bearer tokens from tests/util/token_server.py; behind nginx for TLS; and
// stopped, to see reads fail in bounded time and recover. Skipped with the
// reason when a program is not installed.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <random>
#include <thread>

#include "base64.h"
#include "mem_file.h"
#include "ovbd/remote/auth.h"
#include "ovbd/remote/oci_manifest.h"
#include "ovbd/remote/registry_client.h"
#include "registry_server.h"
#include "test_util.h"

namespace ovbd::remote {
namespace {

using ovbd::test::MemFile;
using ovbd::test::RegistryServer;
using ovbd::test::TempDir;
using ovbd::test::TlsFront;
using ovbd::test::TokenServer;
using Clock = std::chrono::steady_clock;

std::string RandomBlob(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto v = ovbd::test::RandomBytes(rng, n);
  return std::string(v.begin(), v.end());
}

std::string DigestOf(const std::string& s) { return "sha256:" + ovbd::test::Sha256Hex(s.data(), s.size()); }

BlobRef Ref(const std::string& registry, const std::string& repo, const std::string& digest) {
  return BlobRef::Parse("registry://" + registry + "/" + repo + "@" + digest).value();
}

// A docker config.json with `user:password` for `registry`, in `dir`.
std::string CredentialsFile(const TempDir& dir, const std::string& registry, const std::string& user,
                            const std::string& password) {
  // Base64 of user:password, as `docker login` writes it.
  const std::string b64 = Base64Encode(user + ":" + password);
  const std::string path = dir.Sub("config.json");
  const std::string json = R"({"auths": {"http://)" + registry + R"(/": {"auth": ")" + b64 + R"("}}})";
  std::vector<char> bytes(json.begin(), json.end());
  std::remove(path.c_str());
  EXPECT_TRUE(ovbd::test::WriteWholeFile(Env::Default(), path, bytes).ok());
  return path;
}

std::unique_ptr<RegistryClient> Client(RegistryOptions opts = {}, HttpClientOptions http = {}) {
  http.connect_timeout = std::chrono::milliseconds(2000);
  http.request_timeout = std::chrono::milliseconds(10000);
  auto c = RegistryClient::Make(std::move(opts), HttpClient::Make(http));
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? std::move(c.value()) : nullptr;
}

Status Upload(RegistryClient* c, const std::string& reg, const std::string& repo, const std::string& blob) {
  MemFile f(blob, "blob");
  return c->UploadBlob(reg, repo, DigestOf(blob), f);
}

// Reads [off, off+n) and compares it with the blob's bytes.
void ExpectRange(RegistryClient* c, const BlobRef& ref, const std::string& blob, uint64_t off, size_t n) {
  std::string got(n, '\0');
  Status s = c->ReadBlob(ref, off, n, got.data());
  ASSERT_TRUE(s.ok()) << "[" << off << ", +" << n << "): " << s.ToString();
  EXPECT_TRUE(got == blob.substr(off, n)) << "bytes differ in [" << off << ", +" << n << ")";
}

// The blob's size, or a test failure (and 0).
uint64_t SizeOf(RegistryClient* c, const BlobRef& ref) {
  auto size = c->BlobSize(ref);
  EXPECT_TRUE(size.ok()) << size.status().ToString();
  return size.ok() ? *size : 0;
}

bool Has(RegistryClient* c, const std::string& reg, const std::string& repo, const std::string& digest) {
  auto has = c->HasBlob(reg, repo, digest);
  EXPECT_TRUE(has.ok()) << has.status().ToString();
  return has.ok() && *has;
}

// One anonymous registry shared by the tests that do not stop it.
class AnonymousRegistry : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto r = RegistryServer::Start();
    if (r.ok()) {
      server_ = std::move(r.value()).release();
    } else {
      start_error_ = new Status(r.status());
    }
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    delete start_error_;
    start_error_ = nullptr;
  }
  void SetUp() override {
    if (start_error_ != nullptr) OVBD_SKIP_OR_FAIL(*start_error_);
  }
  static RegistryServer* server_;
  static Status* start_error_;
};
RegistryServer* AnonymousRegistry::server_ = nullptr;
Status* AnonymousRegistry::start_error_ = nullptr;

TEST_F(AnonymousRegistry, ChunkedAndMonolithicUploadsReadBackByRange) {
  const std::string reg = server_->address();
  RegistryOptions opts;
  opts.upload_chunk = 64 << 10;
  auto c = Client(opts);
  ASSERT_TRUE(c);

  // Chunked: 3 chunks of 64 KiB and a short fourth.
  const std::string big = RandomBlob((192 << 10) + 4321, 1);
  std::vector<std::pair<uint64_t, uint64_t>> progress;
  MemFile f(big, "big");
  ASSERT_FALSE(Has(c.get(), reg, "ovbd/chunked", DigestOf(big)));
  Status s = c->UploadBlob(reg, "ovbd/chunked", DigestOf(big), f,
                           [&](uint64_t done, uint64_t total) { progress.emplace_back(done, total); });
  ASSERT_TRUE(s.ok()) << s.ToString() << "\n" << server_->log();
  ASSERT_GE(progress.size(), 4u);
  for (size_t i = 1; i < progress.size(); ++i) EXPECT_GE(progress[i].first, progress[i - 1].first);
  EXPECT_EQ(progress.back().first, big.size());
  EXPECT_EQ(progress.back().second, big.size());
  EXPECT_TRUE(Has(c.get(), reg, "ovbd/chunked", DigestOf(big)));

  // Small enough for one PUT; and one client that never chunks.
  const std::string small = RandomBlob(1000, 2);
  ASSERT_TRUE(Upload(c.get(), reg, "ovbd/mono", small).ok());
  opts.upload_chunk = 0;
  auto mono = Client(opts);
  const std::string mid = RandomBlob((300 << 10) + 7, 3);
  s = Upload(mono.get(), reg, "ovbd/mono", mid);
  ASSERT_TRUE(s.ok()) << s.ToString();

  for (const auto& [repo, blob] : {std::pair<std::string, const std::string*>{"ovbd/chunked", &big},
                                   {"ovbd/mono", &small},
                                   {"ovbd/mono", &mid}}) {
    const BlobRef ref = Ref(reg, repo, DigestOf(*blob));
    auto size = c->BlobSize(ref);
    ASSERT_TRUE(size.ok()) << size.status().ToString();
    EXPECT_EQ(*size, blob->size());
    ExpectRange(c.get(), ref, *blob, 0, blob->size());
    ExpectRange(c.get(), ref, *blob, 1, 7);
    ExpectRange(c.get(), ref, *blob, 333, 511);
    ExpectRange(c.get(), ref, *blob, blob->size() - 17, 17);  // the last, short range
    if (blob->size() > 70000) ExpectRange(c.get(), ref, *blob, 65535, 4097);  // across chunks
  }
}

TEST_F(AnonymousRegistry, AbsentBlob) {
  auto c = Client();
  const BlobRef ref = Ref(server_->address(), "ovbd/absent", DigestOf("never pushed"));
  auto size = c->BlobSize(ref);
  ASSERT_FALSE(size.ok());
  EXPECT_TRUE(size.status().IsNotFound()) << size.status().ToString();
  char buf[16];
  Status s = c->ReadBlob(ref, 0, sizeof buf, buf);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.os_errno(), EIO) << s.ToString();
  EXPECT_NE(s.message().find(ref.ToString()), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("bytes [0, 16)"), std::string::npos) << s.message();
  EXPECT_FALSE(Has(c.get(), ref.registry, ref.repo, ref.digest));
}

TEST_F(AnonymousRegistry, ManifestRoundTrip) {
  const std::string reg = server_->address();
  auto c = Client();
  const std::string layer = RandomBlob(5000, 4);
  ImageManifest m;
  m.layers = {{kOverlaybdLayerType, DigestOf(layer), layer.size()}};
  const std::string config = EncodeImageConfig(m.layers);
  m.config = {kOciConfigType, DigestOf(config), config.size()};
  m.volume_size = 1 << 30;
  ASSERT_TRUE(Upload(c.get(), reg, "ovbd/image", layer).ok());
  ASSERT_TRUE(Upload(c.get(), reg, "ovbd/image", config).ok());
  const std::string body = EncodeImageManifest(m);

  auto tag = ImageRef::Parse("registry://" + reg + "/ovbd/image:v1").value();
  auto digest = c->PutManifest(tag, kOciManifestType, body);
  ASSERT_TRUE(digest.ok()) << digest.status().ToString() << "\n" << server_->log();
  EXPECT_EQ(*digest, DigestOf(body));

  auto got = c->GetManifest(tag);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->body, body);
  EXPECT_EQ(got->media_type, kOciManifestType);
  EXPECT_EQ(got->digest, *digest);
  auto decoded = DecodeImageManifest(got->body);
  ASSERT_TRUE(decoded.ok());
  EXPECT_EQ(decoded->volume_size, uint64_t{1} << 30);
  ASSERT_EQ(decoded->layers.size(), 1u);
  EXPECT_EQ(decoded->layers[0].digest, DigestOf(layer));

  auto by_digest = ImageRef::Parse("registry://" + reg + "/ovbd/image@" + *digest).value();
  got = c->GetManifest(by_digest);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(got->body, body);

  auto missing = c->GetManifest(ImageRef::Parse("registry://" + reg + "/ovbd/image:nope").value());
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(missing.status().IsNotFound()) << missing.status().ToString();

  // A manifest naming a blob the repository lacks is refused by the registry.
  ImageManifest bad = m;
  bad.layers[0].digest = DigestOf("not uploaded");
  auto refused = c->PutManifest(ImageRef::Parse("registry://" + reg + "/ovbd/image:bad").value(),
                                kOciManifestType, EncodeImageManifest(bad));
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.status().message().find("MANIFEST_BLOB_UNKNOWN"), std::string::npos)
      << refused.status().message();
}

TEST_F(AnonymousRegistry, DownMirrorIsSkippedAndLiveMirrorIsReadFirst) {
  const std::string reg = server_->address();
  auto mirror = RegistryServer::Start();
  if (!mirror.ok()) OVBD_SKIP_OR_FAIL(mirror.status());
  auto dead = ovbd::test::PickFreePort();  // nothing listens there
  ASSERT_TRUE(dead.ok());

  auto plain = Client();
  const std::string at_origin = RandomBlob(3000, 5);
  const std::string at_mirror = RandomBlob(4000, 6);
  ASSERT_TRUE(Upload(plain.get(), reg, "ovbd/mirrored", at_origin).ok());
  ASSERT_TRUE(Upload(plain.get(), (*mirror)->address(), "ovbd/mirrored", at_mirror).ok());

  RegistryOptions opts;
  opts.mirrors[reg] = {"http://127.0.0.1:" + std::to_string(*dead), "http://" + (*mirror)->address()};
  auto c = Client(opts);
  // Only the live mirror has it: it was asked, after the dead one.
  const BlobRef m = Ref(reg, "ovbd/mirrored", DigestOf(at_mirror));
  ExpectRange(c.get(), m, at_mirror, 10, 100);
  EXPECT_EQ(SizeOf(c.get(), m), at_mirror.size());
  // Only the origin has it: both mirrors passed over.
  const BlobRef o = Ref(reg, "ovbd/mirrored", DigestOf(at_origin));
  ExpectRange(c.get(), o, at_origin, 0, at_origin.size());
  EXPECT_EQ(SizeOf(c.get(), o), at_origin.size());
  // Writes go to the origin only.
  const std::string pushed = RandomBlob(100, 7);
  ASSERT_TRUE(Upload(c.get(), reg, "ovbd/mirrored", pushed).ok());
  EXPECT_TRUE(Has(plain.get(), reg, "ovbd/mirrored", DigestOf(pushed)));
  EXPECT_FALSE(Has(plain.get(), (*mirror)->address(), "ovbd/mirrored", DigestOf(pushed)));
}

TEST(RegistryBasicAuth, RightCredentialsWorkWrongOnesAreRefusedClearly) {
  TempDir dir;
  RegistryServer::Options o;
  o.auth = RegistryServer::Auth::kBasic;
  auto server = RegistryServer::Start(o);
  if (!server.ok()) OVBD_SKIP_OR_FAIL(server.status());
  const std::string reg = (*server)->address();

  RegistryOptions opts;
  opts.credentials_file = CredentialsFile(dir, reg, o.user, o.password);
  auto c = Client(opts);
  const std::string blob = RandomBlob(2000, 8);
  Status s = Upload(c.get(), reg, "ovbd/basic", blob);
  ASSERT_TRUE(s.ok()) << s.ToString() << "\n" << (*server)->log();
  ExpectRange(c.get(), Ref(reg, "ovbd/basic", DigestOf(blob)), blob, 5, 1000);

  const std::string wrong = "Wr0ng-Secret-Pw";
  opts.credentials_file = CredentialsFile(dir, reg, o.user, wrong);
  auto bad = Client(opts);
  char buf[10];
  s = bad->ReadBlob(Ref(reg, "ovbd/basic", DigestOf(blob)), 0, sizeof buf, buf);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.os_errno(), EACCES) << s.ToString();
  EXPECT_NE(s.message().find("credentials for " + reg + " were refused"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find(wrong), std::string::npos) << s.message();
  s = Upload(bad.get(), reg, "ovbd/basic", RandomBlob(10, 9));
  EXPECT_EQ(s.os_errno(), EACCES) << s.ToString();
  EXPECT_EQ(s.message().find(wrong), std::string::npos) << s.message();

  auto none = Client();
  s = none->ReadBlob(Ref(reg, "ovbd/basic", DigestOf(blob)), 0, sizeof buf, buf);
  EXPECT_EQ(s.os_errno(), EACCES) << s.ToString();
  EXPECT_NE(s.message().find("wants credentials"), std::string::npos) << s.message();
}

// A token server, a registry that trusts it, and a client with the
// credentials of the token server's user.
struct TokenSetup {
  std::unique_ptr<TokenServer> tokens;
  std::unique_ptr<RegistryServer> registry;
  Status status;
  TempDir dir;      // for the credentials files
  std::string reg;  // the registry's address
  std::unique_ptr<RegistryClient> client;
  explicit TokenSetup(int expires_in = 300) {
    TokenServer::Options t;
    t.expires_in = expires_in;
    auto ts = TokenServer::Start(t);
    if (!ts.ok()) {
      status = ts.status();
      return;
    }
    tokens = std::move(*ts);
    RegistryServer::Options r;
    r.auth = RegistryServer::Auth::kToken;
    r.token_server = tokens.get();
    auto rs = RegistryServer::Start(r);
    if (!rs.ok()) {
      status = rs.status();
      return;
    }
    registry = std::move(*rs);
    reg = registry->address();
    client = LoggedInClient();
  }

  // A client with the credentials of the token server's user, and
  // `password` (by default the right one).
  std::unique_ptr<RegistryClient> LoggedInClient(const std::string& password = "") const {
    RegistryOptions opts;
    opts.credentials_file = CredentialsFile(dir, reg, tokens->options().user,
                                            password.empty() ? tokens->options().password : password);
    return Client(opts);
  }
};

TEST(RegistryTokenAuth, OneTokenPerScopeReusedAcrossManyReads) {
  TokenSetup setup;
  if (!setup.status.ok()) OVBD_SKIP_OR_FAIL(setup.status);
  const std::string blob = RandomBlob(50000, 10);
  Status s = Upload(setup.client.get(), setup.reg, "ovbd/token", blob);
  ASSERT_TRUE(s.ok()) << s.ToString() << "\n" << setup.registry->log() << setup.tokens->log();
  EXPECT_EQ(setup.tokens->TokensIssued(), 1);  // pull,push

  // Many threads read at once, the first of them before any pull token
  // exists: one is fetched, and shared.
  const BlobRef ref = Ref(setup.reg, "ovbd/token", DigestOf(blob));
  std::atomic<int> bad{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < 15; ++i) {
        const uint64_t off = static_cast<uint64_t>((t * 7919 + i * 104729) % 49000);
        std::string got(1000, '\0');
        Status r = setup.client->ReadBlob(ref, off, got.size(), got.data());
        if (!r.ok() || got != blob.substr(off, 1000)) ++bad;
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(bad, 0);
  EXPECT_EQ(setup.tokens->TokensIssued(), 2);  // and one pull token for all 60 reads
}

TEST(RegistryTokenAuth, ShortLivedTokensAreRefreshedAndReadsGoOn) {
  TokenSetup setup(/*expires_in=*/2);
  if (!setup.status.ok()) OVBD_SKIP_OR_FAIL(setup.status);
  const std::string blob = RandomBlob(8000, 11);
  ASSERT_TRUE(Upload(setup.client.get(), setup.reg, "ovbd/short", blob).ok());
  const BlobRef ref = Ref(setup.reg, "ovbd/short", DigestOf(blob));
  ExpectRange(setup.client.get(), ref, blob, 0, 100);
  const int first = setup.tokens->TokensIssued();
  EXPECT_EQ(first, 2);

  // A 2 s token is replaced after 1.5 s: two more within ~3 s of reads.
  int reads = 0;
  const auto start = Clock::now();
  while (setup.tokens->TokensIssued() < first + 2 && Clock::now() - start < std::chrono::seconds(8)) {
    ExpectRange(setup.client.get(), ref, blob, static_cast<uint64_t>(reads % 7000), 1000);
    ++reads;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const auto took = Clock::now() - start;
  EXPECT_EQ(setup.tokens->TokensIssued(), first + 2);
  EXPECT_GE(took, std::chrono::milliseconds(2500));  // not one token per read
  EXPECT_GT(reads, 20);
}

TEST(RegistryTokenAuth, RevokedCachedTokenIsReplacedOnce) {
  TokenSetup setup;
  if (!setup.status.ok()) OVBD_SKIP_OR_FAIL(setup.status);
  const std::string blob = RandomBlob(3000, 12);
  ASSERT_TRUE(Upload(setup.client.get(), setup.reg, "ovbd/rotate", blob).ok());
  const BlobRef ref = Ref(setup.reg, "ovbd/rotate", DigestOf(blob));
  ExpectRange(setup.client.get(), ref, blob, 0, 3000);
  ASSERT_EQ(setup.tokens->TokensIssued(), 2);

  // The issuer's key changes and the registry trusts only the new one: the
  // cached pull token is refused, dropped, and replaced by one fetch.
  ASSERT_TRUE(setup.tokens->RestartWithNewKey().ok()) << setup.tokens->log();
  ASSERT_TRUE(setup.registry->Restart().ok()) << setup.registry->log();
  ExpectRange(setup.client.get(), ref, blob, 100, 200);
  EXPECT_EQ(setup.tokens->TokensIssued(), 3);
  ExpectRange(setup.client.get(), ref, blob, 300, 200);
  EXPECT_EQ(setup.tokens->TokensIssued(), 3);
}

TEST(RegistryTokenAuth, IdentityTokenIsTradedForAccessTokens) {
  TokenServer::Options t;
  t.refresh_token = "refresh-Secret-42";
  auto tokens = TokenServer::Start(t);
  if (!tokens.ok()) OVBD_SKIP_OR_FAIL(tokens.status());
  RegistryServer::Options r;
  r.auth = RegistryServer::Auth::kToken;
  r.token_server = tokens->get();
  auto server = RegistryServer::Start(r);
  if (!server.ok()) OVBD_SKIP_OR_FAIL(server.status());
  TempDir dir;
  const std::string reg = (*server)->address();
  const std::string json = R"({"auths": {")" + reg + R"(": {"identitytoken": ")" + t.refresh_token + R"("}}})";
  const std::string path = dir.Sub("config.json");
  ASSERT_TRUE(ovbd::test::WriteWholeFile(Env::Default(), path, std::vector<char>(json.begin(), json.end())).ok());
  RegistryOptions opts;
  opts.credentials_file = path;
  auto c = Client(opts);
  const std::string blob = RandomBlob(1234, 15);
  Status s = Upload(c.get(), reg, "ovbd/oauth", blob);
  ASSERT_TRUE(s.ok()) << s.ToString() << "\n" << (*tokens)->log();
  ExpectRange(c.get(), Ref(reg, "ovbd/oauth", DigestOf(blob)), blob, 34, 1200);
  EXPECT_EQ((*tokens)->TokensIssued(), 2);
}

TEST(RegistryTokenAuth, WrongCredentialsForTheTokenServer) {
  TokenSetup setup;
  if (!setup.status.ok()) OVBD_SKIP_OR_FAIL(setup.status);
  const std::string& reg = setup.reg;
  const std::string wrong = "Not-The-Token-Pw";
  auto c = setup.LoggedInClient(wrong);
  char buf[8];
  Status s = c->ReadBlob(Ref(reg, "ovbd/x", DigestOf("x")), 0, sizeof buf, buf);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.os_errno(), EACCES) << s.ToString();
  EXPECT_NE(s.message().find("token server of " + reg), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find(wrong), std::string::npos) << s.message();
  EXPECT_EQ(setup.tokens->TokensIssued(), 0);
}

TEST(RegistryRetries, StoppedRegistryFailsInBoundedTimeAndRecovers) {
  auto server = RegistryServer::Start();
  if (!server.ok()) OVBD_SKIP_OR_FAIL(server.status());
  const std::string reg = (*server)->address();
  RegistryOptions opts;
  opts.retries = 3;
  opts.backoff_min = std::chrono::milliseconds(50);
  opts.backoff_max = std::chrono::milliseconds(400);
  auto c = Client(opts);
  const std::string blob = RandomBlob(4096, 13);
  ASSERT_TRUE(Upload(c.get(), reg, "ovbd/retry", blob).ok());
  const BlobRef ref = Ref(reg, "ovbd/retry", DigestOf(blob));
  ExpectRange(c.get(), ref, blob, 0, 4096);

  (*server)->Stop();
  char buf[512];
  const auto start = Clock::now();
  Status s = c->ReadBlob(ref, 1000, sizeof buf, buf);
  const auto took = Clock::now() - start;
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.os_errno(), EIO) << s.ToString();
  EXPECT_NE(s.message().find(ref.ToString() + ": bytes [1000, 1512)"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("4 attempts"), std::string::npos) << s.message();
  // Three back-offs of at least 25, 50 and 100 ms; at most 50+100+200 ms
  // and the refused connections.
  EXPECT_GE(took, std::chrono::milliseconds(175));
  EXPECT_LT(took, std::chrono::milliseconds(2000));

  ASSERT_TRUE((*server)->Restart().ok()) << (*server)->log();
  ExpectRange(c.get(), ref, blob, 1000, 512);
}

TEST(RegistryTls, ThroughNginxWithTheCaAndRefusedWithout) {
  auto server = RegistryServer::Start();
  if (!server.ok()) OVBD_SKIP_OR_FAIL(server.status());
  auto front = TlsFront::Start((*server)->port());
  if (!front.ok()) OVBD_SKIP_OR_FAIL(front.status());
  const std::string reg = (*front)->address();

  RegistryOptions opts;
  opts.https = {reg};
  opts.upload_chunk = 16 << 10;
  HttpClientOptions http;
  http.ca_file = (*front)->ca_file();
  auto c = Client(opts, http);
  const std::string blob = RandomBlob(40000, 14);
  Status s = Upload(c.get(), reg, "ovbd/tls", blob);
  ASSERT_TRUE(s.ok()) << s.ToString() << "\n" << (*front)->log();
  const BlobRef ref = Ref(reg, "ovbd/tls", DigestOf(blob));
  EXPECT_EQ(SizeOf(c.get(), ref), blob.size());
  ExpectRange(c.get(), ref, blob, 12345, 6789);

  auto untrusting = Client(opts);
  const auto start = Clock::now();
  char buf[100];
  s = untrusting->ReadBlob(ref, 0, sizeof buf, buf);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.os_errno(), EACCES) << s.ToString();
  EXPECT_NE(s.message().find("certificate"), std::string::npos) << s.message();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2));  // not retried
}

}  // namespace
}  // namespace ovbd::remote
