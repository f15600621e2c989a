#!/usr/bin/python3
"""decode_bench.py — decode throughput (images/s): the engine's `vae sample
--prior N` against the same decoder in PyTorch, same weights, same device.

  /usr/bin/python3 bench/decode_bench.py [--vae build/vae] [--device cpu|cuda]
      [--configs mnist_conv,cifar10_conv] [--n N | --n mnist_conv=N,...]
      [--repeats R] [--threads T] [--batches 256,1024,4096] [--chunks ...]
      [--precision fp32|tf32|bf16] [--work DIR] [--tmp DIR] [--out results.md]

Per config it measures, each `--repeats` times (medians reported):

  engine, to device memory: `vae sample CKPT --prior N --no-npy --no-png
      --json --device D --threads T [--chunk C]`: N latents z ~ N(0, I)
      drawn, decoded and converted to uint8 in backend memory, never copied
      back. images_per_s from its --json (the engine's own timer, which
      includes the one-time set-up of the first chunk: plans, algorithm
      searches, first kernel loads); its rate after the first chunk
      (steady_images_per_s) and the wall time of the whole process
      (start-up, checkpoint load) are shown apart.
  engine, to a host file: the same with prior.npy written (--tmp DIR).
  PyTorch, to device memory: the decoder of tests/reference/vae_ref.py with
      the checkpoint's weights, float32, torch.no_grad, batches of B:
      z = randn(B, L) on the device, decode, sigmoid, *255 + 0.5, to uint8
      on the device (the engine's rounding). torch.set_num_threads(T); on
      cuda cudnn.benchmark, torch.cuda.synchronize() around each timing, and
      torch.compile of the same function as a second variant when it exists.
  PyTorch, to a host file: each batch .cpu().numpy() and appended to an
      .npy file (header first), flush + fsync + rename at the end, as the
      engine writes its .npy.

B (PyTorch) and C (engine) are swept (--batches, --chunks; the engine's own
default chunk is always tried); the best of each is reported, and the best
is reused for the host-file runs. Each PyTorch batch size gets one untimed
pass over all N first (allocator, cudnn autotuning, compilation), the engine
one untimed run. The timed runs are interleaved, one of every variant per
round, so that a slow spell of a shared machine hits all variants alike.

Host-file runs are bounded by the copy from the device and by the disk; the
script measures both for the same number of bytes (device->host copy of a
uint8 tensor, pageable and pinned, on cuda; a host memcpy on cpu; a write +
fsync of the same bytes in the --tmp directory) and prints the images/s each
allows beside the measured rate. With PNG sheets on (the default of --grid
and --interpolate) the host side also encodes PNG: vae_sheets_bench (built
beside the engine, bench/sheets_bench.c) times that on 10,000 images the
engine decodes (a 100x100 --grid), repeated to --sheet-images, as a grid
1,000 columns wide with --threads encoders; its rate is a fourth column.

Checkpoints: --ckpt NAME=PATH, else one trained here, once per --work DIR
(reused when present): `vae train CONFIG --epochs 1 --device cpu` on a small
data set written in the config's own format (the first --train-images
images of MNIST as IDX files; for CIFAR-10, random images in its binary
batch format). Decode speed does not depend on the weights.

Sanity check (before timing): the first --check images, decoded by both. The
engine's latents are read from prior-latents.npy when `vae sample` has
--save-latents, else regenerated here (Philox4x32-10 + Box-Muller in double:
include/vae_math.h's vae_normal_at to within a few float ulps, stream
VAE_RNG_PRIOR); the uint8 images
must agree to within 1 level (fp32; 4 with tf32, 8 with bf16).
"""
import argparse
import datetime
import importlib
import io
import json
import os
import platform
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time

from benchlib import ROOT, LOG, cpu_name, median, q, say  # also puts tests/reference on sys.path

try:
    import numpy as np
    import torch
    import vae_ref
except ImportError as e:
    print(f"decode_bench: needs torch and numpy ({e}); use Debian's /usr/bin/python3")
    sys.exit(77)

VAE_RNG_PRIOR = 2
DEFAULT_N = {"cpu": {"mnist_conv": 20000, "cifar10_conv": 5000},
             "cuda": {"mnist_conv": 1 << 20, "cifar10_conv": 1 << 19}}
DEFAULT_BATCHES = {"cpu": "64,256,1024,4096", "cuda": "1024,4096,16384,65536"}


# ------------------------------------------------------------- Philox


def philox_normals(seed, stream, sub, start, count):
    """float32 [count]: vae_normal_at(seed, stream, sub, start + k) for k in
    0..count-1 (include/vae_math.h: Philox4x32-10 with cuRAND's counter
    layout, Box-Muller on word pairs (0,1) and (2,3)), to within a few float
    ulps: evaluated here in double, by the engine in float with its own
    polynomials."""
    M = np.uint64(0xFFFFFFFF)
    idx = np.arange(start, start + count, dtype=np.uint64)
    g = idx >> np.uint64(2)
    s = (stream << 56) | (sub & 0x00FFFFFFFFFFFFFF)
    c0, c1 = g & M, g >> np.uint64(32)
    c2 = np.full_like(g, s & 0xFFFFFFFF)
    c3 = np.full_like(g, s >> 32)
    k0, k1 = seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF
    for r in range(10):
        p0 = np.uint64(0xD2511F53) * c0
        p1 = np.uint64(0xCD9E8D57) * c2
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ np.uint64(k0), p1 & M,
                          (p0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1), p0 & M)
        k0 = (k0 + 0x9E3779B9) & 0xFFFFFFFF
        k1 = (k1 + 0xBB67AE85) & 0xFFFFFFFF
    lane = (idx & np.uint64(3)).astype(np.int64)
    a = np.where(lane < 2, c0, c2).astype(np.float64)
    t = np.where(lane < 2, c1, c3).astype(np.float64)
    r = np.sqrt(-2.0 * np.log((a + 0.5) * (1.0 / 4294967296.0)))
    ang = 6.283185307179586 * ((t + 0.5) * (1.0 / 4294967296.0))
    return np.where(lane % 2 == 0, r * np.sin(ang), r * np.cos(ang)).astype(np.float32)


# ------------------------------------------------------------- engine


class Engine:
    def __init__(self, path):
        self.path = path
        try:
            h = subprocess.run([path, "sample", "--help"], capture_output=True, text=True)
        except OSError as e:
            sys.exit(f"decode_bench: cannot run {path}: {e}")
        self.help = h.stdout + h.stderr
        self.flags = set(re.findall(r"(--[a-z][a-z0-9-]*)", self.help))
        v = subprocess.run([path, "--version"], capture_output=True, text=True)
        self.version = (v.stdout or v.stderr).strip().splitlines()[0] if (v.stdout or v.stderr) else "?"

    def has(self, flag):
        return flag in self.flags

    def missing(self, flags):
        return [f for f in flags if not self.has(f)]


def write_mnist_subset(data_dir, out_dir, n_train, n_test):
    os.makedirs(os.path.join(out_dir, "mnist"), exist_ok=True)
    for train, n, stem in ((True, n_train, "train-images-idx3-ubyte"),
                           (False, n_test, "t10k-images-idx3-ubyte")):
        try:
            imgs = vae_ref.load_mnist(data_dir, train=train)[:n]
        except FileNotFoundError:
            imgs = np.random.default_rng(1).integers(0, 256, (n, 1, 28, 28), dtype=np.uint8)
        with open(os.path.join(out_dir, "mnist", stem), "wb") as f:
            f.write(struct.pack(">IIII", 0x803, len(imgs), 28, 28))
            f.write(np.ascontiguousarray(imgs).tobytes())


def write_cifar_synthetic(out_dir, n_per_batch):
    """CIFAR-10 binary batches (data_batch_1..5.bin, test_batch.bin; records
    of 1 label byte + 3072 pixel bytes) of random smooth-ish images."""
    d = os.path.join(out_dir, "cifar-10-batches-bin")
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(1)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    for name in names:
        coarse = rng.integers(0, 256, (n_per_batch, 3, 8, 8), dtype=np.uint8)
        img = coarse.repeat(4, axis=2).repeat(4, axis=3)
        rec = np.empty((n_per_batch, 3073), np.uint8)
        rec[:, 0] = rng.integers(0, 10, n_per_batch)
        rec[:, 1:] = img.reshape(n_per_batch, 3072)
        with open(os.path.join(d, name), "wb") as f:
            f.write(rec.tobytes())


def find_ckpt(run_dir):
    cks = [f for f in os.listdir(run_dir) if re.match(r"ckpt-.*\.safetensors$", f)]
    if not cks:
        return None
    return os.path.join(run_dir, max(cks, key=lambda f: os.path.getmtime(os.path.join(run_dir, f))))


def make_checkpoint(eng, config_path, cfg, name, work, threads, data_dir, n_train):
    run_dir = os.path.join(work, f"run-{name}")
    if os.path.isdir(run_dir):
        ck = find_ckpt(run_dir)
        if ck:
            say(f"[{name}] checkpoint (reused): {ck}")
            return ck
        shutil.rmtree(run_dir)
    dd = os.path.join(work, f"data-{name}")
    if cfg.dataset == "mnist":
        write_mnist_subset(data_dir, dd, n_train, min(n_train, 1024))
        what = f"the first {n_train} MNIST training images"
    elif cfg.dataset == "cifar10":
        per = max(1, n_train // 5)
        write_cifar_synthetic(dd, per)
        what = f"{5 * per} random images in CIFAR-10's binary format"
    else:
        sys.exit(f"decode_bench: {config_path}: dataset {cfg.dataset}; give --ckpt {name}=PATH")
    cmd = [eng.path, "train", config_path, "--epochs", "1", "--device", "cpu",
           "--threads", str(threads), "--no-progress", "--out", run_dir, "--data", dd,
           "--keep", "1"]
    say(f"[{name}] training a checkpoint on {what}: {q(cmd)}")
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    ck = find_ckpt(run_dir)
    if not ck:
        sys.exit(f"decode_bench: no ckpt-*.safetensors in {run_dir}")
    say(f"[{name}] checkpoint: {ck} ({time.perf_counter() - t0:.1f} s)")
    return ck


def engine_sample(eng, ckpt, n, out_dir, args, npy, chunk=None, extra=()):
    """One `vae sample --prior` run. Returns (result dict, command)."""
    cmd = [eng.path, "sample", ckpt, "--prior", str(n), "--out", out_dir,
           "--device", args.device, "--threads", str(args.threads)]
    if eng.has("--seed"):
        cmd += ["--seed", str(args.seed)]
    if eng.has("--json"):
        cmd += ["--json"]
    if eng.has("--no-progress"):
        cmd += ["--no-progress"]
    if eng.has("--no-png"):
        cmd += ["--no-png"]
    if not npy:
        cmd += ["--no-npy"]
    if chunk is not None:
        cmd += ["--chunk", str(chunk)]
    if args.precision and eng.has("--precision"):
        cmd += ["--precision", args.precision]
    cmd += list(extra)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise RuntimeError(f"{q(cmd)} exited {p.returncode}:\n{p.stderr.strip()}")
    res = {"wall": wall, "stderr": p.stderr}
    if eng.has("--json"):
        js = None
        for line in reversed(p.stdout.strip().splitlines()):
            line = line.strip()
            if line.startswith("{"):
                try:
                    js = json.loads(line)
                    break
                except ValueError:
                    pass
        if js is None:
            try:
                js = json.loads(p.stdout)
            except ValueError:
                raise RuntimeError(f"{q(cmd)}: no JSON object on stdout:\n{p.stdout[-2000:]}")
        res["json"] = js
        res["ips"] = float(js["images_per_s"])
        st = js.get("steady_images_per_s")  # after the first chunk (set-up there)
        res["steady"] = float(st) if st is not None else None
        res["first_s"] = js.get("first_chunk_seconds")
        if int(js.get("images", n)) != n:
            raise RuntimeError(f"{q(cmd)}: JSON says images={js.get('images')}, asked for {n}")
    else:
        res["ips"] = n / wall  # no --json: the whole process, start-up included
    return res, cmd


def png_sheets_rate(eng, sheets_bench, ckpt, args, tmp_root):
    """Images/s vae_sheets_bench encodes as PNG sheets: 10,000 images of a
    100x100 --grid decoded by the engine, repeated to --sheet-images, in a
    grid of 1,000 columns (a --grid 0,1 --steps 1000) with up to --threads
    encoders (one per block column of sheets). Returns (images/s, encoder
    threads, the bench's output lines, its command)."""
    d = tempfile.mkdtemp(prefix="vae-decode-sheets-", dir=tmp_root)
    try:
        cmd = [eng.path, "sample", ckpt, "--grid", "0,1", "--steps", "100", "--out", d,
               "--device", args.device, "--threads", str(args.threads), "--no-png"]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            raise RuntimeError(f"{q(cmd)} exited {p.returncode}:\n{p.stderr.strip()}")
        sheets = os.path.join(d, "sheets")
        os.mkdir(sheets)
        bcmd = [sheets_bench, "--npy", os.path.join(d, "grid.npy"), "--images",
                str(args.sheet_images), "--cols", "1000", "--threads", str(args.threads),
                "--repeats", str(max(1, args.repeats)), "--out", sheets]
        b = subprocess.run(bcmd, capture_output=True, text=True)
        if b.returncode != 0:
            raise RuntimeError(f"{q(bcmd)} exited {b.returncode}:\n{b.stderr.strip()}")
        m = re.search(r"([0-9.]+) images/s", b.stdout)
        t = re.search(r"([0-9]+) encoder thread", b.stdout)
        if not m or not t:
            raise RuntimeError(f"{q(bcmd)}: no images/s or encoder threads in its output:\n{b.stdout}")
        return float(m.group(1)), int(t.group(1)), b.stdout.strip().splitlines(), bcmd
    finally:
        shutil.rmtree(d, ignore_errors=True)


def engine_once(eng, ckpt, n, args, npy, chunk, tmp_root):
    """One engine run in a fresh directory under tmp_root (removed after)."""
    d = tempfile.mkdtemp(prefix="vae-decode-", dir=tmp_root)
    try:
        r, cmd = engine_sample(eng, ckpt, n, d, args, npy, chunk)
        if npy:
            p = os.path.join(d, "prior.npy")
            r["npy_bytes"] = os.path.getsize(p) if os.path.exists(p) else None
    finally:
        shutil.rmtree(d, ignore_errors=True)
    r["cmd"] = cmd
    return r


# ------------------------------------------------------------- PyTorch


class TorchDecoder:
    def __init__(self, cfg, ckpt, device, precision, compile_mode):
        self.cfg, self.device = cfg, torch.device(device)
        dec, shape, _ = vae_ref.build_layers(cfg.dec, (cfg.latent, 1, 1))
        tensors, meta = vae_ref.read_safetensors(ckpt)
        sd = {k[len("decoder."):]: torch.from_numpy(v).float() for k, v in tensors.items()
              if k.startswith("decoder.")}
        dec.load_state_dict(sd, strict=True)
        self.dec = dec.to(self.device).eval()
        self.L = cfg.latent
        self.shape = cfg.input
        self.D = cfg.D
        self.is_logit = cfg.likelihood == "bernoulli"
        self.meta = meta
        self.autocast = precision == "bf16"
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            tf32 = precision in ("tf32", "bf16")
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        self.compiled = None
        if compile_mode and hasattr(torch, "compile"):
            try:
                dyn = importlib.import_module("torch._dynamo")
                dyn.config.cache_size_limit = max(64, dyn.config.cache_size_limit)
            except (ImportError, AttributeError):
                pass
            self.compiled = torch.compile(self._decode_u8, mode=compile_mode, dynamic=False)

    def _decode_u8(self, z):
        out = self.dec(z)
        p = torch.sigmoid(out) if self.is_logit else out.clamp(0, 1)
        return (p.float() * 255.0 + 0.5).to(torch.uint8)  # as vae_to_u8: truncation of p*255+0.5

    def decode_u8(self, z, compiled=False):
        f = self.compiled if compiled else self._decode_u8
        with torch.no_grad():
            if self.autocast:
                with torch.autocast(self.device.type, dtype=torch.bfloat16):
                    return f(z)
            return f(z)

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def run(self, n, batch, compiled=False, sink=None):
        """Decode n prior samples in batches; returns seconds. sink(u8 [c, C, H, W] on
        the device) consumes each batch (host copy + write); None keeps it on the device."""
        C, H, W = self.shape
        self.sync()
        t0 = time.perf_counter()
        last = None
        with torch.no_grad():
            for i in range(0, n, batch):
                c = min(batch, n - i)
                z = torch.randn(c, self.L, device=self.device)
                # compiled: one graph per batch size; a short last batch runs eager
                u8 = self.decode_u8(z, compiled and c == batch).reshape(c, C, H, W)
                if sink is not None:
                    sink(u8)
                last = u8
        self.sync()
        dt = time.perf_counter() - t0
        del last
        return dt


def npy_header(shape):
    """The .npy (format 1.0) header of a C-order uint8 array of this shape."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": "|u1", "fortran_order": False, "shape": tuple(int(x) for x in shape)})
    return buf.getvalue()


class NpyFileSink:
    """Appends uint8 batches to an .npy (written as the engine writes prior.npy:
    temp file, data, flush, fsync, rename)."""

    def __init__(self, path, n, shape):
        self.path, self.tmp = path, path + ".tmp"
        self.f = open(self.tmp, "wb", buffering=0)
        self.f.write(npy_header((n,) + tuple(shape)))

    def __call__(self, u8):
        self.f.write(memoryview(u8.cpu().numpy()).cast("B"))

    def close(self):
        os.fsync(self.f.fileno())
        self.f.close()
        os.rename(self.tmp, self.path)


def torch_once(td, n, batch, compiled, tmp_root=None):
    """One PyTorch pass over n images: {"s": seconds}; with tmp_root the
    images go to an .npy there, "s" ends when the last write() returns (as
    the engine's --json seconds do) and "close" is the flush + fsync + rename."""
    if tmp_root is None:
        return {"s": td.run(n, batch, compiled)}
    d = tempfile.mkdtemp(prefix="vae-decode-", dir=tmp_root)
    try:
        sink = NpyFileSink(os.path.join(d, "torch-prior.npy"), n, td.shape)
        dt = td.run(n, batch, compiled, sink)
        t0 = time.perf_counter()
        sink.close()
        return {"s": dt, "close": time.perf_counter() - t0}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def interleaved(jobs, repeats):
    """Run every job once per round, `repeats` rounds, so that a slow spell
    of the machine hits all of them alike. {key: [result, ...]}; a job that
    raises is dropped and its error kept under (key, "error")."""
    out = {k: [] for k, _ in jobs}
    live = list(jobs)
    for _ in range(repeats):
        for k, fn in list(live):
            try:
                out[k].append(fn())
            except Exception as e:  # noqa: BLE001 — reported by the caller
                out[k] = (k, "error", f"{type(e).__name__}: {e}")
                live.remove((k, fn))
    return out


# ------------------------------------------------------------- limits


def copy_bandwidth(device, nbytes, repeats):
    """Bytes/s of the copy from the decode device to host memory: {kind: B/s}."""
    res = {}
    if device == "cuda":
        src = torch.randint(0, 255, (nbytes,), dtype=torch.uint8, device="cuda")
        for kind, pin in (("device->host, pageable", False), ("device->host, pinned", True)):
            dst = torch.empty(nbytes, dtype=torch.uint8, pin_memory=pin)
            dst.copy_(src)
            torch.cuda.synchronize()
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                dst.copy_(src)
                torch.cuda.synchronize()
                ts.append(time.perf_counter() - t0)
            res[kind] = nbytes / median(ts)
            del dst
        del src
        torch.cuda.empty_cache()
    else:
        src = np.ones(nbytes, np.uint8)
        dst = np.empty_like(src)
        np.copyto(dst, src)
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            np.copyto(dst, src)
            ts.append(time.perf_counter() - t0)
        res["host memcpy"] = nbytes / median(ts)
    return res


def disk_bandwidth(directory, nbytes, repeats):
    """(bytes/s until the last write() returns, bytes/s with the fsync) of
    writing nbytes to a new file in directory, in 8 MiB writes."""
    block = np.random.default_rng(0).integers(0, 256, 8 << 20, dtype=np.uint8).tobytes()
    tw, tf = [], []
    for _ in range(repeats):
        p = os.path.join(directory, f"vae-decode-disk-{os.getpid()}.tmp")
        t0 = time.perf_counter()
        with open(p, "wb", buffering=0) as f:
            left = nbytes
            while left > 0:
                k = min(left, len(block))
                f.write(block[:k])
                left -= k
            tw.append(time.perf_counter() - t0)
            os.fsync(f.fileno())
        tf.append(time.perf_counter() - t0)
        os.remove(p)
    return nbytes / median(tw), nbytes / median(tf)


# ------------------------------------------------------------- checks


def sanity_check(eng, td, ckpt, k, args, tmp_root):
    """Decode the first k prior latents in both; max |diff| of the uint8 images."""
    d = tempfile.mkdtemp(prefix="vae-decode-check-", dir=tmp_root)
    try:
        extra = ["--save-latents"] if eng.has("--save-latents") else []
        r, cmd = engine_sample(eng, ckpt, k, d, args, True, None, extra)
        eng_u8 = np.load(os.path.join(d, "prior.npy"))
        lp = os.path.join(d, "prior-latents.npy")
        if extra and os.path.exists(lp):
            z = np.load(lp).astype(np.float32)
            src = "prior-latents.npy (--save-latents)"
            zc = philox_normals(args.seed, VAE_RNG_PRIOR, 0, 0, k * td.L).reshape(k, td.L)
            zdiff = float(np.abs(zc - z).max())
            src += f"; Philox here agrees to {zdiff:.1e}"
        else:
            seed = args.seed
            if not eng.has("--seed"):
                seed = int(td.meta.get("seed", 1))
            z = philox_normals(seed, VAE_RNG_PRIOR, 0, 0, k * td.L).reshape(k, td.L)
            src = "regenerated here (Philox4x32-10, stream VAE_RNG_PRIOR)"
        with torch.no_grad():
            t_u8 = td.decode_u8(torch.from_numpy(z).to(td.device)).reshape(eng_u8.shape).cpu().numpy()
    finally:
        shutil.rmtree(d, ignore_errors=True)
    diff = np.abs(t_u8.astype(np.int16) - eng_u8.astype(np.int16))
    return int(diff.max()), float((diff > 0).mean()), src, eng_u8.shape


# ------------------------------------------------------------- main


def parse_n(spec, names, device):
    out = {nm: DEFAULT_N[device].get(nm, 10000) for nm in names}
    if spec:
        for part in spec.split(","):
            if "=" in part:
                k, v = part.split("=", 1)
                out[k.strip()] = int(float(v))
            else:
                out = {nm: int(float(part)) for nm in names}
    return out


def fmt_ips(x):
    return "n/a" if x is None or x != x else f"{x:,.0f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vae", default=os.path.join(ROOT, "build", "vae"), help="engine binary")
    ap.add_argument("--configs", default="mnist_conv,cifar10_conv",
                    help="comma-separated names in configs/ or .ini paths")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--n", default=None,
                    help="images per run: one number, or NAME=N,... (default cpu: mnist_conv=20000,"
                         "cifar10_conv=5000; cuda: 2^20, 2^19)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch.set_num_threads for PyTorch (default: --threads)")
    ap.add_argument("--batches", default=None,
                    help="PyTorch batch sizes to try (default cpu 64,256,1024,4096; cuda 1024..65536)")
    ap.add_argument("--chunks", default=None,
                    help="engine --chunk values to try besides its default (default: as --batches)")
    ap.add_argument("--precision", default=None, choices=("fp32", "tf32", "bf16"),
                    help="engine --precision and the matching PyTorch setting (default fp32, "
                         "the engine's flag not passed)")
    ap.add_argument("--compile", default="default",
                    help="torch.compile mode for the second PyTorch variant (cuda only; 'none' = off)")
    ap.add_argument("--seed", type=int, default=1, help="prior sampling seed (both sides)")
    ap.add_argument("--check", type=int, default=16, help="images compared between engine and PyTorch")
    ap.add_argument("--ckpt", action="append", default=[], metavar="NAME=PATH",
                    help="use this checkpoint instead of training one")
    ap.add_argument("--work", default=None,
                    help="keep trained checkpoints here and reuse them (default: a temp dir)")
    ap.add_argument("--train-images", type=int, default=2048, help="images in the training set")
    ap.add_argument("--data", default=None, help="data dir with mnist/ (default $VAE_DATA_DIR, else ./data)")
    ap.add_argument("--tmp", default=None, help="directory for the .npy files (default: $TMPDIR)")
    ap.add_argument("--sheets-bench", default=None,
                    help="vae_sheets_bench binary (default: bench/vae_sheets_bench beside --vae; "
                         "'none' skips the PNG column)")
    ap.add_argument("--sheet-images", type=int, default=100000,
                    help="images vae_sheets_bench encodes per repeat")
    ap.add_argument("--skip-engine", action="store_true")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--out", default=None, help="also write the results as markdown here")
    args = ap.parse_args()

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("decode_bench: --device cuda, but torch sees no CUDA device "
                 f"(torch {torch.__version__}, built with CUDA {torch.version.cuda})")
    torch_threads = args.torch_threads or args.threads
    torch.set_num_threads(torch_threads)
    names = []
    paths = {}
    for c in args.configs.split(","):
        c = c.strip()
        p = c if c.endswith(".ini") else os.path.join(ROOT, "configs", c + ".ini")
        nm = os.path.splitext(os.path.basename(p))[0]
        names.append(nm)
        paths[nm] = p
    ns = parse_n(args.n, names, args.device)
    batches = [int(b) for b in (args.batches or DEFAULT_BATCHES[args.device]).split(",")]
    chunks = [int(b) for b in (args.chunks or args.batches or DEFAULT_BATCHES[args.device]).split(",")]
    ckpts = dict(s.split("=", 1) for s in args.ckpt)
    compile_mode = None if args.compile in ("none", "off", "") or args.device != "cuda" else args.compile
    tmp_root = args.tmp or tempfile.gettempdir()
    data_dir = vae_ref.data_dir(args.data)

    eng = Engine(args.vae)
    sheets_bench = args.sheets_bench or os.path.join(os.path.dirname(os.path.abspath(args.vae)),
                                                     "bench", "vae_sheets_bench")
    if sheets_bench == "none" or not os.access(sheets_bench, os.X_OK):
        if args.sheets_bench not in (None, "none"):
            sys.exit(f"decode_bench: --sheets-bench {args.sheets_bench}: not an executable")
        if args.sheets_bench is None:
            say(f"note: no {sheets_bench} (build the vae_sheets_bench target, or give "
                "--sheets-bench PATH): no PNG sheets column")
        sheets_bench = None
    if args.device == "cuda":
        machine = (f"{torch.cuda.get_device_name(0)}; host {cpu_name()}, {os.cpu_count()} cores")
    else:
        machine = f"{cpu_name()}, {os.cpu_count()} cores"
    started = datetime.datetime.now(datetime.timezone.utc)
    say("command: " + q([sys.executable] + sys.argv))
    say(f"date:    {started:%Y-%m-%d %H:%M} UTC")
    say(f"machine: {machine}; threads {args.threads}"
        + (f" (PyTorch {torch_threads})" if torch_threads != args.threads else ""))
    say(f"versions: engine {eng.version} ({args.vae}); torch {torch.__version__}"
        + (f" (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})"
           if args.device == "cuda" else "") + f"; numpy {np.__version__}; "
        f"Python {platform.python_version()}")
    need = ["--json", "--no-npy", "--chunk", "--no-png", "--no-progress", "--save-latents",
            "--precision"]
    miss = eng.missing(need)
    if miss:
        say("engine:  `vae sample --help` does not list " + ", ".join(miss))
    if args.precision and not eng.has("--precision"):
        say(f"engine:  no --precision; the engine runs its default, PyTorch runs {args.precision}")
    if not eng.has("--json") and not args.skip_engine:
        say("engine:  without --json the engine figures are N / wall time of the whole "
            "process (start-up, checkpoint load, and whatever else `vae sample` writes)")
    eng_device_ok = eng.has("--no-npy")
    eng_chunks = [None] + ([c for c in chunks] if eng.has("--chunk") else [])

    own_work = args.work is None
    work = args.work or tempfile.mkdtemp(prefix="vae-decode-work-")
    os.makedirs(work, exist_ok=True)
    rows = []
    details = []
    try:
        for nm in names:
            cfg = vae_ref.RefConfig.load(paths[nm])
            n = ns[nm]
            ck = ckpts.get(nm) or make_checkpoint(eng, paths[nm], cfg, nm, work, args.threads,
                                                  data_dir, args.train_images)
            td = TorchDecoder(cfg, ck, args.device, args.precision, compile_mode)
            C, H, W = cfg.input
            D = cfg.D
            say(f"[{nm}] decoder: latent {cfg.latent} -> {C}x{H}x{W} ({D} bytes/image); N = {n}")

            # sanity check
            if args.check > 0:
                try:
                    mx, frac, src, shp = sanity_check(eng, td, ck, min(args.check, n), args, tmp_root)
                    tol = {"tf32": 4, "bf16": 8}.get(args.precision, 1)
                    ok = f"OK (<= {tol})" if mx <= tol else f"MISMATCH (> {tol})"
                    say(f"[{nm}] check: first {shp[0]} images, engine prior.npy vs PyTorch: "
                        f"max |diff| {mx} level(s), {100 * frac:.3f}% of pixels differ "
                        f"-> {ok}; latents {src}")
                    details.append(f"{nm}: check {ok}: max |diff| {mx}, {100 * frac:.3f}% of "
                                   f"pixels differ over {shp[0]} images; latents {src}")
                except Exception as e:  # noqa: BLE001 — report and go on timing
                    say(f"[{nm}] check: failed: {e}")
                    details.append(f"{nm}: check failed: {e}")

            bsz = [b for b in batches if b <= n] or [min(batches)]
            res = {}
            # phase 1, to device memory: every PyTorch batch size and variant and
            # every engine chunk, one of each per round
            jobs = []
            if not args.skip_torch:
                variants = [("eager", False)] + ([("compile", True)] if td.compiled else [])
                for vname, comp in variants:
                    ok = True
                    for bb in bsz:
                        try:
                            torch_once(td, n, bb, comp)  # untimed: allocator, autotuning, compiling
                        except Exception as e:  # noqa: BLE001 — e.g. no compiler for inductor
                            say(f"[{nm}] pytorch {vname}: failed: {type(e).__name__}: {e}")
                            ok = False
                            break
                    if ok:
                        jobs += [(("torch", vname, bb, comp),
                                  lambda bb=bb, comp=comp: torch_once(td, n, bb, comp)) for bb in bsz]
            if not args.skip_engine and eng_device_ok:
                try:  # untimed: the binary and the checkpoint into the page cache; default chunk
                    r0 = engine_once(eng, ck, n, args, False, None, tmp_root)
                    dflt = r0.get("json", {}).get("chunk")
                    for c in eng_chunks:
                        if c is None or c != dflt:
                            jobs.append((("engine", c),
                                         lambda c=c: engine_once(eng, ck, n, args, False, c, tmp_root)))
                except RuntimeError as e:
                    say(f"[{nm}] engine device: failed: {e}")
            r1 = interleaved(jobs, args.repeats)
            best_t = best_e = None
            for key, rs in r1.items():
                if isinstance(rs, tuple):
                    say(f"[{nm}] {key}: failed: {rs[2]}")
                    continue
                if key[0] == "torch":
                    _, vname, bb, comp = key
                    ts = [r["s"] for r in rs]
                    ips = n / median(ts)
                    say(f"[{nm}] pytorch {vname:7s} device  batch {bb:6d}: {ips:12,.0f} images/s "
                        f"(median of {len(ts)}: " + ", ".join(f"{t:.3f}" for t in ts) + " s)")
                    if best_t is None or ips > best_t[0]:
                        best_t = (ips, bb, vname, comp)
                else:
                    c = key[1]
                    ips = median([r["ips"] for r in rs])
                    wall = median([r["wall"] for r in rs])
                    ch = rs[0].get("json", {}).get("chunk", c)
                    sts = [r["steady"] for r in rs if r.get("steady")]
                    steady = (f"; after the first chunk {median(sts):,.0f} images/s, the first "
                              f"{median([r['first_s'] for r in rs if r.get('steady')]):.3f} s"
                              if sts else "")
                    say(f"[{nm}] engine  device  chunk {str(ch):>6s}{'*' if c is None else ' '}: "
                        f"{ips:12,.0f} images/s (median of {len(rs)}: "
                        + ", ".join(f"{r['ips']:,.0f}" for r in rs)
                        + f"; process wall {wall:.3f} s = {n / wall:,.0f} images/s{steady})")
                    if best_e is None or ips > best_e[0]:
                        best_e = (ips, ch, c, wall, rs[0]["cmd"], median(sts) if sts else None)
            if best_t:
                res["torch_dev"] = best_t
            if best_e:
                res["eng_dev"] = best_e
                details.append(f"{nm}: engine, device memory: {q(best_e[4])}")

            # phase 2, to a host file: the best of each, interleaved
            jobs = []
            if best_t and not args.skip_torch:
                torch_once(td, n, best_t[1], best_t[3], tmp_root)  # untimed
                jobs.append((("torch",), lambda: torch_once(td, n, best_t[1], best_t[3], tmp_root)))
            c_best = best_e[2] if best_e else None
            if not args.skip_engine:
                jobs.append((("engine",), lambda: engine_once(eng, ck, n, args, True, c_best, tmp_root)))
            r2 = interleaved(jobs, args.repeats)
            for key, rs in r2.items():
                if isinstance(rs, tuple):
                    say(f"[{nm}] {key[0]} host: failed: {rs[2]}")
                    continue
                if key[0] == "torch":
                    ts = [r["s"] for r in rs]
                    ips = n / median(ts)
                    ipsc = n / median([r["s"] + r["close"] for r in rs])
                    say(f"[{nm}] pytorch {best_t[2]:7s} host    batch {best_t[1]:6d}: {ips:12,.0f} "
                        f"images/s (median of {len(ts)}: " + ", ".join(f"{t:.3f}" for t in ts)
                        + f" s, to the last write; with flush + fsync + rename {ipsc:,.0f} images/s)")
                    res["torch_host"] = (ips, best_t[1], best_t[2], best_t[3], ipsc)
                else:
                    ips = median([r["ips"] for r in rs])
                    wall = median([r["wall"] for r in rs])
                    ch = rs[0].get("json", {}).get("chunk", c_best)
                    say(f"[{nm}] engine  host    chunk {str(ch):>6s} : {ips:12,.0f} images/s "
                        f"(median of {len(rs)}: " + ", ".join(f"{r['ips']:,.0f}" for r in rs)
                        + f"; process wall {wall:.3f} s = {n / wall:,.0f} images/s, incl. "
                        f"start-up and the .npy's fsync; prior.npy {rs[0].get('npy_bytes')} bytes)")
                    res["eng_host"] = (ips, ch, c_best, wall, rs[0]["cmd"])
                    details.append(f"{nm}: engine, host file: {q(rs[0]['cmd'])}")
                    if rs[0].get("json"):
                        details.append(f"{nm}: engine JSON (host run): {json.dumps(rs[0]['json'])}")

            # limits of the host path
            nbytes = n * D
            cbw = copy_bandwidth(args.device, nbytes, max(3, args.repeats))
            dw, dbw = disk_bandwidth(tmp_root, nbytes, max(1, args.repeats))
            lim = {k: v for k, v in cbw.items()}
            lim[f"disk write, to the last write() ({tmp_root})"] = dw
            lim[f"disk write + fsync ({tmp_root})"] = dbw
            for k, v in lim.items():
                say(f"[{nm}] limit   {k}: {v / 1e9:.2f} GB/s for {nbytes / 1e6:.1f} MB "
                    f"= {v / D:,.0f} images/s")
            res["limits"] = lim
            res["copy"], res["disk_write"], res["disk_fsync"] = cbw, dw, dbw
            if sheets_bench and not args.skip_engine:
                try:
                    ips, enc, out_lines, bcmd = png_sheets_rate(eng, sheets_bench, ck, args,
                                                                 tmp_root)
                    res["png"] = ips
                    for line in out_lines:
                        say(f"[{nm}] {line}")
                    say(f"[{nm}] limit   PNG sheets (1,000 columns, {enc} encoder "
                        f"thread{'s' if enc != 1 else ''}): {ips:,.0f} images/s")
                    details.append(f"{nm}: PNG sheets: {q(bcmd)}")
                except RuntimeError as e:
                    say(f"[{nm}] PNG sheets: failed: {e}")
            rows.append((nm, n, D, res))
    finally:
        if own_work:
            shutil.rmtree(work, ignore_errors=True)

    # tables
    n_log = len(LOG)
    say("")
    # after the first chunk: the engine's rate once its one-time set-up
    # (plans, algorithm searches, first kernel loads) is behind it, as
    # PyTorch's timed passes follow an untimed one
    table = ["| config | N | decode to | engine images/s (chunk) | PyTorch images/s (batch, variant) "
             "| engine / PyTorch | engine after the first chunk | ratio after the first chunk |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    for nm, n, D, res in rows:
        for key_e, key_t, label in (("eng_dev", "torch_dev", "device memory"),
                                    ("eng_host", "torch_host", "host .npy file")):
            e, t = res.get(key_e), res.get(key_t)
            es = f"{fmt_ips(e[0])} ({e[1] if e[1] is not None else 'default'})" if e else "n/a"
            ts = f"{fmt_ips(t[0])} ({t[1]}, {t[2]})" if t else "n/a"
            ratio = f"{e[0] / t[0]:.2f}" if e and t else "n/a"
            st = e[5] if e and len(e) > 5 else None
            ss = fmt_ips(st) if st else "n/a"
            sr = f"{st / t[0]:.2f}" if st and t else "n/a"
            table.append(f"| {nm} | {n:,} | {label} | {es} | {ts} | {ratio} | {ss} | {sr} |")
    table += ["", "Host-file path, what bounds it. images/s = bandwidth / bytes per image. "
              "Bound = the lowest of decode (engine, device memory), copy to the host and the "
              "disk, as if the three overlapped fully; 'serial' = 1 / (1/decode + 1/copy + "
              "1/disk), none overlapping. The engine's --json seconds end at its last write(), "
              "before the .npy's flush + fsync + rename, so its figure is set against the disk "
              "up to the last write(); the fsync figure bounds a durable file. 'PNG sheets' is "
              "what the host encodes as PNG in a grid 1,000 images wide (vae_sheets_bench, one "
              "encoder per column of sheets, at most --threads): a further bound when sheets are "
              "on (--grid and --interpolate by default; a grid one sheet wide, and --prior's "
              "sheets, get one encoder), not part of the --prior .npy run measured here.", "",
              "| config | engine decode | copy to host | disk to last write() | disk + fsync "
              "| bound (serial) | engine to host | limited by | PNG sheets |",
              "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for nm, n, D, res in rows:
        if "copy" not in res:
            continue
        copy = max((v, k) for k, v in res["copy"].items())
        dev = res["eng_dev"][0] if res.get("eng_dev") else None
        host = res["eng_host"][0] if res.get("eng_host") else None
        parts = [(copy[0] / D, "copy"), (res["disk_write"] / D, "disk")]
        if dev:
            parts.append((dev, "decode"))
        pb = min(parts)
        sb = 1.0 / sum(1.0 / x for x, _ in parts)
        cs = "; ".join(f"{k} {v / 1e9:.2f} GB/s" for k, v in res["copy"].items())
        table.append(
            f"| {nm} | {fmt_ips(dev)} | {fmt_ips(copy[0] / D)} ({cs}) "
            f"| {fmt_ips(res['disk_write'] / D)} ({res['disk_write'] / 1e9:.2f} GB/s) "
            f"| {fmt_ips(res['disk_fsync'] / D)} ({res['disk_fsync'] / 1e9:.2f} GB/s) "
            f"| {fmt_ips(pb[0])} ({fmt_ips(sb)}) | "
            + (f"{fmt_ips(host)} = {100 * host / pb[0]:.0f}% of the bound | {pb[1]} |"
               if host else "n/a | |")
            + f" {fmt_ips(res['png']) if res.get('png') else 'n/a'} |")
    for line in table:
        say(line)
    if not eng.has("--json") and not args.skip_engine:
        say("(engine figures: N / process wall time, no --json in this `vae sample`)")

    if args.out:
        with open(args.out, "w") as f:
            f.write(f"# Decode throughput: engine vs PyTorch ({args.device})\n\n")
            f.write(f"Date: {started:%Y-%m-%d %H:%M} UTC. Machine: {machine}; threads {args.threads}.\n")
            f.write(f"Versions: engine {eng.version}; torch {torch.__version__}; numpy {np.__version__}.\n\n")
            f.write("```\n" + q([sys.executable] + sys.argv) + "\n```\n\n")
            f.write("\n".join(table) + "\n\n")
            f.write("Details:\n\n" + "".join(f"- {d}\n" for d in details) + "\n")
            f.write("Full output (the tables above left out):\n\n```\n" + "\n".join(LOG[:n_log]) + "\n```\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
