#!/usr/bin/python3
"""cpu_train_bench.py — CPU training throughput: the engine against PyTorch on
the same model (configs/mnist_conv.ini by default), same batch, same data,
same thread count.

  /usr/bin/python3 bench/cpu_train_bench.py [--vae build/vae] [--threads T]
      [--steps N] [--config configs/mnist_conv.ini] [--data DIR]

Engine: `vae train CONFIG --epochs 1 --device cpu --threads T --no-progress
--out TMP`; its images_per_s (metrics.jsonl) covers the training steps of the
epoch only (batch gather, forward, backward, Adam), not the test-set
evaluation that follows each epoch.

PyTorch: the model of tests/reference/vae_ref.py (the same layers, init
distribution and loss) in float32 with torch.set_num_threads(T), Adam at the
config's learning rate, batches of the config's batch size drawn from a
shuffled MNIST training set held as one float tensor; `--warmup` steps, then
`--steps` timed steps (randn noise, forward, loss, backward, Adam step).
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

from benchlib import ROOT, cpu_name  # also puts tests/reference on sys.path

try:
    import torch
    import vae_ref
except ImportError as e:
    print(f"cpu_train_bench: needs torch and numpy ({e}); use Debian's /usr/bin/python3")
    sys.exit(77)


def run_engine(vae, config, threads, data, epochs=1):
    """Per-epoch metrics (list of dicts) from `vae train`."""
    with tempfile.TemporaryDirectory(prefix="vae-bench-") as out:
        cmd = [vae, "train", config, "--epochs", str(epochs), "--device", "cpu",
               "--threads", str(threads), "--no-progress", "--out", out, "--data", data]
        print("engine:  " + " ".join(shlex.quote(c) for c in cmd), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        with open(os.path.join(out, "metrics.jsonl")) as f:
            return [json.loads(line) for line in f if line.strip()]


def torch_throughput(cfg, train_u8, threads, steps, warmup, seed):
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = vae_ref.RefVAE(cfg).float()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x_all = torch.from_numpy(train_u8).float().div_(255.0)
    B, L, N = cfg.batch, cfg.latent, x_all.shape[0]
    perm = torch.randperm(N)

    def step(i):
        j = (i * B) % (N - B + 1)
        x = x_all[perm[j:j + B]]
        eps = torch.randn(B, L) if cfg.type == "vae" else None
        opt.zero_grad(set_to_none=True)
        loss, _ = model.loss(x, eps)
        loss.backward()
        opt.step()
        return loss

    for i in range(warmup):
        step(i)
    t0 = time.perf_counter()
    for i in range(steps):
        loss = step(warmup + i)
    dt = time.perf_counter() - t0
    return steps * B / dt, float(loss)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vae", default=os.path.join(ROOT, "build", "vae"), help="engine binary")
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "mnist_conv.ini"))
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--steps", type=int, default=100, help="timed PyTorch steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed PyTorch steps first")
    ap.add_argument("--data", default=None, help="data dir (default $VAE_DATA_DIR, else ./data)")
    ap.add_argument("--skip-engine", action="store_true")
    args = ap.parse_args()

    data = vae_ref.data_dir(args.data)
    cfg = vae_ref.RefConfig.load(args.config)
    if cfg.dataset != "mnist":
        sys.exit(f"cpu_train_bench: {args.config}: dataset {cfg.dataset}; this bench reads MNIST")
    train = vae_ref.load_mnist(data, train=True)

    print("command: " + " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv))
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; threads {args.threads}; "
          f"torch {torch.__version__}; config {os.path.relpath(args.config, ROOT)}, "
          f"batch {cfg.batch}")

    eng_ips = None
    if not args.skip_engine:
        m = run_engine(args.vae, args.config, args.threads, data)
        eng_ips = m[-1]["images_per_s"]
        print(f"engine:  {eng_ips:10.1f} images/s  (1 epoch, {len(train)} images, training "
              f"steps only; test nelbo after it {m[-1]['test_nelbo']:.2f})", flush=True)

    t_ips, t_loss = torch_throughput(cfg, train, args.threads, args.steps, args.warmup, cfg.seed)
    print(f"pytorch: {t_ips:10.1f} images/s  ({args.steps} steps of {cfg.batch} after "
          f"{args.warmup} warm-up, float32; last loss {t_loss:.2f})")
    if eng_ips is not None:
        print(f"ratio engine/pytorch: {eng_ips / t_ips:.2f}")


if __name__ == "__main__":
    main()
