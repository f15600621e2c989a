"""Failures a user meets, each asserting the message and that nothing on disk
was lost or corrupted: NaN in the loss (stop with the last good state, or
skip up to a limit), an unwritable output directory, a full disk while
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
# resuming from it without the fault continues normally
run(["train", cfg, "--resume", d, "--out", d, "--epochs", "1"] + common)

# --- NaN skipped when allowed
d = os.path.join(base, "nan_skip")
p = run(["train", cfg, "--out", d, "--epochs", "1", "--max-bad-steps", "1"] + common,
        env={"VAE_FAULT_NAN_AT_STEP": "5"})
c.check("step skipped (1 of 1 allowed)" in p.stderr, "skip message")
import json
m = json.loads(open(os.path.join(d, "metrics.jsonl")).read().splitlines()[-1])
c.check(m["skipped_steps"] == 1 and m["train_nelbo"] == m["train_nelbo"], "metrics: 1 skipped, finite loss")

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
shutil.rmtree(base, ignore_errors=True)
c.finish()
