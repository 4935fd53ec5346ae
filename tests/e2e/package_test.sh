#!/usr/bin/env bash
# The Debian package, as a user meets it:
#   1. `cpack -G DEB` with the configuration of the build under test makes
#      exactly one .deb;
#   2. its control fields: package ovbdfs, the project's version, a
#      maintainer and a description, the machine's architecture, and Depends
#      naming fuse3 and the package of every shared library the binaries
#      need (found with readelf and dpkg -S, so a missing one is caught);
#   3. its contents: the binaries, the mount helper, the systemd unit and the
#      gzip-compressed man pages, all under /usr and owned by root;
#   4. unpacked with `dpkg -x` into a scratch root: both man pages render with
#      `man -l` without a single groff warning and have their sections; the
#      unit starts the packaged /usr/bin/ovbdfs; `ovbdfs --version`,
#      `ovbd --version` and `ovbd --help` work and name the version;
#   5. `mount -t fuse.ovbdfs` through the unpacked helper (linked as
#      /sbin/mount.fuse.ovbdfs for the duration of the test, as a package
#      installs it) runs the unpacked ovbdfs; a volume made by the unpacked
#      ovbd reads back byte for byte; umount ends the daemon.
. "$(dirname "$0")/lib.sh"
for c in cpack dpkg dpkg-deb; do
  command -v "$c" >/dev/null 2>&1 || skip "'$c' is not installed: cannot build or inspect the Debian package"
done
command -v dpkg-shlibdeps >/dev/null 2>&1 ||
  skip "'dpkg-shlibdeps' is not installed (package dpkg-dev): cpack needs it for the library dependencies"
require_cmd man groff gzip readelf
require_root "mount(8) and linking the helper into /sbin"
require_fuse
require_cmd mount umount findmnt
e2e_init

[[ -n ${OVBD_BUILD_DIR:-} && -f $OVBD_BUILD_DIR/CPackConfig.cmake ]] ||
  fail "OVBD_BUILD_DIR must name a configured build directory with CPackConfig.cmake (set by CMake)"
W=$E2E_WORK
SRC=$(cd "$E2E_DIR/../.." && pwd)
VERSION=$(sed -n 's/^project(ovbdfs VERSION \([0-9.]*\).*/\1/p' "$SRC/CMakeLists.txt")
[[ -n $VERSION ]] || fail "cannot read the project version from $SRC/CMakeLists.txt"
ARCH=$(dpkg --print-architecture)

# ---- 1. build the package (into the scratch directory, not the build tree)
log "cpack -G DEB (build $OVBD_BUILD_DIR, version $VERSION)"
(cd "$OVBD_BUILD_DIR" && cpack -G DEB -B "$W/pkg") >"$W/cpack.log" 2>&1 ||
  { cat "$W/cpack.log" >&2; fail "cpack -G DEB failed"; }
mapfile -t debs < <(find "$W/pkg" -maxdepth 1 -name '*.deb')
((${#debs[@]} == 1)) || { cat "$W/cpack.log" >&2; fail "expected one .deb in $W/pkg, found ${#debs[@]}"; }
DEB=${debs[0]}
assert_eq "ovbdfs_${VERSION}_${ARCH}.deb" "$(basename "$DEB")" "package file name"
log "made $(basename "$DEB") ($(stat -c %s "$DEB") bytes)"

# ---- 2. control fields
field() { dpkg-deb -f "$DEB" "$1"; }
dpkg-deb -I "$DEB" >"$W/info.txt" || fail "dpkg-deb -I cannot read the package"
assert_eq ovbdfs "$(field Package)" "Package"
assert_eq "$VERSION" "$(field Version)" "Version (the CMake project version)"
assert_eq "$ARCH" "$(field Architecture)" "Architecture"
[[ $(field Maintainer) =~ ^[^\<]+\ \<[^\>@]+@[^\>]+\>$ ]] || fail "Maintainer is not 'Name <address>': '$(field Maintainer)'"
desc=$(field Description)
[[ $(head -n1 <<<"$desc") == *[a-z]* && $(wc -l <<<"$desc") -ge 2 ]] ||
  fail "Description needs a summary line and a long description: '$desc'"
DEPENDS=$(field Depends)
log "Depends: $DEPENDS"
# The package names in Depends, one a line (versions and alternatives dropped).
dep_names=$(tr ',|' '\n\n' <<<"$DEPENDS" | sed 's/(.*//; s/:.*//; s/[[:space:]]//g' | grep -v '^$' | sort -u)
has_dep() { grep -qx -- "$1" <<<"$dep_names"; }
has_dep fuse3 || fail "Depends lacks fuse3 (fusermount3, mount.fuse3): $DEPENDS"

# ---- 3. contents
dpkg-deb -c "$DEB" >"$W/contents.txt" || fail "dpkg-deb -c cannot list the package"
entry() { awk -v p="$1" '$6 == p' "$W/contents.txt"; }
for f in ./usr/bin/ovbdfs ./usr/bin/ovbd ./usr/sbin/mount.fuse.ovbdfs; do
  e=$(entry "$f")
  [[ -n $e ]] || fail "the package lacks $f"
  [[ $e == -rwxr-xr-x\ root/root* ]] || fail "$f is not an executable owned by root: $e"
done
for f in ./usr/lib/systemd/system/ovbdfs@.service ./usr/share/man/man8/ovbdfs.8.gz \
  ./usr/share/man/man1/ovbd.1.gz ./usr/share/doc/ovbdfs/README.md \
  ./usr/share/doc/ovbdfs/mount-helper/README.md; do
  e=$(entry "$f")
  [[ -n $e ]] || fail "the package lacks $f"
  [[ $e == -rw-r--r--\ root/root* ]] || fail "$f is not a 0644 file owned by root: $e"
done
outside=$(awk '$6 != "./" && $6 !~ /^\.\/usr\//' "$W/contents.txt")
[[ -z $outside ]] || fail "the package installs outside /usr: $outside"
! grep -qF -- "$OVBD_BUILD_DIR" "$W/contents.txt" || fail "the package holds paths of the build tree"

# ---- 4. unpacked: man pages, unit, binaries
R=$W/root
dpkg -x "$DEB" "$R" || fail "dpkg -x failed"
for b in "$R/usr/bin/ovbdfs" "$R/usr/bin/ovbd"; do
  readelf -d "$b" >"$W/dyn.txt" || fail "readelf -d $b failed"
  ! grep -E 'RPATH|RUNPATH' "$W/dyn.txt" | grep -qF -- "$OVBD_BUILD_DIR" ||
    fail "$b keeps a run path into the build tree"
  ! readelf -S "$b" | grep -q '\.debug_info' || fail "$b is not stripped"
  # Every shared library it loads must come from a package named in Depends.
  for so in $(sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' "$W/dyn.txt"); do
    owners=$(dpkg -S "*/$so" 2>/dev/null | sed 's/[:,].*//' | sort -u)
    [[ -n $owners ]] || fail "no installed package holds $so, needed by $(basename "$b")"
    # A library package may be named in Depends by a virtual name it
    # provides (libspdlog1.10 provides libspdlog1.10-fmt9, which its shlibs
    # file names).
    ok=0
    for o in $owners; do
      for n in "$o" $(dpkg-query -W -f='${Provides}' "$o" 2>/dev/null | tr ',' '\n' | sed 's/(.*//; s/:.*//'); do
        has_dep "$n" && ok=1
      done
    done
    ((ok)) || fail "$(basename "$b") needs $so (package $(tr '\n' ' ' <<<"$owners")), which Depends does not name: $DEPENDS"
  done
done
log "every shared library the binaries need is in Depends"

# check_page FILE SECTION...: renders with man -l, without warnings, with the sections.
check_page() {
  local page=$1 name out err s
  shift
  name=$(basename "$page" .gz)
  out=$W/$name.txt
  err=$W/$name.err
  MANROFFOPT=-ww MANWIDTH=80 LC_ALL=C.UTF-8 man -l "$page" 2>"$err" | cat >"$out" ||
    fail "man -l $page failed: $(cat "$err")"
  [[ ! -s $err ]] || fail "man -l $page warns: $(cat "$err")"
  zcat "$page" | groff -man -ww -z 2>"$err" || fail "groff -man -ww -z rejects $page"
  [[ ! -s $err ]] || fail "groff warns on $page: $(cat "$err")"
  for s in "$@"; do
    grep -qx -- "$s" "$out" || fail "$name has no section '$s'"
  done
  log "$name renders cleanly ($(wc -l <"$out") lines)"
}
common=(NAME SYNOPSIS DESCRIPTION OPTIONS FILES "EXIT STATUS" EXAMPLES "SEE ALSO")
check_page "$R/usr/share/man/man8/ovbdfs.8.gz" "${common[@]}"
check_page "$R/usr/share/man/man1/ovbd.1.gz" "${common[@]}" COMMANDS
grep -q 'flush_interval' "$W/ovbdfs.8.txt" || fail "ovbdfs(8) does not describe flush_interval"
grep -q 'volume import' "$W/ovbd.1.txt" || fail "ovbd(1) does not describe volume import"

unit=$R/usr/lib/systemd/system/ovbdfs@.service
exec_start=$(sed -n 's/^ExecStart=\([^ ]*\).*/\1/p' "$unit")
assert_eq /usr/bin/ovbdfs "$exec_start" "the packaged unit's ExecStart binary"

got=$("$R/usr/bin/ovbdfs" --version) || fail "the unpacked ovbdfs --version failed"
[[ $got == *"ovbdfs $VERSION"* ]] || fail "ovbdfs --version says '$got', not version $VERSION"
got=$("$R/usr/bin/ovbd" --version) || fail "the unpacked ovbd --version failed"
[[ $got == *"$VERSION"* ]] || fail "ovbd --version says '$got', not version $VERSION"
"$R/usr/bin/ovbd" --help >"$W/ovbd-help.txt" || fail "the unpacked ovbd --help failed"
for c in layer flatten store volume snapshot clone delete resize status check gc; do
  grep -qw -- "$c" "$W/ovbd-help.txt" || fail "ovbd --help does not list '$c'"
done
log "unpacked binaries: $("$R/usr/bin/ovbdfs" --version | head -n1)"

# ---- 5. mount through the unpacked helper
HELPER=/sbin/mount.fuse.ovbdfs
S=$W/store
M=$W/mnt
mkdir -p "$M"
head -c $((4 << 20)) /dev/urandom >"$W/disk.raw"
"$R/usr/bin/ovbd" store init "$S" >/dev/null || fail "the unpacked ovbd cannot init a store"
"$R/usr/bin/ovbd" volume import "$S" vm1 "$W/disk.raw" --compress lz4 >/dev/null ||
  fail "the unpacked ovbd cannot import a volume"
if [[ -e $HELPER || -L $HELPER ]]; then
  log "$HELPER exists (an installed ovbdfs); setting it aside for this test"
  mv "$HELPER" "$W/mount.fuse.ovbdfs.saved"
  on_cleanup mv "$W/mount.fuse.ovbdfs.saved" "$HELPER"
fi
ln -s "$R/usr/sbin/mount.fuse.ovbdfs" "$HELPER"
on_cleanup rm -f "$HELPER"
E2E_FUSE_MOUNTS+=("$M")
log "mount -t fuse.ovbdfs via $HELPER -> $R/usr/sbin/mount.fuse.ovbdfs"
mount -t fuse.ovbdfs "$S" "$M" || fail "mount -t fuse.ovbdfs through the packaged helper failed"
assert_eq "fuse.ovbdfs $S" "$(findmnt -n -o FSTYPE,SOURCE "$M" | awk '{ print $1, $2 }')" "findmnt FSTYPE SOURCE"
pid=$(pids_of "$R/usr/bin/ovbdfs" "$S")
[[ -n $pid ]] || fail "mount(8) did not run the unpacked $R/usr/bin/ovbdfs"
assert_eq $((4 << 20)) "$(stat -c %s "$M/vm1")" "size of vm1"
cmp "$W/disk.raw" "$M/vm1" || fail "vm1 does not read back as the imported image"
grep -q 'vm1' "$M/.control" || fail ".control does not report vm1"
umount "$M" || fail "umount $M failed"
wait_until 30 "ovbdfs (pid $pid) exits after umount" proc_gone "$pid" || fail "ovbdfs still running after umount"
not_mounted "$M" || fail "$M is still mounted after umount"
log "mounted, read and unmounted through the package's helper and daemon"
