// The `.control` file as a protocol, apart from FUSE: a ControlServer per
// mount, a ControlSession per open file. The FUSE adapter hands each
// session the bytes of a write, the size of a read, the close and the
// caller's credentials, and replies with what it gets back. Rules (see
// docs/CONTROL.md, "Writes and lines"):
//
//  - A line runs when its newline arrives. Bytes after the last newline of a
//    write are kept and joined with the next write on the same open file (a
//    write the kernel split mid-line is not run as two commands). An
//    unterminated line still pending when the file is closed runs at the
//    close (FLUSH, so close(2) returns its error); one still pending at
//    RELEASE (the file was never flushed) is dropped and logged.
//  - One write may complete at most kMaxCommandsPerWrite lines; a write
//    with more is refused with EINVAL before any of them runs.
//  - A line over kMaxCommandLine bytes fails (EINVAL) as soon as it is
//    known to be too long; the rest of it, up to its newline, is dropped.
//  - Commands of all sessions of a mount run one write at a time.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ovbd/control/access.h"
#include "ovbd/control/control_log.h"
#include "ovbd/control/controller.h"
#include "ovbd/control/reply.h"
#include "ovbd/io/mutex.h"
#include "ovbd/io/status.h"
#include "ovbd/store/store.h"

namespace ovbd {

inline constexpr size_t kMaxCommandsPerWrite = 64;

class ControlSession;

class ControlServer {
 public:
  // `names_removed` runs (with commands held off) after each write in
  // which a command removed a volume or snapshot name: the FUSE adapter
  // retires those names' inode numbers there, before any later command
  // could make the same name again.
  explicit ControlServer(Store* store, std::function<void()> names_removed = {});

  std::unique_ptr<ControlSession> NewSession();
  Controller& controller() { return controller_; }

  // The text result of the mount's most recent write that ran commands.
  std::string LastResult() const EXCLUDES(last_mu_);

 private:
  friend class ControlSession;
  // Runs `lines` in order for `caller`, appending one reply each; updates
  // *json on `json`/`text`.
  void RunBatch(const std::vector<std::string>& lines, const Caller& caller, bool* json,
                std::vector<Reply>* replies) EXCLUDES(run_mu_);
  void Publish(const std::string& result_text) EXCLUDES(last_mu_);
  void Log(bool ok, const std::string& what);

  Store* store_;
  Controller controller_;
  const std::function<void()> names_removed_;
  // One write's commands at a time, across every session of the mount.
  Mutex run_mu_;
  mutable Mutex last_mu_;
  std::string last_result_ GUARDED_BY(last_mu_);
  LogLimiter log_limit_{50, 200};  // 50 lines a second, bursts of 200
};

class ControlSession {
 public:
  explicit ControlSession(ControlServer* server) : server_(server) {}

  // The bytes of one write(2). OK, or the error of the last line in it that
  // failed (lines before it have taken effect).
  Status Write(std::string_view data, const Caller& caller) EXCLUDES(mu_);
  // Up to `max` bytes of what reading this file returns, continuing where
  // the previous read stopped (the text is made at the first read after
  // open or after a write that ran commands; "" once it is all read).
  std::string Read(size_t max) EXCLUDES(mu_);
  // close(2): runs a pending unterminated line.
  Status Flush(const Caller& caller) EXCLUDES(mu_);
  // The last close: drops what is still pending.
  void Release() EXCLUDES(mu_);

 private:
  void SetResult(std::vector<Reply> replies) REQUIRES(mu_);
  std::string Render() REQUIRES(mu_);

  ControlServer* const server_;
  Mutex mu_;  // taken before the server's locks
  std::string pending_ GUARDED_BY(mu_);  // an unterminated line
  bool skipping_ GUARDED_BY(mu_) = false;  // dropping an over-long line up to its newline
  bool json_ GUARDED_BY(mu_) = false;
  bool have_result_ GUARDED_BY(mu_) = false;
  std::vector<Reply> replies_ GUARDED_BY(mu_);
  std::string result_text_ GUARDED_BY(mu_);
  std::string out_ GUARDED_BY(mu_);
  size_t out_pos_ GUARDED_BY(mu_) = 0;
  bool out_ready_ GUARDED_BY(mu_) = false;
};

}  // namespace ovbd
