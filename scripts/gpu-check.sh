#!/usr/bin/env bash
# gpu-check.sh — the whole GPU check, prepared to run in one go on a lent
# GPU machine (the `device` tool), where nothing may be looked up by hand.
#
#   here:   scripts/gpu-check.sh prepare     # copies the probe and MNIST into .gpu/ (git-ignored)
#   there:  scripts/gpu-check.sh test        # build for sm_90, GPU tests, compute-sanitizer
#           scripts/gpu-check.sh bench       # kernels, training and decoding vs PyTorch
#           scripts/gpu-check.sh profile     # kernel durations under ncu, cuDNN's searches
#           scripts/gpu-check.sh verify      # after a change: tests, sanitizers, short benches
#   (the device's copy of .git may be stale: VAE_COMMIT=<hash> names the tree in the logs)
#   (device run: command "scripts/gpu-check.sh test", carry [".gpu"]; then "... bench"
#    on the same warm machine: the build in build-gpu/ is kept between calls)
#
# Everything it prints goes to $OUT/<stage>.txt too (the device tool returns
# $OUT), with the date, the GPU and the commands, ready for bench/results/.
# Each stage stops at its own time limit (STAGE_LIMIT seconds, default 540)
# so the call returns with what it has.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
STAGE=${1:-test}
OUT=${OUT:-$ROOT/.gpu/out}
mkdir -p "$OUT"
LOG="$OUT/$STAGE.txt"
LIMIT=${STAGE_LIMIT:-540}
START=$(date +%s)
left() { echo $((LIMIT - ($(date +%s) - START))); }
say() { echo "== $*" | tee -a "$LOG"; }
# run LABEL SECONDS CMD...: time-boxed, output into the log; each outcome is
# also kept for the summary at the end (exit 124 or 137: its time limit)
SUMMARY=()
run() {
  local label=$1 t=$2; shift 2
  local l; l=$(left)
  if [ "$l" -le 5 ]; then
    say "$label: skipped (stage time used up)"
    SUMMARY+=("skipped        $label")
    return 0
  fi
  [ "$t" -gt "$l" ] && t=$l
  say "$label (limit ${t}s): $*"
  local s; s=$(date +%s)
  timeout -k 5 "$t" "$@" >>"$LOG" 2>&1
  local rc=$?
  say "$label: exit $rc after $(( $(date +%s) - s )) s"
  SUMMARY+=("$(printf 'exit %-3s %4ss  %s' "$rc" "$(( $(date +%s) - s ))" "$label")")
  return $rc
}

# Debian packages the build needs that the GPU image lacks (it cannot fetch
# anything): downloaded here, unpacked there into .gpu/sysroot.
DEBS="libinih-dev libinih1 libinireader0 libcjson-dev libcjson1 libopenblas-dev libopenblas0
      libopenblas0-pthread libopenblas-pthread-dev libgfortran5 libquadmath0 libpng-dev libpng16-16
      zlib1g-dev zlib1g pkgconf pkgconf-bin libpkgconf3"

if [ "$STAGE" = prepare ]; then
  mkdir -p .gpu/data .gpu/debs
  cp ../shared/gpu/probe.sh .gpu/probe.sh
  cp -r ../shared/data/mnist .gpu/data/
  [ -d ../shared/data/cifar-10-batches-bin ] && cp -r ../shared/data/cifar-10-batches-bin .gpu/data/
  (cd .gpu/debs && apt-get download $DEBS)
  rm -rf .gpu/sysroot .gpu/env.sh .gpu/env-cmake.sh .gpu/cudalibs .gpu/cudnn build-gpu
  du -sh .gpu
  exit 0
fi

: >"$LOG"
say "gpu-check $STAGE, $(date -u '+%Y-%m-%d %H:%M UTC'), commit ${VAE_COMMIT:-$(git describe --always --dirty 2>/dev/null || echo unknown)}"
nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total,clocks.max.sm,clocks.max.mem \
  --format=csv 2>&1 | tee -a "$LOG"

# ---- toolchain: nvcc, cuDNN (the image may keep it in a Python package)
export PATH=/usr/local/cuda/bin:$PATH
if [ ! -f .gpu/env.sh ]; then
  [ -f .gpu/probe.sh ] && bash .gpu/probe.sh >>"$LOG" 2>&1
  # cuDNN: the toolkit's folders first, then anywhere under /usr and /opt (the
  # image's Python keeps it in site-packages/nvidia/cudnn)
  hdr=$(find /usr/local/cuda/include /usr/include /usr/local/cuda*/include -maxdepth 2 -name cudnn.h 2>/dev/null | head -1)
  [ -n "$hdr" ] || hdr=$(find /usr /opt -xdev -name cudnn.h 2>/dev/null | head -1)
  dnn_inc=$(dirname "$hdr")
  dnn_lib=""
  for d in "$(dirname "$dnn_inc")/lib" "$(dirname "$dnn_inc")/lib64" /usr/local/cuda/lib64 /usr/lib/x86_64-linux-gnu; do
    ls "$d"/libcudnn.so* >/dev/null 2>&1 && { dnn_lib=$d; break; }
  done
  [ -n "$dnn_lib" ] || dnn_lib=$(dirname "$(find /usr /opt -xdev -name 'libcudnn.so*' 2>/dev/null | head -1)")
  echo "cudnn.h in $dnn_inc, libcudnn in $dnn_lib" >>"$LOG"
  # CMake's find_library wants libcudnn.so: a folder of links with that name
  mkdir -p .gpu/cudnn/lib
  ln -sfn "$dnn_inc" .gpu/cudnn/include
  for f in "$dnn_lib"/libcudnn*.so*; do ln -sf "$f" .gpu/cudnn/lib/; done
  [ -e .gpu/cudnn/lib/libcudnn.so ] || ln -sf "$(ls "$dnn_lib"/libcudnn.so.* | head -1)" .gpu/cudnn/lib/libcudnn.so
  libdirs="$dnn_lib"
  # cuBLAS, cuRAND, nvrtc: the toolkit's own where it has them, else the
  # Python packages' (nvidia/cu13/lib or nvidia/<name>/lib)
  if ! ls /usr/local/cuda/lib64/libcublas.so* >/dev/null 2>&1; then
    mkdir -p .gpu/cudalibs
    for l in libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13 libnvJitLink.so.13 libcudart.so.13; do
      f=$(find /usr /opt -xdev -name "$l" 2>/dev/null | head -1)
      [ -n "$f" ] || continue
      ln -sf "$f" ".gpu/cudalibs/${l%%.so.*}.so"   # for find_library
      d=$(dirname "$f")
      case ":$libdirs:" in *":$d:"*) ;; *) libdirs="$libdirs:$d";; esac
    done
    echo "export CMAKE_LIBRARY_PATH=$ROOT/.gpu/cudalibs" >.gpu/env-cmake.sh
  else
    libdirs="$libdirs:/usr/local/cuda/lib64"
  fi
  {
    echo "export CUDNN_ROOT=$ROOT/.gpu/cudnn"
    echo "export LD_LIBRARY_PATH=$ROOT/.gpu/cudnn/lib:$libdirs:\${LD_LIBRARY_PATH:-}"
  } >.gpu/env.sh
  cat .gpu/env.sh >>"$LOG"
fi
. .gpu/env.sh
[ -f .gpu/env-cmake.sh ] && . .gpu/env-cmake.sh
say "CUDNN_ROOT=$CUDNN_ROOT"
export VAE_DATA_DIR=$ROOT/.gpu/data

# ---- the Debian libraries, unless the image has them
CMAKE_EXTRA=()
if ! pkg-config --exists inih libcjson 2>/dev/null && [ -d .gpu/debs ]; then
  SR=$ROOT/.gpu/sysroot
  if [ ! -d "$SR" ]; then
    for d in .gpu/debs/*.deb; do dpkg -x "$d" "$SR"; done
    # absolute links (libz.so -> /lib/...) must point into the sysroot
    find "$SR" -type l | while read -r l; do
      t=$(readlink "$l"); case "$t" in /*) ln -sfn "$SR$t" "$l";; esac
    done
  fi
  ML=$SR/usr/lib/x86_64-linux-gnu
  export PKG_CONFIG_SYSROOT_DIR=$SR
  export PKG_CONFIG_LIBDIR=$ML/pkgconfig:$SR/usr/share/pkgconfig
  export CMAKE_PREFIX_PATH=$SR/usr
  export CMAKE_LIBRARY_PATH=$ML/openblas-pthread:$ML:$SR/lib/x86_64-linux-gnu${CMAKE_LIBRARY_PATH:+:$CMAKE_LIBRARY_PATH}
  export CMAKE_INCLUDE_PATH=$SR/usr/include/x86_64-linux-gnu/openblas-pthread:$SR/usr/include
  # libopenblas's own dependencies (libgfortran, libquadmath) at run time,
  # alone in a folder so that nothing else of Debian's shadows the image's
  # libraries for Python; the libraries we link directly are found through
  # the build's RUNPATH
  mkdir -p "$SR/rt"
  ln -sf "$ML"/libgfortran.so.5 "$ML"/libquadmath.so.0 "$SR/rt/"
  export LD_LIBRARY_PATH=$SR/rt:${LD_LIBRARY_PATH:-}
  if ! command -v pkg-config >/dev/null; then
    CMAKE_EXTRA+=(-DPKG_CONFIG_EXECUTABLE="$SR/usr/bin/pkgconf")
  fi
  say "using the carried Debian libraries in $SR"
fi

# PyTorch brings its own cuDNN and refuses another on LD_LIBRARY_PATH: the
# Python benches run without ours, the engine through .gpu/vae-run (and the
# PNG sheet bench through .gpu/sheets-bench-run), which have it
vae_wrapper() {
  printf '#!/bin/sh\nexport LD_LIBRARY_PATH="%s"\nexec "%s" "$@"\n' "$LD_LIBRARY_PATH" \
    "$ROOT/build-gpu/vae" >.gpu/vae-run
  printf '#!/bin/sh\nexport LD_LIBRARY_PATH="%s"\nexec "%s" "$@"\n' "$LD_LIBRARY_PATH" \
    "$ROOT/build-gpu/bench/vae_sheets_bench" >.gpu/sheets-bench-run
  chmod +x .gpu/vae-run .gpu/sheets-bench-run
}

build_gpu() {
  run "configure" 90 cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
    "${CMAKE_EXTRA[@]}"
  grep -E "^(INIH|CJSON|PNG|ZLIB|BLAS|CBLAS|CUDNN)[A-Z_]*:" build-gpu/CMakeCache.txt >>"$LOG" 2>&1
  grep -E "CUDA backend" build-gpu/CMakeCache.txt >>"$LOG" 2>&1
  # what the GPU checks and benches need; the CPU tests and the CPU stand-ins
  # for the GPU (tests/emu, tests/mock) run in CI, not here
  run "build" 200 cmake --build build-gpu -j "$(nproc)" --target vae test_cuda_ops test_cuda_train test_capture_invalidated vae_kernel_bench \
    vae_sheets_bench
  grep -ciE "warning" "$LOG" | sed 's/^/warnings in the log so far: /' | tee -a "$LOG"
  ldd build-gpu/vae >>"$LOG" 2>&1
}

if [ "$STAGE" = profile ]; then
  # where a training step and a decode chunk spend their time: Nsight
  # Compute's duration of every kernel (one metric, clocks left alone), on a
  # 1024-image MNIST so that the whole run is profiled; and cuDNN's algorithm
  # searches as the engine sees them without the profiler
  [ -x build-gpu/vae ] || build_gpu
  NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
  mkdir -p /tmp/small/mnist
  python3 - <<'PY'
import gzip, os, struct
src = os.environ["VAE_DATA_DIR"] + "/mnist"
for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
    p = os.path.join(src, name)
    raw = gzip.open(p + ".gz").read() if os.path.exists(p + ".gz") else open(p, "rb").read()
    n = 1024 if name.startswith("train") else 256
    with open("/tmp/small/mnist/" + name, "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, 28, 28) + raw[16:16 + n * 784])
PY
  rm -rf /tmp/pv /tmp/pt /tmp/pa /tmp/pb # vae train refuses a folder holding a run
  run "cuDNN searches, training b128" 60 env VAE_CUDNN_VERBOSE=1 build-gpu/vae train configs/mnist_conv.ini \
    --epochs 1 --device cuda --no-progress --out /tmp/pv --data /tmp/small
  CK=$(ls -t /tmp/pv/ckpt-*.safetensors 2>/dev/null | head -1)
  for ch in 16384 65536; do
    run "cuDNN searches, decode chunk $ch" 60 env VAE_CUDNN_VERBOSE=1 build-gpu/vae sample "$CK" \
      --prior 65536 --chunk $ch --device cuda --no-npy --no-png --json --out /tmp/pv-s$ch
  done
  # the same with cuDNN's heuristic choice instead of timed searches
  run "training b128, 2 epochs, timed searches" 40 build-gpu/vae train configs/mnist_conv.ini --epochs 2 \
    --device cuda --no-progress --out /tmp/pa
  run "training b128, 2 epochs, heuristic algorithms" 40 env VAE_CUDNN_ALGO=heuristic build-gpu/vae train \
    configs/mnist_conv.ini --epochs 2 --device cuda --no-progress --out /tmp/pb
  grep -h images_per_s /tmp/pa/metrics.jsonl /tmp/pb/metrics.jsonl >>"$LOG" 2>&1
  for a in find heuristic; do
    run "decode 262144, chunk 16384, $a" 30 env VAE_CUDNN_ALGO=$a build-gpu/vae sample "$CK" --prior 262144 \
      --chunk 16384 --device cuda --no-npy --no-png --json --out /tmp/pd-$a
  done
  if [ -n "$NCU" ]; then
    run "ncu training b128" 100 env VAE_CUDA_GRAPH=0 "$NCU" --clock-control none --metrics gpu__time_duration.sum \
      --csv --log-file "$OUT/ncu-train.csv" build-gpu/vae train configs/mnist_conv.ini --epochs 1 \
      --device cuda --no-progress --out /tmp/pt --data /tmp/small
    for ch in 16384 65536; do
      run "ncu decode chunk $ch" 60 "$NCU" --clock-control none --metrics gpu__time_duration.sum --csv \
        --log-file "$OUT/ncu-decode-$ch.csv" build-gpu/vae sample "$CK" --prior 65536 --chunk $ch \
        --device cuda --no-npy --no-png --json --out /tmp/pt-s$ch
    done
  else
    say "ncu not found"
  fi
fi

if [ "$STAGE" = verify ]; then
  rm -rf /tmp/vv /tmp/vside0 /tmp/vside1 /tmp/vc128 /tmp/vc1024 # vae train refuses a folder holding a run
  # after a change: the GPU tests, the sanitizers on test_cuda_ops, the
  # algorithm choices, and the training bench (short)
  build_gpu
  run "test_cuda_ops" 60 build-gpu/tests/test_cuda_ops
  run "test_cuda_train" 60 build-gpu/tests/test_cuda_train
  run "test_capture_invalidated (the mock's model of the runtime)" 20 build-gpu/tests/test_capture_invalidated
  vae_wrapper
  run "the command line with --device cuda (tests/cli/test_cuda_mock.py)" 60 env LD_LIBRARY_PATH= \
    VAE_BIN=.gpu/vae-run "$(command -v python3)" tests/cli/test_cuda_mock.py
  CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
  run "memcheck test_cuda_ops" 60 "$CS" --tool memcheck --leak-check full --error-exitcode 9 build-gpu/tests/test_cuda_ops
  run "racecheck test_cuda_ops (kernels only)" 60 env VAE_TEST_KERNELS_ONLY=1 "$CS" --tool racecheck \
    --error-exitcode 9 build-gpu/tests/test_cuda_ops
  # the direct convolution kernels alone: TFLOPS per layer (the plans time
  # them against cuDNN; the choices are in the next run's output); the
  # launch latency of a chain of dependent launches, with and without PDL;
  # and the kernels that draw normals (float Box-Muller since 2026-11-28)
  # against the device-to-device copy
  [ -x build-gpu/bench/vae_kernel_bench ] && run "direct convolution kernels, launch chain, noise kernels" 40 \
    build-gpu/bench/vae_kernel_bench --quick \
    --only "copy,conv_direct,convt_direct,conv_wgrad,launch_chain,normal_fill,latent_fill prior,reparam_fwd,kl_bwd" \
    --md "$OUT/conv-kernels.md"
  run "algorithm choices, training b128" 30 env VAE_CUDNN_VERBOSE=1 build-gpu/vae train configs/mnist_conv.ini \
    --epochs 2 --device cuda --no-progress --out /tmp/vv
  grep -h images_per_s /tmp/vv/metrics.jsonl >>"$LOG" 2>&1
  # the weight gradients on the side stream (off by default until measured
  # here): its tests, then the same training with and without it
  run "test_cuda_train VAE_CUDA_SIDE=1" 60 env VAE_CUDA_SIDE=1 VAE_TEST_CASES=conv \
    build-gpu/tests/test_cuda_train
  for side in 0 1; do
    run "training b128, VAE_CUDA_SIDE=$side" 30 env VAE_CUDA_SIDE=$side build-gpu/vae train \
      configs/mnist_conv.ini --epochs 3 --device cuda --no-progress --out /tmp/vside$side
    grep -h images_per_s /tmp/vside$side/metrics.jsonl >>"$LOG" 2>&1
  done
  # programmatic dependent launch (off by default until measured here): its
  # tests, then training b128 with it, alone and with the side stream (the
  # runs without it are the two above)
  run "test_cuda_ops VAE_CUDA_PDL=1" 60 env VAE_CUDA_PDL=1 build-gpu/tests/test_cuda_ops
  run "test_cuda_train VAE_CUDA_PDL=1" 60 env VAE_CUDA_PDL=1 VAE_TEST_CASES=conv \
    build-gpu/tests/test_cuda_train
  for side in 0 1; do
    rm -rf /tmp/vpdl$side
    run "training b128, VAE_CUDA_PDL=1 VAE_CUDA_SIDE=$side" 30 env VAE_CUDA_PDL=1 VAE_CUDA_SIDE=$side \
      build-gpu/vae train configs/mnist_conv.ini --epochs 3 --device cuda --no-progress --out /tmp/vpdl$side
    grep -h images_per_s /tmp/vpdl$side/metrics.jsonl >>"$LOG" 2>&1
  done
  vae_wrapper
  run "training vs PyTorch" 80 env LD_LIBRARY_PATH= "$(command -v python3)" bench/gpu_train_bench.py \
    --vae .gpu/vae-run --device cuda --configs mnist_conv --batches 128,1024 --epochs 3 --steps 100 \
    --warmup 20 --repeats 3 --out "$OUT/train.md"
  # CIFAR-10 shaped random data (the throughput does not depend on pixel values)
  python3 -c "
import numpy as np, os
d = '/tmp/cifar/cifar-10-batches-bin'; os.makedirs(d, exist_ok=True); g = np.random.default_rng(1)
for name in ['data_batch_%d.bin' % i for i in range(1, 6)] + ['test_batch.bin']:
    r = g.integers(0, 256, (10000, 3073), dtype=np.uint8); r[:, 0] %= 10; r.tofile(os.path.join(d, name))
"
  for b in 128 1024; do
    run "cifar10_conv b$b, random data" 20 build-gpu/vae train configs/cifar10_conv.ini \
      --epochs 3 --batch $b --device cuda --no-progress --out /tmp/vc$b --data /tmp/cifar
    grep -h images_per_s /tmp/vc$b/metrics.jsonl >>"$LOG" 2>&1
  done
  CK=$(ls -t /tmp/vv/ckpt-*.safetensors 2>/dev/null | head -1)
  run "decode choices" 20 env VAE_CUDNN_VERBOSE=1 build-gpu/vae sample "$CK" --prior 65536 --chunk 16384 \
    --device cuda --no-npy --no-png --json --out /tmp/vd
  # decoding 2^20 prior samples to device memory without and with
  # programmatic dependent launch (the --json line has images_per_s)
  for pdl in 0 1; do
    run "decode 2^20, VAE_CUDA_PDL=$pdl" 30 env VAE_CUDA_PDL=$pdl build-gpu/vae sample "$CK" \
      --prior 1048576 --chunk 16384 --device cuda --no-npy --no-png --json --out /tmp/vd$pdl
  done
  # 2^20 images: the engine's one-time set-up (plans, algorithm timing,
  # ~0.13 s on the H200) was half of a 262,144-image run
  run "decoding vs PyTorch" 60 env LD_LIBRARY_PATH= "$(command -v python3)" bench/decode_bench.py \
    --vae .gpu/vae-run --device cuda --configs mnist_conv ${CK:+--ckpt mnist_conv=$CK} --n mnist_conv=1048576 \
    --batches 16384 --chunks 16384,65536 --repeats 2 --compile none --sheets-bench .gpu/sheets-bench-run \
    --out "$OUT/decode.md"
  # a 1024 x 1024 grid end to end with its .npy and PNG sheets (both writer
  # threads, one PNG encoder per core): what a user's --grid run gets
  run "grid 1024x1024 to .npy + PNG sheets" 60 build-gpu/vae sample "$CK" --grid 0,1 --steps 1024 \
    --device cuda --json --no-progress --out /tmp/vg
  du -sh /tmp/vg >>"$LOG" 2>&1
  rm -rf /tmp/vg
fi

if [ "$STAGE" = test ]; then
  build_gpu
  run "vae info" 30 build-gpu/vae info configs/mnist_conv.ini
  run "test_cuda_ops" 90 build-gpu/tests/test_cuda_ops
  run "test_capture_invalidated (the mock's model of the runtime)" 20 build-gpu/tests/test_capture_invalidated
  # the opt-in cuBLASLt ReLU mask + DRELU_BGRAD backward (off by default)
  run "test_cuda_ops VAE_LT_DRELU=1" 60 env VAE_LT_DRELU=1 build-gpu/tests/test_cuda_ops
  run "test_cuda_train" 120 build-gpu/tests/test_cuda_train
  run "test_cuda_train VAE_CUDA_SIDE=1" 90 env VAE_CUDA_SIDE=1 build-gpu/tests/test_cuda_train
  # programmatic dependent launch (opt-in): every op and the training steps again
  run "test_cuda_ops VAE_CUDA_PDL=1" 90 env VAE_CUDA_PDL=1 build-gpu/tests/test_cuda_ops
  run "test_cuda_train VAE_CUDA_PDL=1" 120 env VAE_CUDA_PDL=1 build-gpu/tests/test_cuda_train
  run "test_cuda_train VAE_CUDA_PDL=1 VAE_CUDA_SIDE=1" 90 env VAE_CUDA_PDL=1 VAE_CUDA_SIDE=1 \
    VAE_TEST_CASES=conv build-gpu/tests/test_cuda_train
  vae_wrapper
  run "the command line with --device cuda (tests/cli/test_cuda_mock.py)" 60 env LD_LIBRARY_PATH= \
    VAE_BIN=.gpu/vae-run "$(command -v python3)" tests/cli/test_cuda_mock.py
  # end to end on the GPU: two epochs, eval, sampling (its checkpoint feeds memcheck below)
  rm -rf /tmp/gpu-run /tmp/gpu-mc # vae train refuses a folder holding a run
  run "train mnist_conv 2 epochs" 60 build-gpu/vae train configs/mnist_conv.ini --epochs 2 --device cuda \
    --no-progress --out /tmp/gpu-run
  cat /tmp/gpu-run/metrics.jsonl >>"$LOG" 2>&1
  CK=$(ls -t /tmp/gpu-run/ckpt-*.safetensors 2>/dev/null | head -1)
  run "eval on cuda and on cpu" 40 bash -c "build-gpu/vae eval $CK --device cuda --json && build-gpu/vae eval $CK --device cpu --json"
  run "sample on cuda" 40 build-gpu/vae sample "$CK" --prior 1000000 --device cuda --no-npy --json --out /tmp/gpu-s
  CS=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
  if [ -n "$CS" ]; then
    run "memcheck test_cuda_ops" 120 "$CS" --tool memcheck --leak-check full --error-exitcode 9 build-gpu/tests/test_cuda_ops
    # racecheck looks at shared memory: our kernels' (cuBLAS's and cuDNN's are slow under it)
    run "racecheck test_cuda_ops (kernels only)" 150 env VAE_TEST_KERNELS_ONLY=1 "$CS" --tool racecheck \
      --error-exitcode 9 build-gpu/tests/test_cuda_ops
    run "memcheck vae sample" 60 "$CS" --tool memcheck --error-exitcode 9 build-gpu/vae sample \
      "$CK" --prior 3000 --device cuda --save-latents --png --out /tmp/gs
    run "memcheck vae train" 90 "$CS" --tool memcheck --error-exitcode 9 build-gpu/vae train \
      configs/mnist_mlp.ini --epochs 1 --device cuda --no-progress --out /tmp/gpu-mc
  else
    say "compute-sanitizer not found"
  fi
fi

if [ "$STAGE" = bench ]; then
  PY=$(command -v python3)
  vae_wrapper
  # sized to fit one device call: --quick sizes for the kernels, 3 engine
  # epochs and 3 PyTorch windows of 100 steps for training, 2^20 / 2^18
  # images for decoding (BENCH_FULL=1: each script's own defaults)
  if [ -n "${BENCH_FULL:-}" ]; then KQ=(); TQ=(); DQ=(); else
    KQ=(--quick)
    TQ=(--epochs 3 --steps 100 --warmup 20 --repeats 3 --time-limit 150 --compile-reserve 70)
    DQ=(--n mnist_conv=1048576,cifar10_conv=262144 --batches 4096,16384,65536 --compile none)
  fi
  [ -x build-gpu/bench/vae_kernel_bench ] && run "kernel bench" 60 build-gpu/bench/vae_kernel_bench "${KQ[@]}" --md "$OUT/kernels.md"
  run "training vs PyTorch" 190 env LD_LIBRARY_PATH= "$PY" bench/gpu_train_bench.py \
    --vae .gpu/vae-run --device cuda "${TQ[@]}" --out "$OUT/train.md"
  CK=$(ls -t /tmp/gpu-run/ckpt-*.safetensors 2>/dev/null | head -1)
  run "decoding vs PyTorch" 240 env LD_LIBRARY_PATH= "$PY" bench/decode_bench.py --vae .gpu/vae-run --device cuda \
    ${CK:+--ckpt mnist_conv=$CK} "${DQ[@]}" --sheets-bench .gpu/sheets-bench-run --out "$OUT/decode.md"
  run "grid 1024x1024 to .npy + PNG sheets" 60 build-gpu/vae sample "$CK" --grid 0,1 --steps 1024 \
    --device cuda --json --no-progress --out /tmp/vg
  rm -rf /tmp/vg
fi
if [ ${#SUMMARY[@]} -gt 0 ]; then
  say "summary of $STAGE (exit 0: passed; 124/137: hit its time limit)"
  printf '  %s\n' "${SUMMARY[@]}" | tee -a "$LOG"
fi
say "done in $(( $(date +%s) - START )) s"
