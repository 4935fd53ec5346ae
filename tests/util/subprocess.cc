#include "subprocess.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

namespace ovbd::test {

namespace {

using Clock = std::chrono::steady_clock;

struct Fd {
  int fd = -1;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

sockaddr_in Loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return a;
}

// A connected socket to 127.0.0.1:port, or -1; non-blocking connect bounded by `timeout`.
int ConnectLoopback(uint16_t port, std::chrono::milliseconds timeout) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return -1;
  sockaddr_in a = Loopback(port);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    if (errno != EINPROGRESS) {
      close(fd);
      return -1;
    }
    pollfd p{fd, POLLOUT, 0};
    int err = 0;
    socklen_t len = sizeof err;
    if (poll(&p, 1, static_cast<int>(timeout.count())) != 1 ||
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      close(fd);
      return -1;
    }
  }
  return fd;
}

}  // namespace

Result<std::unique_ptr<Subprocess>> Subprocess::Start(const std::vector<std::string>& argv,
                                                      const std::string& log_path) {
  if (argv.empty()) return Status::InvalidArgument("no command");
  // Everything the child needs is prepared before fork: after it, only
  // async-signal-safe calls.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int log = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log < 0) return Status::IOError("open " + log_path, errno);
  int null_in = open("/dev/null", O_RDONLY | O_CLOEXEC);
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    int e = errno;
    close(log);
    if (null_in >= 0) close(null_in);
    return Status::IOError("fork for " + argv[0], e);
  }
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    if (null_in >= 0) dup2(null_in, 0);
    dup2(log, 1);
    dup2(log, 2);
    execv(args[0], args.data());
    _exit(127);
  }
  close(log);
  if (null_in >= 0) close(null_in);
  setpgid(pid, pid);  // also from here, so it holds before Stop can run
  return std::unique_ptr<Subprocess>(new Subprocess(pid));
}

Subprocess::~Subprocess() { Stop(); }

bool Subprocess::Running() {
  if (reaped_) return false;
  pid_t r = waitpid(pid_, &status_, WNOHANG);
  if (r == pid_ || (r < 0 && errno == ECHILD)) reaped_ = true;
  return !reaped_;
}

int Subprocess::Wait(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (Running()) {
    if (Clock::now() >= deadline) {
      Stop(std::chrono::milliseconds(0));
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return status_;
}

void Subprocess::Stop(std::chrono::milliseconds grace) {
  if (!Running()) return;
  kill(-pid_, SIGTERM);
  const auto deadline = Clock::now() + grace;
  while (Running() && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  if (Running()) {
    kill(-pid_, SIGKILL);
    kill(pid_, SIGKILL);
    while (Running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

Status RunCommand(const std::vector<std::string>& argv, const std::string& log_path,
                  std::chrono::milliseconds timeout) {
  auto p = Subprocess::Start(argv, log_path);
  if (!p.ok()) return p.status();
  int st = (*p)->Wait(timeout);
  if (st == -1) return Status::IOError(argv[0] + ": did not finish in time", ETIMEDOUT);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    return Status::IOError(argv[0] + " failed: " + TailOfFile(log_path, 500), EIO);
  }
  return Status::OK();
}

Result<uint16_t> PickFreePort() {
  Fd s;
  s.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s.fd < 0) return Status::IOError("socket", errno);
  sockaddr_in a = Loopback(0);
  if (bind(s.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) return Status::IOError("bind", errno);
  socklen_t len = sizeof a;
  if (getsockname(s.fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    return Status::IOError("getsockname", errno);
  }
  return static_cast<uint16_t>(ntohs(a.sin_port));
}

bool PortOpen(uint16_t port) {
  Fd s;
  s.fd = ConnectLoopback(port, std::chrono::milliseconds(500));
  return s.fd >= 0;
}

int HttpGetStatus(uint16_t port, const std::string& path, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  Fd s;
  s.fd = ConnectLoopback(port, timeout);
  if (s.fd < 0) return -1;
  const std::string req = "GET " + path + " HTTP/1.0\r\nHost: 127.0.0.1:" + std::to_string(port) +
                          "\r\nConnection: close\r\n\r\n";
  if (send(s.fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) return -1;
  std::string got;
  while (got.find("\r\n") == std::string::npos && got.size() < 256) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    pollfd p{s.fd, POLLIN, 0};
    if (left.count() <= 0 || poll(&p, 1, static_cast<int>(left.count())) != 1) return -1;
    char buf[256];
    ssize_t n = recv(s.fd, buf, sizeof buf, 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
  }
  // "HTTP/1.1 200 OK"
  if (got.compare(0, 5, "HTTP/") != 0) return -1;
  size_t sp = got.find(' ');
  if (sp == std::string::npos || sp + 4 > got.size()) return -1;
  return std::atoi(got.substr(sp + 1, 3).c_str());
}

std::string TailOfFile(const std::string& path, size_t max) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  std::string s = ss.str();
  return s.size() > max ? s.substr(s.size() - max) : s;
}

}  // namespace ovbd::test
