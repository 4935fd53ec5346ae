#!/usr/bin/env bash
# The .control command language through a real mount (docs/CONTROL.md).
#
# Bad input: every malformed command (unknown verb, missing/extra arguments,
# names with '/', '..', a leading '.', NUL and other control bytes, non-ASCII,
# names of 129 characters, a 5000-byte line, sizes that overflow or carry an
# unknown suffix) fails in the write(2) itself with EINVAL, and EEXIST,
# ENOENT, EBUSY (volume held open) and EINVAL (shrinking resize) where the
# names or state are wrong. Each is written with one os.write on a handle
# opened O_RDWR; reading the same handle must show "error: ..." naming the
# problem, and the store must be unchanged: the mount's listing (names, sizes,
# modes), `ovbd volume list`, the manifests and the layer files are compared
# before and after.
#
# Good input: after `json`, reading the handle returns a JSON document (the
# whole read parses) matching the mount; `snapshot --all` takes one snapshot
# of every volume (and, when one name is taken, none at all); resize grows
# the file at once (stat, and fstat of a handle opened before); 128-character
# names work; a volume written and closed can be deleted at once (no EBUSY
# from a release still in flight); the ovbd CLI goes through .control when
# the store is mounted and works directly on it when it is not.
#
# Failures are collected and all reported at the end (one run shows every
# problem). E2E_CORRUPT=1 slips a valid command in among the bad ones: the
# errno and "changes nothing" checks must then fail.
. "$(dirname "$0")/lib.sh"
require_fuse
e2e_init
shopt -s lastpipe # `printf ... | expect ...` runs expect in this shell

W=$E2E_WORK
S=$W/store
M=$W/mnt
C=$M/.control
"$OVBD" store init "$S" >/dev/null
start_daemon "$S" "$M"

PROBLEMS=()
bad() {
  PROBLEMS+=("$*")
  log "PROBLEM: $*"
}

# ctl_raw: writes stdin's bytes to .control in ONE write(2) on a handle opened
# O_RDWR, then reads that handle to EOF. Sets CTL_ERR (ok or the errno name of
# the write) and CTL_OUT (what the read returned).
ctl_raw() {
  local out
  out=$("$PY" -c '
import errno, os, sys
from e2e_io import read_to_eof
data = sys.stdin.buffer.read()
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    n = os.write(fd, data)
    res = "ok" if n == len(data) else "short%d" % n
except OSError as e:
    res = errno.errorcode.get(e.errno, str(e.errno))
out = read_to_eof(fd)
os.close(fd)
sys.stdout.write(res + "\n" + out.decode("utf-8", "replace"))
' "$C")
  CTL_ERR=${out%%$'\n'*}
  CTL_OUT=${out#*$'\n'}
}
ctl() { printf '%s\n' "$1" | ctl_raw; }
_delete_ok() { ctl "delete $1"; [[ $CTL_ERR == ok ]]; }

# Everything a command could change, as text.
state() {
  ls -A "$M"
  stat -c '%n %s %a %u' "$M"/*
  "$OVBD" volume list "$S"
  ls -A "$S/layers" "$S/volumes"
  (cd "$S/volumes" && sha256sum -- *)
}

# expect ERRNO PATTERN WHAT: stdin is the command's bytes. The write must fail
# with ERRNO, the handle must then read "error: ...PATTERN..." (PATTERN: a
# case-insensitive fixed string), and nothing may change.
expect() {
  local want=$1 pat=$2 what=$3 before after first
  before=$(state)
  ctl_raw
  after=$(state)
  first=${CTL_OUT%%$'\n'*}
  if [[ $CTL_ERR != "$want" ]]; then
    bad "$what: write gave $CTL_ERR, expected $want (handle reads: '$first')"
  elif [[ $first != "error: "* ]] || ! grep -qiF -- "$pat" <<<"$first"; then
    bad "$what: handle reads '$first', expected 'error: ...$pat...'"
  fi
  if [[ $before != "$after" ]]; then
    bad "$what: the store changed: $(diff <(echo "$before") <(echo "$after") | grep '^[<>]' | tr '\n' ' ' | cut -c1-400 || true)"
  fi
  log "ok: $what -> $CTL_ERR '${first:0:110}'"
}
expect_line() { printf '%s\n' "$4" | expect "$1" "$2" "$3"; }

# must_ok LINE: a command that has to succeed.
must_ok() {
  ctl "$1"
  [[ $CTL_ERR == ok && $CTL_OUT == "ok: "* ]] ||
    fail "'$1' failed: $CTL_ERR '${CTL_OUT%%$'\n'*}'"
}

# ---------------------------------------------------------------- setup
must_ok "create vm1 64M"
must_ok "create vm2 32M"
printf 'vm1-v1' | dd of="$M/vm1" conv=notrunc status=none
must_ok "snapshot vm1 s0"
must_ok "create gone 8M"
must_ok "snapshot gone keep"
must_ok "delete gone" # 'gone' is deleted, gone@keep remains
[[ -f $M/vm1@s0 && -f $M/gone@keep && ! -e $M/gone ]] || fail "setup: listing is $(ls "$M" | tr '\n' ' ')"

# ---------------------------------------------------------------- bad input: EINVAL
L129=$(printf 'n%.0s' {1..129})
L128=$(printf 'm%.0s' {1..128})
expect_line EINVAL "unknown command 'frobnicate'" "unknown command" "frobnicate vm1"
expect_line EINVAL "unknown command 'SNAPSHOT'" "verbs are case-sensitive" "SNAPSHOT vm1 x"
expect_line EINVAL "empty command" "empty line" ""
expect_line EINVAL "empty command" "blank line" "   "
expect_line EINVAL "expected" "clone: missing argument" "clone vm1@s0"
expect_line EINVAL "expected" "clone: no arguments" "clone"
expect_line EINVAL "expected" "create: missing size" "create x"
expect_line EINVAL "expected" "resize: missing size" "resize vm1"
expect_line EINVAL "expected" "delete: missing name" "delete"
expect_line EINVAL "expected" "snapshot: extra argument" "snapshot vm1 a b"
expect_line EINVAL "expected" "snapshot --all: extra argument" "snapshot --all a b"
expect_line EINVAL "expected" "delete: extra argument" "delete vm1 vm2"
expect_line EINVAL "expected" "create: extra argument" "create x 1M 2M"
expect_line EINVAL "expected" "clone: extra argument" "clone vm1@s0 x y"
expect_line EINVAL "expected" "status: extra argument" "status vm1 vm2"
expect_line EINVAL "expected" "gc: extra argument" "gc now"
expect_line EINVAL "expected" "json: extra argument" "json please"
expect_line EINVAL "'/'" "snapshot name with '/'" "snapshot vm1 a/b"
expect_line EINVAL "'/'" "create name with '/'" "create a/b 1M"
expect_line EINVAL "'/'" "create absolute path" "create /tmp/x 1M"
expect_line EINVAL "'../x'" "clone target with '/'" "clone vm1@s0 ../x"
expect_line EINVAL "'.'" "delete '..'" "delete .."
expect_line EINVAL "'.'" "snapshot named '..'" "snapshot vm1 .."
expect_line EINVAL "'.'" "clone to '..'" "clone vm1@s0 .."
expect_line EINVAL "'.'" "create '.'" "create . 1M"
expect_line EINVAL "'.'" "create '.hidden'" "create .hidden 1M"
expect_line EINVAL "'.'" "snapshot named '.s'" "snapshot vm1 .s"
expect_line EINVAL "'.'" "create '.control'" "create .control 1M"
expect_line EINVAL "'@'" "clone target with '@'" "clone vm1@s0 x@y"
expect_line EINVAL "'@'" "create name with '@'" "create x@y 1M"
expect_line EINVAL "more than one '@'" "delete a@b@c" "delete vm1@s0@x"
expect_line EINVAL "snapshot" "clone from a volume, not a snapshot" "clone vm1 x"
expect_line EINVAL "snapshot name is empty" "clone from 'vm1@'" "clone vm1@ x"
expect_line EINVAL "volume name is empty" "delete '@s0'" "delete @s0"
printf 'snapshot vm1 a\0b\n' | expect EINVAL "NUL" "NUL byte in a name"
printf 'create x\0 1M\n' | expect EINVAL "NUL" "NUL byte after a name"
printf 'snapshot vm1 a\001b\n' | expect EINVAL "control character" "control character 0x01"
printf 'snapshot vm1 a\033b\n' | expect EINVAL "control character" "escape character"
printf 'snapshot vm1 a\177b\n' | expect EINVAL "control character" "DEL character"
printf 'create caf\303\251 1M\n' | expect EINVAL "non-ASCII" "non-ASCII name"
expect_line EINVAL "longer than 128" "create, 129-character name" "create $L129 1M"
expect_line EINVAL "longer than 128" "snapshot, 129-character name" "snapshot vm1 $L129"
expect_line EINVAL "longer than 128" "clone, 129-character target" "clone vm1@s0 $L129"
expect_line EINVAL "longer than 4096" "5000-byte line" "snapshot vm1 $(printf 'x%.0s' {1..4987})"
head -c 5000 /dev/zero | tr '\0' 'y' | expect EINVAL "longer than 4096" "5000 bytes, no newline"
expect_line EINVAL "too large" "size overflowing 64 bits" "create x 99999999999999999999"
expect_line EINVAL "too large" "size overflowing 64 bits by its suffix" "create x 18014398509481984T"
expect_line EINVAL "too large" "size just past 2^64 (16777216T)" "create x 16777216T"
expect_line EINVAL "too large" "size beyond the format's limit" "create x 8388608T"
expect_line EINVAL "too large" "resize overflowing" "resize vm1 99999999999999999999"
expect_line EINVAL "suffix" "unknown suffix 10X" "create x 10X"
expect_line EINVAL "suffix" "unknown suffix 10MX" "create x 10MX"
expect_line EINVAL "suffix" "unknown suffix 1E" "create x 1E"
expect_line EINVAL "number" "negative size" "create x -5M"
expect_line EINVAL "number" "size without digits" "create x M"
expect_line EINVAL "'0x100000'" "hex size" "create x 0x100000"
expect_line EINVAL "greater than zero" "zero size" "create x 0"
expect_line EINVAL "512" "size not a multiple of 512" "create x 1000"
expect_line EINVAL "512" "resize not a multiple of 512" "resize vm1 67109000"
expect_line EINVAL "only grow" "resize smaller" "resize vm1 32M"
expect_line EINVAL "'@'" "snapshot of a snapshot" "snapshot vm1@s0 x"
# The doc lists EROFS for resize; a snapshot name is refused either way.
ctl "resize vm1@s0 128M"
[[ $CTL_ERR == EINVAL || $CTL_ERR == EROFS ]] || bad "resize of a snapshot: write gave $CTL_ERR"
[[ $(stat -c %s "$M/vm1@s0") == $((64 << 20)) ]] || bad "resize of a snapshot changed its size"

if corrupting; then
  log "E2E_CORRUPT: a valid command among the bad ones"
  expect_line EINVAL "unknown command" "(E2E_CORRUPT) a valid create" "create injected 1M"
fi

# ---------------------------------------------------------------- EEXIST / ENOENT / EBUSY
expect_line EEXIST "exists" "create an existing volume" "create vm1 1M"
expect_line EEXIST "exists" "create over a deleted volume whose snapshots remain" "create gone 1M"
expect_line EEXIST "exists" "snapshot name taken" "snapshot vm1 s0"
expect_line EEXIST "exists" "clone onto an existing volume" "clone vm1@s0 vm2"
expect_line EEXIST "exists" "clone onto a deleted volume's name" "clone vm1@s0 gone"
expect_line ENOENT "nosuch" "delete a missing volume" "delete nosuch"
expect_line ENOENT "vm1@nosuch" "delete a missing snapshot" "delete vm1@nosuch"
expect_line ENOENT "gone" "delete a deleted volume" "delete gone"
expect_line ENOENT "vm1@nosuch" "clone a missing snapshot" "clone vm1@nosuch c"
expect_line ENOENT "nosuch" "clone from a missing volume" "clone nosuch@s0 c"
expect_line ENOENT "nosuch" "status of a missing volume" "status nosuch"
expect_line ENOENT "vm1@nosuch" "status of a missing snapshot" "status vm1@nosuch"
expect_line ENOENT "nosuch" "snapshot a missing volume" "snapshot nosuch s"
expect_line ENOENT "gone" "snapshot a deleted volume" "snapshot gone s"
expect_line ENOENT "nosuch" "resize a missing volume" "resize nosuch 1G"
expect_line ENOENT "nosuch" "flush a missing volume" "flush nosuch"

exec 3<"$M/vm1"
expect_line EBUSY "open" "delete a volume held open" "delete vm1"
exec 3<&-
exec 3<"$M/vm1@s0"
expect_line EBUSY "open" "delete a snapshot held open" "delete vm1@s0"
exec 3<&-

# Once close(2) has returned, the volume is no longer open: deleting it must
# not fail with EBUSY (FUSE sends the release asynchronously, so a daemon that
# does slow work before dropping its handle count makes this fail).
busy=0
for k in $(seq 10); do
  must_ok "create closed$k 1M"
  printf 'data' | dd of="$M/closed$k" conv=notrunc status=none
  # (echo, a builtin, follows the close at once, as in a shell script)
  if ! echo "delete closed$k" 2>/dev/null >"$C"; then
    busy=$((busy + 1))
    wait_until 10 "closed$k is released" _delete_ok "closed$k" || fail "closed$k stays busy: $CTL_ERR"
  fi
done
((busy == 0)) || bad "delete right after writing and closing the volume failed with EBUSY $busy of 10 times"

# A fresh handle reads the mount's most recent result.
ctl "delete nosuch"
fresh=$(cat "$C")
fresh=${fresh%%$'\n'*}
[[ $fresh == *"error: "*nosuch* ]] || bad "a fresh handle after a failed command reads '$fresh'"

# A failed write through the shell: echo reports the failure.
if echo "frobnicate" >"$C" 2>/dev/null; then bad "echo of a bad command into .control succeeded"; fi
if ! echo "status vm1" >"$C"; then bad "echo of a good command into .control failed"; fi

# ---------------------------------------------------------------- json
json_read() {
  # json_read CMDS...: writes each command on one handle, prints the last read.
  "$PY" -c '
import os, sys
from e2e_io import read_to_eof
fd = os.open(sys.argv[1], os.O_RDWR)
out = b""
for c in sys.argv[2:]:
    os.write(fd, (c + "\n").encode())
    out = read_to_eof(fd)
os.close(fd)
sys.stdout.buffer.write(out)
' "$C" "$@"
}
json_read json >"$W/json1.out"
if ! "$PY" -m json.tool <"$W/json1.out" >/dev/null 2>"$W/json1.err"; then
  bad "after 'json', reading the handle is not valid JSON: $(head -c 200 "$W/json1.out" | tr '\n' ' ')..."
fi
# The same handle, after another command, still reads as JSON.
json_read json "flush" >"$W/json2.out"
"$PY" -m json.tool <"$W/json2.out" >/dev/null 2>&1 ||
  bad "json mode, after a further command: not valid JSON: $(head -c 120 "$W/json2.out" | tr '\n' ' ')..."
# Whatever precedes it, the JSON document must describe the store exactly.
"$PY" - "$W/json1.out" "$M" <<'EOF' || bad "JSON status does not match the mount (see above)"
import json, os, sys
text = open(sys.argv[1]).read()
start = text.find("{")
try:
    d, _ = json.JSONDecoder().raw_decode(text[start:])
except ValueError as e:
    sys.exit("no JSON document in the read: %s" % e)
names = sorted(n for n in os.listdir(sys.argv[2]) if not n.startswith("."))  # .control, .metrics
got = sorted(v["name"] for v in d["volumes"])
if got != names:
    sys.exit("JSON names %s != listing %s" % (got, names))
for v in d["volumes"]:
    for k in ("name", "snapshot", "size", "layers", "upper", "open_handles", "mode"):
        if k not in v:
            sys.exit("JSON volume %s lacks %r" % (v.get("name"), k))
    st = os.stat(os.path.join(sys.argv[2], v["name"]))
    if st.st_size != v["size"]:
        sys.exit("%s: JSON size %d, stat %d" % (v["name"], v["size"], st.st_size))
    if v["snapshot"] != ("@" in v["name"]):
        sys.exit("%s: snapshot flag %r" % (v["name"], v["snapshot"]))
EOF
# text switches back.
json_read json text >"$W/text.out"
grep -q '^volumes: ' "$W/text.out" || bad "after 'text' the handle does not read the text status"

# ---------------------------------------------------------------- snapshot --all
must_ok "create vm3 16M"
for v in vm1 vm2 vm3; do printf '%s-before-g1' "$v" | dd of="$M/$v" conv=notrunc status=none; done
must_ok "snapshot --all g1"
for v in vm1 vm2 vm3; do
  [[ -f $M/$v@g1 ]] || bad "snapshot --all g1 did not create $v@g1"
  printf '%s-after--g1' "$v" | dd of="$M/$v" conv=notrunc status=none
  got=$(head -c 13 "$M/$v@g1")
  [[ $got == "$v-before-g1" ]] || bad "$v@g1 holds '$got', expected '$v-before-g1'"
done
[[ ! -e $M/gone@g1 ]] || bad "snapshot --all snapshotted a deleted volume"
expect_line EEXIST "exists" "snapshot --all with a taken name" "snapshot --all g1"
must_ok "snapshot vm2 g2"
# One name taken: no volume may get the snapshot.
expect_line EEXIST "vm2@g2" "snapshot --all when one volume has the name" "snapshot --all g2"
[[ ! -e $M/vm1@g2 && ! -e $M/vm3@g2 ]] || bad "a failed snapshot --all left snapshots behind"
expect_line EINVAL "'/'" "snapshot --all with a bad name" "snapshot --all a/b"

# ---------------------------------------------------------------- resize
exec 4<"$M/vm3"
stat -c %s "$M/vm3" >/dev/null # attributes now cached by the kernel
must_ok "resize vm3 96M"
assert_eq $((96 << 20)) "$(stat -c %s "$M/vm3")" "vm3 size (stat by path) right after resize"
fsz=$("$PY" -c 'import os; print(os.fstat(4).st_size)')
[[ $fsz == $((96 << 20)) ]] || bad "fstat on a handle opened before the resize shows $fsz bytes, expected $((96 << 20))"
exec 4<&-
cmp -i $((16 << 20)):0 -n $((80 << 20)) "$M/vm3" /dev/zero >/dev/null || bad "the grown part of vm3 is not zero"
assert_eq "vm3-after--g1" "$(head -c 13 "$M/vm3")" "vm3 data after resize"
must_ok "resize vm3 96M" # same size: a no-op
expect_line EINVAL "only grow" "resize back down" "resize vm3 16M"

# ---------------------------------------------------------------- long names
must_ok "create $L128 1M"
must_ok "snapshot $L128 $L128"
[[ -f $M/$L128 ]] || bad "a volume with a 128-character name is not in the mount"
[[ $(errno_of "os.close(os.open('$M/$L128@$L128', os.O_RDONLY))") == ok ]] ||
  bad "the 257-character snapshot file of a 128-character volume cannot be opened"
grep -qxF "$L128@$L128" < <(ls "$M") || bad "the 257-character snapshot name is not listed"
must_ok "delete $L128@$L128"
must_ok "delete $L128"

# ---------------------------------------------------------------- other good commands
must_ok "status vm1"
[[ $CTL_OUT == "ok: vm1 size=$((64 << 20))"* ]] || bad "status vm1 reads '${CTL_OUT%%$'\n'*}'"
must_ok "flush"
must_ok "flush vm1"
must_ok "gc"
must_ok "clone vm1@s0 c1"
assert_eq "vm1-v1" "$(head -c 6 "$M/c1")" "clone of vm1@s0"
must_ok "delete c1"

# ---------------------------------------------------------------- ovbd CLI, mounted
log "ovbd CLI against the mounted store"
out=$("$OVBD" snapshot "$S" vm1 cli1) || bad "ovbd snapshot (mounted) failed: $out"
[[ $out == *"vm1@cli1"* ]] || bad "ovbd snapshot printed '$out'"
[[ -f $M/vm1@cli1 ]] || bad "ovbd snapshot (mounted): vm1@cli1 is not in the mount"
grep -q 'control: snapshot vm1 cli1 -> ok' "$DAEMON_LOG" || bad "ovbd snapshot did not go through .control"
out=$("$OVBD" status "$S") || bad "ovbd status (mounted) failed"
for n in vm1 vm1@cli1 vm2 vm3 gone@keep; do
  grep -q "^$n size=" <<<"$out" || bad "ovbd status (mounted) does not list $n: $out"
done
(($(grep -c '^volumes: ' <<<"$out") == 1)) || bad "ovbd status (mounted) prints $(grep -c '^volumes: ' <<<"$out") status blocks"
! grep -q '^last command' <<<"$out" || bad "ovbd status (mounted) shows the last command line"
out=$("$OVBD" status "$S" vm1) || bad "ovbd status VOL (mounted) failed"
[[ $out == "vm1 size="* ]] || bad "ovbd status vm1 (mounted) printed '$out'"
(($(wc -l <<<"$out") == 1)) || bad "ovbd status vm1 (mounted) printed $(wc -l <<<"$out") lines: $out"
"$OVBD" delete "$S" vm1@cli1 >/dev/null || bad "ovbd delete (mounted) failed"
[[ ! -e $M/vm1@cli1 ]] || bad "ovbd delete (mounted): vm1@cli1 still in the mount"
grep -q 'control: delete vm1@cli1 -> ok' "$DAEMON_LOG" || bad "ovbd delete did not go through .control"
if err=$("$OVBD" delete "$S" nosuch 2>&1); then bad "ovbd delete of a missing volume (mounted) succeeded"; fi
[[ $err == *nosuch* ]] || bad "ovbd delete nosuch (mounted) said '$err'"
if err=$("$OVBD" snapshot "$S" vm1 a/b 2>&1); then bad "ovbd snapshot with a bad name (mounted) succeeded"; fi
"$OVBD" resize "$S" vm2 48M >/dev/null || bad "ovbd resize (mounted) failed"
assert_eq $((48 << 20)) "$(stat -c %s "$M/vm2")" "vm2 size after ovbd resize (mounted)"
"$OVBD" clone "$S" vm1@s0 cli-clone >/dev/null || bad "ovbd clone (mounted) failed"
[[ -f $M/cli-clone ]] || bad "ovbd clone (mounted): cli-clone not in the mount"
mounted_list=$("$OVBD" volume list "$S")
stop_daemon "$M"

# ---------------------------------------------------------------- ovbd CLI, unmounted
log "ovbd CLI against the unmounted store"
assert_eq "$mounted_list" "$("$OVBD" volume list "$S")" "volume list across the unmount"
out=$("$OVBD" snapshot "$S" vm1 cli2) || bad "ovbd snapshot (unmounted) failed: $out"
out=$("$OVBD" status "$S") || bad "ovbd status (unmounted) failed"
grep -q '^vm1@cli2 size=' <<<"$out" || bad "ovbd status (unmounted) does not list vm1@cli2: $out"
out=$("$OVBD" status "$S" vm1@cli2) || bad "ovbd status VOL@SNAP (unmounted) failed"
[[ $out == "vm1@cli2 size="* ]] || bad "ovbd status vm1@cli2 (unmounted) printed '$out'"
"$OVBD" clone "$S" vm1@cli2 cli-clone2 >/dev/null || bad "ovbd clone (unmounted) failed"
"$OVBD" resize "$S" vm1 80M >/dev/null || bad "ovbd resize (unmounted) failed"
"$OVBD" delete "$S" cli-clone2 >/dev/null || bad "ovbd delete VOL (unmounted) failed"
"$OVBD" delete "$S" vm1@cli2 >/dev/null || bad "ovbd delete VOL@SNAP (unmounted) failed"
if err=$("$OVBD" delete "$S" vm1@cli2 2>&1); then bad "ovbd delete twice (unmounted) succeeded"; fi
grep -q cli2 < <("$OVBD" volume list "$S") && bad "cli2 names still listed after ovbd delete (unmounted)"
"$OVBD" check "$S" >"$W/check.log" 2>&1 || { cat "$W/check.log" >&2; bad "ovbd check after the CLI commands"; }
start_daemon "$S" "$M"
assert_eq $((80 << 20)) "$(stat -c %s "$M/vm1")" "vm1 size after ovbd resize (unmounted)"
[[ ! -e $M/vm1@cli2 && ! -e $M/cli-clone2 && -f $M/cli-clone ]] || bad "listing after remount: $(ls "$M" | tr '\n' ' ')"
assert_eq "vm1-v1" "$(head -c 6 "$M/cli-clone")" "cli-clone content after remount"
stop_daemon "$M"

if ((${#PROBLEMS[@]})); then
  printf '[%s] %d problem(s):\n' "$E2E_NAME" "${#PROBLEMS[@]}" >&2
  printf '  - %s\n' "${PROBLEMS[@]}" >&2
  fail "${#PROBLEMS[@]} check(s) failed"
fi
