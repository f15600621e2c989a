"""Failures a user meets, each asserting the message and that nothing on disk
was lost or corrupted: NaN in the loss (stop with the last good state, or
skip up to a limit, then stop; the bookkeeping is on the device and read a
few times per epoch, so these also check that what the host reports and
saves afterwards is exact), an unwritable output directory, a full disk while
writing checkpoints and samples, a corrupted checkpoint, a truncated dataset,
too little host memory, a broken config."""
import gzip
import os
import resource
import shutil
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import (SMALL_MLP, VAE, Checks, mnist_file, mnist_subset, read_safetensors, run,
                    tmpdir)

c = Checks()
base = tmpdir()
mnist_subset(base, 1000, 200)
cfg = os.path.join(base, "small.ini")
open(cfg, "w").write(SMALL_MLP)
common = ["--data", base, "--no-progress", "--device", "cpu", "--threads", "1"]


def ckpts(d):
    return sorted(f for f in os.listdir(d) if f.startswith("ckpt-") and f.endswith(".safetensors"))


def temps(d):
    return [f for f in os.listdir(d) if ".tmp." in f]


def finite_params(path):
    import numpy as np
    _, t = read_safetensors(path)
    return all(np.isfinite(np.frombuffer(b, np.float32)).all() for _, _, b in t.values())


# --- NaN in the loss: stop at the first, with a checkpoint of the last good state
d = os.path.join(base, "nan_stop")
p = run(["train", cfg, "--out", d] + common, check=False, env={"VAE_FAULT_NAN_AT_STEP": "5"})
c.check(p.returncode != 0, "NaN stops the run with a non-zero exit")
c.check("step 5" in p.stderr and "reconstruction" in p.stderr and "last good state" in p.stderr,
        f"message names the step and the tensor: {p.stderr.strip()[-300:]}")
c.check("--max-bad-steps" in p.stderr, "message says how to skip instead")
cks = ckpts(d)
c.check(len(cks) == 1 and read_safetensors(os.path.join(d, cks[0]))[0]["step"] == "4",
        "checkpoint of the state after step 4")
c.check(finite_params(os.path.join(d, cks[0])), "saved parameters are finite")
# resuming from it without the fault continues normally, and exactly: the
# saved state is the one before step 5 (parameters, moments and the epoch's
# loss sums), so the result equals a clean run's bit for bit
import json
run(["train", cfg, "--resume", d, "--out", d, "--epochs", "1"] + common)
clean = os.path.join(base, "clean")
run(["train", cfg, "--out", clean, "--epochs", "1"] + common)


def last_ckpt(d):
    return read_safetensors(os.path.join(d, ckpts(d)[-1]))


def last_metrics(d):
    return json.loads(open(os.path.join(d, "metrics.jsonl")).read().splitlines()[-1])


(mr, tr), (mc, tc) = last_ckpt(d), last_ckpt(clean)
c.check(mr["step"] == mc["step"] == "20" and tr.keys() == tc.keys() and
        all(tr[k][2] == tc[k][2] for k in tr),
        "halt at step 5 + resume == a clean run, bit for bit")
c.check(last_metrics(d)["train_nelbo"] == last_metrics(clean)["train_nelbo"],
        "halt + resume: the epoch's training loss equals the clean run's")

# --- NaN skipped when allowed (reported when the host next reads the device's
# bookkeeping: here at the end of the epoch)
d = os.path.join(base, "nan_skip")
p = run(["train", cfg, "--out", d, "--epochs", "1", "--max-bad-steps", "1"] + common,
        env={"VAE_FAULT_NAN_AT_STEP": "5"})
c.check("step 5: non-finite value in the loss (reconstruction" in p.stderr and
        "step skipped (1 of 1 allowed)" in p.stderr, f"skip message: {p.stderr.strip()[-300:]}")
m = last_metrics(d)
c.check(m["skipped_steps"] == 1 and m["train_nelbo"] == m["train_nelbo"], "metrics: 1 skipped, finite loss")
c.check(m["train_nelbo"] != last_metrics(clean)["train_nelbo"], "the skipped step changed the run")
# the same with the progress bar (it reads the device ~5 times per second)
p = run(["train", cfg, "--out", os.path.join(base, "nan_skip_bar"), "--epochs", "1",
         "--max-bad-steps", "1", "--progress"] + [a for a in common if a != "--no-progress"],
        env={"VAE_FAULT_NAN_AT_STEP": "5"})
c.check("step 5:" in p.stderr and "step skipped (1 of 1 allowed)" in p.stderr, "skip message with --progress")
c.check(last_metrics(os.path.join(base, "nan_skip_bar"))["train_nelbo"] == m["train_nelbo"],
        "--progress does not change the run")

# several bad steps between two reads: counted, summarised, not added
d = os.path.join(base, "nan_skip3")
p = run(["train", cfg, "--out", d, "--epochs", "1", "--max-bad-steps", "3"] + common,
        env={"VAE_FAULT_NAN_AT_STEP": "3,4,5"})
c.check("3 steps with non-finite values skipped, the last at step 5 (3 of 3 allowed)" in p.stderr,
        f"summary of several skipped steps: {p.stderr.strip()[-300:]}")
m = last_metrics(d)
c.check(m["skipped_steps"] == 3 and m["train_nelbo"] == m["train_nelbo"], "metrics: 3 skipped, finite loss")

# --- skips used up: the next bad step stops the run with the last good state
d = os.path.join(base, "nan_skip_stop")
p = run(["train", cfg, "--out", d, "--max-bad-steps", "1"] + common, check=False,
        env={"VAE_FAULT_NAN_AT_STEP": "5,29"})
c.check(p.returncode != 0, "a bad step beyond --max-bad-steps stops the run")
c.check("step 5:" in p.stderr and "step skipped (1 of 1 allowed)" in p.stderr,
        "the skipped step was reported in its epoch")
c.check("step 29 (epoch 2)" in p.stderr and "reconstruction" in p.stderr and
        "last good state" in p.stderr and "--max-bad-steps N" not in p.stderr,
        f"stop message names the step and the tensor: {p.stderr.strip()[-300:]}")
c.check("non-finite values skipped" not in p.stderr,
        f"the halting step is not counted as skipped too: {p.stderr.strip()[-300:]}")
cks = ckpts(d)
c.check([read_safetensors(os.path.join(d, k))[0]["step"] for k in cks] == ["20", "28"],
        f"checkpoints after epoch 1 and of the state after step 28: {cks}")
c.check(finite_params(os.path.join(d, cks[-1])), "saved parameters are finite")
# resumed without the fault it equals a run that only had the skip at step 5:
# the checkpoint is exactly the state after step 28 (parameters, moments, the
# epoch's loss sums), nothing of the steps issued after 29 leaked into it
run(["train", cfg, "--resume", d, "--out", d] + common)
ref = os.path.join(base, "nan_skip_ref")
run(["train", cfg, "--out", ref, "--max-bad-steps", "1"] + common, env={"VAE_FAULT_NAN_AT_STEP": "5"})
(mr, tr), (mf, tf) = last_ckpt(d), last_ckpt(ref)
c.check(mr["step"] == mf["step"] == "60" and all(tr[k][2] == tf[k][2] for k in tr),
        "stop at step 29 + resume == the run with only the skip, bit for bit")
nelbo = lambda d: [json.loads(l)["train_nelbo"] for l in open(os.path.join(d, "metrics.jsonl"))]
c.check(nelbo(d) == nelbo(ref), f"... and the same training losses per epoch: {nelbo(d)} {nelbo(ref)}")

# two bad steps in a row with one allowed: the first skipped and named, the
# second stops the run with the state after the first
d = os.path.join(base, "nan_skip_34")
p = run(["train", cfg, "--out", d, "--max-bad-steps", "1"] + common, check=False,
        env={"VAE_FAULT_NAN_AT_STEP": "3,4"})
c.check("step 3: non-finite value" in p.stderr and "step skipped (1 of 1 allowed)" in p.stderr and
        "step 4 (epoch 1):" in p.stderr and ckpts(d) == ["ckpt-s0000000003-e0000.safetensors"],
        f"NaN at steps 3 and 4, one allowed: {p.stderr.strip()[-300:]} {ckpts(d)}")
# a bad last step of an epoch: named in that epoch, the checkpoint is the
# state after the step before it, still in epoch 0 (none completed)
d = os.path.join(base, "nan_20")
p = run(["train", cfg, "--out", d] + common, check=False, env={"VAE_FAULT_NAN_AT_STEP": "20"})
c.check("step 20 (epoch 1):" in p.stderr and ckpts(d) == ["ckpt-s0000000019-e0000.safetensors"],
        f"NaN at step 20, the last of epoch 1: {p.stderr.strip()[-300:]} {ckpts(d)}")

# --- unwritable output directory
f = os.path.join(base, "a_file")
open(f, "w").write("x")
p = run(["train", cfg, "--out", os.path.join(f, "run")] + common, check=False)
c.check(p.returncode != 0 and "a_file" in p.stderr and "Not a directory" in p.stderr,
        f"unwritable --out: {p.stderr.strip()[-200:]}")

# --- corrupted checkpoint: detected on load; --resume DIR falls back to an older valid one
d = os.path.join(base, "corrupt")
run(["train", cfg, "--out", d, "--epochs", "2"] + common)
cks = ckpts(d)
newest = os.path.join(d, cks[-1])
raw = bytearray(open(newest, "rb").read())
raw[-100] ^= 0x40
open(newest, "wb").write(raw)
p = run(["eval", newest, "--data", base], check=False)
c.check(p.returncode != 0 and "checksum mismatch" in p.stderr and cks[-1] in p.stderr,
        f"corrupted checkpoint detected: {p.stderr.strip()[-200:]}")
p = run(["train", cfg, "--resume", d, "--out", d, "--epochs", "2"] + common)
c.check("skipping" in p.stderr and cks[0] in p.stderr.split("resuming from")[-1].split("\n")[0],
        "--resume DIR skips the damaged checkpoint and takes the older one")
ep = [json.loads(l)["epoch"] for l in open(os.path.join(d, "metrics.jsonl"))]
c.check(ep == [1, 2], f"metrics.jsonl after the fallback: epochs {ep} (the lost epoch's line replaced)")

# --- truncated dataset file
dd = os.path.join(base, "trunc")
os.makedirs(os.path.join(dd, "mnist"))
for n in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte"):
    shutil.copy(mnist_file(n), os.path.join(dd, "mnist", os.path.basename(mnist_file(n))))
tr = os.path.join(dd, "mnist", os.path.basename(mnist_file("train-images-idx3-ubyte")))
data = open(tr, "rb").read()
open(tr, "wb").write(data[: len(data) // 2])
p = run(["train", os.path.join(os.environ.get("VAE_SOURCE_DIR", "."), "configs", "mnist_mlp.ini"),
         "--data", dd, "--out", os.path.join(base, "t"), "--no-progress"], check=False)
c.check(p.returncode != 0 and "train-images-idx3-ubyte" in p.stderr and "gzip" in p.stderr,
        f"truncated download named: {p.stderr.strip()[-200:]}")

# --- broken config
bad = os.path.join(base, "bad.ini")
open(bad, "w").write(SMALL_MLP.replace("latent = 8", "latent = 8\nlatnet = 3"))
p = run(["train", bad] + common, check=False)
c.check(p.returncode != 0 and "bad.ini:" in p.stderr and "latnet" in p.stderr, f"config error: {p.stderr.strip()}")

# --- too little host memory: a clear message, no crash
def limit_as():
    resource.setrlimit(resource.RLIMIT_DATA, (300 << 20, 300 << 20))


# (skipped under AddressSanitizer: its shadow memory cannot live under an
# address-space limit)
# OPENBLAS_NUM_THREADS=1: OpenBLAS's own worker threads retry a failed buffer
# allocation forever, which would hang the process at exit under this limit.
if "ASAN_OPTIONS" in os.environ:
    print("note: sanitizer build; host out-of-memory check skipped")
else:
    p = subprocess.run([VAE, "train", cfg, "--out", os.path.join(base, "oom"), "--batch", "65536"] + common,
                       capture_output=True, text=True, preexec_fn=limit_as, timeout=120,
                       env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    c.check(p.returncode == 1 and "out of host memory" in p.stderr and "batch 65536" in p.stderr,
            f"out of host memory reported (rc {p.returncode}): {p.stderr.strip()[-200:]}")

# --- a full disk while writing checkpoints and samples (tmpfs; needs root)
mnt = os.path.join(base, "full")
os.makedirs(mnt)
if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1600k", "tmpfs", mnt],
                  capture_output=True).returncode != 0:
    print("note: could not mount a small tmpfs (not root?); full-disk checks skipped")
else:
    try:
        # a run directory holding one valid checkpoint (1.2 MB); the next one cannot fit
        src = os.path.join(base, "one")
        run(["train", cfg, "--out", src, "--epochs", "1"] + common)
        one = ckpts(src)[0]
        shutil.copy(os.path.join(src, one), os.path.join(mnt, one))
        p = run(["train", cfg, "--resume", mnt, "--out", mnt, "--epochs", "3"] + common, check=False)
        c.check(p.returncode != 0 and "No space left on device" in p.stderr,
                f"full disk while checkpointing: {p.stderr.strip()[-200:]}")
        c.check(ckpts(mnt) == [one] and not temps(mnt), "no partial checkpoint left behind")
        e = run(["eval", os.path.join(mnt, one), "--data", base, "--json"], check=False)
        c.check(e.returncode == 0, "the earlier checkpoint is intact (loads, checksum ok)")
        # samples: a .npy too large for the disk
        p = run(["sample", os.path.join(src, one), "--out", mnt, "--prior", "20000", "--data", base],
                check=False)
        c.check(p.returncode != 0 and "No space left on device" in p.stderr, f"full disk while sampling: {p.stderr.strip()[-200:]}")
        c.check(not os.path.exists(os.path.join(mnt, "prior.npy")) and not temps(mnt), "no partial prior.npy left")
    finally:
        subprocess.run(["umount", mnt])
# --- a new run into another run's folder is refused; nothing there changes
d = os.path.join(base, "clean")
before = {f: open(os.path.join(d, f), "rb").read() for f in os.listdir(d)}
p = run(["train", cfg, "--out", d, "--epochs", "1"] + common, check=False)
c.check(p.returncode == 1 and "already holds a run's checkpoints" in p.stderr and "--resume" in p.stderr,
        f"train into a run's folder: {p.returncode} {p.stderr.strip()[-200:]}")
c.check({f: open(os.path.join(d, f), "rb").read() for f in os.listdir(d)} == before,
        "the other run's files are untouched")

# --- a run that cannot start leaves nothing behind: no folder, no run record
# (nor the folders above it that it made)
d = os.path.join(base, "nostart", "a", "b")
p = run(["train", cfg, "--out", d, "--data", os.path.join(base, "no-such-data")] + common[2:], check=False)
c.check(p.returncode == 1 and not os.path.exists(os.path.join(base, "nostart")),
        f"failed start leaves no folder ({p.returncode})")
# --out naming a file: an error that says so, the file untouched
p = run(["train", cfg, "--out", cfg] + common, check=False)
c.check(p.returncode == 1 and "not a directory" in p.stderr and open(cfg).read() == SMALL_MLP,
        f"--out naming a file: {p.returncode} {p.stderr.strip()[-200:]!r}")
d = os.path.join(base, "clean")
names = set(os.listdir(d))
p = run(["train", "--resume", d, "--batch", "40", "--epochs", "2"] + common, check=False)
c.check(p.returncode == 1 and "an exact resume needs the same" in p.stderr, f"resume with another batch: {p.stderr[-200:]}")
c.check(set(os.listdir(d)) == names, f"a failed resume writes no run record: {set(os.listdir(d)) - names}")
p = run(["train", "--resume", d, "--seed", "8", "--epochs", "3"] + common, check=False)
c.check(p.returncode == 1 and "an exact resume needs the same" in p.stderr,
        f"resume with another seed: {p.returncode} {p.stderr[-200:]}")
other = os.path.join(base, "other_data")
os.makedirs(other)
mnist_subset(other, 900, 200)
p = run(["train", "--resume", d, "--epochs", "3", "--data", other] + common[2:], check=False)
c.check(p.returncode == 1 and "another training set" in p.stderr,
        f"resume on 900 training images instead of 1000: {p.returncode} {p.stderr[-200:]}")
c.check(set(os.listdir(d)) == names, "the refused resumes write nothing")

# --- a test set of one image: the run completes; interpolation.png needs two
one = os.path.join(base, "one_test")
os.makedirs(one)
mnist_subset(one, 100, 1)
d = os.path.join(base, "one_run")
p = run(["train", cfg, "--out", d, "--epochs", "1", "--data", one] + common[2:], check=False)
c.check(p.returncode == 0 and os.path.exists(os.path.join(d, "samples.png")) and
        not os.path.exists(os.path.join(d, "interpolation.png")),
        f"one test image: exit {p.returncode}, grids without interpolation.png ({p.stderr.strip()[-200:]})")
c.check(last_metrics(d)["test_nelbo"] > 100,
        f"one test image (a batch short of the 50): its nelbo is counted ({last_metrics(d)['test_nelbo']})")

# --- a model larger than the host's memory: refused up front with the figures,
# not killed part-way (and vae info describes it without allocating it)
huge = os.path.join(base, "huge.ini")
open(huge, "w").write(SMALL_MLP.replace("layer = dense 64\nlayer = relu\n[decoder]",
                                        "layer = dense 65536\n" * 4 + "layer = relu\n[decoder]"))
d = os.path.join(base, "huge_run")
p = run(["train", huge, "--out", d] + common, check=False)
c.check(p.returncode == 1 and "MiB of host memory" in p.stderr and "are available" in p.stderr and
        not os.path.exists(d), f"a model too large for the host: {p.returncode} {p.stderr.strip()[-200:]}")
before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
p = run(["info", huge], check=False)
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
c.check(p.returncode == 0 and "memory for batch" in p.stdout, f"info on the huge config: {p.returncode}")
c.check(peak < 500 * 1024, f"vae info allocates none of the model (children's peak RSS {peak // 1024} MiB)")

shutil.rmtree(base, ignore_errors=True)
c.finish()
