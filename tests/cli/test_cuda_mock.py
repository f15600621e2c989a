"""`vae ... --device cuda` on the mock device (tests/mock): the CUDA backend's
host code through the command line, end to end, without a GPU.

VAE_BIN is `vae_mock`: src/host/main.c linked with backend_cuda.c on the
mock CUDA runtime and libraries, our kernels in the CPU emulator (ctest's
cli_cuda_mock). On a GPU machine the same script runs the real `vae`
(scripts/gpu-check.sh), where the three asynchrony modes are simply three
runs that must agree. Every run
uses VAE_CUDNN_ALGO=heuristic, so that each process makes the same algorithm
choices (timed choices could differ from process to process and so change
the bits). Checks:
  - `vae info` reports the device and the training arena;
  - training (train.c: graphs, checkpoints read back from the device) gives
    the same bits with the mock's streams eager, lazy and in a random order
    (VAE_MOCK_ASYNC): a missing wait on a path that feeds the results would
    make one of them read a stale value. (The polled read-back of the
    step's sums only feeds the progress bar and the first notice of a bad
    step, which a synchronous read confirms, so a stale poll does not show
    here; test_cuda_ops checks download_async itself.);
  - the same run on the CPU backend: test nelbo within 1e-4 relative per
    epoch (float32 both, same math, different summation orders: the
    measured gap is ~1e-7; 1e-4 leaves room for 16 Adam steps of drift);
  - a run stopped after epoch 1 and resumed (on another asynchrony mode)
    equals the straight run, bit for bit;
  - a NaN injected at step 5 (VAE_FAULT_NAN_AT_STEP) halts the run with the
    state after step 4 in every mode, and that run resumed equals the
    straight run; with --max-bad-steps 1 and the progress bar's frequent
    reads of the device's bookkeeping, the step is reported as skipped and
    every mode gives the same bits;
  - eval on the device equals eval on the CPU within 1e-5 relative;
  - sample --prior / --grid (with .npy, latents and PNG sheets) and the
    four grids: the same bytes eager, lazy and at random; the prior images
    within 1 level of the CPU's (issue: "at most 1 level apart for fp32").
"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import SMALL_CONV, SRC, Checks, mnist_subset, read_safetensors, run, skip, tmpdir

try:
    import numpy as np
except ImportError:
    skip("numpy not found (Debian: python3-numpy)")

CONV = SMALL_CONV.replace("keep = 1", "keep = 0")  # every checkpoint kept

MODES = ["0", "lazy", "random:3"]

c = Checks()
base = tmpdir()
mnist_subset(base, 400, 100)
cfg = os.path.join(base, "conv.ini")
open(cfg, "w").write(CONV)
common = ["--data", base, "--no-progress"]


def env(mode):
    return {"VAE_MOCK_ASYNC": mode, "VAE_CUDNN_ALGO": "heuristic"}


def tensors(d):
    ck = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))[-1]
    return read_safetensors(os.path.join(d, ck))[1], os.path.join(d, ck)


def metrics(d):
    return [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl"))]


# ---------------------------------------------------------------- info
MOCK = os.path.basename(os.environ.get("VAE_BIN", "")) == "vae_mock"
p = run(["info", os.path.join(SRC, "configs", "mnist_conv.ini")])
c.check(("mock device" in p.stdout or not MOCK) and "cuda: device 0:" in p.stdout and
        "device arena for training" in p.stdout,
        f"vae info names the device and the arena: {p.stdout[-300:]!r}")

# ---------------------------------------------------------------- training
runs = {}
for m in MODES:
    d = os.path.join(base, "train_" + m.replace(":", "_"))
    p = run(["train", cfg, "--out", d, "--device", "cuda"] + common, env=env(m))
    c.check("cuda graph" in p.stderr, f"[{m}] the step runs as a graph: {p.stderr[-300:]!r}")
    runs[m] = d
t0, ck = tensors(runs["0"])
for m in MODES[1:]:
    tm, _ = tensors(runs[m])
    same = [k for k in t0 if tm.get(k) == t0[k]]
    c.check(len(same) == len(t0) == len(tm),
            f"[{m}] training gives the eager mock's bits ({len(same)} of {len(t0)} tensors equal)")
    c.check([e["test_nelbo"] for e in metrics(runs[m])] == [e["test_nelbo"] for e in metrics(runs["0"])],
            f"[{m}] the same test nelbo per epoch")
# cuDNN's workspace: the mock's searches list first an algorithm that needs
# VAE_MOCK_CUDNN_WS MiB (mock_cudnn.c). `vae train` reserves its arena with
# up to 256 MiB to spare for cuDNN: one workspace, or with the weight
# gradients on the side stream (VAE_CUDA_SIDE=1) two halves, one per stream,
# from the first plan on (a forward's, made before the first side segment:
# a 200 MiB pick there once left no room for the second half). Every pick
# must be the big algorithm where it fits and the small one where it does
# not, and the run the eager run's bits (the mock's algorithms agree). On a
# GPU (no such algorithm there) the side stream's run alone, which may pick
# other algorithms within its half: the eager run's test nelbo within 1e-5.
if not MOCK:
    d = os.path.join(base, "side")
    run(["train", cfg, "--out", d, "--device", "cuda"] + common, env=dict(env("0"), VAE_CUDA_SIDE="1"))
    for a, b in zip(metrics(d), metrics(runs["0"])):
        r = abs(a["test_nelbo"] - b["test_nelbo"]) / abs(b["test_nelbo"])
        c.check(r < 1e-5, f"side stream, epoch {a['epoch']}: test nelbo within 1e-5 ({r:.2e})")
for side, mib, fits in (("0", 200, True), ("1", 100, True), ("1", 200, False)) if MOCK else ():
    d = os.path.join(base, f"ws_{side}_{mib}")
    p = run(["train", cfg, "--out", d, "--device", "cuda"] + common,
            env=dict(env("random:3"), VAE_CUDA_SIDE=side, VAE_MOCK_CUDNN_WS=str(mib),
                     VAE_CUDNN_VERBOSE="1"))
    picks = [l for l in p.stderr.splitlines() if l.startswith("vae: cuDNN ") and "*" in l]
    big = [l for l in picks if re.search(r"\*\d+\(0\.250 ms, %d\.0 MiB" % mib, l)]
    c.check(len(picks) >= 3 and len(big) == (len(picks) if fits else 0),
            f"side {side}, {mib} MiB: {len(big)} of {len(picks)} cuDNN picks the big algorithm "
            f"(want {'all' if fits else 'none'}): {picks[:2]!r}")
    c.check(tensors(d)[0] == t0, f"side {side}, {mib} MiB: the eager run's bits")

# programmatic dependent launch (VAE_CUDA_PDL=1, src/kernels/common.cuh): the
# same kernels in the same order, each allowed to start while the one before
# it finishes and made to wait for it at its first instruction, so the same
# bits. On the mock (compute capability 9.0) the flag is set and the launch
# path changes nothing else; on a GPU of compute capability 9.0 or later this
# is the check that no kernel reads what its predecessor is still writing
# (one that did would show, sometimes, as different bits). A value other
# than 0 or 1 is refused.
d = os.path.join(base, "pdl")
p = run(["train", cfg, "--out", d, "--device", "cuda"] + common,
        env=dict(env("random:7" if MOCK else "0"), VAE_CUDA_PDL="1"))
pdl_said = "programmatic dependent launch of the engine" in p.stderr or (
    not MOCK and "VAE_CUDA_PDL=1 ignored" in p.stderr)  # a GPU before compute capability 9.0
c.check(tensors(d)[0] == t0 and pdl_said,
        f"VAE_CUDA_PDL=1: the eager run's bits {p.stderr[-200:]!r}")
p = run(["train", cfg, "--out", os.path.join(base, "pdl_bad"), "--device", "cuda"] + common,
        check=False, env=dict(env("0"), VAE_CUDA_PDL="yes"))
c.check(p.returncode != 0 and 'VAE_CUDA_PDL="yes": expected 1' in p.stderr,
        f"VAE_CUDA_PDL=yes refused ({p.returncode}): {p.stderr[-200:]!r}")

meta = read_safetensors(ck)[0]
c.check(meta.get("step") == "16", f"2 epochs of 8 steps: step {meta.get('step')}")
c.check(json.load(open(os.path.join(runs["0"], "run.json")))["device"] == "cuda", "run.json: device cuda")

cpu = os.path.join(base, "train_cpu")
run(["train", cfg, "--out", cpu, "--device", "cpu", "--threads", "1"] + common)
for a, b in zip(metrics(cpu), metrics(runs["0"])):
    r = abs(a["test_nelbo"] - b["test_nelbo"]) / abs(a["test_nelbo"])
    print(f"epoch {a['epoch']}: test nelbo cpu {a['test_nelbo']:.6f}, cuda (mock) {b['test_nelbo']:.6f}, "
          f"rel diff {r:.2e}")
    c.check(r < 1e-4, f"epoch {a['epoch']}: CPU and CUDA test nelbo within 1e-4 ({r:.2e})")

# stopped after epoch 1, resumed to 2 on another mode: the straight run's bits
d = os.path.join(base, "resumed")
run(["train", cfg, "--out", d, "--device", "cuda", "--epochs", "1"] + common, env=env("random:5"))
run(["train", "--resume", d, "--epochs", "2", "--data", base, "--no-progress"], env=env("lazy"))
tr, _ = tensors(d)
c.check(tr == t0, "a run resumed after epoch 1 equals the straight run, bit for bit")

# a NaN at step 5 (VAE_FAULT_NAN_AT_STEP): the device's step bookkeeping read
# back, the halt with a checkpoint of the state after step 4, in every mode;
# resumed without the fault it is the straight run
halted = {}
for m in MODES:
    d = os.path.join(base, "nan_" + m.replace(":", "_"))
    p = run(["train", cfg, "--out", d, "--device", "cuda"] + common, check=False,
            env=dict(env(m), VAE_FAULT_NAN_AT_STEP="5"))
    t, k = tensors(d)
    c.check(p.returncode != 0 and "step 5" in p.stderr and "last good state" in p.stderr and
            read_safetensors(k)[0]["step"] == "4",
            f"[{m}] NaN at step 5: stopped with the state after step 4: {p.stderr.strip()[-200:]!r}")
    halted[m] = (d, t)
for m in MODES[1:]:
    c.check(halted[m][1] == halted["0"][1], f"[{m}] the halted run's checkpoint is the eager mock's")
d = halted["random:3"][0]
run(["train", "--resume", d, "--epochs", "2", "--data", base, "--no-progress"], env=env("lazy"))
c.check(tensors(d)[0] == t0, "halted at step 5 and resumed: the straight run, bit for bit")
# skipped instead (--max-bad-steps 1), with the progress bar's frequent reads
skipped = {}
for m in MODES:
    d = os.path.join(base, "skip_" + m.replace(":", "_"))
    p = run(["train", cfg, "--out", d, "--device", "cuda", "--max-bad-steps", "1", "--progress",
             "--data", base], env=dict(env(m), VAE_FAULT_NAN_AT_STEP="5"))
    c.check("step 5:" in p.stderr and "step skipped (1 of 1 allowed)" in p.stderr,
            f"[{m}] the skipped step is reported: {p.stderr.strip()[-200:]!r}")
    skipped[m] = tensors(d)[0]
    c.check(metrics(d)[-1]["skipped_steps"] == 1, f"[{m}] metrics: 1 skipped step")
c.check(skipped["0"] != t0, "the skipped step changed the run")
for m in MODES[1:]:
    c.check(skipped[m] == skipped["0"], f"[{m}] with a skipped step: the eager mock's bits")

# ---------------------------------------------------------------- eval
ev = {}
for dev, m in (("cpu", "0"), ("cuda", "lazy"), ("cuda", "random:3")):
    ev[dev + m] = json.loads(run(["eval", ck, "--json", "--device", dev, "--data", base],
                                 env=env(m)).stdout)
g = ev["cudalazy"]["test_nelbo"]
r = abs(g - ev["cpu0"]["test_nelbo"]) / abs(ev["cpu0"]["test_nelbo"])
c.check(r < 1e-5, f"eval on the device within 1e-5 of the CPU's ({r:.2e})")
c.check(ev["cudarandom:3"]["test_nelbo"] == g, "eval: the same figure lazy and at random")

# ---------------------------------------------------------------- sample
def sample(mode, dev, out, *args):
    run(["sample", ck, "--out", out, "--device", dev] + common + list(args), env=env(mode))
    return out


def files(d):
    return {f: open(os.path.join(d, f), "rb").read() for f in sorted(os.listdir(d))}


prior_args = ["--prior", "700", "--chunk", "256", "--save-latents", "--png", "--seed", "9"]
grid_args = ["--grid", "0,1", "--steps", "15", "--chunk", "64", "--sheet-px", "200", "--save-latents"]
outs = {}
for m in MODES:
    tag = m.replace(":", "_")
    outs[m] = (files(sample(m, "cuda", os.path.join(base, "prior_" + tag), *prior_args)),
               files(sample(m, "cuda", os.path.join(base, "grid_" + tag), *grid_args)),
               files(sample(m, "cuda", os.path.join(base, "grids_" + tag))))
pf, gf, four = outs["0"]
c.check("prior.npy" in pf and "prior-latents.npy" in pf and any(f.endswith(".png") for f in pf),
        f"--prior wrote its .npy, latents and sheets: {list(pf)}")
c.check(len([f for f in gf if f.endswith(".png")]) > 1, f"--grid wrote several sheets: {list(gf)}")
c.check(sorted(four) == ["interpolation.png", "reconstructions.png", "samples.png", "traversal.png"],
        f"the four grids: {list(four)}")
for m in MODES[1:]:
    for name, a, b in zip(("prior", "grid", "grids"), outs["0"], outs[m]):
        diff = [f for f in a if a[f] != b.get(f)]
        c.check(not diff and a.keys() == b.keys(), f"[{m}] {name}: the eager mock's files, byte for byte "
                                                    f"(differ: {diff})")
cpu_prior = files(sample("0", "cpu", os.path.join(base, "prior_cpu"), *prior_args, "--threads", "1"))
a = np.load(os.path.join(base, "prior_0", "prior.npy")).astype(int)
b = np.load(os.path.join(base, "prior_cpu", "prior.npy")).astype(int)
worst = int(np.abs(a - b).max())
print(f"--prior 700: CUDA (mock) vs CPU: max {worst} level(s), {int((a != b).sum())} of {a.size} pixels differ")
c.check(a.shape == (700, 1, 28, 28) and worst <= 1, f"CUDA and CPU images within 1 level ({worst})")
c.check(cpu_prior["prior-latents.npy"] == pf["prior-latents.npy"], "the same latents on both backends")
# in bf16 the decoder's input is rounded on the device after the latents'
# copy to the host is issued: the saved latents must be the fp32 ones
for m in MODES:
    d = sample(m, "cuda", os.path.join(base, "bf16_" + m.replace(":", "_")), "--prior", "300", "--chunk",
               "128", "--save-latents", "--no-npy", "--seed", "9", "--precision", "bf16")
    lat = np.load(os.path.join(d, "prior-latents.npy"))
    ref = np.load(os.path.join(base, "prior_0", "prior-latents.npy"))[:300]
    c.check(np.array_equal(lat, ref), f"[{m}] --precision bf16: the latents saved are the fp32 draws")
c.finish()
