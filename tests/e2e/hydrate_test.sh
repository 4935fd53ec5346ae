#!/usr/bin/env bash
# Hydration: a volume's lower layers copied into its own upper while it is in
# use, then dropped from its manifest (and their files collected).
#
# The images are random-ish: per 64 KiB, random bytes, compressible text or a
# hole, made sparse; imported as lz4 ZFile layers.
#
# Case 1: a rate-limited hydration (its lower read from the disk) while fio
#   writes (randwrite, crc32c verify with a backlog) to a region near the
#   volume's start, which the copy passes through meanwhile: every write
#   must win over the copy of the same range, even one that lands between
#   the copy's read of the lower and its fill of the upper. A range further
#   on is discarded during the hydration. When
#   status says done: after an unmount the manifest lists no lowers and the
#   base layer's file is gone; after a remount the volume reads as the image
#   outside fio's region (zeros where it was discarded) and fio --verify_only
#   passes inside it.
# Case 2: kill -9 of the daemon at random points of a rate-limited hydration
#   (three times, each after a few fsynced 4 KiB writes at random offsets).
#   Each remount resumes the hydration by itself (status: running); it ends
#   done with the image plus every acknowledged write, none undone by the
#   copy of older lower data.
# Case 3: rate, pause, resume and cancel, as status shows them (text and
#   JSON): limit=1048576 after `rate 1M`; copied stands still while paused
#   and moves again after resume; cancel leaves the state idle with the
#   copied data kept; a restart finishes.
# Case 4: a store on a small ext4 (loop device). Starting while the free
#   space is less than what is to be copied fails with ENOSPC (the .control
#   write, and `ovbd hydrate`). Filling the filesystem during a hydration
#   turns it into state error with a reason about space, `ovbd hydrate
#   --wait` exits non-zero, the volume still reads right; once space is free,
#   `hydrate vm resume` finishes it.
# Case 5: `ovbd hydrate STORE VOL` of an unmounted store does the work in
#   the tool; on a mounted one `--wait` returns 0 only when done, also with
#   `--all`; a layer other volumes or snapshots still use stays until they
#   are gone.
# `ovbd check STORE` is clean after every case.
#
# E2E_CORRUPT=1 flips a byte of the hydrated upper of case 1 (outside fio's
# region) before the comparison: the test must then fail.
. "$(dirname "$0")/lib.sh"
require_root "loop devices and a kernel mount (case 4)"
require_fuse
require_loop
require_cmd fio mkfs.ext4 cmp fallocate
e2e_init

W=$E2E_WORK
MiB=$((1 << 20))

# ---- helpers -------------------------------------------------------------------------

# mkimage FILE MIB SEED: a sparse image; each 64 KiB random, text or a hole.
mkimage() {
  "$PY" - "$@" <<'EOF'
import os, random, sys
path, mib, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
r = random.Random(seed)
words = [bytes(r.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(2, 9))) for _ in range(300)]
chunk = 64 << 10
# Compressible chunks: one of a few texts of words, each stamped with its
# offset so no two chunks are equal.
texts = [b" ".join(r.choice(words) for _ in range(chunk // 4))[:chunk] for _ in range(16)]
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
os.ftruncate(fd, mib << 20)
for i in range((mib << 20) // chunk):
    k = r.random()
    if k < 0.45:
        data = r.randbytes(chunk)
    elif k < 0.75:
        data = b"%016x" % (i * chunk) + r.choice(texts)[16:]
    else:
        continue  # a hole
    os.pwrite(fd, data, i * chunk)
os.close(fd)
EOF
}

# ctl MNT LINE: writes LINE to MNT/.control through one handle and prints the
# handle's reply; exits 1 (after printing errno=NAME) if the write fails.
ctl() {
  "$PY" - "$@" <<'EOF'
import errno, os, sys
from e2e_io import read_to_eof
fd = os.open(sys.argv[1] + "/.control", os.O_RDWR)
rc = 0
try:
    os.write(fd, (sys.argv[2] + "\n").encode())
except OSError as e:
    print("errno=" + errno.errorcode.get(e.errno, str(e.errno)))
    rc = 1
out = read_to_eof(fd)
os.close(fd)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(rc)
EOF
}
# ctl_ok MNT LINE: as ctl; fails the test unless the command succeeds.
ctl_ok() {
  local out
  out=$(ctl "$@") || fail "'$2' failed: $out"
  log "'$2': $(head -1 <<<"$out")"
  CTL_OUT=$out
}

# hyd_line STORE VOL: the volume's "hydrate:" status line (empty when idle).
hyd_line() {
  local out
  out=$("$OVBD" status "$1" "$2") || fail "ovbd status $1 $2 failed: $out"
  grep -E '^[[:space:]]+hydrate: ' <<<"$out" | head -1 || true
}
# hyd_state STORE VOL: idle, running, paused, done or error.
hyd_state() {
  local l
  l=$(hyd_line "$1" "$2")
  if [[ -z $l ]]; then echo idle; else sed -E 's/^[[:space:]]*hydrate: ([a-z]+).*/\1/' <<<"$l"; fi
}
# hyd_field STORE VOL FIELD: a number of the hydrate line (copied, total, limit, ...).
# new_store STORE MNT VOL IMAGE ARRAY: sets S and M, makes the store with VOL
# imported from IMAGE as an lz4 ZFile, and puts VOL's lower files in ARRAY.
new_store() {
  S=$1
  M=$2
  "$OVBD" store init "$S" >/dev/null
  "$OVBD" volume import "$S" "$3" "$4" --compress lz4 >/dev/null
  mapfile -t "$5" < <(lower_files "$S" "$3")
}

hyd_field() {
  local v
  v=$(hyd_line "$1" "$2" | grep -oE "(^|[[:space:]])$3=[0-9]+" | cut -d= -f2)
  [[ -n $v ]] || fail "status of $2 has no $3=: '$(hyd_line "$1" "$2")'"
  echo "$v"
}
state_is() { [[ $(hyd_state "$1" "$2") == "$3" ]]; }
copied_at_least() { (($(hyd_field "$1" "$2" copied) >= $3)); }
copied_above() { (($(hyd_field "$1" "$2" copied) > $3)); }
# wait_state STORE VOL STATE SECS
wait_state() {
  wait_until "$4" "hydration of $2 in state $3" state_is "$1" "$2" "$3" ||
    fail "hydration of $2 not $3 after $4 s: '$(hyd_line "$1" "$2")'"
  log "hydrate $2: $(hyd_line "$1" "$2" | sed 's/^ *//')"
}
# vol_field STORE VOL FIELD: a number of the volume's own status line.
vol_field() {
  "$OVBD" status "$1" "$2" | grep -E "^$2 " | grep -oE "(^|[[:space:]])$3=[0-9]+" | cut -d= -f2
}
# lowers_of STORE VOL: the number of lowers in the volume's manifest.
lowers_of() {
  "$PY" -c 'import json,sys; m=json.load(open(sys.argv[1]+"/volumes/"+sys.argv[2]+".json")); print(len(m.get("lowers") or []))' "$1" "$2"
}
# manifest_hydrate STORE VOL: the manifest's hydrate object, as JSON ({} if none).
manifest_hydrate() {
  "$PY" -c 'import json,sys; m=json.load(open(sys.argv[1]+"/volumes/"+sys.argv[2]+".json")); print(json.dumps(m.get("hydrate", {})))' "$1" "$2"
}
# json_hydrate MNT VOL KEY: a field of the volume's hydrate object in the JSON status.
json_hydrate() {
  "$PY" - "$@" <<'EOF'
import json, os, sys
from e2e_io import read_to_eof
fd = os.open(sys.argv[1] + "/.control", os.O_RDWR)
os.write(fd, b"json\nstatus\n")
out = read_to_eof(fd)
os.close(fd)
doc = json.loads(out)
vol = [v for v in doc["volumes"] if v["name"] == sys.argv[2]]
h = vol[0].get("hydrate") if vol else None
print(h.get(sys.argv[3], "") if isinstance(h, dict) else "")
EOF
}
# check_store STORE WHAT: ovbd check must be clean.
check_store() {
  "$OVBD" check "$1" >"$W/check.log" 2>&1 || { cat "$W/check.log" >&2; fail "$2: ovbd check is not clean"; }
  log "$2: $(tail -1 "$W/check.log")"
}
# hydrated STORE VOL BASE_LAYER_FILES... (store unmounted): no lowers in the
# manifest, and the given layer files are gone.
hydrated() {
  local s=$1 v=$2 f
  shift 2
  assert_eq 0 "$(lowers_of "$s" "$v")" "lowers in the manifest of $v after hydrating"
  for f in "$@"; do
    [[ ! -e $f ]] || fail "layer file $f is still there after hydrating $v"
  done
  log "manifest of $v: no lowers, hydrate $(manifest_hydrate "$s" "$v")"
}
# same VOLFILE EXPECTED WHAT: byte for byte.
same() {
  cmp "$1" "$2" >&2 || fail "$3: $1 differs from $2"
}
# known_writes VOLFILE EXPECTED N SEED LIST: N fsynced 4 KiB writes of random
# data at random 4 KiB offsets of the volume, mirrored into EXPECTED; their
# offsets are added to the file LIST.
known_writes() {
  "$PY" - "$@" <<'EOF'
import os, random, sys
vol, exp, n, seed, lst = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
r = random.Random(seed)
fv = os.open(vol, os.O_RDWR)
fe = os.open(exp, os.O_RDWR)
blocks = os.fstat(fe).st_size // 4096
offs = []
for _ in range(n):
    off = r.randrange(blocks) * 4096
    data = r.randbytes(4096)
    os.pwrite(fv, data, off)
    os.pwrite(fe, data, off)
    offs.append(off)
os.fsync(fv)
os.close(fv)
os.close(fe)
with open(lst, "a") as f:
    f.writelines("%d\n" % o for o in offs)
EOF
}
# known_blocks_ok VOLFILE EXPECTED LIST: every 4 KiB block at an offset of
# LIST reads the same in both files (prints the first that does not).
known_blocks_ok() {
  "$PY" - "$@" <<'EOF'
import os, sys
fv = os.open(sys.argv[1], os.O_RDONLY)
fe = os.open(sys.argv[2], os.O_RDONLY)
for line in open(sys.argv[3]):
    off = int(line)
    if os.pread(fv, 4096, off) != os.pread(fe, 4096, off):
        print("block at %d differs" % off)
        sys.exit(1)
EOF
}
# data_offset FILE START: the first offset at or after START where sparse FILE holds data.
data_offset() { "$PY" -c 'import os,sys; fd=os.open(sys.argv[1],os.O_RDONLY); print(os.lseek(fd,int(sys.argv[2]),os.SEEK_DATA))' "$1" "$2"; }
avail_bytes() { "$PY" -c 'import os,sys; s=os.statvfs(sys.argv[1]); print(s.f_bavail*s.f_frsize)' "$1"; }

log "making the images"
mkimage "$W/big.raw" 256 11
mkimage "$W/small.raw" 64 12

# ---------------------------------------------------------------- case 1
log "case 1: hydration under fio --verify writes"
new_store "$W/s1" "$W/m1" vm "$W/big.raw" base1
((${#base1[@]} == 1)) || fail "import made ${#base1[@]} lowers"
start_daemon "$S" "$M"
same "$M/vm" "$W/big.raw" "case 1: the volume before hydrating"

# fio's region starts near the volume's start, where the hydration starts:
# the copy passes through it while fio writes there.
R0=$((4 * MiB)) R1=$((68 * MiB))
P0=$((232 * MiB)) PL=$((3 * MiB))     # discarded during the hydration
cp --sparse=always "$W/big.raw" "$W/exp1.img"
fallocate -p -o "$P0" -l "$PL" "$W/exp1.img"
cat >"$W/c1.fio" <<EOF
[region]
filename=$M/vm
offset=$R0
size=$((R1 - R0))
rw=randwrite
bssplit=4k/50:16k/30:64k/15:256k/5
blockalign=4k
ioengine=libaio
direct=1
iodepth=16
verify=crc32c
verify_backlog=256
verify_fatal=1
do_verify=1
end_fsync=1
randrepeat=1
randseed=77
EOF

# The lower's reads go to the disk (slower: a wider window between reading a
# range and filling it, which foreground writes must win).
echo 1 >/proc/sys/vm/drop_caches
cd "$W" || fail "cd $W" # fio's verify dumps land here
ctl_ok "$M" "hydrate vm rate 20M"
fio --output="$W/c1-write.log" "$W/c1.fio" &
fpid=$!
E2E_PIDS+=("$fpid")
grep -q 'hydrate vm running' <<<"$CTL_OUT" || fail "reply to 'hydrate vm rate 20M': $CTL_OUT"
assert_eq running "$(hyd_state "$S" vm)" "case 1: state after starting"
assert_eq $((20 * MiB)) "$(hyd_field "$S" vm limit)" "case 1: limit after 'rate 20M'"
log "case 1: fio started at $(hyd_line "$S" vm | sed 's/^ *//')"
total1=$(hyd_field "$S" vm total)
fallocate -p -o "$P0" -l "$PL" "$M/vm"
wait_until 120 "fio ends" proc_gone "$fpid" || fail "case 1: fio does not end"
rc=0
wait "$fpid" || rc=$?
forget_pid "$fpid"
((rc == 0)) || { tail -30 "$W/c1-write.log" >&2; fail "case 1: fio write/verify during the hydration failed (status $rc)"; }
grep -q 'err= 0' "$W/c1-write.log" || fail "case 1: fio reported errors"
log "case 1: fio done; hydration then: $(hyd_line "$S" vm | sed 's/^ *//') (total at start $total1)"
wait_state "$S" vm "done" 120
assert_eq 0 "$(vol_field "$S" vm layers)" "case 1: layers= of a hydrated volume"
stop_daemon "$M"
hydrated "$S" vm "${base1[@]}"
if corrupting; then flip_byte "$(upper_data "$S" vm)" $((4096 + $(data_offset "$W/big.raw" $((100 * MiB))) + 777)); fi
start_daemon "$S" "$M"
cmp -n "$R0" "$M/vm" "$W/exp1.img" >&2 || fail "case 1: the volume before fio's region differs from the image"
cmp -i "$R1" "$M/vm" "$W/exp1.img" >&2 || fail "case 1: the volume after fio's region differs from the image"
fio --verify_only --output="$W/c1-verify.log" "$W/c1.fio" || { tail -30 "$W/c1-verify.log" >&2; fail "case 1: fio --verify_only after the hydration failed"; }
grep -q 'READ:' "$W/c1-verify.log" || fail "case 1: fio --verify_only read nothing"
stop_daemon "$M"
check_store "$S" "case 1"
rm -f "$W/exp1.img"

# ---------------------------------------------------------------- case 2
log "case 2: kill -9 during the hydration"
new_store "$W/s2" "$W/m2" vm "$W/big.raw" base2
cp --sparse=always "$W/big.raw" "$W/exp2.img"
: >"$W/known2"
start_daemon "$S" "$M"
ctl_ok "$M" "hydrate vm rate 16M"
total2=$(hyd_field "$S" vm total)
((total2 > 100 * MiB)) || fail "case 2: total=$total2 is less than the image's data"
for ((i = 1; i <= 3; i++)); do
  now=$(hyd_field "$S" vm copied)
  target=$((now + total2 * (5 + RANDOM % 16) / 100))
  ((target < total2 * 8 / 10)) || target=$((total2 * 8 / 10))
  wait_until 60 "copied >= $target" copied_at_least "$S" vm "$target" ||
    fail "case 2: hydration does not progress: $(hyd_line "$S" vm)"
  known_writes "$M/vm" "$W/exp2.img" 4 "$((100 + i))" "$W/known2"
  log "case 2: kill $i at $(hyd_line "$S" vm | sed 's/^ *//')"
  kill_daemon "$M"
  start_daemon "$S" "$M"
  st=$(hyd_state "$S" vm)
  [[ $st == running ]] || fail "case 2: after restart $i the hydration is '$st', not running: $(hyd_line "$S" vm)"
  log "case 2: restarted: $(hyd_line "$S" vm | sed 's/^ *//')"
  out=$(known_blocks_ok "$M/vm" "$W/exp2.img" "$W/known2") ||
    fail "case 2: an fsynced write is lost after kill $i: $out"
  wait_until 30 "hydration moves after restart $i" copied_above "$S" vm "$(hyd_field "$S" vm copied)" ||
    fail "case 2: hydration does not move after restart $i: $(hyd_line "$S" vm)"
done
ctl_ok "$M" "hydrate vm rate 0"
assert_eq 0 "$(hyd_field "$S" vm limit)" "case 2: limit after 'rate 0'"
wait_state "$S" vm "done" 120
same "$M/vm" "$W/exp2.img" "case 2: the volume after the hydration"
stop_daemon "$M"
hydrated "$S" vm "${base2[@]}"
start_daemon "$S" "$M"
same "$M/vm" "$W/exp2.img" "case 2: the hydrated volume after a remount"
stop_daemon "$M"
check_store "$S" "case 2"
rm -f "$W/exp2.img"

# ---------------------------------------------------------------- case 3
log "case 3: rate, pause, resume, cancel"
new_store "$W/s3" "$W/m3" vm "$W/small.raw" base3
start_daemon "$S" "$M"
ctl_ok "$M" "hydrate vm rate 2M"
assert_eq $((2 * MiB)) "$(hyd_field "$S" vm limit)" "case 3: limit after 'rate 2M'"
wait_until 20 "copied > 0" copied_above "$S" vm 0 || fail "case 3: nothing copied: $(hyd_line "$S" vm)"
ctl_ok "$M" "hydrate vm rate 1M"
assert_eq running "$(hyd_state "$S" vm)" "case 3: state after 'rate 1M'"
assert_eq 1048576 "$(hyd_field "$S" vm limit)" "case 3: limit after 'rate 1M'"
ctl_ok "$M" "hydrate vm pause"
assert_eq paused "$(hyd_state "$S" vm)" "case 3: state after pause"
assert_eq paused "$(json_hydrate "$M" vm state)" "case 3: JSON state after pause"
assert_eq 1048576 "$(json_hydrate "$M" vm limit)" "case 3: JSON limit after pause"
assert_eq paused "$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1]).get("state",""))' "$(manifest_hydrate "$S" vm)")" \
  "case 3: state in the manifest after pause"
# A chunk in flight at the pause may still land: wait until copied settles
# (two samples 0.5 s apart agree), then it must not move for 3 s.
settled() {
  local a b
  a=$(hyd_field "$S" vm copied)
  sleep 0.5
  b=$(hyd_field "$S" vm copied)
  [[ $a == "$b" ]]
}
wait_until 10 "copied settles after pause" settled || fail "case 3: copied keeps moving after pause: $(hyd_line "$S" vm)"
c_paused=$(hyd_field "$S" vm copied)
end=$((SECONDS + 3))
while ((SECONDS < end)); do
  c=$(hyd_field "$S" vm copied)
  ((c == c_paused)) || fail "case 3: copied moved from $c_paused to $c while paused"
  sleep 0.2
done
log "case 3: copied stayed at $c_paused for 3 s while paused"
ctl_ok "$M" "hydrate vm resume"
assert_eq running "$(hyd_state "$S" vm)" "case 3: state after resume"
wait_until 30 "copied moves after resume" copied_above "$S" vm "$c_paused" ||
  fail "case 3: copied does not move after resume: $(hyd_line "$S" vm)"
c_cancel=$(hyd_field "$S" vm copied)
ctl_ok "$M" "hydrate vm cancel"
assert_eq idle "$(hyd_state "$S" vm)" "case 3: state after cancel"
[[ ${#base3[@]} -gt 0 && -e ${base3[0]} ]] || fail "case 3: the base layer is gone after cancel"
used=$(vol_field "$S" vm used)
((used * 2 >= c_cancel)) || fail "case 3: after cancel the upper holds $used bytes, $c_cancel were copied"
log "case 3: cancelled with copied=$c_cancel; the upper holds $used bytes"
same "$M/vm" "$W/small.raw" "case 3: the volume after cancel"
ctl_ok "$M" "hydrate vm rate 0"
wait_state "$S" vm "done" 60
stop_daemon "$M"
hydrated "$S" vm "${base3[@]}"
start_daemon "$S" "$M"
same "$M/vm" "$W/small.raw" "case 3: the hydrated volume"
stop_daemon "$M"
check_store "$S" "case 3"

# ---------------------------------------------------------------- case 4
log "case 4: ENOSPC on a small ext4"
truncate -s 160M "$W/fs.img"
mkfs.ext4 -q -F -m 0 -E nodiscard "$W/fs.img" || fail "mkfs.ext4 failed"
loop_attach "$W/fs.img"
F=$W/fs
kmount "$LOOP" "$F"
new_store "$F/store" "$W/m4" vm "$W/small.raw" base4
data4=$(($(alloc_kib "$W/small.raw") * 1024)) # what the lower maps
start_daemon "$S" "$M"
# Refused when the free space cannot hold what is to be copied.
avail=$(avail_bytes "$F")
((avail > data4 + 16 * MiB)) || fail "case 4: only $avail bytes free for $data4 to copy"
fallocate -l $((avail - data4 / 4)) "$F/filler"
log "case 4: $(avail_bytes "$F") bytes free, $data4 to copy"
out=$(ctl "$M" "hydrate vm") && fail "case 4: hydrate started with too little free space: $out"
grep -q 'errno=ENOSPC' <<<"$out" || fail "case 4: hydrate with too little space: expected ENOSPC, got: $out"
rc=0
"$OVBD" hydrate "$S" vm >"$W/c4-refused.log" 2>&1 || rc=$?
((rc != 0)) || fail "case 4: ovbd hydrate with too little space exited 0: $(cat "$W/c4-refused.log")"
grep -qiE 'space|ENOSPC' "$W/c4-refused.log" || fail "case 4: ovbd hydrate's message does not say why: $(cat "$W/c4-refused.log")"
log "case 4: refused: $(head -1 "$W/c4-refused.log")"
st=$(hyd_state "$S" vm)
[[ $st == idle || $st == error ]] || fail "case 4: after a refused start the hydration is $st"
rm -f "$F/filler"
# Mid-way: the filesystem fills during the hydration.
"$OVBD" hydrate "$S" vm --rate 4M --wait >"$W/c4-wait.log" 2>&1 &
wpid=$!
E2E_PIDS+=("$wpid")
wait_state "$S" vm running 20
wait_until 30 "copied >= 4 MiB" copied_at_least "$S" vm $((4 * MiB)) || fail "case 4: no progress: $(hyd_line "$S" vm)"
avail=$(avail_bytes "$F")
fallocate -l $((avail - 2 * MiB)) "$F/filler"
log "case 4: filled the filesystem ($(avail_bytes "$F") bytes free) at $(hyd_line "$S" vm | sed 's/^ *//')"
wait_state "$S" vm error 180
hyd_line "$S" vm | grep -qiE 'error=".*(space|ENOSPC)' || fail "case 4: the error does not say it is about space: $(hyd_line "$S" vm)"
wait_until 30 "ovbd hydrate --wait ends on the error" proc_gone "$wpid" || fail "case 4: ovbd hydrate --wait does not end on the error"
rc=0
wait "$wpid" || rc=$?
forget_pid "$wpid"
((rc != 0)) || fail "case 4: ovbd hydrate --wait exited 0 on an error: $(tail -3 "$W/c4-wait.log")"
log "case 4: ovbd hydrate --wait exited $rc: $(tail -1 "$W/c4-wait.log")"
echo 1 >/proc/sys/vm/drop_caches
same "$M/vm" "$W/small.raw" "case 4: the volume in state error"
rm -f "$F/filler"
ctl_ok "$M" "hydrate vm resume"
st=$(hyd_state "$S" vm)
[[ $st == running || $st == "done" ]] || fail "case 4: after resume the hydration is $st"
ctl "$M" "hydrate vm rate 0" >/dev/null || true # may be done already
wait_state "$S" vm "done" 60
stop_daemon "$M"
hydrated "$S" vm "${base4[@]}"
start_daemon "$S" "$M"
same "$M/vm" "$W/small.raw" "case 4: the hydrated volume"
stop_daemon "$M"
check_store "$S" "case 4"
kumount "$F"
loop_detach "$LOOP"

# ---------------------------------------------------------------- case 5
log "case 5: ovbd hydrate, offline and --wait"
new_store "$W/s5" "$W/m5" a "$W/small.raw" base5
mkimage "$W/small2.raw" 64 13
"$OVBD" volume import "$S" d "$W/small2.raw" --compress lz4 >/dev/null # left to hydrate --all
mapfile -t base5d < <(lower_files "$S" d)
"$OVBD" snapshot "$S" a s1 >/dev/null
"$OVBD" clone "$S" a@s1 c >/dev/null
# Offline: the tool does the whole job.
"$OVBD" hydrate "$S" c >"$W/c5-offline.log" 2>&1 || { cat "$W/c5-offline.log" >&2; fail "case 5: ovbd hydrate of an unmounted store failed"; }
log "case 5: offline: $(tail -1 "$W/c5-offline.log")"
hydrated "$S" c
[[ -e ${base5[0]} ]] || fail "case 5: the base layer went away while a and a@s1 still use it"
check_store "$S" "case 5, offline"
start_daemon "$S" "$M"
same "$M/c" "$W/small.raw" "case 5: the volume hydrated offline"
# Mounted, --wait: returns 0 only once the state is done.
rc=0
"$OVBD" hydrate "$S" a --rate 16M --wait >"$W/c5-wait.log" 2>&1 || rc=$?
((rc == 0)) || { cat "$W/c5-wait.log" >&2; fail "case 5: ovbd hydrate --wait exited $rc"; }
assert_eq "done" "$(hyd_state "$S" a)" "case 5: state when ovbd hydrate --wait returned"
assert_eq 0 "$(vol_field "$S" a layers)" "case 5: layers= when ovbd hydrate --wait returned"
log "case 5: --wait: $(tail -1 "$W/c5-wait.log")"
same "$M/a" "$W/small.raw" "case 5: the volume hydrated with --wait"
same "$M/a@s1" "$W/small.raw" "case 5: the snapshot of the hydrated volume"
stop_daemon "$M"
hydrated "$S" a
[[ -e ${base5[0]} ]] || fail "case 5: the base layer went away while a@s1 still uses it"
"$OVBD" delete "$S" a@s1 >/dev/null
"$OVBD" gc "$S" >/dev/null
for f in "${base5[@]}"; do
  [[ ! -e $f ]] || fail "case 5: layer $f stays after its last user a@s1 was deleted"
done
start_daemon "$S" "$M"
same "$M/a" "$W/small.raw" "case 5: a after deleting a@s1"
same "$M/c" "$W/small.raw" "case 5: c after deleting a@s1"
# --all: every volume that still has lowers (d only).
rc=0
"$OVBD" hydrate "$S" --all --wait >"$W/c5-all.log" 2>&1 || rc=$?
((rc == 0)) || { cat "$W/c5-all.log" >&2; fail "case 5: ovbd hydrate --all --wait exited $rc"; }
log "case 5: --all --wait: $(tail -1 "$W/c5-all.log")"
assert_eq "done" "$(hyd_state "$S" d)" "case 5: state of d when ovbd hydrate --all --wait returned"
assert_eq 0 "$(vol_field "$S" d layers)" "case 5: layers= of d when ovbd hydrate --all --wait returned"
same "$M/d" "$W/small2.raw" "case 5: the volume hydrated by --all"
stop_daemon "$M"
hydrated "$S" d "${base5d[@]}"
check_store "$S" "case 5"
