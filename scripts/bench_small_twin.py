#!/usr/bin/python3
"""A PyTorch twin of trimodal's models (bench-small and any config of the
same family), and the reference vectors of tests/model/test_twin.c.

Run with Debian's python3 (python3-torch 1.13):

    /usr/bin/python3 scripts/bench_small_twin.py export CONFIG OUTDIR [--batch 4] [--seed 0]
    /usr/bin/python3 scripts/bench_small_twin.py count CONFIG
    /usr/bin/python3 scripts/bench_small_twin.py nn-vectors tests/data/model/nn_layers.safetensors

`export` builds the model of CONFIG (a trimodal config.json) with random
weights, writes OUTDIR/config.json and OUTDIR/model.safetensors (the model
folder trimodal loads), then, for each case ("full": every modality present;
"missing": some examples lack a modality), OUTDIR/vectors_<case>.safetensors:
  tokens (B, T) I32, image (B, C, H, W), mel (B, n_mels, n_frames),
  labels (B) I32, present (B, M) I32     the inputs
  logits (B, classes), emb.<modality> (B, E), loss (3,) = total,
  classification, contrastive            the outputs
  grad.<parameter name>                  d loss / d parameter, every
                                         trainable parameter
Outputs and gradients are computed in float64 from the float32 weights and
inputs, then rounded to float32: they are the exact answer, so the C test
measures only trimodal's own rounding.

The model follows ../../shared/bench-small.md (see docs/models.md): pre-LN
blocks with a fused QKV Linear whose output columns are [q | k | v], each
split into contiguous heads; key-padding masks as additive -inf biases;
early fusion over [CLS | text | vision | audio] plus modality-type
embeddings; the classifier on the fusion CLS; contrastive projections,
L2-normalised, logits scaled by exp(min(logit_scale, max)); loss = CE +
the mean of the symmetric InfoNCE losses. A missing modality is masked as
keys in fusion, and an example drops out of the InfoNCE pairs that need
it (the pair's loss is computed on the sub-batch that has both); the mean
runs over the pairs with at least one such example.

`nn-vectors` writes single layers (positional tables; a self-attention and
a cross-attention block with key masks, outputs and gradients of
sum(y * G)) for tests/nn/test_nn.c. `count` prints the parameter count.

Only torch and the standard library are needed (the safetensors writer is
below). scripts/bench_model_torch.py imports this module for timing.
"""

import argparse
import json
import math
import os
import struct
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "silu": F.silu,
}

# ------------------------------------------------------------ config


def load_config(path):
    with open(path) as f:
        cfg = json.load(f)
    cfg.setdefault("mlp_dim", 4 * cfg["dim"])
    cfg.setdefault("activation", "gelu")
    cfg.setdefault("norm_eps", 1e-5)
    for e in cfg["encoders"]:
        m = e["modality"]
        if m == "text":
            e.setdefault("pad_id", 0)
            e.setdefault("positions", "learned")
            e.setdefault("pool", "first")
        elif m == "vision":
            e.setdefault("channels", 3)
            e.setdefault("cls_token", True)
            e.setdefault("positions", "learned")
            e.setdefault("pool", "first")
            s = e["image_size"]
            e["image_hw"] = (s, s) if isinstance(s, int) else tuple(s)
        else:
            e.setdefault("stem_activation", "gelu")
            e.setdefault("positions", "sinusoidal")
            e.setdefault("pool", "mean")
            for l in e["stem"]:
                l.setdefault("stride", 1)
                l.setdefault("padding", 0)
    f = cfg["fusion"]
    if f["type"] == "early":
        f.setdefault("cls_token", True)
        f.setdefault("type_embedding", True)
    cfg.setdefault("loss", {})
    cfg["loss"].setdefault("classification", 1.0)
    cfg["loss"].setdefault("contrastive", 1.0)
    if "contrastive" in cfg:
        c = cfg["contrastive"]
        c.setdefault("logit_scale_init", math.log(1 / 0.07))
        c.setdefault("logit_scale_max", math.log(100.0))
    return cfg


def encoder_tokens(e):
    if e["modality"] == "text":
        return e["max_tokens"]
    if e["modality"] == "vision":
        h, w = e["image_hw"]
        p = e["patch_size"]
        return (h // p) * (w // p) + (1 if e["cls_token"] else 0)
    L = e["n_frames"]
    for l in e["stem"]:
        L = (L + 2 * l["padding"] - l["kernel"]) // l["stride"] + 1
    return L


# ------------------------------------------------------- positions


def sinusoids(length, channels):
    """Whisper's table: sin half then cos half, increment ln(1e4)/(C/2-1)."""
    half = channels // 2
    inc = math.log(10000.0) / (half - 1)
    inv = torch.exp(-inc * torch.arange(half, dtype=torch.float64))
    t = torch.arange(length, dtype=torch.float64)[:, None] * inv[None, :]
    return torch.cat([torch.sin(t), torch.cos(t)], dim=1).float()


def sincos_2d(gh, gw, C, extra):
    """MAE's 2-D table: [enc(w) | enc(h)], zero rows for CLS tokens."""
    q = C // 4
    omega = 1.0 / (10000.0 ** (torch.arange(q, dtype=torch.float64) / q))

    def enc(p):
        a = p[:, None] * omega[None, :]
        return torch.cat([torch.sin(a), torch.cos(a)], dim=1)

    hh, ww = torch.meshgrid(torch.arange(gh, dtype=torch.float64),
                            torch.arange(gw, dtype=torch.float64), indexing="ij")
    tab = torch.cat([enc(ww.reshape(-1)), enc(hh.reshape(-1))], dim=1)
    return torch.cat([torch.zeros(extra, C, dtype=torch.float64), tab], dim=0).float()


# ----------------------------------------------------------- layers


class Attention(nn.Module):
    def __init__(self, C, heads):
        super().__init__()
        self.C, self.H = C, heads
        self.qkv = nn.Linear(C, 3 * C)
        self.out = nn.Linear(C, C)

    def forward(self, x, mask, ctx=None):
        B, T, C = x.shape
        H, D = self.H, C // self.H
        if ctx is None:
            qkv = self.qkv(x).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
        else:
            Tk = ctx.shape[1]
            q = F.linear(x, self.qkv.weight[:C], self.qkv.bias[:C])
            q = q.view(B, T, H, D).transpose(1, 2)
            kv = F.linear(ctx, self.qkv.weight[C:], self.qkv.bias[C:])
            kv = kv.view(B, Tk, 2, H, D).permute(2, 0, 3, 1, 4)
            k, v = kv[0], kv[1]
        s = (q @ k.transpose(-2, -1)) / math.sqrt(D)
        dead = None
        if mask is not None:
            # an example whose keys are all masked gets a zero output (as
            # trimodal's kernel), not softmax's NaN
            dead = torch.isinf(mask).all(dim=-1)
            if dead.any():
                mask = torch.where(dead[:, None], torch.zeros_like(mask), mask)
            s = s + mask[:, None, None, :]
        o = torch.softmax(s, dim=-1) @ v
        if dead is not None and dead.any():
            o = o * (~dead).to(o.dtype)[:, None, None, None]
        return self.out(o.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, C, hidden, act):
        super().__init__()
        self.fc1 = nn.Linear(C, hidden)
        self.fc2 = nn.Linear(hidden, C)
        self.act = ACTS[act]

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, cfg, cross=False):
        super().__init__()
        C, eps = cfg["dim"], cfg["norm_eps"]
        self.ln1 = nn.LayerNorm(C, eps=eps)
        self.attn = Attention(C, cfg["heads"])
        if cross:
            self.ln_ctx = nn.LayerNorm(C, eps=eps)
        self.ln2 = nn.LayerNorm(C, eps=eps)
        self.mlp = MLP(C, cfg["mlp_dim"], cfg["activation"])
        self.cross = cross

    def forward(self, x, mask, ctx=None):
        if self.cross:
            x = x + self.attn(self.ln1(x), mask, self.ln_ctx(ctx))
        else:
            x = x + self.attn(self.ln1(x), mask)
        return x + self.mlp(self.ln2(x))


class Encoder(nn.Module):
    def __init__(self, cfg, e):
        super().__init__()
        C = cfg["dim"]
        self.e = e
        self.kind = e["modality"]
        T = encoder_tokens(e)
        if self.kind == "text":
            self.tok_emb = nn.Embedding(e["vocab_size"], C)
        elif self.kind == "vision":
            p = e["patch_size"]
            self.patch = nn.Conv2d(e["channels"], C, kernel_size=p, stride=p)
            if e["cls_token"]:
                self.cls = nn.Parameter(torch.randn(1, C) * 0.02)
        else:
            self.n_stem = len(e["stem"])
            for k, l in enumerate(e["stem"]):
                setattr(self, "conv%d" % (k + 1),
                        nn.Conv1d(e["n_mels"] if k == 0 else C, C, l["kernel"],
                                  stride=l["stride"], padding=l["padding"]))
            self.stem_act = ACTS[e["stem_activation"]]
        pos = e["positions"]
        if pos == "learned":
            self.pos_emb = nn.Parameter(torch.randn(T, C) * 0.02)
        elif pos == "sinusoidal":
            self.register_buffer("pos_emb", sinusoids(T, C))
        elif pos == "sincos2d":
            h, w = e["image_hw"]
            p = e["patch_size"]
            self.register_buffer("pos_emb", sincos_2d(h // p, w // p, C, 1 if e["cls_token"] else 0))
        else:
            self.pos_emb = None
        self.layers = nn.ModuleList([Block(cfg) for _ in range(e["layers"])])
        self.ln = nn.LayerNorm(C, eps=cfg["norm_eps"])
        if e["pool"] == "attention":
            self.pool = nn.Module()
            self.pool.query = nn.Parameter(torch.randn(1, C) * 0.02)
            self.pool.attn = Attention(C, cfg["heads"])

    def pool_tokens(self, x, mask):
        """(B, T, C) -> (B, C): first token, mean (over real tokens for
        text), or a learned query's attention (the text mask included)."""
        if self.e["pool"] == "first":
            return x[:, 0]
        if self.e["pool"] == "attention":
            q = self.pool.query.expand(x.shape[0], 1, -1)
            return self.pool.attn(q, mask, ctx=x)[:, 0]
        if self.kind == "text":
            keep = torch.isfinite(mask).to(x.dtype)
            n = keep.sum(1, keepdim=True)
            w = torch.where(n > 0, keep / n.clamp(min=1), torch.zeros_like(keep))
            return (w[:, :, None] * x).sum(1)
        return x.mean(1)

    def forward(self, x):
        """-> tokens (B, T, C), pooled (B, C), key mask of the tokens (B, T) or None."""
        mask = None
        if self.kind == "text":
            ids = x
            pad = ids == self.e["pad_id"]
            mask = torch.zeros(ids.shape, dtype=self.tok_emb.weight.dtype).masked_fill(pad, -math.inf)
            x = self.tok_emb(ids)
        elif self.kind == "vision":
            x = self.patch(x).flatten(2).transpose(1, 2)
            if hasattr(self, "cls"):
                x = torch.cat([self.cls.expand(x.shape[0], 1, -1), x], dim=1)
        else:
            for k in range(self.n_stem):
                x = self.stem_act(getattr(self, "conv%d" % (k + 1))(x))
            x = x.transpose(1, 2)
        if self.pos_emb is not None:
            x = x + self.pos_emb
        for blk in self.layers:
            x = blk(x, mask)
        x = self.ln(x)
        return x, self.pool_tokens(x, mask), mask


def modality_masks(outs, present):
    """Each stream's key mask (B, T): its padding, and -inf everywhere for
    the examples that lack the modality."""
    masks = []
    for i, (tok, _, kmask) in enumerate(outs):
        B, T = tok.shape[0], tok.shape[1]
        m = kmask.clone() if kmask is not None else torch.zeros(B, T, dtype=tok.dtype)
        m[~present[:, i]] = -math.inf
        masks.append(m)
    return masks


class LateFusion(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C, M = cfg["dim"], len(cfg["encoders"])
        f = cfg["fusion"]
        self.combine = f.get("combine", "concat")
        self.act = ACTS[cfg["activation"]]
        n_in = C * M if self.combine == "concat" else C
        if self.combine == "gated":
            self.gate = nn.Linear(C, 1)
        if f.get("hidden", 0):
            self.mlp = nn.Module()
            self.mlp.fc1 = nn.Linear(n_in, f["hidden"])
            n_in = f["hidden"]
        if "classifier" in cfg:
            self.head = nn.Linear(n_in, cfg["classifier"]["num_classes"])

    def forward(self, outs, present, encoders):
        P = torch.stack([o[1] for o in outs], dim=1)  # (B, M, C)
        pres = present.to(P.dtype)
        if self.combine == "concat":
            y = (P * pres[:, :, None]).flatten(1)
        elif self.combine == "sum":
            w = pres / pres.sum(1, keepdim=True).clamp(min=1)
            y = (P * w[:, :, None]).sum(1)
        else:
            s = self.gate(P).squeeze(-1) + torch.where(present, 0.0, -1e30).to(P.dtype)
            y = (P * torch.softmax(s, dim=1)[:, :, None]).sum(1)
        if hasattr(self, "mlp"):
            y = self.act(self.mlp.fc1(y))
        return self.head(y) if hasattr(self, "head") else None


class CrossFusion(nn.Module):
    """Streams exchange information through cross-attention blocks: in
    layer l each stream attends to the other streams' tokens of layer l-1."""

    def __init__(self, cfg):
        super().__init__()
        C = cfg["dim"]
        self.names = [e["modality"] for e in cfg["encoders"]]
        for n in self.names:
            m = nn.Module()
            m.layers = nn.ModuleList([Block(cfg, cross=True) for _ in range(cfg["fusion"]["layers"])])
            m.ln = nn.LayerNorm(C, eps=cfg["norm_eps"])
            setattr(self, n, m)
        if "classifier" in cfg:
            self.head = nn.Linear(C * len(self.names), cfg["classifier"]["num_classes"])

    def forward(self, outs, present, encoders):
        xs = [o[0] for o in outs]
        masks = modality_masks(outs, present)
        M = len(xs)
        for l in range(len(getattr(self, self.names[0]).layers)):
            new = []
            for i in range(M):
                ctx = torch.cat([xs[j] for j in range(M) if j != i], dim=1)
                cm = torch.cat([masks[j] for j in range(M) if j != i], dim=1)
                new.append(getattr(self, self.names[i]).layers[l](xs[i], cm, ctx))
            xs = new
        pooled = [encoders[i].pool_tokens(getattr(self, self.names[i]).ln(xs[i]), outs[i][2])
                  for i in range(M)]
        y = (torch.stack(pooled, dim=1) * present.to(xs[0].dtype)[:, :, None]).flatten(1)
        return self.head(y) if hasattr(self, "head") else None


class Fusion(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        C = cfg["dim"]
        f = cfg["fusion"]
        self.f = f
        M = len(cfg["encoders"])
        if f["cls_token"]:
            self.cls = nn.Parameter(torch.randn(1, C) * 0.02)
        if f["type_embedding"]:
            self.type_emb = nn.Parameter(torch.randn(M + 1, C) * 0.02)
        self.layers = nn.ModuleList([Block(cfg) for _ in range(f["layers"])])
        self.ln = nn.LayerNorm(C, eps=cfg["norm_eps"])
        if "classifier" in cfg:
            self.head = nn.Linear(C, cfg["classifier"]["num_classes"])

    def forward(self, outs, present, encoders=None):
        B = outs[0][0].shape[0]
        dtype = outs[0][0].dtype
        parts, types, masks = [], [], []
        if self.f["cls_token"]:
            parts.append(self.cls.expand(B, 1, -1))
            types.append(torch.zeros(1, dtype=torch.long))
            masks.append(torch.zeros(B, 1, dtype=dtype))
        for i, (tok, _, kmask) in enumerate(outs):
            T = tok.shape[1]
            parts.append(tok)
            types.append(torch.full((T,), i + 1, dtype=torch.long))
            m = kmask.clone() if kmask is not None else torch.zeros(B, T, dtype=dtype)
            m[~present[:, i]] = -math.inf
            masks.append(m)
        x = torch.cat(parts, dim=1)
        if self.f["type_embedding"]:
            x = x + self.type_emb[torch.cat(types)]
        mask = torch.cat(masks, dim=1)
        for blk in self.layers:
            x = blk(x, mask)
        x = self.ln(x)
        return self.head(x[:, 0]) if hasattr(self, "head") else None


class TwinModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.names = [e["modality"] for e in cfg["encoders"]]
        for e in cfg["encoders"]:
            setattr(self, e["modality"], Encoder(cfg, e))
        kind = cfg["fusion"]["type"]
        self.fusion = {"early": Fusion, "late": LateFusion, "cross": CrossFusion}[kind](cfg)
        if "contrastive" in cfg:
            E = cfg["contrastive"]["dim"]
            for n in self.names:
                setattr(self, "proj_" + n, nn.Linear(cfg["dim"], E, bias=False))
            self.logit_scale = nn.Parameter(torch.tensor(float(cfg["contrastive"]["logit_scale_init"])))

    def encode(self, inputs):
        outs = []
        for n in self.names:
            x = {"text": inputs["tokens"], "vision": inputs["image"], "audio": inputs["mel"]}[n]
            outs.append(getattr(self, n)(x))
        return outs

    def forward(self, inputs, present=None, need_loss=True):
        """-> dict with logits, emb (list), loss, classification, contrastive."""
        outs = self.encode(inputs)
        B = outs[0][0].shape[0]
        if present is None:
            present = torch.ones(B, len(self.names), dtype=torch.bool)
        r = {"logits": self.fusion(outs, present, [getattr(self, n) for n in self.names])}
        cfg = self.cfg
        total = 0.0
        if r["logits"] is not None and need_loss and "labels" in inputs:
            r["classification"] = F.cross_entropy(r["logits"], inputs["labels"], ignore_index=-100)
            total = total + cfg["loss"]["classification"] * r["classification"]
        if "contrastive" in cfg:
            r["emb"] = [F.normalize(getattr(self, "proj_" + n)(o[1]), dim=-1, eps=1e-12)
                        for n, o in zip(self.names, outs)]
            if need_loss:
                scale = torch.exp(torch.clamp(self.logit_scale, max=cfg["contrastive"]["logit_scale_max"]))
                pair_losses = []
                M = len(self.names)
                for i in range(M):
                    for j in range(i + 1, M):
                        idx = (present[:, i] & present[:, j]).nonzero().flatten()
                        if len(idx) == 0:
                            continue
                        a, b = r["emb"][i][idx], r["emb"][j][idx]
                        L = scale * a @ b.t()
                        lab = torch.arange(len(idx))
                        pair_losses.append((F.cross_entropy(L, lab) + F.cross_entropy(L.t(), lab)) / 2)
                r["contrastive"] = sum(pair_losses) / len(pair_losses)
                total = total + cfg["loss"]["contrastive"] * r["contrastive"]
        r["loss"] = total
        return r


# ------------------------------------------------------------ inputs


def make_inputs(cfg, B, gen):
    inp = {}
    for e in cfg["encoders"]:
        m = e["modality"]
        if m == "text":
            T, V, pad = e["max_tokens"], e["vocab_size"], e["pad_id"]
            ids = torch.randint(0, V, (B, T), generator=gen)
            ids[ids == pad] = (pad + 1) % V
            for b in range(B):  # examples end in padding of different lengths
                n = T - (b * max(1, T // 4)) % T
                ids[b, n:] = pad
            inp["tokens"] = ids
        elif m == "vision":
            h, w = e["image_hw"]
            inp["image"] = torch.randn(B, e["channels"], h, w, generator=gen)
        else:
            inp["mel"] = torch.randn(B, e["n_mels"], e["n_frames"], generator=gen)
    if "classifier" in cfg:
        inp["labels"] = torch.randint(0, cfg["classifier"]["num_classes"], (B,), generator=gen)
    return inp


# ------------------------------------------------------ safetensors


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, tensor) of float32 or int32, in file order."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, off = [], 0
    for name, t in tensors:
        t = t.detach().contiguous()
        if t.dtype == torch.float32:
            code = "F32"
        elif t.dtype == torch.int32:
            code = "I32"
        else:
            raise ValueError("%s: unsupported dtype %s" % (name, t.dtype))
        raw = t.numpy().tobytes() if sys.byteorder == "little" else t.numpy().byteswap().tobytes()
        header[name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)


# ---------------------------------------------------------- commands


def build(cfg, seed):
    torch.manual_seed(seed)
    model = TwinModel(cfg)
    # move every parameter off its init value a little (LayerNorm 1/0 and
    # the like would hide layout mistakes)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def run_case(model, cfg, inputs, present):
    m64 = model.double()
    inp = {k: (v.double() if v.is_floating_point() else v) for k, v in inputs.items()}
    m64.zero_grad()
    r = m64(inp, present)
    r["loss"].backward()
    out = [("logits", r["logits"].float())] if r["logits"] is not None else []
    for n, e in zip(m64.names, r.get("emb", [])):
        out.append(("emb." + n, e.float()))
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    out.append(("loss", torch.stack([r["loss"], r.get("classification", nan),
                                     r.get("contrastive", nan)]).float()))
    for name, p in m64.named_parameters():
        out.append(("grad." + name, p.grad.float()))
    model.float()
    return out


def cmd_export(args):
    cfg = load_config(args.config)
    os.makedirs(args.outdir, exist_ok=True)
    model = build(cfg, args.seed)
    with open(args.config) as f:
        text = f.read()
    with open(os.path.join(args.outdir, "config.json"), "w") as f:
        f.write(text)
    sd = model.state_dict()
    write_safetensors(os.path.join(args.outdir, "model.safetensors"),
                      [(k, v.float()) for k, v in sd.items()], {"format": "pt"})
    gen = torch.Generator().manual_seed(args.seed + 2)
    inputs = make_inputs(cfg, args.batch, gen)
    M = len(cfg["encoders"])
    B = args.batch
    cases = {"full": torch.ones(B, M, dtype=torch.bool)}
    if M >= 2:
        miss = torch.ones(B, M, dtype=torch.bool)
        for b in range(1, B):  # example b lacks modality (b - 1) % M; example 0 has all
            miss[b, (b - 1) % M] = False
        cases["missing"] = miss
    for case, present in cases.items():
        tensors = []
        for k in ("tokens", "image", "mel", "labels"):
            if k in inputs:
                v = inputs[k]
                tensors.append((k, v.to(torch.int32) if not v.is_floating_point() else v.float()))
        tensors.append(("present", present.to(torch.int32)))
        with torch.enable_grad():
            tensors += run_case(model, cfg, inputs, present)
        write_safetensors(os.path.join(args.outdir, "vectors_%s.safetensors" % case), tensors,
                          {"case": case, "batch": B, "seed": args.seed})
    print("wrote %s (%d parameters)" % (args.outdir, sum(p.numel() for p in model.parameters())))


def cmd_nn_vectors(args):
    """Single layers for tests/nn/test_nn.c: positional tables, a self and
    a cross block with key masks (outputs and gradients of sum(y * G))."""
    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    cfg = {"dim": 16, "heads": 2, "mlp_dim": 24, "activation": "gelu_tanh", "norm_eps": 1e-5}
    out = [("sinusoid", sinusoids(7, 12)), ("sincos2d", sincos_2d(2, 3, 8, 1))]
    for kind in ("self", "cross"):
        blk = Block(cfg, cross=(kind == "cross"))
        with torch.no_grad():
            for p in blk.parameters():
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        blk = blk.double()
        B, Tq, Tk = 2, 5 if kind == "self" else 3, 5
        x = torch.randn(B, Tq, 16, generator=g).double().requires_grad_(True)
        ctx = torch.randn(B, Tk, 16, generator=g).double().requires_grad_(True)
        mask = torch.zeros(B, Tk, dtype=torch.float64)
        mask[0, 3:] = -math.inf
        mask[1, 1] = -math.inf
        y = blk(x, mask, ctx if kind == "cross" else None)
        G = torch.randn(y.shape, generator=g).double()
        (y * G).sum().backward()
        pre = kind + "."
        out += [(pre + "x", x.float()), (pre + "mask", mask.float()), (pre + "G", G.float()),
                (pre + "y", y.float()), (pre + "grad_x", x.grad.float())]
        if kind == "cross":
            out += [(pre + "ctx", ctx.float()), (pre + "grad_ctx", ctx.grad.float())]
        for name, p in blk.named_parameters():
            out += [(pre + "param." + name, p.float()), (pre + "grad." + name, p.grad.float())]
    write_safetensors(args.out, out, {"dim": 16, "heads": 2, "mlp_dim": 24, "act": "gelu_tanh"})
    print("wrote", args.out)


def cmd_count(args):
    cfg = load_config(args.config)
    model = TwinModel(cfg)
    print(sum(p.numel() for p in model.parameters()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export")
    e.add_argument("config")
    e.add_argument("outdir")
    e.add_argument("--batch", type=int, default=4)
    e.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("count")
    c.add_argument("config")
    v = sub.add_parser("nn-vectors")
    v.add_argument("out")
    v.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    {"export": cmd_export, "count": cmd_count, "nn-vectors": cmd_nn_vectors}[args.cmd](args)


if __name__ == "__main__":
    main()
