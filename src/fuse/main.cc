// ovbdfs: mounts an ovbd store; each volume appears as one regular file.
//
//   ovbdfs STORE MOUNTPOINT [-f] [-d] [-s] [-o OPTIONS]
//   mount -t fuse.ovbdfs STORE MOUNTPOINT [-o OPTIONS]
//
// Besides the usual FUSE options (ro, allow_other, ...) it takes:
//   flush_interval=SECONDS  commit dirty volumes this often (default 5; 0 = only on fsync)
//   threads=N               maximum worker threads (default 8)
//   job_threads=N           threads for background jobs (default 2)
//   allow_foreign_store     accept a store another non-root user owns
//   log_level=LEVEL         trace|debug|info|warn|error|off (default info)
//   metrics_listen=ADDR     serve GET /metrics over HTTP on a loopback HOST:PORT
//   cache_dir=DIR           block cache of remote layers
//   cache_size=N            bound of that cache (K/M/G/T)
//   credentials=FILE        registry credentials (docker config.json format)
//   registry_config=FILE    mirrors, plain-HTTP registries, timeouts, retries
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/sinks/syslog_sink.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>

#include "ovbd/control/metrics.h"
#include "ovbd/io/http_server.h"
#include "ovbd/version.h"
#include "ovbd_fs.h"
#include "session_settings.h"
#include "startup_checks.h"

namespace {

struct Options {
  char* store = nullptr;
  int flush_interval = 5;
  int threads = 8;
  int job_threads = 2;
  int allow_foreign_store = 0;
  char* log_level = nullptr;
  char* metrics_listen = nullptr;
  char* cache_dir = nullptr;
  char* cache_size = nullptr;
  char* credentials = nullptr;
  char* registry_config = nullptr;
  int read_only = 0;
  int allow_other = 0;
  int show_help = 0;
  int show_version = 0;
  int positional = 0;
  std::string mountpoint;  // as given, for the error of a bad one
};

enum { kKeyRo = 1, kKeyAllowOther, kKeyHelp, kKeyVersion };


const fuse_opt kOptSpec[] = {
    {"flush_interval=%d", offsetof(Options, flush_interval), 0},
    {"threads=%d", offsetof(Options, threads), 0},
    {"job_threads=%d", offsetof(Options, job_threads), 0},
    {"allow_foreign_store", offsetof(Options, allow_foreign_store), 1},
    {"log_level=%s", offsetof(Options, log_level), 0},
    {"metrics_listen=%s", offsetof(Options, metrics_listen), 0},
    {"cache_dir=%s", offsetof(Options, cache_dir), 0},
    {"cache_size=%s", offsetof(Options, cache_size), 0},
    {"credentials=%s", offsetof(Options, credentials), 0},
    {"registry_config=%s", offsetof(Options, registry_config), 0},
    FUSE_OPT_KEY("ro", kKeyRo),
    FUSE_OPT_KEY("allow_other", kKeyAllowOther),
    FUSE_OPT_KEY("-h", kKeyHelp),
    FUSE_OPT_KEY("--help", kKeyHelp),
    FUSE_OPT_KEY("-V", kKeyVersion),
    FUSE_OPT_KEY("--version", kKeyVersion),
    FUSE_OPT_END};

int ProcessArg(void* data, const char* arg, int key, fuse_args*) {
  auto* o = static_cast<Options*>(data);
  switch (key) {
    case FUSE_OPT_KEY_NONOPT:
      // First positional argument: the store. Keep the second (mountpoint)
      // for fuse_parse_cmdline.
      if (o->positional++ == 0) {
        o->store = strdup(arg);
        return 0;
      }
      if (o->positional == 2) o->mountpoint = arg;
      return 1;
    case kKeyRo: o->read_only = 1; return 1;          // libfuse needs it too
    case kKeyAllowOther: o->allow_other = 1; return 1;
    case kKeyHelp: o->show_help = 1; return 0;
    case kKeyVersion: o->show_version = 1; return 0;
    default: return 1;
  }
}

void Usage(const char* prog) {
  std::printf(
      "usage: %s STORE MOUNTPOINT [options]\n"
      "\n"
      "Mounts the ovbd store STORE on MOUNTPOINT: every volume and snapshot in it\n"
      "appears as one regular file, MOUNTPOINT/.control takes commands and\n"
      "MOUNTPOINT/.metrics holds the metrics (Prometheus text format).\n"
      "\n"
      "ovbdfs options:\n"
      "    -o flush_interval=SECONDS  commit dirty volumes every SECONDS (default 5, 0 = off)\n"
      "    -o threads=N               at most N worker threads (default 8)\n"
      "    -o job_threads=N           threads for background jobs: merges, flushes (default 2)\n"
      "    -o allow_foreign_store     accept a store owned by another user who is not root\n"
      "    -o log_level=LEVEL         trace, debug, info, warn, error or off (default info)\n"
      "    -o metrics_listen=ADDR     also serve the metrics over HTTP (GET /metrics) on\n"
      "                               ADDR, a loopback HOST:PORT such as 127.0.0.1:9184\n"
      "    -o cache_dir=DIR           block cache of remote layers (default /var/cache/ovbdfs\n"
      "                               for root, ~/.cache/ovbdfs for a user)\n"
      "    -o cache_size=N            at most N bytes in that cache (K/M/G/T; default 16G)\n"
      "    -o credentials=FILE        registry credentials, docker config.json format\n"
      "                               (default ~/.docker/config.json)\n"
      "    -o registry_config=FILE    registry mirrors, plain-HTTP registries, timeouts\n"
      "    -o ro                      read-only: writes fail with EROFS\n"
      "    -o allow_other             let other users access the files (their mode bits apply)\n"
      "    -f                         stay in the foreground, log to stderr\n"
      "    -d                         FUSE debug output (implies -f)\n"
      "    -s                         single-threaded\n"
      "\n",
      prog);
}

// Owns what libfuse's option parsing and realpath() allocate, so every exit
// of main (errors and --help included) frees it.
struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
using CString = std::unique_ptr<char, FreeDeleter>;

struct ArgsGuard {
  fuse_args* args;
  ~ArgsGuard() { fuse_opt_free_args(args); }
};

// -o log_level: spdlog's own parser takes any word (as "off"), so the names
// are checked here.
bool ParseLevel(const char* text, spdlog::level::level_enum* out) {
  static const struct {
    const char* name;
    spdlog::level::level_enum level;
  } kLevels[] = {{"trace", spdlog::level::trace}, {"debug", spdlog::level::debug},
                 {"info", spdlog::level::info},   {"warn", spdlog::level::warn},
                 {"warning", spdlog::level::warn}, {"error", spdlog::level::err},
                 {"off", spdlog::level::off}};
  for (const auto& l : kLevels) {
    if (std::strcmp(text, l.name) == 0) {
      *out = l.level;
      return true;
    }
  }
  return false;
}

// An error for whoever started the daemon; `text` may go on with indented
// lines that say what to do next.
void Error(const std::string& text) { std::fprintf(stderr, "ovbdfs: %s\n", text.c_str()); }

}  // namespace

int main(int argc, char** argv) {
  ovbd::fuse::TuneMallocForFuse();

  fuse_args args = FUSE_ARGS_INIT(argc, argv);
  ArgsGuard args_guard{&args};
  Options o;
  const int parsed = fuse_opt_parse(&args, &o, kOptSpec, ProcessArg);
  CString store_arg(o.store), log_level_arg(o.log_level), metrics_listen_arg(o.metrics_listen);
  CString cache_dir_arg(o.cache_dir), cache_size_arg(o.cache_size), credentials_arg(o.credentials),
      registry_config_arg(o.registry_config);
  if (parsed != 0) return 1;
  if (o.show_version) {
    std::printf("ovbdfs %s (libfuse %s)\n", OVBD_VERSION, fuse_pkgversion());
    return 0;
  }
  if (o.show_help) {
    Usage(argv[0]);
    fuse_lowlevel_help();
    return 0;
  }
  fuse_cmdline_opts cl{};
  if (fuse_parse_cmdline(&args, &cl) != 0) {
    // libfuse has said what it refused; a bad mount point gets its next step.
    if (!o.mountpoint.empty()) {
      const std::string why = ovbd::fuse::DiagnoseMountPoint(o.mountpoint);
      if (!why.empty()) Error(why);
    }
    return 1;
  }
  CString mountpoint(cl.mountpoint);
  if (!o.store || !cl.mountpoint) {
    Usage(argv[0]);
    return 1;
  }

  spdlog::level::level_enum level = spdlog::level::info;
  if (o.log_level && !ParseLevel(o.log_level, &level)) {
    Error(std::string("-o log_level=") + o.log_level +
          ": not a level (trace, debug, info, warn, error or off)");
    return 1;
  }
  // Logs go to stderr (stdout belongs to the caller) until the daemon is
  // in the background, then to syslog: what goes wrong while mounting is
  // seen by whoever mounts, with mount(8) too.
  spdlog::set_default_logger(spdlog::stderr_color_mt("ovbdfs"));
  spdlog::set_level(level);

  if (std::string why = ovbd::fuse::CheckFuseDevice(); !why.empty()) {
    Error(why);
    return 1;
  }

  CString store_path_owner(realpath(o.store, nullptr));
  const char* store_path = store_path_owner.get();
  if (!store_path) {
    const int err = errno;
    if (err == ENOENT) {
      Error(std::string("the store ") + o.store + " does not exist.\n  Make one: ovbd store init " +
            o.store);
    } else {
      Error(std::string(o.store) + ": " + std::strerror(err));
    }
    return 1;
  }

  // Bound before the fork, so a bad address or a port in use fails the
  // mount here, where it is seen; served from a thread started after it.
  std::unique_ptr<ovbd::HttpServer> http;
  if (o.metrics_listen) {
    auto srv = ovbd::HttpServer::Listen(o.metrics_listen);
    if (!srv.ok()) {
      Error(std::string("-o metrics_listen=") + o.metrics_listen + ": " + srv.status().message());
      return 1;
    }
    http = std::move(srv).value();
  }
  spdlog::debug("ovbdfs {}: store {}, mount point {}, flush_interval={} threads={} job_threads={}{}{}",
                OVBD_VERSION, store_path, cl.mountpoint, o.flush_interval, o.threads, o.job_threads,
                o.read_only ? " ro" : "", http ? " metrics on " + http->address() : std::string());
  ovbd::StoreOptions so;
  so.read_only = o.read_only;
  so.allow_foreign_owner = o.allow_foreign_store;
  so.flush_interval_ms = static_cast<unsigned>(std::max(0, o.flush_interval)) * 1000u;
  so.job_threads = static_cast<size_t>(std::max(1, o.job_threads));
  // Threads do not survive the fork of fuse_daemonize: started after it.
  so.start_jobs = false;
  so.resume_hydration = true;  // a hydration the manifests say is running goes on
  so.on_flush_error = [](const ovbd::Status& s) { spdlog::error("periodic flush: {}", s.ToString()); };
  auto remote = ovbd::remote::MakeRemoteFromOptions(
      ovbd::Env::Default(), {o.cache_dir ? o.cache_dir : "", o.cache_size ? o.cache_size : "",
                             o.credentials ? o.credentials : "",
                             o.registry_config ? o.registry_config : ""});
  if (!remote.ok()) {
    Error(remote.status().message());
    return 1;
  }
  so.remote = std::move(remote).value();
  auto store = ovbd::Store::Open(ovbd::Env::Default(), store_path, so);
  if (!store.ok()) {
    if (store.status().code() == ovbd::Status::Code::kBusy) {
      Error("cannot open the store: " + ovbd::fuse::DescribeStoreHolder(store_path));
    } else {
      Error("cannot open the store: " + store.status().ToString());
    }
    return 1;
  }

  ovbd::fuse::MountOptions mo;
  mo.read_only = o.read_only;
  mo.allow_other = o.allow_other;
  mo.uid = getuid();
  mo.gid = getgid();
  // Read replies are spliced from the layer files: requests no larger than
  // a pipe holds.
  const unsigned max_read = ovbd::fuse::MaxRead();
  const std::string max_read_opt = "-omax_read=" + std::to_string(max_read);
  fuse_opt_add_arg(&args, max_read_opt.c_str());
  mo.max_read = max_read;
  ovbd::fuse::OvbdFs fs(store.value().get(), mo);


  // The kernel enforces the mode bits we report (volume files, .control).
  fuse_opt_add_arg(&args, "-odefault_permissions");
  const std::string fsname = std::string("-ofsname=") + store_path;
  fuse_opt_add_arg(&args, fsname.c_str());
  fuse_opt_add_arg(&args, "-osubtype=ovbdfs");

  const fuse_lowlevel_ops& ops = ovbd::fuse::OvbdFs::Ops();
  fuse_session* se = fuse_session_new(&args, &ops, sizeof(ops), &fs);
  if (!se) return 1;
  fs.set_session(se);
  int ret = 1;
  if (fuse_set_signal_handlers(se) == 0) {
    if (fuse_session_mount(se, cl.mountpoint) != 0) {
      std::string why = ovbd::fuse::DiagnoseMountFailure(cl.mountpoint, o.allow_other);
      Error(std::string("cannot mount ") + store_path + " on " + cl.mountpoint +
            (why.empty() ? " (see the line above)" : ":\n  " + why));
    } else {
      fuse_daemonize(cl.foreground);
      if (!cl.foreground) {
        auto logger = spdlog::syslog_logger_mt("ovbdfs-syslog", "ovbdfs", LOG_PID, LOG_DAEMON);
        logger->set_pattern("[%l] %v");  // syslog adds the time, tag and pid
        spdlog::set_default_logger(logger);
        spdlog::set_level(level);
      }
      spdlog::info("mounted {} on {}", store_path, cl.mountpoint);
      store.value()->StartJobs();
      if (http) {
        http->Start([&fs](const ovbd::HttpRequest& r) {
          if ((r.method == "GET" || r.method == "HEAD") && r.path() == "/metrics") {
            return ovbd::HttpResponse{200, ovbd::kMetricsContentType, fs.RenderMetrics()};
          }
          return ovbd::HttpResponse{404, "text/plain; charset=utf-8",
                                    "not found: the metrics are at /metrics\n"};
        });
        spdlog::info("metrics on http://{}/metrics", http->address());
      }
      ret = ovbd::fuse::RunSessionLoop(se, cl.singlethread, o.threads);
      // libfuse's signal handlers end the loop with the signal's number: a
      // stop asked for (kill, Ctrl-C), as clean as an unmount when the
      // final commit below succeeds.
      if (ret == SIGTERM || ret == SIGINT || ret == SIGHUP) {
        spdlog::info("stopping on signal {}", ret);
        ret = 0;
      }
      // Unmounted or signalled: the metrics handler reads the store and
      // the adapter, so it stops first.
      if (http) http->Stop();
      fuse_session_unmount(se);
    }
    fuse_remove_signal_handlers(se);
  }
  fuse_session_destroy(se);
  // Releases still queued in the kernel at unmount are not delivered.
  if (size_t n = fs.CloseLeftoverHandles()) spdlog::debug("closed {} handles at unmount", n);
  // Everything acknowledged reaches the disk before we exit.
  ovbd::Status fs_status = store.value()->FlushAll();
  if (!fs_status.ok()) {
    spdlog::error("final flush: {}", fs_status.ToString());
    ret = 1;
  }
  store.value().reset();
  spdlog::info("unmounted {}", cl.mountpoint);
  return ret ? 1 : 0;
}
