// PosixEnv (Env::Default()) and the helpers built on its primitives.
#include <gtest/gtest.h>

#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <map>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "ovbd/io/env.h"
#include "ovbd/io/posix_env.h"
#include "test_util.h"

namespace ovbd {
namespace {

namespace fs = std::filesystem;

class EnvTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_FALSE(dir_.empty()) << "no temporary directory"; }
  std::string P(const std::string& name) const { return JoinPath(dir_, name); }

  void WriteFile(const std::string& path, const std::string& data) {
    auto f = env_->OpenRW(path, /*create=*/true);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    ASSERT_TRUE((*f)->WriteAt(0, data.data(), data.size()).ok());
    ASSERT_TRUE((*f)->Sync().ok());
  }
  std::string ReadAll(const std::string& path) {
    auto r = env_->ReadSmallFile(path, 1 << 30);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? r.value() : std::string();
  }

  Env* env_ = Env::Default();
  test::TempDir tmp_;
  const std::string dir_ = tmp_.path();
};

TEST_F(EnvTest, OpenRWCreateIsExclusive) {
  WriteFile(P("a"), "hello");
  auto again = env_->OpenRW(P("a"), /*create=*/true);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().os_errno(), EEXIST);
  // Without create it opens the existing file, contents intact.
  auto f = env_->OpenRW(P("a"), /*create=*/false);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)->Size(), 5u);
  EXPECT_EQ(ReadAll(P("a")), "hello");
  // And without create a missing file is not created.
  auto missing = env_->OpenRW(P("missing"), /*create=*/false);
  ASSERT_FALSE(missing.ok());
  EXPECT_TRUE(missing.status().IsNotFound());
  EXPECT_FALSE(env_->Exists(P("missing")));
}

TEST_F(EnvTest, DoesNotFollowSymlinks) {
  WriteFile(P("target"), "secret");
  fs::create_symlink(P("target"), P("link"));
  auto r = env_->OpenReadable(P("link"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().os_errno(), ELOOP);
  auto rw = env_->OpenRW(P("link"), /*create=*/false);
  ASSERT_FALSE(rw.ok());
  EXPECT_EQ(rw.status().os_errno(), ELOOP);
  EXPECT_FALSE(env_->OpenRW(P("link"), /*create=*/true).ok());
  EXPECT_FALSE(env_->ReadSmallFile(P("link"), 100).ok());
  // A dangling link is not followed to create its target either.
  fs::create_symlink(P("nowhere"), P("dangling"));
  EXPECT_FALSE(env_->OpenRW(P("dangling"), /*create=*/true).ok());
  EXPECT_FALSE(fs::exists(fs::symlink_status(P("nowhere"))));
  EXPECT_EQ(ReadAll(P("target")), "secret");
}

TEST_F(EnvTest, OpenReadableRejectsDirectories) {
  ASSERT_TRUE(env_->CreateDir(P("d")).ok());
  auto r = env_->OpenReadable(P("d"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Status::Code::kInvalidArgument);
}

TEST_F(EnvTest, ReadAtShortAtEndOfFile) {
  WriteFile(P("a"), "0123456789");
  auto f = env_->OpenReadable(P("a"));
  ASSERT_TRUE(f.ok());
  char buf[16];
  size_t got = 99;
  ASSERT_TRUE((*f)->ReadAt(6, sizeof(buf), buf, &got).ok());
  EXPECT_EQ(got, 4u);
  EXPECT_EQ(std::string(buf, got), "6789");
  ASSERT_TRUE((*f)->ReadAt(100, sizeof(buf), buf, &got).ok());
  EXPECT_EQ(got, 0u);
  Status s = (*f)->ReadExact(6, 8, buf);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
}

TEST_F(EnvTest, WriteAtTracksSizeAndTruncate) {
  auto f = env_->OpenRW(P("a"), true);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->WriteAt(100, "x", 1).ok());
  EXPECT_EQ((*f)->Size(), 101u);
  ASSERT_TRUE((*f)->WriteAt(0, "y", 1).ok());
  EXPECT_EQ((*f)->Size(), 101u);
  ASSERT_TRUE((*f)->Truncate(50).ok());
  EXPECT_EQ((*f)->Size(), 50u);
  auto st = env_->Stat(P("a"));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->size, 50u);
  EXPECT_TRUE(st->is_regular);
}

TEST_F(EnvTest, WriteFileAtomic) {
  ASSERT_TRUE(env_->WriteFileAtomic(P("cfg"), "one").ok());
  EXPECT_EQ(ReadAll(P("cfg")), "one");
  ASSERT_TRUE(env_->WriteFileAtomic(P("cfg"), "second version").ok());
  EXPECT_EQ(ReadAll(P("cfg")), "second version");
  EXPECT_FALSE(env_->Exists(P("cfg.tmp")));
  // A leftover temp file from an earlier crash does not get in the way.
  WriteFile(P("cfg.tmp"), "garbage from a crash");
  ASSERT_TRUE(env_->WriteFileAtomic(P("cfg"), "third").ok());
  EXPECT_EQ(ReadAll(P("cfg")), "third");
  auto names = env_->ListDir(dir_);
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(names.value(), std::vector<std::string>{"cfg"});
  // Empty contents are fine too.
  ASSERT_TRUE(env_->WriteFileAtomic(P("empty"), "").ok());
  EXPECT_EQ(ReadAll(P("empty")), "");
}

TEST_F(EnvTest, ReadSmallFileLimit) {
  WriteFile(P("a"), std::string(100, 'z'));
  auto big = env_->ReadSmallFile(P("a"), 99);
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.status().code(), Status::Code::kTooLarge);
  auto ok = env_->ReadSmallFile(P("a"), 100);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok.value(), std::string(100, 'z'));
  EXPECT_TRUE(env_->ReadSmallFile(P("missing"), 100).status().IsNotFound());
}

TEST_F(EnvTest, CopyFilePreservesContentAndHoles) {
  constexpr uint64_t kSize = 8u << 20;
  {
    auto f = env_->OpenRW(P("src"), true);
    ASSERT_TRUE(f.ok());
    std::string a(4096, 'a'), b(10000, 'b');
    ASSERT_TRUE((*f)->WriteAt(0, a.data(), a.size()).ok());
    ASSERT_TRUE((*f)->WriteAt(3 << 20, b.data(), b.size()).ok());
    ASSERT_TRUE((*f)->WriteAt(kSize - 7, "tail!!!", 7).ok());
    ASSERT_TRUE((*f)->Truncate(kSize).ok());
    ASSERT_TRUE((*f)->Sync().ok());
  }
  ASSERT_TRUE(env_->CopyFile(P("src"), P("dst")).ok());
  auto src = env_->ReadSmallFile(P("src"), kSize);
  auto dst = env_->ReadSmallFile(P("dst"), kSize);
  ASSERT_TRUE(src.ok() && dst.ok());
  EXPECT_EQ(dst->size(), kSize);
  EXPECT_TRUE(src.value() == dst.value());
  auto st = env_->Stat(P("dst"));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->size, kSize);
  EXPECT_LT(st->allocated, kSize / 4) << "copy is not sparse";
  // The destination must not exist yet.
  EXPECT_FALSE(env_->CopyFile(P("src"), P("dst")).ok());
}

TEST_F(EnvTest, CopyFileOfFileEndingInZeros) {
  auto f = env_->OpenRW(P("src"), true);
  ASSERT_TRUE(f.ok());
  ASSERT_TRUE((*f)->WriteAt(0, "x", 1).ok());
  ASSERT_TRUE((*f)->Truncate(100000).ok());
  ASSERT_TRUE(env_->CopyFile(P("src"), P("dst")).ok());
  auto st = env_->Stat(P("dst"));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->size, 100000u);
  EXPECT_EQ(ReadAll(P("dst")), ReadAll(P("src")));
}

TEST_F(EnvTest, PunchHoleReadsZerosAndFreesSpace) {
  constexpr size_t kLen = 1 << 20;
  auto f = env_->OpenRW(P("a"), true);
  ASSERT_TRUE(f.ok());
  std::string data(kLen, 'q');
  ASSERT_TRUE((*f)->WriteAt(0, data.data(), data.size()).ok());
  ASSERT_TRUE((*f)->Sync().ok());
  auto before = (*f)->AllocatedBytes();
  ASSERT_TRUE(before.ok());
  EXPECT_GE(before.value(), kLen);
  ASSERT_TRUE((*f)->PunchHole(64 << 10, 512 << 10).ok());
  ASSERT_TRUE((*f)->PunchHole(0, 0).ok());  // empty punch is a no-op
  auto after = (*f)->AllocatedBytes();
  ASSERT_TRUE(after.ok());
  EXPECT_LE(after.value() + (512 << 10), before.value());
  EXPECT_EQ((*f)->Size(), kLen);  // size unchanged
  std::string got(kLen, '\0');
  ASSERT_TRUE((*f)->ReadExact(0, kLen, got.data()).ok());
  for (size_t i = 0; i < kLen; ++i) {
    const char want = (i >= (64u << 10) && i < (576u << 10)) ? '\0' : 'q';
    ASSERT_EQ(got[i], want) << "offset " << i;
  }
  auto st = env_->Stat(P("a"));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->allocated, after.value());
}

TEST_F(EnvTest, LockFileIsExclusive) {
  auto l1 = env_->LockFile(P("LOCK"));
  ASSERT_TRUE(l1.ok()) << l1.status().ToString();
  auto l2 = env_->LockFile(P("LOCK"));
  ASSERT_FALSE(l2.ok());
  EXPECT_EQ(l2.status().code(), Status::Code::kBusy);
  l1.value().reset();
  auto l3 = env_->LockFile(P("LOCK"));
  EXPECT_TRUE(l3.ok()) << l3.status().ToString();
}

TEST_F(EnvTest, ListDir) {
  WriteFile(P("b"), "1");
  WriteFile(P("a"), "2");
  ASSERT_TRUE(env_->CreateDir(P("sub")).ok());
  auto names = env_->ListDir(dir_);
  ASSERT_TRUE(names.ok());
  std::vector<std::string> v = names.value();
  std::sort(v.begin(), v.end());
  EXPECT_EQ(v, (std::vector<std::string>{"a", "b", "sub"}));
  auto empty = env_->ListDir(P("sub"));
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
  EXPECT_TRUE(env_->ListDir(P("nope")).status().IsNotFound());
}

TEST_F(EnvTest, StatReportsSymlinkWithoutFollowing) {
  WriteFile(P("target"), "data");
  fs::create_symlink(P("target"), P("link"));
  ASSERT_TRUE(env_->CreateDir(P("d")).ok());
  auto l = env_->Stat(P("link"));
  ASSERT_TRUE(l.ok());
  EXPECT_TRUE(l->is_symlink);
  EXPECT_FALSE(l->is_regular);
  EXPECT_FALSE(l->is_dir);
  auto t = env_->Stat(P("target"));
  ASSERT_TRUE(t.ok());
  EXPECT_TRUE(t->is_regular);
  EXPECT_FALSE(t->is_symlink);
  EXPECT_EQ(t->size, 4u);
  EXPECT_GT(t->mtime_ns, 0u);
  auto d = env_->Stat(P("d"));
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->is_dir);
  EXPECT_TRUE(env_->Stat(P("missing")).status().IsNotFound());
}

TEST_F(EnvTest, RenameRemoveAndDirs) {
  WriteFile(P("a"), "A");
  WriteFile(P("b"), "B");
  ASSERT_TRUE(env_->Rename(P("a"), P("b")).ok());  // replaces b
  EXPECT_FALSE(env_->Exists(P("a")));
  EXPECT_EQ(ReadAll(P("b")), "A");
  ASSERT_TRUE(env_->SyncDir(dir_).ok());
  ASSERT_TRUE(env_->Remove(P("b")).ok());
  EXPECT_TRUE(env_->Remove(P("b")).IsNotFound());
  ASSERT_TRUE(env_->CreateDir(P("d")).ok());
  EXPECT_FALSE(env_->CreateDir(P("d")).ok());
  WriteFile(P("d/x"), "x");
  EXPECT_FALSE(env_->RemoveDir(P("d")).ok());  // not empty
  ASSERT_TRUE(env_->Remove(P("d/x")).ok());
  ASSERT_TRUE(env_->RemoveDir(P("d")).ok());
  EXPECT_FALSE(env_->Exists(P("d")));
}

TEST(EnvPaths, JoinAndDirName) {
  EXPECT_EQ(JoinPath("/a", "b"), "/a/b");
  EXPECT_EQ(JoinPath("/a/", "/b"), "/a/b");
  EXPECT_EQ(JoinPath("/", "b"), "/b");
  EXPECT_EQ(JoinPath("", "b"), "b");
  EXPECT_EQ(DirName("/a/b"), "/a");
  EXPECT_EQ(DirName("/a"), "/");
  EXPECT_EQ(DirName("a"), ".");
}

TEST_F(EnvTest, StatReportsOwnerAndMode) {
  WriteFile(P("a"), "x");
  ASSERT_EQ(::chmod(P("a").c_str(), 0640), 0);
  auto st = env_->Stat(P("a"));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->uid, ::getuid());
  EXPECT_EQ(st->gid, ::getgid());
  EXPECT_EQ(st->mode, 0640u);
  if (::geteuid() != 0) GTEST_SKIP() << "changing a file's owner needs root";
  ASSERT_EQ(::lchown(P("a").c_str(), 12345, 23456), 0);
  st = env_->Stat(P("a"));
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->uid, 12345u);
  EXPECT_EQ(st->gid, 23456u);
}

TEST_F(EnvTest, ReadMappedFailsOnShortReadNamingTheRange) {
  WriteFile(P("a"), std::string(10000, 'x'));
  auto f = env_->OpenReadable(P("a"));
  ASSERT_TRUE(f.ok());
  char buf[4096];
  ASSERT_TRUE((*f)->ReadMapped(4096, 4096, buf).ok());
  ASSERT_TRUE((*f)->CheckRange(4096, 4096).ok());
  ASSERT_EQ(::truncate(P("a").c_str(), 6000), 0);  // behind the open file's back
  Status s = (*f)->ReadMapped(4096, 4096, buf);
  EXPECT_EQ(s.code(), Status::Code::kIOError) << s.ToString();
  EXPECT_EQ(s.os_errno(), EIO);
  EXPECT_NE(s.message().find(P("a") + ": bytes [6000, 8192)"), std::string::npos) << s.ToString();
  // The descriptor check sees it too, without reading.
  s = (*f)->CheckRange(4096, 4096);
  EXPECT_EQ(s.os_errno(), EIO) << s.ToString();
  EXPECT_NE(s.message().find("bytes [4096, 8192)"), std::string::npos) << s.ToString();
  EXPECT_TRUE((*f)->CheckRange(0, 6000).ok());
}

TEST_F(EnvTest, NextDataSkipsHoles) {
  auto f = env_->OpenRW(P("sparse"), true);
  ASSERT_TRUE(f.ok());
  const std::string data(4096, 'd');
  ASSERT_TRUE((*f)->WriteAt(0, data.data(), data.size()).ok());
  ASSERT_TRUE((*f)->WriteAt(64 << 20, data.data(), data.size()).ok());
  ASSERT_TRUE((*f)->Truncate(1ull << 30).ok());
  auto r = (*f)->NextData(0);
  ASSERT_TRUE(r.ok());
  if (r->end == 1ull << 30) GTEST_SKIP() << "the filesystem under " << dir_ << " reports no holes";
  EXPECT_EQ(r->begin, 0u);
  EXPECT_GE(r->end, 4096u);
  EXPECT_LT(r->end, 64u << 20);
  r = (*f)->NextData(r->end);
  ASSERT_TRUE(r.ok());
  EXPECT_LE(r->begin, 64u << 20);
  EXPECT_GT(r->end, 64u << 20);
  r = (*f)->NextData(r->end);  // only the sparse tail remains
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->begin, r->end);
  EXPECT_EQ(r->begin, 1ull << 30);
}

// ---- Confinement -------------------------------------------------------------

// The same checks with openat2 and with the component-by-component walk.
class ConfineTest : public EnvTest, public ::testing::WithParamInterface<bool> {
 protected:
  void SetUp() override {
    EnvTest::SetUp();
    posix_ = NewPosixEnv(PosixEnvOptions{GetParam()});
    env_ = posix_.get();
    store_ = P("store");
    outside_ = P("outside");  // stands for a directory only root may write
    ASSERT_TRUE(env_->CreateDir(store_).ok());
    ASSERT_TRUE(env_->CreateDir(JoinPath(store_, "volumes")).ok());
    WriteFile(JoinPath(store_, "volumes/ok"), "ok");
    ASSERT_TRUE(env_->CreateDir(outside_).ok());
    WriteFile(JoinPath(outside_, "victim"), "precious");
    ASSERT_TRUE(env_->CreateDir(JoinPath(outside_, "sub")).ok());
  }

  // Everything under `outside_`: path -> contents ("<dir>" for directories).
  std::map<std::string, std::string> Outside() {
    std::map<std::string, std::string> out;
    for (const auto& e : fs::recursive_directory_iterator(outside_)) {
      out[e.path().string()] = e.is_directory() ? "<dir>" : ReadAll(e.path().string());
    }
    return out;
  }

  static void ExpectLink(const Status& s, const std::string& link) {
    ASSERT_FALSE(s.ok()) << "not refused (link " << link << ")";
    EXPECT_EQ(s.os_errno(), ELOOP) << s.ToString();
    EXPECT_NE(s.message().find(link + " is a symbolic link"), std::string::npos) << s.ToString();
  }

  // Every operation on paths beneath the store that reach a link at `link`:
  // `file` (an existing file through the link), `fresh` (a name that does
  // not exist), `dir` (an existing directory through the link); all three
  // are `link` itself when it is the last component. Each must be refused,
  // naming the link, and touch nothing outside.
  void ExpectEveryOperationRefused(const std::string& link, const std::string& file,
                                   const std::string& fresh, const std::string& dir) {
    const auto before = Outside();
    ExpectLink(env_->OpenReadable(file).status(), link);
    ExpectLink(env_->OpenRW(file, false).status(), link);
    ExpectLink(env_->OpenRW(fresh, true).status(), link);
    ExpectLink(env_->Rename(JoinPath(store_, "volumes/ok"), fresh), link);
    ExpectLink(env_->Rename(file, JoinPath(store_, "volumes/taken")), link);
    ExpectLink(env_->Remove(file), link);
    ExpectLink(env_->CreateDir(fresh), link);
    ExpectLink(env_->RemoveDir(dir), link);
    ExpectLink(env_->SyncDir(dir), link);
    ExpectLink(env_->ListDir(dir).status(), link);
    ExpectLink(env_->Stat(file).status(), link);
    ExpectLink(env_->Stat(dir).status(), link);
    ExpectLink(env_->LockFile(fresh).status(), link);
    ExpectLink(env_->LockFile(file).status(), link);
    ExpectLink(env_->SpaceOf(file).status(), link);
    // The helpers built on them.
    EXPECT_FALSE(env_->Exists(file));
    EXPECT_FALSE(env_->WriteFileAtomic(file, "evil").ok());
    EXPECT_FALSE(env_->CopyFile(JoinPath(store_, "volumes/ok"), fresh).ok());
    EXPECT_EQ(Outside(), before);
    EXPECT_EQ(ReadAll(JoinPath(store_, "volumes/ok")), "ok");  // the source stays
  }

  std::unique_ptr<Env> posix_;
  std::string store_, outside_;
};

TEST_P(ConfineTest, SymlinkedDirectoryComponentIsRefused) {
  fs::create_symlink(outside_, JoinPath(store_, "layers"));
  auto c = env_->Confine(store_);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const std::string link = JoinPath(store_, "layers");
  ExpectEveryOperationRefused(link, JoinPath(link, "victim"), JoinPath(link, "new"),
                              JoinPath(link, "sub"));
  // Deeper down too, and the link itself as a directory.
  ExpectLink(env_->OpenReadable(JoinPath(link, "sub/x")).status(), link);
  ExpectLink(env_->ListDir(link).status(), link);
  ExpectLink(env_->SyncDir(link), link);
  ExpectLink(env_->Remove(link), link);
  EXPECT_TRUE(fs::is_symlink(link));
}

TEST_P(ConfineTest, SymlinkAsLastComponentIsRefused) {
  const std::string layers = JoinPath(store_, "layers");
  ASSERT_TRUE(env_->CreateDir(layers).ok());
  fs::create_symlink(JoinPath(outside_, "victim"), JoinPath(layers, "victim"));
  fs::create_symlink(JoinPath(outside_, "sub"), JoinPath(layers, "sub"));
  fs::create_symlink(JoinPath(outside_, "new"), JoinPath(layers, "new"));  // dangling
  auto c = env_->Confine(store_);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const auto before = Outside();
  for (const char* name : {"victim", "sub", "new"}) {
    const std::string l = JoinPath(layers, name);
    SCOPED_TRACE(l);
    ExpectEveryOperationRefused(l, l, l, l);
    ExpectLink(env_->OpenReadable(JoinPath(l, "x")).status(), l);
    EXPECT_TRUE(fs::is_symlink(l)) << l;
  }
  EXPECT_EQ(Outside(), before);
  EXPECT_FALSE(fs::exists(JoinPath(outside_, "new")));
}

TEST_P(ConfineTest, RelativeLinkEscapingWithDotDotIsRefused) {
  fs::create_symlink("../outside", JoinPath(store_, "layers"));
  fs::create_symlink("../../outside/victim", JoinPath(store_, "volumes/up"));
  auto c = env_->Confine(store_);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const std::string link = JoinPath(store_, "layers");
  ExpectEveryOperationRefused(link, JoinPath(link, "victim"), JoinPath(link, "new"),
                              JoinPath(link, "sub"));
  const std::string up = JoinPath(store_, "volumes/up");
  ExpectLink(env_->OpenRW(up, false).status(), up);
  ExpectLink(env_->Remove(up), up);
  // A path with ".." is taken lexically: it names store/volumes/ok, reached
  // without passing through the link.
  auto f = env_->OpenReadable(JoinPath(store_, "layers/../volumes/ok"));
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  // And one that leaves the store lexically is simply not confined.
  EXPECT_TRUE(env_->Stat(JoinPath(store_, "../outside/victim")).ok());
}

TEST_P(ConfineTest, OrdinaryWorkBeneathTheRootStillWorks) {
  auto c = env_->Confine(store_);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  const std::string layers = JoinPath(store_, "layers");
  ASSERT_TRUE(env_->CreateDir(layers).ok());
  ASSERT_TRUE(env_->SyncDir(store_).ok());
  WriteFile(JoinPath(layers, "a"), "hello");
  EXPECT_EQ(ReadAll(JoinPath(layers, "a")), "hello");
  ASSERT_TRUE(env_->WriteFileAtomic(JoinPath(store_, "volumes/v.json"), "{}").ok());
  EXPECT_EQ(ReadAll(JoinPath(store_, "volumes/v.json")), "{}");
  ASSERT_TRUE(env_->Rename(JoinPath(layers, "a"), JoinPath(layers, "b")).ok());
  ASSERT_TRUE(env_->CopyFile(JoinPath(layers, "b"), JoinPath(layers, "c")).ok());
  auto st = env_->Stat(JoinPath(layers, "c"));
  ASSERT_TRUE(st.ok());
  EXPECT_TRUE(st->is_regular);
  EXPECT_EQ(st->size, 5u);
  auto root = env_->Stat(store_);
  ASSERT_TRUE(root.ok());
  EXPECT_TRUE(root->is_dir);
  auto names = env_->ListDir(layers);
  ASSERT_TRUE(names.ok());
  std::vector<std::string> v = names.value();
  std::sort(v.begin(), v.end());
  EXPECT_EQ(v, (std::vector<std::string>{"b", "c"}));
  EXPECT_EQ(env_->ListDir(store_)->size(), 2u);
  {
    auto l = env_->LockFile(JoinPath(store_, "lock"));
    ASSERT_TRUE(l.ok()) << l.status().ToString();
    EXPECT_EQ(env_->LockFile(JoinPath(store_, "lock")).status().code(), Status::Code::kBusy);
  }
  EXPECT_TRUE(env_->SpaceOf(JoinPath(layers, "b")).ok());
  EXPECT_TRUE(env_->SpaceOf(store_).ok());
  EXPECT_TRUE(env_->Remove(JoinPath(layers, "nope")).IsNotFound());
  EXPECT_TRUE(env_->OpenReadable(JoinPath(store_, "nope/x")).status().IsNotFound());
  ASSERT_TRUE(env_->Remove(JoinPath(layers, "b")).ok());
  ASSERT_TRUE(env_->Remove(JoinPath(layers, "c")).ok());
  ASSERT_TRUE(env_->RemoveDir(layers).ok());
  EXPECT_FALSE(env_->Exists(layers));
  // Relative paths name the same places.
  const std::string cwd = fs::current_path().string();
  fs::current_path(dir_);
  auto rel = env_->OpenReadable("store/volumes/ok");
  fs::current_path(cwd);
  EXPECT_TRUE(rel.ok()) << rel.status().ToString();
}

TEST_P(ConfineTest, ScopedCountedAndSeveralAtOnce) {
  fs::create_symlink(outside_, JoinPath(store_, "layers"));
  const std::string victim = JoinPath(store_, "layers/victim");
  // Not confined: the link is followed, as for any path (a user's own files).
  EXPECT_TRUE(env_->OpenReadable(victim).ok());
  {
    auto c1 = env_->Confine(store_);
    auto c2 = env_->Confine(store_ + "/");  // the same root again
    ASSERT_TRUE(c1.ok() && c2.ok());
    EXPECT_FALSE(env_->OpenReadable(victim).ok());
    c1.value().reset();
    EXPECT_FALSE(env_->OpenReadable(victim).ok()) << "still confined by the second";
    // Another store at the same time.
    const std::string other = P("other");
    ASSERT_TRUE(env_->CreateDir(other).ok());
    fs::create_symlink(outside_, JoinPath(other, "layers"));
    auto c3 = env_->Confine(other);
    ASSERT_TRUE(c3.ok());
    EXPECT_FALSE(env_->OpenReadable(JoinPath(other, "layers/victim")).ok());
    EXPECT_FALSE(env_->OpenReadable(victim).ok());
    // Paths outside both are untouched.
    EXPECT_TRUE(env_->OpenReadable(JoinPath(outside_, "victim")).ok());
  }
  EXPECT_TRUE(env_->OpenReadable(victim).ok()) << "confinement ends with its objects";
}

TEST_P(ConfineTest, RootIsResolvedOnceAsGiven) {
  // The root may itself be a link (a user's store under a linked home):
  // it is resolved when confined, and what lies beneath is then reached from
  // that directory even if the link is changed afterwards.
  const std::string alias = P("alias");
  fs::create_symlink(store_, alias);
  auto c = env_->Confine(alias);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(ReadAll(JoinPath(alias, "volumes/ok")), "ok");
  fs::remove(alias);
  fs::create_symlink(outside_, alias);
  EXPECT_FALSE(env_->OpenReadable(JoinPath(alias, "victim")).ok());
  EXPECT_EQ(ReadAll(JoinPath(alias, "volumes/ok")), "ok");
  EXPECT_FALSE(env_->Confine(P("missing")).ok());
}

TEST_P(ConfineTest, WrappersForwardConfinement) {
  fs::create_symlink(outside_, JoinPath(store_, "layers"));
  EnvWrapper wrapper(env_);
  auto c = wrapper.Confine(store_);
  ASSERT_TRUE(c.ok());
  ExpectLink(wrapper.OpenReadable(JoinPath(store_, "layers/victim")).status(),
             JoinPath(store_, "layers"));
}

INSTANTIATE_TEST_SUITE_P(Resolution, ConfineTest, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "openat2" : "walk"; });

TEST(EnvClock, NowMicrosAdvances) {
  Env* env = Env::Default();
  uint64_t a = env->NowMicros();
  uint64_t b = env->NowMicros();
  EXPECT_GE(b, a);
  EXPECT_GT(a, 1500000000ull * 1000000ull);  // after 2017: wall clock
}

}  // namespace
}  // namespace ovbd
