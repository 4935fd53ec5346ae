#!/usr/bin/env bash
# overlaybd's published base layer (tests/data/overlaybd/upstream-baselayer:
# a ZFile/lz4-wrapped LSMT layer holding an empty 64 GiB ext4) as the lower of
# a volume: ovbd reads its header, the merged view passes e2fsck -fn, ext4 on a
# loop device over it takes new files that land in the upper, and the tree
# reads back after a remount with e2fsck still clean.
. "$(dirname "$0")/lib.sh"
require_root
require_fuse
require_loop
require_cmd mkfs.ext4 e2fsck tar
e2e_init

W=$E2E_WORK
S=$W/store
M=$W/mnt
K=$W/ext4
tar -xzf "$OVBD_TEST_DATA/overlaybd/upstream-baselayer/ext4_64.tar.gz" -C "$W"
[[ -f $W/ext4_64 ]] || fail "ext4_64.tar.gz does not hold ext4_64"
"$OVBD" layer info "$W/ext4_64" >"$W/info" 2>&1 || { cat "$W/info" >&2; fail "ovbd layer info rejects overlaybd's base layer"; }
grep -q '64 GiB' "$W/info" || { cat "$W/info" >&2; fail "base layer virtual size is not 64 GiB"; }
"$OVBD" layer check "$W/ext4_64" >&2 || fail "ovbd layer check rejects overlaybd's base layer"

"$OVBD" store init "$S" >/dev/null
"$OVBD" volume create "$S" base --from "$W/ext4_64" >/dev/null
start_daemon "$S" "$M"
assert_eq $((64 << 30)) "$(stat -c %s "$M/base")" "volume size"
e2fsck -fn "$M/base" >"$W/fsck0.log" 2>&1 || { cat "$W/fsck0.log" >&2; fail "e2fsck -fn of the base layer's ext4 failed"; }

loop_attach "$M/base" --direct-io=on
kmount "$LOOP" "$K"
make_tree "$K/data" 60 128 7
sync -f "$K"
tree_manifest "$K" >"$W/manifest"
kumount "$K"
loop_detach "$LOOP"
stop_daemon "$M"

check_ext4_remounted "$S" "$M" base "$W/manifest" "$K" "after writing"
