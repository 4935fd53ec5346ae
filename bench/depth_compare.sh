#!/usr/bin/env bash
# depth_compare.sh: what a deep layer stack costs 4 KiB random reads, for
# ovbdfs and for a qcow2 backing chain under qemu-storage-daemon.
#
#   bash bench/depth_compare.sh [BUILD_DIR]      (BUILD_DIR default: <repo>/build)
#
# Four configurations, all holding byte-for-byte the same data (checked with
# cmp before measuring):
#
#   ovbdfs flat   a volume whose only layer is the merged image
#   ovbdfs deep   a volume of DEPTH layers: a base layer of SIZE_MB MiB random
#                 data, then DEPTH-1 snapshot layers (`snapshot` on .control),
#                 each holding WRITES scattered 4 KiB writes
#   qsd flat      qemu-storage-daemon's FUSE export of one qcow2 image
#   qsd deep      the same export of a DEPTH-deep qcow2 backing chain: a qcow2
#                 base and DEPTH-1 overlays with the same writes (qemu-io)
#
# Jobs: 4k randread over the whole volume, direct=1, psync QD1 and libaio QD16
# with 2 jobs. Each round runs every job on every configuration, the order of
# the configurations rotating per round, so a load change on a shared machine
# hits all of them; the table shows medians over RUNS rounds and the ratios
# ovbdfs deep/flat, qsd deep/flat and ovbdfs deep / qsd deep. Progress and every
# sample go to stderr; stdout gets the command, the machine and the tables.
#
# Environment (defaults in brackets):
#   RUNS        [5]      rounds (samples per job and configuration)
#   RUNTIME     [10]     measured seconds per fio run
#   RAMP        [1]      fio ramp_time seconds (not measured)
#   DEPTH       [64]     layers of the deep stacks (base included)
#   WRITES      [32]     4 KiB writes per snapshot layer
#   SIZE_MB     [1024]   volume size
#   SEED        [1]      seed for the write offsets
#   OVBDFS_OPTS []       extra -o options for ovbdfs (e.g. threads=4)
#   WORK_PARENT [/var/tmp]  where the temp directory goes (needs ~6x SIZE_MB)
#
# Needs: fio, jq, python3, qemu-img, qemu-io, qemu-storage-daemon, fusermount3,
# mountpoint, cmp, and a usable /dev/fuse.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

# A relative BUILD_DIR is taken from the repository root.
use_build_dir "${1:-build}"
RUNS=${RUNS:-5}
RUNTIME=${RUNTIME:-10}
RAMP=${RAMP:-1}
DEPTH=${DEPTH:-64}
WRITES=${WRITES:-32}
SIZE_MB=${SIZE_MB:-1024}
SEED=${SEED:-1}
OVBDFS_OPTS=${OVBDFS_OPTS:-}
WORK_PARENT=${WORK_PARENT:-/var/tmp}

POLL_S=0.02

require_tools fio jq python3 qemu-img qemu-io qemu-storage-daemon fusermount3 mountpoint cmp
[[ -x $OVBD && -x $OVBDFS ]] || die "no ovbd/ovbdfs in $BUILD (build it first)"
((DEPTH >= 2 && DEPTH <= 255)) || die "DEPTH must be 2..255"
# The command line as given, with every knob spelled out, so the output says
# exactly how to reproduce it.
COMMAND="RUNS=$RUNS RUNTIME=$RUNTIME RAMP=$RAMP DEPTH=$DEPTH WRITES=$WRITES SIZE_MB=$SIZE_MB SEED=$SEED"
[[ -n $OVBDFS_OPTS ]] && COMMAND+=" OVBDFS_OPTS=$OVBDFS_OPTS"
COMMAND+=" bash bench/depth_compare.sh${1:+ $1}"

# --- workspace and cleanup -----------------------------------------------------
WORK=$(mktemp -d "$WORK_PARENT/ovbd-depth.XXXXXX")
STORE=$WORK/store
MNT=$WORK/mnt
OVBDFS_PID=""
# qemu-storage-daemon exports an image onto a regular file: one per config.
declare -A QSD_PID=()
qsd_file() { echo "$WORK/qsd-$1.img"; }

stop_ovbdfs() {
  stop_fuse "$MNT" "$OVBDFS_PID" 30
  OVBDFS_PID=""
}

start_ovbdfs() {
  mkdir -p "$MNT"
  local args=("$STORE" "$MNT" -f)
  [[ -n $OVBDFS_OPTS ]] && args+=(-o "$OVBDFS_OPTS")
  "$OVBDFS" "${args[@]}" >>"$WORK/ovbdfs.log" 2>&1 &
  OVBDFS_PID=$!
  wait_mounted 60 "$OVBDFS_PID" "$MNT" "$WORK/ovbdfs.log" ovbdfs
}

stop_qsd() {
  local name=$1
  stop_qsd_export "$(qsd_file "$name")" "${QSD_PID[$name]:-}"
  QSD_PID[$name]=""
}

# start_qsd NAME IMAGE: read-only FUSE export of the qcow2 IMAGE; its backing
# chain is opened from the image headers.
start_qsd() {
  local name=$1 image=$2 file pid
  file=$(qsd_file "$name")
  touch "$file"
  qemu-storage-daemon \
    --blockdev driver=file,node-name=f,filename="$image",read-only=on \
    --blockdev driver=qcow2,node-name=q,file=f,read-only=on \
    --export type=fuse,id=e,node-name=q,mountpoint="$file",writable=off \
    >"$WORK/qsd-$name.log" 2>&1 &
  pid=$!
  QSD_PID[$name]=$pid
  wait_mounted 60 "$pid" "$file" "$WORK/qsd-$name.log" "qemu-storage-daemon ($name)" export
}

cleanup() {
  local rc=$?
  set +e
  for name in "${!QSD_PID[@]}"; do stop_qsd "$name"; done
  stop_ovbdfs
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
# Turn signals into a normal exit so the EXIT trap unmounts everything.
trap 'exit 130' INT TERM

LOAD_START=$(load_average)

# --- the write plan --------------------------------------------------------------
# One line per write: "layer block pattern" for layers 1..DEPTH-1 (layer 0 is
# the base). Both stacks replay this same list in the same order, so they end
# up with identical bytes; the pattern byte is never 0 so that no write can
# look like a hole.
PLAN=$WORK/plan.txt
BLOCKS=$((SIZE_MB * 256))
awk -v depth="$DEPTH" -v writes="$WRITES" -v blocks="$BLOCKS" -v seed="$SEED" 'BEGIN {
  srand(seed)
  n = 0
  for (l = 1; l < depth; l++)
    for (i = 0; i < writes; i++) {
      printf "%d %d %d\n", l, int(rand() * blocks), n % 255 + 1
      n++
    }
}' >"$PLAN"

# --- the base image ----------------------------------------------------------------
log "depth_compare: ${SIZE_MB} MiB of random data and two ${DEPTH}-layer stacks in $WORK"
BASE=$WORK/base.raw
dd if=/dev/urandom of="$BASE" bs=1M count="$SIZE_MB" status=none

# --- qcow2 deep chain ----------------------------------------------------------------
# A qcow2 copy of the base, then one overlay per layer, each created over the
# previous one and given that layer's writes by qemu-io.
QDIR=$WORK/qcow2
mkdir -p "$QDIR"
qemu-img convert -q -f raw -O qcow2 "$BASE" "$QDIR/l0.qcow2"
write_qcow2_layer() {  # LAYER, then the qemu-io commands
  local l=$1
  shift
  qemu-img create -q -f qcow2 -b "$QDIR/l$((l - 1)).qcow2" -F qcow2 "$QDIR/l$l.qcow2"
  qemu-io -f qcow2 "$@" "$QDIR/l$l.qcow2" >/dev/null
}
# One pass over the plan (it is sorted by layer): collect a layer's writes,
# apply them when the next layer starts.
cur=1
cmds=()
while read -r layer block pattern; do
  if ((layer != cur)); then
    write_qcow2_layer "$cur" "${cmds[@]}"
    cur=$layer
    cmds=()
  fi
  cmds+=(-c "write -q -P $pattern $((block * 4096)) 4k")
done <"$PLAN"
write_qcow2_layer "$cur" "${cmds[@]}"
QTOP=$QDIR/l$((DEPTH - 1)).qcow2

# --- the flat versions: the merged bytes as one layer ---------------------------------
MERGED=$WORK/merged.raw
qemu-img convert -q -f qcow2 -O raw "$QTOP" "$MERGED"
qemu-img convert -q -f raw -O qcow2 "$MERGED" "$QDIR/flat.qcow2"

# --- ovbdfs: flat and deep volumes in one store, served by one daemon ------------------
# "flat" is the merged image imported as its single layer. "deep" starts as
# the base imported as its lower layer; then, through the mounted daemon, each
# layer's writes go to the volume and a `snapshot` command on .control seals
# the upper into a new read-only layer.
"$OVBD" store init "$STORE" >/dev/null
"$OVBD" volume import "$STORE" flat "$MERGED" >/dev/null
"$OVBD" volume import "$STORE" deep "$BASE" >/dev/null
rm -f "$BASE"
start_ovbdfs
python3 - "$MNT" "$PLAN" <<'EOF'
import os, sys
mnt, plan = sys.argv[1], sys.argv[2]
layers = {}
with open(plan) as f:
    for line in f:
        layer, block, pattern = map(int, line.split())
        layers.setdefault(layer, []).append((block, pattern))
fd = os.open(os.path.join(mnt, "deep"), os.O_WRONLY)
ctl = os.open(os.path.join(mnt, ".control"), os.O_WRONLY)
for layer in sorted(layers):
    for block, pattern in layers[layer]:
        os.pwrite(fd, bytes([pattern]) * 4096, block * 4096)
    # The writes are acknowledged already (ovbdfs has no writeback cache);
    # fsync makes that explicit before the snapshot freezes the upper.
    os.fsync(fd)
    os.write(ctl, f"snapshot deep l{layer}\n".encode())
os.close(fd)
os.close(ctl)
EOF
start_qsd flat "$QDIR/flat.qcow2"
start_qsd deep "$QTOP"

# How deep the stacks really are, from their own metadata.
OVBD_DEEP_LAYERS=$(jq '.lowers | length' "$STORE/volumes/deep.json")
OVBD_FLAT_LAYERS=$(jq '.lowers | length' "$STORE/volumes/flat.json")
QCOW_DEEP_LAYERS=$(qemu-img info --backing-chain --output=json "$QTOP" | jq 'length')
((OVBD_DEEP_LAYERS == DEPTH && OVBD_FLAT_LAYERS == 1 && QCOW_DEEP_LAYERS == DEPTH)) ||
  die "stack depths: ovbdfs deep $OVBD_DEEP_LAYERS, flat $OVBD_FLAT_LAYERS, qcow2 chain $QCOW_DEEP_LAYERS (want $DEPTH, 1, $DEPTH)"

CONFIGS=(ovbdfs-flat ovbdfs-deep qsd-flat qsd-deep)
target_of() {
  case $1 in
    ovbdfs-flat) echo "$MNT/flat" ;;
    ovbdfs-deep) echo "$MNT/deep" ;;
    qsd-flat) qsd_file flat ;;
    qsd-deep) qsd_file deep ;;
  esac
}

# Every configuration must serve exactly the merged bytes. Reading each one
# in full also warms every daemon and brings every layer file into the page
# cache, so no configuration pays a cold start inside a measured run. O_DIRECT
# keeps the volume's own FUSE page cache out of it, as in the fio runs.
for c in "${CONFIGS[@]}"; do
  # A difference makes cmp exit early and dd die of SIGPIPE: either way the
  # pipeline fails, and that is the verdict wanted.
  if ! dd if="$(target_of "$c")" iflag=direct bs=1M status=none | cmp -s - "$MERGED"; then
    die "$c does not hold the merged data"
  fi
  log "depth_compare: $c holds the merged data"
done
rm -f "$MERGED"

# --- measuring -----------------------------------------------------------------------
# job_spec JOB -> "label|fio options"
job_spec() {
  case $1 in
    qd1) echo "4k randread psync QD1|--ioengine=psync --iodepth=1 --numjobs=1" ;;
    qd16) echo "4k randread libaio QD16 x2 jobs|--ioengine=libaio --iodepth=16 --numjobs=2" ;;
  esac
}
JOBS=(qd1 qd16)
declare -A SAMPLES=()  # "job config" -> space-separated IOPS, in run order

run_one() {
  local job=$1 config=$2 round=$3 label opts out iops
  IFS='|' read -r label opts <<<"$(job_spec "$job")"
  out=$WORK/$job.$config.$round.json
  # shellcheck disable=SC2086  # opts is a list of options
  fio --name="$job" --filename="$(target_of "$config")" --size="${SIZE_MB}M" \
    --rw=randread --bs=4k --direct=1 --time_based --runtime="$RUNTIME" \
    --ramp_time="$RAMP" --group_reporting --output-format=json $opts >"$out" ||
    die "fio failed on $config ($job)"
  iops=$(fio_value "$out" read.iops)
  SAMPLES["$job $config"]+="$iops "
  log "$(printf '%-5s %-12s round %d: %s IOPS' "$job" "$config" "$round" "$iops")"
}

n=${#CONFIGS[@]}
for ((round = 1; round <= RUNS; round++)); do
  for job in "${JOBS[@]}"; do
    for ((k = 0; k < n; k++)); do
      run_one "$job" "${CONFIGS[$(((k + round - 1) % n))]}" "$round"
    done
  done
done
LOAD_END=$(load_average)

# --- report ------------------------------------------------------------------------------
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
# Digits grouped by three, independent of the locale.
thousands() {
  awk -v x="$1" 'BEGIN { s = sprintf("%.0f", x); while (s ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]($|,)/, ",&", s); print s }'
}

CPU=$(cpu_model)
QSD_VERSION=$(qemu-storage-daemon --version | awk 'NR == 1 { print $3 }')
echo "command: $COMMAND"
echo "depth_compare: $(date -u '+%Y-%m-%d %H:%M UTC'), kernel $(uname -r), CPU: $CPU x $(nproc)"
echo "ovbdfs $("$OVBD" --version 2>/dev/null | awk 'NR == 1 { print $NF }') (commit $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo "?"))${OVBDFS_OPTS:+ (-o $OVBDFS_OPTS)}; qemu-storage-daemon $QSD_VERSION; fio $(fio --version | sed 's/^fio-//'); libfuse $(pkg-config --modversion fuse3 2>/dev/null || echo '?')"
echo "${SIZE_MB} MiB random data; deep = ${DEPTH} layers (base + $((DEPTH - 1)) layers of $WRITES scattered 4 KiB writes), flat = the same bytes as 1 layer; direct=1, ${RUNTIME} s + ${RAMP} s ramp per run, median of $RUNS rounds; page cache warm; load average $LOAD_START at start, $LOAD_END at end"
echo
echo "| job | ovbdfs flat | ovbdfs deep | ovbdfs deep/flat | qsd flat | qsd deep | qsd deep/flat | ovbdfs deep / qsd deep |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for job in "${JOBS[@]}"; do
  IFS='|' read -r label _ <<<"$(job_spec "$job")"
  of=$(median <<<"${SAMPLES["$job ovbdfs-flat"]}")
  od=$(median <<<"${SAMPLES["$job ovbdfs-deep"]}")
  qf=$(median <<<"${SAMPLES["$job qsd-flat"]}")
  qd=$(median <<<"${SAMPLES["$job qsd-deep"]}")
  echo "| $label (IOPS) | $(thousands "$of") | $(thousands "$od") | $(ratio "$od" "$of") | $(thousands "$qf") | $(thousands "$qd") | $(ratio "$qd" "$qf") | $(ratio "$od" "$qd") |"
done
echo
# The samples themselves, so the spread behind each median is visible.
echo "| job | config | IOPS per round |"
echo "|---|---|---|"
for job in "${JOBS[@]}"; do
  for c in "${CONFIGS[@]}"; do
    echo "| $job | $c | ${SAMPLES["$job $c"]% } |"
  done
done
