#!/usr/bin/env bash
# Installs what the build and the tests need from Debian, if missing.
# Idempotent; needs root (or sudo). Used by scripts/train.sh, scripts/test.sh and CI.
set -euo pipefail
pkgs=(build-essential cmake pkg-config git
      libinih-dev libcjson-dev zlib1g-dev libpng-dev libopenblas-dev
      python3 python3-numpy python3-torch
      clang libclang-rt-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
