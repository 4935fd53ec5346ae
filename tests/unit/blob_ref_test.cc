// Addresses of remote blobs and images, and the URLs under them: what is
// accepted, what each part becomes, and what is refused.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "ovbd/io/http_client.h"
#include "ovbd/remote/blob_ref.h"

namespace ovbd::remote {
namespace {

const std::string kHex(64, 'a');
const std::string kDigest = "sha256:" + kHex;

TEST(Url, PartsPortsAndDefaults) {
  auto u = Url::Parse("HTTPS://Registry.Example/v2/?n=1#frag");
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->scheme, "https");
  EXPECT_EQ(u->host, "registry.example");
  EXPECT_EQ(u->port, 443);
  EXPECT_EQ(u->target, "/v2/?n=1");
  EXPECT_EQ(u->Authority(), "registry.example");
  EXPECT_FALSE(u->IsLoopback());

  auto v = Url::Parse("http://[::1]:5000");
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->host, "::1");
  EXPECT_EQ(v->port, 5000);
  EXPECT_EQ(v->target, "/");
  EXPECT_EQ(v->Authority(), "[::1]:5000");
  EXPECT_TRUE(v->IsLoopback());
  EXPECT_TRUE(Url::Parse("http://127.3.4.5:80/x")->IsLoopback());
  EXPECT_EQ(Url::Parse("http://127.0.0.1:80/x")->ToString(), "http://127.0.0.1/x");
}

TEST(Url, RefusesWhatItCannotSpeakOrShouldNotCarry) {
  for (const char* bad : {"ftp://h/", "h/x", "http:///x", "http://user:pw@h/", "http://h:0/",
                          "http://h:65536/", "http://h:x/", "http://h:/", "http://[::1/",
                          "http://h/a b", "http://h\x01/", "http://[zz]/"}) {
    auto u = Url::Parse(bad);
    EXPECT_FALSE(u.ok()) << bad;
  }
  // User information never reaches an error message.
  auto u = Url::Parse("http://user:secret@h/");
  EXPECT_EQ(u.status().ToString().find("secret"), std::string::npos);
}

TEST(Url, ResolvesRedirectLocations) {
  auto base = Url::Parse("http://127.0.0.1:5000/v2/r/blobs/x?a=1").value();
  EXPECT_EQ(base.Resolve("/other?b=2")->ToString(), "http://127.0.0.1:5000/other?b=2");
  EXPECT_EQ(base.Resolve("y")->ToString(), "http://127.0.0.1:5000/v2/r/blobs/y");
  EXPECT_EQ(base.Resolve("https://s.example/b")->ToString(), "https://s.example/b");
  EXPECT_EQ(base.Resolve("//s.example/b")->ToString(), "http://s.example/b");
  EXPECT_FALSE(base.Resolve("/a b").ok());
}

TEST(BlobRef, RegistryAndUrlForms) {
  auto b = BlobRef::Parse("registry://127.0.0.1:5000/lib/base-image@" + kDigest);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  EXPECT_EQ(b->kind, BlobRef::Kind::kRegistry);
  EXPECT_EQ(b->registry, "127.0.0.1:5000");
  EXPECT_EQ(b->repo, "lib/base-image");
  EXPECT_EQ(b->digest, kDigest);
  EXPECT_EQ(b->ToString(), "registry://127.0.0.1:5000/lib/base-image@" + kDigest);

  auto u = BlobRef::Parse("https://cdn.example/layers/l1.zfile#" + kDigest);
  ASSERT_TRUE(u.ok()) << u.status().ToString();
  EXPECT_EQ(u->kind, BlobRef::Kind::kUrl);
  EXPECT_EQ(u->url, "https://cdn.example/layers/l1.zfile");
  EXPECT_EQ(u->ToString(), "https://cdn.example/layers/l1.zfile#" + kDigest);
}

TEST(BlobRef, RefusesBadDigestsReposAndSchemes) {
  for (const std::string& bad : std::vector<std::string>{"registry://h/r@sha256:" + std::string(63, 'a'), "registry://h/r@sha256:" + std::string(64, 'A'),
        "registry://h/r@md5:" + kHex, "registry://h/r", "registry://h/Repo@" + kDigest,
        "registry://h/r-@" + kDigest, "registry://h/a//b@" + kDigest, "registry://h/a..b@" + kDigest,
        "registry:///r@" + kDigest, "registry://u:p@h/r@" + kDigest, "https://h/x",
        "file:///etc/passwd#" + kDigest, "s3://b/k#" + kDigest}) {
    EXPECT_FALSE(BlobRef::Parse(bad).ok()) << bad;
  }
  EXPECT_TRUE(BlobRef::Parse("registry://h/a__b.c-d---e/f_g@" + kDigest).ok());
}

TEST(ImageRef, TagsDigestsAndTheDefaultTag) {
  auto r = ImageRef::Parse("registry://localhost:5000/team/vm:v1.2");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->registry, "localhost:5000");
  EXPECT_EQ(r->repo, "team/vm");
  EXPECT_EQ(r->tag, "v1.2");
  EXPECT_EQ(r->reference(), "v1.2");
  EXPECT_EQ(r->ToString(), "registry://localhost:5000/team/vm:v1.2");

  auto l = ImageRef::Parse("registry://localhost:5000/vm");
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->tag, "latest");

  auto d = ImageRef::Parse("registry://h/vm@" + kDigest);
  ASSERT_TRUE(d.ok());
  EXPECT_EQ(d->reference(), kDigest);
  EXPECT_TRUE(d->tag.empty());

  for (const std::string& bad : std::vector<std::string>{"registry://h/vm:", "registry://h/vm:-x", "registry://h/vm:a/b",
                                 "registry://h/vm:" + std::string(129, 't'), "registry://h/"}) {
    EXPECT_FALSE(ImageRef::Parse(bad).ok()) << bad;
  }
}

}  // namespace
}  // namespace ovbd::remote
