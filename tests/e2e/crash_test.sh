#!/usr/bin/env bash
# Crash consistency: E2E_CRASH_ITERATIONS (default 5) times, a workload writes
# self-identifying sectors (and punches holes) at random offsets of a volume
# over a lower layer, fsyncing every 1..16 operations and logging what each
# fsync made durable only after it returned; ovbdfs is killed with SIGKILL once
# the workload has issued a random number of operations; the dead mount is
# cleared and the store mounted again. Every sector must then hold its last
# fsynced contents or those of a later write to it (never garbage, never an
# older version), untouched sectors must be unchanged, and the volume must
# open every time. The daemon runs alternately with flush_interval=1
# (periodic commits race the kill) and flush_interval=0 (only fsync commits);
# after even iterations it is also restarted cleanly (contents unchanged),
# after odd ones the recovered mount goes straight into the next crash.
#
# E2E_CORRUPT=1 flips a byte of a durable sector in the upper before the last
# check: the test must then fail.
. "$(dirname "$0")/lib.sh"
require_fuse
e2e_init

N=${E2E_CRASH_ITERATIONS:-5}
W=$E2E_WORK
S=$W/store
M=$W/mnt
V=$M/vol
L1=$OVBD_TEST_DATA/overlaybd/64MiB/l1.lsmt
wl() { "$PY" "$E2E_DIR/crash_workload.py" "$@"; }

"$OVBD" store init "$S" >/dev/null
"$OVBD" volume create "$S" vol --size 128M --from "$L1" >/dev/null
"$OVBD" flatten "$L1" -o "$W/baseline" >/dev/null
truncate -s 128M "$W/baseline"

lines_at_least() { [[ -f $1 ]] && (($(wc -l <"$1") >= $2)); }
reached_or_exited() { lines_at_least "$1" "$2" || proc_gone "$3"; }

opts_for() { if (($1 % 2)); then echo "-o flush_interval=1"; else echo "-o flush_interval=0"; fi; }

# shellcheck disable=SC2046
start_daemon "$S" "$M" $(opts_for 1)
for ((i = 1; i <= N; i++)); do
  logdir=$W/run$i
  mkdir -p "$logdir"
  target=$((50 + RANDOM % 1500))
  direct=
  ((i % 3 == 0)) && direct=--direct
  log "iteration $i/$N: kill after $target operations ${direct:+(O_DIRECT)}"
  wl run "$V" "$logdir" "$((RANDOM * 32768 + RANDOM))" $direct 2>"$logdir/workload.log" &
  wpid=$!
  E2E_PIDS+=("$wpid")
  wait_until 120 "workload issues $target operations" reached_or_exited "$logdir/intent" "$target" "$wpid" ||
    fail "workload did not reach $target operations in 120s"
  proc_alive "$wpid" || { cat "$logdir/workload.log" >&2; fail "workload ended before the crash"; }
  kill_daemon "$M"
  wait_until 30 "workload notices the crash" proc_gone "$wpid" || fail "workload hangs after the daemon died"
  wrc=0
  reap "$wpid" || wrc=$?
  ((wrc == 0)) || { cat "$logdir/workload.log" >&2; fail "workload failed (status $wrc)"; }
  cat "$logdir/workload.log" >&2

  if corrupting && ((i == N)); then
    # A sector the last fsync made durable.
    off=$("$PY" - "$logdir" <<'EOF'
import sys
d = int(open(sys.argv[1] + "/synced").read().split()[-1])
last = {}
for line in open(sys.argv[1] + "/intent"):
    k, seq, off, ln = line.split()
    for s in range(int(off) // 512, (int(off) + int(ln)) // 512):
        last[s] = (int(seq), k)
print(next(s * 512 for s, (q, k) in last.items() if q <= d and k == "W"))
EOF
)
    flip_byte "$(upper_data "$S" vol)" $((4096 + off + 100))
  fi

  # shellcheck disable=SC2046
  start_daemon "$S" "$M" $(opts_for "$((i + 1))")
  wl verify "$V" "$logdir" "$W/baseline" "$W/baseline.next" || fail "iteration $i: data check failed after the crash"
  mv "$W/baseline.next" "$W/baseline"
  if ((i % 2 == 0)); then
    stop_daemon "$M"
    # shellcheck disable=SC2046
    start_daemon "$S" "$M" $(opts_for "$((i + 1))")
    wl verify "$V" "$W/empty" "$W/baseline" "$W/baseline.next" 2>/dev/null ||
      fail "iteration $i: contents changed across a clean restart"
  fi
done
stop_daemon "$M"
"$OVBD" status "$S" vol >&2
