#!/usr/bin/env bash
# VM disks from one golden image:
#   1. a golden base image (ext4 with an "OS" in it) imported once, compressed;
#   2. a disk per VM, each a clone of the golden snapshot: instant, no copy;
#   3. the VMs write to their disks (qemu-io stands in for a guest);
#   4. a snapshot of vm-a before an "upgrade", the upgrade, and a rollback by
#      cloning the snapshot;
#   5. vm-b is hydrated: it stops needing the golden layers, so the golden
#      image could be deleted or replaced without touching vm-b.
# Every step is checked; the script exits non-zero if anything is off.
# Needs: ovbd, ovbdfs, qemu-io and qemu-img (qemu-utils), mkfs.ext4, e2fsck.
# Runs as any user who may use FUSE (/dev/fuse and fusermount3).
set -euo pipefail
OVBD=${OVBD:-ovbd}
OVBDFS=${OVBDFS:-ovbdfs}
W=$(mktemp -d /tmp/ovbd-vm-disks-XXXXXX)
S=$W/store
M=$W/disks
cleanup() {
  set +e
  mountpoint -q "$M" && fusermount3 -u "$M"
  rm -rf "$W"
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }
check() { # check WHAT CMD...: runs CMD, fails the example if it fails
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then echo "ok: $what"; else echo "FAILED: $what"; exit 1; fi
}

say "1. The golden image: ext4 with an OS tree in it, imported as an lz4 layer"
mkdir -p "$W/os/etc" "$W/os/usr/bin"
echo 'NAME="Golden Linux" VERSION="1.0"' > "$W/os/etc/os-release"
head -c 2M /dev/urandom > "$W/os/usr/bin/app"
truncate -s 256M "$W/golden.raw"
mkfs.ext4 -q -F -d "$W/os" -L golden "$W/golden.raw"
run "$OVBD" store init "$S"
run "$OVBD" volume import "$S" golden "$W/golden.raw" --compress lz4
mkdir -p "$M"
run "$OVBDFS" "$S" "$M"
echo "snapshot golden v1" > "$M/.control"
check "golden@v1 is the golden image" cmp "$M/golden@v1" "$W/golden.raw"

say "2. One disk per VM: clones of golden@v1"
for vm in vm-a vm-b; do echo "clone golden@v1 $vm" > "$M/.control"; done
run ls -l "$M"
check "the clones share the golden layer (no copy)" \
  test "$(find "$S/layers" -name 'sha256-*' | wc -l)" = 1

say "3. The VMs write to their disks"
run qemu-io -f raw -c 'write -P 0xaa 100M 1M' "$M/vm-a"
run qemu-io -f raw -c 'write -P 0xbb 100M 1M' "$M/vm-b"
check "vm-a reads its own data" qemu-io -f raw -c 'read -P 0xaa 100M 1M' "$M/vm-a"
check "vm-b reads its own data" qemu-io -f raw -c 'read -P 0xbb 100M 1M' "$M/vm-b"
check "the golden image is untouched" cmp "$M/golden@v1" "$W/golden.raw"
check "vm-a's filesystem is clean" e2fsck -fn "$M/vm-a"

say "4. Snapshot before an upgrade, the upgrade, a rollback"
echo "snapshot vm-a before-upgrade" > "$M/.control"
run qemu-io -f raw -c 'write -P 0xcc 100M 512k' -c 'write -P 0xcc 200M 4M' "$M/vm-a"
check "the upgrade is on vm-a" qemu-io -f raw -c 'read -P 0xcc 200M 4M' "$M/vm-a"
check "the snapshot kept vm-a as it was" qemu-io -f raw -r -c 'read -P 0xaa 100M 1M' "$M/vm-a@before-upgrade"
echo "clone vm-a@before-upgrade vm-a-rolled-back" > "$M/.control"
check "the rollback has the pre-upgrade data" \
  qemu-io -f raw -c 'read -P 0xaa 100M 1M' "$M/vm-a-rolled-back"
check "and not the upgrade" qemu-img compare -f raw -F raw "$M/vm-a-rolled-back" "$M/vm-a@before-upgrade"

say "5. Hydrate vm-b: it stops depending on the golden layers"
run "$OVBD" hydrate "$S" vm-b --rate 0 --wait
run "$OVBD" status "$S" vm-b
check "vm-b has no lower layers left" grep -q '"lowers": \[\]' "$S/volumes/vm-b.json"
check "vm-b's content is unchanged" qemu-io -f raw -c 'read -P 0xbb 100M 1M' "$M/vm-b"
check "vm-b's filesystem is clean" e2fsck -fn "$M/vm-b"

fusermount3 -u "$M"
run "$OVBD" check "$S"
echo
echo "vm-disks: all checks passed"
