// metadata_probe: samples the latency of metadata operations on a mounted
// store until it is told to stop, then prints one line per operation.
// bench/metadata_stall.sh runs it beside long store operations to see
// whether they hold up unrelated requests.
//
//   metadata_probe MOUNTPOINT VOLUME [PAUSE_US]
//
// One thread per operation, each repeating it with PAUSE_US (default 2000)
// between samples, so that a request stuck behind a long store operation
// holds up only its own series and the others go on being sampled:
//
//   lookup      stat(MNT/VOLUME): a LOOKUP (ovbdfs gives names no entry timeout)
//   getattr     statx(AT_STATX_FORCE_SYNC) on an open VOLUME: a GETATTR
//   readdir     opendir + readdir to the end + closedir of MNT
//   open_close  open(MNT/VOLUME, O_RDONLY) + close
//   control     open + read to EOF + close of MNT/.control (the status report)
//   read4k      a 4 KiB O_DIRECT pread of VOLUME at a random offset
//
// SIGINT or SIGTERM ends the sampling; every thread finishes the operation it
// is in (a stalled one is counted when it returns). Output, one line per
// operation: "NAME COUNT MEDIAN_MS P99_MS MAX_MS".
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

std::atomic<bool> g_stop{false};

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "metadata_probe: %s: %s\n", what.c_str(), std::strerror(errno));
  std::exit(1);
}

struct Series {
  const char* name;
  std::function<void()> op;
  std::vector<double> ms;
};

double Percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size() - 1) + 0.5));
  return v[i];
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MOUNTPOINT VOLUME [PAUSE_US]\n", argv[0]);
    return 2;
  }
  const std::string mnt = argv[1];
  const std::string vol = mnt + "/" + argv[2];
  const std::string control = mnt + "/.control";
  const auto pause = std::chrono::microseconds(argc > 3 ? std::atoll(argv[3]) : 2000);

  // Block the stop signals in every thread; the main thread waits for them.
  sigset_t stop_set;
  sigemptyset(&stop_set);
  sigaddset(&stop_set, SIGINT);
  sigaddset(&stop_set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop_set, nullptr);

  const int attr_fd = ::open(vol.c_str(), O_RDONLY | O_CLOEXEC);
  if (attr_fd < 0) Die("open " + vol);
  const int data_fd = ::open(vol.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
  if (data_fd < 0) Die("open " + vol + " O_DIRECT");
  struct stat st;
  if (fstat(attr_fd, &st) != 0) Die("fstat " + vol);
  const uint64_t blocks = std::max<uint64_t>(1, static_cast<uint64_t>(st.st_size) / 4096);
  void* buf = nullptr;
  if (posix_memalign(&buf, 4096, 1 << 16) != 0) Die("posix_memalign");

  std::vector<Series> series;
  series.push_back({"lookup", [&] {
                      struct stat s;
                      if (::stat(vol.c_str(), &s) != 0) Die("stat " + vol);
                    }, {}});
  series.push_back({"getattr", [&] {
                      struct statx s;
                      if (::statx(attr_fd, "", AT_EMPTY_PATH | AT_STATX_FORCE_SYNC, STATX_BASIC_STATS,
                                  &s) != 0) {
                        Die("statx " + vol);
                      }
                    }, {}});
  series.push_back({"readdir", [&] {
                      DIR* d = ::opendir(mnt.c_str());
                      if (!d) Die("opendir " + mnt);
                      while (::readdir(d) != nullptr) {
                      }
                      ::closedir(d);
                    }, {}});
  series.push_back({"open_close", [&] {
                      int fd = ::open(vol.c_str(), O_RDONLY | O_CLOEXEC);
                      if (fd < 0) Die("open " + vol);
                      ::close(fd);
                    }, {}});
  series.push_back({"control", [&] {
                      int fd = ::open(control.c_str(), O_RDONLY | O_CLOEXEC);
                      if (fd < 0) Die("open " + control);
                      char b[65536];
                      while (::read(fd, b, sizeof b) > 0) {
                      }
                      ::close(fd);
                    }, {}});
  series.push_back({"read4k", [&, rng = std::mt19937_64(42)]() mutable {
                      const off_t off = static_cast<off_t>((rng() % blocks) * 4096);
                      if (::pread(data_fd, buf, 4096, off) < 0) Die("pread " + vol);
                    }, {}});

  std::vector<std::thread> threads;
  for (Series& s : series) {
    threads.emplace_back([&s, pause] {
      while (!g_stop.load(std::memory_order_relaxed)) {
        const auto t0 = std::chrono::steady_clock::now();
        s.op();
        const auto t1 = std::chrono::steady_clock::now();
        s.ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
        std::this_thread::sleep_for(pause);
      }
    });
  }
  int sig = 0;
  sigwait(&stop_set, &sig);
  g_stop.store(true);
  for (auto& t : threads) t.join();
  for (Series& s : series) {
    const double p50 = Percentile(s.ms, 0.5), p99 = Percentile(s.ms, 0.99);
    const double mx = s.ms.empty() ? 0 : *std::max_element(s.ms.begin(), s.ms.end());
    std::printf("%s %zu %.3f %.3f %.3f\n", s.name, s.ms.size(), p50, p99, mx);
  }
  ::close(attr_fd);
  ::close(data_fd);
  free(buf);
  return 0;
}
