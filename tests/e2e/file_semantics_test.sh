#!/usr/bin/env bash
# The volume file behaves like a disk that is also a well-behaved file:
# size, attributes that persist, byte-exact unaligned reads and writes (checked
# against a plain "shadow" file holding the expected bytes), no writes past the
# end, grow-only truncate, punch-hole/zero-range that read zeros, persist and
# free upper space, read-only mounts and read-only snapshots.
#
# E2E_CORRUPT=1 flips one byte of the upper before the final comparison: the
# test must then fail.
. "$(dirname "$0")/lib.sh"
require_root "chown to another user"
require_fuse
require_cmd fallocate truncate stat sha256sum
e2e_init

W=$E2E_WORK
S=$W/store
M=$W/mnt
V=$M/vol
SH=$W/shadow
shadow() { "$PY" "$E2E_DIR/shadow.py" "$@"; }
MiB=$((1 << 20))
SIZE=$((256 * MiB))
L1=$OVBD_TEST_DATA/overlaybd/64MiB/l1.lsmt
L1_SHA=182f42453adf7bd52e533e0fb6fa029ba33978178ce8e368292b9ccdeb93cf9d

"$OVBD" store init "$S" >/dev/null
"$OVBD" volume create "$S" vol --size 256M --from "$L1" >/dev/null
"$OVBD" flatten "$L1" -o "$SH" >/dev/null
assert_eq "$L1_SHA" "$(sha256sum <"$SH" | cut -c1-64)" "ovbd flatten of the L1 fixture"
truncate -s "$SIZE" "$SH"
start_daemon "$S" "$M"

# ---- size and listing
log "size and listing"
assert_eq "$SIZE" "$(stat -c %s "$V")" "stat size"
assert_eq "regular file" "$(stat -c %F "$V")" "file type"
ls -l "$M" >&2
# shellcheck disable=SC2012 # ls -l is what is being checked
ls -l "$M" | awk '$NF == "vol" { print $5 }' | grep -x "$SIZE" >/dev/null || fail "ls -l does not show the volume size"
assert_eq "$L1_SHA" "$(head -c $((64 * MiB)) "$V" | sha256sum | cut -c1-64)" "volume's first 64 MiB = its lower (L1)"

# ---- reads at arbitrary offsets and lengths
log "unaligned reads (buffered and O_DIRECT)"
shadow readcmp "$V" "$SH" 150 11 || fail "buffered reads differ from the shadow"
shadow readcmp "$V" "$SH" 60 12 --direct || fail "O_DIRECT reads differ from the shadow"
dd if="$V" iflag=skip_bytes,count_bytes skip=4097 count=5000 status=none | cmp - \
  <(dd if="$SH" iflag=skip_bytes,count_bytes skip=4097 count=5000 status=none) || fail "dd unaligned read differs"

# ---- unaligned writes
log "unaligned writes"
seed=100
for ow in 4097:1 510:700 0:1 65535:3 1000000:131073 $((64 * MiB - 300)):1000 \
  $((16 * MiB + 1)):$((MiB + 3)) $((SIZE - 1)):1 $((200 * MiB + 17)):4079; do
  shadow write "$V" "$SH" "${ow%%:*}" "${ow##*:}" $((seed++)) || fail "write $ow failed"
done
for ow in 3:5000 $((5 * MiB + 511)):513 $((130 * MiB + 4095)):70000; do
  shadow write "$V" "$SH" "${ow%%:*}" "${ow##*:}" $((seed++)) --direct || fail "O_DIRECT write $ow failed"
done
"$PY" - "$V" "$SH" <<'EOF' || fail "random writes failed"
import os, random, sys
r = random.Random(7)
fv, fs = os.open(sys.argv[1], os.O_RDWR), os.open(sys.argv[2], os.O_RDWR)
size = os.fstat(fs).st_size
for _ in range(300):
    n = r.choice([1, 2, 511, 512, 513, 4095, 4096, 4097, r.randint(1, 200000)])
    off = r.randrange(0, size - n)
    d = r.randbytes(n)
    assert os.pwrite(fv, d, off) == n
    os.pwrite(fs, d, off)
os.fsync(fv)
EOF
shadow readcmp "$V" "$SH" 150 13 || fail "reads after unaligned writes differ"
shadow fullcmp "$V" "$SH" || fail "contents differ after unaligned writes"

# ---- no writes past the end
log "writes at and past the end"
out=$("$PY" - "$V" <<'EOF'
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
size = os.fstat(fd).st_size
res = []
res.append(str(os.pwrite(fd, b"A" * 100, size - 10)))  # crosses the end: short write
for off in (size, size + 4096):
    try:
        os.pwrite(fd, b"B" * 10, off)
        res.append("ok")
    except OSError as e:
        res.append(errno.errorcode[e.errno])
res.append(str(os.fstat(fd).st_size))
print(" ".join(res))
EOF
)
assert_eq "10 ENOSPC ENOSPC $SIZE" "$out" "write crossing the end / at the end / past the end, then size"
"$PY" -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDWR); os.pwrite(fd, b"A"*10, int(sys.argv[2])-10)' "$SH" "$SIZE"
shadow readcmp "$V" "$SH" 5 14 || fail "the short write at the end wrote wrong bytes"

# ---- truncate grows, never shrinks
log "truncate"
truncate -s $((320 * MiB)) "$V" || fail "truncate -s 320M (grow) failed"
truncate -s $((320 * MiB)) "$SH"
SIZE=$((320 * MiB))
assert_eq "$SIZE" "$(stat -c %s "$V")" "size after growing"
cmp -i $((256 * MiB)):$((256 * MiB)) "$V" "$SH" || fail "grown area does not read as zeros"
if truncate -s $((128 * MiB)) "$V" 2>/dev/null; then fail "truncate -s 128M (shrink) succeeded"; fi
assert_eq EINVAL "$(errno_of "os.truncate('$V', 1 << 20)")" "errno of a shrinking truncate"
assert_eq "$SIZE" "$(stat -c %s "$V")" "size after a refused shrink"
# O_TRUNC (shell '>' on the volume) must never lose data: a disk cannot be
# truncated, so it is either refused or ignored like on a block device.
r=$(errno_of "os.close(os.open('$V', os.O_WRONLY | os.O_TRUNC))")
[[ $r == ok || $r == EINVAL ]] || fail "open(O_TRUNC): unexpected $r"
log "open(O_TRUNC) on a volume: $r"
assert_eq "$SIZE" "$(stat -c %s "$V")" "size after open(O_TRUNC)"
shadow readcmp "$V" "$SH" 20 15 || fail "data changed after open(O_TRUNC)"

# ---- attributes persist
log "chmod, chown, touch"
chmod 600 "$V"
chown 1234:1234 "$V"
touch -d '2001-02-03 04:05:06.123456789' "$V"
attrs="600 1234 1234 981173106.123456789"
assert_eq "$attrs" "$(stat -c '%a %u %g %.9Y' "$V")" "attributes after chmod/chown/touch"

# ---- punch hole and zero range
log "fallocate punch/zero"
shadow write "$V" "$SH" $((100 * MiB)) $((8 * MiB)) 21
shadow write "$V" "$SH" $((8 * MiB)) $((4 * MiB)) 22 # over lower data
UP=$(upper_data "$S" vol)
sync
before=$(alloc_kib "$UP")
fallocate -p -o $((100 * MiB)) -l $((4 * MiB)) "$V" || fail "fallocate -p failed"
shadow zero "$SH" $((100 * MiB)) $((4 * MiB))
fallocate -z -o $((104 * MiB)) -l $((2 * MiB)) "$V" || fail "fallocate -z failed"
shadow zero "$SH" $((104 * MiB)) $((2 * MiB))
fallocate -p -o $((9 * MiB)) -l $((MiB)) "$V" || fail "fallocate -p over lower data failed"
shadow zero "$SH" $((9 * MiB)) $((MiB))
fallocate -p -o $((16 * MiB + 1000)) -l 3000 "$V" || fail "unaligned punch failed"
shadow zero "$SH" $((16 * MiB + 1000)) 3000
fallocate -z -o $((34 * MiB + 100)) -l $((MiB)) "$V" || fail "unaligned zero range failed"
shadow zero "$SH" $((34 * MiB + 100)) $((MiB))
# Right away (the page cache must not serve the old bytes) ...
cmp -i $((100 * MiB)):0 -n $((6 * MiB)) "$V" /dev/zero || fail "punched/zeroed range does not read zeros"
cmp -i $((9 * MiB)):0 -n $((MiB)) "$V" /dev/zero || fail "punch over lower data does not read zeros"
shadow fullcmp "$V" "$SH" || fail "contents differ after punch/zero"
sync
after=$(alloc_kib "$UP")
log "upper allocation: $before KiB -> $after KiB after discarding 6 MiB of upper data"
((after <= before - 5 * 1024)) || fail "upper allocation did not shrink after punch/zero ($before -> $after KiB)"
# Preallocation means nothing on a thin volume.
if fallocate -o 0 -l 4096 "$V" 2>/dev/null; then fail "plain fallocate (preallocate) succeeded"; fi

# ---- persistence across a remount
# (the writes since the touch moved the mtime, as writing a volume does: set it again)
touch -d '2001-02-03 04:05:06.123456789' "$V"
stop_daemon "$M"
if corrupting; then flip_byte "$UP" $((4096 + 107 * MiB)); fi
start_daemon "$S" "$M"
assert_eq "$attrs" "$(stat -c '%a %u %g %.9Y' "$V")" "attributes after remount"
assert_eq "$SIZE" "$(stat -c %s "$V")" "size after remount"
shadow fullcmp "$V" "$SH" || fail "contents differ after remount"

# ---- snapshots are read-only
log "snapshot file"
echo "snapshot vol s1" >"$M/.control" || fail "snapshot command failed"
[[ -f $M/vol@s1 ]] || fail "vol@s1 does not appear"
assert_eq EROFS "$(errno_of "os.open('$M/vol@s1', os.O_WRONLY)")" "open snapshot for writing"
assert_eq EROFS "$(errno_of "os.open('$M/vol@s1', os.O_RDWR)")" "open snapshot read-write"
assert_eq EROFS "$(errno_of "os.truncate('$M/vol@s1', $((400 * MiB)))")" "truncate a snapshot"
cp "$SH" "$W/shadow.s1"
shadow write "$V" "$SH" $((50 * MiB + 3)) 10000 31
shadow fullcmp "$M/vol@s1" "$W/shadow.s1" || fail "snapshot changed when the volume was written"
shadow fullcmp "$V" "$SH" || fail "volume differs after snapshot + write"
# A clone of the snapshot is a writable volume with the snapshot's bytes.
echo "clone vol@s1 copy" >"$M/.control" || fail "clone command failed"
shadow fullcmp "$M/copy" "$W/shadow.s1" || fail "clone differs from its snapshot"
cp "$W/shadow.s1" "$W/shadow.copy"
shadow write "$M/copy" "$W/shadow.copy" 12345 777 32 || fail "writing the clone failed"
shadow fullcmp "$M/copy" "$W/shadow.copy" || fail "clone differs after a write"
shadow fullcmp "$M/vol@s1" "$W/shadow.s1" || fail "a write to the clone changed the snapshot"
shadow fullcmp "$V" "$SH" || fail "a write to the clone changed the volume"
echo "resize copy $((400 * MiB))" >"$M/.control" || fail "resize command failed"
assert_eq $((400 * MiB)) "$(stat -c %s "$M/copy")" "size after resize through .control"
echo "delete copy" >"$M/.control" || fail "delete command failed"
[[ -e $M/copy ]] && fail "deleted volume still visible"
# A new volume under the deleted one's name is new: it must read zeros, not
# the deleted volume's bytes (from the kernel's page cache, say).
echo "create copy $((64 * MiB))" >"$M/.control" || fail "create command failed"
cmp -n $((4 * MiB)) "$M/copy" /dev/zero || fail "a volume re-created under a deleted name shows old data"
stop_daemon "$M"

# ---- read-only mount
log "read-only mount"
start_daemon "$S" "$M" -o ro
assert_eq EROFS "$(errno_of "os.open('$V', os.O_WRONLY)")" "open for writing on a ro mount"
assert_eq EROFS "$(errno_of "os.open('$V', os.O_RDWR)")" "open read-write on a ro mount"
assert_eq EROFS "$(errno_of "os.chmod('$V', 0o644)")" "chmod on a ro mount"
assert_eq EROFS "$(errno_of "os.truncate('$V', $((400 * MiB)))")" "truncate on a ro mount"
if (echo "snapshot vol s2" >"$M/.control") 2>/dev/null; then fail "snapshot succeeded on a ro mount"; fi
shadow readcmp "$V" "$SH" 40 16 || fail "reads on a ro mount differ"
stop_daemon "$M"
