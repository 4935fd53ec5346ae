#!/usr/bin/env bash
# Runs the scripts in examples/ against the binaries under test and checks
# that each one ends with its "all checks passed" line (each script checks
# its own results and exits non-zero on any mismatch):
#   vm-disks.sh           as root (qemu-io, qemu-img, e2fsck on volume files)
#   consistency-group.sh  as root
#   rootless.sh           as a new non-root user (plain ovbdfs through
#                         fusermount3, fuse2fs), with /dev/fuse set to 0666
#                         for the duration if it is not already.
# E2E_CORRUPT=1 runs the vm-disks example with a qemu-io that writes a
# different pattern than the example expects: the test must then FAIL.
. "$(dirname "$0")/lib.sh"
require_root "creating a user for the rootless example"
require_fuse
require_cmd qemu-io qemu-img fuse2fs mkfs.ext4 e2fsck useradd runuser python3
e2e_init
EX=$(cd "$E2E_DIR/../../examples" && pwd)
W=$E2E_WORK
chmod 755 "$W"

run_example() { # run_example NAME [as USER]
  local name=$1 out=$W/$1.out rc=0
  shift
  log "running examples/$name.sh $*"
  if [[ ${1:-} == as ]]; then
    as_user "$2" env OVBD="$BOVBD" OVBDFS="$BOVBDFS" FUSE2FS="$(command -v fuse2fs)" \
      bash "$W/ex/$name.sh" >"$out" 2>&1 || rc=$?
  else
    PATH=$QEMU_PATH OVBD=$OVBD OVBDFS=$OVBDFS bash "$EX/$name.sh" >"$out" 2>&1 || rc=$?
  fi
  tail -n 5 "$out" >&2
  [[ $rc == 0 ]] || fail "examples/$name.sh exited $rc (output in $out)"
  grep -q "^$name: all checks passed$" "$out" || fail "examples/$name.sh did not finish its checks"
}

QEMU_PATH=$PATH
if corrupting; then
  # A qemu-io that writes 0x11 whatever pattern it is asked for.
  mkdir -p "$W/fakebin"
  cat >"$W/fakebin/qemu-io" <<EOS
#!/bin/bash
args=()
for a in "\$@"; do args+=("\${a/write -P 0xbb/write -P 0x11}"); done
exec $(command -v qemu-io) "\${args[@]}"
EOS
  chmod +x "$W/fakebin/qemu-io"
  QEMU_PATH=$W/fakebin:$PATH
fi
run_example vm-disks
run_example consistency-group

U=ovbdex$$
add_user "$U"
mkdir -p "$W/bin" "$W/ex"
install -m 755 "$OVBD" "$W/bin/ovbd"
install -m 755 "$OVBDFS" "$W/bin/ovbdfs"
install -m 644 "$EX/rootless.sh" "$W/ex/rootless.sh"
BOVBD=$W/bin/ovbd
BOVBDFS=$W/bin/ovbdfs
fuse_mode=$(stat -c %a /dev/fuse)
if [[ $fuse_mode != 666 ]]; then
  log "NOTE: setting /dev/fuse to 0666 (the distributions' default) for this test; restored after"
  on_cleanup chmod "$fuse_mode" /dev/fuse
  chmod 0666 /dev/fuse
fi
run_example rootless as "$U"
log "PASS"
