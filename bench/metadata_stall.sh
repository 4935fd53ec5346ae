#!/usr/bin/env bash
# metadata_stall.sh: do long store operations on one volume hold up requests
# for other volumes and for .control?
#
#   bash bench/metadata_stall.sh [BUILD_DIR]      (BUILD_DIR default: <repo>/build)
#
# One store is mounted with ovbdfs. bench/metadata_probe samples, from its own
# process and one thread per operation, the latency of lookup (stat), getattr
# (statx forcing a GETATTR), readdir (ls), open+close of an unrelated volume
# `other`, a read of .control (cat) and a 4 KiB O_DIRECT read of `other`,
# while one background job runs on another volume:
#
#   idle          nothing (the reference), IDLE_S seconds
#   delete-merge  `delete bg@s1` where bg holds DATA_MB of data in two layers
#                 (DATA_MB written, snapshot s1, all of it overwritten, snapshot
#                 s2): the two layers are then used only together and the upper
#                 one hides the lower, so the delete merges them (copies DATA_MB)
#   import-mount  what an import is on a mounted store: `create imp` on
#                 .control, DATA_MB of a raw image written into it through the
#                 mount (dd, O_DIRECT, 1 MiB), `flush imp`. `ovbd volume import`
#                 and `ovbd volume create --from` need the store unmounted (the
#                 script checks that they refuse)
#   layer-create  `ovbd layer create --from RAW` of the same DATA_MB image: the
#                 offline half of an import, which touches no mounted store
#   snapshot-map  `snapshot frag` of a volume whose upper holds MAPPINGS
#                 mappings (512 B written every 1 KiB, then flushed, so the
#                 snapshot has only its index work to do)
#
# The probe starts 1 s before the job and stops 1 s after it; setup work
# (writing the data, the snapshots before the delete) is not sampled. Output:
# a markdown table, per job its duration and per operation the worst and the
# median latency over the samples taken while it ran. Progress goes to stderr.
# Everything stays on this machine, in a temp directory under WORK_PARENT.
#
# Environment (defaults in brackets):
#   DATA_MB     [2048]     data of the delete-merge, import and layer-create jobs
#   MAPPINGS    [1000000]  upper mappings of the snapshot-map volume
#   IDLE_S      [5]        length of the idle phase
#   PAUSE_US    [2000]     pause between two samples of one operation
#   OVBDFS_OPTS []         extra -o options for ovbdfs
#   WORK_PARENT [/var/tmp] needs ~6x DATA_MB free
#
# Needs: fio, python3, fusermount3, mountpoint, and a usable /dev/fuse.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

use_build_dir "${1:-build}"
PROBE=$BUILD/bench/metadata_probe
DATA_MB=${DATA_MB:-2048}
MAPPINGS=${MAPPINGS:-1000000}
IDLE_S=${IDLE_S:-5}
PAUSE_US=${PAUSE_US:-2000}
OVBDFS_OPTS=${OVBDFS_OPTS:-}
WORK_PARENT=${WORK_PARENT:-/var/tmp}

require_tools fio python3 fusermount3 mountpoint
for b in "$OVBD" "$OVBDFS" "$PROBE"; do [[ -x $b ]] || die "missing $b (build ovbd, ovbdfs and metadata_probe)"; done

WORK=$(mktemp -d "$WORK_PARENT/ovbd-stall.XXXXXX")
ST=$WORK/store
MNT=$WORK/mnt
RAW=$WORK/image.raw
DAEMON=""
PROBE_PID=""

cleanup() {
  local rc=$?
  set +e
  [[ -n $PROBE_PID ]] && kill "$PROBE_PID" 2>/dev/null && wait "$PROBE_PID" 2>/dev/null
  stop_fuse "$MNT" "$DAEMON" 60
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# One .control command; the write fails (and so the script) if the command does.
ctl() { printf '%s\n' "$*" >"$MNT/.control"; }
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", b - a}'; }

# --- the store ----------------------------------------------------------------
LOAD_START=$(load_average)
log "preparing the store and ${DATA_MB} MiB of random data in $WORK"
dd if=/dev/urandom of="$RAW" bs=1M count="$DATA_MB" status=none
"$OVBD" store init "$ST" >/dev/null
"$OVBD" volume create "$ST" other --size 64M >/dev/null
mkdir -p "$MNT"
args=("$ST" "$MNT" -f)
[[ -n $OVBDFS_OPTS ]] && args+=(-o "$OVBDFS_OPTS")
"$OVBDFS" "${args[@]}" >"$WORK/ovbdfs.log" 2>&1 &
DAEMON=$!
wait_mounted 20 "$DAEMON" "$MNT" "$WORK/ovbdfs.log" ovbdfs
# `other` holds data, so its reads come from its upper.
dd if="$RAW" of="$MNT/other" bs=1M count=64 oflag=direct conv=notrunc,fsync status=none

declare -a ROWS=()
# measure NAME NOTE COMMAND...: runs COMMAND with the probe around it.
measure() {
  local name=$1 note=$2; shift 2
  local out=$WORK/probe.$name t0 t1
  "$PROBE" "$MNT" other "$PAUSE_US" >"$out" &
  PROBE_PID=$!
  sleep 1
  log "$name: running"
  t0=$(now)
  "$@"
  t1=$(now)
  sleep 1
  kill -TERM "$PROBE_PID"
  wait "$PROBE_PID" || die "probe failed during $name"
  PROBE_PID=""
  local row="| $name | $(elapsed "$t0" "$t1")${note:+ ($note)} |"
  for op in lookup getattr readdir open_close control read4k; do
    row+=" $(awk -v op="$op" '$1 == op {printf "%.1f (%.2f)", $5, $3}' "$out") |"
  done
  ROWS+=("$row")
  log "$name: $(elapsed "$t0" "$t1") s; $(tr '\n' ';' <"$out")"
}

# --- idle ---------------------------------------------------------------------
measure idle "" sleep "$IDLE_S"

# --- delete-merge -----------------------------------------------------------------
log "delete-merge: writing ${DATA_MB} MiB twice with a snapshot after each (not sampled)"
ctl create bg "${DATA_MB}M"
wait_for 10 test -f "$MNT/bg" || die "bg did not appear"
dd if="$RAW" of="$MNT/bg" bs=1M oflag=direct conv=notrunc,fsync status=none
ctl snapshot bg s1
dd if="$RAW" of="$MNT/bg" bs=1M oflag=direct conv=notrunc,fsync status=none
ctl snapshot bg s2
sync
lowers() { python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))["lowers"]))' "$ST/volumes/bg.json"; }
lowers_before=$(lowers)
measure delete-merge "" ctl delete bg@s1
log "delete-merge: layers under bg $lowers_before -> $(lowers)"
[[ $(lowers) -lt $lowers_before ]] || log "delete-merge: WARNING: the delete did not merge bg's layers"
ctl delete bg
ctl delete bg@s2

# --- import on a mounted store ------------------------------------------------------
if "$OVBD" volume import "$ST" refused "$RAW" >"$WORK/import.out" 2>&1; then
  die "ovbd volume import ran on a mounted store; measure it here instead"
fi
IMPORT_REFUSAL=$(tr '\n' ' ' <"$WORK/import.out")
log "ovbd volume import on the mounted store: $IMPORT_REFUSAL"
import_mount() {
  ctl create imp "${DATA_MB}M"
  wait_for 10 test -f "$MNT/imp" || die "imp did not appear"
  dd if="$RAW" of="$MNT/imp" bs=1M oflag=direct conv=notrunc status=none
  ctl flush imp
}
measure import-mount "" import_mount
ctl delete imp
sync
measure layer-create "" "$OVBD" layer create --from "$RAW" "$WORK/offline.layer"
rm -f "$WORK/offline.layer"
sync

# --- snapshot of many mappings -------------------------------------------------------
log "snapshot-map: writing $MAPPINGS sectors, one every 1 KiB (not sampled)"
ctl create frag "$((MAPPINGS))K"
wait_for 10 test -f "$MNT/frag" || die "frag did not appear"
fio --name=frag --filename="$MNT/frag" --size="$((MAPPINGS))K" --rw=write:512 --bs=512 \
    --direct=1 --ioengine=libaio --iodepth=16 --invalidate=0 --output=/dev/null
ctl flush frag
sync
measure snapshot-map "$MAPPINGS mappings" ctl snapshot frag s1
LOAD_END=$(load_average)

# --- report -------------------------------------------------------------------------
echo "metadata_stall: $(date -u '+%Y-%m-%d %H:%M UTC'), kernel $(uname -r), $(nproc) CPUs; load average $LOAD_START at start, $LOAD_END at end"
echo "DATA_MB=$DATA_MB MAPPINGS=$MAPPINGS PAUSE_US=$PAUSE_US${OVBDFS_OPTS:+; ovbdfs -o $OVBDFS_OPTS}; ovbd volume import on the mounted store: $IMPORT_REFUSAL"
echo
echo "Worst latency in ms (median in brackets) of each operation on the unrelated volume \`other\` while the job ran:"
echo
echo "| background job | job duration (s) | lookup (stat) | getattr | readdir (ls) | open+close | cat .control | read 4k |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
printf '%s\n' "${ROWS[@]}"
