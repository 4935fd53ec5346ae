# bench/lib.sh: helpers shared by the benchmark scripts of bench/. Source it
# with `. "$(dirname "$0")/lib.sh"` right after `set -euo pipefail`.
#
# It sets:
#   ROOT              the repository root (absolute)
#   BENCH_NAME        the script's name without .sh, the prefix of die()
#   POLL_S            seconds between two checks of wait_for (a script may
#                     change it after sourcing)
#
# It offers:
#   from_root PATH            PATH made absolute, a relative one taken from ROOT
#                             (so a script works from any current directory)
#   use_build_dir DIR         sets BUILD (DIR via from_root), OVBD and OVBDFS
#   log MSG... / die MSG...   a line on stderr / the same prefixed with
#                             BENCH_NAME, then exit 1
#   require_tools TOOL...     dies naming the first TOOL not on PATH
#   wait_for SECS CMD...      polls CMD every POLL_S s until it succeeds;
#                             fails after SECS seconds
#   alive PID / not_alive PID whether process PID exists
#   wait_mounted SECS PID MNT LOGFILE NAME [VERB]
#                             waits until daemon PID has mounted MNT; dies if
#                             the daemon exits first (showing LOGFILE) or
#                             after SECS ("NAME did not VERB", VERB: mount)
#   unmount_fuse MNT          unmounts MNT if it is a mount point (lazily if
#                             fusermount3 cannot); never fails
#   stop_fuse MNT PID SECS    unmount_fuse, then gives daemon PID (may be
#                             empty) SECS seconds to exit by itself before a
#                             SIGTERM, and reaps it; never fails
#   stop_pid PID              SIGTERM to PID (may be empty), then reaps it;
#                             never fails
#   stop_qsd_export FILE PID  stop_pid of qemu-storage-daemon PID, which
#                             removes its FUSE export, then unmount_fuse FILE
#                             in case it did not; never fails
#   drop_caches               sync, then drops the page cache (needs root)
#   now / elapsed T0 T1       a timestamp in seconds / the seconds from T0 to
#                             T1, to the millisecond
#   make_mixed_image FILE MIB SEED RANDOM
#                             a MIB MiB raw image, written and fsynced: per
#                             MiB random bytes (a share RANDOM, e.g. 0.55),
#                             else compressible text up to 90%, else a hole
#                             (never written); the same for the same SEED
#   fio_value JSON METRIC     a figure of job 0 of a fio JSON result, rounded:
#                             METRIC is read.iops / write.iops (IOPS) or
#                             read.bw / write.bw (MB/s, 10^6 bytes)
#   median                    the median of the numbers on stdin (blank- or
#                             line-separated); an empty line for none
#   median_ratio ARRAY ROUNDS A B
#                             the median over rounds 1..ROUNDS of the ratios
#                             ARRAY["A round"] / ARRAY["B round"] (ARRAY: the
#                             name of an associative array; rounds lacking
#                             either, or with B 0, left out), to two
#                             decimals; "–" for none
#   cpu_model                 the CPU model name from lscpu
#   load_average              the 1, 5 and 15 minute load averages
#   report_head TITLE COMMAND LOAD_START LOAD_END
#                             the start of a Markdown result section: the
#                             heading "## TITLE", COMMAND as a sh block, and a
#                             line with the date, the machine and the load
#                             averages at the start and end of the runs

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH_NAME=$(basename "$0" .sh)
POLL_S=0.05

from_root() {
  case $1 in
    /*) echo "$1" ;;
    *) echo "$ROOT/$1" ;;
  esac
}

use_build_dir() {
  BUILD=$(from_root "$1")
  OVBD=$BUILD/src/tool/ovbd
  OVBDFS=$BUILD/src/fuse/ovbdfs
}

log() { printf '%s\n' "$*" >&2; }
die() { log "$BENCH_NAME: $*"; exit 1; }

require_tools() {
  local tool
  for tool; do
    command -v "$tool" >/dev/null || die "$tool not found"
  done
}

wait_for() {
  local secs=$1
  shift
  local deadline=$((SECONDS + secs))
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep "$POLL_S"
  done
}
alive() { kill -0 "$1" 2>/dev/null; }
not_alive() { ! alive "$1"; }

# The condition of wait_mounted: PID MNT LOGFILE NAME.
daemon_mounted() {
  alive "$1" || die "$4 exited: $(cat "$3")"
  mountpoint -q "$2"
}
wait_mounted() {
  local secs=$1 pid=$2 mnt=$3 logfile=$4 name=$5 verb=${6:-mount}
  wait_for "$secs" daemon_mounted "$pid" "$mnt" "$logfile" "$name" || die "$name did not $verb"
}

unmount_fuse() {
  if mountpoint -q "$1" 2>/dev/null; then
    fusermount3 -u "$1" 2>/dev/null || umount -l "$1" 2>/dev/null || true
  fi
}

stop_fuse() {
  local mnt=$1 pid=$2 secs=$3
  unmount_fuse "$mnt"
  if [[ -n $pid ]]; then
    # Unmounting makes a daemon finish its work (ovbdfs commits its uppers)
    # and exit by itself; only one that hangs gets a signal.
    wait_for "$secs" not_alive "$pid" || kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
}

stop_pid() {
  if [[ -n $1 ]]; then
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
  fi
}

stop_qsd_export() {
  stop_pid "$2"
  unmount_fuse "$1"
}

drop_caches() {
  sync
  echo 3 >/proc/sys/vm/drop_caches
}

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

make_mixed_image() {
  python3 - "$@" <<'EOF'
import os, random, sys
path, mib, seed, random_share = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
r = random.Random(seed)
MiB = 1 << 20
# Compressible MiBs: lines of words from a small vocabulary (lz4 about 2:1),
# made of a few pieces so that no two MiBs are the same.
vocab = [bytes(r.choice(b"etaoinshrdlucmfwyp") for _ in range(r.randint(2, 10))) for _ in range(500)]
pieces = [b" ".join(r.choice(vocab) for _ in range(20000))[:64 << 10] for _ in range(32)]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.ftruncate(fd, mib * MiB)
for i in range(mib):
    k = r.random()
    if k < random_share:
        data = r.randbytes(MiB)
    elif k < 0.90:
        data = b"".join(b"%08x" % (i * 16 + j) + r.choice(pieces)[8:] for j in range(16))
    else:
        continue  # never written: a hole
    os.pwrite(fd, data, i * MiB)
os.fsync(fd)
os.close(fd)
EOF
}

fio_value() {
  local json=$1 metric=$2 value
  case $metric in
    *.iops) value=$(jq ".jobs[0].${metric}" "$json") ;;
    *.bw) value=$(jq ".jobs[0].${metric%.bw}.bw_bytes / 1000000" "$json") ;;
    *) die "unknown fio metric $metric" ;;
  esac
  printf '%.0f' "$value"
}

median() {
  tr ' ' '\n' | { grep -v '^$' || true; } | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

median_ratio() {
  local -n results=$1
  local rounds=$2 r vals="" a b
  for ((r = 1; r <= rounds; r++)); do
    a=${results["$3 $r"]:-}
    b=${results["$4 $r"]:-}
    [[ -n $a && -n $b ]] && vals+="$(awk -v a="$a" -v b="$b" 'BEGIN { if (b > 0) print a / b }') "
  done
  [[ -z ${vals// /} ]] && { echo "–"; return; }
  printf "%.2f" "$(median <<<"$vals")"
}

cpu_model() { lscpu | sed -n 's/^Model name:[[:space:]]*//p' | awk 'NR == 1'; }
load_average() { cut -d' ' -f1-3 /proc/loadavg; }

report_head() {
  echo "## $1"
  echo
  echo '```sh'
  echo "$2"
  echo '```'
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'); $(nproc) CPUs ($(cpu_model)), kernel $(uname -r); load average $3 at the start, $4 at the end (other work on the machine)."
}
