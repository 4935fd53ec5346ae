# shellcheck shell=bash
# Common helpers for the ovbdfs end-to-end tests.
#
#   . "$(dirname "$0")/lib.sh"
#   e2e_init                      # temp dir in $E2E_WORK, cleanup trap
#   start_daemon STORE MNT [opts] # ovbdfs -f in the background, waits for the mount
#   stop_daemon [MNT]             # fusermount3 -u, waits for a clean exit
#
# Everything a test sets up through these helpers (FUSE mounts, kernel mounts,
# loop devices, daemons, users, system settings) is undone by the EXIT trap,
# whatever way the test ends. Every wait is a poll on a condition with a
# deadline; nothing sleeps blindly.
#
# Exit codes follow ctest: 0 pass, 1 fail, 77 skipped (with a loud reason).
#
# Environment:
#   OVBD, OVBDFS     the binaries under test (set by CMake; else found on PATH)
#   OVBD_TEST_DATA   tests/data (set by CMake; else found next to this file)
#   E2E_KEEP=1       keep the work directory (logs, stores) after the test
#   E2E_CORRUPT=1    fault injection: the test corrupts data before its check,
#                    which must then FAIL (proves the check can fail)
#
# Sanitizer builds: every process a test starts writes its ASan, LSan and
# UBSan reports to files under $E2E_WORK/sanitizer (log_path), whatever it
# does with its stderr, and a test with any report FAILS (checked when a
# daemon stops and at cleanup; daemon logs are searched too). A tool that a
# test expects to fail therefore cannot hide a memory error behind its
# non-zero exit.
set -euo pipefail
set -E  # ERR trap in functions too

E2E_NAME=$(basename "$0" .sh)
E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E_MOUNT_TIMEOUT=${E2E_MOUNT_TIMEOUT:-30}
E2E_WORK=
E2E_CLEANING=0
E2E_CLEANUP_FAILED=0
LAST_MNT=
DAEMON_PID=
DAEMON_LOG=
LOOP=
declare -a E2E_FUSE_MOUNTS=() E2E_KMOUNTS=() E2E_LOOPS=() E2E_LOOP_FILES=() E2E_PIDS=() E2E_USERS=() E2E_RESTORE=()
declare -A E2E_DAEMON_OF=() E2E_LOG_OF=()
E2E_SAN_DIR=

# A sane PATH for commands run as other users or from a clean environment
# (root's PATH here may point into /root, which nobody else can read).
SYS_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
if [[ -x /usr/bin/python3 ]]; then PY=/usr/bin/python3; else PY=$(command -v python3 || true); fi
# The tests' python snippets import their shared helpers (e2e_io.py) from here.
export PYTHONPATH=$E2E_DIR${PYTHONPATH:+:$PYTHONPATH}

log() { printf '[%s %s] %s\n' "$E2E_NAME" "$(date +%T.%3N)" "$*" >&2; }

fail() {
  printf '\n[%s] FAIL: %s\n\n' "$E2E_NAME" "$*" >&2
  exit 1
}

skip() {
  printf '\n[%s] ************************************************************\n' "$E2E_NAME" >&2
  printf '[%s] SKIPPED: %s\n' "$E2E_NAME" "$*" >&2
  printf '[%s] ************************************************************\n\n' "$E2E_NAME" >&2
  exit 77
}

# skip_part REASON: says as loudly as skip that one part of the test does not
# run, and goes on with the rest (the test can still pass).
skip_part() {
  printf '\n[%s] ************************************************************\n' "$E2E_NAME" >&2
  printf '[%s] SKIPPED PART: %s\n' "$E2E_NAME" "$*" >&2
  printf '[%s] ************************************************************\n\n' "$E2E_NAME" >&2
}

_e2e_on_err() {
  local rc=$1 line=$2 cmd=$3
  ((E2E_CLEANING)) && return 0
  printf '\n[%s] FAIL: command failed (exit %s) at %s line %s: %s\n\n' \
    "$E2E_NAME" "$rc" "$(basename "${BASH_SOURCE[1]:-$0}")" "$line" "$cmd" >&2
}

# ---- requirements ------------------------------------------------------------------

require_cmd() {
  local c
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 || skip "'$c' is not installed"
  done
}

require_root() {
  [[ $(id -u) == 0 ]] || skip "needs root (${1:-loop devices, kernel mounts})"
}

require_fuse() {
  [[ -c /dev/fuse ]] || skip "/dev/fuse does not exist (no FUSE in this kernel/container)"
  require_cmd fusermount3 mountpoint
  if [[ $(id -u) != 0 && ! -r /dev/fuse ]]; then skip "/dev/fuse is not accessible to $(id -un)"; fi
}

require_loop() {
  require_root "loop devices"
  require_cmd losetup
  [[ -e /dev/loop-control ]] || skip "no /dev/loop-control (loop driver missing)"
  losetup -f >/dev/null 2>&1 || skip "no free loop device"
}

# ---- setup and cleanup ------------------------------------------------------------

e2e_init() {
  OVBD=${OVBD:-$(command -v ovbd || true)}
  OVBDFS=${OVBDFS:-$(command -v ovbdfs || true)}
  OVBD_TEST_DATA=${OVBD_TEST_DATA:-$(cd "$E2E_DIR/../data" && pwd)}
  [[ -n $OVBD && -x $OVBD ]] || fail "OVBD is not set to the ovbd binary (run through ctest)"
  [[ -n $OVBDFS && -x $OVBDFS ]] || fail "OVBDFS is not set to the ovbdfs binary (run through ctest)"
  [[ -d $OVBD_TEST_DATA ]] || fail "OVBD_TEST_DATA=$OVBD_TEST_DATA is not a directory"
  [[ -n $PY ]] || skip "python3 is not installed"
  E2E_WORK=$(mktemp -d "/tmp/ovbd-e2e.$E2E_NAME.XXXXXX")
  _sanitizer_setup
  trap '_e2e_on_err $? $LINENO "$BASH_COMMAND"' ERR
  trap e2e_cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  log "work dir $E2E_WORK; ovbd=$OVBD ovbdfs=$OVBDFS"
}

# ---- sanitizer reports -------------------------------------------------------------

_sanitizer_setup() {
  E2E_SAN_DIR=$E2E_WORK/sanitizer
  mkdir -p "$E2E_SAN_DIR"
  chmod 1777 "$E2E_SAN_DIR" # processes of the test's other users report here too
  export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}log_path=$E2E_SAN_DIR/asan"
  export UBSAN_OPTIONS="${UBSAN_OPTIONS:+$UBSAN_OPTIONS:}print_stacktrace=1:log_path=$E2E_SAN_DIR/ubsan"
  export TSAN_OPTIONS="${TSAN_OPTIONS:+$TSAN_OPTIONS:}log_path=$E2E_SAN_DIR/tsan"
}

# sanitizer_findings: prints every sanitizer report of this test's processes
# (report files, and reports in daemon logs); returns 0 if there is one.
sanitizer_findings() {
  local f found=1
  if [[ -n $E2E_SAN_DIR && -d $E2E_SAN_DIR ]]; then
    for f in "$E2E_SAN_DIR"/*; do
      [[ -s $f ]] || continue
      found=0
      printf '==== sanitizer report %s\n' "$(basename "$f")"
      head -c 20000 "$f"
    done
  fi
  for f in "${E2E_LOG_OF[@]}"; do
    [[ -f $f ]] || continue
    if grep -qE 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error: |WARNING: ThreadSanitizer' "$f"; then
      found=0
      printf '==== sanitizer report in daemon log %s\n' "$(basename "$f")"
      grep -E -A40 'ERROR: (Address|Leak|Thread)Sanitizer|runtime error: |WARNING: ThreadSanitizer' "$f" | head -200
    fi
  done
  return $found
}

# check_sanitizers: fails the test now if any process reported a finding.
check_sanitizers() {
  if sanitizer_findings >&2; then fail "a sanitizer reported a finding (above)"; fi
}

# on_cleanup CMD...: run CMD (a simple command, stored as words) at cleanup,
# after mounts and daemons are gone, in reverse order of registration.
on_cleanup() {
  local q
  printf -v q '%q ' "$@"
  E2E_RESTORE+=("$q")
}

# Runs "$@" with a deadline; logs (and remembers) a failure, never aborts.
_cleanup_run() {
  local t=$1
  shift
  if ! timeout "$t" "$@" >/dev/null 2>&1; then
    return 1
  fi
}

e2e_cleanup() {
  local rc=$?
  E2E_CLEANING=1
  set +e
  trap - ERR
  local i m d p u
  # Kernel mounts (filesystems on loop devices), newest first.
  for ((i = ${#E2E_KMOUNTS[@]} - 1; i >= 0; i--)); do
    m=${E2E_KMOUNTS[i]}
    if is_mounted "$m"; then
      _cleanup_run 60 umount "$m" || _cleanup_run 30 umount -l "$m" ||
        { log "cleanup: cannot unmount $m"; E2E_CLEANUP_FAILED=1; }
    fi
  done
  # Loop devices over files we attached: found by the file's device and
  # inode (losetup -j), so a device number another test reused is left alone
  # and a device attached just before a signal is not missed ...
  for f in "${E2E_LOOP_FILES[@]}"; do
    for d in $(timeout 10 losetup -n -O NAME -j "$f" 2>/dev/null); do
      _cleanup_run 60 losetup -d "$d" || { log "cleanup: cannot detach $d"; E2E_CLEANUP_FAILED=1; }
    done
  done
  # ... and, when the file is gone (daemon dead), by DEV|FILE as attached.
  for d in "${E2E_LOOPS[@]}"; do
    if [[ $(losetup -n -O BACK-FILE "${d%%|*}" 2>/dev/null) == "${d#*|}"* ]]; then
      _cleanup_run 60 losetup -d "${d%%|*}" || { log "cleanup: cannot detach ${d%%|*}"; E2E_CLEANUP_FAILED=1; }
    fi
  done
  # FUSE mounts, newest first.
  for ((i = ${#E2E_FUSE_MOUNTS[@]} - 1; i >= 0; i--)); do
    m=${E2E_FUSE_MOUNTS[i]}
    if is_mounted "$m"; then
      _cleanup_run 30 fusermount3 -u "$m" || _cleanup_run 30 fusermount3 -u -z "$m" ||
        _cleanup_run 30 umount -l "$m" || { log "cleanup: cannot unmount $m"; E2E_CLEANUP_FAILED=1; }
    fi
  done
  # Daemons and helpers we started and did not reap: TERM, then KILL after a
  # deadline. Only our own children (a reaped pid may belong to anyone now).
  for p in "${E2E_PIDS[@]}"; do
    if proc_alive "$p" && [[ $(ps -o ppid= -p "$p" 2>/dev/null | tr -d ' ') == "$$" ]]; then
      kill -TERM "$p" 2>/dev/null
      wait_until 15 "pid $p exits" proc_gone "$p" || kill -KILL "$p" 2>/dev/null
    fi
    wait "$p" 2>/dev/null
  done
  # Users: end their processes (all started by this test), then remove them.
  for u in "${E2E_USERS[@]}"; do
    getent passwd "$u" >/dev/null || continue
    kill_user_processes "$u"
    userdel -r "$u" >/dev/null 2>&1 || userdel "$u" >/dev/null 2>&1 ||
      { log "cleanup: cannot remove user $u"; E2E_CLEANUP_FAILED=1; }
    getent group "$u" >/dev/null && groupdel "$u" >/dev/null 2>&1
  done
  # System settings, newest first.
  for ((i = ${#E2E_RESTORE[@]} - 1; i >= 0; i--)); do
    eval "${E2E_RESTORE[i]}" || { log "cleanup: '${E2E_RESTORE[i]}' failed"; E2E_CLEANUP_FAILED=1; }
  done
  # After every process is gone, so leak reports at exit are in.
  if sanitizer_findings >&2; then
    printf '[%s] FAIL: a sanitizer reported a finding (above)\n' "$E2E_NAME" >&2
    ((rc == 0 || rc == 77)) && rc=1
  fi
  if [[ -n $E2E_WORK && -d $E2E_WORK ]]; then
    if grep -qF " $E2E_WORK" /proc/self/mountinfo; then
      log "cleanup: something is still mounted under $E2E_WORK; leaving it"
      E2E_CLEANUP_FAILED=1
    elif [[ ${E2E_KEEP:-0} == 1 ]]; then
      log "kept $E2E_WORK"
    else
      rm -rf --one-file-system "$E2E_WORK"
    fi
  fi
  if ((rc == 0 && E2E_CLEANUP_FAILED)); then
    printf '[%s] FAIL: cleanup did not complete\n' "$E2E_NAME" >&2
    rc=1
  fi
  if ((rc == 0)); then
    printf '[%s] PASSED\n' "$E2E_NAME" >&2
  elif ((rc != 77)); then
    printf '[%s] FAILED (exit %s)\n' "$E2E_NAME" "$rc" >&2
  fi
  exit "$rc"
}

# ---- polling -------------------------------------------------------------------------

# wait_until SECONDS DESCRIPTION CMD...: polls CMD until it succeeds. Returns 1
# (after logging DESCRIPTION) when the deadline passes first.
wait_until() {
  local secs=$1 what=$2
  shift 2
  local start=${EPOCHREALTIME/./} deadline
  deadline=$((start + secs * 1000000))
  until "$@"; do
    if ((${EPOCHREALTIME/./} >= deadline)); then
      log "timed out after ${secs}s waiting for: $what"
      return 1
    fi
    sleep 0.05
  done
}

# forget_pid PID: PID was reaped; cleanup must not signal it any more.
forget_pid() {
  local i
  for i in "${!E2E_PIDS[@]}"; do
    [[ ${E2E_PIDS[i]} == "$1" ]] && unset "E2E_PIDS[i]"
  done
  return 0
}

# reap PID: waits for PID (a background child of this shell listed in
# E2E_PIDS), forgets it, and returns its exit status.
reap() {
  local rc=0
  wait "$1" || rc=$?
  forget_pid "$1"
  return "$rc"
}

proc_alive() {
  local s
  s=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $s != Z* ]]
}
proc_gone() { ! proc_alive "$1"; }

# is_mounted PATH: PATH is a mount point (from the mount table; works for
# dead FUSE mounts and for mounts root may not stat).
is_mounted() {
  local p
  p=$(realpath -m -s "$1")
  awk -v p="$p" '{ gsub(/\\040/, " ", $5); if ($5 == p) found = 1 } END { exit !found }' \
    /proc/self/mountinfo
}
not_mounted() { ! is_mounted "$1"; }

# ---- the daemon ----------------------------------------------------------------------

# start_daemon STORE MNT [ovbdfs options...]: runs ovbdfs -f in the background
# (log in $DAEMON_LOG, pid in $DAEMON_PID) and waits until MNT is mounted.
# With the array E2E_DAEMON_WRAP set, ovbdfs runs under that command (one
# that execs it, such as setpriv, so the pid stays the daemon's).
E2E_DAEMON_WRAP=()
start_daemon() {
  local store=$1 mnt=$2
  shift 2
  mkdir -p "$mnt"
  local logf
  logf="$E2E_WORK/ovbdfs.$(basename "$mnt").$(date +%s%N).log"
  E2E_FUSE_MOUNTS+=("$mnt") # before starting: a signal may come at any point
  "${E2E_DAEMON_WRAP[@]}" "$OVBDFS" "$store" "$mnt" -f "$@" >"$logf" 2>&1 &
  local pid=$!
  E2E_PIDS+=("$pid")
  E2E_DAEMON_OF[$mnt]=$pid
  E2E_LOG_OF[$mnt]=$logf
  # shellcheck disable=SC2034 # for the tests
  DAEMON_PID=$pid DAEMON_LOG=$logf
  LAST_MNT=$mnt
  local deadline=$((${EPOCHREALTIME/./} + E2E_MOUNT_TIMEOUT * 1000000))
  until timeout 10 mountpoint -q "$mnt"; do
    if proc_gone "$pid"; then
      local rc=0
      wait "$pid" 2>/dev/null || rc=$?
      sed 's/^/    ovbdfs: /' "$logf" >&2
      fail "ovbdfs exited (status $rc) before $mnt was mounted"
    fi
    if ((${EPOCHREALTIME/./} >= deadline)); then
      sed 's/^/    ovbdfs: /' "$logf" >&2
      fail "ovbdfs did not mount $mnt within ${E2E_MOUNT_TIMEOUT}s"
    fi
    sleep 0.05
  done
  log "ovbdfs${*:+ $*} mounted $store on $mnt (pid $pid)"
}

# stop_daemon [MNT]: unmounts with fusermount3 -u and waits for ovbdfs to exit;
# fails the test unless it exits with status 0 (its final flush succeeded).
stop_daemon() {
  local mnt=${1:-$LAST_MNT}
  local pid=${E2E_DAEMON_OF[$mnt]:-}
  [[ -n $pid ]] || fail "stop_daemon: no daemon of ours on $mnt"
  # EBUSY while a closing file is still being released: retry until a deadline.
  local err deadline=$((${EPOCHREALTIME/./} + 30000000))
  until err=$(fusermount3 -u "$mnt" 2>&1); do
    ((${EPOCHREALTIME/./} < deadline)) || fail "fusermount3 -u $mnt kept failing: $err"
    sleep 0.1
  done
  wait_until 60 "ovbdfs (pid $pid) exits after unmount" proc_gone "$pid" ||
    fail "ovbdfs (pid $pid) still running 60s after unmount"
  local rc=0
  reap "$pid" || rc=$?
  unset "E2E_DAEMON_OF[$mnt]"
  if ((rc != 0)); then
    sed 's/^/    ovbdfs: /' "${E2E_LOG_OF[$mnt]}" >&2
    sanitizer_findings >&2 || true
    fail "ovbdfs exited with status $rc after unmounting $mnt"
  fi
  check_sanitizers
  log "ovbdfs on $mnt stopped cleanly"
}

# kill_daemon [MNT]: SIGKILL, then clears the dead mount (fusermount3 -u -z or
# umount -l). Models a crash of the daemon.
kill_daemon() {
  local mnt=${1:-$LAST_MNT}
  local pid=${E2E_DAEMON_OF[$mnt]:-}
  [[ -n $pid ]] || fail "kill_daemon: no daemon of ours on $mnt"
  kill -KILL "$pid"
  reap_killed_daemon "$mnt"
  log "ovbdfs on $mnt killed (pid $pid), dead mount cleared"
}

# reap_killed_daemon MNT: the daemon on MNT was sent SIGKILL (by kill_daemon
# or by a test's own killer): reaps it and clears the dead mount.
reap_killed_daemon() {
  local mnt=$1
  local pid=${E2E_DAEMON_OF[$mnt]:-}
  [[ -n $pid ]] || fail "reap_killed_daemon: no daemon of ours on $mnt"
  wait_until 30 "killed ovbdfs exits" proc_gone "$pid" || fail "ovbdfs survived SIGKILL"
  reap "$pid" 2>/dev/null || true
  unset "E2E_DAEMON_OF[$mnt]"
  fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
  wait_until 30 "dead mount $mnt goes away" not_mounted "$mnt" || fail "cannot clear the dead mount $mnt"
}

# ---- loop devices and kernel mounts --------------------------------------------------

# loop_attach FILE [losetup options...]: sets $LOOP to the new device.
loop_attach() {
  local file=$1
  shift
  E2E_LOOP_FILES+=("$file") # before attaching: a signal may come at any point
  LOOP=$(losetup -f --show "$@" "$file") || fail "losetup -f --show $* $file failed"
  E2E_LOOPS+=("$LOOP|$(realpath -m "$file")")
  log "attached $LOOP -> $file ($*)"
}

loop_detach() {
  local d=$1
  losetup -d "$d" || fail "losetup -d $d failed"
  # Detaching is asynchronous when the device was busy: wait for it.
  wait_until 30 "$d detached" _loop_free "$d" || fail "$d still attached"
  local i
  for i in "${!E2E_LOOPS[@]}"; do
    [[ ${E2E_LOOPS[i]%%|*} == "$d" ]] && unset "E2E_LOOPS[i]"
  done
  return 0
}
_loop_free() { [[ -z $(losetup -n -O BACK-FILE "$1" 2>/dev/null) ]]; }

# kmount [mount options...] DEV DIR: a kernel mount undone at cleanup.
kmount() {
  local dir=${*: -1}
  mkdir -p "$dir"
  E2E_KMOUNTS+=("$dir") # before mounting: a signal may come at any point
  mount "$@" || fail "mount $* failed"
}

kumount() {
  umount "$1" || fail "umount $1 failed"
}

# loop_mount_ro FILE DIR: the filesystem in FILE mounted read-only on DIR
# through a read-only, direct-I/O loop device (in $LOOP). loop_umount DIR
# unmounts it and detaches that device.
loop_mount_ro() {
  loop_attach "$1" -r --direct-io=on
  kmount -o ro "$LOOP" "$2"
}
loop_umount() {
  kumount "$1"
  loop_detach "$LOOP"
}

# ---- users ---------------------------------------------------------------------------

# add_user NAME: a real login user with a home directory, removed at cleanup.
add_user() {
  local u=$1
  getent passwd "$u" >/dev/null && fail "user $u already exists"
  E2E_USERS+=("$u")
  useradd -m -U -s /bin/bash "$u" || fail "useradd $u failed"
  log "created user $u (uid $(id -u "$u"))"
}

# open_dev_fuse: sets /dev/fuse to mode 0666, what the mainstream
# distributions ship (a udev rule) and what FUSE mounts by users other than
# root need, for this test only: the mode it had is restored at cleanup.
open_dev_fuse() {
  local mode
  mode=$(stat -c %a /dev/fuse)
  [[ $mode == 666 ]] && return 0
  log "NOTE: /dev/fuse is mode $mode here; 0666 (the distributions' default) for this test, restored at cleanup"
  on_cleanup chmod "$mode" /dev/fuse
  chmod 0666 /dev/fuse
}

# as_user USER CMD...: runs CMD as USER with a clean, system PATH (and the
# sanitizer settings, so its reports are collected too).
as_user() {
  local u=$1
  shift
  runuser -u "$u" -- env -i PATH="$SYS_PATH" HOME="$(getent passwd "$u" | cut -d: -f6)" \
    USER="$u" LANG=C ASAN_OPTIONS="${ASAN_OPTIONS:-}" UBSAN_OPTIONS="${UBSAN_OPTIONS:-}" \
    TSAN_OPTIONS="${TSAN_OPTIONS:-}" "$@"
}

kill_user_processes() {
  local u=$1 p
  local pids
  pids=$(pgrep -u "$u" 2>/dev/null || true)
  [[ -z $pids ]] && return 0
  for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
  for p in $pids; do wait_until 10 "pid $p exits" proc_gone "$p" || kill -KILL "$p" 2>/dev/null || true; done
}

# pids_of EXE_PATH ARG: processes running EXE_PATH whose command line holds ARG
# (ARG is a unique temp path of this test, so only our own processes match).
pids_of() {
  local exe=$1 arg=$2 d p
  for d in /proc/[0-9]*; do
    p=${d#/proc/}
    [[ $(readlink "$d/exe" 2>/dev/null) == "$exe" ]] || continue
    grep -qxF -- "$arg" < <(tr '\0' '\n' <"$d/cmdline" 2>/dev/null) && echo "$p"
  done
  return 0
}

# ---- data helpers --------------------------------------------------------------------

# tree_manifest DIR: one line per entry: type, mode, size, sha256 (files) or
# target (symlinks), path; sorted. Two equal trees give equal manifests.
tree_manifest() {
  (cd "$1" && find . -path ./lost+found -prune -o -printf '%y\t%m\t%s\t%p\t%l\n' | LC_ALL=C sort -t $'\t' -k4 |
    while IFS=$'\t' read -r t m s p l; do
      case $t in
        f) printf 'f %s %s %s %s\n' "$m" "$s" "$(sha256sum <"$p" | cut -c1-64)" "$p" ;;
        l) printf 'l %s -> %s\n' "$p" "$l" ;;
        d) printf 'd %s %s\n' "$m" "$p" ;;
        *) printf '%s %s %s\n' "$t" "$m" "$p" ;;
      esac
    done)
}

# expect_tree DIR MANIFEST SEEN WHY: the tree under DIR must be the one
# recorded in MANIFEST (by tree_manifest); its own manifest goes to SEEN, and
# a difference fails the test with WHY.
expect_tree() {
  tree_manifest "$1" >"$3"
  diff -u "$2" "$3" >&2 || fail "$4"
}

# check_ext4_remounted STORE MNT VOL MANIFEST KDIR WHAT: mounts STORE on MNT
# again; the ext4 on volume VOL must pass e2fsck -fn and, mounted read-only
# on KDIR through a loop device, hold the tree recorded in MANIFEST (by
# tree_manifest). Unmounts it all again. WHAT names the case in failures.
check_ext4_remounted() {
  local store=$1 mnt=$2 vol=$3 manifest=$4 kdir=$5 what=$6
  start_daemon "$store" "$mnt"
  e2fsck -fn "$mnt/$vol" >"$manifest.fsck" 2>&1 || { cat "$manifest.fsck" >&2; fail "e2fsck -fn found problems ($what)"; }
  loop_mount_ro "$mnt/$vol" "$kdir"
  expect_tree "$kdir" "$manifest" "$manifest.after" "tree differs after remount ($what)"
  loop_umount "$kdir"
  stop_daemon "$mnt"
}

# make_tree DIR NFILES MAXKB SEED: a directory tree of files with random content.
make_tree() {
  "$PY" - "$@" <<'EOF'
import os, random, sys
root, n, maxkb, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
r = random.Random(seed)
os.makedirs(root, exist_ok=True)
dirs = [root]
for i in range(n):
    if r.random() < 0.15:
        d = os.path.join(r.choice(dirs), "dir%03d" % i)
        os.makedirs(d, exist_ok=True)
        dirs.append(d)
    d = r.choice(dirs)
    size = r.choice([0, 1, 511, 4096, 4097]) if r.random() < 0.2 else r.randint(1, maxkb * 1024)
    with open(os.path.join(d, "f%04d.bin" % i), "wb") as f:
        f.write(r.randbytes(size))
    if r.random() < 0.05:
        os.symlink("f%04d.bin" % i, os.path.join(d, "link%04d" % i))
EOF
}

# upper_data STORE VOL: path of the volume's upper data file.
upper_data() {
  "$PY" -c 'import json,sys; m=json.load(open(sys.argv[1]+"/volumes/"+sys.argv[2]+".json")); print(sys.argv[1]+"/layers/"+m["upper"]+".data")' "$1" "$2"
}

# lower_files STORE VOL: paths of the volume's lower layer files, bottom first.
lower_files() {
  "$PY" -c 'import json,sys; m=json.load(open(sys.argv[1]+"/volumes/"+sys.argv[2]+".json")); [print(sys.argv[1]+"/layers/"+l) for l in m["lowers"]]' "$1" "$2"
}

# alloc_kib FILE: space allocated to FILE, in KiB.
alloc_kib() { du -k "$1" | cut -f1; }

# layers_kib STORE: space allocated to STORE/layers, in KiB.
layers_kib() { du -sk "$1/layers" | cut -f1; }

# layers_of STORE NAME: the number of lower layers of volume (or snapshot) NAME.
layers_of() {
  "$OVBD" volume list --json "$1" |
    "$PY" -c 'import json,sys; print([v["layers"] for v in json.load(sys.stdin) if v["name"] == sys.argv[1]][0])' "$2"
}

# sha_direct FILE [READY GO]: sha256 of FILE's contents read with O_DIRECT, so
# the kernel's page cache cannot answer for the daemon (python's hashlib:
# several times faster than sha256sum here). With READY and GO: opens FILE,
# creates READY, and reads through that same descriptor once GO exists
# (within 60s): a reader that holds FILE open across what happens meanwhile.
sha_direct() {
  "$PY" -c '
import hashlib, mmap, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
if len(sys.argv) > 2:
    open(sys.argv[2], "w").close()
    deadline = time.monotonic() + 60
    while not os.path.exists(sys.argv[3]):
        if time.monotonic() > deadline:
            sys.exit("never told to read " + sys.argv[1])
        time.sleep(0.01)
buf = mmap.mmap(-1, 4 << 20)
h = hashlib.sha256()
while True:
    n = os.readv(fd, [buf])
    if n <= 0:
        break
    h.update(memoryview(buf)[:n])
print(h.hexdigest())
' "$@"
}

# assert_eq EXPECTED ACTUAL WHAT
assert_eq() {
  [[ $1 == "$2" ]] || fail "$3: expected '$1', got '$2'"
}

# errno_of PYTHON_STATEMENT: runs a python statement with os imported; prints
# "ok" or the errno name it raised (e.g. EACCES).
errno_of() { "$PY" -c "$_E2E_ERRNO_PY" "$1"; }
# errno_as USER PYTHON_STATEMENT: the same, run as USER.
errno_as() { as_user "$1" "$PY" -c "$_E2E_ERRNO_PY" "$2"; }
_E2E_ERRNO_PY='
import errno, os, sys
try:
    exec(sys.argv[1])
    print("ok")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
'

# control_result MNT: the first line a fresh handle on MNT/.control reads
# (the result of the last command).
control_result() {
  local t
  t=$(cat "$1/.control" 2>&1) || true
  echo "${t%%$'\n'*}"
}

corrupting() { [[ ${E2E_CORRUPT:-0} == 1 ]]; }

# flip_byte FILE OFFSET: inverts one byte in place (fault injection).
flip_byte() {
  "$PY" -c '
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
off = int(sys.argv[2])
b = os.pread(fd, 1, off)
os.pwrite(fd, bytes([b[0] ^ 0xFF]) if b else b"\xff", off)
os.fsync(fd)
os.close(fd)
' "$1" "$2"
  log "E2E_CORRUPT: flipped the byte at offset $2 of $1"
}
