#include "store_client.h"

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
#include <vector>

#include <nlohmann/json.hpp>

#include "ovbd/control/controller.h"
#include "ovbd/control/reply.h"
#include "ovbd/control/size.h"
#include "ovbd/store/check.h"
#include "ovbd/store/store.h"

namespace ovbd::tool {
namespace {

Env* env() { return Env::Default(); }

// Unescapes the octal escapes of /proc/self/mountinfo fields.
std::string Unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size()) {
      out.push_back(static_cast<char>(std::strtol(s.substr(i + 1, 3).c_str(), nullptr, 8)));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

// The mount point of an ovbdfs mount of `store`, or "" if none.
std::string FindMount(const std::string& store) {
  char* real = realpath(store.c_str(), nullptr);
  if (!real) return "";
  std::string want = real;
  free(real);
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // ... mountpoint ... - fstype source superopts
    std::istringstream ls(line);
    std::vector<std::string> f;
    std::string w;
    while (ls >> w) f.push_back(w);
    size_t dash = 0;
    while (dash < f.size() && f[dash] != "-") ++dash;
    if (dash + 2 >= f.size() || f.size() < 5) continue;
    if (f[dash + 1] != "fuse.ovbdfs") continue;
    if (Unescape(f[dash + 2]) == want) return Unescape(f[4]);
  }
  return "";
}

// Sends one command through MNT/.control and prints its output. The reply
// is read in its JSON form (include/ovbd/control/reply.h): a `json` line
// written first switches this handle to it.
Status ViaControl(const std::string& mnt, const std::string& line) {
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
  const Reply& reply = report->replies.back();
  if (!reply.status.ok()) return reply.status;
  if (w != static_cast<ssize_t>(cmd.size())) {
    return Status::IOError(path + ": write failed: " + std::strerror(w < 0 ? werr : EIO),
                           w < 0 ? werr : EIO);
  }
  std::cout << reply.output << (reply.output.empty() || reply.output.back() != '\n' ? "\n" : "");
  return Status::OK();
}

// Runs `line` on the store: through .control when mounted, else directly.
// A mounted store is always reached through the mount, where the daemon
// checks the caller per command (the store's own files may not even be
// readable by the caller).
Status RunCommand(const std::string& dir, const std::string& line) {
  const std::string mnt = FindMount(dir);
  if (!mnt.empty()) return ViaControl(mnt, line);
  auto store = Store::Open(env(), dir);
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
  std::cout << out << (out.empty() || out.back() != '\n' ? "\n" : "");
  return Status::OK();
}

Status OpenDirect(const std::string& dir, std::unique_ptr<Store>* out) {
  auto store = Store::Open(env(), dir);
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
  vc->add_option("--from", from, "Lower layer files, bottom first");
  vc->callback([run] {
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

  auto* gc = app.add_subcommand("gc", "Remove layer files no volume or snapshot uses");
  gc->add_option("DIR", dir, "Store directory")->required();
  gc->callback([run] { run(RunCommand(dir, "gc")); });
}

}  // namespace ovbd::tool
