#!/usr/bin/env bash
# Scale: many volumes and deep stacks.
#   A. a store with NVOL volumes (default 1000): mount time (until the mount
#      point answers), time to list it, daemon RSS;
#   B. one volume with DEPTH layers (default 254 = the 255-layer limit with
#      the upper), each snapshot layer holding scattered 4 KiB writes: mount
#      time, first-open time, daemon RSS, and 4 KiB random-read IOPS against
#      the same volume with 1 layer (fio, psync QD1 and libaio QD16, direct).
#
#   bash bench/scale.sh [BUILD_DIR]        env: NVOL, DEPTH, RUNTIME (s per fio job)
# Prints markdown tables. Needs root only for dropping caches (skipped otherwise).
set -euo pipefail
BUILD=${1:-build}
OVBD=$(realpath "$BUILD/src/tool/ovbd")
OVBDFS=$(realpath "$BUILD/src/fuse/ovbdfs")
NVOL=${NVOL:-1000}
DEPTH=${DEPTH:-254}
RUNTIME=${RUNTIME:-10}
W=$(mktemp -d /var/tmp/ovbd-scale-XXXXXX)
cleanup() {
  set +e
  for m in "$W"/mnt*; do mountpoint -q "$m" && fusermount3 -u "$m"; done
  rm -rf "$W"
}
trap cleanup EXIT
now() { date +%s.%N; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.0f", (b - a) * 1000 }'; }
rss_kib() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }
wait_mounted() {
  local deadline=$((SECONDS + 120))
  until mountpoint -q "$1"; do
    ((SECONDS < deadline)) || { echo "mount of $1 timed out" >&2; exit 1; }
    sleep 0.01
  done
}
mount_measure() {  # STORE MNT -> sets MOUNT_MS, PID
  mkdir -p "$2"
  local t0; t0=$(now)
  "$OVBDFS" "$1" "$2" -f &
  PID=$!
  wait_mounted "$2"
  MOUNT_MS=$(ms "$t0" "$(now)")
}

echo "## Scale ($(nproc) cores, $(uname -r))"
echo
# ---- A. many volumes
S=$W/many
"$OVBD" store init "$S" >/dev/null
t0=$(now)
for i in $(seq 1 "$NVOL"); do "$OVBD" volume create "$S" "vol$i" --size 10G >/dev/null; done
CREATE_MS=$(ms "$t0" "$(now)")
mount_measure "$S" "$W/mnt-many"
t0=$(now)
n=$(ls "$W/mnt-many" | wc -l)
LS_MS=$(ms "$t0" "$(now)")
t0=$(now)
dd if="$W/mnt-many/vol$NVOL" of=/dev/null bs=1M count=16 status=none
OPEN_MS=$(ms "$t0" "$(now)")
RSS=$(rss_kib "$PID")
fusermount3 -u "$W/mnt-many"; wait "$PID" || true
echo "| store | volumes listed | create all (s) | mount (ms) | ls (ms) | first read of one volume (ms) | daemon RSS (MiB) |"
echo "|---|---:|---:|---:|---:|---:|---:|"
printf '| %d volumes of 10 GiB | %d | %.1f | %d | %d | %d | %.1f |\n' "$NVOL" "$n" \
  "$(awk -v m="$CREATE_MS" 'BEGIN{print m/1000}')" "$MOUNT_MS" "$LS_MS" "$OPEN_MS" \
  "$(awk -v k="$RSS" 'BEGIN{print k/1024}')"
echo

# ---- B. deep stack
S=$W/deep
"$OVBD" store init "$S" >/dev/null
head -c 1G /dev/urandom >"$W/base.raw"
"$OVBD" volume import "$S" deep "$W/base.raw" >/dev/null
"$OVBD" volume import "$S" flat "$W/base.raw" >/dev/null
rm -f "$W/base.raw"
mkdir -p "$W/mnt-deep"
"$OVBDFS" "$S" "$W/mnt-deep" -f &
PID=$!
wait_mounted "$W/mnt-deep"
# Each layer: 32 scattered 4 KiB writes, then a snapshot (sealing the upper).
python3 - "$W/mnt-deep" "$DEPTH" <<'EOF'
import os, random, sys
mnt, depth = sys.argv[1], int(sys.argv[2])
rng = random.Random(1)
fd = os.open(os.path.join(mnt, "deep"), os.O_WRONLY)
ctl = os.open(os.path.join(mnt, ".control"), os.O_WRONLY)
for i in range(depth - 1):
    for _ in range(32):
        os.pwrite(fd, os.urandom(4096), rng.randrange(262144) * 4096)
    os.write(ctl, f"snapshot deep l{i}\n".encode())
os.close(fd)
os.close(ctl)
EOF
fusermount3 -u "$W/mnt-deep"; wait "$PID" || true
layers=$(python3 -c "import json,sys; print(len(json.load(open('$S/volumes/deep.json'))['lowers']))")
mount_measure "$S" "$W/mnt-deep"
t0=$(now)
dd if="$W/mnt-deep/deep" of=/dev/null bs=4k count=1 status=none
OPEN_MS=$(ms "$t0" "$(now)")
dd if="$W/mnt-deep/flat" of=/dev/null bs=4k count=1 status=none
RSS=$(rss_kib "$PID")
echo "| volume | layers | mount (ms) | first read (ms, opens every layer) | daemon RSS with both open (MiB) |"
echo "|---|---:|---:|---:|---:|"
printf '| deep | %d | %d | %d | %.1f |\n' "$layers" "$MOUNT_MS" "$OPEN_MS" \
  "$(awk -v k="$RSS" 'BEGIN{print k/1024}')"
echo
fio_iops() {  # FILE ENGINE IODEPTH JOBS
  fio --name=r --filename="$1" --rw=randread --bs=4k --direct=1 --ioengine="$2" \
    --iodepth="$3" --numjobs="$4" --group_reporting --time_based --runtime="$RUNTIME" \
    --output-format=json 2>/dev/null | python3 -c "import json,sys; print(int(json.load(sys.stdin)['jobs'][0]['read']['iops']))"
}
echo "| 4k randread | 1 layer (IOPS) | $layers layers (IOPS) | deep/flat |"
echo "|---|---:|---:|---:|"
for spec in "psync 1 1" "libaio 16 2"; do
  set -- $spec
  f=$(fio_iops "$W/mnt-deep/flat" "$1" "$2" "$3")
  d=$(fio_iops "$W/mnt-deep/deep" "$1" "$2" "$3")
  printf '| %s QD%s x%s | %d | %d | %.2f |\n' "$1" "$2" "$3" "$f" "$d" "$(awk -v a="$d" -v b="$f" 'BEGIN{print a/b}')"
done
fusermount3 -u "$W/mnt-deep"; wait "$PID" || true
