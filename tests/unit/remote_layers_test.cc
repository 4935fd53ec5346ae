// A store's remote layers against scripted registries: a volume made from
// an image is read from that image's registry, also when the store already
// had the layer from another registry (one stub per digest); an image that
// misstates a stored layer's size changes nothing; what a faulty server
// sent once does not stay in the cache as the layer.
#include <gtest/gtest.h>

#include <mutex>
#include <random>
#include <regex>

#include "ovbd/remote/oci_manifest.h"
#include "ovbd/remote/remote_blobs.h"
#include "ovbd/store/store.h"
#include "scripted_http_server.h"
#include "store_util.h"
#include "test_util.h"

namespace ovbd {
namespace {

using test::HttpReply;
using test::ScriptedConn;
using test::ScriptedHttpServer;

// A registry serving one repository "team/base" with tag "v1" (an image of
// the given layer blob) and that blob by range; it can be told to refuse
// every blob request (401, as to a client without credentials).
class FakeRegistry {
 public:
  FakeRegistry(std::string manifest, std::string digest, std::string blob)
      : manifest_(std::move(manifest)), digest_(std::move(digest)), blob_(std::move(blob)),
        server_([this](ScriptedConn& c) { Serve(c); }) {}

  std::string address() const { return "127.0.0.1:" + std::to_string(server_.port()); }
  std::string image() const { return "registry://" + address() + "/team/base:v1"; }
  void Refuse() {
    std::lock_guard<std::mutex> l(mu_);
    refuse_ = true;
  }
  // Blob bytes sent with every 512th byte inverted (a faulty server or proxy).
  void Garble(bool on) {
    std::lock_guard<std::mutex> l(mu_);
    garble_ = on;
  }
  int blob_requests() {
    std::lock_guard<std::mutex> l(mu_);
    return blob_requests_;
  }

 private:
  std::string Answer(const test::SeenRequest& r) {
    if (r.target == "/v2/team/base/manifests/v1") {
      return HttpReply(200, manifest_, std::string("Content-Type: ") + remote::kOciManifestType + "\r\n");
    }
    if (r.target != "/v2/team/base/blobs/" + digest_) return HttpReply(404, "");
    std::lock_guard<std::mutex> l(mu_);
    ++blob_requests_;
    if (refuse_) return HttpReply(401, "", "WWW-Authenticate: Basic realm=\"fake\"\r\n");
    if (r.method == "HEAD") {
      return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(blob_.size()) + "\r\n\r\n";
    }
    std::smatch m;
    const std::string range = r.Header("Range").value_or("");
    if (!std::regex_match(range, m, std::regex("bytes=(\\d+)-(\\d+)"))) return HttpReply(200, blob_);
    const uint64_t a = std::stoull(m[1]);
    const uint64_t b = std::min<uint64_t>(std::stoull(m[2]), blob_.size() - 1);
    if (a >= blob_.size()) return HttpReply(416, "");
    std::string body = blob_.substr(a, b - a + 1);
    if (garble_) {
      for (size_t i = 0; i < body.size(); i += 512) body[i] = static_cast<char>(~body[i]);
    }
    return HttpReply(206, body,
                     "Content-Range: bytes " + std::to_string(a) + "-" + std::to_string(b) + "/" +
                         std::to_string(blob_.size()) + "\r\n");
  }
  void Serve(ScriptedConn& c) {
    while (auto r = c.ReadRequest()) {
      if (!c.Write(Answer(*r))) return;
    }
  }

  const std::string manifest_, digest_, blob_;
  std::mutex mu_;
  bool refuse_ = false;
  bool garble_ = false;
  int blob_requests_ = 0;
  ScriptedHttpServer server_;
};

class RemoteLayersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // The layer: a raw image imported into a store of its own.
    std::mt19937_64 rng(7);
    raw_ = test::RandomBytes(rng, 1 << 20);
    const std::string raw_path = dir_.Sub("disk.raw");
    ASSERT_TRUE(test::WriteWholeFile(Env::Default(), raw_path, raw_).ok());
    const std::string src = dir_.Sub("src");
    ASSERT_TRUE(Store::Init(Env::Default(), src).ok());
    auto s = test::OpenStore(Env::Default(), src);
    ASSERT_NE(s, nullptr);
    ASSERT_TRUE(s->ImportRaw("disk", raw_path, ImportOptions{}, FileAttrs{}).ok());
    layer_file_ = s->List()[0].lowers.at(0);
    s.reset();
    std::vector<char> blob;
    auto f = Env::Default()->OpenReadable(src + "/layers/" + layer_file_);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    blob.resize((*f)->Size());
    ASSERT_TRUE((*f)->ReadExact(0, blob.size(), blob.data()).ok());
    blob_.assign(blob.begin(), blob.end());
    digest_ = "sha256:" + test::Sha256Hex(blob_.data(), blob_.size());
    ASSERT_EQ(layer_file_, "sha256-" + digest_.substr(7) + ".layer");

    path_ = dir_.Sub("store");
    ASSERT_TRUE(Store::Init(Env::Default(), path_).ok());
  }

  std::string Manifest(uint64_t layer_size) const {
    remote::ImageManifest m;
    m.config = {remote::kOciConfigType, "sha256:" + std::string(64, 'c'), 2, false};
    m.layers.push_back({remote::kOverlaybdLayerType, digest_, layer_size, true});
    return remote::EncodeImageManifest(m);
  }
  std::unique_ptr<FakeRegistry> Registry() { return Registry(blob_.size()); }
  std::unique_ptr<FakeRegistry> Registry(uint64_t claimed_size) {
    return std::make_unique<FakeRegistry>(Manifest(claimed_size), digest_, blob_);
  }
  // The store, opened as a daemon would open it: remote layers through a
  // block cache of its own (`cache` names it) and no credentials.
  std::unique_ptr<Store> Open(const std::string& cache) {
    remote::RemoteOptions ro;
    ro.cache.dir = dir_.Sub(cache);
    ro.registry.retries = 0;
    ro.http.request_timeout = std::chrono::milliseconds(10000);
    auto remote = remote::RemoteBlobs::Make(Env::Default(), ro);
    EXPECT_TRUE(remote.ok()) << remote.status().ToString();
    if (!remote.ok()) return nullptr;
    StoreOptions so;
    so.remote = *remote;
    return test::OpenStore(Env::Default(), path_, so);
  }
  std::string Stub() {
    const std::string stub = path_ + "/layers/sha256-" + digest_.substr(7) + ".remote";
    auto t = Env::Default()->ReadSmallFile(stub, 1 << 16);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    return t.ok() ? *t : "";
  }

  test::TempDir dir_;
  std::vector<char> raw_;
  std::string layer_file_, blob_, digest_, path_;
};

TEST_F(RemoteLayersTest, VolumeIsReadFromItsImagesRegistryWhenAnotherBroughtTheLayer) {
  auto x = Registry();
  auto y = Registry();
  {
    auto s = Open("cache1");
    ASSERT_NE(s, nullptr);
    Status c = s->CreateFromImage("a", x->image(), false, FileAttrs{});
    ASSERT_TRUE(c.ok()) << c.ToString();
    EXPECT_EQ(test::ReadVolume(s.get(), "a"), raw_);
  }
  // X now refuses this client (no credentials for it); Y serves the same
  // layer. Another daemon, with a cache of its own, makes a volume from Y.
  x->Refuse();
  const int x_before = x->blob_requests();
  auto s = Open("cache2");
  ASSERT_NE(s, nullptr);
  Status c = s->CreateFromImage("b", y->image(), false, FileAttrs{});
  ASSERT_TRUE(c.ok()) << c.ToString();
  EXPECT_EQ(test::ReadVolume(s.get(), "b"), raw_);
  EXPECT_GT(y->blob_requests(), 0);
  EXPECT_NE(Stub().find(y->address()), std::string::npos) << Stub();
  // One address per layer: "a" is read from Y now too; X is asked nothing.
  EXPECT_EQ(test::ReadVolume(s.get(), "a"), raw_);
  EXPECT_EQ(x->blob_requests(), x_before);
}

TEST_F(RemoteLayersTest, SameImageAgainKeepsTheStub) {
  auto x = Registry();
  auto s = Open("cache");
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(s->CreateFromImage("a", x->image(), false, FileAttrs{}).ok());
  const std::string stub = Stub();
  ASSERT_TRUE(s->CreateFromImage("b", x->image(), false, FileAttrs{}).ok());
  EXPECT_EQ(Stub(), stub);
  EXPECT_EQ(test::ReadVolume(s.get(), "b"), raw_);
}

TEST_F(RemoteLayersTest, ImageMisstatingAStoredLayersSizeIsRefusedAndChangesNothing) {
  auto x = Registry();
  auto liar = Registry(blob_.size() + 4096);
  auto s = Open("cache");
  ASSERT_NE(s, nullptr);
  ASSERT_TRUE(s->CreateFromImage("a", x->image(), false, FileAttrs{}).ok());
  const std::string stub = Stub();
  Status c = s->CreateFromImage("b", liar->image(), false, FileAttrs{});
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.code(), Status::Code::kCorruption) << c.ToString();
  EXPECT_NE(c.message().find("size"), std::string::npos) << c.ToString();
  EXPECT_EQ(Stub(), stub);
  EXPECT_FALSE(s->Lookup("b").ok());
  EXPECT_EQ(test::ReadVolume(s.get(), "a"), raw_);
}

TEST_F(RemoteLayersTest, WhatAFaultyServerSentOnceIsFetchedAgain) {
  auto x = Registry();
  x->Garble(true);
  auto s = Open("cache");
  ASSERT_NE(s, nullptr);
  Status c = s->CreateFromImage("a", x->image(), false, FileAttrs{});
  ASSERT_FALSE(c.ok()) << "a layer made of altered bytes was accepted";
  EXPECT_FALSE(s->Lookup("a").ok());
  // The server is right again; the same store and cache must not keep
  // serving what it sent before.
  x->Garble(false);
  c = s->CreateFromImage("a", x->image(), false, FileAttrs{});
  ASSERT_TRUE(c.ok()) << c.ToString();
  EXPECT_EQ(test::ReadVolume(s.get(), "a"), raw_);
}

}  // namespace
}  // namespace ovbd
