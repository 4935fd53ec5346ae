#!/usr/bin/env bash
# Installs what is needed, builds, and runs the demo (examples/demo.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
BUILD_DIR=build bash scripts/build.sh
OVBD=build/src/tool/ovbd OVBDFS=build/src/fuse/ovbdfs bash examples/demo.sh
