#!/usr/bin/env bash
# Installs every Debian 12 package ovbdfs needs to build, test and benchmark.
# Safe to run again: packages already present are not touched.
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake pkg-config clang libclang-rt-14-dev
  libfuse3-dev fuse3 liblz4-dev libzstd-dev libboost-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev nlohmann-json3-dev libcli11-dev libssl-dev libbenchmark-dev
  # tests and benchmarks
  fio e2fsprogs fuse2fs util-linux kmod xxd procps psmisc python3 jq
  qemu-utils qemu-system-common qemu-block-extra
  nginx-light docker-registry curl apache2-utils openssl python3-cryptography
  # packaging and man pages (cpack -G DEB, dpkg-shlibdeps, man -l)
  dpkg-dev groff-base man-db
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep "install ok installed" >/dev/null; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#PACKAGES[@]} packages present"
fi
