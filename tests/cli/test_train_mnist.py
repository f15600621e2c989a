"""End to end on real MNIST: train mnist_mlp.ini for one epoch through the CLI
and check the result, then eval, sample and info on what it wrote.

Threshold: after one epoch (469 Adam steps at lr 1e-3) the test negative
ELBO must be below 140 nats. A model that ignores its input and predicts the
mean training image scores about 206 nats (the BCE of the test set against
the per-pixel mean, computed below from the data), and the PyTorch example
of this model reaches about 125-130 after one epoch, so 140 separates "it
learned" from "it did not" with margin for seeds.
"""
import json
import math
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(__file__))
from common import (Checks, DATA, SRC, mnist_file, mnist_subset, read_idx, read_safetensors, run, skip,
                    tmpdir)

c = Checks()
if not DATA or not mnist_file("train-images-idx3-ubyte"):
    skip("MNIST not found: set VAE_DATA_DIR")
out = tmpdir()
cfg = os.path.join(SRC, "configs", "mnist_mlp.ini")
p = run(["train", cfg, "--epochs", "1", "--out", out, "--no-progress", "--device", "auto"])
c.check(p.stderr.count("running on the CPU") == 1, "auto without a GPU says once that it runs on the CPU")
lines = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
c.check(len(lines) == 1, "one metrics line per epoch")
m = lines[0]
for k in ("epoch", "train_nelbo", "test_nelbo", "test_recon", "test_kl", "images_per_s"):
    c.check(k in m, f"metrics key {k}")
c.check(abs(m["test_nelbo"] - (m["test_recon"] + m["test_kl"])) < 1e-6 * m["test_nelbo"], "nelbo = recon + kl")
c.check(m.get("step") == 469, f"60000 images in batches of 128: 469 steps, the short last one too ({m.get('step')})")

# the constant-predictor baseline from the data itself (see the docstring)
(_, h, w), tr = read_idx(mnist_file("train-images-idx3-ubyte"))
(nt, _, _), te = read_idx(mnist_file("t10k-images-idx3-ubyte"))
import numpy as np
trx = np.frombuffer(tr, np.uint8).reshape(-1, 784) / 255.0
tex = np.frombuffer(te, np.uint8).reshape(-1, 784) / 255.0
mu = np.clip(trx.mean(0), 1e-6, 1 - 1e-6)
baseline = float(-(tex * np.log(mu) + (1 - tex) * np.log(1 - mu)).sum(1).mean())
print(f"test nelbo after 1 epoch: {m['test_nelbo']:.3f}; mean-image baseline {baseline:.3f}")
c.check(200 < baseline < 212, "baseline computed")
c.check(m["test_nelbo"] < 140, f"test nelbo {m['test_nelbo']:.2f} < 140 after one epoch")
c.check(m["test_kl"] > 5, "the latent is used (KL > 5 nats)")

files = os.listdir(out)
ckpts = sorted(f for f in files if f.startswith("ckpt-") and f.endswith(".safetensors"))
c.check(len(ckpts) == 1, "one checkpoint")
for f in ("config.ini", "metrics.jsonl", "run.json", "samples.png", "reconstructions.png",
          "traversal.png", "interpolation.png"):
    c.check(f in files, f"run directory has {f}")
for f in ("samples.png", "reconstructions.png", "traversal.png", "interpolation.png"):
    with open(os.path.join(out, f), "rb") as fh:
        c.check(fh.read(8) == b"\x89PNG\r\n\x1a\n", f"{f} is a PNG")
rj = json.load(open(os.path.join(out, "run.json")))
for k in ("git_describe", "seed", "device", "argv", "libraries", "version"):
    c.check(k in rj, f"run.json records {k}")
c.check(rj["device"] == "cpu" and "openblas" in rj["libraries"], "run.json: device and library versions")
ck = os.path.join(out, ckpts[0])
meta, tensors = read_safetensors(ck)
c.check(meta.get("format") == "vae-engine-checkpoint", "checkpoint format metadata")
c.check(tensors["encoder.1.weight"][1] == (400, 784), "linear weight is [out, in]")
c.check(tensors["head.weight"][1] == (40, 400), "head is one GEMM: [2L, in]")
c.check(meta["config"].count("[encoder]") == 1, "config text embedded")

# eval reproduces the epoch's test figure (same fixed evaluation noise)
e = json.loads(run(["eval", ck, "--json"]).stdout)
c.check(abs(e["test_nelbo"] - m["test_nelbo"]) < 1e-6 * m["test_nelbo"], "eval == training's test nelbo")
c.check({"checkpoint", "n", "test_nelbo", "test_recon", "test_kl", "test_bpd", "seconds"} <= set(e) and
        e["n"] == 10000, f"eval --json keys: {sorted(e)}")
c.check(abs(e["test_bpd"] - e["test_nelbo"] / (784 * math.log(2))) < 1e-9 * e["test_bpd"],
        "bits per dimension = nelbo / (784 ln 2)")
# the evaluation noise: the checkpoint's seed by default, --seed another
es = json.loads(run(["eval", ck, "--json", "--seed", meta["seed"]]).stdout)
e2 = json.loads(run(["eval", ck, "--json", "--seed", str(int(meta["seed"]) + 1)]).stdout)
c.check(es["test_nelbo"] == e["test_nelbo"] and e2["test_nelbo"] != e["test_nelbo"],
        f"eval --seed: the checkpoint's seed by default ({es['test_nelbo']}, {e2['test_nelbo']})")
e5 = json.loads(run(["eval", ck, "--json", "--iw", "5"]).stdout)
c.check(e5["test_iw_nll"] < e5["test_nelbo"], "importance-weighted bound is tighter than the ELBO")
c.check(e5["test_iw_nll"] > e5["test_nelbo"] - 15, "and not absurdly so")
c.check(abs(e5["test_iw_bpd"] - e5["test_iw_nll"] / (784 * math.log(2))) < 1e-9,
        "the importance-weighted estimate in bits per dimension too")
txt = run(["eval", ck]).stdout
c.check("test nelbo" in txt and "recon" in txt, "human-readable eval")

# sample: grids and a uint8 .npy that numpy opens
sd = os.path.join(out, "s")
run(["sample", ck, "--out", sd, "--prior", "300", "--seed", "3"])
a = np.load(os.path.join(sd, "prior.npy"))
c.check(a.shape == (300, 1, 28, 28) and a.dtype == np.uint8, f"prior.npy shape {a.shape} dtype {a.dtype}")
c.check(10 < a.mean() < 80, f"prior samples look like digits (mean {a.mean():.1f})")
run(["sample", ck, "--out", sd, "--prior", "100", "--seed", "3"])
b = np.load(os.path.join(sd, "prior.npy"))
c.check((a[:100] == b).all(), "a shorter run is a prefix of a longer one (counter-based noise)")

# info: parameter count of the 784-400-20 MLP VAE
info = run(["info", cfg]).stdout
want = 784 * 400 + 400 + 400 * 40 + 40 + 20 * 400 + 400 + 400 * 784 + 784
c.check(f"{want} parameters" in info, f"info reports {want} parameters")
c.check("70000 training and test images" in info, "info counts MNIST's 70000 images in the arena")
info8 = run(["info", cfg, "--batch", "8"]).stdout
c.check("memory for batch 8:" in info8, "info --batch 8 describes batch 8")

# usage errors exit 2: an unknown option, an unknown command, no command
for args, msg in ((["train", cfg, "--bogus"], "--bogus is not an option of 'vae train'"),
                  (["bogus"], "unknown command 'bogus'"), ([], "usage: vae <command>")):
    p = run(args, check=False)
    c.check(p.returncode == 2 and msg in p.stderr, f"vae {' '.join(args[:1])}...: exit {p.returncode}, {msg!r}")

# --threads does not change the result: the CPU backend cuts its GEMMs and
# passes by shape, not by thread count (src/host/backend_cpu.c). mnist_conv
# at batch 128 on 1280 images: its conv products are several slices each.
sub = os.path.join(out, "sub")
os.makedirs(sub)
mnist_subset(sub, 1280, 256)
conv = open(os.path.join(SRC, "configs", "mnist_conv.ini")).read().replace(
    "dataset = mnist", "dataset = idx\ntrain_images = train.idx\ntest_images = test.idx")
open(os.path.join(sub, "conv.ini"), "w").write(conv)
by_threads = {}
for t in ("1", "2", "3"):
    d = os.path.join(sub, "t" + t)
    run(["train", os.path.join(sub, "conv.ini"), "--epochs", "1", "--threads", t, "--data", sub,
         "--out", d, "--no-progress", "--device", "cpu"])
    ck = [f for f in os.listdir(d) if f.startswith("ckpt-")][0]
    by_threads[t] = read_safetensors(os.path.join(d, ck))[1]
c.check(all(by_threads[t] == by_threads["1"] for t in ("2", "3")) and len(by_threads["1"]) > 10,
        "mnist_conv trained with --threads 1, 2 and 3: the same tensors, bit for bit")

# devices: cuda without a GPU is a clear error
p = run(["train", cfg, "--device", "cuda", "--out", os.path.join(out, "x")], check=False)
c.check(p.returncode != 0 and "--device cuda" in p.stderr, "--device cuda without a GPU fails clearly")
shutil.rmtree(out, ignore_errors=True)
c.finish()
