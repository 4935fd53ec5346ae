#!/usr/bin/env bash
# registry_compare.sh: reads of volumes whose lower layers live in an OCI
# registry, against what bounds them: the transfer of the same blob, the same
# layer stored locally, and pulling the whole image first.
#
#   bash bench/registry_compare.sh [BUILD_DIR]      (BUILD_DIR default: <repo>/build)
#
# Everything runs on 127.0.0.1: a docker-registry (distribution 2.8) started
# by the script with its own config and storage in the work directory, a
# source store A whose snapshots are pushed to it (`ovbd push`: each layer
# goes as an lz4 ZFile blob), and stores that read the images back:
#
#   1. cold sequential read: store B holds `seq`, created from the image of a
#      SIZE_MIB MiB volume (per MiB: 50% random bytes, 40% compressible text,
#      10% never written) with its layer left remote. Each round mounts B
#      with a new, empty cache directory and reads the whole volume,
#      `dd bs=1M iflag=direct`. Against: `curl -o /dev/null` of the same blob
#      (GET /v2/REPO/blobs/sha256:DIGEST), the transfer limit. curl moves the
#      blob (compressed) bytes and the volume read returns uncompressed ones,
#      so two rates are given: volume bytes per second, and blob bytes
#      fetched (the `fetched=` counter of status) per second; the latter is
#      the one compared with curl (goal: ovbdfs/curl >= 0.8). A second
#      reference: the blob fetched in ranged GETs of one 1 MiB cache block
#      each, one after the other (python http.client, one connection), the
#      limit of fetching block by block as the block cache does.
#   2. warm sequential read: the same read again, every block now in the
#      block cache, the page cache dropped before the run (so the cache's
#      files are read from the disk); against store L, the same image
#      created with `--pull` (the blob downloaded into a local layer file),
#      read the same way after the same drop. Goal: warm/local >= 0.9.
#   3. 4 KiB random reads, cold: B mounted with a new, empty cache again;
#      fio randread 4k, direct=1, psync QD1 (RR_QD > 1: libaio at that
#      depth), at most RR_IOS reads or RR_RUNTIME seconds: IOPS, and blob
#      bytes fetched per byte fio read (each miss fetches one cache block).
#   4. cold start of an ext4 image: an EXT4_MIB MiB ext4 filesystem holding
#      TREE_FILES files (TREE_MIB MiB, sizes spread over 4 KiB..8 MiB,
#      random or compressible) pushed as an image; then, on a new store with
#      an empty cache, the time from `ovbd volume create --from` through
#      starting ovbdfs, `mount -o ro,noload,loop` of the volume and reading a
#      fixed set of at most READ_FILES files holding about READ_PCT% of the
#      data (what a container start reads), and the blob bytes fetched;
#      against the same steps with `volume create --from ... --pull` (the
#      whole image downloaded first).
#
# Before every cold run (1, 3, 4) and curl the page cache is dropped and the
# registry's blob file read once, so the registry serves from memory and the
# limit is the HTTP transfer itself; the block cache writes to the same disk
# as everything else (under WORK_PARENT). Each round runs every measurement
# once, the order of the two contenders of each alternating per round; the
# table gives medians over RUNS rounds, and ratios that are medians of the
# per-round ratios. The first round checks what it read against the sources
# (not timed). MiB = 2^20 bytes. Progress and every sample go to stderr;
# stdout gets the command, the machine and the table.
#
# Environment (defaults in brackets; QUICK=1 makes a tiny run of about a
# minute: SIZE_MIB=64 RUNS=1 EXT4_MIB=96 TREE_MIB=48 TREE_FILES=60 RR_RUNTIME=5):
#   SIZE_MIB    [1024]   volume of measurements 1-3
#   RUNS        [3]      rounds
#   RR_QD       [1]      queue depth of measurement 3
#   RR_IOS      [SIZE_MIB/4, at least 64]   reads of measurement 3 at most
#   RR_RUNTIME  [10]     seconds of measurement 3 at most
#   EXT4_MIB    [512]    ext4 image of measurement 4
#   TREE_MIB    [300]    data in it
#   TREE_FILES  [400]    files in it
#   READ_FILES  [20]     files read at the cold start, at most
#   READ_PCT    [10]     share of TREE_MIB they hold, about
#   OVBDFS_OPTS []       extra -o options for ovbdfs
#   VERIFY      [1]      0: do not compare round 1's reads with the sources
#   WORK_PARENT [/var/tmp]  temp directory parent (needs ~5x SIZE_MIB + 4x EXT4_MIB)
#   SEED        [1]
#
# Needs root (drop_caches, loop mounts), docker-registry, curl, fio, jq,
# python3, mkfs.ext4, fusermount3, mountpoint, cmp, and a usable /dev/fuse.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

use_build_dir "${1:-build}"
QUICK=${QUICK:-0}
if ((QUICK)); then
  q_size=64 q_runs=1 q_ext4=96 q_tree=48 q_files=60 q_rrt=5
else
  q_size=1024 q_runs=3 q_ext4=512 q_tree=300 q_files=400 q_rrt=10
fi
SIZE_MIB=${SIZE_MIB:-$q_size}
RUNS=${RUNS:-$q_runs}
RR_QD=${RR_QD:-1}
RR_IOS=${RR_IOS:-$((SIZE_MIB / 4 > 64 ? SIZE_MIB / 4 : 64))}
RR_RUNTIME=${RR_RUNTIME:-$q_rrt}
EXT4_MIB=${EXT4_MIB:-$q_ext4}
TREE_MIB=${TREE_MIB:-$q_tree}
TREE_FILES=${TREE_FILES:-$q_files}
READ_FILES=${READ_FILES:-20}
READ_PCT=${READ_PCT:-10}
OVBDFS_OPTS=${OVBDFS_OPTS:-}
VERIFY=${VERIFY:-1}
WORK_PARENT=${WORK_PARENT:-/var/tmp}
SEED=${SEED:-1}
# shellcheck disable=SC2034  # read by wait_for (bench/lib.sh)
POLL_S=0.02

require_tools docker-registry curl fio jq python3 mkfs.ext4 fusermount3 mountpoint cmp
[[ $(id -u) == 0 ]] || die "needs root: the page cache is dropped before runs, and ext4 is loop-mounted"
[[ -x $OVBD && -x $OVBDFS ]] || die "no ovbd/ovbdfs in $BUILD (build them first)"
((TREE_MIB * 10 < EXT4_MIB * 8)) || die "TREE_MIB=$TREE_MIB does not fit an ext4 of EXT4_MIB=$EXT4_MIB"
COMMAND=""
((QUICK)) && COMMAND="QUICK=1 "
COMMAND+="SIZE_MIB=$SIZE_MIB RUNS=$RUNS RR_QD=$RR_QD RR_IOS=$RR_IOS RR_RUNTIME=$RR_RUNTIME"
COMMAND+=" EXT4_MIB=$EXT4_MIB TREE_MIB=$TREE_MIB TREE_FILES=$TREE_FILES READ_FILES=$READ_FILES READ_PCT=$READ_PCT SEED=$SEED"
[[ -n $OVBDFS_OPTS ]] && COMMAND+=" OVBDFS_OPTS=$OVBDFS_OPTS"
COMMAND+=" bash bench/registry_compare.sh${1:+ $1}"

# --- workspace and cleanup -----------------------------------------------------
WORK=$(mktemp -d "$WORK_PARENT/ovbd-registry.XXXXXX")
REG_PID=""
KMNT=$WORK/k           # the kernel mount of measurement 4
declare -A DAEMON_PID=() DAEMON_MNT=()
mnt_of() { echo "$WORK/mnt-$1"; }

stop_registry() {
  stop_pid "$REG_PID"
  REG_PID=""
}

# The ext4 mount's loop device goes with it (autoclear); a device left
# attached to a file of the work directory (an interrupted mount) is
# detached by hand.
unmount_kernel() {
  if mountpoint -q "$KMNT" 2>/dev/null; then
    umount "$KMNT" 2>/dev/null || umount -l "$KMNT" 2>/dev/null || true
  fi
  local dev
  for dev in $(losetup -n -O NAME,BACK-FILE 2>/dev/null | awk -v w="$WORK/" 'index($2, w) == 1 { print $1 }'); do
    losetup -d "$dev" 2>/dev/null || true
  done
}

stop_daemon() {
  local name=$1
  stop_fuse "${DAEMON_MNT[$name]:-$(mnt_of "$name")}" "${DAEMON_PID[$name]:-}" 60
  DAEMON_PID[$name]=""
}

cleanup() {
  local rc=$?
  set +e
  unmount_kernel
  for d in "${!DAEMON_PID[@]}"; do stop_daemon "$d"; done
  stop_registry
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

LOAD_START=$(load_average)
# mibs BYTES SECONDS: MiB/s
mibs() { awk -v b="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.1f", b / 1048576 / s; else print 0 }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }

# --- the registry ----------------------------------------------------------------
REG_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$WORK/registry-data"
cat >"$WORK/registry.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $WORK/registry-data
http:
  addr: 127.0.0.1:$REG_PORT
YML
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REG_PID=$!
registry_up() {
  alive "$REG_PID" || die "docker-registry exited: $(cat "$WORK/registry.log")"
  curl -sf -o /dev/null "http://127.0.0.1:$REG_PORT/v2/"
}
wait_for 30 registry_up || die "docker-registry does not answer on 127.0.0.1:$REG_PORT"
REG=127.0.0.1:$REG_PORT
log "registry_compare: docker-registry on $REG, work directory $WORK"
# registry_blob REPO-less DIGEST: the registry's own file of a blob.
registry_blob() {
  local hex=${1#sha256:}
  echo "$WORK/registry-data/docker/registry/v2/blobs/sha256/${hex:0:2}/$hex/data"
}

# --- daemons -------------------------------------------------------------------------
# start_daemon NAME STORE CACHE_DIR: ovbdfs on mnt-NAME with that block cache.
start_daemon() {
  local name=$1 store=$2 cache=$3 mnt opts
  mnt=$(mnt_of "$name")
  mkdir -p "$mnt"
  opts="cache_dir=$cache${OVBDFS_OPTS:+,$OVBDFS_OPTS}"
  "$OVBDFS" "$store" "$mnt" -f -o "$opts" >>"$WORK/ovbdfs-$name.log" 2>&1 &
  DAEMON_PID[$name]=$!
  DAEMON_MNT[$name]=$mnt
  wait_mounted 60 "$!" "$mnt" "$WORK/ovbdfs-$name.log" "ovbdfs ($name)"
}

# remote_stats MNT DIGEST: "size cached hits misses fetched errors" of the
# blob in the daemon's status (zeros when the cache has nothing of it yet).
remote_stats() {
  python3 - "$1/.control" "$2" <<'EOF'
import os, re, sys
fd = os.open(sys.argv[1], os.O_RDWR)
os.write(fd, b"status\n")
out = b""
while True:
    b = os.read(fd, 1 << 16)
    if not b:
        break
    out += b
os.close(fd)
pat = r"^remote %s size=(\d+) cached=(\d+) hits=(\d+) misses=(\d+) fetched=(\d+) errors=(\d+)"
m = re.search(pat % re.escape(sys.argv[2]), out.decode(), re.M)
print(" ".join(m.groups()) if m else "0 0 0 0 0 0")
EOF
}
stat_field() {  # stat_field "STATS" N (1 size, 2 cached, 3 hits, 4 misses, 5 fetched, 6 errors)
  awk -v n="$2" '{ print $n }' <<<"$1"
}

# The digest of the only remote layer of STORE (its stub's name).
remote_digest() {
  local stubs
  stubs=$(find "$1/layers" -name 'sha256-*.remote' -printf '%f\n')
  [[ $(wc -l <<<"$stubs") == 1 && -n $stubs ]] || die "$1 should have one remote layer, has: $stubs"
  stubs=${stubs#sha256-}
  echo "sha256:${stubs%.remote}"
}

# --- the sources: a raw volume and an ext4 image, pushed ----------------------------------
RAW=$WORK/seq.raw
log "making a ${SIZE_MIB} MiB volume image"
make_mixed_image "$RAW" "$SIZE_MIB" "$SEED" 0.50

TREE=$WORK/tree
EXT4=$WORK/fs.img
log "making an ext4 image of ${EXT4_MIB} MiB with $TREE_FILES files (${TREE_MIB} MiB)"
# Writes the tree and, to $WORK/read.list, the files a cold start reads.
python3 - "$TREE" "$TREE_MIB" "$TREE_FILES" "$READ_FILES" "$READ_PCT" "$SEED" "$WORK/read.list" <<'EOF'
import math, os, random, sys
root, tree_mib, nfiles, nread, pct, seed, listfile = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
    int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
r = random.Random(seed + 1)
# Sizes log-uniform in 4 KiB..8 MiB, scaled to the total asked for.
raw = [math.exp(r.uniform(math.log(4 << 10), math.log(8 << 20))) for _ in range(nfiles)]
scale = (tree_mib << 20) / sum(raw)
sizes = [max(1, int(s * scale)) for s in raw]
words = [bytes(r.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(2, 9))) for _ in range(800)]
text = b" ".join(r.choice(words) for _ in range(400000))
dirs = ["."]
names = []
for i, size in enumerate(sizes):
    if i % 12 == 0:
        d = os.path.join(r.choice(dirs), "d%03d" % i)
        os.makedirs(os.path.join(root, d), exist_ok=True)
        dirs.append(d)
    name = os.path.join(r.choice(dirs), "f%04d" % i)
    with open(os.path.join(root, name), "wb") as f:
        left = size
        compressible = r.random() < 0.4
        while left > 0:
            n = min(left, 1 << 20)
            if compressible:
                o = r.randrange(len(text) - n)
                f.write(text[o:o + n])
            else:
                f.write(r.randbytes(n))
            left -= n
    names.append((name, size))
# The cold start's files: in a fixed random order, each taken while the sum
# stays within pct% of the data, until there are nread.
goal = sum(sizes) * pct / 100
order = names[:]
r.shuffle(order)
chosen, total = [], 0
for name, size in order:
    if len(chosen) == nread:
        break
    if total + size <= goal:
        chosen.append(name)
        total += size
with open(listfile, "w") as f:
    for name in chosen:
        f.write(name[2:] + "\n")
EOF
mapfile -t READ_LIST <"$WORK/read.list"
READ_BYTES=0
for f in "${READ_LIST[@]}"; do READ_BYTES=$((READ_BYTES + $(stat -c %s "$TREE/$f"))); done
TREE_BYTES=$(du -sb "$TREE" | cut -f1)
truncate -s "${EXT4_MIB}M" "$EXT4"
mkfs.ext4 -q -F -d "$TREE" "$EXT4" >/dev/null

# Each image is a volume's only layer: an empty volume, the image written
# into it through the mount (its never-written MiBs skipped), snapshotted.
# (An imported volume's snapshot would have two: the import and the sealed,
# empty upper.)
A=$WORK/A
"$OVBD" store init "$A" >/dev/null
"$OVBD" volume create "$A" seq --size "${SIZE_MIB}M" >/dev/null
"$OVBD" volume create "$A" fs --size "${EXT4_MIB}M" >/dev/null
start_daemon A "$A" "$WORK/cache-A"
dd if="$RAW" of="$(mnt_of A)/seq" bs=1M conv=sparse,notrunc,fsync oflag=direct status=none
dd if="$EXT4" of="$(mnt_of A)/fs" bs=1M conv=sparse,notrunc,fsync oflag=direct status=none
"$OVBD" snapshot "$A" seq v1 >/dev/null
"$OVBD" snapshot "$A" fs v1 >/dev/null
stop_daemon A
IMG_SEQ=registry://$REG/bench/seq:v1
IMG_FS=registry://$REG/bench/fs:v1
log "pushing seq@v1 and fs@v1"
for v in seq fs; do
  TMPDIR=$WORK "$OVBD" --cache-dir "$WORK/cache-push" push "$A" "$v@v1" "registry://$REG/bench/$v:v1" >"$WORK/push-$v.out" 2>&1 ||
    die "push of $v failed: $(cat "$WORK/push-$v.out")"
done
"$OVBD" delete "$A" fs >/dev/null
rm -f "$EXT4"

# --- the reading stores ----------------------------------------------------------------
B=$WORK/B  # seq, lazy
L=$WORK/L  # seq, pulled
"$OVBD" store init "$B" >/dev/null
"$OVBD" store init "$L" >/dev/null
"$OVBD" --cache-dir "$WORK/cache-create" volume create "$B" seq --from "$IMG_SEQ" >/dev/null
"$OVBD" --cache-dir "$WORK/cache-create" volume create "$L" seq --from "$IMG_SEQ" --pull >/dev/null
rm -rf "$WORK/cache-create"
SEQ_DIGEST=$(remote_digest "$B")
SEQ_BLOB=$(registry_blob "$SEQ_DIGEST")
[[ -f $SEQ_BLOB ]] || die "no registry file $SEQ_BLOB"
SEQ_BLOB_BYTES=$(stat -c %s "$SEQ_BLOB")
VOL_BYTES=$((SIZE_MIB << 20))
CURL_URL="http://$REG/v2/bench/seq/blobs/$SEQ_DIGEST"
start_daemon L "$L" "$WORK/cache-L"
log "seq: volume $(mib "$VOL_BYTES") MiB, blob $(mib "$SEQ_BLOB_BYTES") MiB ($SEQ_DIGEST)"

# A fresh, empty block cache for B: a new daemon over a new directory.
restart_b() {
  stop_daemon B
  rm -rf "$WORK/cache-B"
  start_daemon B "$B" "$WORK/cache-B"
  # Open the volume once (its index is fetched then), so what is measured
  # is the reads.
  : <"$(mnt_of B)/seq"
}

# dd_read FILE: seconds to read FILE whole, 1 MiB O_DIRECT reads.
dd_read() {
  local t0 t1
  t0=$(now)
  dd if="$1" of=/dev/null bs=1M iflag=direct status=none || die "dd of $1 failed"
  t1=$(now)
  elapsed "$t0" "$t1"
}

declare -A R=()  # "key round" -> value

run_curl() {
  local r=$1 out code bytes secs
  drop_caches
  cat "$SEQ_BLOB" >/dev/null
  out=$(curl -s -o /dev/null -w '%{http_code} %{size_download} %{time_total}' "$CURL_URL") || die "curl of $CURL_URL failed"
  read -r code bytes secs <<<"$out"
  [[ $code == 200 && $bytes == "$SEQ_BLOB_BYTES" ]] || die "curl: HTTP $code, $bytes bytes (want 200, $SEQ_BLOB_BYTES)"
  R["curl $r"]=$(mibs "$bytes" "$secs")
  log "$(printf 'round %d curl           %7.2f s  %8s MiB/s blob' "$r" "$secs" "${R["curl $r"]}")"
}

# The limit of the block cache's own way of fetching: the whole blob in
# ranged GETs of one cache block each, one after the other on one kept-alive
# connection (python's http.client, the least work a client can do).
CACHE_BLOCK=$((1 << 20))
run_ranged() {
  local r=$1 secs
  drop_caches
  cat "$SEQ_BLOB" >/dev/null
  secs=$(python3 - "$REG" "/v2/bench/seq/blobs/$SEQ_DIGEST" "$SEQ_BLOB_BYTES" "$CACHE_BLOCK" <<'EOF'
import http.client, sys, time
host, path, size, chunk = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
c = http.client.HTTPConnection(host.split(":")[0], int(host.split(":")[1]))
t0 = time.monotonic()
for off in range(0, size, chunk):
    c.request("GET", path, headers={"Range": "bytes=%d-%d" % (off, min(size, off + chunk) - 1)})
    resp = c.getresponse()
    body = resp.read()
    if resp.status != 206 or len(body) != min(chunk, size - off):
        sys.exit("ranged GET at %d: HTTP %d, %d bytes" % (off, resp.status, len(body)))
print("%.3f" % (time.monotonic() - t0))
EOF
  ) || die "ranged GETs failed"
  R["ranged $r"]=$(mibs "$SEQ_BLOB_BYTES" "$secs")
  log "$(printf 'round %d ranged GETs    %7.2f s  %8s MiB/s blob' "$r" "$secs" "${R["ranged $r"]}")"
}

run_cold() {
  local r=$1 secs st0 st1 fetched
  restart_b
  drop_caches
  cat "$SEQ_BLOB" >/dev/null
  st0=$(remote_stats "$(mnt_of B)" "$SEQ_DIGEST")
  secs=$(dd_read "$(mnt_of B)/seq")
  st1=$(remote_stats "$(mnt_of B)" "$SEQ_DIGEST")
  fetched=$(($(stat_field "$st1" 5) - $(stat_field "$st0" 5)))
  (($(stat_field "$st1" 6) == 0)) || die "cold read: the cache counted errors: $st1"
  R["cold_s $r"]=$secs
  R["cold_vol $r"]=$(mibs "$VOL_BYTES" "$secs")
  R["cold_blob $r"]=$(mibs "$fetched" "$secs")
  R["cold_fetched $r"]=$fetched
  log "$(printf 'round %d ovbdfs cold    %7.2f s  %8s MiB/s volume, %8s MiB/s blob (%s MiB fetched)' \
    "$r" "$secs" "${R["cold_vol $r"]}" "${R["cold_blob $r"]}" "$(mib "$fetched")")"
}

run_warm() {
  local r=$1 secs st0 st1
  drop_caches
  st0=$(remote_stats "$(mnt_of B)" "$SEQ_DIGEST")
  secs=$(dd_read "$(mnt_of B)/seq")
  st1=$(remote_stats "$(mnt_of B)" "$SEQ_DIGEST")
  R["warm $r"]=$(mibs "$VOL_BYTES" "$secs")
  R["warm_fetched $r"]=$(($(stat_field "$st1" 5) - $(stat_field "$st0" 5)))
  log "$(printf 'round %d ovbdfs warm    %7.2f s  %8s MiB/s volume (%s bytes fetched)' "$r" "$secs" "${R["warm $r"]}" "${R["warm_fetched $r"]}")"
  if ((VERIFY && r == 1)); then cmp "$(mnt_of B)/seq" "$RAW" >&2 || die "the lazy volume differs from the image"; fi
}

run_local() {
  local r=$1 secs
  drop_caches
  secs=$(dd_read "$(mnt_of L)/seq")
  R["local $r"]=$(mibs "$VOL_BYTES" "$secs")
  log "$(printf 'round %d ovbdfs local   %7.2f s  %8s MiB/s volume' "$r" "$secs" "${R["local $r"]}")"
  if ((VERIFY && r == 1)); then cmp "$(mnt_of L)/seq" "$RAW" >&2 || die "the pulled volume differs from the image"; fi
}

RR_ENGINE=(--ioengine=psync --iodepth=1)
RR_LABEL="psync QD1"
if ((RR_QD > 1)); then
  RR_ENGINE=(--ioengine=libaio --iodepth="$RR_QD")
  RR_LABEL="libaio QD$RR_QD"
fi
run_random() {
  local r=$1 st0 st1 out=$WORK/rr-$1.json fetched read hits misses
  restart_b
  drop_caches
  cat "$SEQ_BLOB" >/dev/null
  st0=$(remote_stats "$(mnt_of B)" "$SEQ_DIGEST")
  fio --name=rr4k --filename="$(mnt_of B)/seq" --rw=randread --bs=4k "${RR_ENGINE[@]}" --direct=1 \
    --invalidate=0 --number_ios="$RR_IOS" --runtime="$RR_RUNTIME" --randseed=$((SEED + r)) \
    --output-format=json >"$out" || die "fio failed"
  st1=$(remote_stats "$(mnt_of B)" "$SEQ_DIGEST")
  fetched=$(($(stat_field "$st1" 5) - $(stat_field "$st0" 5)))
  hits=$(($(stat_field "$st1" 3) - $(stat_field "$st0" 3)))
  misses=$(($(stat_field "$st1" 4) - $(stat_field "$st0" 4)))
  read=$(jq '.jobs[0].read.io_bytes' "$out")
  R["rr_iops $r"]=$(fio_value "$out" read.iops)
  R["rr_ios $r"]=$((read / 4096))
  R["rr_per $r"]=$(awk -v f="$fetched" -v b="$read" 'BEGIN { printf "%.1f", (b > 0) ? f / b : 0 }')
  R["rr_miss $r"]=$(awk -v h="$hits" -v m="$misses" 'BEGIN { printf "%.0f", (h + m > 0) ? 100 * m / (h + m) : 0 }')
  R["rr_fetched $r"]=$fetched
  log "$(printf 'round %d ovbdfs 4k rand %7s IOPS, %d reads, %s MiB fetched (%s bytes per byte read), %s%% of block lookups missed' \
    "$r" "${R["rr_iops $r"]}" "${R["rr_ios $r"]}" "$(mib "$fetched")" "${R["rr_per $r"]}" "${R["rr_miss $r"]}")"
}

# One cold start: KIND lazy or pull, on a new store with a new cache.
run_start() {
  local kind=$1 r=$2 st=$WORK/S-$1-$2 cache=$WORK/cache-S-$1-$2 name=S-$1 pull=() t0 t1 t2 f stats
  [[ $kind == pull ]] && pull=(--pull)
  "$OVBD" store init "$st" >/dev/null
  mkdir -p "$KMNT"
  drop_caches
  cat "$FS_BLOB" >/dev/null
  t0=$(now)
  "$OVBD" --cache-dir "$cache" volume create "$st" fs --from "$IMG_FS" "${pull[@]}" >/dev/null
  t1=$(now)
  start_daemon "$name" "$st" "$cache"
  mount -o ro,noload,loop "$(mnt_of "$name")/fs" "$KMNT"
  for f in "${READ_LIST[@]}"; do cat "$KMNT/$f"; done >/dev/null
  t2=$(now)
  stats=$(remote_stats "$(mnt_of "$name")" "$FS_DIGEST")
  if ((VERIFY && r == 1)); then
    for f in "${READ_LIST[@]}"; do cmp "$KMNT/$f" "$TREE/$f" >&2 || die "$kind start: $f differs"; done
  fi
  unmount_kernel
  stop_daemon "$name"
  R["start_${kind}_s $r"]=$(elapsed "$t0" "$t2")
  R["start_${kind}_create $r"]=$(elapsed "$t0" "$t1")
  local note=""
  if [[ $kind == lazy ]]; then
    # The cache was empty and nothing was evicted: what it holds is what
    # the create (layer validation) and the daemon fetched.
    R["start_lazy_fetched $r"]=$(mib "$(stat_field "$stats" 2)")
    note=", ${R["start_lazy_fetched $r"]} MiB fetched"
  fi
  rm -rf "$st" "$cache"
  log "$(printf 'round %d cold start %-4s %7.2f s (create %.2f s)%s' "$r" "$kind" "${R["start_${kind}_s $r"]}" \
    "${R["start_${kind}_create $r"]}" "$note")"
}

# The ext4 image's blob: a throwaway create of the image names it.
"$OVBD" store init "$WORK/probe" >/dev/null
"$OVBD" --cache-dir "$WORK/cache-probe" volume create "$WORK/probe" fs --from "$IMG_FS" >/dev/null
FS_DIGEST=$(remote_digest "$WORK/probe")
rm -rf "$WORK/probe" "$WORK/cache-probe"
FS_BLOB=$(registry_blob "$FS_DIGEST")
FS_BLOB_BYTES=$(stat -c %s "$FS_BLOB")
log "fs: ext4 $EXT4_MIB MiB, blob $(mib "$FS_BLOB_BYTES") MiB; a cold start reads ${#READ_LIST[@]} files, $(mib "$READ_BYTES") MiB"

for ((r = 1; r <= RUNS; r++)); do
  if ((r % 2)); then run_curl "$r"; run_ranged "$r"; run_cold "$r"; else run_cold "$r"; run_ranged "$r"; run_curl "$r"; fi
  if ((r % 2)); then run_warm "$r"; run_local "$r"; else run_local "$r"; run_warm "$r"; fi
  run_random "$r"
  if ((r % 2)); then run_start lazy "$r"; run_start pull "$r"; else run_start pull "$r"; run_start lazy "$r"; fi
done
LOAD_END=$(load_average)

# --- report ------------------------------------------------------------------------------
# med KEY [FORMAT]: the median of R["KEY round"] over the rounds.
med() {
  local r vals=""
  for ((r = 1; r <= RUNS; r++)); do vals+="${R["$1 $r"]:-} "; done
  median <<<"$vals" | awk -v f="${2:-%.1f}" '{ printf f, $1 }'
}
# ratio A B: the median over the rounds of R[A]/R[B].
ratio() { median_ratio R "$RUNS" "$1" "$2"; }
samples() {
  local r vals=""
  for ((r = 1; r <= RUNS; r++)); do vals+="${R["$1 $r"]:-–}, "; done
  echo "${vals%, }"
}

report_head "Layers in a registry (\`bench/registry_compare.sh\`)" "$COMMAND" "$LOAD_START" "$LOAD_END"
echo "ovbdfs commit $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')${OVBDFS_OPTS:+ (-o $OVBDFS_OPTS)}; $(docker-registry --version | awk '{ print $1, $3 }'), on 127.0.0.1; curl $(curl --version | awk 'NR == 1 { print $2 }'); fio $(fio --version | sed 's/^fio-//')."
echo
echo "Volume \`seq\`: $(mib "$VOL_BYTES") MiB (per MiB: 50% random, 40% compressible text, 10% never written), pushed as one lz4 ZFile blob of $(mib "$SEQ_BLOB_BYTES") MiB; block cache blocks of 1 MiB. ext4 image: $EXT4_MIB MiB holding ${TREE_FILES} files ($(mib "$TREE_BYTES") MiB; 60% of them random, 40% text), blob $(mib "$FS_BLOB_BYTES") MiB; a cold start reads ${#READ_LIST[@]} of the files ($(mib "$READ_BYTES") MiB)."
echo "Before every cold run and every curl the page cache is dropped and the registry's blob file read once (the registry serves from memory); before every warm and local run the page cache is dropped. Medians of $RUNS round(s); ratios are medians of the per-round ratios. MiB = 2^20 bytes."
echo
echo "| measurement | ovbdfs | reference | ratio | goal | per round (ovbdfs; reference) |"
echo "|---|---:|---:|---:|---:|---|"
echo "| 1. cold sequential read, dd 1M O_DIRECT, empty cache: volume bytes (MiB/s) | $(med cold_vol) | – | – | – | $(samples cold_vol) |"
echo "| 1. the same: blob bytes fetched (\`fetched=\`) per second (MiB/s), against curl of the blob (**the compared ratio**) | $(med cold_blob) | $(med curl) | $(ratio cold_blob curl) | ≥ 0.8 | $(samples cold_blob); $(samples curl) |"
echo "| 1. the same, against ranged GETs of the blob, one 1 MiB cache block each, one at a time (the limit of fetching block by block) | $(med cold_blob) | $(med ranged) | $(ratio cold_blob ranged) | – | $(samples cold_blob); $(samples ranged) |"
echo "| 2. warm sequential read, every block cached, page cache dropped (MiB/s), against the pulled (local) layer | $(med warm) | $(med local) | $(ratio warm local) | ≥ 0.9 | $(samples warm); $(samples local) |"
echo "| 3. 4k randread $RR_LABEL, direct, empty cache, ≤ $RR_IOS reads or ${RR_RUNTIME} s (IOPS) | $(med rr_iops %.0f) | – | – | – | $(samples rr_iops) |"
echo "| 3. the same: blob bytes fetched per byte read | $(med rr_per) | – | – | – | $(samples rr_per) |"
echo "| 4. cold start: \`create --from\`, ovbdfs, ext4 mount, read the files (s), against the same with \`--pull\` | $(med start_lazy_s %.2f) | $(med start_pull_s %.2f) | $(ratio start_pull_s start_lazy_s) | – | $(samples start_lazy_s); $(samples start_pull_s) |"
echo "| 4. of which \`volume create\` (s) | $(med start_lazy_create %.2f) | $(med start_pull_create %.2f) | – | – | $(samples start_lazy_create); $(samples start_pull_create) |"
echo "| 4. blob bytes fetched (MiB), against the whole blob | $(med start_lazy_fetched) | $(mib "$FS_BLOB_BYTES") | – | – | $(samples start_lazy_fetched) |"
echo
echo "Ratios: 1 is ovbdfs's blob bytes per second over curl's (curl moves the same compressed bytes; the volume-bytes rate also counts the holes and the decompression, so it is not compared); 2 is warm over local; 4 is the pull's time over the lazy start's (above 1: the lazy start is faster)."
echo "Measurement 3: $(med rr_ios %.0f) reads per run (median), $(med rr_miss %.0f)% of their block lookups were misses (the rest found a block an earlier read of the run had fetched); $(med rr_fetched %.0f | awk '{ printf "%.1f", $1 / 1048576 }') MiB fetched per run. Warm runs fetched $(samples warm_fetched) bytes."
