#!/usr/bin/env bash
# Runs every libFuzzer target of a -DOVBD_FUZZ=ON build for FUZZ_SECONDS each,
# starting from its seed corpus. New crashers are written to
# tests/fuzz/crashers/TARGET/ (keep them there: the corpus replay test
# re-runs them in every build) and fail the run.
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${1:-build-asan}
SECS=${FUZZ_SECONDS:-30}
status=0
for bin in "$BUILD"/tests/fuzz/fuzz_*; do
  [ -x "$bin" ] || continue
  t=$(basename "$bin")
  work=$(mktemp -d)
  mkdir -p "tests/fuzz/crashers/$t"
  cp -r "tests/fuzz/corpus/$t/." "$work/" 2>/dev/null || true
  # The kept crashers first, under this build's sanitizers (the replay test of
  # the normal build runs them without): each must now pass.
  if ! "$bin" -runs=0 -artifact_prefix="$work/" "tests/fuzz/crashers/$t" >"$work.replay.log" 2>&1; then
    echo "fuzz: $t: a kept crasher fails again:"; tail -30 "$work.replay.log"; status=1
  fi
  rm -f "$work.replay.log"
  echo "fuzz: $t for ${SECS}s"
  if ! "$bin" -max_total_time="$SECS" -rss_limit_mb=2048 -malloc_limit_mb=1024 \
        -artifact_prefix="tests/fuzz/crashers/$t/" -print_final_stats=1 "$work" \
        2>"$work.log"; then
    echo "fuzz: $t FOUND A CRASH:"; tail -50 "$work.log"; status=1
  else
    grep -E "stat::number_of_executed_units|stat::peak_rss_mb" "$work.log" | sed "s/^/fuzz: $t /"
  fi
  rm -rf "$work" "$work.log"
done
exit $status
