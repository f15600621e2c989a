#!/usr/bin/env python3
"""Generate the seed corpora of the libFuzzer harnesses (tests/fuzz/corpus/<name>/).

    python3 tests/fuzz/make_corpus.py [--vae BUILD/vae]

Writes a few small valid and invalid inputs per harness. With --vae, two
real checkpoints are also made by training tiny models (one MLP, one conv)
for one epoch on synthetic IDX data; without it the checkpoint seeds are
written by hand following the same layout. Run once; the output is committed.
Files are overwritten, never deleted: reproducers of fixed bugs added to a
corpus directory by hand stay (the use-after-free in vae_ckpt_open is
reproduced by corpus/ckpt/wrong_format.safetensors and wrong_version.safetensors).
"""
import argparse
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "corpus")


def put(name, fname, data):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, fname), "wb") as f:
        f.write(data)


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


# ----------------------------------------------------------------- config
TINY_MLP = """[data]
dataset = idx
train_images = train.idx
test_images = test.idx

[model]
type = vae
input = 1x4x5
latent = 2
likelihood = bernoulli

[encoder]
layer = flatten
layer = dense 3
layer = leaky_relu slope=0.1

[decoder]
layer = dense 20
layer = reshape 1x4x5

[train]
epochs = 1
batch = 4
seed = 7
device = cpu
threads = 1
"""

TINY_CONV = """[data]
dataset = idx
train_images = train.idx
test_images = test.idx

[model]
type = ae
input = 1x4x4
latent = 3
likelihood = gaussian
sigma = 0.5

[encoder]
layer = conv 2 k=3 stride=2 pad=1
layer = relu
layer = flatten

[decoder]
layer = dense 8
layer = reshape 2x2x2
layer = convT 1 k=3 stride=2 pad=1 out_pad=1

[train]
epochs = 1
batch = 4
seed = 3
device = cpu
threads = 1

[optim]
lr = 0.01
weight_decay = 0.1
decoupled_weight_decay = yes
clip_grad_norm = 1
"""


def make_config():
    cfg_dir = os.path.join(ROOT, "configs")
    for f in sorted(os.listdir(cfg_dir)):
        if f.endswith(".ini"):
            with open(os.path.join(cfg_dir, f), "rb") as fh:
                put("config", f, fh.read())
    put("config", "tiny_mlp.ini", TINY_MLP)
    put("config", "tiny_conv.ini", TINY_CONV)
    # invalid ones: each hits a different error class
    put("config", "bad_section.ini", "[model]\ninput = 1x2x2\n[bogus]\nx = 1\n")
    put("config", "bad_layer.ini", TINY_MLP.replace("dense 3", "dense 3 k=2"))
    put("config", "bad_chain.ini", TINY_MLP.replace("dense 20", "dense 19"))
    put("config", "bad_shape.ini", TINY_MLP.replace("1x4x5", "1x4x99999999999999999999"))
    put("config", "dup_key.ini", TINY_MLP.replace("latent = 2", "latent = 2\nlatent = 3"))
    put("config", "nul_byte.ini", TINY_MLP[:40] + "\0" + TINY_MLP[40:])
    put("config", "crlf_bom.ini", "\ufeff" + TINY_MLP.replace("\n", "\r\n"))
    put("config", "no_header.ini", "latent = 2\n")


# ----------------------------------------------------------------- IDX
def idx_images(n, rows, cols, seed=1):
    body = bytes((i * 37 + seed) & 0xFF for i in range(n * rows * cols))
    return struct.pack(">IIII", 0x803, n, rows, cols) + body


def idx_labels(n):
    return struct.pack(">II", 0x801, n) + bytes(i % 10 for i in range(n))


LABEL_SEP = b"\n--labels--\n"


def make_idx():
    img = idx_images(3, 4, 5)
    put("idx", "images_3x4x5.idx", img)
    put("idx", "images_3x4x5.idx.gz", gz(img))
    put("idx", "images_gz_two_members.idx.gz", gz(img[:20]) + gz(img[20:]))
    put("idx", "images_and_labels.idx", img + LABEL_SEP + idx_labels(3))
    put("idx", "gz_images_and_labels.idx", gz(img) + LABEL_SEP + gz(idx_labels(3)))
    put("idx", "bad_label_count.idx", img + LABEL_SEP + idx_labels(2))
    put("idx", "bad_magic.idx", struct.pack(">I", 0x801) + img[4:])
    put("idx", "truncated.idx", img[:-3])
    put("idx", "trailing.idx", img + b"\0")
    put("idx", "huge_header.idx", struct.pack(">IIII", 0x803, 0xFFFFFFFF, 4096, 4096))
    put("idx", "gz_truncated.idx.gz", gz(img)[:-6])
    put("idx", "gz_trailing_garbage.idx.gz", gz(img) + b"xyz")
    put("idx", "empty.idx", b"")


# ----------------------------------------------------------------- CIFAR-10
CIFAR_SEP = b"\n--next--\n"


def cifar_record(label, seed):
    return bytes([label]) + bytes((i * 7 + seed) & 0xFF for i in range(3072))


def make_cifar():
    r0, r1 = cifar_record(3, 1), cifar_record(9, 2)
    put("cifar", "one_record.bin", r0)
    put("cifar", "one_record.bin.gz", gz(r0))
    put("cifar", "two_records.bin.gz", gz(r0 + r1))
    put("cifar", "two_files.bin", r0 + CIFAR_SEP + gz(r1))
    put("cifar", "bad_label.bin", bytes([10]) + r0[1:])
    put("cifar", "short.bin", r0[:-1])
    put("cifar", "empty.bin", b"")


# ----------------------------------------------------------------- npy
def npy(shape, data, descr="|u1", version=1, fortran=False, pad_to=64):
    shp = "(" + "".join("%d, " % s for s in shape) + ")" if len(shape) != 1 else "(%d,)" % shape[0]
    d = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (descr, "True" if fortran else "False", shp)
    pre = 10 if version == 1 else 12
    total = (pre + len(d) + 1 + pad_to - 1) // pad_to * pad_to
    hdr = (d + " " * (total - pre - len(d) - 1) + "\n").encode()
    lenf = struct.pack("<H", len(hdr)) if version == 1 else struct.pack("<I", len(hdr))
    return b"\x93NUMPY" + bytes([version, 0]) + lenf + hdr + data


def make_npy():
    arr = bytes(range(2 * 1 * 3 * 4))
    put("npy", "u8_2x1x3x4.npy", npy((2, 1, 3, 4), arr))
    put("npy", "u8_6_v2.npy", npy((6,), arr[:6], version=2))
    put("npy", "u8_empty_0x3.npy", npy((0, 3), b""))
    put("npy", "fortran.npy", npy((2, 3), arr[:6], fortran=True))
    put("npy", "f4.npy", npy((2,), arr[:8], descr="<f4"))
    put("npy", "truncated.npy", npy((2, 1, 3, 4), arr[:-1]))
    put("npy", "five_dims.npy", npy((1, 1, 1, 1, 2), arr[:2]))
    put("npy", "bad_magic.npy", b"\x93NUMPZ" + npy((1,), b"x")[6:])


# ----------------------------------------------------------------- safetensors
def safetensors(tensors, meta, pad=True, crc=True):
    """tensors: list of (name, dtype, shape, bytes)."""
    hdr, off, blob = {}, 0, b""
    for name, dtype, shape, data in tensors:
        hdr[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
        blob += data
    md = dict(meta)
    if crc:
        md["crc32"] = str(zlib.crc32(blob) & 0xFFFFFFFF)
    if md:
        hdr = {"__metadata__": md, **hdr}
    j = json.dumps(hdr, separators=(",", ":")).encode()
    if pad:
        j += b" " * (-len(j) % 8)
    return struct.pack("<Q", len(j)) + j + blob


def f32(n, seed):
    return struct.pack("<%df" % n, *[((i * 13 + seed) % 17 - 8) / 8.0 for i in range(n)])


def hand_checkpoint():
    """The checkpoint vae would write for TINY_MLP (model, Adam m and v)."""
    params = [("encoder.1.weight", (3, 20)), ("encoder.1.bias", (3,)), ("head.weight", (4, 3)),
              ("head.bias", (4,)), ("decoder.0.weight", (20, 2)), ("decoder.0.bias", (20,))]
    ts = []
    for part, prefix in enumerate(["", "optimizer.exp_avg.", "optimizer.exp_avg_sq."]):
        for name, shape in params:
            n = 1
            for s in shape:
                n *= s
            ts.append((prefix + name, "F32", shape, f32(n, part * 5 + len(name))))
    meta = {"format": "vae-engine-checkpoint", "format_version": "1", "config": TINY_MLP,
            "step": "2", "steps_per_epoch": "2", "seed": "7", "batch": "4", "acc_recon": "0",
            "acc_kl": "0", "elapsed_s": "0.001", "version": "hand", "rng": "philox4x32-10 (seed, step)"}
    return safetensors(ts, meta)


def train_checkpoint(vae, cfg_text, shape):
    c, h, w = shape
    with tempfile.TemporaryDirectory(prefix="vae-corpus-") as tmp:
        for f, n in (("train.idx", 8), ("test.idx", 4)):
            with open(os.path.join(tmp, f), "wb") as fh:
                fh.write(idx_images(n, h, w, seed=n))
        cfg = os.path.join(tmp, "tiny.ini")
        with open(cfg, "w") as fh:
            fh.write(cfg_text)
        out = os.path.join(tmp, "run")
        subprocess.run([vae, "train", cfg, "--data", tmp, "--out", out, "--no-progress"], check=True,
                       stdout=subprocess.DEVNULL)
        cks = sorted(f for f in os.listdir(out) if f.endswith(".safetensors"))
        if not cks:
            sys.exit("make_corpus: vae train wrote no checkpoint in %s" % out)
        with open(os.path.join(out, cks[-1]), "rb") as fh:
            return fh.read()


def make_safetensors(vae):
    ck = hand_checkpoint()
    real = []
    if vae:
        real.append(("mlp", train_checkpoint(vae, TINY_MLP, (1, 4, 5))))
        real.append(("conv", train_checkpoint(vae, TINY_CONV, (1, 4, 4))))
    for name in ("safetensors", "ckpt"):
        put(name, "hand_ckpt_mlp.safetensors", ck)
        for tag, data in real:
            put(name, "vae_ckpt_%s.safetensors" % tag, data)
    # plain safetensors: every dtype, 0-d and empty tensors, no metadata, no crc
    ts = [("f64", "F64", (2,), struct.pack("<2d", 1.5, -2)), ("i64", "I64", (1,), struct.pack("<q", -7)),
          ("f32", "F32", (2, 2), f32(4, 1)), ("i32", "I32", (), struct.pack("<i", 5)),
          ("f16", "F16", (1,), b"\x00\x3c"), ("bf16", "BF16", (1,), b"\x80\x3f"),
          ("i16", "I16", (1,), b"\x01\x00"), ("i8", "I8", (3,), b"\x01\x02\x03"),
          ("u8", "U8", (0, 4), b""), ("b", "BOOL", (2,), b"\x01\x00")]
    put("safetensors", "all_dtypes.safetensors", safetensors(ts, {"note": "x"}))
    put("safetensors", "no_meta_no_crc.safetensors", safetensors(ts[:3], {}, crc=False))
    put("safetensors", "unpadded.safetensors", safetensors([("u", "U8", (3,), b"abc")], {}, pad=False))
    bad = bytearray(ck)
    bad[-1] ^= 0xFF
    put("safetensors", "bad_crc.safetensors", bytes(bad))
    put("safetensors", "truncated.safetensors", ck[:-4])
    j = (b'{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},'
         b'"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}')
    j += b" " * (-len(j) % 8)
    put("safetensors", "overlap.safetensors", struct.pack("<Q", len(j)) + j + b"xyz")
    put("safetensors", "huge_len.safetensors", struct.pack("<Q", 1 << 62) + b"{}")
    # checkpoint-level invalid ones
    t1 = [("x", "F32", (1,), f32(1, 0))]
    put("ckpt", "wrong_format.safetensors", safetensors(t1, {"format": "other", "config": TINY_MLP}))
    put("ckpt", "wrong_version.safetensors",
        safetensors(t1, {"format": "vae-engine-checkpoint", "format_version": "2", "config": TINY_MLP}))
    put("ckpt", "no_config.safetensors",
        safetensors(t1, {"format": "vae-engine-checkpoint", "format_version": "1"}))
    put("ckpt", "bad_config.safetensors",
        safetensors(t1, {"format": "vae-engine-checkpoint", "format_version": "1",
                         "config": TINY_MLP.replace("latent = 2", "latent = 0")}))
    put("ckpt", "missing_tensors.safetensors",
        safetensors(t1, {"format": "vae-engine-checkpoint", "format_version": "1", "config": TINY_MLP,
                         "step": "1", "steps_per_epoch": "1", "seed": "1", "batch": "1",
                         "acc_recon": "0", "acc_kl": "0", "elapsed_s": "0"}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vae", help="vae binary, to add checkpoints of real (tiny) training runs")
    a = ap.parse_args()
    make_config()
    make_idx()
    make_cifar()
    make_npy()
    make_safetensors(a.vae)
    total = 0
    for dp, _, fs in os.walk(OUT):
        total += sum(os.path.getsize(os.path.join(dp, f)) for f in fs)
    print("corpus: %s, %d bytes" % (OUT, total))


if __name__ == "__main__":
    main()
