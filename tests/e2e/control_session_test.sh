#!/usr/bin/env bash
# .control under concurrent use and hostile writes, through a real mount
# (docs/CONTROL.md, "Writes and lines"). Run against the ASan build it also
# proves the daemon's handle lifetime: any sanitizer report fails the test.
#
#  - 3000 open/read/close cycles of .control on several threads, some of
#    them closing after a partial read (as `head -1` does), some writing a
#    command first, while `ovbd status` runs again and again: every read
#    returns the status block, every `ovbd status` succeeds, the daemon
#    stays up.
#  - A line split across two writes runs once, joined; after a handle was
#    read to its end, an over-long line still reads back as "error: ...".
#  - An unterminated line runs at close, and close(2) returns its error.
#  - One write of 1 MiB of valid lines is refused at once with EINVAL and
#    none of them runs; a command on another handle meanwhile is not held up.
#  - Binary input never reaches the daemon's log raw (it is escaped), and a
#    flood of bad commands is rate-limited there.
#
# E2E_CORRUPT=1 makes the split-line check expect the fragment to run on its
# own: the test must then fail.
. "$(dirname "$0")/lib.sh"
require_fuse
e2e_init

W=$E2E_WORK
S=$W/store
M=$W/mnt
C=$M/.control
"$OVBD" store init "$S" >/dev/null
"$OVBD" volume create "$S" vm1 --size 16M >/dev/null
start_daemon "$S" "$M"

# ---------------------------------------------------------------- concurrency
log "3000 open/read/close cycles of .control with ovbd status alongside"
"$PY" - "$C" "$OVBD" "$S" <<'EOF_PY' || fail "concurrent use of .control failed (see above)"
import os, subprocess, sys, threading
from e2e_io import read_to_eof
ctl, ovbd, store = sys.argv[1:4]
errors = []
def reader(n, partial=False, write=False):
    try:
        for i in range(n):
            fd = os.open(ctl, os.O_RDWR if write else os.O_RDONLY)
            try:
                if write:
                    os.write(fd, b"status vm1\n")
                if partial:
                    if not os.read(fd, 16):
                        errors.append("a partial read returned nothing")
                    continue
                out = read_to_eof(fd, 4096)
                if b"volumes: 1\n" not in out:
                    errors.append("read %d: no status block: %r" % (i, out[:200]))
                if write and not out.startswith(b"ok: vm1 size="):
                    errors.append("read %d after a write: %r" % (i, out[:200]))
            finally:
                os.close(fd)
    except OSError as e:
        errors.append("reader: %s" % e)
def status(n):
    for i in range(n):
        p = subprocess.run([ovbd, "status", store], capture_output=True, text=True)
        if p.returncode != 0 or not p.stdout.startswith("volumes: 1\n"):
            errors.append("ovbd status: rc %d, %r %r" % (p.returncode, p.stdout[:200], p.stderr[:300]))
            return
ts = [threading.Thread(target=reader, args=(900,)),
      threading.Thread(target=reader, args=(900,)),
      threading.Thread(target=reader, args=(800, True)),
      threading.Thread(target=reader, args=(400, False, True)),
      threading.Thread(target=status, args=(25,))]
for t in ts: t.start()
for t in ts: t.join()
for e in errors[:20]:
    print(e, file=sys.stderr)
sys.exit(1 if errors else 0)
EOF_PY
proc_alive "$DAEMON_PID" || fail "the daemon died under concurrent use of .control"
check_sanitizers

# ---------------------------------------------------------------- lines across writes
log "lines split across writes, over-long lines, unterminated lines at close"
frag=it1
corrupting && frag=XX
"$PY" - "$C" "$M" "$frag" <<'EOF_PY' || fail "line handling across writes (see above)"
import errno, os, sys
from e2e_io import read_to_eof
ctl, mnt, frag = sys.argv[1:4]
bad = []
fd = os.open(ctl, os.O_RDWR)
os.write(fd, b"create spl")
if os.path.exists(os.path.join(mnt, "spl")):
    bad.append("the first half of a split line ran on its own")
os.write(fd, frag.encode() + b" 1M\n")
if not os.path.exists(os.path.join(mnt, "split1")):
    bad.append("a line split across two writes did not run joined")
first = read_to_eof(fd).split(b"\n")[0]
if first != b"ok: volume split1 created (1 MiB)":
    bad.append("after the joined line the handle reads %r" % first)
# The handle has been read to its end; an over-long line must still show.
try:
    os.write(fd, b"y" * 5000)
    bad.append("a 5000-byte line was accepted")
except OSError as e:
    if e.errno != errno.EINVAL:
        bad.append("a 5000-byte line gave %s" % errno.errorcode.get(e.errno))
first = read_to_eof(fd).split(b"\n")[0]
if not first.startswith(b"error: ") or b"longer than 4096" not in first:
    bad.append("after an over-long line the handle reads %r" % first)
os.close(fd)
# Unterminated last lines run at close; close(2) returns their error.
fd = os.open(ctl, os.O_WRONLY)
os.write(fd, b"create atclose 1M")
os.close(fd)
if not os.path.exists(os.path.join(mnt, "atclose")):
    bad.append("an unterminated line did not run at close")
fd = os.open(ctl, os.O_WRONLY)
os.write(fd, b"delete nosuch")
try:
    os.close(fd)
    bad.append("close after an unterminated failing line succeeded")
except OSError as e:
    if e.errno != errno.ENOENT:
        bad.append("close after 'delete nosuch' gave %s" % errno.errorcode.get(e.errno))
for b in bad:
    print(b, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF_PY

# ---------------------------------------------------------------- bounded work per write
log "one write of 1 MiB of valid lines"
before=$(ls "$M" | wc -l)
"$PY" - "$C" "$OVBD" "$S" <<'EOF_PY' || fail "a 1 MiB write of commands (see above)"
import errno, os, subprocess, sys, threading, time
ctl, ovbd, store = sys.argv[1:4]
lines = b"".join(b"create big%06d 1M\n" % i for i in range(60000))[: 1 << 20]
lines = lines[: lines.rfind(b"\n") + 1]
result = {}
def big():
    fd = os.open(ctl, os.O_RDWR)
    t0 = time.monotonic()
    try:
        os.write(fd, lines)
        result["err"] = "ok"
    except OSError as e:
        result["err"] = errno.errorcode.get(e.errno, str(e.errno))
    result["secs"] = time.monotonic() - t0
    os.close(fd)
t = threading.Thread(target=big)
t.start()
t0 = time.monotonic()
p = subprocess.run([ovbd, "status", store, "vm1"], capture_output=True, text=True)
other = time.monotonic() - t0
t.join()
print("1 MiB write: %s in %.2fs; ovbd status alongside took %.2fs" % (result["err"], result["secs"], other), file=sys.stderr)
bad = []
if result["err"] != "EINVAL":
    bad.append("the 1 MiB write gave %s, expected EINVAL" % result["err"])
if result["secs"] > 10:
    bad.append("refusing the 1 MiB write took %.1fs" % result["secs"])
if p.returncode != 0 or other > 10:
    bad.append("ovbd status alongside: rc %d after %.1fs" % (p.returncode, other))
for b in bad:
    print(b, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF_PY
assert_eq "$before" "$(ls "$M" | wc -l)" "entries in the mount after the refused 1 MiB write"

# ---------------------------------------------------------------- the log
log "binary input and floods in the daemon's log"
"$PY" - "$C" <<'EOF_PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    os.write(fd, b"snapshot vm1 \xff\xfe\x01bin\n")
except OSError:
    pass
for i in range(50):  # 3200 bad commands in writes of 64
    try:
        os.write(fd, b"frobnicate\n" * 64)
    except OSError:
        pass
os.close(fd)
EOF_PY
if LC_ALL=C grep -q $'[\x01\xfe\xff]' "$DAEMON_LOG"; then fail "raw binary input in the daemon's log"; fi
grep -qF 'snapshot vm1 \xff\xfe\x01bin' "$DAEMON_LOG" || fail "the binary command is not in the log, escaped"
frob=$(grep -c 'control: frobnicate' "$DAEMON_LOG" || true)
log "the daemon logged $frob of 3200 bad commands"
((frob < 1000)) || fail "3200 bad commands gave $frob log lines: not rate-limited"
grep -q 'suppressed (rate limit)' "$DAEMON_LOG" || fail "the log does not say that lines were suppressed"

stop_daemon "$M"
