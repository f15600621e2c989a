#!/usr/bin/env python3
"""cli_lr_schedule: [optim] lr_schedule, lr_warmup_steps and min_lr against
PyTorch's own schedulers, through the command line.

For each schedule a small MLP VAE trains 6 epochs of 4 steps (24 steps) on
200 MNIST images; metrics.jsonl's "lr" of each epoch (the rate Adam applied
at the epoch's last step) must equal the rate torch.optim.Adam had at that
step under the equivalent torch.optim.lr_scheduler composition:
  warm-up W:  LinearLR(start_factor=1/W, total_iters=W-1)
  cosine:     CosineAnnealingLR(T_max=T-W, eta_min=min_lr)
  linear:     LinearLR(start_factor=1, end_factor=min_lr/lr, total_iters=T-W)
  joined by SequentialLR(milestones=[W]).
Tolerance 1e-6 relative: the engine's rate is a float (lr and the factor
rounded to float, then their product: three roundings of 6e-8), PyTorch's a
double.

Also: a run stopped at step 10 and resumed ends with the same tensors as the
run straight through (the factor depends on the step alone); a resume that
changes --epochs under a decaying schedule says the decay is stretched; the
epoch line shows the rate.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

try:
    import torch
except ImportError:
    common.skip("no torch in this python")

C = common.Checks()
D = common.tmpdir()
common.mnist_subset(D, 200, 100)
LR = 2e-3
EPOCHS, SPE = 6, 4  # 200 images, batch 50
T = EPOCHS * SPE


def config(schedule, warmup, min_lr):
    extra = f"lr_schedule = {schedule}\nlr_warmup_steps = {warmup}\nmin_lr = {min_lr}\n"
    text = common.SMALL_MLP.replace("epochs = 3", f"epochs = {EPOCHS}")
    text = text.replace("kl_warmup_steps = 10\n", "").replace("clip_grad_norm = 50\n", "")
    assert "lr = 2e-3" in text
    return text.replace("[optim]\n", "[optim]\n" + extra)


def torch_lrs(schedule, warmup, min_lr):
    """The rate torch.optim.Adam applies at each of the T steps."""
    p = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([p], lr=LR)
    S = torch.optim.lr_scheduler
    scheds = []
    if warmup > 1:
        scheds.append(S.LinearLR(opt, start_factor=1.0 / warmup, end_factor=1.0,
                                 total_iters=warmup - 1))
    elif warmup == 1:  # a warm-up of one step at the full rate: the decay starts a step late
        scheds.append(S.ConstantLR(opt, factor=1.0, total_iters=1))
    if schedule == "cosine":
        scheds.append(S.CosineAnnealingLR(opt, T_max=T - warmup, eta_min=min_lr))
    elif schedule == "linear":
        scheds.append(S.LinearLR(opt, start_factor=1.0, end_factor=min_lr / LR,
                                 total_iters=T - warmup))
    if len(scheds) == 2:
        sched = S.SequentialLR(opt, scheds, milestones=[warmup])
    elif scheds:
        sched = scheds[0]
    else:
        sched = None
    out = []
    for _ in range(T):
        out.append(opt.param_groups[0]["lr"])
        p.grad = torch.zeros_like(p)
        opt.step()
        if sched:
            sched.step()
    return out


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def train(cfg_path, out, extra=(), check=True, env=None):
    return common.run(["train", cfg_path, "--data", D, "--out", out, "--device", "cpu",
                       "--no-progress", "--threads", "1"] + list(extra), check=check, env=env)


CASES = [("cosine", 5, 1e-4), ("linear", 0, 0.0), ("constant", 7, 0.0),
         ("cosine", 30, 1e-4),  # a warm-up longer than the run
         ("linear", 3, 5e-4), ("cosine", 0, 0.0), ("cosine", 1, 1e-4)]
with open(os.path.join(D, "plain.ini"), "w") as f:
    f.write(config("constant", 0, 0.0))
for i, (schedule, warmup, min_lr) in enumerate(CASES):
    what = f"{schedule}, warm-up {warmup}, min_lr {min_lr:g}"
    cfg = os.path.join(D, f"c{i}.ini")
    with open(cfg, "w") as f:
        f.write(config(schedule, warmup, min_lr))
    out = os.path.join(D, f"r{i}")
    p = train(cfg, out)
    got = [m["lr"] for m in metrics(out)]
    want = torch_lrs(schedule, warmup, min_lr)
    want = [want[e * SPE + SPE - 1] for e in range(EPOCHS)]
    C.check(len(got) == EPOCHS, f"{what}: {len(got)} metrics lines")
    bad = [(e + 1, g, w) for e, (g, w) in enumerate(zip(got, want))
           if not abs(g - w) <= 1e-6 * abs(w) + 1e-12]
    C.check(not bad, f"{what}: epochs whose lr differs from PyTorch's (epoch, engine, torch): "
                     f"{bad}")
    C.check(" lr " in p.stdout and "vae: learning rate:" in p.stderr,
            f"{what}: the epoch line shows the rate and the start says the schedule\n{p.stdout}")
    # the schedule must change what is trained (the rate reaches Adam)
    if i == 0:
        plain = os.path.join(D, "plain")
        q = train(os.path.join(D, "plain.ini"), plain)
        C.check(all(abs(m["lr"] - LR) <= 1e-6 * LR for m in metrics(plain)),
                "without a schedule every epoch's lr is the config's")
        C.check(" lr " not in q.stdout, "no lr column without a schedule")
        a = common.read_safetensors(sorted(os.path.join(out, n) for n in os.listdir(out)
                                           if n.endswith(".safetensors"))[-1])[1]
        b = common.read_safetensors(sorted(os.path.join(plain, n) for n in os.listdir(plain)
                                           if n.endswith(".safetensors"))[-1])[1]
        C.check(a.keys() == b.keys() and any(a[k][2] != b[k][2] for k in a),
                "a scheduled run trains to other tensors than a constant rate")

# stopped at step 10 (mid-epoch 3) and resumed: the same tensors as straight through
cfg = os.path.join(D, "c0.ini")
straight = os.path.join(D, "r0")
stopped = os.path.join(D, "stopped")
p = train(cfg, stopped, check=False, env={"VAE_FAULT_SIGINT_AT_STEP": "10"})
C.check(p.returncode == 130, f"the stopped run exits 130 ({p.returncode})\n{p.stderr}")
p = common.run(["train", "--resume", stopped, "--data", D, "--no-progress", "--threads", "1"])


def last_ckpt(d):
    names = sorted(n for n in os.listdir(d) if n.endswith(".safetensors"))
    return common.read_safetensors(os.path.join(d, names[-1]))[1]


a, b = last_ckpt(straight), last_ckpt(stopped)
C.check(a.keys() == b.keys() and all(a[k][2] == b[k][2] for k in a),
        "stopped at step 10 and resumed: the final tensors equal the straight run's")
C.check([m["lr"] for m in metrics(stopped)] == [m["lr"] for m in metrics(straight)],
        "the resumed run's lr column equals the straight run's")

# a resume that adds epochs stretches the decay, and says so
p = common.run(["train", "--resume", straight, "--data", D, "--no-progress", "--threads", "1",
                "--epochs", "8"])
C.check("lr_schedule's decay spans" in p.stderr,
        f"a resume with more epochs under cosine notes the stretched decay\n{p.stderr}")
C.finish()
