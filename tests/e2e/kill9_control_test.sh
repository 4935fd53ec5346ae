#!/usr/bin/env bash
# kill -9 of ovbdfs while .control commands run. E2E_KILL_ITERATIONS (default
# 5) times: control_workload.py issues snapshot, snapshot --all, clone and
# delete commands (with fsynced writes to the origin volume in between; new
# snapshots and clones are read once) in a loop; 0..8 ms
# after it starts a random one of them (the 3rd..32nd), the daemon is killed
# with SIGKILL, wherever it is, and the dead mount is cleared. Then:
#  - `ovbd check STORE --quick` on the crashed store may report only what the
#    next mount's recovery removes or finishes (unreferenced files,
#    temporary files, a journal tail torn by the kill, an interrupted
#    `snapshot --all`), nothing else;
#  - the store mounts again; every name whose creation was acknowledged (and
#    whose deletion never started) is there, no name whose deletion was
#    acknowledged is; every listed file reads completely; snapshots and
#    clones read the sha256 they had when they were made;
#  - after an unmount, `ovbd check STORE --quick` is clean.
#
# E2E_CORRUPT=1 removes a layer file a snapshot uses before the last check:
# the test must then fail.
. "$(dirname "$0")/lib.sh"
require_fuse
e2e_init

N=${E2E_KILL_ITERATIONS:-5}
W=$E2E_WORK
S=$W/store
M=$W/mnt
wl() { "$PY" "$E2E_DIR/control_workload.py" "$@"; }

"$OVBD" store init "$S" >/dev/null
"$OVBD" volume create "$S" vol --size 8M >/dev/null
: >"$W/known"
mid=0 # kills that landed while a command was in flight

# check_crashed: ovbd check --quick of the crashed store; only findings the
# mount's recovery takes care of are allowed.
check_crashed() {
  local rc=0
  "$OVBD" check "$S" --quick >"$1" 2>&1 || rc=$?
  if grep '^PROBLEM' "$1" | grep -v -e 'not referenced by any volume or snapshot' \
    -e 'leftover temporary file' -e 'torn tail of' -e 'snapshot group' >"$1.unexpected"; then
    cat "$1" >&2
    fail "ovbd check of the crashed store: problems the recovery does not handle"
  fi
  if ((rc != 0)) && ! grep -q '^PROBLEM' "$1"; then
    cat "$1" >&2
    fail "ovbd check of the crashed store failed (status $rc)"
  fi
  log "crashed store: $(grep -c '^PROBLEM' "$1" || true) finding(s) for recovery; $(tail -1 "$1")"
  grep '^PROBLEM' "$1" | sed 's/^/    /' >&2 || true
}

for ((i = 1; i <= N; i++)); do
  d=$W/run$i
  mkdir -p "$d"
  start_daemon "$S" "$M"
  find "$M" -mindepth 1 -maxdepth 1 ! -name ".*" -printf "%f\n" >"$d/before"  # not .control, .metrics
  target=$((3 + RANDOM % 30))
  log "iteration $i/$N: kill after $target commands ($(wc -l <"$d/before") names now)"
  wl run "$M" "$d/log" "$((RANDOM * 32768 + RANDOM))" "$i" 2>"$d/workload.err" &
  wpid=$!
  E2E_PIDS+=("$wpid")
  # The kill: 0..8 ms after the workload starts its target-th command, sent
  # by a poller at 1 ms (this shell's own polls are too coarse for that).
  wl killer "$d/log" "$target" "$DAEMON_PID" "$RANDOM" ||
    { cat "$d/workload.err" "$d/log" >&2; fail "the workload stopped before the kill: $(grep '^error' "$d/log" || echo 'no error logged')"; }
  reap_killed_daemon "$M"
  wait_until 30 "the workload notices the dead daemon" proc_gone "$wpid" || fail "the workload hangs after the kill"
  wrc=0
  reap "$wpid" || wrc=$?
  ((wrc == 3)) || { cat "$d/workload.err" >&2; fail "the workload ended with status $wrc (expected 3: an error from the dead mount)"; }
  last=$(grep -E '^(start|done) ' "$d/log" | tail -1)
  [[ $last == start* ]] && mid=$((mid + 1))
  log "killed after: $(tail -2 "$d/log" | tr "\n" " ")"

  if corrupting && ((i == N)); then
    victim=$("$PY" -c '
import json, os, sys
d = sys.argv[1] + "/volumes"
for f in sorted(os.listdir(d)):
    m = json.load(open(os.path.join(d, f)))
    for s in m.get("snapshots", []):
        if s["lowers"]:
            print(sys.argv[1] + "/layers/" + s["lowers"][-1]); sys.exit()
' "$S")
    [[ -n $victim ]] || fail "E2E_CORRUPT: no snapshot layer to remove"
    rm -f "$victim"
    log "E2E_CORRUPT: removed $victim"
  fi
  check_crashed "$d/check-crashed.log"

  start_daemon "$S" "$M"
  wl verify "$M" "$d/log" "$d/before" "$W/known" "$W/known.next" || fail "iteration $i: the store after the crash is wrong"
  mv "$W/known.next" "$W/known"
  stop_daemon "$M"
  "$OVBD" check "$S" --quick >"$d/check.log" 2>&1 || { cat "$d/check.log" >&2; fail "iteration $i: ovbd check after recovery is not clean"; }
  log "iteration $i: $(tail -1 "$d/check.log")"
done
"$OVBD" volume list "$S" >&2
log "$mid of $N kills landed while a command was in flight"
