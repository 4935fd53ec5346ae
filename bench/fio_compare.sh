#!/usr/bin/env bash
# fio_compare.sh: the same fio jobs on several targets, side by side.
#
#   raw-direct  a plain 1 GiB file, O_DIRECT (direct=1): the virtual disk itself
#   raw-cached  the same file through the page cache (direct=0), warm: what
#               the page cache gives without FUSE
#   limit       bench/fuse_limit serving one plain file with ovbdfs's FUSE
#               session settings (splice replies, pwrite): what FUSE itself
#               costs on this machine
#   limit-alloc the same over a file preallocated whole (fallocate: unwritten
#               extents, no block allocation left for the writes to do), for
#               write jobs only: the limit for a thin upper that preallocates
#   qsd         qemu-storage-daemon's FUSE export of a qcow2 overlay over the image
#   ovbdfs      an ovbdfs volume cloned from a snapshot of the image imported as a layer
#
# The three FUSE engines are driven with direct=1 (O_DIRECT on the FUSE file,
# so every I/O is a request to the daemon) while the daemons read their own
# backing files through the page cache; raw-cached is therefore the fair
# "no FUSE" figure for them and raw-direct only says what the disk does.
# Before every run the backing files are read once (the image, the qcow2
# overlay, the store's layer and upper files), never the FUSE file, so every
# engine starts warm. ovbdfs/limit is what the layers and copy-on-write cost
# over FUSE itself; ovbdfs/qsd is the comparison with the alternative.
#
# Write jobs run in two variants:
#   fresh      a new target per run, so every write is a first write: a new
#              clone (empty upper) for ovbdfs, a new qcow2 overlay for qsd,
#              a new sparse file for raw-* and limit (the same allocation
#              work as a thin upper)
#   overwrite  a new target (as for fresh) written once by the same job (not
#              time-based: every block at least once), then the measured run
#              over it: rewrites in place of allocated blocks. (The target is
#              allocated by its own first pass, not copied and read: ext4 caches
#              a file read with large reads in large folios, and a 4 KiB write
#              into one walks all of its blocks, which made a read-cached
#              allocated file 2-3x slower to overwrite than one written in 4 KiB
#              pieces; a clone's upper is in the latter state.)
# Read jobs read the image: the raw file, the limit server over it, the
# overlay over it, a fresh clone over the imported layer.
#
# Each (job, variant) runs REPEAT times per engine, engines interleaved (their
# order rotates per repetition) so that load changes on a shared machine hit
# all of them; the table shows medians, its ratios are medians of the ratios
# within each repetition, and a second table shows the spread. Progress
# and every sample go to stderr; stdout gets the machine description and the
# tables.
#
# Environment (defaults in brackets):
#   BUILD_DIR   [<repo>/build-bench]   where ovbdfs, ovbd and bench/fuse_limit were built
#   OVBDFS, OVBD, FUSE_LIMIT           binaries (default: from BUILD_DIR)
#   OVBDFS_OPTS []                     extra -o options for ovbdfs (e.g. threads=4)
#   LIMIT_OPTS  []                     extra -o options for fuse_limit (e.g. splice_move)
#   OVBDFS2, OVBDFS2_OPTS              a second ovbdfs build/options to compare
#                                      side by side: add "ovbdfs2" to ENGINES (own store;
#                                      the table gains ovbdfs2 columns)
#   RUNTIME     [10]                   seconds per run (plus RAMP)
#   RAMP        [1]                    fio ramp_time seconds (not measured)
#   REPEAT      [3]                    runs per job, variant and engine
#   SIZE_MB     [1024]                 image size
#   ENGINES     [raw-direct raw-cached limit limit-alloc qsd ovbdfs]   (and ovbdfs2)
#   JOBS        [rr4k_qd1 rr4k_qd16 rw4k_qd16 sr1m_qd16 sw1m_qd16]
#   WRITE_MODES [fresh overwrite]      variants of the write jobs
#   DROP_CACHES [0]                    1: drop the page cache before every run
#                                      instead of warming (root only)
#   WORK_PARENT [/var/tmp]             where the temp directory goes (needs ~6x SIZE_MB)
#   KEEP_JSON   []                     directory to copy every fio JSON result into
#
# Needs: fio, jq, qemu-img, qemu-storage-daemon, fusermount3, mountpoint, and
# a usable /dev/fuse (root, or mode 0666).
set -euo pipefail
. "$(dirname "$0")/lib.sh"

BUILD_DIR=$(from_root "${BUILD_DIR:-$ROOT/build-bench}")
OVBDFS=${OVBDFS:-$BUILD_DIR/src/fuse/ovbdfs}
OVBD=${OVBD:-$BUILD_DIR/src/tool/ovbd}
FUSE_LIMIT=${FUSE_LIMIT:-$BUILD_DIR/bench/fuse_limit}
OVBDFS_OPTS=${OVBDFS_OPTS:-}
LIMIT_OPTS=${LIMIT_OPTS:-}
OVBDFS2=${OVBDFS2:-$OVBDFS}
OVBDFS2_OPTS=${OVBDFS2_OPTS:-}
RUNTIME=${RUNTIME:-10}
RAMP=${RAMP:-1}
REPEAT=${REPEAT:-3}
SIZE_MB=${SIZE_MB:-1024}
ENGINES=${ENGINES:-"raw-direct raw-cached limit limit-alloc qsd ovbdfs"}
JOBS=${JOBS:-"rr4k_qd1 rr4k_qd16 rw4k_qd16 sr1m_qd16 sw1m_qd16"}
WRITE_MODES=${WRITE_MODES:-"fresh overwrite"}
DROP_CACHES=${DROP_CACHES:-0}
WORK_PARENT=${WORK_PARENT:-/var/tmp}
KEEP_JSON=${KEEP_JSON:-}

require_tools fio jq qemu-img qemu-storage-daemon fusermount3 mountpoint
for e in $ENGINES; do
  case $e in
    raw-direct | raw-cached | qsd) ;;
    limit | limit-alloc) [[ -x $FUSE_LIMIT ]] || die "build bench/fuse_limit first (missing $FUSE_LIMIT)" ;;
    ovbdfs | ovbdfs2) [[ -x $OVBDFS && -x $OVBD ]] || die "build ovbdfs first (missing $OVBDFS or $OVBD)" ;;
    *) die "unknown engine $e" ;;
  esac
done
[[ -x $OVBD ]] || die "build ovbd first (missing $OVBD)"

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
for m in $WRITE_MODES; do [[ $m == fresh || $m == overwrite ]] || die "unknown write mode $m"; done
# modes_of JOB: the variants a job runs in ("-" for reads)
modes_of() {
  case $(job_spec "$1" | cut -d'|' -f2) in
    write.*) echo "$WRITE_MODES" ;;
    *) echo "-" ;;
  esac
}

# --- workspace and cleanup ---------------------------------------------------
WORK=$(mktemp -d "$WORK_PARENT/ovbd-fio.XXXXXX")
QSD_FILE=$WORK/qsd.img
QSD_PID=""
LIMIT_MNT=$WORK/mnt-limit
LIMIT_PID=""
# Per ovbdfs engine (ovbdfs, ovbdfs2): its own store, mount point and daemon.
declare -A DAEMON_PID=()
store_of() { echo "$WORK/store-$1"; }
mnt_of() { echo "$WORK/mnt-$1"; }

stop_qsd() {
  stop_qsd_export "$QSD_FILE" "$QSD_PID"
  QSD_PID=""
}

stop_limit() {
  stop_fuse "$LIMIT_MNT" "$LIMIT_PID" 10
  LIMIT_PID=""
}

stop_ovbdfs() {
  local engine=$1
  stop_fuse "$(mnt_of "$engine")" "${DAEMON_PID[$engine]:-}" 30
  DAEMON_PID[$engine]=""
}

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
  wait_mounted 20 "$!" "$mnt" "$WORK/$engine.log" "$engine"
}

cleanup() {
  local rc=$?
  set +e
  stop_qsd
  stop_limit
  for e in "${!DAEMON_PID[@]}"; do stop_ovbdfs "$e"; done
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- machine description -----------------------------------------------------
LOAD_START=$(load_average)
CPU=$(cpu_model)
PIPE_MAX=$(cat /proc/sys/fs/pipe-max-size)
CACHE_NOTE="backing files warmed (read once) before every run, FUSE files not; FUSE engines and raw-direct direct=1, raw-cached direct=0"
if [[ $DROP_CACHES == 1 ]]; then
  if [[ $(id -u) == 0 ]]; then
    CACHE_NOTE="running as root: page cache dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every run, nothing warmed"
  else
    CACHE_NOTE="DROP_CACHES=1 ignored: not root; backing files warmed before every run"
    DROP_CACHES=0
  fi
fi

# --- the image, the store, the raw copies -------------------------------------
log "preparing ${SIZE_MB} MiB of random data in $WORK"
BASE=$WORK/base.raw
RAW=$WORK/raw.img        # what raw-* and limit read
FRESH=$WORK/fresh.img    # a new sparse file per write run of raw-* and limit
dd if=/dev/urandom of="$BASE" bs=1M count="$SIZE_MB" status=none
cp "$BASE" "$RAW"
touch "$QSD_FILE"
mkdir -p "$LIMIT_MNT"
[[ " $ENGINES " == *" ovbdfs "* ]] && start_ovbdfs ovbdfs "$OVBDFS" "$OVBDFS_OPTS"
[[ " $ENGINES " == *" ovbdfs2 "* ]] && start_ovbdfs ovbdfs2 "$OVBDFS2" "$OVBDFS2_OPTS"
sync

# --- one run -------------------------------------------------------------------
# prepare ENGINE RUN_ID MODE: sets TARGET (the file fio runs on), DIRECT and
# WARM (the backing files to read before the run). Not in a subshell: it
# starts daemons and records their pids.
prepare() {
  local engine=$1 id=$2 mode=$3 file=$RAW
  DIRECT=1
  WARM=("$RAW")
  if [[ $mode != - ]]; then
    # Writes: a new sparse file (overwrite runs allocate it with their
    # first pass, as they do a new clone's upper).
    rm -f "$FRESH"
    truncate -s "${SIZE_MB}M" "$FRESH"
    file=$FRESH
    [[ $engine == limit-alloc ]] && fallocate -l "${SIZE_MB}M" "$FRESH"
    # Nothing to warm in it yet, and reading its holes would fill its page
    # cache with large folios of zeros, which make 4 KiB writes into them
    # several times slower (see overwrite above).
    WARM=()
  fi
  case $engine in
    raw-direct) TARGET=$file ;;
    raw-cached) TARGET=$file; DIRECT=0 ;;
    limit | limit-alloc)
      local args=("$file" "$LIMIT_MNT" -f)
      [[ -n $LIMIT_OPTS ]] && args+=(-o "$LIMIT_OPTS")
      "$FUSE_LIMIT" "${args[@]}" >"$WORK/limit.log" 2>&1 &
      LIMIT_PID=$!
      wait_mounted 20 "$LIMIT_PID" "$LIMIT_MNT" "$WORK/limit.log" fuse_limit
      TARGET=$LIMIT_MNT/disk
      ;;
    qsd)
      rm -f "$WORK/overlay.qcow2"
      qemu-img create -q -f qcow2 -b "$BASE" -F raw "$WORK/overlay.qcow2"
      qemu-storage-daemon \
        --blockdev driver=file,node-name=f,filename="$WORK/overlay.qcow2" \
        --blockdev driver=qcow2,node-name=q,file=f \
        --export type=fuse,id=e,node-name=q,mountpoint="$QSD_FILE",writable=on \
        >"$WORK/qsd.log" 2>&1 &
      QSD_PID=$!
      wait_mounted 20 "$QSD_PID" "$QSD_FILE" "$WORK/qsd.log" qemu-storage-daemon export
      TARGET=$QSD_FILE
      WARM=("$BASE" "$WORK/overlay.qcow2")
      ;;
    ovbdfs | ovbdfs2)
      "$OVBD" clone "$(store_of "$engine")" base@golden "$id" >/dev/null
      wait_for 10 test -f "$(mnt_of "$engine")/$id" || die "clone $id did not appear"
      TARGET=$(mnt_of "$engine")/$id
      # The store's read-only layers. Not the uppers: a new clone's data file
      # is all holes at its full length, and reading it would fill the page
      # cache with large folios of zeros that make 4 KiB writes into them
      # several times slower (as for the sparse files above).
      WARM=()
      local f
      for f in "$(store_of "$engine")"/layers/*; do
        [[ $f == *.data && -e ${f%.data}.jnl ]] && continue
        WARM+=("$f")
      done
      ;;
  esac
}

finish() {
  local engine=$1 id=$2
  case $engine in
    limit | limit-alloc) stop_limit ;;
    qsd) stop_qsd; rm -f "$WORK/overlay.qcow2" ;;
    ovbdfs | ovbdfs2)
      # The kernel sends RELEASE after close() returns and the daemon flushes
      # the upper then; retry until the volume is no longer busy.
      wait_for 60 delete_volume "$engine" "$id" ||
        die "could not delete $id: $("$OVBD" delete "$(store_of "$engine")" "$id" 2>&1)" ;;
  esac
  rm -f "$FRESH"
}
delete_volume() { "$OVBD" delete "$(store_of "$1")" "$2" >/dev/null 2>&1; }

warm() {
  if [[ $DROP_CACHES == 1 ]]; then
    sync
    echo 3 >/proc/sys/vm/drop_caches
  elif ((${#WARM[@]})); then
    cat "${WARM[@]}" >/dev/null
  fi
}

declare -A SAMPLES  # "job mode engine" -> space-separated values
declare -A AT       # "job mode engine rep" -> the value of that repetition

run_one() {
  local job=$1 mode=$2 engine=$3 rep=$4
  local spec label metric fioargs out value id
  spec=$(job_spec "$job")
  IFS='|' read -r label metric fioargs <<<"$spec"
  id="run-$job-$rep"
  # Over the image a preallocated file is the limit server again: skip.
  [[ $engine == limit-alloc && $mode == - ]] && return 0
  sync
  prepare "$engine" "$id" "$mode"
  out=$WORK/$job.$mode.$engine.$rep.json
  if [[ $mode == overwrite ]]; then
    # First pass, not measured: the same job, size-based (each block at
    # least once), one job.
    warm
    # shellcheck disable=SC2086  # fioargs is a list of options
    fio --name="$job-fill" --filename="$TARGET" --size="${SIZE_MB}M" --direct="$DIRECT" --invalidate=0 \
        $fioargs --numjobs=1 --output-format=json >"$out.fill" ||
      { finish "$engine" "$id"; die "fio (fill) failed on $engine ($job)"; }
    sync
    [[ $engine == raw-* || $engine == limit* ]] && WARM=("$FRESH")
  fi
  warm
  # shellcheck disable=SC2086  # fioargs is a list of options
  fio --name="$job" --filename="$TARGET" --size="${SIZE_MB}M" --direct="$DIRECT" --invalidate=0 --time_based \
      --runtime="$RUNTIME" --ramp_time="$RAMP" --group_reporting --output-format=json \
      $fioargs >"$out" || { finish "$engine" "$id"; die "fio failed on $engine ($job)"; }
  finish "$engine" "$id"
  [[ -n $KEEP_JSON ]] && mkdir -p "$KEEP_JSON" && cp "$out" "$KEEP_JSON/"
  value=$(fio_value "$out" "$metric")
  SAMPLES["$job $mode $engine"]+="$value "
  AT["$job $mode $engine $rep"]=$value
  log "$(printf '%-10s %-9s %-10s rep %d: %s' "$job" "$mode" "$engine" "$rep" "$value")"
}

read -r -a ENGINE_LIST <<<"$ENGINES"
for ((rep = 1; rep <= REPEAT; rep++)); do
  for job in $JOBS; do
    for mode in $(modes_of "$job"); do
      n=${#ENGINE_LIST[@]}
      for ((k = 0; k < n; k++)); do
        run_one "$job" "$mode" "${ENGINE_LIST[$(((k + rep - 1) % n))]}" "$rep"
      done
    done
  done
done
LOAD_END=$(load_average)

# --- report ----------------------------------------------------------------------
# spread: max/min - 1, in percent
spread() { tr ' ' '\n' | { grep -v '^$' || true; } | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {if (NR < 2 || lo == 0) print "–"; else printf "%.0f%%", (hi / lo - 1) * 100}'; }
fmt() { [[ -z $1 ]] && { echo "–"; return; }; printf "%.0f" "$1"; }
# ratio JOB MODE A B: the median over the repetitions of A/B, each taken
# within one repetition (the two engines ran minutes apart at most, so load
# changes between repetitions cancel)
ratio() {
  local r vals="" a b
  for ((r = 1; r <= REPEAT; r++)); do
    a=${AT["$1 $2 $3 $r"]:-}
    b=${AT["$1 $2 $4 $r"]:-}
    [[ -n $a && -n $b && $b != 0 ]] && vals+="$(awk -v a="$a" -v b="$b" 'BEGIN {print a / b}') "
  done
  [[ -z $vals ]] && { echo "–"; return; }
  printf "%.2f" "$(median <<<"$vals")"
}
row_label() {
  local label=$1 mode=$2
  [[ $mode == - ]] && { echo "$label"; return; }
  echo "$label, $mode"
}

echo "fio_compare: $(date -u '+%Y-%m-%d %H:%M UTC'), kernel $(uname -r), CPU: $CPU x $(nproc)"
echo "fs.pipe-max-size: $PIPE_MAX; fio $(fio --version | sed 's/^fio-//'); $(qemu-storage-daemon --version | awk 'NR == 1'); libfuse $(pkg-config --modversion fuse3 2>/dev/null || echo '?')"
echo "image ${SIZE_MB} MiB random data; ${RUNTIME}s + ${RAMP}s ramp per run, median of $REPEAT runs; load average $LOAD_START at start, $LOAD_END at end"
echo "$CACHE_NOTE${OVBDFS_OPTS:+; ovbdfs -o $OVBDFS_OPTS}${LIMIT_OPTS:+; fuse_limit -o $LIMIT_OPTS}"
TWO=""
if [[ " $ENGINES " == *" ovbdfs2 "* ]]; then
  TWO=1
  echo "ovbdfs2: $OVBDFS2${OVBDFS2_OPTS:+ -o $OVBDFS2_OPTS}"
fi
echo
header="| job | raw-direct | raw-cached | limit | limit-alloc | qsd | ovbdfs | ovbdfs/limit | ovbdfs/limit-alloc | ovbdfs/qsd | limit/raw-cached |"
sep="|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
if [[ -n $TWO ]]; then
  header+=" ovbdfs2 | ovbdfs2/limit | ovbdfs2/qsd | ovbdfs2/ovbdfs |"
  sep+="---:|---:|---:|---:|"
fi
echo "$header"
echo "$sep"
for job in $JOBS; do
  IFS='|' read -r label _ _ <<<"$(job_spec "$job")"
  for mode in $(modes_of "$job"); do
    declare -A M=()
    for e in raw-direct raw-cached limit limit-alloc qsd ovbdfs ovbdfs2; do
      M[$e]=$(median <<<"${SAMPLES["$job $mode $e"]:-}")
    done
    line="| $(row_label "$label" "$mode") | $(fmt "${M[raw-direct]}") | $(fmt "${M[raw-cached]}") | $(fmt "${M[limit]}") | $(fmt "${M[limit-alloc]}") | $(fmt "${M[qsd]}") | $(fmt "${M[ovbdfs]}") | $(ratio "$job" "$mode" ovbdfs limit) | $(ratio "$job" "$mode" ovbdfs limit-alloc) | $(ratio "$job" "$mode" ovbdfs qsd) | $(ratio "$job" "$mode" limit raw-cached) |"
    if [[ -n $TWO ]]; then
      line+=" $(fmt "${M[ovbdfs2]}") | $(ratio "$job" "$mode" ovbdfs2 limit) | $(ratio "$job" "$mode" ovbdfs2 qsd) | $(ratio "$job" "$mode" ovbdfs2 ovbdfs) |"
    fi
    echo "$line"
    unset M
  done
done
echo
echo "Spread of the $REPEAT samples per cell (max/min - 1):"
echo
echo "| job | $(tr ' ' '\n' <<<"$ENGINES" | paste -sd'|' | sed 's/|/ | /g') |"
echo "|---|$(for _ in $ENGINES; do printf -- '---:|'; done)"
for job in $JOBS; do
  IFS='|' read -r label _ _ <<<"$(job_spec "$job")"
  for mode in $(modes_of "$job"); do
    line="| $(row_label "$label" "$mode") |"
    for e in $ENGINES; do line+=" $(spread <<<"${SAMPLES["$job $mode $e"]:-}") |"; done
    echo "$line"
  done
done
