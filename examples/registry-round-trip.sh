#!/usr/bin/env bash
# A disk image through a registry, from one machine to another:
#   1. a registry: docker-registry on 127.0.0.1 (a free port, its own
#      config and storage, all in a temporary directory);
#   2. machine A: a volume made from a plain file, a snapshot of it, and
#      `ovbd push` of the snapshot to the registry;
#   3. machine B (its own store and block cache): `ovbd volume create
#      --from registry://...`: the volume is there at once, its layers stay
#      in the registry;
#   4. B mounts its store and reads part of the volume: only the blocks read
#      cross the network (the status's `remote ... fetched=` counters);
#   5. `ovbd hydrate --wait` copies the rest in the background, with a
#      progress bar;
#   6. the registry stops, the cache goes, and B still reads the whole
#      volume: it matches the original file byte for byte.
# Every step is checked; the script exits non-zero if anything is off.
# Needs: ovbd, ovbdfs, docker-registry (Debian: package docker-registry),
# access to /dev/fuse (and fusermount3).
set -euo pipefail
OVBD=${OVBD:-ovbd}
OVBDFS=${OVBDFS:-ovbdfs}
W=$(mktemp -d /tmp/ovbd-registry-XXXXXX)
A=$W/machine-a/store
B=$W/machine-b/store
MB=$W/machine-b/disks
CACHE=$W/machine-b/cache
REGISTRY=
DAEMON=
cleanup() {
  set +e
  mountpoint -q "$MB" && { fusermount3 -u "$MB" || fusermount3 -u -z "$MB"; }
  [ -n "$DAEMON" ] && { kill "$DAEMON" 2>/dev/null; wait "$DAEMON" 2>/dev/null; }
  [ -n "$REGISTRY" ] && { kill "$REGISTRY" 2>/dev/null; wait "$REGISTRY" 2>/dev/null; }
  rm -rf --one-file-system "$W"
}
trap cleanup EXIT
trap 'exit 130' INT  # so that Ctrl-C and kill clean up too
trap 'exit 143' TERM
say() { printf '\n== %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@" || { echo "FAILED: $*"; exit 1; }; }
check() { # check WHAT CMD...: runs CMD, fails the example if it fails
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then echo "ok: $what"; else echo "FAILED: $what"; exit 1; fi
}
# mount_b: ovbdfs serves B's store on $MB, with B's block cache. It runs
# in the foreground (-f) in the background here, so that unmount_b can wait
# for it to commit every volume and exit.
mount_b() {
  printf '$ %s\n' "$OVBDFS $B $MB -o cache_dir=$CACHE -f &"
  "$OVBDFS" "$B" "$MB" -o "cache_dir=$CACHE" -f 2> "$W/machine-b/ovbdfs.log" &
  DAEMON=$!
  for _ in $(seq 600); do
    mountpoint -q "$MB" && return 0
    kill -0 "$DAEMON" 2>/dev/null || break
    sleep 0.05
  done
  cat "$W/machine-b/ovbdfs.log"; echo "FAILED: ovbdfs did not mount $B"; exit 1
}
unmount_b() {
  # EBUSY while the kernel still releases a file just closed: retry a while.
  for _ in $(seq 200); do fusermount3 -u "$MB" 2>/dev/null && break; sleep 0.05; done
  mountpoint -q "$MB" && { echo "FAILED: cannot unmount $MB"; exit 1; }
  local rc=0
  wait "$DAEMON" || rc=$?
  DAEMON=
  [ "$rc" = 0 ] || { cat "$W/machine-b/ovbdfs.log"; echo "FAILED: ovbdfs exited $rc"; exit 1; }
  echo "unmounted $MB"
}
# range FILE OFFSET_MIB COUNT_MIB: those bytes of FILE, read with O_DIRECT so
# the kernel's page cache cannot answer for ovbdfs.
range() { dd if="$1" bs=1M skip="$2" count="$3" iflag=direct status=none; }
sum_of() { dd if="$1" bs=1M iflag=direct status=none | sha256sum | cut -d' ' -f1; }
# remote_total FIELD: the sum of FIELD= over B's `remote` status lines (one
# per blob read from the registry since ovbdfs started).
remote_total() {
  "$OVBD" status "$B" | awk -v f="$1=" '
    $1 == "remote" { for (i = 3; i <= NF; i++) if (index($i, f) == 1) n += substr($i, length(f) + 1) }
    END { print n + 0 }'
}

say "1. A registry on 127.0.0.1, on a free port"
mkdir -p "$W/registry/data" "$W/machine-a" "$W/machine-b"
cat > "$W/registry/config.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $W/registry/data
http:
  addr: 127.0.0.1:0
EOF
docker-registry serve "$W/registry/config.yml" > "$W/registry/log" 2>&1 &
REGISTRY=$!
# Port 0: the kernel picks the port, and the registry logs the one it got.
PORT=
for _ in $(seq 600); do
  PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$W/registry/log")
  [ -n "$PORT" ] && break
  kill -0 "$REGISTRY" 2>/dev/null || break
  sleep 0.05
done
[ -n "$PORT" ] || { cat "$W/registry/log"; echo "FAILED: docker-registry did not start"; exit 1; }
IMAGE=registry://127.0.0.1:$PORT/examples/disk:v1
echo "docker-registry listens on 127.0.0.1:$PORT"

say "2. Machine A: a volume from a plain file, a snapshot, a push"
# 64 MiB: 48 MiB of data, then zeros (the unused end of a disk).
head -c 48M /dev/urandom > "$W/disk.img"
truncate -s 64M "$W/disk.img"
run "$OVBD" store init "$A"
run "$OVBD" volume import "$A" disk "$W/disk.img"
run "$OVBD" snapshot "$A" disk v1
# The push uploads each layer of the snapshot as a blob (compressed on the
# way) and an image manifest naming them.
run "$OVBD" push "$A" disk@v1 "$IMAGE"

say "3. Machine B: a volume over the image; its layers stay in the registry"
# ovbd's options before the subcommand: B's own block cache.
run "$OVBD" store init "$B"
run "$OVBD" --cache-dir "$CACHE" volume create "$B" disk --from "$IMAGE"
run "$OVBD" volume list "$B"
check "nothing of the image was downloaded" \
  test -z "$(find "$B/layers" -name '*.layer')"

say "4. B mounts its store and reads 2 MiB of the volume: only that is fetched"
mkdir -p "$MB"
mount_b
check "the volume has the image's size" test "$(stat -c %s "$MB/disk")" = "$(stat -c %s "$W/disk.img")"
check "bytes 20-22 MiB match the original" cmp <(range "$MB/disk" 20 2) <(range "$W/disk.img" 20 2)
run "$OVBD" status "$B"
fetched=$(remote_total fetched)
size=$(remote_total size)
echo "fetched $fetched of the image's $size bytes"
check "something was fetched, and under a quarter of the image" \
  test "$fetched" -gt 0 -a $((fetched * 4)) -lt "$size"

say "5. Hydrate: copy the rest into B's store, in the background, with a progress bar"
run "$OVBD" hydrate "$B" disk --wait
run "$OVBD" status "$B" disk
check "the volume reads no layer from the registry any more" \
  grep -q '"lowers": \[\]' "$B/volumes/disk.json"

say "6. The registry stops, B's cache goes: B still reads everything"
kill "$REGISTRY"; wait "$REGISTRY" 2>/dev/null || true; REGISTRY=
check "the whole volume matches the original" test "$(sum_of "$MB/disk")" = "$(sum_of "$W/disk.img")"
unmount_b
run rm -rf "$CACHE"
mount_b
check "and again after a remount with an empty cache" \
  test "$(sum_of "$MB/disk")" = "$(sum_of "$W/disk.img")"
check "and nothing was fetched" test "$(remote_total fetched)" = 0
unmount_b
run "$OVBD" check "$A"
run "$OVBD" check "$B"
echo
echo "registry-round-trip: all checks passed"
