// The .control protocol apart from FUSE: sessions (partial lines, per-write
// limits, over-long lines, results a read returns), per-command permission
// checks, the reply format shared with the ovbd tool, and the log helpers.
#include <gtest/gtest.h>

#include <atomic>
#include <cerrno>
#include <thread>

#include "ovbd/control/access.h"
#include "ovbd/control/control_log.h"
#include "ovbd/control/reply.h"
#include "ovbd/control/session.h"
#include "ovbd/io/env.h"
#include "ovbd/store/store.h"
#include "store_util.h"

namespace ovbd {
namespace {

Caller User(uint32_t uid, uint32_t gid, std::vector<uint32_t> groups = {}) {
  Caller c;
  c.uid = uid;
  c.gid = gid;
  c.groups = std::move(groups);
  return c;
}
const Caller kRoot = User(0, 0);

std::string ReadAll(ControlSession* s) {
  std::string out;
  for (;;) {
    std::string part = s->Read(7);  // small reads: continuation must work
    if (part.empty()) return out;
    out += part;
  }
}

std::string FirstLine(const std::string& s) { return s.substr(0, s.find('\n')); }

class ControlSessionTest : public test::FreshStoreTest {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(FreshStoreTest::SetUp());
    server_ = std::make_unique<ControlServer>(store_.get(), [this] { ++retires_; });
  }
  bool Exists(const std::string& name) { return store_->Lookup(name).ok(); }
  // A volume owned by uid/gid with `mode`.
  void MakeVolume(const std::string& name, uint32_t uid, uint32_t gid, uint32_t mode) {
    FileAttrs a;
    a.uid = uid;
    a.gid = gid;
    a.mode = mode;
    ASSERT_TRUE(store_->CreateVolume(name, 1 << 20, {}, a).ok());
  }

  std::atomic<int> retires_{0};
  std::unique_ptr<ControlServer> server_;
};

TEST_F(ControlSessionTest, LineSplitAcrossWritesRunsOnceWhenComplete) {
  auto s = server_->NewSession();
  ASSERT_TRUE(s->Write("create v", kRoot).ok());
  EXPECT_FALSE(Exists("v")) << "a partial line ran";
  ASSERT_TRUE(s->Write("m1 1", kRoot).ok());
  EXPECT_FALSE(Exists("vm1"));
  ASSERT_TRUE(s->Write("M\ncreate vm2 1M\n", kRoot).ok());
  EXPECT_TRUE(Exists("vm1"));
  EXPECT_TRUE(Exists("vm2"));
  EXPECT_FALSE(Exists("v"));
  const std::string out = ReadAll(s.get());
  EXPECT_EQ(FirstLine(out), "ok: volume vm1 created (1 MiB)") << out;
}

TEST_F(ControlSessionTest, WritesSplitAtEveryOffsetRunEachLineOnce) {
  // What the kernel does to a large write: cut it anywhere, mid-line too.
  std::string all;
  for (int i = 0; i < 12; ++i) all += "create v" + std::to_string(i) + " 1M\n";
  for (size_t cut : {size_t{1}, size_t{5}, size_t{13}, size_t{37}}) {
    SCOPED_TRACE("chunks of " + std::to_string(cut));
    auto s = server_->NewSession();
    for (size_t off = 0; off < all.size(); off += cut) {
      ASSERT_TRUE(s->Write(std::string_view(all).substr(off, cut), kRoot).ok());
    }
    for (int i = 0; i < 12; ++i) EXPECT_TRUE(Exists("v" + std::to_string(i)));
    ASSERT_TRUE(s->Write(std::string(), kRoot).ok());
    std::string del;
    for (int i = 0; i < 12; ++i) del += "delete v" + std::to_string(i) + "\n";
    ASSERT_TRUE(s->Write(del, kRoot).ok());
    EXPECT_TRUE(store_->List().empty());
  }
}

TEST_F(ControlSessionTest, TooManyLinesInOneWriteAreRefusedBeforeAnyRuns) {
  auto s = server_->NewSession();
  std::string many;
  for (size_t i = 0; i <= kMaxCommandsPerWrite; ++i) many += "create v" + std::to_string(i) + " 1M\n";
  Status st = s->Write(many, kRoot);
  EXPECT_EQ(st.code(), Status::Code::kInvalidArgument);
  EXPECT_TRUE(store_->List().empty()) << "a command of a refused write ran";
  const std::string out = ReadAll(s.get());
  EXPECT_NE(FirstLine(out).find("error: "), std::string::npos) << out;
  EXPECT_NE(FirstLine(out).find("at most 64"), std::string::npos) << out;
  // Exactly the limit is taken.
  std::string ok;
  for (size_t i = 0; i < kMaxCommandsPerWrite; ++i) ok += "create v" + std::to_string(i) + " 1M\n";
  EXPECT_TRUE(s->Write(ok, kRoot).ok());
  EXPECT_EQ(store_->List().size(), kMaxCommandsPerWrite);
}

TEST_F(ControlSessionTest, RefusedWriteDropsTheLineItEndedIn) {
  auto s = server_->NewSession();
  std::string many(kMaxCommandsPerWrite + 1, '\n');
  many += "delete ";  // the start of a line that the refused write held
  EXPECT_FALSE(s->Write(many, kRoot).ok());
  MakeVolume("vm1", 0, 0, 0644);
  // Its end, and a full line: the fragment must not run as a command.
  EXPECT_FALSE(s->Write("vm1\nstatus vm1\n", kRoot).ok());
  EXPECT_TRUE(Exists("vm1"));
  const std::string out = ReadAll(s.get());
  EXPECT_NE(out.find("ok: vm1 size="), std::string::npos) << out;
}

TEST_F(ControlSessionTest, OverLongLineReadsAsAnErrorEvenAfterAnEarlierRead) {
  auto s = server_->NewSession();
  (void)ReadAll(s.get());  // the handle's output was read to EOF once
  Status st = s->Write(std::string(5000, 'y'), kRoot);
  EXPECT_EQ(st.code(), Status::Code::kInvalidArgument);
  EXPECT_EQ(FirstLine(ReadAll(s.get())), "error: invalid argument: command longer than 4096 bytes");
  // The rest of that line is dropped, up to its newline; what follows runs.
  EXPECT_FALSE(s->Write(std::string(100, 'y'), kRoot).ok());
  EXPECT_FALSE(s->Write("yyy\ncreate after 1M\n", kRoot).ok());
  EXPECT_TRUE(Exists("after"));
  const std::string out = ReadAll(s.get());
  EXPECT_EQ(FirstLine(out), "error: invalid argument: command longer than 4096 bytes") << out;
  EXPECT_NE(out.find("ok: volume after created"), std::string::npos) << out;
  // A line of exactly the limit is a command (here a bad one, not a long one).
  EXPECT_FALSE(s->Write("status " + std::string(kMaxCommandLine - 7, 'n') + "\n", kRoot).ok());
  EXPECT_EQ(ReadAll(s.get()).find("longer than 4096"), std::string::npos);
}

TEST_F(ControlSessionTest, CloseRunsAnUnterminatedLineReleaseDropsIt) {
  auto s = server_->NewSession();
  ASSERT_TRUE(s->Write("create vm1 1M", kRoot).ok());
  EXPECT_FALSE(Exists("vm1"));
  EXPECT_TRUE(s->Flush(kRoot).ok());
  EXPECT_TRUE(Exists("vm1"));
  ASSERT_TRUE(s->Write("delete nosuch", kRoot).ok());
  EXPECT_EQ(s->Flush(kRoot).code(), Status::Code::kNotFound);  // close(2) returns it
  EXPECT_TRUE(s->Flush(kRoot).ok());                           // nothing left
  ASSERT_TRUE(s->Write("delete vm1", kRoot).ok());
  s->Release();
  EXPECT_TRUE(Exists("vm1")) << "a line pending at release ran";
}

TEST_F(ControlSessionTest, FreshSessionShowsTheMountsLastResult) {
  auto a = server_->NewSession();
  EXPECT_FALSE(a->Write("delete nosuch\n", kRoot).ok());
  auto b = server_->NewSession();
  const std::string out = ReadAll(b.get());
  EXPECT_EQ(FirstLine(out).rfind("last command: error: not found", 0), 0u) << out;
  EXPECT_NE(out.find("\nvolumes: 0\n"), std::string::npos) << out;
}

TEST_F(ControlSessionTest, ReadContinuesUntilTheNextCommand) {
  auto s = server_->NewSession();
  ASSERT_TRUE(s->Write("create vm1 1M\n", kRoot).ok());
  const std::string first = ReadAll(s.get());
  EXPECT_EQ(s->Read(100), "");  // EOF stays EOF
  ASSERT_TRUE(s->Write("status vm1\n", kRoot).ok());
  const std::string second = ReadAll(s.get());
  EXPECT_EQ(second.rfind("ok: vm1 size=1048576", 0), 0u) << second;
  EXPECT_NE(first, second);
}

TEST_F(ControlSessionTest, JsonRepliesParseBackToTheSameOutcome) {
  auto s = server_->NewSession();
  ASSERT_TRUE(s->Write("json\n", kRoot).ok());
  MakeVolume("vm1", 1001, 1001, 0600);
  EXPECT_FALSE(s->Write("status vm1\ndelete nosuch\n", kRoot).ok());
  auto rep = ParseJsonReport(ReadAll(s.get()));
  ASSERT_TRUE(rep.ok()) << rep.status().ToString();
  ASSERT_EQ(rep->replies.size(), 2u);
  EXPECT_TRUE(rep->replies[0].status.ok());
  EXPECT_EQ(rep->replies[0].command, "status vm1");
  EXPECT_EQ(rep->replies[0].output.rfind("vm1 size=", 0), 0u);
  EXPECT_EQ(rep->replies[1].status.code(), Status::Code::kNotFound);
  EXPECT_EQ(rep->result, ReplyText(rep->replies));
  // A permission refusal keeps its errno through the document.
  EXPECT_FALSE(s->Write("delete vm1\n", User(1000, 1000)).ok());
  rep = ParseJsonReport(ReadAll(s.get()));
  ASSERT_TRUE(rep.ok());
  ASSERT_EQ(rep->replies.size(), 1u);
  EXPECT_EQ(rep->replies[0].status.os_errno(), EPERM);
  EXPECT_EQ(ParseJsonReport("not json").status().code(), Status::Code::kCorruption);
  EXPECT_EQ(ParseJsonReport("{\"volumes\": []}").status().code(), Status::Code::kCorruption);
}

TEST(ReplyTest, EveryStatusCodeRoundTrips) {
  for (Status s : {Status::NotFound("a"), Status::Corruption("b"), Status::InvalidArgument("c"),
                   Status::IOError("d", EACCES), Status::NoSpace("e"), Status::Exists("f"),
                   Status::Busy("g"), Status::ReadOnly("h"), Status::NotSupported("i"),
                   Status::TooLarge("j")}) {
    Status back = StatusFromCode(CodeName(s.code()), s.message(), s.os_errno());
    EXPECT_EQ(back.code(), s.code());
    EXPECT_EQ(back.ToString(), s.ToString());
    EXPECT_EQ(back.os_errno(), s.os_errno());
  }
  EXPECT_EQ(ReplyText(Reply{"x", Status::OK(), "two\nlines\n"}), "ok: two\nlines\n");
  EXPECT_EQ(ReplyText(Reply{"x", Status::Busy("open"), ""}), "error: busy: open\n");
}

TEST_F(ControlSessionTest, NamesRemovedHookRunsOncePerWriteThatDeleted) {
  auto s = server_->NewSession();
  ASSERT_TRUE(s->Write("create a 1M\ncreate b 1M\nstatus\n", kRoot).ok());
  EXPECT_EQ(retires_.load(), 0);
  ASSERT_TRUE(s->Write("delete a\ndelete b\n", kRoot).ok());
  EXPECT_EQ(retires_.load(), 1);
  EXPECT_FALSE(s->Write("delete nosuch\n", kRoot).ok());
  EXPECT_EQ(retires_.load(), 1);
}

// ---- permissions -------------------------------------------------------------

TEST(AccessTest, KernelClassRules) {
  FileAttrs f;
  f.uid = 1001;
  f.gid = 2000;
  f.mode = 0640;
  EXPECT_TRUE(MayAccess(User(1001, 1001), f, kMayRead));
  EXPECT_TRUE(MayAccess(User(1001, 1001), f, kMayWrite));
  EXPECT_TRUE(MayAccess(User(1002, 2000), f, kMayRead));
  EXPECT_FALSE(MayAccess(User(1002, 2000), f, kMayWrite));
  EXPECT_TRUE(MayAccess(User(1002, 1002, {5, 2000}), f, kMayRead));  // supplementary
  EXPECT_FALSE(MayAccess(User(1003, 1003, {5}), f, kMayRead));
  EXPECT_TRUE(MayAccess(kRoot, f, kMayRead | kMayWrite));
  f.mode = 0064;  // the owner class applies alone, even when it grants less
  EXPECT_FALSE(MayAccess(User(1001, 2000), f, kMayRead));
  EXPECT_TRUE(MayAccess(User(1002, 2000), f, kMayRead));
  EXPECT_TRUE(MayAccess(User(1003, 1003), f, kMayRead));
  EXPECT_TRUE(OwnsOrRoot(User(1001, 1), f));
  EXPECT_TRUE(OwnsOrRoot(kRoot, f));
  EXPECT_FALSE(OwnsOrRoot(User(1002, 2000), f));
}

TEST_F(ControlSessionTest, CommandsAreCheckedAgainstTheVolumesOwnerAndMode) {
  const Caller owner = User(1001, 1001);
  const Caller member = User(1002, 1002, {2000});  // in the volume's group
  const Caller other = User(1003, 1003);
  MakeVolume("priv", 1001, 2000, 0600);
  MakeVolume("shared", 1001, 2000, 0640);
  ASSERT_TRUE(store_->Snapshot("priv", "s").ok());
  ASSERT_TRUE(store_->Snapshot("shared", "s").ok());
  auto s = server_->NewSession();
  auto expect_errno = [&](const std::string& line, const Caller& c, int err) {
    Status st = s->Write(line + "\n", c);
    EXPECT_EQ(st.os_errno(), err) << line << ": " << st.ToString();
    if (err) {
      EXPECT_NE(FirstLine(ReadAll(s.get())).find("error: "), std::string::npos);
    }
  };
  const auto before = store_->List().size();
  expect_errno("delete priv", member, EPERM);
  expect_errno("delete priv@s", member, EPERM);
  expect_errno("delete shared", member, EPERM);  // read access is not enough
  expect_errno("resize priv 2M", member, EPERM);
  expect_errno("snapshot priv x", member, EACCES);
  expect_errno("clone priv@s mine", member, EACCES);
  expect_errno("snapshot --all x", member, EACCES);
  expect_errno("snapshot shared x", other, EACCES);
  EXPECT_EQ(store_->List().size(), before) << "a refused command changed the store";
  EXPECT_EQ(store_->Lookup("priv")->size, 1u << 20);

  // Read permission is enough to snapshot and clone; the clone is the caller's.
  expect_errno("snapshot shared bymember", member, 0);
  expect_errno("clone shared@s mine", member, 0);
  auto mine = store_->Lookup("mine");
  ASSERT_TRUE(mine.ok());
  EXPECT_EQ(mine->attrs.uid, 1002u);
  EXPECT_EQ(mine->attrs.gid, 1002u);
  expect_errno("resize mine 2M", member, 0);
  expect_errno("delete mine", member, 0);
  // A new volume is the caller's.
  expect_errno("create made 1M", other, 0);
  EXPECT_EQ(store_->Lookup("made")->attrs.uid, 1003u);
  // The owner and root may do everything.
  expect_errno("resize priv 2M", owner, 0);
  expect_errno("snapshot priv o", owner, 0);
  expect_errno("delete priv@o", owner, 0);
  expect_errno("snapshot --all all", kRoot, 0);
  expect_errno("delete made", kRoot, 0);
  // Names that do not exist are reported as missing, whoever asks.
  EXPECT_EQ(s->Write("delete nosuch\n", other).code(), Status::Code::kNotFound);
}

// ---- concurrency ---------------------------------------------------------------

TEST_F(ControlSessionTest, ConcurrentSessionsWriteAndRead) {
  std::vector<std::thread> ts;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < 20; ++i) {
        auto s = server_->NewSession();
        const std::string n = "t" + std::to_string(t) + "v" + std::to_string(i);
        if (!s->Write("create " + n + " 1M\nstatus " + n + "\n", kRoot).ok()) ++failures;
        if (ReadAll(s.get()).find("ok: " + n + " size=") == std::string::npos) ++failures;
        if (!s->Write("delete " + n + "\n", kRoot).ok()) ++failures;
        s->Release();
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_TRUE(store_->List().empty());
}

// ---- log helpers -------------------------------------------------------------------

TEST(ControlLogTest, EscapesBinaryAndCutsLongInput) {
  EXPECT_EQ(EscapeForLog("snapshot vm1 s"), "snapshot vm1 s");
  EXPECT_EQ(EscapeForLog(std::string("a\0b\n\x1b\xff\\", 7)), "a\\x00b\\x0a\\x1b\\xff\\\\");
  const std::string cut = EscapeForLog(std::string(1000, 'x'), 10);
  EXPECT_EQ(cut, "xxxxxxxxxx...(1000 bytes)");
}

TEST(ControlLogTest, LimiterAllowsABurstThenTheRateAndCountsWhatItDropped) {
  LogLimiter l(10, 5);  // 10 lines/s, bursts of 5
  uint64_t suppressed = 99;
  int allowed = 0;
  for (int i = 0; i < 20; ++i) allowed += l.Allow(1000000, &suppressed);
  EXPECT_EQ(allowed, 5);
  EXPECT_FALSE(l.Allow(1050000, &suppressed));  // 50 ms: half a token
  EXPECT_TRUE(l.Allow(1100000, &suppressed));   // 100 ms: one token
  EXPECT_EQ(suppressed, 16u);
  EXPECT_TRUE(l.Allow(2000000, &suppressed));
  EXPECT_EQ(suppressed, 0u);
}

}  // namespace
}  // namespace ovbd
