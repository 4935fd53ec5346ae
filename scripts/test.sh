#!/usr/bin/env bash
# Installs what is needed, builds, and runs every test:
#   1. the full suite (unit, golden, fuzz-corpus replay, end-to-end) on a
#      release build;
#   2. unit and stress tests under AddressSanitizer+UBSan, every end-to-end
#      test again against the ASan+UBSan binaries (a sanitizer report of any
#      daemon or tool fails the test; about 2 minutes), plus a bounded
#      libFuzzer run of every parser;
#   3. unit and stress tests under ThreadSanitizer.
# Options: --quick (only 1), FUZZ_SECONDS=N per fuzzer (default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1

bash scripts/setup.sh

echo "== release build and full test suite"
BUILD_DIR=build bash scripts/build.sh
ctest --test-dir build --output-on-failure --timeout 900 -j2

if [ "$QUICK" = 1 ]; then exit 0; fi

echo "== AddressSanitizer + UBSan build: unit, stress and end-to-end tests, fuzzers"
BUILD_DIR=build-asan bash scripts/build.sh -DCMAKE_CXX_COMPILER=clang++ \
  -DOVBD_SANITIZE=address,undefined -DOVBD_FUZZ=ON -DOVBD_BUILD_BENCH=OFF
OVBD_CRASH_ITERATIONS=40 ctest --test-dir build-asan --output-on-failure --timeout 900 -j2 -L 'unit|stress'
ctest --test-dir build-asan --output-on-failure --timeout 900 -j2 -L e2e
FUZZ_SECONDS=${FUZZ_SECONDS:-30} bash tests/fuzz/run_fuzzers.sh build-asan

echo "== ThreadSanitizer build: unit and stress tests"
BUILD_DIR=build-tsan bash scripts/build.sh -DCMAKE_CXX_COMPILER=clang++ \
  -DOVBD_SANITIZE=thread -DOVBD_BUILD_BENCH=OFF
OVBD_CRASH_ITERATIONS=20 TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
  ctest --test-dir build-tsan --output-on-failure --timeout 900 -j2 -L 'unit|stress'
