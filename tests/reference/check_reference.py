#!/usr/bin/python3
"""check_reference.py — whole-model parity of the engine with PyTorch.

  /usr/bin/python3 tests/reference/check_reference.py \
      --refdump BUILD/tests/vae_refdump --config configs/mnist_conv.ini [--batch 8]

1. Runs vae_refdump: one training step of the engine (CPU backend, float32)
   from the config's seed, writing the checkpoint it started from and a debug
   file with the batch x, the noise eps, per-sample recon and kl, the loss and
   the gradient of every parameter.
2. Builds the independent PyTorch model of vae_ref.py from the same config in
   float64, checks that its layer geometry matches the engine's, loads the
   engine's checkpoint with load_state_dict(strict=True) (names and shapes must
   match exactly), and recomputes the forward pass, the loss and the gradients
   on the same x and eps.
3. Compares head, output, per-sample recon and kl, the loss and every gradient
   by a norm-wise relative error  max|engine - torch| / max|torch|  <= 1e-4.

Why norm-wise and why 1e-4: the engine computes in float32 (unit roundoff
6e-8) and its reductions run over up to ~3000 terms (dense 784->512 weight
gradients sum over B; conv weight gradients over B*H*W*; recon over D = 3072
pixels), so float32 against float64 leaves relative errors of ~1e-6..1e-5 on
the largest entries. An elementwise relative error is meaningless for entries
near zero (a gradient of 1e-9 next to entries of 1e-1 carries only the absolute
rounding error of its neighbours), so the error is scaled by the largest
magnitude of each tensor. 1e-4 leaves a 10x margin above the observed noise
while any real bug (a wrong index, a missing term, a transposed weight) gives
errors of order 1.

4. Self-check: the same comparison is repeated with one gradient element
   perturbed by 1e-3 * max|g| and must fail — so the test cannot pass by
   comparing nothing.

Exit status: 0 pass, 1 failure (a table of the worst errors on stdout), 77
when torch is not importable (ctest: skipped).
"""
import argparse
import os
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import torch
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"check_reference: skipped: {e} (use Debian's /usr/bin/python3 with python3-torch)")
    sys.exit(77)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vae_ref  # noqa: E402

TOL = 1e-4


def rel_err(engine, ref):
    """max|engine - ref| / max|ref| (0 when both are exactly zero)."""
    e = np.asarray(engine, dtype=np.float64).ravel()
    r = np.asarray(ref, dtype=np.float64).ravel()
    if e.shape != r.shape:
        return float("inf"), float("inf")
    diff = float(np.max(np.abs(e - r))) if e.size else 0.0
    scale = float(np.max(np.abs(r))) if r.size else 0.0
    if not np.all(np.isfinite(e)):
        return float("inf"), diff
    if scale == 0.0:
        return (0.0 if diff == 0.0 else float("inf")), diff
    return diff / scale, diff


def check_geometry(model, layers_meta):
    """The engine's resolved layers (refdump metadata) against ours."""
    problems = []
    eng = [ln.split() for ln in layers_meta.strip().splitlines() if ln.strip()]
    ours = model.layer_lines()
    if len(eng) != len(ours):
        return [f"engine has {len(eng)} layers, the reference {len(ours)}"]
    for tok, (sec, i, L) in zip(eng, ours):
        kv = dict(t.split("=", 1) for t in tok[3:])
        if tok[0] != sec or int(tok[1]) != i or tok[2] != L["kind"]:
            problems.append(f"{sec}.{i}: engine {' '.join(tok[:3])}, reference {L['kind']}")
            continue
        want_in = "x".join(map(str, L["in_shape"]))
        want_out = "x".join(map(str, L["out_shape"]))
        if kv["in"] != want_in or kv["out_shape"] != want_out:
            problems.append(f"{sec}.{i} ({L['kind']}): engine {kv['in']} -> {kv['out_shape']}, "
                            f"reference {want_in} -> {want_out}")
        if L["kind"] in ("conv", "convT"):
            for k in ("k", "stride", "pad") + (("out_pad",) if L["kind"] == "convT" else ()):
                if int(kv[k]) != L[k]:
                    problems.append(f"{sec}.{i}: {k} engine {kv[k]}, reference {L[k]}")
        if L["kind"] == "leaky_relu" and abs(float(kv["slope"]) - L["slope"]) > 1e-7:
            problems.append(f"{sec}.{i}: slope engine {kv['slope']}, reference {L['slope']}")
    return problems


def compare(dbg, ref, grads, beta):
    """Rows (name, rel, abs diff, max|ref|) for every compared quantity."""
    rows = []

    def add(name, e, r):
        rel, diff = rel_err(e, r)
        rows.append((name, rel, diff, float(np.max(np.abs(r))) if np.size(r) else 0.0))

    add("head", dbg["head"], ref["head"])
    add("out", dbg["out"], ref["out"])
    add("recon[B]", dbg["recon"], ref["recon"])
    add("kl[B]", dbg["kl"], ref["kl"])
    add("loss", dbg["loss"], ref["loss"])
    for name, g in grads.items():
        key = "grad." + name
        if key not in dbg:
            rows.append((key + " (missing in the engine's dump)", float("inf"), float("inf"), 0.0))
            continue
        add(key, dbg[key], g)
    return rows


def print_table(rows, tol, limit=None):
    rows = sorted(rows, key=lambda r: -r[1])
    w = max(len(r[0]) for r in rows)
    print(f"  {'quantity':<{w}}  {'rel err':>10}  {'max|diff|':>10}  {'max|torch|':>10}")
    for name, rel, diff, scale in rows[:limit]:
        flag = "FAIL" if not rel <= tol else "ok"
        print(f"  {name:<{w}}  {rel:10.3e}  {diff:10.3e}  {scale:10.3e}  {flag}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--refdump", required=True, help="path of the vae_refdump executable")
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--tol", type=float, default=TOL)
    ap.add_argument("--keep", help="write the dump into this directory and keep it")
    args = ap.parse_args()

    cfg = vae_ref.RefConfig.load(args.config)
    name = os.path.basename(args.config)
    with tempfile.TemporaryDirectory(prefix="vae-ref-") as tmp:
        out = args.keep or tmp
        os.makedirs(out, exist_ok=True)
        p = subprocess.run([args.refdump, args.config, out, str(args.batch)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        sys.stdout.write(p.stdout)
        if p.returncode != 0:
            print(f"check_reference: FAIL: vae_refdump exited with {p.returncode}")
            return 1
        dbg, meta = vae_ref.read_safetensors(os.path.join(out, "debug.safetensors"))
        ckpt = os.path.join(out, "ckpt.safetensors")

        torch.manual_seed(0)
        model = vae_ref.RefVAE(cfg).double()
        problems = check_geometry(model, meta.get("layers", ""))
        if problems:
            print("check_reference: FAIL: the engine's layers differ from the reference's:")
            for pr in problems:
                print("  " + pr)
            return 1
        try:
            vae_ref.load_engine_checkpoint(model, ckpt, torch.float64)
        except RuntimeError as e:
            print(f"check_reference: FAIL: load_state_dict(strict=True) of the engine's "
                  f"checkpoint: {e}")
            return 1

    beta = float(meta["beta"])
    x = torch.from_numpy(dbg["x"]).double()
    eps = torch.from_numpy(dbg["eps"]).double() if cfg.type == "vae" else None
    if cfg.type == "vae" and eps.shape != (args.batch, cfg.latent):
        print(f"check_reference: FAIL: eps has shape {tuple(eps.shape)}")
        return 1
    model.zero_grad()
    loss, r = model.loss(x, eps, beta)
    loss.backward()
    ref = {k: v.detach().numpy() for k, v in r.items() if v is not None}
    ref["loss"] = np.array([loss.item()])
    grads = {n: p.grad.detach().numpy() if p.grad is not None else np.zeros(tuple(p.shape))
             for n, p in model.named_parameters()}

    rows = compare(dbg, ref, grads, beta)
    failed = [r for r in rows if not r[1] <= args.tol]
    print(f"{name}: {cfg.type}, {cfg.likelihood}, B = {args.batch}, x: {meta.get('x_source')}, "
          f"{sum(p.numel() for p in model.parameters())} parameters; "
          f"loss engine {float(dbg['loss'][0]):.8g} torch {loss.item():.8g}")
    print_table(rows, args.tol)
    worst_grad = max((r for r in rows if r[0].startswith("grad.")), key=lambda r: r[1])
    print(f"{name}: worst gradient {worst_grad[0]} rel err {worst_grad[1]:.3e} "
          f"(tolerance {args.tol:g})")

    # Self-check: one perturbed gradient element must be caught.
    target = max(grads, key=lambda n: grads[n].size)
    bad = dict(dbg)
    g = bad["grad." + target].astype(np.float64).copy()
    g.flat[g.size // 2] += 1e-3 * float(np.max(np.abs(grads[target])))
    bad["grad." + target] = g
    caught = [r for r in compare(bad, ref, grads, beta) if not r[1] <= args.tol]
    if not caught:
        print(f"check_reference: FAIL: self-check: a perturbation of 1e-3 max|g| in "
              f"grad.{target} went unnoticed")
        return 1

    if failed:
        print(f"check_reference: FAIL: {len(failed)} of {len(rows)} quantities exceed "
              f"rel err {args.tol:g}")
        return 1
    print(f"check_reference: PASS ({len(rows)} quantities within rel err {args.tol:g}; "
          f"self-check caught a perturbation of grad.{target})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
