#!/usr/bin/env python3
"""gpu_train_bench.py — training throughput (images/s) of the engine against
the same model in PyTorch, eager and torch.compile, same batch, same data on
the same device.

  python3 bench/gpu_train_bench.py [--vae build/vae] [--device cuda|cpu]
      [--configs mnist_conv,cifar10_conv] [--batches 128,1024] [--epochs E]
      [--steps N] [--warmup W] [--repeats R] [--compile MODE|none]
      [--no-compile-optimizer] [--tf32] [--threads T] [--data DIR]
      [--train-images N] [--synthetic] [--no-graph-ab] [--out results.md]

Engine: `vae train CONFIG --epochs E --batch B --device D --no-progress
--out TMP --data DIR` (plus --threads T on the CPU). Its metrics.jsonl has
one line per epoch; images_per_s and epoch_time_s cover that epoch's
training steps only (batch gather, forward, backward, Adam, the step's
bookkeeping; not the test-set evaluation or the checkpoint after it). The
first epoch includes cuDNN's algorithm search and start-up, so the figure
reported is the median over epochs 2..E (the best is shown beside it); with
E = 1 it is that epoch. On CUDA the engine also runs a second time with
VAE_CUDA_GRAPH=0 (every kernel of a step launched from the host instead of
one graph launch per step), so the table shows what the graphs buy
(--no-graph-ab skips that run).

PyTorch: the model of tests/reference/vae_ref.py (same layers, same loss) in
float32, Adam at the config's learning rate (torch's default implementation,
foreach on CUDA), the training set as one float tensor on the device, batches
x_all[perm[j:j+B]] gathered on the device, noise torch.randn(B, L) on the
device, zero_grad(set_to_none=True), loss, backward, step. On CUDA
cudnn.benchmark is on and TF32 is off for convolutions and matmuls (the
engine computes in fp32 FMA; --tf32 allows it in PyTorch). `--warmup` steps
first (compilation, autotuning), then `--repeats` windows of `--steps` steps
each, torch.cuda.synchronize() before and after each window; images/s = the
median window. The variants (eager, compiled) run their windows
interleaved, one of each per round. torch.compile (mode `--compile`,
dynamic=False) compiles the loss function (forward, and the backward
through AOTAutograd) and, unless --no-compile-optimizer, the optimizer step
too; it is skipped with the reason printed where torch has no compile or
compiling fails.

Data: MNIST from --data DIR ($VAE_DATA_DIR, else ./data; DIR/mnist/ or
DIR/), CIFAR-10 from DIR/cifar-10-batches-bin. Where a data set is missing
(or with --synthetic, or --train-images N for a smaller set) the script
writes one in the data set's own format into a temp dir (random blocky
images; throughput does not depend on the pixel values) and both sides read
that. The engine reads from disk and keeps the set on the device; PyTorch
gets the same arrays.

Prints the GPU (or CPU), versions, a table of images/s, the ms per epoch
(60,000 MNIST / 50,000 CIFAR-10 images at that rate) and the ratios
engine/eager and engine/compile; for mnist_conv at batch 128 on CUDA also
the targets of the issue (>= 10x eager, >= 2x compile, epoch < 100 ms;
stated for an H200). --out FILE writes the same as markdown.
"""
import argparse
import datetime
import json
import math
import os
import platform
import shutil
import signal
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
    print(f"gpu_train_bench: needs torch and numpy ({e})")
    sys.exit(77)

EPOCH_IMAGES = {"mnist": 60000, "cifar10": 50000}
DEFAULTS = {  # per device: epochs, steps, warmup, repeats
    "cuda": dict(epochs=6, steps=200, warmup=30, repeats=5),
    "cpu": dict(epochs=2, steps=20, warmup=3, repeats=3),
}


def fmt(x, spec=",.0f"):
    return "n/a" if x is None or x != x else format(x, spec)


def nvidia_smi():
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,"
                            "clocks.max.mem", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
        if r.returncode == 0 and r.stdout.strip():
            return r.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return None


# ------------------------------------------------------------- data


def blocky(rng, n, c, h, w, cell):
    """n random images [n, c, h, w] uint8 of cell x cell blocks."""
    coarse = rng.integers(0, 256, (n, c, h // cell, w // cell), dtype=np.uint8)
    return np.ascontiguousarray(coarse.repeat(cell, axis=2).repeat(cell, axis=3))


def write_idx(path, imgs):
    n, _, h, w = imgs.shape
    with open(path, "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, h, w))
        f.write(np.ascontiguousarray(imgs).tobytes())


def write_mnist(out_dir, train, test):
    d = os.path.join(out_dir, "mnist")
    os.makedirs(d, exist_ok=True)
    write_idx(os.path.join(d, "train-images-idx3-ubyte"), train)
    write_idx(os.path.join(d, "t10k-images-idx3-ubyte"), test)


def write_cifar(out_dir, train, test, rng):
    """CIFAR-10 binary batches: data_batch_1..5.bin (the training images split
    in five) and test_batch.bin; records of 1 label byte + 3072 pixel bytes."""
    d = os.path.join(out_dir, "cifar-10-batches-bin")
    os.makedirs(d, exist_ok=True)
    parts = np.array_split(np.arange(len(train)), 5)
    for name, imgs in [(f"data_batch_{i + 1}.bin", train[p]) for i, p in enumerate(parts)] + \
                      [("test_batch.bin", test)]:
        rec = np.empty((len(imgs), 3073), np.uint8)
        rec[:, 0] = rng.integers(0, 10, len(imgs))
        rec[:, 1:] = imgs.reshape(len(imgs), 3072)
        with open(os.path.join(d, name), "wb") as f:
            f.write(rec.tobytes())


def load_cifar_train(directory):
    for d in (os.path.join(directory, "cifar-10-batches-bin"), directory):
        names = [os.path.join(d, f"data_batch_{i}.bin") for i in range(1, 6)]
        if all(os.path.exists(p) for p in names) and os.path.exists(os.path.join(d, "test_batch.bin")):
            parts = []
            for p in names:
                raw = np.fromfile(p, np.uint8)
                if raw.size % 3073:
                    raise ValueError(f"{p}: not CIFAR-10 binary records")
                parts.append(raw.reshape(-1, 3073)[:, 1:].reshape(-1, 3, 32, 32))
            return np.concatenate(parts)
    raise FileNotFoundError(f"no CIFAR-10 batches under {directory}/cifar-10-batches-bin or {directory}")


def prepare_data(dataset, data_dir, work, n_train, synthetic, shape):
    """(engine --data dir, train uint8 [N, C, H, W], description)."""
    rng = np.random.default_rng(1)
    real = None
    if not synthetic:
        try:
            real = vae_ref.load_mnist(data_dir, train=True) if dataset == "mnist" else load_cifar_train(data_dir)
        except (FileNotFoundError, ValueError) as e:
            say(f"data:    {dataset}: {e}; using synthetic images")
    if real is not None and (n_train is None or n_train >= len(real)):
        return data_dir, real, f"{dataset} from {data_dir} ({len(real)} training images)"
    out = os.path.join(work, f"data-{dataset}")
    if real is not None:
        train = real[:n_train]
        try:
            test = (vae_ref.load_mnist(data_dir, train=False) if dataset == "mnist" else None)
        except (FileNotFoundError, ValueError):
            test = None
        test = test[:min(len(train), 10000)] if test is not None else train[:min(len(train), 10000)]
        what = f"the first {len(train)} {dataset} training images (written to {out})"
    else:
        n = n_train or EPOCH_IMAGES[dataset]
        C, H, W = shape
        train = blocky(rng, n, C, H, W, 4)
        test = blocky(rng, min(n, 10000), C, H, W, 4)
        what = f"{n} synthetic {C}x{H}x{W} images in {dataset}'s format (written to {out})"
    if dataset == "mnist":
        write_mnist(out, train, test)
    else:
        write_cifar(out, train, test, rng)
    return out, train, what


# ------------------------------------------------------------- engine


def engine_version(vae):
    try:
        v = subprocess.run([vae, "--version"], capture_output=True, text=True, timeout=60)
        s = (v.stdout or v.stderr).strip()
        return s.splitlines()[0] if s else "?"
    except (OSError, subprocess.SubprocessError) as e:
        return f"? ({e})"


def run_engine(args, config, batch, data, work, graphs=True):
    """{"ips": median images/s over epochs 2..E, "best", "epoch_s", "epochs": [...],
    "cmd", "wall"} or {"error": text, "cmd"}. graphs=False runs it with
    VAE_CUDA_GRAPH=0 (each step's kernels launched one by one)."""
    out = tempfile.mkdtemp(prefix="run-", dir=work)
    cmd = [args.vae, "train", config, "--epochs", str(args.epochs), "--batch", str(batch),
           "--device", args.device, "--no-progress", "--out", out, "--data", data, "--keep", "1"]
    if args.device == "cpu":
        cmd += ["--threads", str(args.threads)]
    env = dict(os.environ)
    if not graphs:
        env["VAE_CUDA_GRAPH"] = "0"
    # the engine's switches inherited from this environment (VAE_CUDA_SIDE,
    # VAE_CUDA_PDL, ...), named with the command so that the report says
    # which variant ran
    knobs = [f"{k}={v}" for k, v in sorted(env.items())
             if k.startswith(("VAE_CUDA_", "VAE_CONV_", "VAE_CUDNN_", "VAE_CUBLASLT", "VAE_LT_"))]
    shown = knobs + cmd  # for the report
    say(f"engine:  {q(shown)}")
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=args.engine_timeout, env=env)
    except subprocess.TimeoutExpired:
        shutil.rmtree(out, ignore_errors=True)
        return {"error": f"timed out after {args.engine_timeout} s", "cmd": shown}
    except OSError as e:
        shutil.rmtree(out, ignore_errors=True)
        return {"error": str(e), "cmd": shown}
    wall = time.perf_counter() - t0
    try:
        if r.returncode != 0:
            tail = "\n".join((r.stdout + r.stderr).strip().splitlines()[-15:])
            return {"error": f"exit status {r.returncode}:\n{tail}", "cmd": shown}
        with open(os.path.join(out, "metrics.jsonl")) as f:
            ms = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        return {"error": f"metrics.jsonl: {e}", "cmd": shown}
    finally:
        shutil.rmtree(out, ignore_errors=True)
    if not ms:
        return {"error": "metrics.jsonl is empty", "cmd": shown}
    use = ms[1:] if len(ms) > 1 else ms
    ips = [m["images_per_s"] for m in use]
    res = {"ips": median(ips), "best": max(ips), "epoch_s": median([m["epoch_time_s"] for m in use]),
           "epochs": ms, "cmd": shown, "wall": wall,
           "devices": sorted({str(m.get("device", "?")) for m in ms}),
           "info": next((ln for ln in r.stderr.splitlines() if ln.startswith("vae: training")), "")}
    for m in ms:
        if m.get("skipped_steps"):
            res["warn"] = f"skipped steps: {m['skipped_steps']}"
        if not math.isfinite(m.get("train_nelbo", float("nan"))):
            res["warn"] = "non-finite train nelbo"
    return res


# ------------------------------------------------------------- PyTorch


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class TorchVariant:
    """One PyTorch training set-up (a fresh model and optimizer); window(n)
    runs n steps and returns seconds."""

    def __init__(self, cfg, x_all, perm, batch, device, compile_mode, compile_opt):
        torch.manual_seed(cfg.seed)
        self.cfg, self.x_all, self.perm, self.B, self.device = cfg, x_all, perm, batch, device
        self.nb = max(1, x_all.shape[0] // batch)
        self.model = vae_ref.RefVAE(cfg).to(device).float()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.i = 0
        self.loss = None
        self.note = ""
        model = self.model

        def loss_fn(x, eps):
            return model.loss(x, eps)[0]

        self.loss_fn = loss_fn
        self.opt_step = self.opt.step
        if compile_mode:
            self.loss_fn = torch.compile(loss_fn, mode=compile_mode, dynamic=False)
            if compile_opt:
                opt = self.opt

                @torch.compile(fullgraph=False, mode=compile_mode, dynamic=False)
                def opt_step():
                    opt.step()

                self.opt_step = opt_step

    def step(self):
        B = self.B
        j = (self.i % self.nb) * B
        self.i += 1
        x = self.x_all[self.perm[j:j + B]]
        eps = torch.randn(B, self.cfg.latent, device=self.device) if self.cfg.type == "vae" else None
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss_fn(x, eps)
        loss.backward()
        self.opt_step()
        self.loss = loss

    def warm(self, n):
        try:
            for _ in range(n):
                self.step()
        except Exception as e:  # noqa: BLE001 — a compiled optimizer may fail alone
            if self.opt_step == self.opt.step:  # bound methods: ==, not `is`
                raise
            self.note = f"optimizer step eager (compiling it failed: {type(e).__name__}: {e})"
            self.opt_step = self.opt.step
            for _ in range(n):
                self.step()
        sync(self.device)

    def window(self, n):
        sync(self.device)
        t0 = time.perf_counter()
        for _ in range(n):
            self.step()
        sync(self.device)
        return time.perf_counter() - t0

    def final_loss(self):
        return float(self.loss) if self.loss is not None else float("nan")


def torch_bench(args, cfg, x_all, batch, device, allow_compile=True):
    """{variant: {"ips", "windows": [s...], "loss", "note"} or {"error"}}."""
    g = torch.Generator(device="cpu").manual_seed(cfg.seed)
    perm = torch.randperm(x_all.shape[0], generator=g).to(device)
    variants = [("eager", None)]
    if args.compile_mode and allow_compile:
        if hasattr(torch, "compile"):
            variants.append(("compile", args.compile_mode))
        else:
            say(f"pytorch: torch {torch.__version__} has no torch.compile; compiled variant skipped")
    live, res = [], {}
    for name, mode in variants:
        t0 = time.perf_counter()
        try:
            if mode:
                try:
                    import torch._dynamo as dyn  # noqa: PLC0415
                    dyn.reset()
                except (ImportError, AttributeError):
                    pass
            v = TorchVariant(cfg, x_all, perm, batch, device, mode, args.compile_optimizer)
            v.warm(max(args.warmup, 3 if mode else 1))
            live.append((name, v))
            res[name] = {"windows": [], "setup_s": time.perf_counter() - t0, "note": v.note}
            say(f"pytorch: {name:7s} batch {batch}: set-up + {max(args.warmup, 3 if mode else 1)} warm-up "
                f"steps {time.perf_counter() - t0:.1f} s" + (f"; {v.note}" if v.note else ""))
        except Exception as e:  # noqa: BLE001 — reported, the other variants go on
            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            res[name] = {"error": msg}
            say(f"pytorch: {name} batch {batch}: failed: {msg}")
    for _ in range(args.repeats):
        for name, v in list(live):
            try:
                res[name]["windows"].append(v.window(args.steps))
            except Exception as e:  # noqa: BLE001 — e.g. a recompilation that fails late
                msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                res[name] = {"error": msg}
                live.remove((name, v))
                say(f"pytorch: {name} batch {batch}: failed while timing: {msg}")
    for name, v in live:
        r = res[name]
        r["ips"] = args.steps * batch / median(r["windows"])
        r["loss"] = v.final_loss()
        if not math.isfinite(r["loss"]):
            r["warn"] = "non-finite loss"
        say(f"pytorch: {name:7s} batch {batch}: {r['ips']:12,.0f} images/s (median of {len(r['windows'])} "
            f"windows of {args.steps} steps: " + ", ".join(f"{w * 1e3:.1f}" for w in r["windows"])
            + f" ms; last loss {r['loss']:.2f})")
    del live
    return res


# ------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vae", default=os.path.join(ROOT, "build", "vae"), help="engine binary")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--configs", default="mnist_conv,cifar10_conv",
                    help="comma-separated names in configs/ or .ini paths")
    ap.add_argument("--batches", default="128,1024")
    ap.add_argument("--epochs", type=int, default=None, help="engine epochs (default cuda 6, cpu 2)")
    ap.add_argument("--steps", type=int, default=None, help="PyTorch steps per timed window "
                    "(default cuda 200, cpu 20)")
    ap.add_argument("--warmup", type=int, default=None, help="PyTorch untimed steps first "
                    "(default cuda 30, cpu 3)")
    ap.add_argument("--repeats", type=int, default=None, help="timed windows per variant "
                    "(default cuda 5, cpu 3)")
    ap.add_argument("--compile", default="default",
                    help="torch.compile mode of the compiled variant (default, reduce-overhead, "
                         "max-autotune, ...); 'none' = eager only")
    ap.add_argument("--no-compile-optimizer", dest="compile_optimizer", action="store_false",
                    help="compile the loss only, run the optimizer step eager")
    ap.add_argument("--tf32", action="store_true", help="allow TF32 in PyTorch (the engine stays fp32)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(),
                    help="engine --threads and torch.set_num_threads on the CPU")
    ap.add_argument("--data", default=None, help="data dir (default $VAE_DATA_DIR, else ./data)")
    ap.add_argument("--train-images", type=int, default=None,
                    help="use only this many training images (written to a temp dir)")
    ap.add_argument("--synthetic", action="store_true", help="random images even where data exist")
    ap.add_argument("--engine-timeout", type=float, default=900, help="seconds per `vae train` run")
    ap.add_argument("--time-limit", type=float, default=0,
                    help="seconds: start no new (config, batch) after this, and no torch.compile "
                         "with less than --compile-reserve left (0 = no limit)")
    ap.add_argument("--compile-reserve", type=float, default=120,
                    help="seconds a compiled variant needs (compilation + timing), for --time-limit")
    ap.add_argument("--skip-engine", action="store_true")
    ap.add_argument("--no-graph-ab", dest="graph_ab", action="store_false",
                    help="on CUDA, do not also run the engine with VAE_CUDA_GRAPH=0")
    ap.add_argument("--skip-torch", action="store_true")
    ap.add_argument("--work", default=None, help="temp files here (default $TMPDIR)")
    ap.add_argument("--out", default=None, help="also write the results as markdown here")
    args = ap.parse_args()
    for k, v in DEFAULTS[args.device].items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if min(args.epochs, args.steps, args.repeats) < 1 or args.warmup < 0:
        sys.exit("gpu_train_bench: --epochs, --steps, --repeats must be >= 1, --warmup >= 0")
    args.compile_mode = None if args.compile in ("none", "off", "") else args.compile

    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_train_bench: --device cuda, but torch sees no CUDA device "
                 f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); "
                 "use --device cpu for the smoke test")
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.backends.cuda.matmul.allow_tf32 = args.tf32

    if not args.skip_engine and not (os.path.isfile(args.vae) and os.access(args.vae, os.X_OK)):
        sys.exit(f"gpu_train_bench: no engine binary at {args.vae} (--vae PATH, or --skip-engine)")
    data_dir = vae_ref.data_dir(args.data)
    started = datetime.datetime.now(datetime.timezone.utc)
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(0)
        machine = (f"{torch.cuda.get_device_name(0)} ({p.multi_processor_count} SMs, "
                   f"{p.total_memory / 2**30:.1f} GiB); host {cpu_name()}, {os.cpu_count()} cores")
        smi = nvidia_smi()
        if smi:
            machine += f"; nvidia-smi: {smi}"
    else:
        machine = f"{cpu_name()}, {os.cpu_count()} cores; threads {args.threads}"
    eng_ver = engine_version(args.vae) if not args.skip_engine else "(skipped)"
    versions = (f"engine {eng_ver} ({args.vae}); torch {torch.__version__}"
                + (f" (CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()})"
                   if device.type == "cuda" else "")
                + f"; numpy {np.__version__}; Python {platform.python_version()}")
    say("command: " + q([sys.executable] + sys.argv))
    say(f"date:    {started:%Y-%m-%d %H:%M} UTC")
    say(f"machine: {machine}")
    say(f"versions: {versions}")
    say(f"settings: engine --epochs {args.epochs} (median of epochs {'2..' + str(args.epochs) if args.epochs > 1 else '1'}); "
        f"PyTorch {args.repeats} windows x {args.steps} steps after {args.warmup} warm-up; "
        f"compile {args.compile_mode or 'off'}"
        + (" (loss + optimizer step)" if args.compile_mode and args.compile_optimizer else
           " (loss)" if args.compile_mode else "")
        + f"; TF32 in PyTorch {'on' if args.tf32 else 'off'}")

    ctx = dict(args=args, device=device, started=started, machine=machine, versions=versions)
    work = tempfile.mkdtemp(prefix="vae-gpu-bench-", dir=args.work)
    rows, details = [], []
    t_start = time.perf_counter()

    def over_time(need=0.0):
        return args.time_limit > 0 and time.perf_counter() - t_start + need > args.time_limit

    stopped = None
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        for c in [s.strip() for s in args.configs.split(",") if s.strip()]:
            path = c if c.endswith(".ini") else os.path.join(ROOT, "configs", c + ".ini")
            name = os.path.splitext(os.path.basename(path))[0]
            cfg = vae_ref.RefConfig.load(path)
            if cfg.dataset not in EPOCH_IMAGES:
                say(f"[{name}] dataset {cfg.dataset}: not supported here; skipped")
                continue
            dd, train_u8, what = prepare_data(cfg.dataset, data_dir, work, args.train_images,
                                              args.synthetic, cfg.input)
            say(f"[{name}] data: {what}")
            details.append(f"{name}: data: {what}")
            x_all = None
            if not args.skip_torch:
                x_all = torch.from_numpy(train_u8).to(device).float().div_(255.0)
            for b in [int(s) for s in args.batches.split(",") if s.strip()]:
                if b > len(train_u8):
                    say(f"[{name}] batch {b} > {len(train_u8)} training images; skipped")
                    continue
                if over_time():
                    say(f"[{name}] batch {b}: skipped (--time-limit {args.time_limit:g} s reached)")
                    continue
                row = {"config": name, "dataset": cfg.dataset, "batch": b}
                rows.append(row)
                if not args.skip_engine:
                    e = run_engine(args, path, b, dd, work)
                    row["engine"] = e
                    if "error" in e:
                        say(f"[{name}] engine batch {b}: failed: {e['error']}")
                        details.append(f"{name} b{b}: engine failed: {q(e['cmd'])}: {e['error']}")
                    else:
                        per = ", ".join(f"{m['images_per_s']:,.0f}" for m in e["epochs"])
                        say(f"[{name}] engine  batch {b}: {e['ips']:12,.0f} images/s (median of epochs "
                            f"{'2..' if len(e['epochs']) > 1 else ''}{len(e['epochs'])}; best {e['best']:,.0f}; "
                            f"epoch {e['epoch_s'] * 1e3:.1f} ms; per epoch: {per}; process {e['wall']:.1f} s)"
                            + (f"; WARNING {e['warn']}" if e.get("warn") else ""))
                        if args.device not in e["devices"]:
                            say(f"[{name}] WARNING: the engine ran on {e['devices']}, not {args.device}")
                        details.append(f"{name} b{b}: engine: {q(e['cmd'])}; {e['info']}; epochs: "
                                       + "; ".join(f"{m['epoch']:.0f}: {m['images_per_s']:,.0f} img/s, "
                                                   f"{m['epoch_time_s'] * 1e3:.1f} ms, test nelbo "
                                                   f"{m.get('test_nelbo', float('nan')):.2f}"
                                                   for m in e["epochs"]))
                    if args.device == "cuda" and args.graph_ab:
                        e0 = run_engine(args, path, b, dd, work, graphs=False)
                        row["engine_nograph"] = e0
                        if "error" in e0:
                            details.append(f"{name} b{b}: engine without graphs failed: {e0['error']}")
                        else:
                            say(f"[{name}] engine  batch {b} without graphs (VAE_CUDA_GRAPH=0): "
                                f"{e0['ips']:12,.0f} images/s (best {e0['best']:,.0f})")
                            details.append(f"{name} b{b}: engine without graphs: "
                                           + "; ".join(f"{m['epoch']:.0f}: {m['images_per_s']:,.0f} img/s"
                                                       for m in e0["epochs"]))
                    write_report(ctx, rows, details, final=False)
                if not args.skip_torch:
                    allow_compile = not over_time(args.compile_reserve)
                    if args.compile_mode and not allow_compile:
                        say(f"[{name}] batch {b}: torch.compile skipped (less than "
                            f"{args.compile_reserve:g} s of --time-limit left)")
                    t = torch_bench(args, cfg, x_all, b, device, allow_compile)
                    row["torch"] = t
                    for k, v in t.items():
                        if "error" in v:
                            details.append(f"{name} b{b}: pytorch {k} failed: {v['error']}")
                        else:
                            details.append(f"{name} b{b}: pytorch {k}: windows (ms) "
                                           + ", ".join(f"{w * 1e3:.1f}" for w in v["windows"])
                                           + f"; set-up + warm-up {v['setup_s']:.1f} s"
                                           + (f"; {v['note']}" if v.get("note") else "")
                                           + (f"; WARNING {v['warn']}" if v.get("warn") else ""))
                    write_report(ctx, rows, details, final=False)
            del x_all
            if device.type == "cuda":
                torch.cuda.empty_cache()
    except (KeyboardInterrupt, _Stop) as e:
        stopped = "SIGTERM" if isinstance(e, _Stop) else "interrupted"
        say(f"stopped early ({stopped}); the table holds what was measured")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        shutil.rmtree(work, ignore_errors=True)
    write_report(ctx, rows, details, final=True, stopped=stopped)
    if stopped:
        sys.exit(130)


class _Stop(BaseException):
    """SIGTERM (e.g. from `timeout`): not an Exception, so that no handler
    for a failed variant swallows it."""


def _on_sigterm(signum, frame):
    raise _Stop()


def make_table(rows, device):
    def ips_of(row, side, variant=None):
        r = row.get(side)
        if r is None:
            return None
        if variant:
            r = r.get(variant)
            if r is None:
                return None
        return r.get("ips")

    table = ["| config | batch | engine images/s | engine ms/epoch | engine without graphs images/s "
             "| PyTorch eager images/s | torch.compile images/s | engine / eager | engine / compile |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    targets = []
    for row in rows:
        e, te, tc = ips_of(row, "engine"), ips_of(row, "torch", "eager"), ips_of(row, "torch", "compile")
        n_ep = EPOCH_IMAGES[row["dataset"]]
        ms = n_ep / e * 1e3 if e else None
        re_ = e / te if e and te else None
        rc_ = e / tc if e and tc else None
        e0 = ips_of(row, "engine_nograph")
        table.append(f"| {row['config']} | {row['batch']} | {fmt(e)} | {fmt(ms, '.1f')} | {fmt(e0)} | {fmt(te)} | "
                     f"{fmt(tc)} | {fmt(re_, '.2f')} | {fmt(rc_, '.2f')} |")
        if row["config"] == "mnist_conv" and row["batch"] == 128 and device.type == "cuda":
            def verdict(x, ok):
                return "n/a" if x is None else ("met" if ok else "NOT met")
            targets.append(f"mnist_conv, batch 128: engine/eager {fmt(re_, '.2f')} (target >= 10: "
                           f"{verdict(re_, re_ is not None and re_ >= 10)}); engine/compile "
                           f"{fmt(rc_, '.2f')} (target >= 2: {verdict(rc_, rc_ is not None and rc_ >= 2)}); "
                           f"MNIST epoch {fmt(ms, '.1f')} ms at the median rate (target < 100 ms: "
                           f"{verdict(ms, ms is not None and ms < 100)})")
    return table, targets


def write_report(ctx, rows, details, final, stopped=None):
    """Final: print the table (and the targets) and write --out. Not final:
    rewrite --out with what is done so far (a run cut off by a time limit
    still leaves its numbers)."""
    args, device = ctx["args"], ctx["device"]
    table, targets = make_table(rows, device)
    if final:
        say("")
        say(f"ms/epoch: {', '.join(f'{k} {v:,}' for k, v in EPOCH_IMAGES.items())} images at the "
            "engine's median rate (training steps only)")
        for line in table:
            say(line)
        if targets:
            say("")
            say("Targets of the issue (stated for an H200; this run: "
                f"{torch.cuda.get_device_name(0)}):")
            for t in targets:
                say("  " + t)
    if not args.out:
        return
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"# Training throughput: engine vs PyTorch ({args.device})\n\n")
        if not final:
            f.write("**Partial: the run was still going when this was written.**\n\n")
        elif stopped:
            f.write(f"**Partial: the run stopped early ({stopped}).**\n\n")
        f.write(f"Date: {ctx['started']:%Y-%m-%d %H:%M} UTC. Machine: {ctx['machine']}.\n\n")
        f.write(f"Versions: {ctx['versions']}.\n\n")
        f.write("```\n" + q([sys.executable] + sys.argv) + "\n```\n\n")
        f.write("ms/epoch: 60,000 MNIST / 50,000 CIFAR-10 images at the engine's median images/s "
                "(training steps only).\n\n")
        f.write("\n".join(table) + "\n\n")
        if targets:
            f.write("Targets (stated for an H200):\n\n" + "".join(f"- {t}\n" for t in targets) + "\n")
        f.write("Details:\n\n" + "".join(f"- {d}\n" for d in details) + "\n")
        f.write("Full output:\n\n```\n" + "\n".join(LOG) + "\n```\n")
    os.replace(tmp, args.out)
    if final:
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
