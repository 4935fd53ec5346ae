#include "store_client.h"

#include "remote_commands.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <chrono>
#include <cinttypes>
#include <functional>
#include <optional>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "ovbd/control/controller.h"
#include "ovbd/control/reply.h"
#include "ovbd/control/size.h"
#include "ovbd/io/mounts.h"
#include "ovbd/store/check.h"
#include "ovbd/store/store.h"

namespace ovbd::tool {
namespace {

Env* env() { return Env::Default(); }

// How the tool opens a store itself: with remote access (the cache and
// registry settings of the command line) for stores with remote lowers.
StoreOptions ToolStoreOptions() {
  StoreOptions so;
  if (auto r = ToolRemote(); r.ok()) so.remote = r.value();
  return so;
}

// The mount point of an ovbdfs mount of `store`, or "" if none.
std::string FindMount(const std::string& store) {
  char* real = realpath(store.c_str(), nullptr);
  if (!real) return "";
  const std::string want = real;
  free(real);
  const std::vector<std::string> mounts = OvbdfsMountsOf(want);
  return mounts.empty() ? "" : mounts.front();
}

// Sends one command through MNT/.control and returns the JSON document of
// the reply (include/ovbd/control/reply.h): a `json` line written first
// switches this handle to it. *reply gets the command's own reply.
Result<std::string> ControlExchange(const std::string& mnt, const std::string& line, Reply* reply) {
  const std::string path = mnt + "/.control";
  int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return Status::IOError("open " + path + ": " + std::strerror(errno), errno);
  // Two writes: the mount's "last command" (what a fresh handle shows) is
  // then the command itself, not the format switch.
  static constexpr char kJson[] = "json\n";
  if (::write(fd, kJson, sizeof kJson - 1) != static_cast<ssize_t>(sizeof kJson - 1)) {
    const int err = errno;
    ::close(fd);
    return Status::IOError("write " + path + ": " + std::strerror(err), err);
  }
  const std::string cmd = line + "\n";
  const ssize_t w = ::write(fd, cmd.data(), cmd.size());
  const int werr = errno;
  std::string out;
  char buf[65536];
  ssize_t r;
  while ((r = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(r));
  const int rerr = r < 0 ? errno : 0;
  ::close(fd);
  auto report = ParseJsonReport(out);
  if (!report.ok() || report->replies.size() != 1) {
    if (w < 0) return Status::IOError(path + ": " + std::strerror(werr), werr);
    if (rerr) return Status::IOError("read " + path + ": " + std::strerror(rerr), rerr);
    return report.ok() ? Status::Corruption(path + ": expected 1 reply, got " +
                                            std::to_string(report->replies.size()))
                       : report.status().Annotate(path);
  }
  *reply = report->replies.back();
  if (!reply->status.ok()) return reply->status;
  if (w != static_cast<ssize_t>(cmd.size())) {
    return Status::IOError(path + ": write failed: " + std::strerror(w < 0 ? werr : EIO),
                           w < 0 ? werr : EIO);
  }
  return out;
}

void PrintOutput(const std::string& out) {
  std::cout << out << (out.empty() || out.back() != '\n' ? "\n" : "");
}

// Sends one command through MNT/.control and prints its output.
Status ViaControl(const std::string& mnt, const std::string& line) {
  Reply reply;
  OVBD_ASSIGN_OR_RETURN(std::string doc, ControlExchange(mnt, line, &reply));
  (void)doc;
  PrintOutput(reply.output);
  return Status::OK();
}

// Runs `line` on the store: through .control when mounted, else directly.
// A mounted store is always reached through the mount, where the daemon
// checks the caller per command (the store's own files may not even be
// readable by the caller).
Status RunCommand(const std::string& dir, const std::string& line) {
  const std::string mnt = FindMount(dir);
  if (!mnt.empty()) return ViaControl(mnt, line);
  auto store = Store::Open(env(), dir, ToolStoreOptions());
  if (!store.ok()) {
    if (store.status().code() == Status::Code::kBusy) {
      // Mounted after we looked.
      const std::string now = FindMount(dir);
      if (!now.empty()) return ViaControl(now, line);
    }
    return store.status();
  }
  Controller c(store.value().get());
  bool json = false;
  OVBD_ASSIGN_OR_RETURN(std::string out, c.Execute(line, &json));
  PrintOutput(out);
  return Status::OK();
}

Status OpenDirect(const std::string& dir, std::unique_ptr<Store>* out) {
  auto store = Store::Open(env(), dir, ToolStoreOptions());
  if (!store.ok()) {
    if (store.status().code() == Status::Code::kBusy && !FindMount(dir).empty()) {
      return Status::Busy(dir + " is mounted at " + FindMount(dir) +
                          "; this command needs the store unmounted");
    }
    return store.status();
  }
  *out = std::move(store).value();
  return Status::OK();
}

// Hydration progress, from a mounted store's JSON status or a store opened
// here.
struct Progress {
  std::string state;
  uint64_t copied = 0, total = 0, rate = 0, eta = 0;
  std::string error;
};

Result<Progress> MountedProgress(const std::string& mnt, const std::string& vol) {
  Reply reply;
  OVBD_ASSIGN_OR_RETURN(std::string doc, ControlExchange(mnt, "status " + vol, &reply));
  auto j = nlohmann::json::parse(doc, nullptr, false);
  if (j.is_discarded() || !j.contains("volumes") || !j["volumes"].is_array()) {
    return Status::Corruption(mnt + "/.control: status reply without volumes");
  }
  for (const auto& v : j["volumes"]) {
    if (!v.is_object() || v.value("name", "") != vol || !v.contains("hydrate")) continue;
    const auto& h = v["hydrate"];
    Progress p;
    p.state = h.value("state", "");
    p.copied = h.value("copied", uint64_t{0});
    p.total = h.value("total", uint64_t{0});
    p.rate = h.value("rate", uint64_t{0});
    p.eta = h.value("eta_s", uint64_t{0});
    p.error = h.value("error", "");
    return p;
  }
  return Status::NotFound(vol + ": not in the status of " + mnt);
}

Progress LocalProgress(const HydrateInfo& h) {
  Progress p;
  p.state = HydrateStateName(h.state);
  p.copied = h.copied;
  p.total = h.total;
  p.rate = h.rate;
  p.eta = h.eta_s;
  p.error = h.error;
  return p;
}

// Waits for the hydration of `vol` to end, drawing a progress bar on a
// terminal (a line every 10% otherwise). OK only when it is done.
Status WaitHydrated(const std::string& vol, const std::function<Result<Progress>()>& poll) {
  const bool tty = isatty(2);
  int last_decile = -1;
  std::fflush(stdout);  // what was printed comes before the progress lines
  for (;;) {
    OVBD_ASSIGN_OR_RETURN(Progress p, poll());
    const int pct = p.total ? static_cast<int>(p.copied * 100 / p.total) : (p.state == "done" ? 100 : 0);
    if (tty) {
      constexpr int kWidth = 30;
      std::string bar(static_cast<size_t>(pct * kWidth / 100), '#');
      bar.resize(kWidth, '.');
      std::fprintf(stderr, "\rhydrate %s [%s] %3d%% %s/%s %s/s eta %" PRIu64 "s   ", vol.c_str(),
                   bar.c_str(), pct, FormatSize(p.copied).c_str(), FormatSize(p.total).c_str(),
                   FormatSize(p.rate).c_str(), p.eta);
    } else if (pct / 10 != last_decile) {
      last_decile = pct / 10;
      std::fprintf(stderr, "hydrate %s: %s %d%% (%" PRIu64 " of %" PRIu64 " bytes)\n",
                   vol.c_str(), p.state.c_str(), pct, p.copied, p.total);
    }
    if (p.state != "running") {
      if (tty) std::fprintf(stderr, "\n");
      if (p.state == "done") {
        std::printf("hydrate %s done: it reads no lower layers\n", vol.c_str());
        return Status::OK();
      }
      if (p.state == "error") return Status::IOError("hydrate " + vol + ": " + p.error, EIO);
      return Status::Busy("hydrate " + vol + " is " + p.state + ", not running (resume it with "
                          "`ovbd hydrate STORE " + vol + " resume`)");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

FileAttrs DefaultAttrs() {
  FileAttrs a;
  a.uid = getuid();
  a.gid = getgid();
  a.mode = 0644;
  return a;
}

}  // namespace

void RegisterStoreCommands(CLI::App& app, std::function<void(const Status&)> run) {
  static std::string dir, name, size_text, raw, compress, block = "4K", snap, target;
  static std::vector<std::string> from;
  static bool all = false, json = false;

  auto* store = app.add_subcommand("store", "Create stores");
  store->require_subcommand(1);
  auto* si = store->add_subcommand("init", "Make DIR an empty ovbd store");
  si->add_option("DIR", dir, "Store directory (created if missing)")->required();
  si->callback([run] { run(Store::Init(env(), dir)); });

  auto* vol = app.add_subcommand("volume", "Create, import and list volumes");
  vol->require_subcommand(1);
  auto* vc = vol->add_subcommand("create", "Create a volume, optionally over existing layers");
  vc->add_option("DIR", dir, "Store directory")->required();
  vc->add_option("NAME", name, "Volume name")->required();
  vc->add_option("--size", size_text, "Virtual size (K/M/G/T = powers of 1024); default: the top layer's");
  vc->add_option("--from", from,
                 "Lower layer files, bottom first; or one image, registry://HOST[:PORT]/REPO:TAG, "
                 "whose layers are then read lazily from the registry");
  static bool pull = false;
  vc->add_flag("--pull", pull, "With --from registry://...: download every layer now");
  vc->callback([run] {
    if (from.size() == 1 && from[0].rfind("registry://", 0) == 0) {
      if (!size_text.empty()) return run(Status::InvalidArgument("--size does not go with an image"));
      if (!FindMount(dir).empty()) {
        return run(RunCommand(dir, "create " + name + " --from " + from[0] + (pull ? " --pull" : "")));
      }
      std::unique_ptr<Store> st;
      Status s = OpenDirect(dir, &st);
      if (s.ok()) s = st->CreateFromImage(name, from[0], pull, DefaultAttrs());
      if (s.ok()) std::printf("volume %s created from %s%s\n", name.c_str(), from[0].c_str(), pull ? " (pulled)" : "");
      return run(s);
    }
    if (pull) return run(Status::InvalidArgument("--pull goes with --from registry://..."));
    uint64_t size = 0;
    if (!size_text.empty()) {
      auto s = ParseSize(size_text);
      if (!s.ok()) return run(s.status());
      size = s.value();
    }
    if (from.empty()) {
      if (size == 0) return run(Status::InvalidArgument("give --size or --from"));
      // Not mounted: create it here, owned by the caller (as with --from).
      // Mounted: through .control.
      if (FindMount(dir).empty()) {
        std::unique_ptr<Store> st;
        Status s = OpenDirect(dir, &st);
        if (s.ok()) s = st->CreateVolume(name, size, {}, DefaultAttrs());
        if (s.ok()) std::printf("volume %s created (%s)\n", name.c_str(), FormatSize(size).c_str());
        return run(s);
      }
      return run(RunCommand(dir, "create " + name + " " + std::to_string(size)));
    }
    std::unique_ptr<Store> st;
    Status s = OpenDirect(dir, &st);
    if (s.ok()) s = st->CreateVolume(name, size, from, DefaultAttrs());
    if (s.ok()) std::printf("volume %s created\n", name.c_str());
    run(s);
  });

  auto* vi = vol->add_subcommand("import", "Import a raw disk image as a new volume's lower layer");
  vi->add_option("DIR", dir, "Store directory")->required();
  vi->add_option("NAME", name, "Volume name")->required();
  vi->add_option("RAW", raw, "Raw disk image")->required()->check(CLI::ExistingFile);
  vi->add_option("--compress", compress, "Store the layer compressed: lz4 or zstd");
  vi->add_option("--block-size", block, "Compression block size, 4K..64K (default 4K)");
  vi->callback([run] {
    ImportOptions io;
    if (!compress.empty()) {
      zfile::Options z;
      if (compress == "lz4") z.algo = zfile::Algo::kLz4;
      else if (compress == "zstd") z.algo = zfile::Algo::kZstd;
      else return run(Status::InvalidArgument("--compress must be lz4 or zstd"));
      auto bs = ParseSize(block);
      if (!bs.ok()) return run(bs.status());
      if (bs.value() < zfile::kMinBlockSize || bs.value() > zfile::kMaxBlockSize ||
          (bs.value() & (bs.value() - 1))) {
        return run(Status::InvalidArgument("--block-size must be a power of two from 4K to 64K"));
      }
      z.block_size = static_cast<uint32_t>(bs.value());
      io.compress = z;
    }
    const bool tty = isatty(1);
    io.progress = [tty](const char* stage, uint64_t d, uint64_t t) {
      if (!tty || t == 0) return;
      std::fprintf(stderr, "\r%-9s %3d%%", stage, static_cast<int>(d * 100 / t));
      if (d == t) std::fprintf(stderr, "\n");
    };
    std::unique_ptr<Store> st;
    Status s = OpenDirect(dir, &st);
    if (s.ok()) s = st->ImportRaw(name, raw, io, DefaultAttrs());
    if (s.ok()) std::printf("volume %s imported from %s\n", name.c_str(), raw.c_str());
    run(s);
  });

  auto* vl = vol->add_subcommand("list", "List volumes and snapshots");
  vl->add_option("DIR", dir, "Store directory")->required();
  vl->add_flag("--json", json, "Machine-readable output");
  vl->callback([run] {
    StoreOptions so;
    so.read_only = true;  // listing works on a mounted store too
    auto st = Store::Open(env(), dir, so);
    if (!st.ok()) return run(st.status());
    auto vols = st.value()->List();
    if (json) {
      nlohmann::json arr = nlohmann::json::array();
      for (const auto& v : vols)
        arr.push_back({{"name", v.name}, {"snapshot", v.is_snapshot}, {"size", v.size},
                       {"layers", v.lowers.size()}});
      std::cout << arr.dump(2) << "\n";
    } else {
      std::printf("%-40s %12s %7s %s\n", "NAME", "SIZE", "LAYERS", "KIND");
      for (const auto& v : vols)
        std::printf("%-40s %12s %7zu %s\n", v.name.c_str(), FormatSize(v.size).c_str(),
                    v.lowers.size(), v.is_snapshot ? "snapshot" : "volume");
    }
    run(Status::OK());
  });

  // Commands shared with .control.
  auto* sn = app.add_subcommand("snapshot", "Snapshot a volume (or --all volumes at one instant)");
  sn->add_option("DIR", dir, "Store directory")->required();
  sn->add_option("VOL", name, "Volume (omit with --all)");
  sn->add_option("SNAP", snap, "Snapshot name (default: the time)");
  sn->add_flag("--all", all, "Every volume, one consistent instant");
  sn->callback([run] {
    if (all) {
      // With --all the single positional is the snapshot name.
      std::string s = !name.empty() ? name : snap;
      return run(RunCommand(dir, "snapshot --all" + (s.empty() ? "" : " " + s)));
    }
    if (name.empty()) return run(Status::InvalidArgument("give VOL or --all"));
    run(RunCommand(dir, "snapshot " + name + (snap.empty() ? "" : " " + snap)));
  });
  auto* cl = app.add_subcommand("clone", "Make a writable volume from a snapshot");
  cl->add_option("DIR", dir, "Store directory")->required();
  cl->add_option("SNAPSHOT", name, "VOL@SNAP")->required();
  cl->add_option("NEWVOL", target, "New volume name")->required();
  cl->callback([run] { run(RunCommand(dir, "clone " + name + " " + target)); });
  auto* de = app.add_subcommand("delete", "Delete a volume or snapshot and reclaim its space");
  de->add_option("DIR", dir, "Store directory")->required();
  de->add_option("NAME", name, "VOL or VOL@SNAP")->required();
  de->callback([run] { run(RunCommand(dir, "delete " + name)); });
  auto* rs = app.add_subcommand("resize", "Grow a volume");
  rs->add_option("DIR", dir, "Store directory")->required();
  rs->add_option("VOL", name, "Volume")->required();
  rs->add_option("SIZE", size_text, "New size (K/M/G/T)")->required();
  rs->callback([run] { run(RunCommand(dir, "resize " + name + " " + size_text)); });
  auto* stc = app.add_subcommand("status", "Show volumes, sizes, space used and layers");
  stc->add_option("DIR", dir, "Store directory")->required();
  stc->add_option("VOL", name, "One volume or snapshot");
  stc->callback([run] { run(RunCommand(dir, name.empty() ? "status" : "status " + name)); });
  static bool repair = false, quick = false;
  auto* ck = app.add_subcommand("check", "Verify a store: manifests, layers, journals, references");
  ck->add_option("DIR", dir, "Store directory")->required();
  ck->add_flag("--repair", repair,
               "Fix what is safe to fix: remove unreferenced and temporary files, cut torn "
               "journal tails (needs the store unmounted)");
  ck->add_flag("--quick", quick, "Skip reading every byte of every layer");
  ck->callback([run] {
    CheckOptions co;
    co.repair = repair;
    co.verify_data = !quick;
    auto rep = CheckStore(env(), dir, co);
    if (!rep.ok()) return run(rep.status());
    for (const auto& f : rep->findings)
      std::printf("%s %s: %s\n", f.repaired ? "repaired" : "PROBLEM ", f.where.c_str(),
                  f.what.c_str());
    std::printf("%zu manifests, %zu layers, %zu uppers checked: %s\n", rep->manifests,
                rep->layers, rep->uppers, rep->clean() ? "clean" : "problems found");
    run(rep->clean() ? Status::OK() : Status::Corruption("store has problems"));
  });

  static std::string action, rate_text;
  static bool wait = false;
  auto* hy = app.add_subcommand(
      "hydrate", "Copy what a volume reads from its lower layers into its own upper, "
                 "so it needs them no more (in the background when mounted)");
  hy->add_option("DIR", dir, "Store directory")->required();
  hy->add_option("VOL", name, "Volume (omit with --all)");
  hy->add_option("ACTION", action, "start (default), pause, resume or cancel");
  hy->add_option("--rate", rate_text, "Limit in bytes per second (K/M/G; 0: unlimited)");
  hy->add_flag("--all", all, "Every volume with lower layers");
  hy->add_flag("--wait", wait, "On a mounted store, wait until done with a progress bar");
  hy->callback([run] {
    if (all == !name.empty()) return run(Status::InvalidArgument("give VOL or --all"));
    if (!action.empty() && action != "start" && action != "pause" && action != "resume" &&
        action != "cancel") {
      return run(Status::InvalidArgument("ACTION must be start, pause, resume or cancel, not '" +
                                         action + "'"));
    }
    std::optional<uint64_t> rate;
    if (!rate_text.empty()) {
      auto r = ParseSize(rate_text);
      if (!r.ok()) return run(r.status());
      rate = r.value();
    }
    const bool starts = action.empty() || action == "start" || action == "resume";
    const std::string mnt = FindMount(dir);
    if (!mnt.empty()) {
      std::string line = "hydrate " + (all ? std::string("--all") : name);
      // Without an action this starts or resumes, also with --rate (on its
      // own, `hydrate VOL rate N` only changes the limit of a paused one).
      if (!all || !action.empty()) line += " " + (action.empty() ? std::string("start") : action);
      if (rate) line += " rate " + std::to_string(*rate);
      Reply reply;
      auto doc = ControlExchange(mnt, line, &reply);
      if (!doc.ok()) return run(doc.status());
      PrintOutput(reply.output);
      if (!wait || !starts) return run(Status::OK());
      std::vector<std::string> vols;
      if (all) {
        // "hydrating N volume(s) A B ...": wait for each one named.
        std::istringstream words(reply.output);
        std::string w;
        for (int i = 0; words >> w; ++i) {
          if (i >= 3) vols.push_back(w);
        }
      } else {
        vols.push_back(name);
      }
      for (const auto& v : vols) {
        Status w = WaitHydrated(v, [&] { return MountedProgress(mnt, v); });
        if (!w.ok()) return run(w);
      }
      return run(Status::OK());
    }
    // Not mounted: do the work here, unthrottled unless asked (nothing
    // else uses the disk through this store), and wait for it.
    std::unique_ptr<Store> st;
    Status s = OpenDirect(dir, &st);
    if (!s.ok()) return run(s);
    if (all) {
      auto started = st->HydrateAll(rate.value_or(0));
      if (!started.ok()) return run(started.status());
      for (const auto& v : started.value()) {
        Store* store = st.get();
        const std::string vol = v;
        Status w = WaitHydrated(vol, [&]() -> Result<Progress> {
          OVBD_ASSIGN_OR_RETURN(VolumeInfo info, store->Lookup(vol));
          return LocalProgress(info.hydrate);
        });
        if (!w.ok()) return run(w);
      }
      return run(Status::OK());
    }
    HydrateAction a = action == "pause"    ? HydrateAction::kPause
                      : action == "resume" ? HydrateAction::kResume
                      : action == "cancel" ? HydrateAction::kCancel
                                           : HydrateAction::kStart;
    auto state = st->Hydrate(name, a, starts ? std::optional<uint64_t>(rate.value_or(0)) : rate);
    if (!state.ok()) return run(state.status());
    if (!starts) {
      std::printf("hydrate %s %s\n", name.c_str(), HydrateStateName(state.value()));
      return run(Status::OK());
    }
    Store* store = st.get();
    run(WaitHydrated(name, [&]() -> Result<Progress> {
      OVBD_ASSIGN_OR_RETURN(VolumeInfo info, store->Lookup(name));
      return LocalProgress(info.hydrate);
    }));
  });

  auto* gc = app.add_subcommand("gc", "Remove layer files no volume or snapshot uses");
  gc->add_option("DIR", dir, "Store directory")->required();
  gc->callback([run] { run(RunCommand(dir, "gc")); });
}

}  // namespace ovbd::tool
