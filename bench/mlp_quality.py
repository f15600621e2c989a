#!/usr/bin/python3
"""mlp_quality.py — does the engine train as well as PyTorch? Trains
configs/mnist_mlp.ini for 10 epochs in both and prints the test negative ELBO
after every epoch.

  /usr/bin/python3 bench/mlp_quality.py [--vae build/vae] [--epochs 10]
      [--threads T] [--data DIR] [--config configs/mnist_mlp.ini]

PyTorch side: the model of tests/reference/vae_ref.py (same layers, same
uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) init distribution, same loss
mean_b[recon + beta KL]) in float32, Adam (the config's lr, 1e-3 by default),
the config's batch (128), reshuffled every epoch. Test negative ELBO: recon +
KL per image with one noise sample per image (a fixed generator), averaged
over the 10,000 test images — the quantity the engine reports as test_nelbo.

Engine side: `vae train CONFIG --epochs E --device cpu --threads T
--no-progress`, test_nelbo from metrics.jsonl.

The two runs use different random numbers (init, shuffling, noise), so the
curves agree in distribution, not exactly; a difference of a nat or two after
10 epochs is within seed-to-seed variation.
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

from benchlib import ROOT  # also puts tests/reference on sys.path

try:
    import torch
    import vae_ref
except ImportError as e:
    print(f"mlp_quality: needs torch and numpy ({e}); use Debian's /usr/bin/python3")
    sys.exit(77)


@torch.no_grad()
def test_nelbo(model, x_test, L, is_vae, seed, bs=1000):
    g = torch.Generator().manual_seed(seed)
    tot, n = 0.0, x_test.shape[0]
    for i in range(0, n, bs):
        x = x_test[i:i + bs]
        eps = torch.randn(x.shape[0], L, generator=g) if is_vae else None
        r = model(x, eps)
        tot += float((r["recon"] + r["kl"]).double().sum())
    return tot / n


def train_torch(cfg, train_u8, test_u8, epochs, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    model = vae_ref.RefVAE(cfg).float()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    x_train = torch.from_numpy(train_u8).float().div_(255.0)
    x_test = torch.from_numpy(test_u8).float().div_(255.0)
    B, L, N = cfg.batch, cfg.latent, x_train.shape[0]
    is_vae = cfg.type == "vae"
    curve = []
    for ep in range(epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(N)
        for i in range(0, N, B):
            x = x_train[perm[i:i + B]]
            eps = torch.randn(x.shape[0], L) if is_vae else None
            opt.zero_grad(set_to_none=True)
            loss, _ = model.loss(x, eps)
            loss.backward()
            opt.step()
        dt = time.perf_counter() - t0
        model.eval()
        v = test_nelbo(model, x_test, L, is_vae, cfg.seed + 1000)
        curve.append(v)
        print(f"pytorch epoch {ep + 1:3d}/{epochs}  test nelbo {v:9.4f}  ({N / dt:7.0f} img/s)",
              flush=True)
    return curve


def train_engine(vae, config, epochs, threads, data):
    with tempfile.TemporaryDirectory(prefix="vae-quality-") as out:
        cmd = [vae, "train", config, "--epochs", str(epochs), "--device", "cpu",
               "--threads", str(threads), "--no-progress", "--out", out, "--data", data]
        print("engine: " + " ".join(shlex.quote(c) for c in cmd), flush=True)
        subprocess.run(cmd, check=True)
        with open(os.path.join(out, "metrics.jsonl")) as f:
            return [json.loads(line)["test_nelbo"] for line in f if line.strip()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vae", default=os.path.join(ROOT, "build", "vae"), help="engine binary")
    ap.add_argument("--config", default=os.path.join(ROOT, "configs", "mnist_mlp.ini"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--data", default=None, help="data dir (default $VAE_DATA_DIR, else ./data)")
    ap.add_argument("--skip-engine", action="store_true")
    ap.add_argument("--skip-torch", action="store_true")
    args = ap.parse_args()

    data = vae_ref.data_dir(args.data)
    cfg = vae_ref.RefConfig.load(args.config)
    print("command: " + " ".join(shlex.quote(a) for a in [sys.executable] + sys.argv))
    print(f"config {os.path.relpath(args.config, ROOT)}: {cfg.type}, {cfg.likelihood}, latent "
          f"{cfg.latent}, batch {cfg.batch}, lr {cfg.lr:g}, beta {cfg.beta:g}; {args.epochs} "
          f"epochs; threads {args.threads}", flush=True)

    t_curve = []
    if not args.skip_torch:
        t_curve = train_torch(cfg, vae_ref.load_mnist(data, True), vae_ref.load_mnist(data, False),
                              args.epochs, args.threads)
    e_curve = []
    if not args.skip_engine:
        e_curve = train_engine(args.vae, args.config, args.epochs, args.threads, data)

    print("\nepoch  engine test nelbo  pytorch test nelbo")
    for i in range(max(len(t_curve), len(e_curve))):
        e = f"{e_curve[i]:16.4f}" if i < len(e_curve) else " " * 16
        t = f"{t_curve[i]:18.4f}" if i < len(t_curve) else ""
        print(f"{i + 1:5d}  {e}  {t}")
    if t_curve and e_curve:
        print(f"final test nelbo: engine {e_curve[-1]:.4f}, pytorch {t_curve[-1]:.4f}, "
              f"engine - pytorch = {e_curve[-1] - t_curve[-1]:+.4f} nats")


if __name__ == "__main__":
    main()
