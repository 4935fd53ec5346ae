#!/usr/bin/env bash
# mount(8) integration: `cmake --install` into a temporary prefix, then
#   1. the finding: with PREFIX/bin on PATH but no helper in /sbin,
#      `mount -t fuse.ovbdfs` fails -- mount(8) strips PATH before running
#      /sbin/mount.fuse, whose `sh -c ovbdfs` then searches only sh's default
#      path (see mount-helper/README.md) -- unless an ovbdfs is in that path;
#   2. with PREFIX/sbin/mount.fuse.ovbdfs linked into /sbin (what a package
#      installs), `mount -t fuse.ovbdfs STORE MNT` works, the volume is there,
#      umount ends the daemon cleanly;
#   3. options through mount(8): ro, flush_interval=N, and the fstab-only
#      nofail,_netdev, which must not reach libfuse;
#   4. an fstab line, used with `mount -T FSTAB MNT`;
#   5. the helper-less form `mount -t fuse PREFIX/bin/ovbdfs#STORE MNT`;
#   6. a `user` line in /etc/fstab: a non-root user mounts and unmounts its
#      own store with plain `mount MNT` / `umount MNT` (mount(8) runs the
#      helper, and so ovbdfs, with the user's privileges; /dev/fuse 0666).
#   7. every -o option src/fuse/main.cc parses (its kOptSpec) has its entry
#      in the installed ovbdfs(8), in the installed mount-helper/README.md's
#      option tables, and in `ovbdfs --help`.
# The /sbin link, the /etc/fstab line, the user and /dev/fuse's mode exist
# only for the duration of the test.
. "$(dirname "$0")/lib.sh"
require_root "mount(8) and installing a helper into /sbin"
require_fuse
require_cmd cmake mount umount findmnt
e2e_init

[[ -n ${OVBD_BUILD_DIR:-} && -f $OVBD_BUILD_DIR/cmake_install.cmake ]] ||
  fail "OVBD_BUILD_DIR must name the build directory (set by CMake)"
W=$E2E_WORK
P=$W/prefix
cmake --install "$OVBD_BUILD_DIR" --prefix "$P" >"$W/install.log" 2>&1 || { cat "$W/install.log" >&2; fail "cmake --install failed"; }
for f in bin/ovbdfs bin/ovbd sbin/mount.fuse.ovbdfs; do
  [[ -x $P/$f ]] || fail "cmake --install did not install $f"
done
export PATH=$P/bin:$PATH
S=$W/store
M=$W/mnt
mkdir -p "$M"
E2E_FUSE_MOUNTS+=("$M")
ovbd store init "$S" >/dev/null
ovbd volume create "$S" vm1 --size 64M >/dev/null
HELPER=/sbin/mount.fuse.ovbdfs

# The daemon mount(8) started (found by its exe and our unique store path).
daemon_pid() {
  local p
  p=$(pids_of "$P/bin/ovbdfs" "$S")
  [[ -n $p ]] || fail "no ovbdfs process for $S after mount"
  echo "$p"
}
# check_mounted OPTION: mounted as fuse.ovbdfs from $S, OPTION among its options.
check_mounted() {
  local got
  mountpoint -q "$M" || fail "$M is not a mount point"
  got=$(findmnt -n -o FSTYPE,SOURCE "$M" | awk '{ print $1, $2 }')
  assert_eq "fuse.ovbdfs $S" "$got" "findmnt FSTYPE SOURCE"
  findmnt -n -o OPTIONS "$M" | tr ',' '\n' | grep -x "$1" >/dev/null || fail "mount options lack $1: $(findmnt -n -o OPTIONS "$M")"
  assert_eq $((64 << 20)) "$(stat -c %s "$M/vm1")" "size of vm1 under mount(8)"
}
umount_and_wait() {
  local pid
  pid=$(daemon_pid)
  umount "$M" || fail "umount $M failed"
  wait_until 30 "ovbdfs exits after umount" proc_gone "$pid" || fail "ovbdfs still running after umount"
}

# ---- 7 (first: it needs no mount). every -o option ovbdfs parses is documented
MAN8=$(find "$P" -path '*/man8/ovbdfs.8' | head -n 1)
MHREADME=$(find "$P" -path '*/doc/*/mount-helper/README.md' | head -n 1)
[[ -n $MAN8 && -n $MHREADME ]] || fail "cmake --install did not install ovbdfs.8 and mount-helper/README.md"
"$P/bin/ovbdfs" --help >"$W/help.txt" 2>&1 || fail "ovbdfs --help failed"
opts=$(sed -n '/^const fuse_opt kOptSpec/,/FUSE_OPT_END/p' "$E2E_DIR/../../src/fuse/main.cc" |
  grep -oE '\{"[a-z_]+|FUSE_OPT_KEY\("[a-z_]+' | grep -oE '[a-z_]+$' | sort -u)
[[ $(wc -w <<<"$opts") -ge 10 ]] || fail "found only these options in main.cc's kOptSpec: $opts"
undocumented=()
for o in $opts; do
  # ovbdfs.8: an .TP entry `.B "\-o NAME"` or `.BI "\-o NAME=" value`.
  grep -qE "^\.B[IR]? \"?\\\\-o $o([=\" ]|\$)" "$MAN8" || undocumented+=("$o (ovbdfs.8)")
  # README: a table row starting with `NAME` or `NAME=...`.
  grep -qE "^\| \`$o[=\`]" "$MHREADME" || undocumented+=("$o (mount-helper/README.md)")
  grep -qE -- "-o $o([= ]|\$)" "$W/help.txt" || undocumented+=("$o (ovbdfs --help)")
done
((${#undocumented[@]} == 0)) || fail "-o options without their documentation: ${undocumented[*]}"
log "every -o option of ovbdfs is in ovbdfs(8), mount-helper/README.md and --help:" $opts

# ---- 1. no helper: mount(8) drops PATH
if [[ -e $HELPER || -L $HELPER ]]; then
  log "$HELPER exists (an installed ovbdfs); setting it aside for this test"
  mv "$HELPER" "$W/mount.fuse.ovbdfs.saved"
  on_cleanup mv "$W/mount.fuse.ovbdfs.saved" "$HELPER"
fi
default_ovbdfs=$(env -i /bin/sh -c 'command -v ovbdfs' || true)
if mount -t fuse.ovbdfs "$S" "$M" 2>"$W/nohelper.err"; then
  [[ -n $default_ovbdfs ]] ||
    fail "mount -t fuse.ovbdfs worked with no helper and no ovbdfs in sh's default PATH"
  log "no helper: mounted with $default_ovbdfs (in sh's default PATH)"
  umount "$M"
  wait_until 30 "unmounted" not_mounted "$M" || fail "cannot unmount"
else
  [[ -z $default_ovbdfs ]] || fail "mount failed although $default_ovbdfs is in sh's default PATH: $(cat "$W/nohelper.err")"
  grep -q 'ovbdfs: not found' "$W/nohelper.err" || fail "no-helper mount failed for another reason: $(cat "$W/nohelper.err")"
  log "FINDING: with PATH=$P/bin:... and no $HELPER, mount -t fuse.ovbdfs fails:"
  log "FINDING:   $(tr '\n' ' ' <"$W/nohelper.err")"
  log "FINDING: mount(8) removes PATH from the environment of /sbin/mount.fuse (util-linux"
  log "FINDING: sanitize_env), whose 'sh -c ovbdfs' then searches only sh's default path."
fi

# ---- 2. the helper, as a package installs it
ln -s "$P/sbin/mount.fuse.ovbdfs" "$HELPER"
on_cleanup rm -f "$HELPER"
log "mount -t fuse.ovbdfs via $HELPER -> $P/sbin/mount.fuse.ovbdfs"
mount -t fuse.ovbdfs "$S" "$M" || fail "mount -t fuse.ovbdfs $S $M failed with the helper"
check_mounted rw
head -c $((1 << 20)) /dev/urandom >"$W/pattern"
dd if="$W/pattern" of="$M/vm1" bs=64k seek=16 conv=notrunc,fsync status=none || fail "writing vm1 failed"
cmp -n $((1 << 20)) -i $((1 << 20)):0 "$M/vm1" "$W/pattern" || fail "vm1 reads back wrong"
umount_and_wait

# ---- 3. options through mount(8)
log "mount -t fuse.ovbdfs -o ro,flush_interval=2,nofail,_netdev"
mount -t fuse.ovbdfs -o ro,flush_interval=2,nofail,_netdev "$S" "$M" || fail "mount with options failed"
check_mounted ro
assert_eq EROFS "$(errno_of "os.open('$M/vm1', os.O_WRONLY)")" "open for writing on a ro mount(8) mount"
cmp -n $((1 << 20)) -i $((1 << 20)):0 "$M/vm1" "$W/pattern" || fail "vm1 reads back wrong after remount"
umount_and_wait

# ---- 4. an fstab line
log "mount -T FSTAB MNT"
cat >"$W/fstab" <<EOF
# a test fstab
$S  $M  fuse.ovbdfs  defaults,noauto,nofail,flush_interval=1,allow_other  0  0
EOF
mount -T "$W/fstab" "$M" || fail "mount -T $W/fstab $M failed"
check_mounted rw
findmnt -n -o OPTIONS "$M" | grep allow_other >/dev/null || fail "allow_other did not reach the kernel mount"
cmp -n $((1 << 20)) -i $((1 << 20)):0 "$M/vm1" "$W/pattern" || fail "vm1 reads back wrong (fstab mount)"
echo "snapshot vm1 fstab" >"$M/.control" || fail ".control command on the fstab mount failed"
[[ -f $M/vm1@fstab ]] || fail "snapshot not visible"
umount_and_wait

# ---- 5. without any helper: the program named in the source
rm -f "$HELPER"
log "mount -t fuse '$P/bin/ovbdfs#$S' MNT (no helper needed)"
mount -t fuse "$P/bin/ovbdfs#$S" "$M" || fail "mount -t fuse PROGRAM#STORE failed"
mountpoint -q "$M" || fail "$M is not a mount point"
[[ -f $M/vm1 && -f $M/vm1@fstab ]] || fail "volumes not visible through mount -t fuse PROGRAM#STORE"
umount_and_wait

# ---- 6. a non-root user mounts through /etc/fstab
require_cmd useradd runuser
U=ovbdmh$$
add_user "$U"
open_dev_fuse
ln -s "$P/sbin/mount.fuse.ovbdfs" "$HELPER"
chmod 755 "$W" "$P"
UD=$W/user
mkdir -p "$UD"
chown "$U:" "$UD"
as_user "$U" mkdir "$UD/mnt"
as_user "$U" "$P/bin/ovbd" store init "$UD/store" >/dev/null
as_user "$U" "$P/bin/ovbd" volume create "$UD/store" mine --size 16M >/dev/null
E2E_FUSE_MOUNTS+=("$UD/mnt")
cp -p /etc/fstab "$W/fstab.orig"
on_cleanup cp -p "$W/fstab.orig" /etc/fstab
echo "$UD/store $UD/mnt fuse.ovbdfs user,noauto,flush_interval=1 0 0 # ovbdfs e2e test $$" >>/etc/fstab
log "as $U: mount $UD/mnt (a 'user' line in /etc/fstab)"
as_user "$U" mount "$UD/mnt" || fail "$U cannot mount its fstab entry"
pid=$(pids_of "$P/bin/ovbdfs" "$UD/store")
[[ -n $pid ]] || fail "no ovbdfs for $U's store"
assert_eq "$U" "$(ps -o user= -p "$pid")" "user running ovbdfs started by a user mount"
assert_eq "$U $((16 << 20))" "$(as_user "$U" stat -c '%U %s' "$UD/mnt/mine")" "owner and size under a user mount"
as_user "$U" dd if=/dev/zero of="$UD/mnt/mine" bs=4k count=1 conv=notrunc,fsync status=none ||
  fail "$U cannot write its volume under a user mount"
as_user "$U" umount "$UD/mnt" || fail "$U cannot umount its fstab entry"
wait_until 30 "ovbdfs exits after the user's umount" proc_gone "$pid" || fail "ovbdfs still running after umount"
