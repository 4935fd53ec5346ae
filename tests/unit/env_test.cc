// PosixEnv (Env::Default()) and the helpers built on its primitives.
#include <gtest/gtest.h>

#include <stdlib.h>

#include <algorithm>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "ovbd/io/env.h"

namespace ovbd {
namespace {

namespace fs = std::filesystem;

class EnvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "ovbd_env_test.XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
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
  std::string dir_;
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

TEST(EnvClock, NowMicrosAdvances) {
  Env* env = Env::Default();
  uint64_t a = env->NowMicros();
  uint64_t b = env->NowMicros();
  EXPECT_GE(b, a);
  EXPECT_GT(a, 1500000000ull * 1000000ull);  // after 2017: wall clock
}

}  // namespace
}  // namespace ovbd
