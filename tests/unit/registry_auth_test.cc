// The parsers of what a registry's authentication hands a client
// (WWW-Authenticate challenges, docker config.json, token replies) and the
// small pieces the client builds on them (base64, query strings, the token
// cache). No network: every input is given here.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "base64.h"
#include "ovbd/remote/auth.h"
#include "query.h"
#include "token_cache.h"

namespace ovbd::remote {
namespace {

AuthChallenge MustParse(std::string_view h) {
  auto r = ParseWwwAuthenticate(h);
  EXPECT_TRUE(r.ok()) << h << ": " << r.status().ToString();
  return r.ok() ? r.value() : AuthChallenge{};
}

TEST(WwwAuthenticate, BearerAsDistributionSendsIt) {
  AuthChallenge c = MustParse(
      R"(Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push")");
  EXPECT_EQ(c.scheme, "bearer");
  ASSERT_EQ(c.params.size(), 3u);
  EXPECT_EQ(c.params["realm"], "https://auth.example/token");
  EXPECT_EQ(c.params["service"], "registry.example");
  // The comma inside the quoted scope does not split it.
  EXPECT_EQ(c.params["scope"], "repository:a/b:pull,push");
}

TEST(WwwAuthenticate, SchemeAndNamesAreCaseInsensitiveValuesAreNot) {
  AuthChallenge c = MustParse(R"(BASIC Realm="My Registry")");
  EXPECT_EQ(c.scheme, "basic");
  EXPECT_EQ(c.params["realm"], "My Registry");
}

TEST(WwwAuthenticate, QuotedPairsAreResolved) {
  AuthChallenge c = MustParse(R"(Bearer realm="a\"b\\c\d", error="x")");
  EXPECT_EQ(c.params["realm"], "a\"b\\cd");
  EXPECT_EQ(c.params["error"], "x");
}

TEST(WwwAuthenticate, TokenValuesAndWhitespaceAroundEquals) {
  AuthChallenge c = MustParse("Bearer realm = \"https://a/t\" ,\tservice=reg , ,scope=\"s\"");
  EXPECT_EQ(c.params["realm"], "https://a/t");
  EXPECT_EQ(c.params["service"], "reg");
  EXPECT_EQ(c.params["scope"], "s");
}

TEST(WwwAuthenticate, OnlyTheFirstChallengeIsTaken) {
  AuthChallenge c = MustParse(R"(Basic realm="r", Bearer realm="https://a/t", service="s")");
  EXPECT_EQ(c.scheme, "basic");
  ASSERT_EQ(c.params.size(), 1u);
  EXPECT_EQ(c.params["realm"], "r");

  c = MustParse(R"(Bearer realm="x",error="invalid_token", Basic realm="y")");
  EXPECT_EQ(c.scheme, "bearer");
  EXPECT_EQ(c.params.size(), 2u);
  EXPECT_EQ(c.params["realm"], "x");

  c = MustParse("Negotiate, Basic realm=\"y\"");
  EXPECT_EQ(c.scheme, "negotiate");
  EXPECT_TRUE(c.params.empty());
}

TEST(WwwAuthenticate, Token68IsTolerated) {
  AuthChallenge c = MustParse("Basic dXNlcjpwYXNz==");
  EXPECT_EQ(c.scheme, "basic");
  EXPECT_TRUE(c.params.empty());
  c = MustParse("Basic abc/+.~_-=, Bearer realm=x");
  EXPECT_EQ(c.scheme, "basic");
  EXPECT_TRUE(MustParse("Basic").params.empty());
}

TEST(WwwAuthenticate, GarbageIsRefused) {
  for (std::string_view h : {
           "",
           "   ",
           "=",
           "\"Bearer\" realm=x",
           "Bearer realm",
           "Bearer realm=",
           "Bearer realm=\"unterminated",
           "Bearer realm=\"a\"b",
           "Bearer realm=\"x\" service=\"y\"",
           "Bearer realm=\"a\x01\"",
           "Bearer realm=\"a\\\x7f\"",
           "Bearer realm=x,realm=y",
           "Bearer realm=x,,=y",
           "Bearer\x01 realm=x",
           "Bearer realm=x, \"y\"",
           "Bearer realm=https://a/t",  // a URL is no token: it must be quoted
       }) {
    auto r = ParseWwwAuthenticate(h);
    EXPECT_FALSE(r.ok()) << "accepted: " << h;
    if (!r.ok()) {
      EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument) << h;
    }
  }
}

TEST(WwwAuthenticate, BoundedIn8KiBAndInParameters) {
  std::string h = "Bearer realm=\"" + std::string(8192 - 16, 'a') + "\"";
  ASSERT_LE(h.size(), 8192u);
  EXPECT_TRUE(ParseWwwAuthenticate(h).ok());
  h = "Bearer realm=\"" + std::string(8192, 'a') + "\"";
  auto r = ParseWwwAuthenticate(h);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kTooLarge);

  std::string many = "Bearer ";
  for (int i = 0; i < 40; ++i) many += (i ? "," : "") + std::string("p") + std::to_string(i) + "=v";
  EXPECT_FALSE(ParseWwwAuthenticate(many).ok());
}

TEST(DockerConfig, AuthFieldAndHostKeys) {
  const std::string json = R"({
    "auths": {
      "https://index.docker.io/v1/": {"auth": ")" + Base64Encode("hubuser:hub:pass") + R"("},
      "http://Reg.Example:5000/some/path": {"auth": ")" + Base64Encode("u:p") + R"("},
      "localhost:5001": {"username": "alice", "password": "pw"},
      "tokens.example": {"identitytoken": "refresh-me"},
      "helper.example": {},
      "[::1]:5002": {"auth": ")" + Base64Encode("v6:") + R"("}
    },
    "credsStore": "desktop"
  })";
  auto r = ParseDockerConfig(json);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  auto& m = r.value();
  EXPECT_EQ(m.size(), 5u);  // helper.example has no credentials here
  EXPECT_EQ(m["index.docker.io"].username, "hubuser");
  EXPECT_EQ(m["index.docker.io"].password, "hub:pass");  // split at the first ':'
  EXPECT_EQ(m["reg.example:5000"].username, "u");
  EXPECT_EQ(m["localhost:5001"].username, "alice");
  EXPECT_EQ(m["localhost:5001"].password, "pw");
  EXPECT_EQ(m["tokens.example"].identity_token, "refresh-me");
  EXPECT_FALSE(m["tokens.example"].empty());
  EXPECT_EQ(m["[::1]:5002"].username, "v6");
  EXPECT_EQ(m["[::1]:5002"].password, "");
  EXPECT_EQ(m.count("helper.example"), 0u);
}

TEST(DockerConfig, NoAuthsIsNoCredentials) {
  auto r = ParseDockerConfig(R"({"credsStore": "x"})");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->empty());
}

TEST(DockerConfig, MalformedIsRefusedWithoutShowingSecrets) {
  const std::string secret = "s3cr3t-Pa55";
  for (const std::string& json : {
           std::string("not json"),
           std::string("[]"),
           std::string(R"({"auths": []})"),
           std::string(R"({"auths": {"reg.example": "x"}})"),
           std::string(R"({"auths": {"reg.example": {"auth": "!)") + secret + "!\"}}}",
           std::string(R"({"auths": {"reg.example": {"auth": ")") + Base64Encode("nocolon" + secret) + "\"}}}",
           std::string(R"({"auths": {"reg.example": {"username": 7, "password": ")") + secret + "\"}}}",
           std::string(R"({"auths": {"reg.example": {"username": "u", "password": "a\n)") + secret + "\"}}}",
           std::string(R"({"auths": {"bad host!": {"username": "u", "password": ")") + secret + "\"}}}",
       }) {
    auto r = ParseDockerConfig(json);
    ASSERT_FALSE(r.ok()) << json;
    EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument) << json;
    const std::string& msg = r.status().message();
    EXPECT_EQ(msg.find(secret), std::string::npos) << msg;
    EXPECT_EQ(msg.find(Base64Encode("nocolon" + secret)), std::string::npos) << msg;
  }
}

TEST(DockerConfig, Bounded) {
  std::string big = R"({"x": ")" + std::string(1 << 20, 'a') + "\"}";
  auto r = ParseDockerConfig(big);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kTooLarge);
}

TEST(TokenReply, TokenOrAccessTokenAndLifetime) {
  auto r = ParseTokenReply(R"({"token": "abc.def", "expires_in": 300, "issued_at": "2020-01-01T00:00:00Z"})");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->token, "abc.def");
  EXPECT_EQ(r->expires_in, 300);

  r = ParseTokenReply(R"({"access_token": "oauth"})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->token, "oauth");
  EXPECT_EQ(r->expires_in, 60);  // the protocol's default

  r = ParseTokenReply(R"({"token": "t", "access_token": "a", "expires_in": 2})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->token, "t");
  EXPECT_EQ(r->expires_in, 2);

  r = ParseTokenReply(R"({"token": "", "access_token": "a"})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->token, "a");
}

TEST(TokenReply, OddLifetimes) {
  auto r = ParseTokenReply(R"({"token": "t", "expires_in": 0})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->expires_in, 60);
  r = ParseTokenReply(R"({"token": "t", "expires_in": -5})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->expires_in, 60);
  r = ParseTokenReply(R"({"token": "t", "expires_in": 18446744073709551615})");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->expires_in, 86400);
  EXPECT_FALSE(ParseTokenReply(R"({"token": "t", "expires_in": 1.5})").ok());
  EXPECT_FALSE(ParseTokenReply(R"({"token": "t", "expires_in": "60"})").ok());
}

TEST(TokenReply, RefusedWithoutShowingTheToken) {
  const std::string secret = "eyJSECRETTOKEN";
  for (const std::string& json : {
           std::string("{}"),
           std::string("nope"),
           std::string(R"({"token": 5})"),
           std::string(R"({"token": "a )") + secret + "\"}",
           std::string(R"({"token": ")") + secret + "\\r\\nX-Evil: 1\"}",
           std::string(R"({"token": ")") + secret + R"(", "expires_in": true})",
       }) {
    auto r = ParseTokenReply(json);
    ASSERT_FALSE(r.ok()) << json;
    EXPECT_EQ(r.status().message().find(secret), std::string::npos) << r.status().message();
  }
  auto r = ParseTokenReply(R"({"token": ")" + std::string(70000, 'a') + "\"}");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kTooLarge);
}

TEST(Base64, RoundTripAndStrictDecoding) {
  for (std::string s : {"", "f", "fo", "foo", "foob", "fooba", "foobar", "user:pa:ss\xff"}) {
    auto d = Base64Decode(Base64Encode(s));
    ASSERT_TRUE(d.has_value()) << s;
    EXPECT_EQ(*d, s);
  }
  EXPECT_EQ(Base64Encode("foobar"), "Zm9vYmFy");
  EXPECT_EQ(Base64Encode("fo"), "Zm8=");
  EXPECT_EQ(Base64Decode("Zm8").value_or("?"), "fo");  // unpadded is fine
  for (std::string_view bad : {"Zm8=x", "Z", "Zm9=", "Zm8==", "Zm 8=", "Zm-8", "===="}) {
    EXPECT_FALSE(Base64Decode(bad).has_value()) << bad;
  }
}

TEST(Query, AppendsWithTheRightSeparator) {
  Url u = Url::Parse("http://r:5000/v2/a/blobs/uploads/123").value();
  AppendQuery(&u, "digest", "sha256:ab");
  EXPECT_EQ(u.target, "/v2/a/blobs/uploads/123?digest=sha256%3Aab");

  u = Url::Parse("http://r:5000/v2/a/blobs/uploads/123?_state=x%3D&y=1").value();
  AppendQuery(&u, "digest", "sha256:ab");
  EXPECT_EQ(u.target, "/v2/a/blobs/uploads/123?_state=x%3D&y=1&digest=sha256%3Aab");

  u = Url::Parse("http://r/t?").value();
  AppendQuery(&u, "scope", "repository:a/b:pull,push");
  EXPECT_EQ(u.target, "/t?scope=repository%3Aa%2Fb%3Apull%2Cpush");
  u = Url::Parse("http://r/t?a=1&").value();
  AppendQuery(&u, "s", "x y");
  EXPECT_EQ(u.target, "/t?a=1&s=x%20y");
}

TEST(TokenCache, OneFetchServesManyThreads) {
  TokenCache cache;
  std::atomic<int> fetches{0};
  std::atomic<bool> release{false};
  auto fetch = [&]() -> Result<TokenReply> {
    ++fetches;
    // Hold the fetch open until every thread has asked, so they all find it
    // in flight (bounded: the test fails rather than hangs).
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!release && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    return TokenReply{"tok", 300};
  };
  std::atomic<int> asked{0}, got{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < 8; ++i) {
    ts.emplace_back([&] {
      bool fetched = false;
      ++asked;
      auto t = cache.Get("reg repository:a:pull", fetch, &fetched);
      if (t.ok() && *t == "tok") ++got;
    });
  }
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (asked < 8 && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  release = true;
  for (auto& t : ts) t.join();
  EXPECT_EQ(got, 8);
  EXPECT_EQ(fetches, 1);
}

// A TokenCache whose fetch hands out "t1", "t2", ... in turn, each good for
// `ttl` seconds, and counts the fetches.
struct NumberedTokens {
  explicit NumberedTokens(int ttl = 300)
      : fetch([this, ttl]() -> Result<TokenReply> { return TokenReply{"t" + std::to_string(++fetches), ttl}; }) {}
  NumberedTokens(const NumberedTokens&) = delete;
  NumberedTokens& operator=(const NumberedTokens&) = delete;

  // The token for `key`, cached or fetched (`fetched` says which).
  std::string Get(const std::string& key) { return cache.Get(key, fetch, &fetched).value(); }

  TokenCache cache;
  int fetches = 0;
  bool fetched = false;
  const TokenCache::Fetch fetch;
};

TEST(TokenCache, KeysAreSeparateAndFailuresAreNotCached) {
  NumberedTokens t;
  auto bad = [&]() -> Result<TokenReply> { ++t.fetches; return Status::IOError("token server: refused", EACCES); };
  EXPECT_EQ(t.Get("a"), "t1");
  EXPECT_TRUE(t.fetched);
  EXPECT_EQ(t.Get("a"), "t1");
  EXPECT_FALSE(t.fetched);
  EXPECT_EQ(t.Get("b"), "t2");
  EXPECT_FALSE(t.cache.Get("c", bad, &t.fetched).ok());
  EXPECT_EQ(t.Get("c"), "t4");
  EXPECT_EQ(t.fetches, 4);
}

TEST(TokenCache, DropForgetsOnlyTheTokenGiven) {
  NumberedTokens t;
  EXPECT_EQ(t.Get("k"), "t1");
  t.cache.Drop("k", "t1");
  EXPECT_EQ(t.Get("k"), "t2");
  // A thread still holding the old token drops nothing: t2 stays.
  t.cache.Drop("k", "t1");
  EXPECT_EQ(t.Get("k"), "t2");
  EXPECT_EQ(t.fetches, 2);
}

TEST(TokenCache, ReplacedBeforeItExpires) {
  EXPECT_EQ(TokenCache::Margin(std::chrono::seconds(300)), std::chrono::seconds(30));
  EXPECT_EQ(TokenCache::Margin(std::chrono::seconds(60)), std::chrono::seconds(15));
  NumberedTokens tokens(/*ttl=*/1);
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(tokens.Get("k"), "t1");
  // A 1 s token is handed out for 0.75 s, then replaced.
  std::string t = "t1";
  while (t == "t1" && std::chrono::steady_clock::now() - start < std::chrono::seconds(3)) {
    t = tokens.Get("k");
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(t, "t2");
  EXPECT_GE(took, std::chrono::milliseconds(700));
  EXPECT_LT(took, std::chrono::milliseconds(1000));
}

}  // namespace
}  // namespace ovbd::remote
