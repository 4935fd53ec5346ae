#!/usr/bin/env bash
# A container root filesystem from layers, without root:
#   1. a base layer (an ext4 image holding an OS tree) imported into a store
#      the user owns, mounted with plain `ovbdfs` (through fusermount3);
#   2. an application layer on top: the base volume's filesystem opened with
#      fuse2fs, files added, then frozen as a snapshot (a second layer);
#   3. two containers, each a clone of that snapshot, each its root
#      filesystem opened with fuse2fs: both see base and application files,
#      and what one writes the other does not see.
# Every step is checked; the script exits non-zero if anything is off.
# Needs: ovbd, ovbdfs, fuse2fs, mkfs.ext4, e2fsck, and access to /dev/fuse.
set -euo pipefail
OVBD=${OVBD:-ovbd}
OVBDFS=${OVBDFS:-ovbdfs}
FUSE2FS=${FUSE2FS:-fuse2fs}
W=$(mktemp -d /tmp/ovbd-rootless-XXXXXX)
S=$W/store
M=$W/disks
R=$W/rootfs
cleanup() {
  set +e
  for d in "$R"/*; do mountpoint -q "$d" && fusermount3 -u "$d"; done
  mountpoint -q "$M" && fusermount3 -u "$M"
  rm -rf "$W"
}
trap cleanup EXIT
say() { printf '\n== %s (uid %s)\n' "$*" "$(id -u)"; }
run() { printf '$ %s\n' "$*"; "$@"; }
check() {
  local what=$1; shift
  if "$@" >/dev/null 2>&1; then echo "ok: $what"; else echo "FAILED: $what"; exit 1; fi
}
# fuse2fs returns before its mount is usable on some versions: wait for it.
open_fs() { # open_fs IMAGE DIR
  mkdir -p "$2"
  "$FUSE2FS" -o fakeroot "$1" "$2"
  for _ in $(seq 200); do mountpoint -q "$2" && return 0; sleep 0.05; done
  echo "FAILED: fuse2fs did not mount $1"; exit 1
}
close_fs() {
  fusermount3 -u "$1"
  for _ in $(seq 200); do mountpoint -q "$1" || return 0; sleep 0.05; done
  echo "FAILED: $1 stayed mounted"; exit 1
}

say "1. The base layer"
mkdir -p "$W/base/etc" "$W/base/bin"
echo 'NAME="Base OS"' > "$W/base/etc/os-release"
printf '#!/bin/sh\necho hello from the base layer\n' > "$W/base/bin/hello"
truncate -s 128M "$W/base.raw"
mkfs.ext4 -q -F -d "$W/base" "$W/base.raw"
run "$OVBD" store init "$S"
run "$OVBD" volume import "$S" app "$W/base.raw" --compress zstd
mkdir -p "$M" "$R"
run "$OVBDFS" "$S" "$M"
run ls -l "$M"

say "2. The application layer"
open_fs "$M/app" "$R/build"
mkdir -p "$R/build/app"
printf '#!/bin/sh\necho hello from the application layer\n' > "$R/build/app/run"
echo "threads=4" > "$R/build/app/app.conf"
close_fs "$R/build"
echo "snapshot app v1" > "$M/.control"
run "$OVBD" status "$S"
check "app@v1 has two layers (base + application)" \
  grep -q "^app@v1 size=[0-9]* layers=2 snapshot" <(cat "$M/.control")

say "3. Two containers from app@v1"
for c in ctr1 ctr2; do echo "clone app@v1 $c" > "$M/.control"; done
open_fs "$M/ctr1" "$R/ctr1"
open_fs "$M/ctr2" "$R/ctr2"
check "ctr1 sees the base layer" grep -q "Base OS" "$R/ctr1/etc/os-release"
check "ctr1 sees the application layer" grep -q "threads=4" "$R/ctr1/app/app.conf"
echo "written by ctr1" > "$R/ctr1/app/state"
check "ctr2 sees the same layers" grep -q "application layer" "$R/ctr2/app/run"
check "ctr2 does not see what ctr1 wrote" test ! -e "$R/ctr2/app/state"
close_fs "$R/ctr1"
close_fs "$R/ctr2"
open_fs "$M/ctr1" "$R/ctr1"
check "ctr1's write survived closing its filesystem" grep -q "written by ctr1" "$R/ctr1/app/state"
close_fs "$R/ctr1"
for c in ctr1 ctr2; do check "$c's filesystem is clean" e2fsck -fn "$M/$c"; done
fusermount3 -u "$M"
run "$OVBD" check "$S"
echo
echo "rootless: all checks passed"
