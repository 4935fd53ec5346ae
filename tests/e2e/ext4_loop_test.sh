#!/usr/bin/env bash
# ext4 on a loop device over an ovbdfs volume file.
#
# Case 1: a volume over a lower layer made with `ovbd layer create`; mkfs.ext4
#   through a direct-I/O loop device, copy a tree in, delete part of it and
#   fstrim (discards reach the daemon as punch-hole and free upper space),
#   unmount everything,
#   remount ovbdfs: e2fsck -fn is clean and the tree reads back identical.
# Case 2: a volume imported (lz4) from an existing ext4 image: its files read
#   through the loop mount, new files land in the upper (which grows) while
#   the lower layer file stays byte-identical; clean e2fsck after remount.
#
# E2E_CORRUPT=1 flips one byte of a file's data in the upper before the
# final comparison of case 1: the test must then fail.
. "$(dirname "$0")/lib.sh"
require_root
require_fuse
require_loop
require_cmd mkfs.ext4 e2fsck fstrim filefrag sha256sum
e2e_init

W=$E2E_WORK
S=$W/store
M=$W/mnt
K=$W/ext4
"$OVBD" store init "$S" >/dev/null

# ---------------------------------------------------------------- case 1
log "case 1: ext4 made on a volume over an ovbd-made lower layer"
truncate -s 64M "$W/lower.raw"
for off in 0 7 19 33 50 63; do # MiB offsets with random data
  dd if=/dev/urandom of="$W/lower.raw" bs=1M seek="$off" count=1 conv=notrunc status=none
done
"$OVBD" layer create --from "$W/lower.raw" "$W/lower.lsmt" --message "e2e lower" >/dev/null
"$OVBD" volume create "$S" vol --size 512M --from "$W/lower.lsmt" >/dev/null
start_daemon "$S" "$M"

# The merged view before any write: the lower's bytes, then zeros.
cmp -n $((64 << 20)) "$M/vol" "$W/lower.raw" || fail "volume does not read as its lower layer"
cmp -i $((64 << 20)):0 -n $((448 << 20)) "$M/vol" /dev/zero || fail "beyond the lower layer is not zero"
assert_eq $((512 << 20)) "$(stat -c %s "$M/vol")" "volume size"

loop_attach "$M/vol" --direct-io=on
mkfs.ext4 -q -F -E nodiscard "$LOOP" || fail "mkfs.ext4 on $LOOP failed"
kmount "$LOOP" "$K"
make_tree "$K/gen" 240 160 1
mkdir -p "$K/doc"
# A real-world tree too: small text files, symlinks, odd names.
find /usr/share/doc -maxdepth 1 -mindepth 1 -name '[a-l]*' | awk 'NR <= 40' | xargs -r cp -a -t "$K/doc" 2>/dev/null || true
make_tree "$K/scratch" 60 256 2
sync -f "$K"
scratch_kib=$(du -sk "$K/scratch" | cut -f1)
up_full=$(alloc_kib "$(upper_data "$S" vol)")
# Free space and discard it: fstrim sends FITRIM -> loop -> fallocate(PUNCH_HOLE).
rm -rf "$K/scratch"
sync -f "$K"
fstrim -v "$K" >&2 || fail "fstrim on ext4 over the loop device failed"
up_trimmed=$(alloc_kib "$(upper_data "$S" vol)")
log "case 1: upper allocation $up_full KiB -> $up_trimmed KiB after deleting $scratch_kib KiB and fstrim"
((up_trimmed <= up_full - scratch_kib / 2)) || fail "fstrim did not free the deleted files' space in the upper"
tree_manifest "$K" >"$W/manifest1"
log "case 1: $(wc -l <"$W/manifest1") entries, $(du -sh "$K" | cut -f1) written"
# Where one file's first data block lives (for E2E_CORRUPT).
victim=$(find "$K/gen" -type f -size +8k | LC_ALL=C sort | awk 'NR == 1')
pblk=$(filefrag -e "$victim" | awk '$1 == "0:" { gsub(/\.\./, " "); print $4; exit }')
[[ $pblk =~ ^[0-9]+$ ]] || fail "cannot find the physical block of $victim"
kumount "$K"
loop_detach "$LOOP"
stop_daemon "$M"

if corrupting; then
  flip_byte "$(upper_data "$S" vol)" $((4096 + pblk * 4096 + 100))
fi

check_ext4_remounted "$S" "$M" vol "$W/manifest1" "$K" "case 1"
log "case 1 passed"

# ---------------------------------------------------------------- case 2
log "case 2: a volume imported from an existing ext4 image"
make_tree "$W/src" 150 96 3
printf 'hello from the lower layer\n' >"$W/src/hello.txt"
truncate -s 256M "$W/base.img"
mkfs.ext4 -q -F -d "$W/src" "$W/base.img" || fail "mkfs.ext4 -d failed"
"$OVBD" volume import "$S" imported "$W/base.img" --compress lz4 >/dev/null
mapfile -t lowers < <(lower_files "$S" imported)
((${#lowers[@]} == 1)) || fail "imported volume should have one lower layer, has ${#lowers[@]}"
lower=${lowers[0]}
lower_sha=$(sha256sum <"$lower" | cut -c1-64)
upper=$(upper_data "$S" imported)
up_before=$(alloc_kib "$upper")
grep -q 'ZFile' < <("$OVBD" layer info "$lower") || fail "imported layer is not a ZFile"

start_daemon "$S" "$M"
used_of() { "$OVBD" status "$S" imported | grep -o 'used=[0-9]*' | awk 'NR == 1' | cut -d= -f2; }
used_before=$(used_of)
[[ $used_before =~ ^[0-9]+$ ]] || fail "ovbd status shows no used= for the volume"
cmp "$M/imported" "$W/base.img" || fail "imported volume does not read as the raw image"
loop_attach "$M/imported" --direct-io=on
kmount "$LOOP" "$K"
tree_manifest "$W/src" | grep -v ' \.$' >"$W/manifest2.src"
tree_manifest "$K" | grep -v ' \.$' >"$W/manifest2.lower"
diff -u "$W/manifest2.src" "$W/manifest2.lower" >&2 || fail "files of the lower ext4 image read wrong"
assert_eq "hello from the lower layer" "$(cat "$K/hello.txt")" "lower file content"
make_tree "$K/new" 80 128 4
echo "appended by case 2" >>"$K/hello.txt"
sync -f "$K"
tree_manifest "$K" >"$W/manifest2"
kumount "$K"
loop_detach "$LOOP"
used_after=$(used_of)
stop_daemon "$M"
up_after=$(alloc_kib "$upper")
log "case 2: upper used $used_before -> $used_after bytes (status), $up_before -> $up_after KiB allocated"
((used_after > used_before + 2 * 1024 * 1024)) || fail "status used= did not grow with the new files"
((up_after > up_before + 2048)) || fail "upper data file allocation did not grow"
assert_eq "$lower_sha" "$(sha256sum <"$lower" | cut -c1-64)" "lower layer sha256 (must be untouched)"

check_ext4_remounted "$S" "$M" imported "$W/manifest2" "$K" "case 2"
log "case 2 passed"
