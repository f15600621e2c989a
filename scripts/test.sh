#!/usr/bin/env bash
# The test suite: install what is missing, build, run ctest; then rebuild the
# host code with AddressSanitizer + UBSan and run the suite again; then build
# the libFuzzer harnesses with clang (build-fuzz) and fuzz each parser briefly
# (ctest -L fuzz, VAE_FUZZ_TIME seconds each, default 15). Between the two, a
# ThreadSanitizer build runs the CUDA kernels in the emulator (tests/emu) and
# reports data races between the threads of a block, and the PNG sheets'
# encoder pool (test_sheets) and the CPU backend's thread pool (test_pool).
# MNIST is read from $VAE_DATA_DIR (tests that need it skip without it).
# VAE_SKIP_SANITIZE=1 skips the sanitizer pass, VAE_SKIP_TSAN=1 the race check,
# VAE_SKIP_FUZZ=1 the fuzz pass.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export CTEST_OUTPUT_ON_FAILURE=1
scripts/build.sh
(cd build && ctest -j "$(nproc)" --timeout 1500)
if [ "${VAE_SKIP_SANITIZE:-0}" != 1 ]; then
  echo "== AddressSanitizer + UndefinedBehaviorSanitizer build (host code, CPU backend)"
  BUILD_DIR=build-asan scripts/build.sh -DVAE_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
  # test_cuda_train_emu, _mock and _mock_side (minutes of emulated kernels)
  # run in the first pass only; test_cuda_ops_emu and _mock check every
  # kernel and the CUDA backend's host code here.
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
     ctest -j "$(nproc)" --timeout 1500 -E '^test_cuda_train_(emu|mock|mock_side)$')
fi
if [ "${VAE_SKIP_TSAN:-0}" != 1 ] && [ "$(uname -m)" = x86_64 ]; then
  echo "== ThreadSanitizer build: the CUDA kernels in the emulator, the PNG encoder pool and the CPU backend's thread pool, checked for data races"
  cmake -S . -B build-tsan -DVAE_TSAN=ON -DVAE_WITH_CUDA=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
  cmake --build build-tsan --target test_cuda_ops test_emu_selftest test_sheets test_pool -j "$(nproc)"
  (cd build-tsan && TSAN_OPTIONS=halt_on_error=1 ctest --timeout 1500 -R '^(test_cuda_ops_emu|test_emu_selftest|test_sheets|test_pool)$')
fi
if [ "${VAE_SKIP_FUZZ:-0}" != 1 ]; then
  if command -v clang >/dev/null 2>&1; then
    echo "== libFuzzer harnesses (clang, ASan + UBSan): short run of each parser"
    CC=clang cmake -S . -B build-fuzz -DVAE_FUZZ=ON -DVAE_WITH_CUDA=OFF -DCMAKE_BUILD_TYPE=Debug \
      -DVAE_FUZZ_TIME="${VAE_FUZZ_TIME:-15}" >/dev/null
    cmake --build build-fuzz --target vae_fuzzers -j "$(nproc)"
    (cd build-fuzz && ctest -j "$(nproc)" -L fuzz)
  else
    echo "== note: clang not found; skipping the libFuzzer stage (scripts/setup.sh installs clang)"
  fi
fi
