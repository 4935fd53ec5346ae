#!/usr/bin/env bash
# Deleting volumes and snapshots in every order reclaims their space, with
# `du -sk STORE/layers` accounting, and never changes what the remaining
# volumes and snapshots read (sha256 through O_DIRECT, so the kernel's page
# cache cannot answer for the daemon):
#
# (a) origin first: 64M written, snapshot s1, 64M more elsewhere; deleting vol
#     frees its upper (~64M) and vol@s1 still reads the same; deleting vol@s1
#     then leaves the store's layers/ and volumes/ empty.
# (b) oldest snapshot first: 64M, s1, the same 64M overwritten, s2; deleting
#     s1 merges the two layers and frees ~64M; vol and vol@s2 unchanged, and
#     vol stays writable on its merged stack.
# (c) middle of a chain: s1, s2, s3 with s2's data hidden by s3's; deleting s2
#     frees ~64M; s1, s3 and vol unchanged.
# (d) the merge of (b) while 64M are being written to vol and a reader holds
#     vol@s2 open: the write lands, the held descriptor reads the same.
# After each case the daemon is stopped and `ovbd check STORE` (every byte)
# must be clean.
#
# E2E_CORRUPT=1 flips a byte in vol@s2's merged layer in case (b) before the
# content check: the test must then fail.
. "$(dirname "$0")/lib.sh"
require_fuse
require_cmd du dd
e2e_init

W=$E2E_WORK
M=$W/mnt
MiB=$((1 << 20))
# Freed space must be at least 90% of a 64M layer (du counts whole blocks).
MIN_FREED_KIB=$((64 * 1024 * 9 / 10))

for r in R1 R2 R3 R4; do head -c $((64 * MiB)) /dev/urandom >"$W/$r"; done

# ctl CMD: one command through .control; must succeed. A volume that was just
# closed may still be held by a release in flight (FUSE sends it
# asynchronously): deletes retry on EBUSY until a deadline.
ctl() {
  local err deadline=$((${EPOCHREALTIME/./} + 10000000))
  while :; do
    err=$(errno_of "fd = os.open('$M/.control', os.O_WRONLY); os.write(fd, b'$1\\n'); os.close(fd)")
    [[ $err == ok ]] && return 0
    [[ $err == EBUSY && $1 == delete* && ${EPOCHREALTIME/./} -lt $deadline ]] || break
    sleep 0.05
  done
  fail "'$1' through .control failed with $err: $(control_result "$M")"
}
# put FILE SRC OFFSET_MIB: writes SRC at OFFSET_MIB with O_DIRECT, then fsync.
put() { dd if="$2" of="$1" bs=1M seek="$3" oflag=direct conv=notrunc,fsync status=none; }
# image SIZE_MIB [SRC OFFSET_MIB]...: sha256 of the image those writes make.
image() {
  "$PY" -c '
import hashlib, sys
a = sys.argv[1:]
img = bytearray(int(a[0]) << 20)
for src, off in zip(a[1::2], a[2::2]):
    d = open(src, "rb").read()
    img[int(off) << 20:(int(off) << 20) + len(d)] = d
print(hashlib.sha256(img).hexdigest())
' "$@"
}
expect_sha() { # expect_sha FILE SHA WHAT
  local got
  got=$(sha_direct "$1")
  [[ $got == "$2" ]] || fail "$3: $1 reads sha256 $got, expected $2"
}
# new_case NAME SIZE_MIB: a fresh store $S (store-NAME) mounted on $M, holding
# an empty volume vol of SIZE_MIB.
new_case() {
  S=$W/store-$1
  "$OVBD" store init "$S" >/dev/null
  start_daemon "$S" "$M"
  ctl "create vol ${2}M"
}
# put_snap SRC OFFSET_MIB SNAP: writes $W/SRC into vol at OFFSET_MIB, then
# takes vol@SNAP.
put_snap() {
  put "$M/vol" "$W/$1" "$2"
  ctl "snapshot vol $3"
}
# delete_frees NAME WHAT: deletes NAME through .control; that must free at
# least MIN_FREED_KIB of layers/.
delete_frees() {
  local before after
  before=$(layers_kib "$S")
  ctl "delete $1"
  after=$(layers_kib "$S")
  log "$2: layers $before KiB -> $after KiB (freed $((before - after)) KiB)"
  ((before - after >= MIN_FREED_KIB)) || fail "$2: freed only $((before - after)) KiB, expected >= $MIN_FREED_KIB KiB"
}
# stop_and_check CASE: unmounts, then `ovbd check` of every byte of $S must be clean.
stop_and_check() {
  stop_daemon "$M"
  "$OVBD" check "$S" >"$W/check.log" 2>&1 || { cat "$W/check.log" >&2; fail "ovbd check $S: ($1)"; }
  log "($1): $(tail -1 "$W/check.log")"
}

# ---------------------------------------------------------------- (a) origin first
log "case (a): delete the origin volume, then its snapshot"
new_case a 192
put_snap R1 0 s1
want_s1=$(image 192 "$W/R1" 0)
expect_sha "$M/vol@s1" "$want_s1" "(a) vol@s1 as taken"
put "$M/vol" "$W/R2" 128
expect_sha "$M/vol" "$(image 192 "$W/R1" 0 "$W/R2" 128)" "(a) vol before the delete"
delete_frees vol "(a) delete vol"
[[ ! -e $M/vol && -f $M/vol@s1 ]] || fail "(a) after deleting vol the mount lists: $(ls "$M" | tr '\n' ' ')"
expect_sha "$M/vol@s1" "$want_s1" "(a) vol@s1 after its origin was deleted"
ctl "delete vol@s1"
[[ -z $(ls -A "$S/layers") ]] || fail "(a) layers/ not empty after deleting everything: $(ls -A "$S/layers" | tr '\n' ' ')"
[[ -z $(ls -A "$S/volumes") ]] || fail "(a) volumes/ not empty after deleting everything: $(ls -A "$S/volumes" | tr '\n' ' ')"
assert_eq $'.control\n.metrics' "$(ls -A "$M")" "(a) mount listing after deleting everything"
log "(a) layers: $(layers_kib "$S") KiB"
stop_and_check a

# ---------------------------------------------------------------- (b) oldest snapshot first
log "case (b): delete the older of two snapshots whose data the newer overwrote"
new_case b 128
put_snap R1 0 s1
put_snap R2 0 s2
want=$(image 128 "$W/R2" 0)
expect_sha "$M/vol" "$want" "(b) vol before the delete"
expect_sha "$M/vol@s2" "$want" "(b) vol@s2 before the delete"
expect_sha "$M/vol@s1" "$(image 128 "$W/R1" 0)" "(b) vol@s1 before the delete"
assert_eq 2 "$(layers_of "$S" vol@s2)" "(b) layers of vol@s2 before the delete"
delete_frees vol@s1 "(b) delete vol@s1"
assert_eq 1 "$(layers_of "$S" vol@s2)" "(b) layers of vol@s2 after the delete (merged)"
if corrupting; then
  mapfile -t low < <(lower_files "$S" vol)
  flip_byte "${low[-1]}" $(($(stat -c %s "${low[-1]}") / 2))
fi
expect_sha "$M/vol" "$want" "(b) vol after deleting s1"
expect_sha "$M/vol@s2" "$want" "(b) vol@s2 after deleting s1"
# The live volume keeps working on the merged stack.
put "$M/vol" "$W/R3" 32
want_v=$(image 128 "$W/R2" 0 "$W/R3" 32)
expect_sha "$M/vol" "$want_v" "(b) vol written after the merge"
expect_sha "$M/vol@s2" "$want" "(b) vol@s2 after vol was written"
stop_and_check b
start_daemon "$S" "$M"
expect_sha "$M/vol" "$want_v" "(b) vol after a restart"
expect_sha "$M/vol@s2" "$want" "(b) vol@s2 after a restart"
stop_daemon "$M"

# ---------------------------------------------------------------- (c) middle of a chain
log "case (c): delete the middle snapshot of a chain"
new_case c 192
put_snap R1 0 s1
put_snap R2 0 s2
put_snap R3 0 s3
put "$M/vol" "$W/R4" 128
want1=$(image 192 "$W/R1" 0)
want3=$(image 192 "$W/R3" 0)
wantv=$(image 192 "$W/R3" 0 "$W/R4" 128)
expect_sha "$M/vol@s1" "$want1" "(c) vol@s1 before the delete"
expect_sha "$M/vol@s2" "$(image 192 "$W/R2" 0)" "(c) vol@s2 before the delete"
expect_sha "$M/vol@s3" "$want3" "(c) vol@s3 before the delete"
expect_sha "$M/vol" "$wantv" "(c) vol before the delete"
delete_frees vol@s2 "(c) delete vol@s2"
[[ ! -e $M/vol@s2 ]] || fail "(c) vol@s2 still listed"
assert_eq 2 "$(layers_of "$S" vol@s3)" "(c) layers of vol@s3 after the delete"
assert_eq 1 "$(layers_of "$S" vol@s1)" "(c) layers of vol@s1 after the delete"
expect_sha "$M/vol@s1" "$want1" "(c) vol@s1 after deleting s2"
expect_sha "$M/vol@s3" "$want3" "(c) vol@s3 after deleting s2"
expect_sha "$M/vol" "$wantv" "(c) vol after deleting s2"
# Then the newest: its layer is shared with vol only, vol's stack stays.
before=$(layers_kib "$S")
ctl "delete vol@s3"
expect_sha "$M/vol" "$wantv" "(c) vol after deleting s3 too"
expect_sha "$M/vol@s1" "$want1" "(c) vol@s1 after deleting s3 too"
log "(c) delete vol@s3: layers $before KiB -> $(layers_kib "$S") KiB"
stop_and_check c

# ---------------------------------------------------------------- (d) merge under I/O
log "case (d): the merge of a delete while the volume is written and its snapshot held open"
new_case d 128
put_snap R1 0 s1
put_snap R2 0 s2
want=$(image 128 "$W/R2" 0)
# A reader holding vol@s2 open (O_DIRECT) across the merge: it creates
# $W/held.ready once it has the descriptor, waits for $W/held.go, then hashes
# through the same descriptor into $W/held.sha.
sha_direct "$M/vol@s2" "$W/held.ready" "$W/held.go" >"$W/held.sha" &
hpid=$!
E2E_PIDS+=("$hpid")
wait_until 20 "the reader of vol@s2 has it open" test -e "$W/held.ready" || fail "(d) the reader of vol@s2 did not start"
# A writer on vol during the merge.
put "$M/vol" "$W/R3" 64 &
wpid=$!
E2E_PIDS+=("$wpid")
upper_grew() { (($(alloc_kib "$(upper_data "$S" vol)") >= 8192)) || proc_gone "$wpid"; }
wait_until 30 "the writer is under way" upper_grew || fail "(d) the writer does not progress"
proc_alive "$wpid" || log "(d) note: the writer finished before the delete started"
ctl "delete vol@s1"
reap "$wpid" || fail "(d) writing vol while vol@s1 was deleted failed"
assert_eq 1 "$(layers_of "$S" vol@s2)" "(d) layers of vol@s2 after the delete (merged)"
touch "$W/held.go"
reap "$hpid" || fail "(d) the reader of vol@s2 failed"
held=$(cat "$W/held.sha")
[[ $held == "$want" ]] || fail "(d) vol@s2 read through a descriptor held across the merge: sha256 $held, expected $want"
expect_sha "$M/vol@s2" "$want" "(d) vol@s2 after the merge"
expect_sha "$M/vol" "$(image 128 "$W/R2" 0 "$W/R3" 64)" "(d) vol written during the merge"
stop_and_check d
start_daemon "$S" "$M"
expect_sha "$M/vol" "$(image 128 "$W/R2" 0 "$W/R3" 64)" "(d) vol after a restart"
stop_daemon "$M"
