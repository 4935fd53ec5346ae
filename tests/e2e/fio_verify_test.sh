#!/usr/bin/env bash
# fio with crc32c verification on a volume file: four libaio/O_DIRECT jobs on
# distinct regions doing random writes of 4 KiB..1 MiB (bssplit) at queue depth
# 16, plus one buffered psync job, fsync at the end, then fio's own verify pass;
# then a second pass with other block sizes overwriting the first. The daemon is stopped and restarted and fio --verify_only re-reads and
# re-checks every block: acknowledged data must survive a clean restart.
#
# E2E_CORRUPT=1 flips one byte of the upper before the second verify: the test
# must then fail.
. "$(dirname "$0")/lib.sh"
require_fuse
require_cmd fio
e2e_init

W=$E2E_WORK
S=$W/store
M=$W/mnt
"$OVBD" store init "$S" >/dev/null
# A lower layer underneath: the first job's region starts over lower data.
"$OVBD" volume create "$S" vol --size 320M --from "$OVBD_TEST_DATA/overlaybd/64MiB/l1.lz4.zfile" >/dev/null
start_daemon "$S" "$M"

# jobfile NAME BSSPLIT SEED: the job file used for writing and verifying.
jobfile() {
  cat >"$W/$1.fio" <<EOF
[global]
filename=$M/vol
rw=randwrite
bssplit=$2
blockalign=4k
verify=crc32c
verify_fatal=1
verify_dump=1
do_verify=1
end_fsync=1
randrepeat=1
randseed=$3
size=64m
ioengine=libaio
direct=1
iodepth=16

[aio0]
offset=0
[aio1]
offset=64m
[aio2]
offset=128m
[aio3]
offset=192m
[buffered]
offset=256m
size=32m
ioengine=psync
direct=0
bssplit=4k/50:64k/50
EOF
}
jobfile first 4k/35:16k/20:64k/20:256k/15:1m/10 1
# Second pass: different sizes and seed, so its blocks straddle the first
# pass's (in-place overwrites of partial earlier writes).
jobfile second 1m/20:512k/20:8k/30:4k/30 4242

log "fio: write + verify"
cd "$W" # fio's verify_dump files land here
fio --output="$W/fio1.log" "$W/first.fio" || { tail -40 "$W/fio1.log" >&2; fail "fio write/verify failed"; }
grep -E 'WRITE:|READ:' "$W/fio1.log" >&2 || true
grep -q 'err= 0' "$W/fio1.log" || fail "fio reported errors"
used_of() { "$OVBD" status "$S" vol | grep -o 'used=[0-9]*' | cut -d= -f2; }
used1=$(used_of)
log "fio: overwrite + verify"
fio --output="$W/fio2.log" "$W/second.fio" || { tail -40 "$W/fio2.log" >&2; fail "fio overwrite/verify failed"; }
grep -E 'WRITE:|READ:' "$W/fio2.log" >&2 || true
used2=$(used_of)
log "upper used: $used1 bytes after the first pass, $used2 after overwriting"
# Overwrites are in place: the upper grows only by blocks the first pass left unwritten.
((used2 <= used1 + 8 * 1024 * 1024)) || fail "upper grew from $used1 to $used2 bytes on overwrite"
stop_daemon "$M"

if corrupting; then flip_byte "$(upper_data "$S" vol)" $((4096 + 130 * 1024 * 1024 + 12345)); fi

start_daemon "$S" "$M"
log "fio: verify only, after a restart"
fio --verify_only --output="$W/fio3.log" "$W/second.fio" || { tail -40 "$W/fio3.log" >&2; fail "fio --verify_only failed after a restart"; }
grep -E 'READ:' "$W/fio3.log" >&2 || true
grep -q 'READ:' "$W/fio3.log" || fail "fio --verify_only read nothing"
stop_daemon "$M"
