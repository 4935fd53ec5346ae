#!/usr/bin/env bash
# Layers in a registry: push, lazy reads through the block cache, restart,
# hydration, and the registry going away.
#
# A real docker-registry (Debian's distribution 2.8) on 127.0.0.1 with its
# own config and storage. "Machine A" (store A) makes an ext4 image with a
# tree of random files, imports it (an uncompressed LSMT layer), writes a
# marker MiB past the filesystem's end through the mount, snapshots, and
# pushes the snapshot: both layers go as ZFile blobs (compressed on the way).
# Pushing again uploads nothing.
# "Machine B" (store B, its own cache) creates a volume from the image with
# its layers left remote, mounts it, and loop-mounts the ext4 read-only:
#  - one file read first: what crossed the network (status: fetched=) is a
#    small part of the blobs, so only touched blocks were fetched;
#  - then the whole tree matches machine A's, and the marker MiB is there;
#  - after a daemon restart the same reads fetch nothing (the cache
#    persists);
#  - with the registry stopped, a second volume over the same image reads
#    what the cache holds; a daemon with an empty cache of its own fails the
#    read with EIO within the configured timeout while .control and stat
#    still answer, and reads once the registry is back (same port, same
#    storage);
#  - `ovbd hydrate --wait`, then the registry stopped for good and the
#    cache directory removed: the hydrated volume reads the whole tree.
# `ovbd check` is clean on both stores at the end.
#
# E2E_CORRUPT=1 flips a byte of a pushed blob in the registry's storage:
# the lazy read of it must then fail (never served), so the test fails.
. "$(dirname "$0")/lib.sh"
require_root "loop devices and kernel mounts"
require_fuse
require_loop
require_cmd docker-registry mkfs.ext4 e2fsck
e2e_init

W=$E2E_WORK
MiB=$((1 << 20))

REG_PORT=
REG_PID=
# start_registry [PORT]: docker-registry on 127.0.0.1 (a free port, or PORT),
# storage in $W/registry-data, waits until /v2/ answers.
start_registry() {
  local port=${1:-}
  if [[ -z $port ]]; then
    port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  fi
  mkdir -p "$W/registry-data"
  cat >"$W/registry.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $W/registry-data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
YML
  docker-registry serve "$W/registry.yml" >>"$W/registry.log" 2>&1 &
  REG_PID=$!
  E2E_PIDS+=("$REG_PID")
  REG_PORT=$port
  wait_until 30 "registry answers on $port" \
    "$PY" -c 'import sys,urllib.request; urllib.request.urlopen("http://127.0.0.1:%s/v2/" % sys.argv[1], timeout=2)' "$port" ||
    { cat "$W/registry.log" >&2; fail "docker-registry did not start"; }
  log "docker-registry on 127.0.0.1:$port (pid $REG_PID)"
}
stop_registry() {
  kill -TERM "$REG_PID"
  reap "$REG_PID" || true
  REG_PID=
  log "docker-registry stopped"
}

# remote_sum STORE_MNT FIELD: the sum of FIELD= over the remote lines of
# the mount's status report (the block a fresh read of .control ends with;
# the most recent command's result before it is left out).
remote_sum() {
  "$PY" -c '
import re, sys
t = open(sys.argv[1] + "/.control").read()
heads = list(re.finditer(r"^volumes: \d+$", t, re.M))
t = t[heads[-1].start():] if heads else t
print(sum(int(m) for m in re.findall(r"^remote \S+ .*\b" + sys.argv[2] + r"=(\d+)", t, re.M)))' "$1" "$2"
}
# fetched STORE_MNT: bytes fetched from the network since the daemon started.
fetched() { remote_sum "$1" fetched; }
# blob_bytes STORE_MNT: the size of the remote blobs read since it started.
blob_bytes() { remote_sum "$1" size; }

start_registry
IMAGE=registry://127.0.0.1:$REG_PORT/e2e/base

# ---- machine A: an ext4 image with a tree; import, a write, snapshot, push ----------
make_tree "$W/tree" 40 1024 7
tree_manifest "$W/tree" >"$W/tree.manifest"
truncate -s 64M "$W/base.img"
mkfs.ext4 -q -F -d "$W/tree" "$W/base.img" 56M
"$OVBD" store init "$W/A" >/dev/null
"$OVBD" volume import "$W/A" base "$W/base.img" >/dev/null
start_daemon "$W/A" "$W/mA"
head -c $MiB /dev/urandom >"$W/marker"
dd if="$W/marker" of="$W/mA/base" bs=1M seek=60 conv=notrunc,fsync status=none
echo "snapshot base v1" >"$W/mA/.control"
grep -q 'ok: snapshot' "$W/mA/.control" || { cat "$W/mA/.control" >&2; fail "snapshot on A"; }
"$OVBD" push "$W/A" base@v1 "$IMAGE:v1" >"$W/push1.out" 2>&1 || { cat "$W/push1.out" >&2; fail "push"; }
grep -c ': pushed' "$W/push1.out" | grep -qx 2 || { cat "$W/push1.out" >&2; fail "push did not upload both layers"; }
"$OVBD" push "$W/A" base@v1 "$IMAGE:v1" >"$W/push2.out" 2>&1 || fail "second push"
grep -q ': pushed' "$W/push2.out" && { cat "$W/push2.out" >&2; fail "second push uploaded again"; }
stop_daemon "$W/mA"
log "pushed base@v1 (2 layers) to $IMAGE:v1"

if [[ ${E2E_CORRUPT:-0} == 1 ]]; then
  # The registry stores blobs by digest under blobs/sha256/XX/DIGEST/data.
  f=$(find "$W/registry-data" -path '*/blobs/sha256/*/data' -size +100k | head -1)
  printf '\xff' | dd of="$f" bs=1 seek=70000 conv=notrunc status=none
  log "E2E_CORRUPT: flipped a byte of $f"
fi

# ---- machine B: create from the image, lazily --------------------------------------
cat >"$W/registry.json" <<JSON
{"timeout_ms": 2000, "connect_timeout_ms": 1000, "retries": 1}
JSON
RC=(--cache-dir "$W/cacheB" --registry-config "$W/registry.json")
"$OVBD" store init "$W/B" >/dev/null
"$OVBD" "${RC[@]}" volume create "$W/B" vm --from "$IMAGE:v1" >/dev/null || fail "create --from"
"$OVBD" "${RC[@]}" volume create "$W/B" vm2 --from "$IMAGE:v1" >/dev/null || fail "create vm2 --from"
[[ $(layers_of "$W/B" vm) == 2 ]] || fail "vm should have the image's 2 layers"
ls "$W/B/layers" | grep -q '\.layer$' && fail "a lazy volume's layers were downloaded"
DOPTS=(-o "cache_dir=$W/cacheB,registry_config=$W/registry.json")
start_daemon "$W/B" "$W/mB" "${DOPTS[@]}"
loop_mount_ro "$W/mB/vm" "$W/k"
f1=$(cd "$W/tree" && find . -type f -size +200k | LC_ALL=C sort | head -1)
cmp "$W/tree/$f1" "$W/k/$f1" || fail "first file differs"
one=$(fetched "$W/mB")
total=$(blob_bytes "$W/mB")
log "one file read: fetched $one of $total blob bytes"
((one > 0 && one * 2 < total)) || fail "reading one file fetched $one of $total bytes (want some, under half)"
expect_tree "$W/k" "$W/tree.manifest" "$W/B.manifest" "the tree on B differs"
cmp <(dd if="$W/mB/vm" bs=1M skip=60 count=1 status=none) "$W/marker" || fail "marker MiB differs"
all=$(fetched "$W/mB")
# .metrics counts the same per blob.
met=$("$PY" -c '
import re, sys
t = open(sys.argv[1] + "/.metrics").read()
print(sum(int(v) for v in re.findall(r"^ovbdfs_remote_fetched_bytes_total\{layer=\"sha256:[0-9a-f]{64}\"\} (\d+)$", t, re.M)))' "$W/mB")
assert_eq "$all" "$met" "bytes fetched: status against .metrics"
# The mounted daemon holds the cache: ovbd says so, and where to look.
if "$OVBD" --cache-dir "$W/cacheB" cache status >"$W/cs.out" 2>&1; then
  fail "ovbd cache status opened a cache a mounted daemon holds"
fi
grep -q 'a mounted ovbdfs uses it' "$W/cs.out" || fail "ovbd cache status of a held cache: $(cat "$W/cs.out")"
loop_umount "$W/k"
stop_daemon "$W/mB"

# ---- restart: the same reads fetch nothing --------------------------------------------
start_daemon "$W/B" "$W/mB" "${DOPTS[@]}"
sync; echo 3 >/proc/sys/vm/drop_caches
loop_mount_ro "$W/mB/vm" "$W/k"
expect_tree "$W/k" "$W/tree.manifest" "$W/B2.manifest" "the tree differs after restart"
again=$(fetched "$W/mB")
((again == 0)) || fail "after a restart the same reads fetched $again bytes (first time: $all)"
loop_umount "$W/k"
log "after restart: whole tree read, 0 bytes fetched (first time $all)"

# ---- registry down: cached blocks serve, others fail in bounded time ----------------
stop_registry
cmp <(dd if="$W/mB/vm2" bs=1M skip=60 count=1 status=none) "$W/marker" || fail "cached marker via vm2"
stop_daemon "$W/mB"
# A daemon with an empty cache of its own: nothing of the image is cached.
start_daemon "$W/B" "$W/mB" -o "cache_dir=$W/cacheC,registry_config=$W/registry.json"
start=${EPOCHREALTIME/./}
if dd if="$W/mB/vm2" of=/dev/null bs=4k count=1 iflag=direct status=none 2>"$W/eio.err"; then
  fail "a read of a never-fetched block succeeded with the registry down"
fi
el=$(((${EPOCHREALTIME/./} - start) / 1000))
grep -q 'Input/output error' "$W/eio.err" || { cat "$W/eio.err" >&2; fail "expected EIO"; }
((el < 15000)) || fail "the failing read took ${el} ms"
timeout 5 cat "$W/mB/.control" >/dev/null || fail ".control stuck while the registry is down"
timeout 5 stat "$W/mB/vm" >/dev/null || fail "stat stuck while the registry is down"
log "registry down: uncached read failed with EIO in ${el} ms, .control and stat answered"
start_registry "$REG_PORT"
cmp <(dd if="$W/mB/vm2" bs=1M skip=60 count=1 status=none) "$W/marker" || fail "read after the registry came back"
stop_daemon "$W/mB"
start_daemon "$W/B" "$W/mB" "${DOPTS[@]}"

# ---- hydrate, then no registry and no cache -----------------------------------------
"$OVBD" hydrate "$W/B" vm --wait >"$W/hyd.out" 2>&1 || { cat "$W/hyd.out" >&2; fail "hydrate --wait"; }
[[ $(layers_of "$W/B" vm) == 0 ]] || fail "vm still has lowers after hydration"
grep -qx 'ovbdfs_volume_hydrate_state{volume="vm",state="done"} 1' "$W/mB/.metrics" ||
  fail "hydrated vm: .metrics does not say so: $(grep hydrate_state "$W/mB/.metrics")"
stop_registry
"$OVBD" delete "$W/B" vm2 >/dev/null
stop_daemon "$W/mB"
rm -rf "$W/cacheB"
start_daemon "$W/B" "$W/mB" "${DOPTS[@]}"
loop_mount_ro "$W/mB/vm" "$W/k"
expect_tree "$W/k" "$W/tree.manifest" "$W/B3.manifest" "the hydrated tree differs"
loop_umount "$W/k"
stop_daemon "$W/mB"
log "hydrated vm reads the whole tree with no registry and no cache"

"$OVBD" check "$W/A" >/dev/null || fail "check A"
"$OVBD" check "$W/B" >"$W/checkB.out" 2>&1 || { cat "$W/checkB.out" >&2; fail "check B"; }
log "PASS"
