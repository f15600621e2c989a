#!/usr/bin/env bash
# The test suite: install what is missing, build, run ctest; then rebuild the
# host code with AddressSanitizer + UBSan and run the suite again.
# MNIST is read from $VAE_DATA_DIR (tests that need it skip without it).
# VAE_SKIP_SANITIZE=1 skips the sanitizer pass.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CTEST_OUTPUT_ON_FAILURE=1
scripts/build.sh
(cd build && ctest -j "$(nproc)" --timeout 1500)
if [ "${VAE_SKIP_SANITIZE:-0}" != 1 ]; then
  echo "== AddressSanitizer + UndefinedBehaviorSanitizer build (host code, CPU backend)"
  BUILD_DIR=build-asan scripts/build.sh -DVAE_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     VAE_TEST_QUICK=1 ctest -j "$(nproc)" --timeout 1500 -LE slow)
fi
