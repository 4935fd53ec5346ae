#!/usr/bin/env bash
# hydrate_compare.sh: how fast ovbdfs hydrates a volume (copies its lower
# layers into its upper and drops them), against the two other ways of
# getting a private, complete copy of an image, and what a running hydration
# costs foreground reads.
#
#   bash bench/hydrate_compare.sh [BUILD_DIR]      (BUILD_DIR default: <repo>/build)
#
# The image: HYDRATE_GIB GiB, per MiB random bytes (55%), compressible text
# (35%) or a hole (10%). Throughput contenders, each from the command to its
# data being durable:
#
#   ovbdfs-lsmt   a clone of a snapshot of a volume imported from the image
#                 without compression (an LSMT lower); `hydrate VOL rate 0` on
#                 .control, until status says `hydrate: done` (the job syncs
#                 the upper and commits the manifest before it says so)
#   ovbdfs-lz4    the same over an lz4 ZFile lower (`--compress lz4`)
#   cp            cp --sparse=always RAW COPY, then sync COPY (fsync)
#   block-stream  a qcow2 overlay over the raw image (qemu-img create -b RAW
#                 -F raw) opened in qemu-storage-daemon; QMP block-stream of
#                 its node until BLOCK_JOB_COMPLETED, then QMP quit (which
#                 closes, so flushes, every node), then sync of the overlay
#
# The page cache is dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before
# every timed run, so every contender reads its source from the disk. The
# rate is the image's virtual size over the time. Each of RUNS rounds runs
# every contender once, their order rotating per round; the table gives
# medians, and ratios that are medians of the ratios within each round. The
# first round compares every result with the image (not timed).
#
# Foreground impact (FOREGROUND=1): fio 4k randread, libaio QD16, direct=1,
# FG_RUNTIME seconds over a whole fresh clone, its store's files read once
# before (warm, as bench/fio_compare.sh does): IOPS with no hydration, then
# with the clone hydrating at the default rate (`hydrate VOL`, no rate);
# the upper must grow during the run (what the job copied: fio only reads)
# and the job must not finish in it.
#
# The tables go to stdout and, with WRITE_DOC=1, replace the section
# "## Hydration" of docs/PERFORMANCE.md (appended if absent), with the
# command, the date and the machine. NOTE_FILE, if set, is a Markdown file
# whose text is added at the end of that section (observations).
#
# Environment (defaults in brackets):
#   HYDRATE_GIB [4]    image size in GiB (HYDRATE_MIB overrides, for quick tries)
#   RUNS        [3]    rounds
#   CONTENDERS  [ovbdfs-lsmt ovbdfs-lz4 cp block-stream]   ("" for none: foreground only)
#   FOREGROUND  [1]    0: skip the foreground impact runs
#   FG_VARIANTS [lsmt lz4]   lowers of the foreground runs
#   FG_RUNTIME  [8]    seconds per fio run
#   VERIFY      [1]    0: do not compare the first round's results with the image
#   OVBDFS_OPTS []     extra -o options for ovbdfs
#   WORK_PARENT [/var/tmp]  temp directory parent (needs ~4x the image)
#   WRITE_DOC   [1]    0: print only
#   NOTE_FILE   []     Markdown appended to the section
#   SEED        [1]
#
# Needs root (drop_caches), fio, jq, python3, qemu-img, qemu-storage-daemon,
# fusermount3, mountpoint, cmp, and a usable /dev/fuse.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

use_build_dir "${1:-build}"
HYDRATE_GIB=${HYDRATE_GIB:-4}
SIZE_MIB=${HYDRATE_MIB:-$((HYDRATE_GIB * 1024))}
RUNS=${RUNS:-3}
CONTENDERS=${CONTENDERS-"ovbdfs-lsmt ovbdfs-lz4 cp block-stream"}
FOREGROUND=${FOREGROUND:-1}
FG_VARIANTS=${FG_VARIANTS:-"lsmt lz4"}
FG_RUNTIME=${FG_RUNTIME:-8}
VERIFY=${VERIFY:-1}
OVBDFS_OPTS=${OVBDFS_OPTS:-}
WORK_PARENT=${WORK_PARENT:-/var/tmp}
WRITE_DOC=${WRITE_DOC:-1}
NOTE_FILE=${NOTE_FILE:-}
SEED=${SEED:-1}
DOC=$ROOT/docs/PERFORMANCE.md
# shellcheck disable=SC2034  # read by wait_for (bench/lib.sh)
POLL_S=0.05

require_tools fio jq python3 qemu-img qemu-storage-daemon fusermount3 mountpoint cmp
[[ $(id -u) == 0 ]] || die "needs root: the page cache is dropped before every run"
[[ -n $NOTE_FILE && ! -f $NOTE_FILE ]] && die "NOTE_FILE $NOTE_FILE does not exist"
VARIANTS=()  # ovbdfs stores needed
for c in $CONTENDERS; do
  case $c in
    ovbdfs-lsmt | ovbdfs-lz4) VARIANTS+=("${c#ovbdfs-}") ;;
    cp | block-stream) ;;
    *) die "unknown contender $c" ;;
  esac
done
if ((FOREGROUND)); then
  for v in $FG_VARIANTS; do
    [[ $v == lsmt || $v == lz4 ]] || die "unknown FG_VARIANTS entry $v"
    [[ " ${VARIANTS[*]} " == *" $v "* ]] || VARIANTS+=("$v")
  done
fi
if ((${#VARIANTS[@]})); then
  [[ -x $OVBD && -x $OVBDFS ]] || die "no ovbd/ovbdfs in $BUILD (build it first)"
fi
if [[ -n ${HYDRATE_MIB:-} ]]; then COMMAND="HYDRATE_MIB=$HYDRATE_MIB"; else COMMAND="HYDRATE_GIB=$HYDRATE_GIB"; fi
COMMAND+=" RUNS=$RUNS FOREGROUND=$FOREGROUND FG_RUNTIME=$FG_RUNTIME"
[[ $CONTENDERS != "ovbdfs-lsmt ovbdfs-lz4 cp block-stream" ]] && COMMAND+=" CONTENDERS=\"$CONTENDERS\""
[[ $FG_VARIANTS != "lsmt lz4" ]] && COMMAND+=" FG_VARIANTS=\"$FG_VARIANTS\""
[[ -n $OVBDFS_OPTS ]] && COMMAND+=" OVBDFS_OPTS=$OVBDFS_OPTS"
COMMAND+=" bash bench/hydrate_compare.sh${1:+ $1}"

# --- workspace and cleanup -----------------------------------------------------
WORK=$(mktemp -d "$WORK_PARENT/ovbd-hydrate.XXXXXX")
RAW=$WORK/image.raw
QSD_PID=""
declare -A DAEMON_PID=()
store_of() { echo "$WORK/store-$1"; }
mnt_of() { echo "$WORK/mnt-$1"; }

stop_qsd() {
  stop_pid "$QSD_PID"
  QSD_PID=""
}

stop_ovbdfs() {
  stop_fuse "$(mnt_of "$1")" "${DAEMON_PID[$1]:-}" 60
  DAEMON_PID[$1]=""
}

cleanup() {
  local rc=$?
  set +e
  stop_qsd
  for v in "${!DAEMON_PID[@]}"; do stop_ovbdfs "$v"; done
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

LOAD_START=$(load_average)

# --- the image -------------------------------------------------------------------
log "hydrate_compare: a ${SIZE_MIB} MiB image in $WORK"
make_mixed_image "$RAW" "$SIZE_MIB" "$SEED" 0.55
DATA_MIB=$(($(du -k "$RAW" | cut -f1) / 1024))
IMAGE_BYTES=$((SIZE_MIB << 20))

# --- ovbdfs stores ------------------------------------------------------------------
# Per lower variant: a store whose volume `base` was imported from the image
# and snapshotted once (base@golden). Every run hydrates a new clone of the
# snapshot, whose lower is therefore the imported layer (which stays: base
# and base@golden still use it), then deletes it.
start_ovbdfs() {
  local v=$1 store mnt
  store=$(store_of "$v")
  mnt=$(mnt_of "$v")
  mkdir -p "$mnt"
  local args=("$store" "$mnt" -f)
  [[ -n $OVBDFS_OPTS ]] && args+=(-o "$OVBDFS_OPTS")
  "$OVBDFS" "${args[@]}" >>"$WORK/ovbdfs-$v.log" 2>&1 &
  DAEMON_PID[$v]=$!
  wait_mounted 60 "$!" "$mnt" "$WORK/ovbdfs-$v.log" "ovbdfs ($v)"
}
declare -A LAYER_BYTES=()
for v in "${VARIANTS[@]}"; do
  store=$(store_of "$v")
  "$OVBD" store init "$store" >/dev/null
  compress=()
  [[ $v == lz4 ]] && compress=(--compress lz4)
  log "importing the image ($v)"
  "$OVBD" volume import "$store" base "$RAW" "${compress[@]}" >/dev/null
  "$OVBD" snapshot "$store" base golden >/dev/null
  LAYER_BYTES[$v]=$(find "$store/layers" -name '*.layer' -printf '%s\n' | sort -n | tail -1)
  start_ovbdfs "$v"
done
sync

# The hydrate status line of VOL in STORE ("" when idle).
hyd_line() { "$OVBD" status "$1" "$2" | grep -E '^[[:space:]]+hydrate: ' | head -1 || true; }
hyd_state() {
  local l
  l=$(hyd_line "$1" "$2")
  if [[ -z $l ]]; then echo idle; else sed -E 's/^[[:space:]]*hydrate: ([a-z]+).*/\1/' <<<"$l"; fi
}
hyd_copied() { hyd_line "$1" "$2" | grep -oE '(^|[[:space:]])copied=[0-9]+' | cut -d= -f2; }
hyd_is() {
  local s
  s=$(hyd_state "$1" "$2")
  [[ $s == error ]] && die "hydration of $2 failed: $(hyd_line "$1" "$2")"
  [[ $s == "$3" ]]
}
hyd_moving() {
  local c
  c=$(hyd_copied "$1" "$2")
  [[ -n $c ]] && ((c > 0))
}
# control MNT LINE: one command through .control; dies if it fails.
control() { printf '%s\n' "$2" >"$1/.control" || die "'$2' on $1 failed"; }
delete_volume() { "$OVBD" delete "$1" "$2" >/dev/null 2>&1; }
delete_clone() {
  wait_for 60 delete_volume "$1" "$2" || die "could not delete $2: $("$OVBD" delete "$1" "$2" 2>&1)"
}
rate_of() { awk -v s="$1" -v b="$IMAGE_BYTES" 'BEGIN { printf "%.1f", b / 1048576 / s }'; }

# --- one timed run ---------------------------------------------------------------
# run_CONTENDER ROUND: sets RESULT to the seconds from the command to durable
# data (not in a subshell: it starts daemons and records their pids).
run_cp() {
  local r=$1 copy=$WORK/copy.raw t0 t1
  rm -f "$copy"
  drop_caches
  t0=$(now)
  cp --sparse=always "$RAW" "$copy"
  sync "$copy"
  t1=$(now)
  if ((VERIFY && r == 1)); then cmp "$copy" "$RAW" >&2 || die "cp: the copy differs from the image"; fi
  rm -f "$copy"
  RESULT=$(elapsed "$t0" "$t1")
}

run_block-stream() {
  local r=$1 ov=$WORK/overlay.qcow2 sock=$WORK/qmp.sock t0 t1
  rm -f "$ov" "$sock"
  qemu-img create -q -f qcow2 -b "$RAW" -F raw "$ov"
  qemu-storage-daemon \
    --blockdev driver=file,node-name=ovfile,filename="$ov" \
    --blockdev driver=qcow2,node-name=ov,file=ovfile \
    --chardev socket,id=mon,path="$sock",server=on,wait=off \
    --monitor chardev=mon \
    >"$WORK/qsd.log" 2>&1 &
  QSD_PID=$!
  wait_for 30 test -S "$sock" || die "qemu-storage-daemon did not open its QMP socket: $(cat "$WORK/qsd.log")"
  drop_caches
  t0=$(now)
  python3 "$ROOT/bench/qmp.py" "$sock" stream ov --quit --timeout 3600 >/dev/null ||
    die "block-stream failed: $(cat "$WORK/qsd.log")"
  wait_for 120 not_alive "$QSD_PID" || die "qemu-storage-daemon did not quit"
  wait "$QSD_PID" || die "qemu-storage-daemon exited with status $?: $(cat "$WORK/qsd.log")"
  QSD_PID=""
  sync "$ov"
  t1=$(now)
  if ((VERIFY && r == 1)); then
    qemu-img info "$ov" | grep -q '^backing file' && die "block-stream: the overlay still has a backing file"
    qemu-img compare -q -f qcow2 -F raw "$ov" "$RAW" || die "block-stream: the overlay differs from the image"
  fi
  rm -f "$ov"
  RESULT=$(elapsed "$t0" "$t1")
}

run_ovbdfs() {
  local v=$1 r=$2 store mnt vol t0 t1
  store=$(store_of "$v")
  mnt=$(mnt_of "$v")
  vol=h$r
  "$OVBD" clone "$store" base@golden "$vol" >/dev/null
  wait_for 10 test -f "$mnt/$vol" || die "clone $vol did not appear"
  drop_caches
  t0=$(now)
  control "$mnt" "hydrate $vol rate 0"
  wait_for 3600 hyd_is "$store" "$vol" "done" || die "hydration of $vol did not finish: $(hyd_line "$store" "$vol")"
  t1=$(now)
  log "  $(hyd_line "$store" "$vol" | sed 's/^ *//')"
  "$OVBD" status "$store" "$vol" | grep -qE "^$vol .*layers=0( |$)" || die "hydrated $vol still has layers: $("$OVBD" status "$store" "$vol")"
  if ((VERIFY && r == 1)); then cmp "$mnt/$vol" "$RAW" >&2 || die "ovbdfs-$v: the hydrated volume differs from the image"; fi
  delete_clone "$store" "$vol"
  RESULT=$(elapsed "$t0" "$t1")
}
run_ovbdfs-lsmt() { run_ovbdfs lsmt "$1"; }
run_ovbdfs-lz4() { run_ovbdfs lz4 "$1"; }

declare -A SECS=()    # "contender round" -> seconds
read -r -a LIST <<<"$CONTENDERS"
n=${#LIST[@]}
for ((r = 1; r <= RUNS; r++)); do
  for ((k = 0; k < n; k++)); do
    c=${LIST[$(((k + r - 1) % n))]}
    "run_$c" "$r"
    s=$RESULT
    SECS["$c $r"]=$s
    log "$(printf 'round %d %-13s %8.2f s  %7.1f MiB/s' "$r" "$c" "$s" "$(rate_of "$s")")"
  done
done

# --- foreground impact ---------------------------------------------------------------
declare -A FG=()  # "variant round idle|hyd" -> IOPS; "variant round moved" -> upper growth during fio
# upper_used STORE VOL: the space the volume's upper file takes (status used=).
upper_used() { "$OVBD" status "$1" "$2" | grep -E "^$2 " | grep -oE '(^| )used=[0-9]+' | cut -d= -f2; }
fio_iops() {
  local file=$1 out=$2
  fio --name=rr4k --filename="$file" --rw=randread --bs=4k --ioengine=libaio --iodepth=16 \
    --direct=1 --time_based --runtime="$FG_RUNTIME" --ramp_time=1 --invalidate=0 \
    --output-format=json >"$out" || die "fio failed on $file"
  fio_value "$out" read.iops
}
if ((FOREGROUND)); then
  for ((r = 1; r <= RUNS; r++)); do
    for v in $FG_VARIANTS; do
      store=$(store_of "$v")
      mnt=$(mnt_of "$v")
      vol=f$r
      "$OVBD" clone "$store" base@golden "$vol" >/dev/null
      wait_for 10 test -f "$mnt/$vol" || die "clone $vol did not appear"
      # Warm: the layer files (not the sparse upper: reading its holes would
      # fill the page cache with folios of zeros that slow writes into it).
      cat "$store"/layers/*.layer >/dev/null
      idle=$(fio_iops "$mnt/$vol" "$WORK/fg-$v-$r-idle.json")
      control "$mnt" "hydrate $vol"
      wait_for 30 hyd_moving "$store" "$vol" || die "hydration of $vol does not start: $(hyd_line "$store" "$vol")"
      cat "$store"/layers/*.layer >/dev/null
      # What the hydration copied during the run: the growth of the upper
      # (fio only reads). Status's copied= is published when a step of the
      # job ends, and one step can last the whole run (see the notes).
      u0=$(upper_used "$store" "$vol")
      c0=$(hyd_copied "$store" "$vol")
      t0=$(now)
      hyd=$(fio_iops "$mnt/$vol" "$WORK/fg-$v-$r-hyd.json")
      u1=$(upper_used "$store" "$vol")
      c1=$(hyd_copied "$store" "$vol")
      t1=$(now)
      st=$(hyd_state "$store" "$vol")
      [[ $st == running ]] || die "the hydration of $vol is $st after the fio run (make the image larger)"
      ((u1 > u0)) || die "the hydration of $vol did not move during the fio run (upper $u0 -> $u1 bytes)"
      FG["$v $r idle"]=$idle
      FG["$v $r hyd"]=$hyd
      FG["$v $r moved"]=$((u1 - u0))
      FG["$v $r copied"]=$((c1 - c0))
      FG["$v $r mibs"]=$(awk -v b=$((u1 - u0)) -v a="$t0" -v z="$t1" 'BEGIN { printf "%.1f", b / 1048576 / (z - a) }')
      log "$(printf 'round %d foreground %-4s idle %7d IOPS, hydrating %7d IOPS; upper +%d MiB, status copied= +%d MiB during the run' \
        "$r" "$v" "$idle" "$hyd" $(((u1 - u0) >> 20)) $(((c1 - c0) >> 20)))"
      control "$mnt" "hydrate $vol cancel"
      # Not deleted here: the clone's upper now holds thousands of 4 KiB
      # pieces (copy-on-read of fio's reads), and unlinking such a file on a
      # filesystem mounted with `discard` can take minutes (one synchronous
      # discard per extent). The clones go with the work directory.
    done
  done
fi
LOAD_END=$(load_average)

# --- report ------------------------------------------------------------------------------
med() { median | awk '{ printf "%.1f", $1 }'; }
spread() { tr ' ' '\n' | { grep -v '^$' || true; } | sort -g | awk 'NR == 1 {lo = $1} {hi = $1} END {if (NR < 2 || lo == 0) print "–"; else printf "%.0f%%", (hi / lo - 1) * 100}'; }
# ratio A B: median over the rounds of rate(A)/rate(B) = secs(B)/secs(A)
ratio() { median_ratio SECS "$RUNS" "$2" "$1"; }
has() { [[ " $CONTENDERS " == *" $1 "* ]]; }

report() {
  report_head "Hydration (\`bench/hydrate_compare.sh\`)" "$COMMAND" "$LOAD_START" "$LOAD_END"
  echo "fio $(fio --version | sed 's/^fio-//'); $(qemu-storage-daemon --version | awk 'NR == 1' | sed 's/ (.*//'); coreutils $(cp --version | awk 'NR == 1 { print $NF }')."
  echo
  echo "The image: ${SIZE_MIB} MiB virtual, ${DATA_MIB} MiB of it data (per MiB: 55% random, 35% compressible text, 10% holes)."
  local lay=()
  for v in "${VARIANTS[@]}"; do
    lay+=("$v $((LAYER_BYTES[$v] >> 20)) MiB")
  done
  ((${#lay[@]})) && echo "Lower layer: $(printf '%s, ' "${lay[@]}" | sed 's/, $//')."
  if [[ -n ${CONTENDERS// /} ]]; then
    echo "Each contender copies the whole image into a private, complete copy and makes it durable; the time runs from the command to that (for ovbdfs: \`hydrate VOL rate 0\` until status shows \`hydrate: done\`, which the job reports after its sync and the manifest without lowers). Page cache dropped before every run. MiB/s = virtual size / time; medians of $RUNS rounds, the order of the contenders rotating per round; ratios are medians of the per-round ratios."
    echo
    echo "| contender | time (s) | MiB/s | spread |"
    echo "|---|---:|---:|---:|"
    local c r secs rates s
    for c in $CONTENDERS; do
      secs="" rates=""
      for ((r = 1; r <= RUNS; r++)); do
        s=${SECS["$c $r"]:-}
        [[ -n $s ]] || continue
        secs+="$s "
        rates+="$(rate_of "$s") "
      done
      local label=$c
      case $c in
        ovbdfs-lsmt) label="ovbdfs hydrate, LSMT lower" ;;
        ovbdfs-lz4) label="ovbdfs hydrate, lz4 ZFile lower" ;;
        cp) label="cp --sparse=always + sync" ;;
        block-stream) label="qemu-storage-daemon block-stream (qcow2 over raw)" ;;
      esac
      echo "| $label | $(med <<<"$secs") | $(med <<<"$rates") | $(spread <<<"$rates") |"
    done
    echo
    local v
    if has cp || has block-stream; then
      for v in lsmt lz4; do
        has "ovbdfs-$v" || continue
        local parts=()
        has cp && parts+=("ovbdfs/cp $(ratio "ovbdfs-$v" cp)")
        has block-stream && parts+=("ovbdfs/block-stream $(ratio "ovbdfs-$v" block-stream)")
        local joined=${parts[0]}
        ((${#parts[@]} > 1)) && joined+=", ${parts[1]}"
        echo "ovbdfs, $v lower: $joined."
      done
      echo
    fi
  fi
  if ((FOREGROUND)); then
    echo "Foreground: fio 4k randread, libaio QD16, direct=1, ${FG_RUNTIME} s (+1 s ramp) over a whole fresh clone, the store's layer files read once before each run (warm); IOPS with no hydration, then with the clone hydrating at the default rate (\`hydrate VOL\`). Medians of $RUNS rounds. \"Copied\" is how much the volume's upper grew from just before to just after the fio run (fio only reads, so that is the hydration's work: the ranges fio read, which a running hydration copies first, and its own walk); the job was still running after the run, every time. The last column is the growth of status's \`copied=\` over the same interval."
    echo
    echo "| lower | IOPS, no hydration | IOPS, hydrating | drop | copied during the run (MiB) | (MiB/s) | per round (MiB) | status copied= per round (MiB) |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    for v in $FG_VARIANTS; do
      local idles="" hyds="" drops="" moved="" rates="" stat="" a b m
      for ((r = 1; r <= RUNS; r++)); do
        a=${FG["$v $r idle"]:-}
        b=${FG["$v $r hyd"]:-}
        m=${FG["$v $r moved"]:-}
        [[ -n $a && -n $b ]] || continue
        idles+="$a " hyds+="$b " moved+="$((m >> 20)) " rates+="${FG["$v $r mibs"]} "
        stat+="$((${FG["$v $r copied"]} >> 20)) "
        drops+="$(awk -v a="$a" -v b="$b" 'BEGIN { print (1 - b / a) * 100 }') "
      done
      m=$(median <<<"$moved")
      moved=${moved% } stat=${stat% }
      echo "| $v | $(median <<<"$idles" | awk '{printf "%.0f", $1}') | $(median <<<"$hyds" | awk '{printf "%.0f", $1}') | $(median <<<"$drops" | awk '{printf "%.0f%%", $1}') | $m | $(med <<<"$rates") | ${moved// /, } | ${stat// /, } |"
    done
    echo
  fi
  if [[ -n $NOTE_FILE ]]; then
    cat "$NOTE_FILE"
    echo
  fi
}

SECTION=$WORK/section.md
report >"$SECTION"
cat "$SECTION"
if ((WRITE_DOC)); then
  python3 - "$DOC" "$SECTION" <<'EOF'
import sys
doc, section = sys.argv[1], sys.argv[2]
lines = open(doc).read().split("\n")
new = open(section).read().rstrip("\n").split("\n")
start = next((i for i, l in enumerate(lines) if l.startswith("## Hydration")), None)
if start is None:
    while lines and lines[-1] == "":
        lines.pop()
    lines += [""] + new
else:
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    rest = lines[end:]
    lines = lines[:start] + new + ([""] + rest if rest else [])
open(doc, "w").write("\n".join(lines).rstrip("\n") + "\n")
EOF
  log "wrote the section \"Hydration\" of $DOC"
fi
