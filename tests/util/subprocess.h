// Subprocess: a server or tool a test runs (a registry, nginx, openssl),
// with its output in a log file, stopped for sure when the test is done.
// Also small helpers for the servers such tests start on 127.0.0.1.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ovbd/io/status.h"

namespace ovbd::test {

class Subprocess {
 public:
  // Runs argv[0] (a path) with argv; stdout and stderr are appended to
  // `log_path`. The child is in a process group of its own and is killed
  // if the thread that started it dies first (start servers from the test
  // body, not from a thread that exits before them).
  static Result<std::unique_ptr<Subprocess>> Start(const std::vector<std::string>& argv,
                                                   const std::string& log_path);
  ~Subprocess();
  Subprocess(const Subprocess&) = delete;
  Subprocess& operator=(const Subprocess&) = delete;

  // SIGTERM to its group, SIGKILL after `grace`; returns once it is reaped.
  void Stop(std::chrono::milliseconds grace = std::chrono::milliseconds(3000));
  // Whether it still runs (reaps it if not).
  bool Running();
  // Waits for it to exit by itself, at most `timeout`: its exit status
  // (as from waitpid), or -1 if it was still running (it is then killed).
  int Wait(std::chrono::milliseconds timeout);
  pid_t pid() const { return pid_; }

 private:
  explicit Subprocess(pid_t pid) : pid_(pid) {}
  pid_t pid_;
  bool reaped_ = false;
  int status_ = 0;
};

// Runs a command to completion within `timeout`; its output goes to
// `log_path`. OK if it exited 0.
Status RunCommand(const std::vector<std::string>& argv, const std::string& log_path,
                  std::chrono::milliseconds timeout = std::chrono::milliseconds(30000));

// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0 and
// released): whoever uses it must cope with losing a race for it.
Result<uint16_t> PickFreePort();
// Whether something accepts connections on 127.0.0.1:port.
bool PortOpen(uint16_t port);
// GET `path` on 127.0.0.1:port over plain HTTP: the response's status
// code, or -1 if there was none. Bounded by `timeout`.
int HttpGetStatus(uint16_t port, const std::string& path,
                  std::chrono::milliseconds timeout = std::chrono::milliseconds(1000));
// The last `max` bytes of a log file, to explain a server that failed.
std::string TailOfFile(const std::string& path, size_t max = 2000);

}  // namespace ovbd::test
