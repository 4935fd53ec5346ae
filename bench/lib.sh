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
#   stop_qsd_export FILE PID  SIGTERM to qemu-storage-daemon PID (may be empty),
#                             which removes its FUSE export, reaps it, then
#                             unmount_fuse FILE in case it did not; never fails
#   fio_value JSON METRIC     a figure of job 0 of a fio JSON result, rounded:
#                             METRIC is read.iops / write.iops (IOPS) or
#                             read.bw / write.bw (MB/s, 10^6 bytes)
#   median                    the median of the numbers on stdin (blank- or
#                             line-separated); an empty line for none
#   cpu_model                 the CPU model name from lscpu
#   load_average              the 1, 5 and 15 minute load averages

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

stop_qsd_export() {
  local file=$1 pid=$2
  if [[ -n $pid ]]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  unmount_fuse "$file"
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

cpu_model() { lscpu | sed -n 's/^Model name:[[:space:]]*//p' | awk 'NR == 1'; }
load_average() { cut -d' ' -f1-3 /proc/loadavg; }
