#!/usr/bin/env bash
# The main job: install what is missing, build, train configs/mnist_conv.ini.
# Data: --data DIR, else $VAE_DATA_DIR, else ./data (scripts/get-data.sh fetches it).
# Extra arguments go to `vae train` (e.g. --epochs 2 --device cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
exec ./build/vae train configs/mnist_conv.ini "$@"
