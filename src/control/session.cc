#include "ovbd/control/session.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>

namespace ovbd {

namespace {
Status TooLong() {
  return Status::InvalidArgument("command longer than " + std::to_string(kMaxCommandLine) +
                                 " bytes");
}

uint64_t MonotonicMicros() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}
}  // namespace

ControlServer::ControlServer(Store* store, std::function<void()> names_removed)
    : store_(store), controller_(store), names_removed_(std::move(names_removed)) {}

std::unique_ptr<ControlSession> ControlServer::NewSession() {
  return std::make_unique<ControlSession>(this);
}

std::string ControlServer::LastResult() const {
  MutexLock lk(&last_mu_);
  return last_result_;
}

void ControlServer::Publish(const std::string& result_text) {
  MutexLock lk(&last_mu_);
  last_result_ = result_text;
}

void ControlServer::Log(bool ok, const std::string& what) {
  uint64_t suppressed = 0;
  if (!log_limit_.Allow(MonotonicMicros(), &suppressed)) return;
  if (suppressed) spdlog::warn("control: {} log line(s) suppressed (rate limit)", suppressed);
  if (ok) {
    spdlog::info("control: {}", what);
  } else {
    spdlog::warn("control: {}", what);
  }
}

void ControlServer::RunBatch(const std::vector<std::string>& lines, const Caller& caller,
                             bool* json, std::vector<Reply>* replies) {
  MutexLock lk(&run_mu_);
  bool removed = false;
  for (const std::string& line : lines) {
    Reply r;
    r.command = EscapeForLog(line);
    Result<CommandOutcome> o = controller_.Run(line, &caller);
    if (o.ok()) {
      r.output = std::move(o->output);
      if (o->json) *json = *o->json;
      removed |= o->removed_names;
      Log(true, r.command + " -> ok");
    } else {
      r.status = o.status();
      Log(false, r.command + " -> " + r.status.ToString());
    }
    replies->push_back(std::move(r));
  }
  // Once per write, and only when a name went away: the adapter's sweep
  // costs O(names).
  if (removed && names_removed_) names_removed_();
}

Status ControlSession::Write(std::string_view data, const Caller& caller) {
  MutexLock lk(&mu_);
  const size_t newlines = static_cast<size_t>(std::count(data.begin(), data.end(), '\n'));
  if (newlines > kMaxCommandsPerWrite) {
    // Refused whole, before anything runs: one write must not hold every
    // other command of the mount for minutes. Whatever the write held of a
    // line that goes on in the next write is dropped with it.
    Status s = Status::InvalidArgument(
        "one write holds " + std::to_string(newlines) + " command lines; at most " +
        std::to_string(kMaxCommandsPerWrite) + " are taken per write, none was run");
    pending_.clear();
    skipping_ = data.back() != '\n';
    server_->Log(false, "refused a write of " + std::to_string(data.size()) + " bytes: " +
                            s.message());
    SetResult({Reply{"", s, ""}});
    return s;
  }

  std::vector<Reply> before;  // failures known before anything runs
  size_t pos = 0;
  if (skipping_) {
    const size_t nl = data.find('\n');
    if (nl == std::string_view::npos) {
      SetResult({Reply{"", TooLong(), ""}});
      return TooLong();
    }
    pos = nl + 1;
    skipping_ = false;
    before.push_back(Reply{"", TooLong(), ""});
  }
  std::vector<std::string> lines;
  for (size_t nl; (nl = data.find('\n', pos)) != std::string_view::npos; pos = nl + 1) {
    std::string line = std::move(pending_);
    pending_.clear();
    line.append(data.substr(pos, nl - pos));
    lines.push_back(std::move(line));
  }
  const std::string_view tail = data.substr(pos);
  std::vector<Reply> after;
  if (pending_.size() + tail.size() > kMaxCommandLine) {
    // Too long already, whatever follows: say so now, drop the rest of it.
    server_->Log(false, EscapeForLog(pending_ + std::string(tail)) + " -> " + TooLong().ToString());
    pending_.clear();
    skipping_ = true;
    after.push_back(Reply{"", TooLong(), ""});
  } else {
    pending_.append(tail);
  }
  if (lines.empty() && before.empty() && after.empty()) return Status::OK();  // a partial line

  std::vector<Reply> replies = std::move(before);
  if (!lines.empty()) server_->RunBatch(lines, caller, &json_, &replies);
  for (Reply& r : after) replies.push_back(std::move(r));
  Status last;
  for (const Reply& r : replies)
    if (!r.status.ok()) last = r.status;
  SetResult(std::move(replies));
  return last;
}

Status ControlSession::Flush(const Caller& caller) {
  MutexLock lk(&mu_);
  // The rest of an over-long line has been reported already.
  skipping_ = false;
  if (pending_.empty()) return Status::OK();
  std::vector<std::string> lines{std::move(pending_)};
  pending_.clear();
  std::vector<Reply> replies;
  server_->RunBatch(lines, caller, &json_, &replies);
  Status s = replies.back().status;
  SetResult(std::move(replies));
  return s;
}

void ControlSession::Release() {
  MutexLock lk(&mu_);
  if (!pending_.empty()) {
    server_->Log(false, "dropped an unterminated line at release: " + EscapeForLog(pending_));
    pending_.clear();
  }
}

void ControlSession::SetResult(std::vector<Reply> replies) {
  replies_ = std::move(replies);
  result_text_ = ReplyText(replies_);
  have_result_ = true;
  out_ready_ = false;
  server_->Publish(result_text_);
}

std::string ControlSession::Render() {
  if (json_) {
    std::vector<VolumeInfo> vols = server_->store_->List();
    server_->store_->FillPreallocated(&vols);
    return RenderJsonReport(replies_, result_text_, vols, server_->store_->FailedManifests(),
                            server_->store_->Jobs());
  }
  std::string head;
  if (have_result_) {
    head = result_text_;
  } else {
    // A fresh handle (`cat .control` after `echo ... > .control`) shows
    // the mount's most recent result.
    const std::string last = server_->LastResult();
    if (!last.empty()) head = std::string(kReplyLastCommand) + last;
  }
  return head + server_->controller_.StatusReport();
}

std::string ControlSession::Read(size_t max) {
  MutexLock lk(&mu_);
  if (!out_ready_) {
    out_ = Render();
    out_pos_ = 0;
    out_ready_ = true;
  }
  const size_t n = std::min(max, out_.size() - out_pos_);
  std::string part = out_.substr(out_pos_, n);
  out_pos_ += n;
  return part;
}

}  // namespace ovbd
