#!/usr/bin/env bash
# A consistency-group snapshot of several volumes of one application.
#
# A small "database" keeps a write-ahead log on one volume and its data on
# another: for each transaction it appends the record to the log, syncs,
# then writes the data page, syncs. Its rule: no data page without its log
# record. Snapshots of the two volumes taken one after the other can break
# that rule (data taken later than the log); `snapshot --all` takes every
# volume at one instant, so the snapshot pair always obeys it, and a clone
# of the pair is a backup the database could start from.
# Every step is checked; the script exits non-zero if anything is off.
# Needs: ovbd, ovbdfs, python3, access to /dev/fuse.
set -euo pipefail
OVBD=${OVBD:-ovbd}
OVBDFS=${OVBDFS:-ovbdfs}
W=$(mktemp -d /tmp/ovbd-group-XXXXXX)
S=$W/store
M=$W/disks
WRITER=
cleanup() {
  set +e
  [ -n "$WRITER" ] && kill "$WRITER" 2>/dev/null && wait "$WRITER" 2>/dev/null
  mountpoint -q "$M" && fusermount3 -u "$M"
  rm -rf "$W"
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "1. Two volumes of one application"
run "$OVBD" store init "$S"
run "$OVBD" volume create "$S" db-log --size 64M
run "$OVBD" volume create "$S" db-data --size 64M
mkdir -p "$M"
run "$OVBDFS" "$S" "$M"

say "2. The database runs; snapshots are taken while it writes"
# Transaction n: log record n at n*512 of db-log, fsync; then data page n
# at n*512 of db-data, fsync. Each record is "txn <n>" padded to 512 bytes.
cat > "$W/db.py" <<'EOF'
import os, sys
log = os.open(sys.argv[1] + "/db-log", os.O_WRONLY)
data = os.open(sys.argv[1] + "/db-data", os.O_WRONLY)
n = 1
while n < 100000:
    rec = ("txn %d" % n).encode().ljust(512, b".")
    os.pwrite(log, rec, n * 512); os.fsync(log)
    os.pwrite(data, rec, n * 512); os.fsync(data)
    if n == 50:
        open(sys.argv[2], "w").close()  # running for a while now
    with open(sys.argv[2] + ".n", "w") as p:
        p.write(str(n))
    n += 1
EOF
python3 "$W/db.py" "$M" "$W/started" &
WRITER=$!
for _ in $(seq 600); do [ -e "$W/started" ] && break; sleep 0.05; done
[ -e "$W/started" ] || { echo "FAILED: the database did not start"; exit 1; }
for i in 1 2 3 4 5; do
  echo "snapshot --all g$i" > "$M/.control"
done
# Let it write some more, so the volumes are well past the snapshots.
at=$(cat "$W/started.n")
for _ in $(seq 600); do [ "$(cat "$W/started.n")" -gt $((at + 20)) ] && break; sleep 0.05; done
kill "$WRITER"; wait "$WRITER" 2>/dev/null || true; WRITER=
run ls "$M"

say "3. Every group snapshot obeys the rule: no data page without its log record"
cat > "$W/verify.py" <<'EOF'
import sys
def records(path):
    out = set()
    with open(path, "rb") as f:
        b = f.read(100000 * 512)
    for i in range(1, len(b) // 512):
        r = b[i * 512:(i + 1) * 512]
        if r.startswith(b"txn "):
            out.add(int(r[4:].split(b".")[0]))
    return out
log, data = records(sys.argv[1]), records(sys.argv[2])
missing = sorted(data - log)
print("%s: %d log records, %d data pages, data without log: %d" %
      (sys.argv[3], len(log), len(data), len(missing)))
sys.exit(1 if missing else 0)
EOF
for i in 1 2 3 4 5; do
  python3 "$W/verify.py" "$M/db-log@g$i" "$M/db-data@g$i" "g$i" ||
    { echo "FAILED: group snapshot g$i is inconsistent"; exit 1; }
done

# The check itself can fail: the log of g1 with the data as it is now.
if python3 "$W/verify.py" "$M/db-log@g1" "$M/db-data" "g1 log + current data" >/dev/null; then
  echo "FAILED: a mismatched pair passed the check"; exit 1
fi
echo "ok: the check rejects a mismatched pair (g1's log with today's data)"

say "4. A backup the database can start from: clones of one group"
echo "clone db-log@g3 restore-log" > "$M/.control"
echo "clone db-data@g3 restore-data" > "$M/.control"
python3 "$W/verify.py" "$M/restore-log" "$M/restore-data" "restore" ||
  { echo "FAILED: the restored pair is inconsistent"; exit 1; }
fusermount3 -u "$M"
run "$OVBD" check "$S"
echo
echo "consistency-group: all checks passed"
