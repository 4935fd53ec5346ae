#!/usr/bin/env bash
# What an operator meets, through a real mount:
#
#   metrics  MNT/.metrics (listed, read-only 0444 even for root, one view per
#            open) whose counters grow by exactly the bytes written, read and
#            discarded through the volume file; the same text over HTTP with
#            -o metrics_listen (curl: 200 with the 0.0.4 content type, 404
#            elsewhere, a non-loopback address refused); the server stops
#            with the daemon on unmount and on SIGTERM with a client connected
#   logs     -o log_level=debug gives debug lines, the default does not,
#            error hides info, a bad level is refused; reads of a truncated
#            layer log lines naming the volume, the offset and the layer,
#            rate-limited per volume with a "suppressed N similar" summary,
#            while ovbdfs_errors_total counts every failure
#   errors   a daemon that cannot start says why and what to do: a missing
#            store (ovbd store init), a directory that is not a store, no
#            /dev/fuse (modprobe fuse / --device /dev/fuse; a mount namespace
#            with an empty /dev), no fusermount3 for a user other than root
#            (apt-get install fuse3; hidden by a bind mount in a namespace),
#            a missing mount point (mkdir -p), a store mounted already
#            (where, and fusermount3 -u) or locked by another process (its
#            pid); deleting a volume held open says to close it first; ovbd
#            run by another user on a mounted store says whose .control it is
#
# E2E_CORRUPT=1 writes one byte more than the test accounts for: the check
# of the write counter must then fail.
. "$(dirname "$0")/lib.sh"
require_root "mount namespaces and a second user for the start-up errors"
require_fuse
require_cmd curl unshare runuser useradd fallocate dd
e2e_init

W=$E2E_WORK
chmod 755 "$W"
S=$W/store
M=$W/mnt
KiB=1024
MiB=$((1 << 20))

"$OVBD" store init "$S" >/dev/null
"$OVBD" volume create "$S" vol --size 64M >/dev/null

# metric FILE 'NAME{LABELS}': the value of that sample ("" if absent).
metric() { awk -v k="$2" '$1 == k { print $2 }' "$1"; }

# check_format FILE: the text format's rules (families announced once with
# HELP and TYPE before their samples, label syntax, cumulative histograms
# whose +Inf bucket equals _count).
check_format() {
  "$PY" - "$1" <<'EOF_PY' || fail "$1 is not valid Prometheus text format (above)"
import math, re, sys
text = open(sys.argv[1]).read()
bad = []
if not text.endswith("\n"):
    bad.append("no final newline")
sample = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*",?)*)\})? (\S+)$')
label = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
types, family, seen = {}, None, set()
hist = {}
for n, line in enumerate(text.splitlines(), 1):
    if line.startswith("# HELP "):
        continue
    if line.startswith("# TYPE "):
        _, _, name, t = line.split(" ", 3)
        if name in seen:
            bad.append("%d: family %s twice" % (n, name))
        seen.add(name)
        types[name], family = t, name
        continue
    m = sample.match(line)
    if not m:
        bad.append("%d: not a sample: %r" % (n, line))
        continue
    name, labels, value = m.group(1), dict(label.findall(m.group(3) or "")), float(m.group(4))
    t = types.get(family)
    ok = name == family if t != "histogram" else name in (family + "_bucket", family + "_sum", family + "_count")
    if not ok:
        bad.append("%d: %s outside its family %s" % (n, name, family))
    if t == "histogram":
        le = labels.pop("le", None)
        key = (family, tuple(sorted(labels.items())))
        h = hist.setdefault(key, {"b": [], "count": None})
        if name.endswith("_bucket"):
            h["b"].append((math.inf if le == "+Inf" else float(le), value))
        elif name.endswith("_count"):
            h["count"] = value
for key, h in hist.items():
    b = h["b"]
    if not b or b[-1][0] != math.inf:
        bad.append("%s: no +Inf bucket" % (key,))
        continue
    if any(b[i][1] < b[i - 1][1] or b[i][0] <= b[i - 1][0] for i in range(1, len(b))):
        bad.append("%s: buckets not cumulative" % (key,))
    if h["count"] != b[-1][1]:
        bad.append("%s: _count %s != +Inf %s" % (key, h["count"], b[-1][1]))
for b in bad[:20]:
    print(b, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF_PY
}

# ---------------------------------------------------------------- start-up errors
log "start-up errors and their next steps"
# expect_start_error WHAT PATTERN... -- ARGS...: ovbdfs ARGS fails, and its
# stderr matches every PATTERN (fixed strings).
expect_start_error() {
  local what=$1
  shift
  local pats=()
  while [[ $1 != -- ]]; do
    pats+=("$1")
    shift
  done
  shift
  local out=$W/start.err rc=0
  timeout 60 "$@" >"$out" 2>&1 || rc=$?
  ((rc != 0 && rc != 124)) || { cat "$out" >&2; fail "$what: expected a failure, got exit $rc"; }
  local p
  for p in "${pats[@]}"; do
    grep -qF -- "$p" "$out" || { sed 's/^/    /' "$out" >&2; fail "$what: the message lacks '$p'"; }
  done
  log "$what: $(head -c 300 "$out" | tr '\n' ' ')"
}
mkdir -p "$M" "$W/notastore"
expect_start_error "a missing store" "does not exist" "ovbd store init $W/nosuch" -- \
  "$OVBDFS" "$W/nosuch" "$M" -f
expect_start_error "a directory that is not a store" "is not an ovbd store" "ovbd store init" -- \
  "$OVBDFS" "$W/notastore" "$M" -f
expect_start_error "a bad log level" "log_level=loud" "trace, debug, info, warn, error or off" -- \
  "$OVBDFS" "$S" "$M" -f -o log_level=loud
expect_start_error "a non-loopback metrics address" "not a loopback address" -- \
  "$OVBDFS" "$S" "$M" -f -o metrics_listen=0.0.0.0:9184
expect_start_error "a metrics address without a port" "HOST:PORT" -- \
  "$OVBDFS" "$S" "$M" -f -o metrics_listen=127.0.0.1
expect_start_error "a missing mount point" "does not exist" "mkdir -p $W/nomnt" -- \
  "$OVBDFS" "$S" "$W/nomnt" -f
# No /dev/fuse: a private mount namespace with an empty /dev.
expect_start_error "no /dev/fuse" "/dev/fuse does not exist" "modprobe fuse" "--device /dev/fuse" -- \
  unshare -m --propagation private sh -c 'mount -t tmpfs none /dev && exec "$@"' sh "$OVBDFS" "$S" "$M" -f
not_mounted "$M" || fail "a failed start left $M mounted"

# A user other than root: /dev/fuse as this machine has it (when not 0666,
# the message says so), then with 0666 and fusermount3 hidden by a bind
# mount in a private mount namespace.
U=ovbdop$$
add_user "$U"
mkdir -p "$W/bin" "$W/u"
install -m 755 "$OVBDFS" "$W/bin/ovbdfs"
install -m 755 "$OVBD" "$W/bin/ovbd"
chown "$U:" "$W/u"
as_user "$U" "$W/bin/ovbd" store init "$W/u/store" >/dev/null
as_user "$U" mkdir "$W/u/mnt"
: >"$W/no-fusermount3"
chmod 644 "$W/no-fusermount3"
FM=$(command -v fusermount3)
AS_U=(runuser -u "$U" -- env -i PATH=/usr/bin:/bin ASAN_OPTIONS="${ASAN_OPTIONS:-}"
  UBSAN_OPTIONS="${UBSAN_OPTIONS:-}" TSAN_OPTIONS="${TSAN_OPTIONS:-}")
fuse_mode=$(stat -c %a /dev/fuse)
if [[ $fuse_mode != 666 ]]; then
  expect_start_error "/dev/fuse mode $fuse_mode for a user" "/dev/fuse is not readable and writable" \
    "chmod 0666 /dev/fuse" -- "${AS_U[@]}" "$W/bin/ovbdfs" "$W/u/store" "$W/u/mnt" -f
  on_cleanup chmod "$fuse_mode" /dev/fuse
  chmod 0666 /dev/fuse
fi
expect_start_error "no fusermount3" "fusermount3 was not found" "apt-get install fuse3" -- \
  unshare -m --propagation private sh -c 'mount --bind "$1" "$2" && shift 2 && exec "$@"' sh \
  "$W/no-fusermount3" "$FM" "${AS_U[@]}" "$W/bin/ovbdfs" "$W/u/store" "$W/u/mnt" -f
grep -q "/dev/fuse is not" "$W/start.err" && fail "a /dev/fuse of mode 0666 was reported as inaccessible"
not_mounted "$W/u/mnt" || fail "the user's failed mount left $W/u/mnt mounted"

# The store held by another process (one that takes its lock file's flock).
"$PY" -c '
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
open(sys.argv[2], "w").close()
time.sleep(120)
' "$S/lock" "$W/locked" >/dev/null 2>&1 &
HOLDER=$!
E2E_PIDS+=("$HOLDER")
wait_until 10 "the lock is taken" test -e "$W/locked" || fail "the lock holder did not start"
expect_start_error "a store locked by another process" "is locked by another process" "pid $HOLDER" -- \
  "$OVBDFS" "$S" "$M" -f
kill "$HOLDER"
wait "$HOLDER" 2>/dev/null || true
forget_pid "$HOLDER"

# ---------------------------------------------------------------- .metrics
log ".metrics"
start_daemon "$S" "$M" -o log_level=debug
grep -q '\[debug\]' "$DAEMON_LOG" || fail "-o log_level=debug: no debug line in the log: $(cat "$DAEMON_LOG")"
ls -A "$M" | grep -qx '.metrics' || fail "ls -A does not list .metrics: $(ls -A "$M")"
assert_eq 444 "$(stat -c %a "$M/.metrics")" "mode of .metrics"
assert_eq EACCES "$(errno_of "os.open('$M/.metrics', os.O_WRONLY)")" "opening .metrics for writing (as root)"
assert_eq EACCES "$(errno_of "os.open('$M/.metrics', os.O_RDONLY | os.O_TRUNC)")" "opening .metrics with O_TRUNC"
assert_eq EPERM "$(errno_of "os.chmod('$M/.metrics', 0o666)")" "chmod of .metrics"

cat "$M/.metrics" >"$W/m0"
check_format "$W/m0"
for k in 'ovbdfs_write_bytes_total{volume="vol"}' 'ovbdfs_read_bytes_total{volume="vol"}' \
  'ovbdfs_volume_size_bytes{volume="vol"}' 'ovbdfs_open_handles{volume="vol"}'; do
  [[ -n $(metric "$W/m0" "$k") ]] || fail ".metrics lacks $k: $(head -50 "$W/m0")"
done
assert_eq $((64 * MiB)) "$(metric "$W/m0" 'ovbdfs_volume_size_bytes{volume="vol"}')" "volume size gauge"
assert_eq 0 "$(metric "$W/m0" 'ovbdfs_open_handles{volume="vol"}')" "open handles before any open"

# I/O with O_DIRECT: each request reaches the daemon with exactly its bytes.
extra=0
corrupting && extra=1 && log "E2E_CORRUPT: one byte more than accounted for"
dd if=/dev/urandom of="$M/vol" bs=64K count=16 oflag=direct conv=notrunc,fsync status=none
if ((extra)); then printf 'x' | dd of="$M/vol" bs=1 seek=$((32 * MiB)) conv=notrunc status=none; fi
dd if="$M/vol" of=/dev/null bs=64K count=8 skip=2 iflag=direct status=none
fallocate -p -o $((4 * MiB)) -l $((256 * KiB)) "$M/vol"
exec 3<"$M/vol"
cat "$M/.metrics" >"$W/m1"
exec 3<&-
check_format "$W/m1"
delta() { echo $(($(metric "$W/m1" "$1") - $(metric "$W/m0" "$1"))); }
assert_eq $MiB "$(delta 'ovbdfs_write_bytes_total{volume="vol"}')" "write bytes counted for 1 MiB written"
assert_eq $((512 * KiB)) "$(delta 'ovbdfs_read_bytes_total{volume="vol"}')" "read bytes counted for 512 KiB read"
assert_eq $((256 * KiB)) "$(delta 'ovbdfs_discard_bytes_total{volume="vol"}')" "discard bytes for a 256 KiB punch"
(($(delta 'ovbdfs_write_operations_total{volume="vol"}') >= 16)) || fail "fewer than 16 write operations counted"
(($(delta 'ovbdfs_read_operations_total{volume="vol"}') >= 8)) || fail "fewer than 8 read operations counted"
(($(delta 'ovbdfs_flush_operations_total{volume="vol"}') >= 1)) || fail "the fsync was not counted"
assert_eq "$(metric "$W/m1" 'ovbdfs_read_operations_total{volume="vol"}')" \
  "$(metric "$W/m1" 'ovbdfs_read_latency_seconds_count{volume="vol"}')" "read operations = read latency count"
assert_eq 1 "$(metric "$W/m1" 'ovbdfs_open_handles{volume="vol"}')" "open handles while one is open"
assert_eq 0 "$(metric "$W/m1" 'ovbdfs_errors_total{volume="vol",op="write"}')" "write errors"
(($(metric "$W/m1" 'ovbdfs_volume_used_bytes{volume="vol"}') >= MiB - 256 * KiB)) ||
  fail "used bytes below what was written: $(metric "$W/m1" 'ovbdfs_volume_used_bytes{volume="vol"}')"
grep -q '^ovbdfs_open_handles{volume="vol"}' "$W/m1" || fail "no open-handles gauge"
stop_daemon "$M"
grep -q 'open vol for' "$DAEMON_LOG" || fail "no debug line about opening the volume"

# The default level shows no debug lines; error hides info lines.
start_daemon "$S" "$M"
cat "$M/vol" >/dev/null
stop_daemon "$M"
grep -q '\[debug\]' "$DAEMON_LOG" && fail "debug lines at the default level: $(grep '\[debug\]' "$DAEMON_LOG" | head -3)"
grep -q 'mounted ' "$DAEMON_LOG" || fail "no info line at the default level"
start_daemon "$S" "$M" -o log_level=error
stop_daemon "$M"
grep -q '\[info\]' "$DAEMON_LOG" && fail "info lines with log_level=error: $(cat "$DAEMON_LOG")"

# ---------------------------------------------------------------- HTTP
log "metrics over HTTP"
start_daemon "$S" "$M" -o metrics_listen=127.0.0.1:0
_addr() { grep -oE 'metrics on http://127\.0\.0\.1:[0-9]+/metrics' "$DAEMON_LOG" | head -1 | sed 's|metrics on ||'; }
_have_addr() { [[ -n $(_addr) ]]; }
wait_until 10 "the daemon logs its metrics address" _have_addr || fail "no metrics address in the log: $(cat "$DAEMON_LOG")"
URL=$(_addr)
dd if=/dev/urandom of="$M/vol" bs=4K count=3 oflag=direct conv=notrunc status=none
code=$(curl -s -m 10 -o "$W/h1" -D "$W/h1.hdr" -w '%{http_code}' "$URL")
assert_eq 200 "$code" "GET /metrics"
grep -qi '^content-type: text/plain; version=0.0.4' "$W/h1.hdr" || fail "content type: $(cat "$W/h1.hdr")"
check_format "$W/h1"
cat "$M/.metrics" >"$W/m2"
assert_eq "$(metric "$W/m2" 'ovbdfs_write_bytes_total{volume="vol"}')" \
  "$(metric "$W/h1" 'ovbdfs_write_bytes_total{volume="vol"}')" "the same counter over HTTP and in .metrics"
assert_eq $((12 * KiB)) "$(metric "$W/h1" 'ovbdfs_write_bytes_total{volume="vol"}')" "write bytes since mount"
assert_eq 404 "$(curl -s -m 10 -o /dev/null -w '%{http_code}' "${URL%/metrics}/other")" "GET /other"
assert_eq 404 "$(curl -s -m 10 -o /dev/null -w '%{http_code}' -X POST "$URL")" "POST /metrics"
PORT=${URL##*:}
PORT=${PORT%%/*}
stop_daemon "$M"
if curl -s -m 5 -o /dev/null "$URL"; then fail "the metrics server still answers after the unmount"; fi
# SIGTERM with a client connected (and silent): the daemon still exits at once, cleanly.
start_daemon "$S" "$M" -o metrics_listen=127.0.0.1:$PORT
exec 4<>/dev/tcp/127.0.0.1/"$PORT"
printf 'GET /metr' >&4
kill -TERM "$DAEMON_PID"
wait_until 20 "ovbdfs exits after SIGTERM" proc_gone "$DAEMON_PID" || fail "ovbdfs did not exit after SIGTERM with a client connected"
rc=0
wait "$DAEMON_PID" || rc=$?
forget_pid "$DAEMON_PID"
exec 4>&-
assert_eq 0 "$rc" "exit status after SIGTERM"
wait_until 10 "the mount goes away" not_mounted "$M" || fail "$M still mounted after SIGTERM"

# ---------------------------------------------------------------- I/O errors in the log
log "I/O errors: rate-limited log lines naming volume, offset and layer"
"$PY" - "$W/layer.raw" <<'EOF_PY'
import random, sys
with open(sys.argv[1], "wb") as f:
    f.write(random.Random(3).randbytes(8 << 20))
EOF_PY
"$OVBD" layer create --from "$W/layer.raw" "$W/layer.lsmt" >/dev/null
"$OVBD" volume create "$S" lay --from "$W/layer.lsmt" >/dev/null
LAYER=$(lower_files "$S" lay)
start_daemon "$S" "$M" -o flush_interval=1
cmp -s -n $MiB "$W/layer.raw" "$M/lay" || fail "the layered volume does not read as its image"
truncate -s 8192 "$LAYER"
# 200 reads past the new end, as fast as they come (O_DIRECT: each one
# reaches the daemon).
"$PY" - "$M/lay" <<'EOF_PY' || fail "reads of the truncated layer did not all fail with EIO (above)"
import errno, mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 4096)
bad = 0
for i in range(200):
    try:
        os.preadv(fd, [buf], (1 << 20) + 4096 * i)
        bad += 1
    except OSError as e:
        if e.errno != errno.EIO:
            bad += 1
os.close(fd)
sys.exit(1 if bad else 0)
EOF_PY
lines=$(grep -c 'I/O error on volume lay: read at offset' "$DAEMON_LOG" || true)
((lines >= 1)) || fail "no I/O error line in the log: $(tail -20 "$DAEMON_LOG")"
((lines <= 30)) || fail "$lines I/O error lines for 200 failed reads: not rate-limited"
# grep -m1, not | head -1: head exits after its line, and a grep still
# writing the rest of a long match list dies of SIGPIPE (pipefail).
grep -m1 'I/O error on volume lay' "$DAEMON_LOG" | grep -qF "in layer 1 of 1 ($(basename "$LAYER"))" ||
  fail "the I/O error line does not name the layer: $(grep 'I/O error' "$DAEMON_LOG" | head -1)"
grep -qE 'I/O error on volume lay: read at offset 1[0-9]{6} length 4096' "$DAEMON_LOG" ||
  fail "the I/O error line does not name offset and length: $(grep 'I/O error' "$DAEMON_LOG" | head -1)"
# Later errors pass again, after a summary of what was held back.
_summary() {
  "$PY" -c '
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
try:
    os.preadv(fd, [mmap.mmap(-1, 4096)], 2 << 20)
except OSError:
    pass
' "$M/lay"
  grep -qE 'volume lay: suppressed [0-9]+ similar I/O errors' "$DAEMON_LOG"
}
wait_until 20 "a 'suppressed N similar' line" _summary || fail "no summary of suppressed errors: $(grep 'lay' "$DAEMON_LOG" | tail -5)"
cat "$M/.metrics" >"$W/m3"
(($(metric "$W/m3" 'ovbdfs_errors_total{volume="lay",op="read"}') >= 200)) ||
  fail "errors_total counts $(metric "$W/m3" 'ovbdfs_errors_total{volume="lay",op="read"}') of 200+ failed reads"
# The periodic flush notices the changed layer (logged), so the final flush does not fail for it.
wait_until 20 "the flusher reports the truncated layer" grep -q "periodic flush: .*size changed" "$DAEMON_LOG" ||
  fail "the truncated layer was not reported: $(tail -5 "$DAEMON_LOG")"
stop_daemon "$M"
"$OVBD" delete "$S" lay >/dev/null

# ---------------------------------------------------------------- a store already mounted; a volume busy
log "a store mounted already; a volume held open"
start_daemon "$S" "$M"
mkdir -p "$W/mnt2"
expect_start_error "a store mounted already" "is already mounted at $M" "fusermount3 -u $M" -- \
  "$OVBDFS" "$S" "$W/mnt2" -f
exec 3<"$M/vol"
if echo "delete vol" 2>/dev/null >"$M/.control"; then fail "delete of a volume held open succeeded"; fi
cat "$M/.control" >"$W/ctl"
grep -q 'is open (1 handles).*close' "$W/ctl" || fail "the busy error does not say to close the volume: $(head -3 "$W/ctl")"
expect_start_error "ovbd delete of a volume held open" "is open" "close" -- "$OVBD" delete "$S" vol
exec 3<&-
# ovbd as another user goes through the mount, whose .control is not theirs.
expect_start_error "ovbd by another user on a mounted store" "belongs to the user who mounted it" -- \
  "${AS_U[@]}" "$W/bin/ovbd" status "$S"
stop_daemon "$M"
