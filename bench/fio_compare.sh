#!/usr/bin/env bash
# fio_compare.sh: the same fio jobs on three targets, side by side.
#
#   raw     the raw 1 GiB image itself (a private copy, so writes hurt nothing)
#   qsd     qemu-storage-daemon's FUSE export of a qcow2 overlay over that image
#   ovbdfs  an ovbdfs volume cloned from a snapshot of the image imported as a layer
#
# Every run gets a fresh target: a new qcow2 overlay (and a new
# qemu-storage-daemon) for qsd, a new clone (empty upper) for ovbdfs. Each job
# runs REPEAT times per engine, engines interleaved (their order rotates per
# repetition) so that load changes on a shared machine hit all of them; the
# table shows medians. Progress and every sample go to stderr; stdout gets the
# machine description and ONE markdown table.
#
# Environment (defaults in brackets):
#   BUILD_DIR   [<repo>/build-bench]   where ovbdfs and ovbd were built
#   OVBDFS, OVBD                       binaries (default: from BUILD_DIR)
#   OVBDFS_OPTS []                     extra -o options for ovbdfs (e.g. threads=4)
#   OVBDFS2, OVBDFS2_OPTS              a second ovbdfs build/options to compare
#                                      side by side: add "ovbdfs2" to ENGINES (own store;
#                                      the table gains ovbdfs2 columns)
#   RUNTIME     [10]                   seconds per run (plus RAMP)
#   RAMP        [1]                    fio ramp_time seconds (not measured)
#   REPEAT      [3]                    runs per job and engine
#   SIZE_MB     [1024]                 image size
#   ENGINES     [raw qsd ovbdfs]       any of raw qsd ovbdfs ovbdfs2
#   JOBS        [rr4k_qd1 rr4k_qd16 rw4k_qd16 sr1m_qd16 sw1m_qd16]
#   DROP_CACHES [0]                    1: drop the page cache before every run (root only)
#   WORK_PARENT [/var/tmp]             where the temp directory goes (needs ~5x SIZE_MB)
#   KEEP_JSON   []                     directory to copy every fio JSON result into
#
# Needs: fio, jq, qemu-img, qemu-storage-daemon, fusermount3, mountpoint, and
# a usable /dev/fuse (root, or mode 0666).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build-bench}
OVBDFS=${OVBDFS:-$BUILD_DIR/src/fuse/ovbdfs}
OVBD=${OVBD:-$BUILD_DIR/src/tool/ovbd}
OVBDFS_OPTS=${OVBDFS_OPTS:-}
OVBDFS2=${OVBDFS2:-$OVBDFS}
OVBDFS2_OPTS=${OVBDFS2_OPTS:-}
RUNTIME=${RUNTIME:-10}
RAMP=${RAMP:-1}
REPEAT=${REPEAT:-3}
SIZE_MB=${SIZE_MB:-1024}
ENGINES=${ENGINES:-"raw qsd ovbdfs"}
JOBS=${JOBS:-"rr4k_qd1 rr4k_qd16 rw4k_qd16 sr1m_qd16 sw1m_qd16"}
DROP_CACHES=${DROP_CACHES:-0}
WORK_PARENT=${WORK_PARENT:-/var/tmp}
KEEP_JSON=${KEEP_JSON:-}

log() { printf '%s\n' "$*" >&2; }
die() { log "fio_compare: $*"; exit 1; }

for tool in fio jq qemu-img qemu-storage-daemon fusermount3 mountpoint; do
  command -v "$tool" >/dev/null || die "$tool not found"
done
[[ -x $OVBDFS && -x $OVBD ]] || die "build ovbdfs first (missing $OVBDFS or $OVBD)"

# --- job table ---------------------------------------------------------------
# job_spec JOB -> "label|metric|fio args"; metric is read/write . iops/bw
job_spec() {
  case $1 in
    rr4k_qd1) echo "4k randread psync QD1 (IOPS)|read.iops|--rw=randread --bs=4k --ioengine=psync --iodepth=1 --numjobs=1" ;;
    rr4k_qd16) echo "4k randread libaio QD16 x2 jobs (IOPS)|read.iops|--rw=randread --bs=4k --ioengine=libaio --iodepth=16 --numjobs=2" ;;
    rw4k_qd16) echo "4k randwrite libaio QD16 x2 jobs (IOPS)|write.iops|--rw=randwrite --bs=4k --ioengine=libaio --iodepth=16 --numjobs=2" ;;
    sr1m_qd16) echo "1M seq read libaio QD16 (MB/s)|read.bw|--rw=read --bs=1M --ioengine=libaio --iodepth=16 --numjobs=1" ;;
    sw1m_qd16) echo "1M seq write libaio QD16 (MB/s)|write.bw|--rw=write --bs=1M --ioengine=libaio --iodepth=16 --numjobs=1" ;;
    *) die "unknown job $1" ;;
  esac
}
for j in $JOBS; do job_spec "$j" >/dev/null; done

# --- workspace and cleanup ---------------------------------------------------
WORK=$(mktemp -d "$WORK_PARENT/ovbd-fio.XXXXXX")
QSD_FILE=$WORK/qsd.img
QSD_PID=""
# Per ovbdfs engine (ovbdfs, ovbdfs2): its own store, mount point and daemon.
declare -A DAEMON_PID=()
store_of() { echo "$WORK/store-$1"; }
mnt_of() { echo "$WORK/mnt-$1"; }

# Polls a condition (a command) every 50 ms until it holds; fails after $1 s.
wait_for() {
  local secs=$1; shift
  local deadline=$((SECONDS + secs))
  until "$@"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}
alive() { kill -0 "$1" 2>/dev/null; }
not_mounted() { ! mountpoint -q "$1"; }

stop_qsd() {
  if [[ -n $QSD_PID ]]; then
    kill "$QSD_PID" 2>/dev/null || true
    wait "$QSD_PID" 2>/dev/null || true
    QSD_PID=""
  fi
  if mountpoint -q "$QSD_FILE" 2>/dev/null; then fusermount3 -u "$QSD_FILE" 2>/dev/null || umount -l "$QSD_FILE" || true; fi
}

stop_ovbdfs() {
  local engine=$1 mnt pid
  mnt=$(mnt_of "$engine")
  pid=${DAEMON_PID[$engine]:-}
  if mountpoint -q "$mnt" 2>/dev/null; then
    fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
  fi
  if [[ -n $pid ]]; then
    # The daemon exits by itself once unmounted (after its final flush).
    wait_for 30 not_alive "$pid" || kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    DAEMON_PID[$engine]=""
  fi
}
not_alive() { ! alive "$1"; }

start_ovbdfs() {
  local engine=$1 bin=$2 opts=$3 store mnt
  store=$(store_of "$engine")
  mnt=$(mnt_of "$engine")
  mkdir -p "$mnt"
  "$OVBD" store init "$store" >/dev/null
  "$OVBD" volume import "$store" base "$BASE" >/dev/null
  "$OVBD" snapshot "$store" base golden >/dev/null
  local args=("$store" "$mnt" -f)
  [[ -n $opts ]] && args+=(-o "$opts")
  "$bin" "${args[@]}" >"$WORK/$engine.log" 2>&1 &
  DAEMON_PID[$engine]=$!
  local pid=$!
  mounted() { alive "$pid" || die "$engine exited: $(cat "$WORK/$engine.log")"; mountpoint -q "$mnt"; }
  wait_for 20 mounted || die "$engine did not mount"
}

cleanup() {
  local rc=$?
  set +e
  stop_qsd
  for e in "${!DAEMON_PID[@]}"; do stop_ovbdfs "$e"; done
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- machine description -----------------------------------------------------
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
CPU=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | awk 'NR == 1')
PIPE_MAX=$(cat /proc/sys/fs/pipe-max-size)
CACHE_NOTE="page cache not dropped (layer, overlay and backing files stay cached; the raw engine uses O_DIRECT on the disk)"
if [[ $DROP_CACHES == 1 ]]; then
  if [[ $(id -u) == 0 ]]; then
    CACHE_NOTE="running as root: page cache dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every run"
  else
    CACHE_NOTE="DROP_CACHES=1 ignored: not root, page cache not dropped"
    DROP_CACHES=0
  fi
fi

# --- the image, the store, the raw copy --------------------------------------
log "preparing ${SIZE_MB} MiB of random data in $WORK"
BASE=$WORK/base.raw
RAW=$WORK/raw.img
dd if=/dev/urandom of="$BASE" bs=1M count="$SIZE_MB" status=none
cp "$BASE" "$RAW"
touch "$QSD_FILE"
[[ " $ENGINES " == *" ovbdfs "* ]] && start_ovbdfs ovbdfs "$OVBDFS" "$OVBDFS_OPTS"
[[ " $ENGINES " == *" ovbdfs2 "* ]] && start_ovbdfs ovbdfs2 "$OVBDFS2" "$OVBDFS2_OPTS"
sync

# --- one run -------------------------------------------------------------------
# prepare ENGINE RUN_ID: sets TARGET, the file to run fio on (not in a
# subshell: it starts qemu-storage-daemon and records its pid)
prepare() {
  local engine=$1 id=$2
  case $engine in
    raw) TARGET=$RAW ;;
    qsd)
      rm -f "$WORK/overlay.qcow2"
      qemu-img create -q -f qcow2 -b "$BASE" -F raw "$WORK/overlay.qcow2"
      qemu-storage-daemon \
        --blockdev driver=file,node-name=f,filename="$WORK/overlay.qcow2" \
        --blockdev driver=qcow2,node-name=q,file=f \
        --export type=fuse,id=e,node-name=q,mountpoint="$QSD_FILE",writable=on \
        >"$WORK/qsd.log" 2>&1 &
      QSD_PID=$!
      mounted_qsd() { alive "$QSD_PID" || die "qemu-storage-daemon exited: $(cat "$WORK/qsd.log")"; mountpoint -q "$QSD_FILE"; }
      wait_for 20 mounted_qsd || die "qemu-storage-daemon did not export"
      TARGET=$QSD_FILE
      ;;
    ovbdfs | ovbdfs2)
      "$OVBD" clone "$(store_of "$engine")" base@golden "$id" >/dev/null
      wait_for 10 test -f "$(mnt_of "$engine")/$id" || die "clone $id did not appear"
      TARGET=$(mnt_of "$engine")/$id
      ;;
  esac
}

finish() {
  local engine=$1 id=$2
  case $engine in
    qsd) stop_qsd; rm -f "$WORK/overlay.qcow2" ;;
    ovbdfs | ovbdfs2)
      # The kernel sends RELEASE after close() returns and the daemon flushes
      # the upper then; retry until the volume is no longer busy.
      wait_for 60 delete_volume "$engine" "$id" ||
        die "could not delete $id: $("$OVBD" delete "$(store_of "$engine")" "$id" 2>&1)" ;;
  esac
}
delete_volume() { "$OVBD" delete "$(store_of "$1")" "$2" >/dev/null 2>&1; }

declare -A SAMPLES  # "job engine" -> space-separated values

run_one() {
  local job=$1 engine=$2 rep=$3
  local spec label metric fioargs out value id
  spec=$(job_spec "$job")
  IFS='|' read -r label metric fioargs <<<"$spec"
  id="run-$job-$rep"
  sync
  if [[ $DROP_CACHES == 1 ]]; then echo 3 >/proc/sys/vm/drop_caches; fi
  prepare "$engine" "$id"
  out=$WORK/$job.$engine.$rep.json
  # shellcheck disable=SC2086  # fioargs is a list of options
  fio --name="$job" --filename="$TARGET" --size="${SIZE_MB}M" --direct=1 --time_based \
      --runtime="$RUNTIME" --ramp_time="$RAMP" --group_reporting --output-format=json \
      $fioargs >"$out" || { finish "$engine" "$id"; die "fio failed on $engine ($job)"; }
  finish "$engine" "$id"
  case $metric in
    *.iops) value=$(jq ".jobs[0].${metric}" "$out") ;;
    *.bw) value=$(jq ".jobs[0].${metric%.bw}.bw_bytes / 1000000" "$out") ;;
  esac
  [[ -n $KEEP_JSON ]] && mkdir -p "$KEEP_JSON" && cp "$out" "$KEEP_JSON/"
  value=$(printf '%.0f' "$value")
  SAMPLES["$job $engine"]+="$value "
  log "$(printf '%-10s %-7s rep %d: %s' "$job" "$engine" "$rep" "$value")"
}

read -r -a ENGINE_LIST <<<"$ENGINES"
for ((rep = 1; rep <= REPEAT; rep++)); do
  for job in $JOBS; do
    n=${#ENGINE_LIST[@]}
    for ((k = 0; k < n; k++)); do
      run_one "$job" "${ENGINE_LIST[$(((k + rep - 1) % n))]}" "$rep"
    done
  done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ----------------------------------------------------------------------
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {if (NR == 0) print ""; else if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2] + v[NR/2+1]) / 2}'; }
fmt() { [[ -z $1 ]] && { echo "–"; return; }; printf "%.0f" "$1"; }
ratio() { [[ -z $1 || -z $2 || $2 == 0 ]] && { echo "–"; return; }; awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }

echo "fio_compare: $(date -u '+%Y-%m-%d %H:%M UTC'), kernel $(uname -r), CPU: $CPU x $(nproc)"
echo "fs.pipe-max-size: $PIPE_MAX; fio $(fio --version | sed 's/^fio-//'); $(qemu-storage-daemon --version | awk 'NR == 1'); libfuse $(pkg-config --modversion fuse3 2>/dev/null || echo '?')"
echo "image ${SIZE_MB} MiB random data; direct=1, ${RUNTIME}s + ${RAMP}s ramp per run, median of $REPEAT runs; load average $LOAD_START at start, $LOAD_END at end"
echo "$CACHE_NOTE${OVBDFS_OPTS:+; ovbdfs -o $OVBDFS_OPTS}"
TWO=""
if [[ " $ENGINES " == *" ovbdfs2 "* ]]; then
  TWO=1
  echo "ovbdfs2: $OVBDFS2${OVBDFS2_OPTS:+ -o $OVBDFS2_OPTS}"
fi
echo
if [[ -n $TWO ]]; then
  echo "| job | raw | qsd | ovbdfs | ovbdfs/qsd | ovbdfs/raw | ovbdfs2 | ovbdfs2/qsd | ovbdfs2/ovbdfs |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
else
  echo "| job | raw | qsd | ovbdfs | ovbdfs/qsd | ovbdfs/raw |"
  echo "|---|---:|---:|---:|---:|---:|"
fi
for job in $JOBS; do
  IFS='|' read -r label _ _ <<<"$(job_spec "$job")"
  r=$(median <<<"${SAMPLES["$job raw"]:-}")
  q=$(median <<<"${SAMPLES["$job qsd"]:-}")
  o=$(median <<<"${SAMPLES["$job ovbdfs"]:-}")
  line="| $label | $(fmt "$r") | $(fmt "$q") | $(fmt "$o") | $(ratio "$o" "$q") | $(ratio "$o" "$r") |"
  if [[ -n $TWO ]]; then
    t=$(median <<<"${SAMPLES["$job ovbdfs2"]:-}")
    line+=" $(fmt "$t") | $(ratio "$t" "$q") | $(ratio "$t" "$o") |"
  fi
  echo "$line"
done
