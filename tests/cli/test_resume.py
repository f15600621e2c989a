"""Exact resume: N epochs straight and k epochs + --resume to N give
bit-identical parameters and Adam moments; so does a run stopped by SIGINT
mid-epoch and resumed; so does a run killed with SIGKILL at random moments
(while it may be writing a checkpoint) and resumed each time from what is
on disk. Uses a 1000/200-image subset of MNIST (dataset = idx)."""
import json
import os
import random
import shlex
import signal
import struct
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from common import SMALL_MLP, VAE, Checks, mnist_subset, read_safetensors, run, tmpdir

c = Checks()
base = tmpdir()
mnist_subset(base, 1000, 200)
cfg = os.path.join(base, "small.ini")
open(cfg, "w").write(SMALL_MLP)
common = ["--data", base, "--no-progress", "--device", "cpu", "--threads", "1"]


def final_tensors(d):
    ck = sorted(f for f in os.listdir(d) if f.startswith("ckpt-") and f.endswith(".safetensors"))[-1]
    meta, t = read_safetensors(os.path.join(d, ck))
    return meta, t


def same(a, b):
    return a.keys() == b.keys() and all(a[k][2] == b[k][2] for k in a)


def interrupt(out, args, after):
    """Start `vae train CFG --out OUT ARGS`, SIGINT it after `after` seconds;
    returns (exit status, its stderr)."""
    p = subprocess.Popen([VAE, "train", cfg, "--out", out] + args, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    time.sleep(after)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    return p.returncode, err


def resume_as_printed(err):
    """Run the resume command a stopped run printed, as printed."""
    said = [l.split("resume with: ", 1)[1] for l in err.splitlines() if "resume with: " in l]
    c.check(len(said) == 1 and said[0].startswith("vae train --resume "), f"resume command: {said}")
    if said:
        run(shlex.split(said[0])[1:] + ["--no-progress"])


straight = os.path.join(base, "straight")
run(["train", cfg, "--out", straight] + common)
ms, ts = final_tensors(straight)
c.check(ms["step"] == "60", f"3 epochs of 20 steps, step {ms['step']}")

# --keep N keeps the newest N checkpoints
kd = os.path.join(base, "keep")
run(["train", cfg, "--out", kd, "--keep", "2"] + common)
kept = sorted(f for f in os.listdir(kd) if f.startswith("ckpt-"))
c.check([k.split("-e")[1] for k in kept] == ["0002.safetensors", "0003.safetensors"], f"--keep 2 kept {kept}")
# checkpoint_every = 2 over 3 epochs: epoch 2's, and the last epoch's always
ce = os.path.join(base, "every2")
cfg2 = os.path.join(base, "every2.ini")
open(cfg2, "w").write(SMALL_MLP.replace("[train]\n", "[train]\ncheckpoint_every = 2\n"))
run(["train", cfg2, "--out", ce, "--keep", "0"] + common)
got = sorted(f for f in os.listdir(ce) if f.startswith("ckpt-"))
c.check([k.split("-e")[1] for k in got] == ["0002.safetensors", "0003.safetensors"],
        f"checkpoint_every = 2, 3 epochs: {got}")
# flags are written into the run's config.ini (and so into the checkpoints)
ini = open(os.path.join(kd, "config.ini")).read()
c.check("keep = 2" in ini and "device = cpu" in ini and "threads = 1" in ini,
        "--keep, --device and --threads are in the run's config.ini")

# --lr and --threads land in their sections of the run's config.ini, which
# eval and --resume then read back (threads = 0: all cores, from a config's 2)
lrd = os.path.join(base, "lr")
cfg_t = os.path.join(base, "threads2.ini")
open(cfg_t, "w").write(SMALL_MLP.replace("[train]\n", "[train]\nthreads = 2\n"))
run(["train", cfg_t, "--out", lrd, "--epochs", "1", "--lr", "1e-3", "--threads", "0"] + common[:3])
ini = open(os.path.join(lrd, "config.ini")).read()
c.check("lr = 0.001" in ini.split("[optim]", 1)[-1] and "threads = 0" in ini,
        f"--lr in [optim], --threads 0 in [train]: {ini[-300:]!r}")
p = run(["eval", lrd, "--json", "--data", base], check=False)
c.check(p.returncode == 0, f"eval of a run trained with --lr: {p.returncode} {p.stderr[-200:]}")

# 1 epoch, then resume to 3
part = os.path.join(base, "part")
run(["train", cfg, "--out", part, "--epochs", "1"] + common)
# a record of the resume that would have this second's name already exists:
# the resume's takes the next free one, the run's own run.json is kept
now = time.time()
stamps = {time.strftime("%Y%m%d-%H%M%S", time.localtime(now + k)) for k in range(30)}
for st in stamps:
    open(os.path.join(part, f"run-resumed-{st}.json"), "w").write("placeholder")
p = run(["train", cfg, "--resume", part, "--out", part] + common)
c.check("skipping" not in p.stderr, f"--resume DIR passes over the run's other files silently: {p.stderr[-300:]!r}")
c.check("note:" not in p.stderr, f"no note resuming this version's checkpoint: {p.stderr[-300:]!r}")
rj = json.load(open(os.path.join(part, "run.json")))
c.check("--resume" not in rj["argv"], f"the first run's run.json is kept: {rj['argv']}")
recs = [f for f in os.listdir(part) if f.startswith("run-resumed-")]
new = [f for f in recs if open(os.path.join(part, f)).read() != "placeholder"]
stamp = new[0][len("run-resumed-"):].split(".json")[0] if len(new) == 1 else ""
c.check(len(recs) == len(stamps) + 1 and len(new) == 1 and
        (stamp.endswith("-2") and stamp[:-2] in stamps or stamp not in stamps) and
        "--resume" in json.load(open(os.path.join(part, new[0])))["argv"],
        f"the resume's record beside the placeholders: {new}")
mp, tp = final_tensors(part)
c.check(same(ts, tp), "1 epoch + resume to 3 == 3 epochs, bit for bit")
lines = open(os.path.join(part, "metrics.jsonl")).read().splitlines()
c.check(len(lines) == 3, "metrics.jsonl has one line per epoch after resume")
strip = lambda ls: [{k: v for k, v in json.loads(l).items() if k not in ("images_per_s", "epoch_time_s", "elapsed_s")} for l in ls]
c.check(strip(lines) == strip(open(os.path.join(straight, "metrics.jsonl")).read().splitlines()),
        "the resumed run's metrics equal the straight run's (timings aside)")
# elapsed_s goes on across the resume: each epoch's elapsed_s is at least the
# previous one's plus its own epoch_time_s
el = [(json.loads(l)["elapsed_s"], json.loads(l)["epoch_time_s"]) for l in lines]
c.check(all(el[i][0] >= el[i - 1][0] + el[i][1] - 1e-3 for i in range(1, len(el))),
        f"elapsed_s continues across the resume: {el}")

# a checkpoint whose metadata names other noise (the tag of the versions
# before the float Box-Muller) resumes with a note that says so
def set_meta(path, key, value):
    """Rewrite one metadata string of a safetensors file (the crc32 covers the
    data area only), its header padded with spaces to 8 as the writers do."""
    buf = open(path, "rb").read()
    n = struct.unpack("<Q", buf[:8])[0]
    header = json.loads(buf[8:8 + n])
    header["__metadata__"][key] = value
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    open(path, "wb").write(struct.pack("<Q", len(h)) + h + buf[8 + n:])


oldrng = os.path.join(base, "oldrng")
run(["train", cfg, "--out", oldrng, "--epochs", "1"] + common)
ck1 = os.path.join(oldrng, [f for f in os.listdir(oldrng) if f.startswith("ckpt-")][0])
c.check(read_safetensors(ck1)[0].get("rng") == "philox4x32-10 (seed, step), float box-muller",
        f"the checkpoint names its noise: {read_safetensors(ck1)[0].get('rng')!r}")
set_meta(ck1, "rng", "philox4x32-10 (seed, step)")
p = run(["train", cfg, "--resume", ck1, "--out", oldrng, "--epochs", "2"] + common)
c.check('note: --resume' in p.stderr and 'drew its noise as "philox4x32-10 (seed, step)"' in p.stderr and
        'draws "philox4x32-10 (seed, step), float box-muller"' in p.stderr,
        f"resuming a checkpoint of other noise says so: {p.stderr[-400:]!r}")

# resume from the checkpoint's own config (no CONFIG argument)
part2 = os.path.join(base, "part2")
run(["train", cfg, "--out", part2, "--epochs", "2"] + common)
run(["train", "--resume", part2, "--epochs", "3"] + common)
c.check(same(ts, final_tensors(part2)[1]), "resume without CONFIG uses the checkpoint's config")

# resuming a run that has done its epochs: says so, trains nothing, changes nothing
ini_before = open(os.path.join(part2, "config.ini")).read()
cks_before = sorted(os.listdir(part2))
p = subprocess.run([VAE, "train", "--resume", part2, "--epochs", "2"] + common, capture_output=True, text=True)
c.check(p.returncode == 0 and "nothing to train" in p.stderr, f"resume past the end: {p.returncode} {p.stderr!r}")
c.check(open(os.path.join(part2, "config.ini")).read() == ini_before,
        "resume past the end leaves config.ini as it was")
c.check([f for f in sorted(os.listdir(part2)) if f.startswith("ckpt-")] ==
        [f for f in cks_before if f.startswith("ckpt-")], "resume past the end writes no checkpoint")
# ... and one that has done exactly the epochs asked for likewise
p = subprocess.run([VAE, "train", "--resume", part2, "--epochs", "3"] + common, capture_output=True, text=True)
c.check(p.returncode == 0 and "nothing to train" in p.stderr and
        open(os.path.join(part2, "config.ini")).read() == ini_before,
        f"resume of a finished run to its own epochs: {p.returncode} {p.stderr!r}")

# a CONFIG given with --resume: another model is refused, naming what
# differs, and nothing is written; another learning rate goes on, with a note
changed = os.path.join(base, "changed")
run(["train", cfg, "--out", changed, "--epochs", "1"] + common)
names = sorted(os.listdir(changed))
other_model = os.path.join(base, "other_model.ini")
open(other_model, "w").write(SMALL_MLP.replace("[model]", "[model]\nlikelihood = gaussian"))
p = run(["train", "--resume", changed, other_model, "--epochs", "2"] + common, check=False)
c.check(p.returncode == 1 and "another model" in p.stderr and "likelihood bernoulli -> gaussian" in p.stderr
        and sorted(os.listdir(changed)) == names,
        f"resume with another likelihood: {p.returncode} {p.stderr.strip()[-300:]!r}")
open(other_model, "w").write(SMALL_MLP.replace("layer = dense 64", "layer = dense 32", 1))
p = run(["train", "--resume", changed, other_model, "--epochs", "2"] + common, check=False)
c.check(p.returncode == 1 and "[encoder] layer 2" in p.stderr,
        f"resume with another encoder: {p.returncode} {p.stderr.strip()[-300:]!r}")
p = run(["train", "--resume", changed, "--epochs", "2", "--lr", "1e-3"] + common)
c.check("note" in p.stderr and "[optim] lr 0.002 -> 0.001" in p.stderr,
        f"resume with another lr: a note naming it: {p.stderr.strip()[-300:]!r}")

# The signal tests need a run long enough to interrupt: 30 epochs, 600 steps.
long_ = ["--epochs", "30"]
straight30 = os.path.join(base, "straight30")
run(["train", cfg, "--out", straight30] + long_ + common)
t30 = final_tensors(straight30)[1]

# SIGINT mid-run: finishes the step, writes a checkpoint, exits 130, says how to resume
intr = os.path.join(base, "intr")
code, err = interrupt(intr, long_ + common, 0.4)
c.check(code == 130, f"SIGINT exits 130 (got {code})")
c.check("--resume" in err and "interrupted" in err, "SIGINT message says how to resume")
stopped_at = int(final_tensors(intr)[0]["step"])
print(f"SIGINT stopped the run at step {stopped_at}")
c.check(0 < stopped_at < 600, "stopped before the end")
# the command the message gives, as printed, continues the run exactly (the
# run's flags, --epochs 30 among them, come from the checkpoint)
resume_as_printed(err)
c.check(same(t30, final_tensors(intr)[1]), "SIGINT + the printed resume command == straight run, bit for bit")
# ... and its metrics, the interrupted epoch's loss sums included
c.check(strip(open(os.path.join(intr, "metrics.jsonl")).read().splitlines()) ==
        strip(open(os.path.join(straight30, "metrics.jsonl")).read().splitlines()),
        "SIGINT + resume: the straight run's metrics (timings aside)")

# folders named like options (relative, from the data folder): the run takes
# them attached (--out=-x), and the printed command attaches them likewise,
# so that, pasted as printed, it resumes the run
odd_data, odd_out = "-odd data", "--odd out"
os.symlink(".", os.path.join(base, odd_data))
p = subprocess.Popen([VAE, "train", cfg, "--out=" + odd_out, "--data=" + odd_data] + long_ +
                     common[2:], cwd=base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
time.sleep(0.4)
p.send_signal(signal.SIGINT)
_, err = p.communicate(timeout=120)
said = [l.split("resume with: ", 1)[1] for l in err.splitlines() if "resume with: " in l]
c.check(p.returncode == 130 and len(said) == 1 and "--resume='--odd out'" in said[0] and
        "--data='-odd data'" in said[0], f"option-like folders in the resume command: {said}")
if said:
    q = subprocess.run([VAE] + shlex.split(said[0])[1:] + ["--no-progress"], cwd=base,
                       capture_output=True, text=True)
    c.check(q.returncode == 0 and same(t30, final_tensors(os.path.join(base, odd_out))[1]),
            f"the printed command with option-like folders resumes to the straight run: {q.stderr[-300:]!r}")

# a stop on an epoch's last step waits for the epoch's end: with one step
# an epoch (batch = the training set) every SIGINT lands there. The epoch's
# metrics line and checkpoint are written, and the printed command resumes
# to the straight run's parameters and metrics.
one = ["--batch", "1000", "--epochs", "30"]
straight1 = os.path.join(base, "straight1")
run(["train", cfg, "--out", straight1] + one + common)
edge = os.path.join(base, "edge")
code, err = interrupt(edge, one + common, 0.5)
me = final_tensors(edge)[0]
done_lines = len(open(os.path.join(edge, "metrics.jsonl")).read().splitlines())
print(f"SIGINT with one step an epoch: exit {code} at step {me['step']}, {done_lines} metrics lines")
c.check(code in (0, 130), f"SIGINT at an epoch's end: exit {code}")
if code == 130:
    c.check(int(me["step"]) == done_lines, f"stopped after a whole epoch with its metrics line "
            f"(step {me['step']}, {done_lines} lines)")
    resume_as_printed(err)
strip1 = lambda d: strip(open(os.path.join(d, "metrics.jsonl")).read().splitlines())
c.check(same(final_tensors(straight1)[1], final_tensors(edge)[1]) and strip1(edge) == strip1(straight1),
        "SIGINT at an epoch's end + resume == straight run (parameters and metrics)")
c.check(any(f.endswith(".png") for f in os.listdir(edge)), "the resumed run wrote its sample grids")

# The same stops at chosen steps (VAE_FAULT_SIGINT_AT_STEP=N: a SIGINT during
# step N, train.c), which timing cannot aim at: on the last step of epoch 2 of
# 3 (one step an epoch) the epoch finishes, is checkpointed, and the run exits
# 130; on the last step of the last epoch the training finishes (its
# checkpoint written) and the run exits 130 without the sample grids, giving
# the `vae sample` command that writes them; mid-epoch (step 25 of 20-step
# epochs) it stops after that step. Each resumed equals the straight run.
three = ["--batch", "1000", "--epochs", "3"]
straight3 = os.path.join(base, "straight3")
run(["train", cfg, "--out", straight3] + three + common)
GRIDS = {"samples.png", "reconstructions.png", "traversal.png", "interpolation.png"}


def grids_in(d):
    return GRIDS & set(os.listdir(d))


for n, args, want_step, ref in ((2, three, "2", straight3), (3, three, "3", straight3),
                                (25, [], "25", straight)):
    d = os.path.join(base, f"sigint_at_{n}")
    p = run(["train", cfg, "--out", d] + args + common, check=False, env={"VAE_FAULT_SIGINT_AT_STEP": str(n)})
    m_ = final_tensors(d)[0]
    c.check(p.returncode == 130 and m_["step"] == want_step and not grids_in(d),
            f"SIGINT during step {n}: exit {p.returncode}, checkpoint at step {m_['step']}, grids "
            f"{sorted(grids_in(d))} (want 130, {want_step}, none)")
    if n == 3:
        said = [l.split("write them with: ", 1)[1] for l in p.stderr.splitlines()
                if "training is complete" in l and "write them with: " in l]
        c.check(len(said) == 1 and said[0].startswith("vae sample "), f"after the last step: {p.stderr!r}")
        if said:
            run(shlex.split(said[0])[1:])
            c.check(grids_in(d) == GRIDS, f"the printed sample command writes the grids: {sorted(grids_in(d))}")
    else:
        resume_as_printed(p.stderr)
    c.check(same(final_tensors(ref)[1], final_tensors(d)[1]) and strip1(d) == strip1(ref),
            f"SIGINT during step {n} (+ resume): the straight run's parameters and metrics")

# ... and outside the steps (VAE_FAULT_SIGINT_AT): while the data load, the
# run ends with 130 and leaves nothing, not even the folders of --out it made;
# after the run record is written but before the first step, with a
# checkpoint of step 0 that the printed command resumes to the straight run;
# while the grids are written, with the grids done so far and the command.
d = os.path.join(base, "sig_load", "a", "b")
p = run(["train", cfg, "--out", d] + three + common, check=False, env={"VAE_FAULT_SIGINT_AT": "load"})
c.check(p.returncode == 130 and "before the first step" in p.stderr and
        not os.path.exists(os.path.join(base, "sig_load")),
        f"SIGINT while loading: exit {p.returncode}, {p.stderr!r}, folders left: "
        f"{os.path.exists(os.path.join(base, 'sig_load'))}")
d = os.path.join(base, "sig_setup")
p = run(["train", cfg, "--out", d] + three + common, check=False, env={"VAE_FAULT_SIGINT_AT": "setup"})
c.check(p.returncode == 130 and final_tensors(d)[0]["step"] == "0",
        f"SIGINT before the first step: exit {p.returncode}, {p.stderr!r}")
if p.returncode == 130:
    resume_as_printed(p.stderr)
    c.check(same(final_tensors(straight3)[1], final_tensors(d)[1]),
            "SIGINT before the first step + resume: the straight run's parameters")
d = os.path.join(base, "sig_grids")
p = run(["train", cfg, "--out", d] + three + common, check=False, env={"VAE_FAULT_SIGINT_AT": "grids"})
c.check(p.returncode == 130 and "while writing the sample grids" in p.stderr and "vae sample " in p.stderr,
        f"SIGINT while writing the grids: exit {p.returncode}, {p.stderr!r}")

# SIGTERM behaves like SIGINT
term = os.path.join(base, "term")
p = subprocess.Popen([VAE, "train", cfg, "--out", term] + long_ + common,
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
time.sleep(0.4)
p.send_signal(signal.SIGTERM)
out, err = p.communicate(timeout=120)
c.check(p.returncode == 130 and "SIGTERM" in err, f"SIGTERM: checkpoint and exit 130 (got {p.returncode})")
run(["train", cfg, "--resume", term, "--out", term] + long_ + common)
c.check(same(t30, final_tensors(term)[1]), "SIGTERM + resume == straight run, bit for bit")

# SIGKILL at random moments (also while a checkpoint is being written),
# resume from whatever is on disk each time
kill = os.path.join(base, "kill")
rng = random.Random(1)
kills = 0


def has_ckpt(d):
    return os.path.isdir(d) and any(f.endswith(".safetensors") for f in os.listdir(d))


for attempt in range(40):
    args = ["train", cfg, "--out", kill] + long_ + common + (["--resume", kill] if has_ckpt(kill) else [])
    p = subprocess.Popen([VAE] + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(rng.uniform(0.02, 0.3))
    if p.poll() is None:
        p.kill()
        kills += 1
    p.wait()
    if p.returncode == 0:
        break
run(["train", cfg, "--out", kill] + long_ + common + (["--resume", kill] if has_ckpt(kill) else []))
print(f"killed {kills} times")
c.check(kills >= 5, f"the run was killed several times ({kills})")
c.check(not [f for f in os.listdir(kill) if ".tmp." in f], "no temp files left after the final run")
c.check(same(t30, final_tensors(kill)[1]), "SIGKILLs + resumes == straight run, bit for bit")
c.finish()
