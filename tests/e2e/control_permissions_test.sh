#!/usr/bin/env bash
# Permissions per .control command (docs/CONTROL.md, "Who may use it"), with
# real users. The daemon runs as root with a dedicated primary group and
# allow_other, so .control is root:GROUP 0660 and both users below, members
# of GROUP, may open it. One .control reaches every volume, so each command
# is checked against the volume it acts on, as the kernel checks files:
#
#  - user B gets EPERM for `delete` and `resize` of user A's 0600 volume
#    (and of its snapshot), through a raw write and through `ovbd delete`;
#    EACCES for `snapshot`, `clone` of its snapshot and `snapshot --all`;
#    nothing changes;
#  - once the volume is 0640 in a group B is in, B may snapshot and clone
#    it, and the clone is B's; B may resize and delete B's own volumes;
#  - A (the owner) and root may do everything.
#
# E2E_CORRUPT=1 runs B's delete as A instead: the EPERM check must then fail.
. "$(dirname "$0")/lib.sh"
require_root "creating users and groups"
require_fuse
require_cmd useradd userdel groupadd groupdel usermod runuser setpriv
e2e_init

W=$E2E_WORK
chmod 755 "$W"
G=ovbdg$$
UA=ovbdp$$a
UB=ovbdp$$b
groupadd "$G" || fail "groupadd $G failed"
on_cleanup groupdel "$G"
add_user "$UA"
add_user "$UB"
usermod -aG "$G" "$UA"
usermod -aG "$G" "$UB"
GID=$(getent group "$G" | cut -d: -f3)

mkdir -p "$W/bin"
install -m 755 "$OVBD" "$W/bin/ovbd"
BOVBD=$W/bin/ovbd
S=$W/store
M=$W/mnt
C=$M/.control
"$OVBD" store init "$S" >/dev/null
E2E_DAEMON_WRAP=(setpriv --regid="$GID" --clear-groups --)
start_daemon "$S" "$M" -o allow_other
E2E_DAEMON_WRAP=()
assert_eq "660 0 $GID" "$(stat -c '%a %u %g' "$C")" ".control's mode, owner and group"

# ctl_as USER LINE: one write of LINE to .control as USER; prints ok or the errno name.
ctl_as() {
  as_user "$1" "$PY" -c '
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    os.write(fd, (sys.argv[2] + "\n").encode())
    print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
os.close(fd)
' "$C" "$2"
}
PROBLEMS=()
expect_as() { # expect_as USER ERRNO LINE
  local got
  got=$(ctl_as "$1" "$3")
  [[ $got == "$2" ]] || { PROBLEMS+=("$1 '$3': $got, expected $2"); log "PROBLEM: $1 '$3': $got, expected $2"; return 0; }
  log "ok: $1 '$3' -> $got"
}
state() {
  ls -A "$M"
  stat -c '%n %s %a %u %g' "$M"/*
}

expect_as "$UA" ok "create pa 16M"
assert_eq "$(id -u "$UA")" "$(stat -c %u "$M/pa")" "owner of a volume A created"
as_user "$UA" chmod 600 "$M/pa"
expect_as "$UA" ok "snapshot pa s"
assert_eq 400 "$(stat -c %a "$M/pa@s")" "mode of A's snapshot"

B_DELETER=$UB
corrupting && B_DELETER=$UA
before=$(state)
expect_as "$B_DELETER" EPERM "delete pa"
expect_as "$UB" EPERM "delete pa@s"
expect_as "$UB" EPERM "resize pa 32M"
expect_as "$UB" EACCES "snapshot pa x"
expect_as "$UB" EACCES "clone pa@s mine"
expect_as "$UB" EACCES "snapshot --all g"
if out=$(as_user "$UB" "$BOVBD" delete "$S" pa 2>&1); then
  PROBLEMS+=("ovbd delete of A's volume as B succeeded: $out")
fi
[[ $out == *"not permitted"* ]] || PROBLEMS+=("ovbd delete as B said '$out'")
out=$(as_user "$UB" cat "$C")
[[ ${out%%$'\n'*} == "last command: error: "*"not permitted"* ]] || PROBLEMS+=("a fresh handle reads '${out%%$'\n'*}'")
assert_eq "$before" "$(state)" "the store after B's refused commands"

# Shared through a group: read permission is enough to snapshot and clone.
as_user "$UA" chgrp "$G" "$M/pa"
as_user "$UA" chmod 640 "$M/pa"
expect_as "$UB" ok "snapshot pa bys"
expect_as "$UB" ok "clone pa@bys mine"
assert_eq "$(id -u "$UB") $(id -g "$UB")" "$(stat -c '%u %g' "$M/mine")" "owner of B's clone"
expect_as "$UB" ok "resize mine 32M"
expect_as "$UB" EPERM "delete pa"
expect_as "$UA" EPERM "delete mine"
expect_as "$UB" ok "delete mine"
expect_as "$UB" ok "create pb 8M"
expect_as "$UB" ok "delete pb"
# The owner and root.
expect_as "$UA" ok "resize pa 32M"
expect_as "$UA" ok "delete pa@s"
"$BOVBD" delete "$S" pa@bys >/dev/null || PROBLEMS+=("root could not delete pa@bys")
expect_as "$UA" ok "delete pa"
assert_eq "" "$(ls "$M")" "the mount after the owner and root deleted everything"

stop_daemon "$M"
if ((${#PROBLEMS[@]})); then
  printf '  - %s\n' "${PROBLEMS[@]}" >&2
  fail "${#PROBLEMS[@]} check(s) failed"
fi
