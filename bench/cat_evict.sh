#!/usr/bin/env bash
# cat_evict.sh: what a buffered read of a whole volume file does to the
# O_DIRECT reads that follow it, per FUSE server.
#
#   bash bench/cat_evict.sh [BUILD_DIR]      (BUILD_DIR default: <repo>/build)
#
# For each engine: warm the backing file, measure 4 KiB O_DIRECT random reads
# at QD1 (psync) for BEFORE_S seconds, `cat` the FUSE file to /dev/null, record
# how much of the backing file and of the FUSE file is then in the page cache
# (fincore), and measure the same reads again for AFTER_S seconds, reporting
# IOPS per second. Engines:
#
#   ovbdfs        a clone over a SIZE_MB layer (the volume's data is the layer)
#   ovbdfs2       the same with a second binary (OVBDFS2), e.g. an older build
#   limit         bench/fuse_limit over a plain file, as ovbdfs replies
#   limit-move    the same with -o splice_move (FUSE_CAP_SPLICE_MOVE and
#                 FUSE_BUF_SPLICE_MOVE on every reply)
#   qsd           qemu-storage-daemon's FUSE export of the raw file
#
# Environment: ENGINES [ovbdfs limit limit-move qsd], OVBDFS2, SIZE_MB [1024],
# BEFORE_S [3], AFTER_S [12], WORK_PARENT [/var/tmp].
# Needs: fio, jq, fincore, qemu-storage-daemon, fusermount3, mountpoint.
set -euo pipefail
# OVBDFS from the environment wins over the build directory's.
OVBDFS_GIVEN=${OVBDFS:-}
. "$(dirname "$0")/lib.sh"

use_build_dir "${1:-build}"
OVBDFS=${OVBDFS_GIVEN:-$OVBDFS}
OVBDFS2=${OVBDFS2:-}
FUSE_LIMIT=$BUILD/bench/fuse_limit
ENGINES=${ENGINES:-"ovbdfs limit limit-move qsd"}
SIZE_MB=${SIZE_MB:-1024}
BEFORE_S=${BEFORE_S:-3}
AFTER_S=${AFTER_S:-12}
WORK_PARENT=${WORK_PARENT:-/var/tmp}

require_tools fio jq fincore qemu-storage-daemon fusermount3 mountpoint
[[ " $ENGINES " != *" ovbdfs2 "* || -x $OVBDFS2 ]] || die "ENGINES has ovbdfs2: set OVBDFS2 to a binary"

WORK=$(mktemp -d "$WORK_PARENT/ovbd-evict.XXXXXX")
MNT=$WORK/mnt
PID=""
stop() {
  stop_fuse "$MNT" "$PID" 30
  PID=""
}
cleanup() {
  local rc=$?
  set +e
  stop
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log "preparing ${SIZE_MB} MiB of random data in $WORK"
RAW=$WORK/image.raw
dd if=/dev/urandom of="$RAW" bs=1M count="$SIZE_MB" status=none
"$OVBD" store init "$WORK/store" >/dev/null
"$OVBD" volume import "$WORK/store" base "$RAW" >/dev/null
"$OVBD" snapshot "$WORK/store" base golden >/dev/null
LAYER=$(ls "$WORK"/store/layers/*.layer)
sync

# start ENGINE: mounts it, sets TARGET (the FUSE file) and BACKING (the file
# its data comes from).
start() {
  local engine=$1
  case $engine in
    ovbdfs | ovbdfs2)
      local bin=$OVBDFS
      [[ $engine == ovbdfs2 ]] && bin=$OVBDFS2
      mkdir -p "$MNT"
      "$OVBD" clone "$WORK/store" base@golden "c-$engine" >/dev/null
      "$bin" "$WORK/store" "$MNT" -f >"$WORK/daemon.log" 2>&1 &
      PID=$!
      TARGET=$MNT/c-$engine
      BACKING=$LAYER
      ;;
    limit | limit-move)
      mkdir -p "$MNT"
      local opt=()
      [[ $engine == limit-move ]] && opt=(-o splice_move)
      "$FUSE_LIMIT" "$RAW" "$MNT" -f "${opt[@]}" >"$WORK/daemon.log" 2>&1 &
      PID=$!
      TARGET=$MNT/disk
      BACKING=$RAW
      ;;
    qsd)
      rm -rf "$MNT"
      touch "$MNT"
      qemu-storage-daemon --blockdev driver=file,node-name=f,filename="$RAW" \
        --export type=fuse,id=e,node-name=f,mountpoint="$MNT",writable=off \
        >"$WORK/daemon.log" 2>&1 &
      PID=$!
      TARGET=$MNT
      BACKING=$RAW
      ;;
    *) die "unknown engine $engine" ;;
  esac
  wait_mounted 20 "$PID" "$MNT" "$WORK/daemon.log" "$engine"
}
finish() {
  local engine=$1
  stop
  case $engine in
    ovbdfs | ovbdfs2) "$OVBD" delete "$WORK/store" "c-$engine" >/dev/null ;;
    qsd) rm -f "$MNT" ;;
  esac
}

resident() {
  local b
  b=$(fincore -b -n -o RES "$1" 2>/dev/null) || { echo "n/a"; return; }
  awk -v b="$b" 'BEGIN {printf "%.0f MiB", b / 1048576}'
}
# fio_qd1 SECONDS LOGPREFIX: prints the IOPS of each second, space-separated
fio_qd1() {
  fio --name=qd1 --filename="$TARGET" --size="${SIZE_MB}M" --rw=randread --bs=4k --ioengine=psync \
      --direct=1 --invalidate=0 --time_based --runtime="$1" --write_iops_log="$2" --log_avg_msec=1000 \
      --output-format=json --output=/dev/null
  awk -F, '{printf "%s%d", (NR > 1 ? " " : ""), $2}' "$2"_iops.1.log
}

echo "cat_evict: $(date -u '+%Y-%m-%d %H:%M UTC'), kernel $(uname -r), $(nproc) CPUs, load average $(load_average); ${SIZE_MB} MiB"
echo
echo "| engine | IOPS before (per s) | backing cached before | cat (s) | backing cached after | FUSE file cached after | IOPS after cat (per s) |"
echo "|---|---|---:|---:|---:|---:|---|"
for engine in $ENGINES; do
  start "$engine"
  cat "$BACKING" >/dev/null
  cached_before=$(resident "$BACKING")
  before=$(fio_qd1 "$BEFORE_S" "$WORK/b-$engine")
  t0=$EPOCHREALTIME
  cat "$TARGET" >/dev/null
  t1=$EPOCHREALTIME
  cached_after=$(resident "$BACKING")
  fuse_cached=$(resident "$TARGET")
  after=$(fio_qd1 "$AFTER_S" "$WORK/a-$engine")
  cat_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}')
  echo "| $engine | $before | $cached_before | $cat_s | $cached_after | $fuse_cached | $after |"
  log "$engine done"
  finish "$engine"
done
