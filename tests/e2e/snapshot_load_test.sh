#!/usr/bin/env bash
# Snapshots under load. A 512M volume carries ext4 through a direct-I/O loop
# device; fio (two jobs, one O_DIRECT and one buffered, random writes of
# 4k..64k that also overwrite earlier blocks, an fsync every 16 writes,
# crc32c verification) writes files in
# it while .control takes a snapshot every second. Each `echo snapshot` must
# succeed, and VOL@sN must be listed at once and refuse to open for writing.
# Afterwards fio's verify must pass and the live ext4 must be clean. Every
# snapshot must be a consistent crash image of the file system: its clone
# passes `e2fsck -fy` (exit 0 or 1, fixing only what a crash leaves: journal
# replay, free counts, orphans, extent-tree optimisation) and then
# `e2fsck -fn` cleanly. The first snapshot, read (concurrently) right after it was taken,
# must read the same at the end. Deleting the clones and then the snapshots
# frees space in STORE/layers, and `ovbd check STORE --quick` is clean.
#
# E2E_CORRUPT=1 wipes the superblocks of the first clone before its e2fsck:
# the consistency check must then fail.
. "$(dirname "$0")/lib.sh"
require_root
require_fuse
require_loop
require_cmd fio mkfs.ext4 e2fsck
e2e_init

W=$E2E_WORK
S=$W/store
M=$W/mnt
K=$W/ext4
MIN_SNAPS=5
"$OVBD" store init "$S" >/dev/null
"$OVBD" volume create "$S" vol --size 512M >/dev/null
start_daemon "$S" "$M"

loop_attach "$M/vol" --direct-io=on
mkfs.ext4 -q -F -b 4096 -E nodiscard "$LOOP" || fail "mkfs.ext4 on $LOOP failed"
kmount "$LOOP" "$K"

cat >"$W/load.fio" <<EOF
[global]
directory=$K
rw=randwrite
bsrange=4k-64k
blockalign=4k
size=90m
ioengine=psync
fsync=16
end_fsync=1
verify=crc32c
verify_fatal=1
do_verify=1
randrepeat=1
# Blocks are rewritten (fio verifies the intact ones), so later layers hide
# data of earlier ones and deleting the snapshots lets them merge.
norandommap=1
# Writes paced so the load spans several snapshots.
rate=,12m
[direct]
direct=1
randseed=11
[buffered]
direct=0
randseed=12
EOF
log "fio on ext4 (2 jobs x 90M) with a snapshot every second"
(cd "$W" && exec fio --output="$W/fio.log" "$W/load.fio") &
fio_pid=$!
E2E_PIDS+=("$fio_pid")

now_us() { echo "${EPOCHREALTIME/./}"; }

n=0
next=$(($(now_us) + 1000000))
while proc_alive "$fio_pid"; do
  # Pace: one snapshot a second, or stop as soon as fio is done.
  until (($(now_us) >= next)) || proc_gone "$fio_pid"; do sleep 0.02; done
  proc_alive "$fio_pid" || break
  next=$((next + 1000000))
  n=$((n + 1))
  t0=$(now_us)
  echo "snapshot vol s$n" >"$M/.control" || fail "echo 'snapshot vol s$n' > .control failed: $(control_result "$M")"
  t1=$(now_us)
  grep -qxF "vol@s$n" < <(ls "$M") || fail "vol@s$n is not listed right after the snapshot command"
  for how in O_WRONLY O_RDWR "O_WRONLY | os.O_TRUNC"; do
    e=$(errno_of "os.open('$M/vol@s$n', os.$how)")
    [[ $e == EROFS || $e == EACCES ]] || fail "vol@s$n opened with $how: $e (expected EROFS or EACCES)"
  done
  log "snapshot s$n took $(((t1 - t0) / 1000)) ms"
  # The first snapshot is read while the load and the snapshots go on.
  if ((n == 1)); then
    sha_direct "$M/vol@s1" >"$W/s1.sha" &
    sha_pid=$!
    E2E_PIDS+=("$sha_pid")
  fi
done
fio_rc=0
reap "$fio_pid" || fio_rc=$?
grep -E 'WRITE:|READ:|err=' "$W/fio.log" >&2 || true
((fio_rc == 0)) || { tail -40 "$W/fio.log" >&2; fail "fio failed (status $fio_rc): its verify did not pass"; }
grep -q 'READ:' "$W/fio.log" || fail "fio did not run its verify pass"
((n >= MIN_SNAPS)) || fail "only $n snapshots were taken while fio ran (need $MIN_SNAPS): the load was too short"
reap "$sha_pid" || fail "reading vol@s1 during the load failed"
sha_s1=$(cat "$W/s1.sha")
log "fio passed; $n snapshots taken"

kumount "$K"
e2fsck -fn "$LOOP" >"$W/fsck-live.log" 2>&1 || { cat "$W/fsck-live.log" >&2; fail "e2fsck -fn of the live volume found problems"; }
loop_detach "$LOOP"

# Every snapshot is a consistent image.
for ((i = 1; i <= n; i++)); do
  echo "clone vol@s$i c$i" >"$M/.control" || fail "clone vol@s$i c$i failed: $(control_result "$M")"
  if corrupting && ((i == 1)); then
    for off in 0 128 384; do # the primary superblock and both backups (4K blocks)
      dd if=/dev/zero of="$M/c$i" bs=1M seek=$off count=1 conv=notrunc status=none
    done
    log "E2E_CORRUPT: wiped the superblocks of c$i"
  fi
  rc=0
  e2fsck -fy "$M/c$i" >"$W/fsck-y-$i.log" 2>&1 || rc=$?
  if ((rc > 1)); then
    cat "$W/fsck-y-$i.log" >&2
    fail "e2fsck -fy of the clone of vol@s$i exited $rc: the snapshot is not a consistent image"
  fi
  # A crash image may need its journal replayed, the superblock's lazily kept
  # free counts fixed, orphans cleaned and extent trees optimised; anything
  # else e2fsck -fy fixes means the snapshot was not a point-in-time image.
  if grep -v -E -e '^e2fsck [0-9]' -e ': recovering journal$' -e '^Pass [0-9E]+: ' -e '^(Fix|Optimize)\? yes$' \
    -e '^Free (blocks|inodes) count wrong' -e '(could be narrower|could be shallower)\.  Optimize\? yes$' \
    -e '^(Clearing|Truncating) orphaned inode' -e 'FILE SYSTEM WAS MODIFIED' -e ': [0-9]+/[0-9]+ files \(' \
    -e '^$' "$W/fsck-y-$i.log" >"$W/fsck-y-$i.unexpected"; then
    cat "$W/fsck-y-$i.log" >&2
    fail "e2fsck -fy of the clone of vol@s$i fixed more than a crash leaves: $(head -3 "$W/fsck-y-$i.unexpected" | tr '\n' ' ')"
  fi
  e2fsck -fn "$M/c$i" >"$W/fsck-n-$i.log" 2>&1 ||
    { cat "$W/fsck-y-$i.log" "$W/fsck-n-$i.log" >&2; fail "e2fsck -fn of the clone of vol@s$i is not clean after -fy"; }
  log "vol@s$i: consistent (e2fsck -fy exit $rc, then clean)"
done

# Space: clones, then snapshots.
d0=$(layers_kib "$S")
for ((i = 1; i <= n; i++)); do
  echo "delete c$i" >"$M/.control" || fail "delete c$i failed: $(control_result "$M")"
done
d1=$(layers_kib "$S")
log "deleting $n clones: layers $d0 -> $d1 KiB"
((d1 < d0)) || fail "deleting the clones freed nothing ($d0 -> $d1 KiB)"
layers_before=$(layers_of "$S" vol)
for ((i = n; i >= 2; i--)); do
  echo "delete vol@s$i" >"$M/.control" || fail "delete vol@s$i failed: $(control_result "$M")"
  [[ ! -e $M/vol@s$i ]] || fail "vol@s$i still listed after its delete"
done
assert_eq "$sha_s1" "$(sha_direct "$M/vol@s1")" "sha256 of vol@s1 (read under load vs. after deleting the later snapshots)"
echo "delete vol@s1" >"$M/.control" || fail "delete vol@s1 failed: $(control_result "$M")"
d2=$(layers_kib "$S")
layers_after=$(layers_of "$S" vol)
log "deleting $n snapshots: layers $d1 -> $d2 KiB; vol's stack $layers_before -> $layers_after layers"
((d2 < d1)) || fail "deleting the snapshots freed nothing ($d1 -> $d2 KiB)"
assert_eq "vol" "$(ls "$M")" "mount listing after deleting clones and snapshots"
e2fsck -fn "$M/vol" >"$W/fsck-final.log" 2>&1 || { cat "$W/fsck-final.log" >&2; fail "e2fsck -fn of vol after the deletes found problems"; }
stop_daemon "$M"
"$OVBD" check "$S" --quick >"$W/check.log" 2>&1 || { cat "$W/check.log" >&2; fail "ovbd check --quick found problems"; }
log "$(tail -1 "$W/check.log")"
