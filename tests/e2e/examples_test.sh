#!/usr/bin/env bash
# Runs the scripts in examples/ against the binaries under test and checks
# that each one ends with its "all checks passed" line (each script checks
# its own results and exits non-zero on any mismatch):
#   vm-disks.sh             as root (qemu-io, qemu-img, e2fsck on volume files)
#   consistency-group.sh    as root
#   registry-round-trip.sh  as root, with its own docker-registry on
#                           127.0.0.1; without docker-registry installed
#                           this one is skipped (loudly) and the others run
#   rootless.sh             as a new non-root user (plain ovbdfs through
#                           fusermount3, fuse2fs), with /dev/fuse set to 0666
#                           for the duration if it is not already.
# Every example runs even when an earlier one failed; the test fails at the
# end, naming each that did.
# E2E_CORRUPT=1 runs the vm-disks example with a qemu-io that writes a
# different pattern than the example expects, and the registry example with
# an ovbd that flips a byte of the pushed layer in the registry's storage
# after the push: both examples must then fail, and so the test.
. "$(dirname "$0")/lib.sh"
require_root "creating a user for the rootless example"
require_fuse
require_cmd qemu-io qemu-img fuse2fs mkfs.ext4 e2fsck useradd runuser python3
e2e_init
EX=$(cd "$E2E_DIR/../../examples" && pwd)
W=$E2E_WORK
chmod 755 "$W"

FAILED_EXAMPLES=()
# run_example NAME [as USER]: runs examples/NAME.sh, with the ovbd in
# $EXAMPLE_OVBD if that is set; a failure is recorded, not fatal.
run_example() {
  local name=$1 out=$W/$1.out rc=0
  shift
  log "running examples/$name.sh $*"
  if [[ ${1:-} == as ]]; then
    as_user "$2" env OVBD="$BOVBD" OVBDFS="$BOVBDFS" FUSE2FS="$(command -v fuse2fs)" \
      bash "$W/ex/$name.sh" >"$out" 2>&1 || rc=$?
  else
    PATH=$QEMU_PATH OVBD=${EXAMPLE_OVBD:-$OVBD} OVBDFS=$OVBDFS bash "$EX/$name.sh" >"$out" 2>&1 || rc=$?
  fi
  tail -n 5 "$out" >&2
  if [[ $rc != 0 ]]; then
    log "FAILED: examples/$name.sh exited $rc (output in $out)"
    FAILED_EXAMPLES+=("$name")
  elif ! grep -q "^$name: all checks passed$" "$out"; then
    log "FAILED: examples/$name.sh did not finish its checks (output in $out)"
    FAILED_EXAMPLES+=("$name")
  fi
  return 0
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

if command -v docker-registry >/dev/null 2>&1; then
  REGISTRY_OVBD=$OVBD
  if corrupting; then
    # An ovbd that, after a push, inverts the middle byte of the largest blob
    # in the registry's storage (the example keeps it in W/registry/data, W
    # being two levels above store A, the push's first argument).
    mkdir -p "$W/fake-ovbd"
    { printf '#!/bin/bash\nreal=%q py=%q\n' "$OVBD" "$PY"; cat <<'EOS'; } >"$W/fake-ovbd/ovbd"
"$real" "$@" || exit
[[ $1 == push ]] || exit 0
data=$(dirname "$(dirname "$2")")/registry/data
blob=$(find "$data" -path '*/blobs/sha256/*/data' -printf '%s %p\n' | sort -n | tail -n 1 | cut -d' ' -f2-)
"$py" -c '
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
off = os.fstat(fd).st_size // 2
os.pwrite(fd, bytes([os.pread(fd, 1, off)[0] ^ 0xFF]), off)
os.close(fd)
print("E2E_CORRUPT: inverted the byte at", off, "of", sys.argv[1], file=sys.stderr)' "$blob"
EOS
    chmod +x "$W/fake-ovbd/ovbd"
    REGISTRY_OVBD=$W/fake-ovbd/ovbd
  fi
  EXAMPLE_OVBD=$REGISTRY_OVBD run_example registry-round-trip
else
  skip_part "examples/registry-round-trip.sh: 'docker-registry' is not installed" \
    "(Debian: apt-get install docker-registry); the other examples still run"
fi

U=ovbdex$$
add_user "$U"
mkdir -p "$W/bin" "$W/ex"
install -m 755 "$OVBD" "$W/bin/ovbd"
install -m 755 "$OVBDFS" "$W/bin/ovbdfs"
install -m 644 "$EX/rootless.sh" "$W/ex/rootless.sh"
BOVBD=$W/bin/ovbd
BOVBDFS=$W/bin/ovbdfs
open_dev_fuse
run_example rootless as "$U"
((${#FAILED_EXAMPLES[@]} == 0)) || fail "examples that failed: ${FAILED_EXAMPLES[*]}"
log "PASS"
