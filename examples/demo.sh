#!/usr/bin/env bash
# A tour of ovbdfs:
#   1. layers: raw image -> LSMT layer -> lz4 ZFile; inspect, check, flatten back
#   2. a store mounted with ovbdfs: a volume over that layer, an ext4 inside it,
#      a live snapshot and a clone through .control
# Run from the repository root after building (scripts/demo.sh does both).
set -euo pipefail
OVBD=${OVBD:-ovbd}
OVBDFS=${OVBDFS:-ovbdfs}
OVBD=$(realpath "$OVBD" 2>/dev/null || command -v "$OVBD")
OVBDFS=$(realpath "$OVBDFS" 2>/dev/null || command -v "$OVBDFS")
W=$(mktemp -d /tmp/ovbd-demo-XXXXXX)
MNT=$W/mnt
LOOP=""
cleanup() {
  set +e
  mountpoint -q "$W/fs" && umount "$W/fs"
  mountpoint -q "$W/fs" && fusermount3 -u "$W/fs"
  [ -n "$LOOP" ] && losetup -d "$LOOP"
  mountpoint -q "$MNT" && fusermount3 -u "$MNT"
  rm -rf "$W"
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "1. Layers"
# A 64 MiB disk image: some random data, some text, mostly holes.
truncate -s 64M "$W/disk.raw"
head -c 4M /dev/urandom | dd of="$W/disk.raw" bs=1M seek=1 conv=notrunc status=none
(yes "ovbdfs demo" || true) | head -c 8M | dd of="$W/disk.raw" bs=1M seek=20 conv=notrunc status=none
run "$OVBD" layer create --from "$W/disk.raw" --message "demo base" "$W/base.lsmt"
run "$OVBD" layer create --from "$W/disk.raw" --compress lz4 "$W/base.zfile"
run ls -ls "$W/disk.raw" "$W/base.lsmt" "$W/base.zfile"
run "$OVBD" layer info "$W/base.zfile"
run "$OVBD" layer check "$W/base.zfile"
run "$OVBD" flatten "$W/base.zfile" -o "$W/flat.raw"
a=$(sha256sum < "$W/disk.raw"); b=$(sha256sum < "$W/flat.raw")
echo "sha256 raw:       $a"
echo "sha256 flattened: $b"
[ "$a" = "$b" ] && echo "flattened image is identical to the original" || { echo "MISMATCH"; exit 1; }

say "2. A store, mounted"
run "$OVBD" store init "$W/store"
run "$OVBD" volume create "$W/store" vm1 --size 256M --from "$W/base.zfile"
run "$OVBD" volume create "$W/store" scratch --size 1G
mkdir -p "$MNT" "$W/fs"
run "$OVBDFS" "$W/store" "$MNT"
run ls -l "$MNT"

say "3. A filesystem inside the volume"
if [ "$(id -u)" = 0 ] && LOOP=$(losetup -f --show --direct-io=on "$MNT/scratch" 2>/dev/null); then
  run mkfs.ext4 -q "$LOOP"
  run mount "$LOOP" "$W/fs"
else
  echo "(not root: using fuse2fs on the volume file instead of a loop device)"
  run mkfs.ext4 -q -F "$MNT/scratch"
  run fuse2fs -o fakeroot "$MNT/scratch" "$W/fs"
fi
cp -r /usr/share/doc/fuse3 "$W/fs/docs" 2>/dev/null || echo hello > "$W/fs/hello.txt"
echo "first version" > "$W/fs/notes.txt"
sync -f "$W/fs/notes.txt"
run ls "$W/fs"

say "4. Live snapshot and clone through .control"
run sh -c "echo 'snapshot scratch v1' > '$MNT/.control'"
echo "second version" > "$W/fs/notes.txt"; sync -f "$W/fs/notes.txt"
run sh -c "echo 'clone scratch@v1 scratch-copy' > '$MNT/.control'"
run ls -l "$MNT"
run cat "$MNT/.control"
if [ -n "$LOOP" ]; then umount "$W/fs"; losetup -d "$LOOP"; LOOP=""; else fusermount3 -u "$W/fs"; fi
echo "the clone has the snapshot's contents:"
if [ "$(id -u)" = 0 ] && LOOP=$(losetup -f --show -r "$MNT/scratch-copy" 2>/dev/null); then
  mount -o ro,noload "$LOOP" "$W/fs"
else
  fuse2fs -o ro,fakeroot "$MNT/scratch-copy" "$W/fs"
fi
run cat "$W/fs/notes.txt"
if [ -n "$LOOP" ]; then umount "$W/fs"; losetup -d "$LOOP"; LOOP=""; else fusermount3 -u "$W/fs"; fi
run "$OVBD" status "$W/store"
run fusermount3 -u "$MNT"
say "done"
