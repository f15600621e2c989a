"""`vae sample --prior / --grid / --interpolate`: the streamed decoder.

Trains a small conv VAE (dense + two transposed convs in the decoder) on
1000 MNIST images, then checks against independent references:
  - the .npy files open with numpy with the documented shape and dtype;
  - prior latents are the documented draws (mean ~0, std ~1; reproducible by
    seed; a different seed differs);
  - grid coordinates are what the documentation says: linspace(-R, R, S)
    along D1 (columns) and D2 (rows), Phi^-1((k + 1/2) / S) with --quantiles
    (Python's statistics.NormalDist as the reference), the other dims
    from --at;
  - interpolation latents follow the lerp / slerp formulas (numpy);
  - a run split with --slice into pieces equals the run in one piece, byte
    for byte, whatever the chunk size;
  - PNG sheets: count, names and sizes as documented (split by --sheet-px);
  - SIGINT mid-run leaves a valid .npy truncated at a chunk boundary that
    equals the start of the full run, and exit code 130; SIGKILL leaves no
    .npy (only a temp file, removed by the next run);
  - --precision tf32 / bf16 vs fp32: the pixel differences are reported and
    bounded (not zero for bf16: the rounding is really applied);
  - memory: 1,000,000 prior samples (MLP decoder) stay within a few hundred
    MB of peak RSS, and the peak does not grow with N.
"""
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
import zlib
from statistics import NormalDist

sys.path.insert(0, os.path.dirname(__file__))
from common import SMALL_CONV, SMALL_MLP, VAE, Checks, mnist_subset, run, tmpdir, write_idx_images

try:
    import numpy as np
except ImportError:
    from common import skip
    skip("numpy not found (Debian: python3-numpy)")


c = Checks()
base = tmpdir()
mnist_subset(base, 1000, 200)
common = ["--data", base, "--no-progress", "--device", "cpu", "--threads", "1"]
ASAN = "asan" in os.environ.get("VAE_BIN", VAE) or os.environ.get("ASAN_OPTIONS")


def train(text, name):
    cfg = os.path.join(base, name + ".ini")
    open(cfg, "w").write(text)
    d = os.path.join(base, name)
    run(["train", cfg, "--out", d] + common)
    return [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith(".safetensors")][-1]


def sample(ck, out, *args, check=True):
    return run(["sample", ck, "--out", out] + common + list(args), check=check)


ck = train(SMALL_CONV, "conv")
L = 6

# ---------------------------------------------------------------- prior
d = os.path.join(base, "prior")
sample(ck, d, "--prior", "1000", "--save-latents", "--seed", "11")
a = np.load(os.path.join(d, "prior.npy"))
z = np.load(os.path.join(d, "prior-latents.npy"))
c.check(a.shape == (1000, 1, 28, 28) and a.dtype == np.uint8, f"prior.npy shape {a.shape} dtype {a.dtype}")
c.check(z.shape == (1000, L) and z.dtype == np.float32, f"latents shape {z.shape} dtype {z.dtype}")
# 6000 N(0,1) draws: the standard error of the mean is 0.013, of the std 0.009
c.check(abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.04, f"latents ~ N(0,1): mean {z.mean():.4f} std {z.std():.4f}")
c.check(a.std() > 5, f"decoded images are not constant (std {a.std():.2f})")
c.check(not os.path.exists(os.path.join(d, "prior.png")), "--prior writes no PNG unless --png")
# the latents alone (--no-npy), and --json's figures
p = sample(ck, d + "_lat", "--prior", "300", "--save-latents", "--seed", "11", "--no-npy", "--json")
zl = np.load(os.path.join(d + "_lat", "prior-latents.npy"))
c.check(zl.shape == (300, L) and np.array_equal(zl, z[:300]) and
        not os.path.exists(os.path.join(d + "_lat", "prior.npy")),
        f"--save-latents --no-npy: the latents ({zl.shape}), no images")
j = json.loads(p.stdout)
c.check({"mode", "images", "first", "last", "chunk", "device", "precision", "seconds", "images_per_s",
         "sheets", "stopped"} <= set(j) and j["precision"] == "fp32" and j["images"] == 300 and
        j["chunk"] % 64 == 0, f"--json keys and values: {sorted(j)} {j.get('chunk')}")
for prec in ("tf32", "bf16"):
    p = sample(ck, d + "_" + prec, "--prior", "10", "--precision", prec, "--no-npy", "--json")
    c.check(json.loads(p.stdout)["precision"] == prec, f"--json names --precision {prec}")
p = sample(ck, d + "_png", "--prior", "10", "--png", "--no-npy", "--json")
c.check(os.path.exists(os.path.join(d + "_png", "prior.png")) and json.loads(p.stdout)["sheets"] == 1,
        "--prior --png writes prior.png")
# a small run takes a chunk of its own size, a multiple of 64 (not the budget's)
p = sample(ck, d + "_50", "--prior", "50", "--no-npy", "--json")
c.check(json.loads(p.stdout)["chunk"] == 64, f"--prior 50: chunk {json.loads(p.stdout)['chunk']}")

# a split into slices. Latents: identical whatever the split. Images: byte for
# byte when the pieces start on chunk boundaries with the same --chunk (the
# same GEMM shapes); with other chunkings the BLAS may sum in another order
# (its small-matrix kernels), so a pixel within ~1e-6 of a rounding boundary
# may move by one level.
d2 = os.path.join(base, "prior_split")
sample(ck, d2, "--prior", "1000", "--seed", "11", "--chunk", "100", "--slice", "0:300")
sample(ck, d2, "--prior", "1000", "--seed", "11", "--chunk", "100", "--slice", "300:1000", "--save-latents")
sample(ck, d2, "--prior", "1000", "--seed", "11", "--chunk", "100")
whole = np.load(os.path.join(d2, "prior.npy"))
p0 = np.load(os.path.join(d2, "prior-0-300.npy"))
p1 = np.load(os.path.join(d2, "prior-300-1000.npy"))
z1 = np.load(os.path.join(d2, "prior-300-1000-latents.npy"))
c.check(np.array_equal(np.concatenate([p0, p1]), whole), "slices 0:300 + 300:1000 == the whole run, byte for byte")
c.check(np.array_equal(z1, z[300:]), "a slice's latents are the same rows of the whole run's, bit for bit")
# a piece ending mid-chunk (its last chunk 50 images, the whole run's 100):
# still the whole run's images (on the GPU the short chunk is decoded at the
# full size, sample_stream.c; on the CPU the rows do not depend on it)
sample(ck, d2, "--prior", "1000", "--seed", "11", "--chunk", "100", "--slice", "0:250")
p2 = np.load(os.path.join(d2, "prior-0-250.npy"))
c.check(np.array_equal(p2, whole[:250]), "slice 0:250 (a short last chunk) == the whole run's first 250")
sample(ck, d2, "--prior", "1000", "--seed", "11", "--chunk", "64", "--slice", "0:333")
sample(ck, d2, "--prior", "1000", "--seed", "11", "--chunk", "1000", "--slice", "333:1000")
q = np.concatenate([np.load(os.path.join(d2, "prior-0-333.npy")), np.load(os.path.join(d2, "prior-333-1000.npy"))])
dq = np.abs(q.astype(np.int16) - a.astype(np.int16))
print(f"slices 0:333 (chunk 64) + 333:1000 (chunk 1000) vs one run (chunk auto): "
      f"{int((dq > 0).sum())} of {dq.size} pixels differ, by at most {dq.max()}")
c.check(dq.max() <= 1 and (dq > 0).mean() < 1e-3, "unaligned slices with other chunks: within one level")
d3 = os.path.join(base, "prior_seed")
j = json.loads(sample(ck, d3, "--prior", "50", "--seed", "12", "--json").stdout)
c.check(j["first_chunk_seconds"] is None and j["steady_images_per_s"] is None,
        f"one chunk: no steady rate in --json ({j['first_chunk_seconds']}, {j['steady_images_per_s']})")
c.check(not np.array_equal(np.load(os.path.join(d3, "prior.npy")), a[:50]), "another seed gives other images")

# ---------------------------------------------------------------- grid
S, R = 7, 2.0
d = os.path.join(base, "grid")
at = [0.5, -0.25, 1.0, 0.0, -1.5, 2.0]
sample(ck, d, "--grid", "3,1", "--steps", str(S), "--range", str(R), "--at", ",".join(map(str, at)),
       "--save-latents")
g = np.load(os.path.join(d, "grid.npy"))
gz = np.load(os.path.join(d, "grid-latents.npy")).reshape(S, S, L)
c.check(g.shape == (S * S, 1, 28, 28), f"grid.npy shape {g.shape}")
lin = np.linspace(-R, R, S)
c.check(np.allclose(gz[:, :, 3], lin[None, :], atol=1e-6), "grid: columns move along D1 = 3 over linspace(-R, R, S)")
c.check(np.allclose(gz[:, :, 1], lin[:, None], atol=1e-6), "grid: rows move along D2 = 1 (row 0 = -R)")
others = [l for l in range(L) if l not in (1, 3)]
c.check(np.allclose(gz[:, :, others], np.array(at)[others], atol=0), "grid: the other dims are --at's values")
c.check(os.path.exists(os.path.join(d, "grid.png")), "grid.png written by default")

d = os.path.join(base, "gridq")
S = 9
sample(ck, d, "--grid", "0,5", "--steps", str(S), "--quantiles", "--save-latents", "--no-png")
gz = np.load(os.path.join(d, "grid-latents.npy")).reshape(S, S, L)
q = np.array([NormalDist().inv_cdf((k + 0.5) / S) for k in range(S)])
err = max(np.abs(gz[:, :, 0] - q[None, :]).max(), np.abs(gz[:, :, 5] - q[:, None]).max())
# float32 rounding of values below 2 in magnitude: < 1.2e-7
c.check(err < 2e-7, f"--quantiles: Phi^-1((k+1/2)/S), max error {err:.2e}")
c.check(not any(f.endswith(".png") for f in os.listdir(d)), "--no-png writes no sheet")

# sheets split by --sheet-px: 40 x 40 grid of 28 px images, at most 300 px per
# side -> (300 + 2) // 30 = 10 images per sheet side -> 4 x 4 sheets
d = os.path.join(base, "sheets")
sample(ck, d, "--grid", "0,1", "--steps", "40", "--sheet-px", "300", "--no-npy")
pngs = sorted(f for f in os.listdir(d) if f.endswith(".png"))
want = [f"grid-{r}-{cc}.png" for r in range(4) for cc in range(4)]
c.check(pngs == want, f"sheet names {pngs[:3]}... ({len(pngs)})")


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


c.check(all(png_size(os.path.join(d, f)) == (298, 298) for f in pngs),
        "each sheet is 10 x 10 images: 10 * 30 - 2 = 298 px")
c.check(not os.path.exists(os.path.join(d, "grid.npy")), "--no-npy writes no .npy")

# ---------------------------------------------------------------- interpolation
d = os.path.join(base, "interp")
S = 11
sample(ck, d, "--interpolate", "3,8", "--steps", str(S), "--save-latents")
sample(ck, d + "_s", "--interpolate", "3,8", "--steps", str(S), "--slerp", "--save-latents")
zl = np.load(os.path.join(d, "interp-latents.npy")).astype(np.float64)
zs = np.load(os.path.join(d + "_s", "interp-latents.npy")).astype(np.float64)
im = np.load(os.path.join(d, "interp.npy"))
c.check(im.shape == (S, 1, 28, 28), f"interp.npy shape {im.shape}")
c.check(os.path.exists(os.path.join(d, "interp.png")), "--interpolate writes its PNG strip by default")
za, zb = zl[0], zl[-1]
t = np.linspace(0, 1, S)[:, None]
c.check(np.allclose(zl, (1 - t) * za + t * zb, atol=1e-5), "lerp: z(t) = (1-t) a + t b")
w = math.acos(np.dot(za, zb) / np.linalg.norm(za) / np.linalg.norm(zb))
ref = (np.sin((1 - t) * w) * za + np.sin(t * w) * zb) / math.sin(w)
c.check(np.allclose(zs[0], za, atol=1e-6) and np.allclose(zs[-1], zb, atol=1e-6), "slerp: same endpoints")
c.check(np.allclose(zs, ref, atol=1e-5), "slerp: z(t) = (sin((1-t)w) a + sin(tw) b) / sin w")
c.check(np.linalg.norm(za - zb) > 0.1, "endpoints are two different encodings")
p = sample(ck, d, "--interpolate", "3,999999", check=False)
c.check(p.returncode != 0 and "test image indices must be in 0..199" in p.stderr, "bad --interpolate index named")

# ---------------------------------------------------------------- bad input
# exit 1: wrong for this checkpoint; exit 2: a usage error, found before loading it
for args, msg, code in ((["--grid", "0,9"], "latent dimensions must be in 0..5", 1),
                        (["--grid", "6,0"], "latent dimensions must be in 0..5", 1),
                        (["--interpolate", "-1,3"], "expected two test image indices I,J", 2),
                        (["--prior", "10", "--slice", "5:5"], "expected A:B with 0 <= A < B <= 10", 2),
                        (["--prior", "10", "--slice", "-2:5"], "expected A:B with 0 <= A < B <= 10", 2),
                        (["--prior", "10", "--seed", "18446744073709551616"],
                         "expected an integer in 0..18446744073709551615", 2),
                        (["--grid", "0,1", "--at", "1,2"], "expected 6 comma-separated numbers", 1),
                        (["--grid", "1,1"], "two different latent dimensions", 2),
                        (["--prior", "10", "--slice", "5:20"], "expected A:B with 0 <= A < B <= 10", 2),
                        (["--prior", "10", "--precision", "fp8"], "expected fp32, tf32 or bf16", 2),
                        (["--prior", "10", "--grid", "0,1"], "give one", 2),
                        (["--grid", "0,1", "--quantiles", "--range", "2"], "give one", 2),
                        # options that mean nothing in the mode are refused, not ignored
                        (["--prior", "10", "--slerp"], "--slerp applies to --interpolate only", 2),
                        (["--prior", "10", "--steps", "4"], "--steps applies to --grid and --interpolate", 2),
                        (["--interpolate", "0,1", "--at", "1,2,3,4,5,6"], "--at applies to --grid only", 2),
                        (["--json"], "--json applies to --prior, --grid and --interpolate only", 2),
                        (["--prior", "10", "--iw", "4"], "--iw is not an option of 'vae sample'", 2),
                        (["--prior", "--json"], "--prior needs a value (found the option --json)", 2),
                        (["--prior=", "--json"], "--prior needs a value", 2),
                        (["--prior=10", "--json=1"], "--json takes no value (found --json=1)", 2),
                        (["--prior=10", "--seed=x"], "--seed x: expected an integer", 2),
                        (["--prior=10", "--=x"], "--=x: expected --option=value", 2),
                        (["--prior", "10", "--seed", "-1"], "expected an integer in 0..18446744073709551615", 2)):
    p = sample(ck, os.path.join(base, "bad"), *args, check=False)
    c.check(p.returncode == code and msg in p.stderr,
            f"{args}: exit {code} and message '{msg}' (got {p.returncode}: {p.stderr.strip()[-160:]})")
# --opt=value is --opt value
p = sample(ck, os.path.join(base, "attached"), "--prior=3", "--seed=5", "--no-npy", "--json", check=False)
c.check(p.returncode == 0 and '"images":3' in p.stdout, f"--prior=3 --seed=5: {p.returncode} {p.stderr[-160:]}")
# the whole range of seeds the config takes
p = sample(ck, os.path.join(base, "seed64"), "--prior", "3", "--seed", "18446744073709551615", "--no-npy",
           "--json", check=False)
c.check(p.returncode == 0 and '"images":3' in p.stdout, f"--seed 2^64-1: {p.returncode} {p.stderr[-160:]}")

# ---------------------------------------------------------------- precision
d = os.path.join(base, "prec")
diffs = {}
for prec in ("fp32", "tf32", "bf16"):
    sample(ck, os.path.join(d, prec), "--prior", "500", "--seed", "4", "--precision", prec)
ref = np.load(os.path.join(d, "fp32", "prior.npy")).astype(np.int16)
for prec in ("tf32", "bf16"):
    x = np.load(os.path.join(d, prec, "prior.npy")).astype(np.int16)
    diff = np.abs(x - ref)
    diffs[prec] = (int(diff.max()), float(diff.mean()), float((diff > 0).mean()))
    print(f"--precision {prec} vs fp32 on 500 prior samples: max |diff| {diff.max()} levels, "
          f"mean {diff.mean():.4f}, {100 * (diff > 0).mean():.2f}% of pixels differ")
# bf16 keeps 8 significant bits: relative error ~2^-9 per rounding, a few
# roundings per layer; on pixels in 0..255 that is a few levels at most.
c.check(0 < diffs["bf16"][0] <= 16 and diffs["bf16"][1] < 0.5, f"bf16 vs fp32 {diffs['bf16']}")
c.check(diffs["tf32"][0] <= 4 and diffs["tf32"][1] <= diffs["bf16"][1], f"tf32 vs fp32 {diffs['tf32']}")

# ---------------------------------------------------------------- stopping
def interrupted(name, after, *args):
    """`vae sample --prior 2000000 --chunk 500 ARGS` into a fresh folder,
    sent SIGINT after `after` seconds: (folder, exit status, stderr)."""
    d = os.path.join(base, name)
    os.makedirs(d)
    cmd = [VAE, "sample", ck, "--out", d, "--prior", "2000000", "--chunk", "500"] + list(args) + common
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(after)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=600)
    interrupted.out = out
    return d, proc.returncode, err


d, code, err = interrupted("stop", 4 if not ASAN else 15, "--seed", "11", "--json")
c.check(code == 130, f"SIGINT: exit code 130 (got {code}: {err[-300:]})")
s = np.load(os.path.join(d, "prior.npy"))
c.check(0 < len(s) < 2000000 and len(s) % 500 == 0, f"SIGINT: .npy truncated at a chunk boundary ({len(s)} rows)")
n = min(len(s), 1000)
c.check(np.array_equal(s[:n], a[:n]), "SIGINT: the rows written are those of the full run")
c.check(f"--slice {len(s)}:2000000" in err, "SIGINT: the message says how to continue")
j = json.loads(interrupted.out)
c.check(j["stopped"] and j["first"] == 0 and j["last"] == len(s) == j["images"],
        f"SIGINT: --json's [first, last) are the rows written ({j['first']}, {j['last']}, {len(s)} rows)")

# ... with PNG sheets too: exit 130, the sheets finished so far complete, no
# temp file and no half sheet left
d, code, err = interrupted("stop_png", 3 if not ASAN else 12, "--png", "--no-npy")
left = sorted(os.listdir(d))
c.check(code == 130 and left and all(f.endswith(".png") and png_size(os.path.join(d, f)) for f in left),
        f"SIGINT with --png: exit {code}, only whole sheets left ({left[:3]}..., {len(left)})")

d = os.path.join(base, "kill")
os.makedirs(d)
cmd = [VAE, "sample", ck, "--out", d, "--prior", "2000000", "--chunk", "500"] + common
proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
time.sleep(3 if not ASAN else 10)
proc.kill()
proc.wait()
c.check(not os.path.exists(os.path.join(d, "prior.npy")), "SIGKILL: no prior.npy")
c.check(any(".tmp." in f for f in os.listdir(d)), "SIGKILL: the temp file is left (the next run removes it)")
sample(ck, d, "--prior", "10")
c.check(sorted(os.listdir(d)) == ["prior.npy"], f"next run removed the dead writer's temp file: {os.listdir(d)}")

# ---------------------------------------------------------------- memory
mlp = train(SMALL_MLP.replace("epochs = 3", "epochs = 1"), "mlp")

# ---------------------------------------------------------------- non-square images
# 20 rows of 30: (N, C, H, W) keeps H and W apart in the .npy and the sheet
ns = os.path.join(base, "nonsquare")
os.makedirs(ns)
rng = np.random.default_rng(3)
for split, n in (("train", 200), ("test", 50)):
    write_idx_images(os.path.join(ns, f"{split}.idx"), n, 20, 30,
                     rng.integers(0, 256, n * 600, dtype=np.uint8).tobytes())
nsc = os.path.join(ns, "ns.ini")
open(nsc, "w").write(SMALL_MLP.replace("input = 1x28x28", "input = 1x20x30").replace("dense 784", "dense 600")
                     .replace("reshape 1x28x28", "reshape 1x20x30").replace("epochs = 3", "epochs = 1"))
nsd = os.path.join(ns, "run")
run(["train", nsc, "--out", nsd, "--data", ns] + common[2:])
nck = [os.path.join(nsd, f) for f in sorted(os.listdir(nsd)) if f.endswith(".safetensors")][-1]
run(["sample", nck, "--out", os.path.join(ns, "s"), "--prior", "10", "--png", "--data", ns] + common[2:])
a20 = np.load(os.path.join(ns, "s", "prior.npy"))
c.check(a20.shape == (10, 1, 20, 30), f"1x20x30 images: prior.npy shape {a20.shape}")
w_, h_ = png_size(os.path.join(ns, "s", "prior.png"))
c.check(w_ > h_, f"1x20x30 images: the sheet is wider than high ({w_}x{h_}) for 4 columns of 30 by 3 rows of 20")


# ---------------------------------------------------------------- the four grids (no mode flag)
GRIDS = ["interpolation.png", "reconstructions.png", "samples.png", "traversal.png"]
d = os.path.join(base, "grids")
run(["sample", ck, "--out", d] + common)
c.check(sorted(os.listdir(d)) == GRIDS, f"no mode flag: the four grids ({sorted(os.listdir(d))})")
# --data naming a folder without the test images is an error, and nothing is written
nodata = os.path.join(base, "nodata")
os.makedirs(nodata)
rest = common[2:]  # common without its --data
d = os.path.join(base, "grids_nodata")
p = run(["sample", ck, "--out", d, "--data", nodata] + rest, check=False)
c.check(p.returncode == 1 and "test.idx: no such file" in p.stderr and not os.path.exists(d),
        f"--data without test images: exit {p.returncode}, {p.stderr.strip()[-200:]!r}, "
        f"output folder made: {os.path.exists(d)}")
# test images that are there but do not load: an error too
bad = os.path.join(base, "baddata")
os.makedirs(bad)
with open(os.path.join(base, "test.idx"), "rb") as f:
    open(os.path.join(bad, "test.idx"), "wb").write(f.read(1000))
d = os.path.join(base, "grids_bad")
p = run(["sample", ck, "--out", d, "--data", bad] + rest, check=False)
c.check(p.returncode == 1 and "baddata/test.idx" in p.stderr and not os.path.exists(d),
        f"truncated test images: exit {p.returncode}, {p.stderr.strip()[-200:]!r}")
# no --data, no VAE_DATA_DIR and nothing in ./data: the prior grids only, with a note
env = {k: v for k, v in os.environ.items() if k != "VAE_DATA_DIR"}
d = os.path.join(base, "grids_none")
p = subprocess.run([VAE, "sample", ck, "--out", d] + rest, cwd=nodata, env=env, capture_output=True,
                   text=True, timeout=600)
c.check(p.returncode == 0 and "writing the prior grids only" in p.stderr and
        sorted(os.listdir(d)) == ["samples.png", "traversal.png"],
        f"no test data anywhere: exit {p.returncode}, {p.stderr.strip()[-200:]!r}")


def peak_rss_mb(n, out):
    """The engine's own report of its peak RSS (VmHWM): a child's ru_maxrss
    would include this Python process's memory at fork."""
    p = sample(mlp, out, "--prior", str(n), "--json")
    j = json.loads(p.stdout)
    c.check(j["images"] == n, f"--prior {n}: {j['images']} written")
    # more than one chunk: the first chunk's time (set-up included) and the rate after it
    first, steady = j["first_chunk_seconds"], j["steady_images_per_s"]
    c.check(j["chunk"] < n and first is not None and 0 < first < j["seconds"] and steady > 0 and
            abs((n - j["chunk"]) / (j["seconds"] - first) - steady) <= 1e-6 * steady,
            f"--json first_chunk_seconds {first} and steady_images_per_s {steady} "
            f"(seconds {j['seconds']}, chunk {j['chunk']})")
    return j["peak_rss_mib"]


d = os.path.join(base, "rss")
small = peak_rss_mb(10000, d + "_small")
big_n = 1000000 if not ASAN else 200000
big = peak_rss_mb(big_n, d + "_big")
size = os.path.getsize(os.path.join(d + "_big", "prior.npy"))
print(f"peak RSS: {small:.0f} MB for 10000 prior samples, {big:.0f} MB for {big_n} ({size / 1e6:.0f} MB of .npy)")
c.check(size == 128 + big_n * 784, f"{big_n} samples written ({size} bytes)")
os.remove(os.path.join(d + "_big", "prior.npy"))
c.check(big - small < 32, f"peak RSS does not grow with N ({small:.0f} -> {big:.0f} MB)")
if not ASAN:
    c.check(big < 300, f"1,000,000 samples in under 300 MB of RSS ({big:.0f} MB)")

# ---------------------------------------------------------------- an --out used before
# a smaller grid where a larger one wrote blocks: refused before anything is
# written, the earlier run's files untouched; the same layout again: replaced
d = os.path.join(base, "reuse")
sample(ck, d, "--grid", "0,1", "--steps", "150")  # 150 x 150: 2 x 2 blocks of sheets
before = {f: open(os.path.join(d, f), "rb").read() for f in os.listdir(d)}
c.check(sorted(before) == ["grid-0-0.png", "grid-0-1.png", "grid-1-0.png", "grid-1-1.png", "grid.npy"],
        f"a 150 x 150 grid: {sorted(before)}")
p = sample(ck, d, "--grid", "2,3", "--steps", "10", check=False)
c.check(p.returncode == 1 and "another layout" in p.stderr and "grid-" in p.stderr and
        {f: open(os.path.join(d, f), "rb").read() for f in os.listdir(d)} == before,
        f"sheets of another layout under the same name: exit {p.returncode}, {p.stderr.strip()[-300:]!r}, "
        f"files {sorted(os.listdir(d))}")
p = sample(ck, d, "--grid", "2,3", "--steps", "10", "--no-png", "--save-latents", check=False)
c.check(p.returncode == 0 and np.load(os.path.join(d, "grid-latents.npy")).shape == (100, L),
        f"--no-png: no sheets to mix, so it runs: {p.returncode} {p.stderr.strip()[-200:]!r}")
# a run without --save-latents replaces grid.npy: the old latents go with it
p = sample(ck, d, "--grid", "0,1", "--steps", "150", "--no-png")
c.check(not os.path.exists(os.path.join(d, "grid-latents.npy")) and "removed" in p.stderr and
        np.load(os.path.join(d, "grid.npy")).shape[0] == 22500,
        f"the earlier run's grid-latents.npy removed with the grid.npy it described: {sorted(os.listdir(d))}")
sample(ck, d, "--grid", "0,1", "--steps", "150")  # the same layout: replaced, no complaint
c.check({f: open(os.path.join(d, f), "rb").read() for f in os.listdir(d)} == before,
        "the same grid again into the same --out: the same files")

# ---------------------------------------------------------------- command lines
# values out of int range, floats beyond float32, a device name: refused,
# with 2 for the malformed and 1 for what does not fit the checkpoint
nodev = common[:3] + common[5:]  # without --device cpu
for args, want, what in ((["--grid", "4294967296,1"], 2, "--grid 4294967296,1"),
                         (["--grid", "1,4294967297"], 2, "--grid 1,4294967297"),
                         (["--interpolate", "4294967296,1"], 2, "--interpolate 4294967296,1"),
                         (["--grid", "0,1", "--at", ",".join(["1e39"] * L)], 1, "finite number"),
                         (["--prior", "5", "--device", "gpu"], 2, "--device gpu"),
                         (["--device", "gpu"], 2, "--device gpu")):
    o = os.path.join(base, "cmdline", "x")
    p = run(["sample", ck, "--out", o] + args + nodev, check=False)
    c.check(p.returncode == want and what in p.stderr and not os.path.exists(os.path.join(base, "cmdline")),
            f"sample {' '.join(args)}: exit {p.returncode} (want {want}), {p.stderr.strip()[-200:]!r}, "
            f"folder left: {os.path.exists(os.path.join(base, 'cmdline'))}")
p = run(["eval", ck, "--device", "gpu", "--data", base], check=False)
c.check(p.returncode == 2 and "--device gpu" in p.stderr, f"eval --device gpu: exit {p.returncode}")
# an --interpolate whose test images are missing: the folders it would have made are not left
p = run(["sample", ck, "--out", os.path.join(base, "nofold", "a", "b"), "--interpolate", "0,1",
         "--data", nodata] + rest, check=False)
c.check(p.returncode == 1 and not os.path.exists(os.path.join(base, "nofold")),
        f"--interpolate without test images leaves no folders: {p.returncode}")
# --out naming a file
p = sample(ck, os.path.join(d, "grid.npy"), "--prior", "5", check=False)
c.check(p.returncode == 1 and "not a directory" in p.stderr, f"--out naming a file: {p.stderr.strip()[-200:]!r}")
# a config where a checkpoint belongs: said so
p = run(["eval", os.path.join(os.path.dirname(ck), "config.ini"), "--data", base], check=False)
c.check(p.returncode == 1 and "not a checkpoint" in p.stderr, f"eval CONFIG: {p.stderr.strip()[-200:]!r}")
# a plain autoencoder has no prior: the two grids of test images, with a
# note; none without test images, an error rather than an empty folder
ae = train(SMALL_MLP.replace("[model]", "[model]\ntype = ae").replace("kl_warmup_steps = 10\n", "")
           .replace("epochs = 3", "epochs = 1"), "ae")
d = os.path.join(base, "ae_grids")
p = sample(ae, d)
c.check(sorted(os.listdir(d)) == ["interpolation.png", "reconstructions.png"] and "no prior" in p.stderr
        and "reconstructions.png, interpolation.png" in p.stdout,
        f"AE grids: {sorted(os.listdir(d))} {p.stdout.strip()!r} {p.stderr.strip()[-200:]!r}")
d = os.path.join(base, "ae_nodata")
p = run(["sample", ae, "--out", d] + rest, check=False, env={"VAE_DATA_DIR": nodata})
c.check(p.returncode == 1 and "plain autoencoder" in p.stderr and not os.path.exists(d),
        f"AE grids without test images: {p.returncode} {p.stderr.strip()[-200:]!r}")
# info of a run's folder: its newest checkpoint
p = run(["info", os.path.dirname(ck)])
c.check(os.path.basename(ck) in p.stdout, f"info DIR names the newest checkpoint: {p.stdout[:200]!r}")
c.finish()
