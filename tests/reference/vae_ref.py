"""vae_ref.py — an independent PyTorch twin of the engine's model, built from
the same INI config, for parity tests (check_reference.py) and benchmarks
(bench/).

Nothing here calls the engine: the INI reader, the layer-spec parser, the
model, the loss, the safetensors reader and the MNIST reader are written
from the config format (include/vae_config.h) and the model's definition
(include/vae_model.h):

  x [B, C, H, W] -> encoder -> head (Linear to 2L: mu | log-variance, or to L
  for an autoencoder) -> z = mu + exp(lv/2) eps -> decoder -> out [B, D]
  loss = mean_b [recon_b + beta KL_b]
    bernoulli: recon = sum_d BCE-with-logits(out, x)
    gaussian:  recon = 0.5 sum_d (out - x)^2 / sigma^2 + 0.5 D log(2 pi sigma^2)
    KL = 0.5 sum_l (mu^2 + exp(lv) - 1 - lv)

state_dict names follow nn.Sequential: encoder.<i>.weight/bias with i the
position in the config's layer list (activations and views count),
head.weight/bias, decoder.<i>.weight/bias — the names the engine's
checkpoints use, so load_state_dict(strict=True) checks that both sides
agree on every tensor name and shape.

Needs torch and numpy (Debian: /usr/bin/python3).
"""
import gzip
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# ------------------------------------------------------------------ INI


def read_ini(text):
    """Sections of an INI text as {section: [(key, value, line), ...]}, keys
    in file order, repeated keys kept. Comments: whole lines starting with
    ';' or '#', and inline comments ' ;...' (a ';' after whitespace), as
    inih reads them. 'key: value' is accepted like 'key = value'."""
    out = {}
    section = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.lstrip("\ufeff").strip()
        if not line or line[0] in ";#":
            continue
        # inline ';' comment: only when preceded by whitespace
        for i in range(1, len(line)):
            if line[i] == ";" and line[i - 1].isspace():
                line = line[:i].rstrip()
                break
        if line.startswith("["):
            if not line.endswith("]"):
                raise ValueError(f"line {lineno}: bad section header {raw!r}")
            section = line[1:-1].strip()
            if section in out:
                raise ValueError(f"line {lineno}: section [{section}] appears twice")
            out[section] = []
            continue
        seps = [i for i in (line.find("="), line.find(":")) if i >= 0]
        if not seps or section is None:
            raise ValueError(f"line {lineno}: cannot parse {raw!r}")
        i = min(seps)
        out[section].append((line[:i].strip(), line[i + 1:].strip(), lineno))
    return out


def _get(ini, section, key, default=None):
    vals = [v for k, v, _ in ini.get(section, []) if k == key]
    if len(vals) > 1:
        raise ValueError(f"[{section}] {key} given {len(vals)} times")
    return vals[0] if vals else default


def parse_shape(s):
    parts = s.split("x")
    if len(parts) != 3:
        raise ValueError(f"shape {s!r}: expected CxHxW")
    return tuple(int(p) for p in parts)


def parse_layer(spec):
    """'conv 32 k=3 stride=2 pad=1' -> {'kind': 'conv', 'out': 32, 'k': 3, ...}.
    Defaults as documented: stride 1, pad 0, out_pad 0, slope 0.01."""
    tok = spec.split()
    kind = tok[0]
    L = {"kind": kind, "out": 0, "k": 0, "stride": 1, "pad": 0, "out_pad": 0,
         "slope": 0.01, "shape": None}
    for t in tok[1:]:
        if "=" in t:
            k, v = t.split("=", 1)
            if k == "slope":
                L["slope"] = float(v)
            elif k in ("k", "stride", "pad", "out_pad"):
                L[k] = int(v)
            else:
                raise ValueError(f"layer {spec!r}: unknown option {k!r}")
        elif kind == "reshape":
            L["shape"] = parse_shape(t)
        else:
            L["out"] = int(t)
    if kind not in ("dense", "conv", "convT", "relu", "leaky_relu", "flatten", "reshape"):
        raise ValueError(f"unknown layer kind {kind!r}")
    if kind in ("conv", "convT") and L["k"] < 1:
        raise ValueError(f"layer {spec!r}: k= is required")
    return L


class RefConfig:
    """The keys the model and the loss depend on, with the documented defaults."""

    def __init__(self, text, path="<string>"):
        ini = read_ini(text)
        self.path = path
        self.text = text
        self.dataset = _get(ini, "data", "dataset", "mnist")
        self.type = _get(ini, "model", "type", "vae")
        self.input = parse_shape(_get(ini, "model", "input"))
        self.latent = int(_get(ini, "model", "latent"))
        self.likelihood = _get(ini, "model", "likelihood", "bernoulli")
        self.sigma = float(_get(ini, "model", "sigma", "1"))
        self.enc = [parse_layer(v) for k, v, _ in ini.get("encoder", []) if k == "layer"]
        self.dec = [parse_layer(v) for k, v, _ in ini.get("decoder", []) if k == "layer"]
        self.seed = int(_get(ini, "train", "seed", "1"))
        self.beta = float(_get(ini, "train", "beta", "1"))
        self.batch = int(_get(ini, "train", "batch", "128"))
        self.epochs = int(_get(ini, "train", "epochs", "10"))
        self.lr = float(_get(ini, "optim", "lr", "1e-3"))
        self.D = self.input[0] * self.input[1] * self.input[2]
        if self.type not in ("vae", "ae"):
            raise ValueError(f"[model] type = {self.type!r}")
        if self.likelihood not in ("bernoulli", "gaussian"):
            raise ValueError(f"[model] likelihood = {self.likelihood!r}")

    @classmethod
    def load(cls, path):
        with open(path, encoding="utf-8") as f:
            return cls(f.read(), path)


# ---------------------------------------------------------------- model


class FlatLinear(nn.Linear):
    """nn.Linear that takes [B, C, 1, 1] as [B, C] (a dense layer right on a
    Cx1x1 model input); state_dict names are those of nn.Linear."""

    def forward(self, x):
        return super().forward(x.flatten(1) if x.dim() > 2 else x)


class Reshape(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x):
        return x.reshape(x.shape[0], *self.shape)


def build_layers(specs, shape):
    """nn.Sequential for a layer list whose input has shape (c, h, w); returns
    it, the output shape and a description per layer (for cross-checks)."""
    mods, desc = [], []
    c, h, w = shape
    for L in specs:
        kind, in_shape = L["kind"], (c, h, w)
        if kind == "dense":
            if h != 1 or w != 1:
                raise ValueError(f"dense after {in_shape}: needs a flat input")
            mods.append(FlatLinear(c, L["out"]))
            c = L["out"]
        elif kind == "conv":
            mods.append(nn.Conv2d(c, L["out"], L["k"], stride=L["stride"], padding=L["pad"]))
            h = (h + 2 * L["pad"] - L["k"]) // L["stride"] + 1
            w = (w + 2 * L["pad"] - L["k"]) // L["stride"] + 1
            c = L["out"]
        elif kind == "convT":
            mods.append(nn.ConvTranspose2d(c, L["out"], L["k"], stride=L["stride"],
                                           padding=L["pad"], output_padding=L["out_pad"]))
            h = (h - 1) * L["stride"] - 2 * L["pad"] + L["k"] + L["out_pad"]
            w = (w - 1) * L["stride"] - 2 * L["pad"] + L["k"] + L["out_pad"]
            c = L["out"]
        elif kind == "relu":
            mods.append(nn.ReLU())
        elif kind == "leaky_relu":
            mods.append(nn.LeakyReLU(L["slope"]))
        elif kind == "flatten":
            mods.append(nn.Flatten())
            c, h, w = c * h * w, 1, 1
        elif kind == "reshape":
            if math.prod(L["shape"]) != c * h * w:
                raise ValueError(f"reshape {L['shape']} of {in_shape}")
            mods.append(Reshape(L["shape"]))
            c, h, w = L["shape"]
        desc.append(dict(L, in_shape=in_shape, out_shape=(c, h, w)))
    return nn.Sequential(*mods), (c, h, w), desc


class RefVAE(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.L = cfg.latent
        self.is_vae = cfg.type == "vae"
        self.encoder, enc_out, self.enc_desc = build_layers(cfg.enc, cfg.input)
        n_enc = enc_out[0] * enc_out[1] * enc_out[2]
        if enc_out[1] != 1 or enc_out[2] != 1:
            raise ValueError(f"encoder output {enc_out} is not flat")
        self.head = FlatLinear(n_enc, 2 * self.L if self.is_vae else self.L)
        self.decoder, dec_out, self.dec_desc = build_layers(cfg.dec, (self.L, 1, 1))
        if dec_out[0] * dec_out[1] * dec_out[2] != cfg.D:
            raise ValueError(f"decoder output {dec_out} has not D = {cfg.D} values")

    def forward(self, x, eps=None):
        """x [B, C, H, W] in [0,1]; eps [B, L] (VAE). Returns a dict with
        head, mu, lv, z, out [B, D], recon [B], kl [B]."""
        B = x.shape[0]
        cfg = self.cfg
        hd = self.head(self.encoder(x))
        if self.is_vae:
            mu, lv = hd[:, :self.L], hd[:, self.L:]
            z = mu + torch.exp(0.5 * lv) * eps
            kl = 0.5 * (mu * mu + torch.exp(lv) - 1.0 - lv).sum(1)
        else:
            mu, lv, z = hd, None, hd
            kl = torch.zeros(B, dtype=x.dtype, device=x.device)
        out = self.decoder(z).reshape(B, -1)
        t = x.reshape(B, -1)
        if cfg.likelihood == "bernoulli":
            recon = F.binary_cross_entropy_with_logits(out, t, reduction="none").sum(1)
        else:
            s2 = cfg.sigma * cfg.sigma
            recon = (0.5 * ((out - t) ** 2).sum(1) / s2
                     + 0.5 * cfg.D * math.log(2.0 * math.pi * s2))
        return {"head": hd, "mu": mu, "lv": lv, "z": z, "out": out, "recon": recon, "kl": kl}

    def loss(self, x, eps=None, beta=None):
        """(mean_b [recon_b + beta kl_b], the forward dict)."""
        r = self.forward(x, eps)
        beta = self.cfg.beta if beta is None else beta
        return (r["recon"] + beta * r["kl"]).mean(), r

    def layer_lines(self):
        """The layer list in the format of vae_refdump's 'layers' metadata."""
        lines = []
        for sec, desc in (("encoder", self.enc_desc), ("decoder", self.dec_desc)):
            for i, L in enumerate(desc):
                lines.append((sec, i, L))
        return lines


# ---------------------------------------------------------- safetensors

_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
           "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8,
           "BOOL": np.bool_}


def read_safetensors(path):
    """({name: np.ndarray}, {metadata}) from a safetensors file: 8-byte
    little-endian header length, a JSON header, then the data area that the
    header's data_offsets index."""
    with open(path, "rb") as f:
        buf = f.read()
    if len(buf) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", buf[:8])
    if 8 + n > len(buf):
        raise ValueError(f"{path}: header length {n} exceeds the file")
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {}) or {}
    data = memoryview(buf)[8 + n:]
    tensors = {}
    for name, info in header.items():
        dt = np.dtype(_DTYPES[info["dtype"]]).newbyteorder("<")
        b, e = info["data_offsets"]
        shape = tuple(info["shape"])
        count = int(np.prod(shape)) if shape else 1
        if e - b != count * dt.itemsize or e > len(data):
            raise ValueError(f"{path}: tensor {name}: bad offsets {b}..{e}")
        tensors[name] = np.frombuffer(data[b:e], dtype=dt).reshape(shape).copy()
    return tensors, meta


def load_engine_checkpoint(model, path, dtype=torch.float64):
    """Load an engine checkpoint into a RefVAE: the optimizer.* tensors set
    aside, the rest through load_state_dict(strict=True). Returns metadata."""
    tensors, meta = read_safetensors(path)
    sd = {k: torch.from_numpy(v).to(dtype) for k, v in tensors.items()
          if not k.startswith("optimizer.")}
    model.load_state_dict(sd, strict=True)
    return meta


# ----------------------------------------------------------------- data


def data_dir(flag=None):
    return flag or os.environ.get("VAE_DATA_DIR") or "data"


def load_mnist(directory, train):
    """MNIST images as uint8 [N, 1, 28, 28] from DIR/mnist/ (or DIR/),
    gzip-compressed or raw IDX."""
    stem = "train-images-idx3-ubyte" if train else "t10k-images-idx3-ubyte"
    for d in (os.path.join(directory, "mnist"), directory):
        for name in (stem + ".gz", stem):
            p = os.path.join(d, name)
            if os.path.exists(p):
                opener = gzip.open if name.endswith(".gz") else open
                with opener(p, "rb") as f:
                    raw = f.read()
                magic, n, rows, cols = struct.unpack(">IIII", raw[:16])
                if magic != 0x803 or len(raw) != 16 + n * rows * cols:
                    raise ValueError(f"{p}: not an IDX image file")
                return np.frombuffer(raw, np.uint8, offset=16).reshape(n, 1, rows, cols).copy()
    raise FileNotFoundError(f"no {stem}[.gz] under {directory}/mnist or {directory}")
