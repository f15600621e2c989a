"""Helpers for the end-to-end tests: run the `vae` binary, read its files.

Each test script exits 0 on success, 1 on failure, 77 when it cannot run
here (ctest reports that as skipped), and prints 'N passed, M failed'.
"""
import atexit
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

VAE = os.environ.get("VAE_BIN", "build/vae")
SRC = os.environ.get("VAE_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
DATA = os.environ.get("VAE_DATA_DIR")


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, cond, what):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
            print(f"CHECK failed: {what}", file=sys.stderr)
        return cond

    def finish(self):
        print(f"{self.passed} passed, {self.failed} failed")
        sys.exit(1 if self.failed else 0)


def skip(why):
    print(f"SKIP: {why}")
    sys.exit(77)


def run(args, check=True, timeout=1800, env=None):
    """Run vae with args; returns CompletedProcess (text)."""
    e = dict(os.environ)
    if env:
        e.update(env)
    p = subprocess.run([VAE] + args, capture_output=True, text=True, timeout=timeout, env=e)
    if check and p.returncode != 0:
        print(f"command failed ({p.returncode}): vae {' '.join(args)}\n{p.stdout}\n{p.stderr}",
              file=sys.stderr)
        sys.exit(1)
    return p


def read_safetensors(path):
    """Returns (metadata dict, {name: (dtype, shape, bytes)})."""
    with open(path, "rb") as f:
        buf = f.read()
    n = struct.unpack("<Q", buf[:8])[0]
    header = json.loads(buf[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    tensors = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        tensors[name] = (t["dtype"], tuple(t["shape"]), buf[base + b:base + e])
    return meta, tensors


def read_idx(path):
    op = gzip.open if path.endswith(".gz") else open
    with op(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return dims, data[4 + 4 * ndim:]


def write_idx_images(path, n, h, w, pixels):
    with open(path, "wb") as f:
        f.write(struct.pack(">IIII", 0x803, n, h, w))
        f.write(pixels)


def mnist_file(name):
    for d in (os.path.join(DATA, "mnist"), DATA):
        for ext in (".gz", ""):
            p = os.path.join(d, name + ext)
            if os.path.exists(p):
                return p
    return None


def mnist_subset(dirpath, n_train, n_test):
    """IDX files with the first n images of MNIST's train and test sets."""
    if not DATA or not mnist_file("train-images-idx3-ubyte"):
        skip("MNIST not found: set VAE_DATA_DIR")
    for split, n, name in (("train", n_train, "train-images-idx3-ubyte"),
                           ("test", n_test, "t10k-images-idx3-ubyte")):
        dims, px = read_idx(mnist_file(name))
        write_idx_images(os.path.join(dirpath, f"{split}.idx"), n, 28, 28, px[:n * 784])


SMALL_MLP = """
[data]
dataset = idx
train_images = train.idx
test_images = test.idx
[model]
input = 1x28x28
latent = 8
[encoder]
layer = flatten
layer = dense 64
layer = relu
[decoder]
layer = dense 64
layer = relu
layer = dense 784
layer = reshape 1x28x28
[train]
epochs = 3
batch = 50
seed = 7
kl_warmup_steps = 10
keep = 0
[optim]
lr = 2e-3
clip_grad_norm = 50
"""

# a small conv VAE (conv encoder, dense + two transposed convs in the decoder)
SMALL_CONV = """
[data]
dataset = idx
train_images = train.idx
test_images = test.idx
[model]
input = 1x28x28
latent = 6
[encoder]
layer = conv 8 k=3 stride=2 pad=1
layer = relu
layer = flatten
layer = dense 64
layer = relu
[decoder]
layer = dense 392
layer = relu
layer = reshape 8x7x7
layer = convT 8 k=4 stride=2 pad=1
layer = relu
layer = convT 1 k=4 stride=2 pad=1
[train]
epochs = 2
batch = 50
seed = 5
keep = 1
[optim]
lr = 2e-3
"""


_TMPDIRS = []


def _remove_tmpdirs():
    if os.environ.get("VAE_KEEP_TMP"):
        for d in _TMPDIRS:
            print(f"kept {d} (VAE_KEEP_TMP)")
        return
    for d in _TMPDIRS:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_remove_tmpdirs)


def tmpdir():
    """A fresh folder, removed when the test exits (pass or fail; kept with
    VAE_KEEP_TMP=1): the sample and resume tests leave hundreds of MB."""
    d = tempfile.mkdtemp(prefix="vae_cli_")
    _TMPDIRS.append(d)
    return d
