#!/usr/bin/env bash
# The rootless path, with real users. As root this test only prepares the
# machine: it creates two users, sets /dev/fuse to 0666 and (for the
# allow_other part) adds user_allow_other to /etc/fuse.conf -- all restored at
# the end. Everything else runs as the first user: `ovbd store init`,
# `ovbd volume create`, a plain `ovbdfs STORE MNT` (mounted through
# fusermount3), mkfs.ext4 on the volume FILE, fuse2fs -o fakeroot on it, files
# written, everything unmounted and mounted again, files intact, e2fsck -fn
# clean. The second user must get EACCES on the first user's volume and
# .control: without allow_other (FUSE refuses other users outright), and with
# allow_other (the mode bits, enforced by default_permissions, refuse them).
#
# E2E_CORRUPT=1 flips a byte of a file's data in the upper before the
# remount: the test must then fail.
. "$(dirname "$0")/lib.sh"
require_root "creating users and setting /dev/fuse's mode"
require_fuse
require_cmd useradd userdel runuser fuse2fs mkfs.ext4 e2fsck
e2e_init

W=$E2E_WORK
chmod 755 "$W"
U1=ovbde2e$$a
U2=ovbde2e$$b
add_user "$U1"
add_user "$U2"

# The binaries under test, where any user can run them.
mkdir -p "$W/bin"
install -m 755 "$OVBD" "$W/bin/ovbd"
install -m 755 "$OVBDFS" "$W/bin/ovbdfs"
BOVBD=$W/bin/ovbd
BOVBDFS=$W/bin/ovbdfs
FUSE2FS=$(command -v fuse2fs)

open_dev_fuse
if [[ -e /etc/fuse.conf ]]; then
  cp -p /etc/fuse.conf "$W/fuse.conf.orig"
  on_cleanup cp -p "$W/fuse.conf.orig" /etc/fuse.conf
else
  on_cleanup rm -f /etc/fuse.conf
fi
# Start from a fuse.conf without user_allow_other.
if [[ -e /etc/fuse.conf ]] && grep -q '^[[:space:]]*user_allow_other' /etc/fuse.conf; then
  sed -i 's/^[[:space:]]*user_allow_other/#user_allow_other/' /etc/fuse.conf
fi

UW=$W/u1
mkdir -p "$UW"
chown "$U1:" "$UW"
chmod 755 "$UW" # others may look in: refusals below come from FUSE, not from this directory
S=$UW/store
M=$UW/disks
F=$UW/fs
V=$M/disk
E2E_FUSE_MOUNTS+=("$M" "$F")
as_user "$U1" mkdir "$M" "$F"

u1() { as_user "$U1" "$@"; }
mounted_for() { as_user "$1" timeout 10 mountpoint -q "$2"; }
# Plain `ovbdfs STORE MNT` as U1: it daemonizes; wait for the mount.
mount_store() {
  u1 "$BOVBDFS" "$S" "$M" "$@" || fail "ovbdfs $* as $U1 failed"
  wait_until 30 "$U1's ovbdfs mount" mounted_for "$U1" "$M" || fail "$U1's ovbdfs did not mount"
  OVBDFS_PID=$(pids_of "$BOVBDFS" "$S")
  [[ -n $OVBDFS_PID ]] || fail "cannot find $U1's ovbdfs process"
  log "$U1 mounted the store (ovbdfs pid $OVBDFS_PID${*:+, $*})"
}
unmount_store() {
  u1 fusermount3 -u "$M" || fail "fusermount3 -u as $U1 failed"
  wait_until 60 "ovbdfs exits" proc_gone "$OVBDFS_PID" || fail "ovbdfs did not exit after fusermount3 -u"
}
mount_fs() {
  u1 "$FUSE2FS" -o fakeroot "$V" "$F" || fail "fuse2fs -o fakeroot as $U1 failed"
  wait_until 30 "fuse2fs mount" mounted_for "$U1" "$F" || fail "fuse2fs did not mount"
  FUSE2FS_PID=$(pids_of "$FUSE2FS" "$V")
  [[ -n $FUSE2FS_PID ]] || fail "cannot find the fuse2fs process"
}
unmount_fs() {
  u1 fusermount3 -u "$F" || fail "fusermount3 -u of fuse2fs failed"
  # fuse2fs writes its last metadata and closes the volume file on the way out.
  wait_until 60 "fuse2fs exits" proc_gone "$FUSE2FS_PID" || fail "fuse2fs did not exit"
}
manifest_as_u1() { u1 bash -c "$(declare -f tree_manifest); tree_manifest '$1'"; }

# ---- the first user: store, volume, mount, ext4 on the file, fuse2fs
log "as $U1: store init, volume create, ovbdfs, mkfs.ext4, fuse2fs"
u1 "$BOVBD" store init "$S" >/dev/null || fail "ovbd store init as $U1 failed"
u1 "$BOVBD" volume create "$S" disk --size 512M >/dev/null || fail "ovbd volume create as $U1 failed"
mount_store
assert_eq "$U1 $((512 << 20))" "$(u1 stat -c '%U %s' "$V")" "owner and size of the volume file"
u1 /sbin/mkfs.ext4 -q -F "$V" || fail "mkfs.ext4 on the volume file as $U1 failed"
mount_fs
make_tree "$W/src" 120 96 5
u1 cp -r "$W/src" "$F/data" || fail "copying files into fuse2fs as $U1 failed"
u1 sync
manifest_as_u1 "$F/data" >"$W/manifest"
tree_manifest "$W/src" | diff -u - "$W/manifest" >&2 || fail "files read back wrong through fuse2fs"

# ---- the second user, no allow_other: FUSE itself refuses
log "as $U2: no access without allow_other"
assert_eq EACCES "$(errno_as "$U2" "os.open('$V', os.O_RDONLY)")" "$U2 opens $U1's volume (no allow_other)"
assert_eq EACCES "$(errno_as "$U2" "os.open('$M/.control', os.O_RDWR)")" "$U2 opens $U1's .control (no allow_other)"
assert_eq EACCES "$(errno_as "$U2" "os.stat('$V')")" "$U2 stats $U1's volume (no allow_other)"

# Where one file's first block is (for E2E_CORRUPT).
victim=$(cd "$W/src" && find . -type f -size +8k | LC_ALL=C sort | awk 'NR == 1')
unmount_fs
pblk=$(u1 /sbin/debugfs -R "bmap /data/${victim#./} 0" "$V" 2>/dev/null | tail -1)
unmount_store
if corrupting; then
  [[ $pblk =~ ^[0-9]+$ ]] || fail "debugfs did not give the block of $victim"
  flip_byte "$(upper_data "$S" disk)" $((4096 + pblk * 4096 + 7))
fi

# ---- everything again: files intact, e2fsck clean
log "as $U1: remount, fuse2fs, e2fsck"
mount_store
mount_fs
manifest_as_u1 "$F/data" | diff -u "$W/manifest" - >&2 || fail "files differ after remounting"
unmount_fs
u1 /sbin/e2fsck -fn "$V" >"$W/fsck.log" 2>&1 || { cat "$W/fsck.log" >&2; fail "e2fsck -fn on the volume file found problems"; }
unmount_store

# ---- allow_other needs user_allow_other
log "allow_other without and with user_allow_other"
if u1 "$BOVBDFS" "$S" "$M" -o allow_other 2>"$W/ao.err"; then
  fail "a non-root allow_other mount succeeded without user_allow_other in /etc/fuse.conf"
fi
log "refused as expected: $(tr '\n' ' ' <"$W/ao.err")"
mounted_for "$U1" "$M" && fail "mounted although ovbdfs failed"
echo user_allow_other >>/etc/fuse.conf
mount_store -o allow_other
# Mode bits now decide (default_permissions): volume 0644, .control 0660.
assert_eq ok "$(errno_as "$U2" "os.close(os.open('$V', os.O_RDONLY))")" "$U2 reads a 0644 volume (allow_other)"
assert_eq EACCES "$(errno_as "$U2" "os.open('$V', os.O_RDWR)")" "$U2 opens $U1's volume for writing (allow_other)"
u1 chmod 600 "$V"
assert_eq EACCES "$(errno_as "$U2" "os.open('$V', os.O_RDONLY)")" "$U2 opens $U1's 0600 volume (allow_other)"
assert_eq EACCES "$(errno_as "$U2" "os.open('$M/.control', os.O_RDWR)")" "$U2 opens $U1's .control (allow_other)"
assert_eq EACCES "$(errno_as "$U2" "os.open('$M/.control', os.O_RDONLY)")" "$U2 reads $U1's .control (allow_other)"
# The owner still can.
u1 bash -c "echo 'snapshot disk s1' > '$M/.control'" || fail "$U1 cannot run a command through .control"
assert_eq "$U1" "$(u1 stat -c %U "$M/disk@s1")" "owner of the snapshot file"
assert_eq EACCES "$(errno_as "$U2" "os.open('$M/disk@s1', os.O_RDONLY)")" "$U2 opens $U1's 0600 volume's snapshot"
unmount_store

# ---- volumes created through .control belong to the mounting user
log "as $U1: create through .control on a mounted store"
mount_store
u1 bash -c "echo 'create disk2 64M' > '$M/.control'" || fail "$U1 cannot create a volume through .control"
assert_eq "$U1" "$(u1 stat -c %U "$M/disk2")" "owner of a volume created through $U1's .control"
assert_eq ok "$(errno_as "$U1" "os.close(os.open('$M/disk2', os.O_RDWR))")" "$U1 opens the volume it created through .control"
unmount_store
