#!/usr/bin/python3
"""A PyTorch twin of trimodal's models (bench-small and any config of the
same family), and the reference vectors of tests/model/test_twin.c.

Run with Debian's python3 (python3-torch 1.13):

    /usr/bin/python3 scripts/bench_small_twin.py export CONFIG OUTDIR [--batch 4] [--seed 0]
        [--eos-bias X]
    /usr/bin/python3 scripts/bench_small_twin.py count CONFIG
    /usr/bin/python3 scripts/bench_small_twin.py nn-vectors tests/data/model/nn_layers.safetensors

`export` builds the model of CONFIG (a trimodal config.json) with random
weights, writes OUTDIR/config.json and OUTDIR/model.safetensors (the model
folder trimodal loads), then, for each case ("full": every modality present;
"missing": example b >= 1 lacks modality (b - 1) % M, and when the batch
has at least M + 2 examples the last one lacks every modality),
OUTDIR/vectors_<case>.safetensors:
  tokens (B, T) I32, image (B, C, H, W), mel (B, n_mels, n_frames),
  labels (B) I32, present (B, M) I32     the inputs
  caption (B, Tc) I32                    with a caption head: [bos, words,
                                         eos, pad...]; from 5 examples on,
                                         the second-to-last is all pad
  mlm_labels (B, T) I32                  with a masked-token head: the
                                         original id where tokens holds
                                         mask_id, -100 elsewhere
  logits (B, classes), emb.<modality> (B, E),
  loss (3,) = total, classification, contrastive, or (5,) adding caption,
  masked when the model has either head (NaN: no label for that part)
  caption_logits (B, Tc-1, V_caption), caption_logprob (B) (each caption's
  summed log-probability, -inf without a context), mlm_logits (B, T, V),
  caption_greedy (B, Tc-1) I32, caption_greedy_len (B) I32,
  caption_greedy_score (B), caption_greedy_margin (B) (greedy decoding;
  see greedy_captions)                   the outputs
  grad.<parameter name>                  d loss / d parameter, every
                                         trainable parameter
Outputs and gradients are computed in float64 from the float32 weights and
inputs, then rounded to float32: they are the exact answer, so the C test
measures only trimodal's own rounding. Dropout and drop_path must be 0
(random masks cannot be matched).

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

Later features (docs/models.md): a causal text encoder and rotary
positions (GPT-NeoX "rotate half", on q and k after the head split); the
CNN vision backbone (3x3 conv, GroupNorm, activation, max-pool per stage,
then a Linear to dim); AST-style audio patches (a Conv2d over the
(1, n_mels, n_frames) picture, tokens mel row by row); bottleneck fusion
(per stream self-attention over [x_i ; z], z the mean of the streams'
copies over the present modalities); the caption decoder (causal
self-attention, cross-attention to the context with the fused QKV's rows
[0, C) for queries and [C, 3C) for keys and values, an MLP; teacher
forcing on caption[:, :-1] against caption[:, 1:], pads and examples
without a context not scored); the masked-token head; loss weights.

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
            e.setdefault("causal", False)
            if e["positions"] == "rotary":
                e.setdefault("rope_base", 10000.0)
        elif m == "vision":
            e.setdefault("channels", 3)
            e.setdefault("cls_token", True)
            e.setdefault("positions", "learned")
            e.setdefault("pool", "first")
            e.setdefault("backbone", "vit")
            s = e["image_size"]
            e["image_hw"] = (s, s) if isinstance(s, int) else tuple(s)
            h, w = e["image_hw"]
            if e["backbone"] == "cnn":
                e.setdefault("norm_groups", 8)
                for st in e["stages"]:
                    st.setdefault("blocks", 1)
                    st.setdefault("pool", 2)
                    h, w = h // st["pool"], w // st["pool"]
                e["grid"] = (h, w)
            else:
                e["grid"] = (h // e["patch_size"], w // e["patch_size"])
        else:
            e.setdefault("positions", "sinusoidal")
            e.setdefault("pool", "mean")
            if "patch_size" in e:  # AST-style 2-D patches of the spectrogram
                P = e["patch_size"]
                S = e.setdefault("patch_stride", P)
                e.setdefault("cls_token", False)
                e["grid"] = ((e["n_mels"] - P) // S + 1, (e["n_frames"] - P) // S + 1)
            else:
                e.setdefault("stem_activation", "gelu")
                e["cls_token"] = False
                for l in e["stem"]:
                    l.setdefault("stride", 1)
                    l.setdefault("padding", 0)
    f = cfg["fusion"]
    if f["type"] == "early":
        f.setdefault("cls_token", True)
        f.setdefault("type_embedding", True)
    if f["type"] == "bottleneck":
        f.setdefault("tokens", 4)
    if "caption" in cfg:
        cp = cfg["caption"]
        text = [e for e in cfg["encoders"] if e["modality"] == "text"]
        if text:
            cp.setdefault("vocab_size", text[0]["vocab_size"])
            cp.setdefault("pad_id", text[0]["pad_id"])
        cp.setdefault("pad_id", 0)
        cp.setdefault("context", "fusion")
        cp.setdefault("positions", "learned")
    cfg.setdefault("loss", {})
    for k in ("classification", "contrastive", "caption", "masked"):
        cfg["loss"].setdefault(k, 1.0)
    if "contrastive" in cfg:
        c = cfg["contrastive"]
        c.setdefault("logit_scale_init", math.log(1 / 0.07))
        c.setdefault("logit_scale_max", math.log(100.0))
    return cfg


def encoder_tokens(e):
    if e["modality"] == "text":
        return e["max_tokens"]
    if "grid" in e:  # ViT patches, CNN feature map, 2-D audio patches
        gh, gw = e["grid"]
        return gh * gw + (1 if e["cls_token"] else 0)
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


def rope(x, base):
    """Rotary positions on (B, H, T, D), "rotate half" (GPT-NeoX) pairs
    (i, i + D/2) turned by the angle t * base^(-2i/D) at position t."""
    T, D = x.shape[-2], x.shape[-1]
    half = D // 2
    theta = float(base) ** (-2.0 * torch.arange(half, dtype=torch.float64) / D)
    a = torch.arange(T, dtype=torch.float64)[:, None] * theta[None, :]
    cos, sin = torch.cos(a).to(x.dtype), torch.sin(a).to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, C, heads, causal=False, rope_base=0.0):
        super().__init__()
        self.C, self.H = C, heads
        self.qkv = nn.Linear(C, 3 * C)
        self.out = nn.Linear(C, C)
        self.causal, self.rope_base = causal, rope_base

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
        if self.rope_base > 0:  # self-attention only: queries and keys share positions
            q, k = rope(q, self.rope_base), rope(k, self.rope_base)
        s = (q @ k.transpose(-2, -1)) / math.sqrt(D)
        if mask is not None:
            s = s + mask[:, None, None, :]
        if self.causal:
            later = torch.ones(T, k.shape[2], dtype=torch.bool).triu(1)
            s = s.masked_fill(later, -math.inf)
        # a query whose keys are all masked gets a zero output (as
        # trimodal's kernel), not softmax's NaN
        dead = torch.isinf(s).all(dim=-1, keepdim=True)
        if dead.any():
            p = torch.softmax(s.masked_fill(dead, 0.0), dim=-1) * (~dead).to(s.dtype)
        else:
            p = torch.softmax(s, dim=-1)
        o = p @ v
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
    def __init__(self, cfg, cross=False, causal=False, rope_base=0.0):
        super().__init__()
        C, eps = cfg["dim"], cfg["norm_eps"]
        self.ln1 = nn.LayerNorm(C, eps=eps)
        self.attn = Attention(C, cfg["heads"], causal, rope_base)
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


class DecoderBlock(nn.Module):
    """x + SelfAttn(ln1 x, causal); x + CrossAttn(ln2 x, ctx, ctx mask);
    x + MLP(ln3 x). The context is used as given (no LayerNorm)."""

    def __init__(self, cfg, rope_base=0.0):
        super().__init__()
        C, eps, H = cfg["dim"], cfg["norm_eps"], cfg["heads"]
        self.ln1 = nn.LayerNorm(C, eps=eps)
        self.attn = Attention(C, H, causal=True, rope_base=rope_base)
        self.ln2 = nn.LayerNorm(C, eps=eps)
        self.xattn = Attention(C, H)
        self.ln3 = nn.LayerNorm(C, eps=eps)
        self.mlp = MLP(C, cfg["mlp_dim"], cfg["activation"])

    def forward(self, x, ctx, cmask):
        x = x + self.attn(self.ln1(x), None)
        x = x + self.xattn(self.ln2(x), cmask, ctx)
        return x + self.mlp(self.ln3(x))


class Encoder(nn.Module):
    def __init__(self, cfg, e):
        super().__init__()
        C = cfg["dim"]
        self.e = e
        self.kind = e["modality"]
        T = encoder_tokens(e)
        causal, rope_base = False, 0.0
        if self.kind == "text":
            self.tok_emb = nn.Embedding(e["vocab_size"], C)
            causal = e["causal"]
            rope_base = e["rope_base"] if e["positions"] == "rotary" else 0.0
        elif self.kind == "vision":
            if e["backbone"] == "cnn":
                # vision.cnn.<stage>.<block>.{conv,norm}, vision.cnn.proj
                self.cnn = nn.Module()
                cin = e["channels"]
                for si, st in enumerate(e["stages"]):
                    stage = nn.Module()
                    for bi in range(st["blocks"]):
                        blk = nn.Module()
                        blk.conv = nn.Conv2d(cin, st["channels"], 3, padding=1)
                        blk.norm = nn.GroupNorm(e["norm_groups"], st["channels"], eps=cfg["norm_eps"])
                        stage.add_module(str(bi), blk)
                        cin = st["channels"]
                    self.cnn.add_module(str(si), stage)
                self.cnn.proj = nn.Linear(cin, C)
                self.cnn_act = ACTS[cfg["activation"]]
            else:
                p = e["patch_size"]
                self.patch = nn.Conv2d(e["channels"], C, kernel_size=p, stride=p)
            if e["cls_token"]:
                self.cls = nn.Parameter(torch.randn(1, C) * 0.02)
        elif "patch_size" in e:
            # AST: 2-D patches of the (1, n_mels, n_frames) picture
            self.patch = nn.Conv2d(1, C, kernel_size=e["patch_size"], stride=e["patch_stride"])
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
            gh, gw = e["grid"]
            self.register_buffer("pos_emb", sincos_2d(gh, gw, C, 1 if e["cls_token"] else 0))
        else:  # "none", or "rotary" (inside the attention)
            self.pos_emb = None
        self.layers = nn.ModuleList([Block(cfg, causal=causal, rope_base=rope_base)
                                     for _ in range(e["layers"])])
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
        elif self.kind == "vision" and hasattr(self, "cnn"):
            for si, st in enumerate(self.e["stages"]):
                stage = getattr(self.cnn, str(si))
                for bi in range(st["blocks"]):
                    blk = getattr(stage, str(bi))
                    x = self.cnn_act(blk.norm(blk.conv(x)))
                if st["pool"] > 1:
                    x = F.max_pool2d(x, st["pool"])
            x = self.cnn.proj(x.flatten(2).transpose(1, 2))
        elif self.kind == "vision":
            x = self.patch(x).flatten(2).transpose(1, 2)
        elif hasattr(self, "patch"):
            x = self.patch(x[:, None]).flatten(2).transpose(1, 2)  # mel rows outer
        else:
            for k in range(self.n_stem):
                x = self.stem_act(getattr(self, "conv%d" % (k + 1))(x))
            x = x.transpose(1, 2)
        if hasattr(self, "cls"):
            x = torch.cat([self.cls.expand(x.shape[0], 1, -1), x], dim=1)
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
        """-> class logits (or None), the caption context: the encoders' tokens."""
        ctx = torch.cat([o[0] for o in outs], dim=1)
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
        return (self.head(y) if hasattr(self, "head") else None), ctx


def streams_end(fusion, xs, outs, present, encoders):
    """The end of cross and bottleneck fusion: each stream's LayerNorm and
    its encoder's pooling; the head reads the concatenation (absent
    modalities zeroed); the caption context is the normalised streams."""
    normed = [getattr(fusion, n).ln(x) for n, x in zip(fusion.names, xs)]
    pooled = [encoders[i].pool_tokens(normed[i], outs[i][2]) for i in range(len(xs))]
    y = (torch.stack(pooled, dim=1) * present.to(xs[0].dtype)[:, :, None]).flatten(1)
    return (fusion.head(y) if hasattr(fusion, "head") else None), torch.cat(normed, dim=1)


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
        return streams_end(self, xs, outs, present, encoders)


class BottleneckFusion(nn.Module):
    """Attention bottlenecks (Nagrani et al., 2021): stream i's layer l is
    a self-attention block over [x_i ; z] (its own padding masked, z always
    visible); x_i <- the first T_i outputs, and z <- the mean over the
    modalities present in the example of the streams' last n outputs."""

    def __init__(self, cfg):
        super().__init__()
        C = cfg["dim"]
        f = cfg["fusion"]
        self.names = [e["modality"] for e in cfg["encoders"]]
        self.bottleneck = nn.Parameter(torch.randn(f["tokens"], C) * 0.02)
        for n in self.names:
            m = nn.Module()
            m.layers = nn.ModuleList([Block(cfg) for _ in range(f["layers"])])
            m.ln = nn.LayerNorm(C, eps=cfg["norm_eps"])
            setattr(self, n, m)
        if "classifier" in cfg:
            self.head = nn.Linear(C * len(self.names), cfg["classifier"]["num_classes"])

    def forward(self, outs, present, encoders):
        xs = [o[0] for o in outs]
        B, dtype = xs[0].shape[0], xs[0].dtype
        n = self.bottleneck.shape[0]
        pres = present.to(dtype)
        w = pres / pres.sum(1, keepdim=True).clamp(min=1)  # (B, M): 1/n_present or 0
        masks = []
        for tok, _, kmask in outs:
            own = kmask if kmask is not None else torch.zeros(B, tok.shape[1], dtype=dtype)
            masks.append(torch.cat([own, torch.zeros(B, n, dtype=dtype)], dim=1))
        z = self.bottleneck.expand(B, n, -1)
        for l in range(len(getattr(self, self.names[0]).layers)):
            zs = []
            for i, name in enumerate(self.names):
                T = xs[i].shape[1]
                h = getattr(self, name).layers[l](torch.cat([xs[i], z], dim=1), masks[i])
                xs[i] = h[:, :T]
                zs.append(h[:, T:])
            z = sum(w[:, i, None, None] * zs[i] for i in range(len(zs)))
        return streams_end(self, xs, outs, present, encoders)


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
        """-> class logits (or None), the caption context: every fused
        token after fusion.ln ([CLS |] text | vision | audio)."""
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
        return (self.head(x[:, 0]) if hasattr(self, "head") else None), x


class CaptionHead(nn.Module):
    """The caption decoder: caption.tok_emb, caption.pos_emb (learned or
    sinusoidal; rotary lives in the self-attention), caption.layers.<l>,
    caption.ln, caption.head."""

    def __init__(self, cfg):
        super().__init__()
        C, cp = cfg["dim"], cfg["caption"]
        Tc, V = cp["max_tokens"], cp["vocab_size"]
        self.tok_emb = nn.Embedding(V, C)
        rope_base = 0.0
        if cp["positions"] == "learned":
            self.pos_emb = nn.Parameter(torch.randn(Tc, C) * 0.02)
        elif cp["positions"] == "sinusoidal":
            self.register_buffer("pos_emb", sinusoids(Tc, C))
        else:
            self.pos_emb = None
            rope_base = 10000.0
        self.layers = nn.ModuleList([DecoderBlock(cfg, rope_base) for _ in range(cp["layers"])])
        self.ln = nn.LayerNorm(C, eps=cfg["norm_eps"])
        self.head = nn.Linear(C, V)

    def forward(self, ids, ctx, cmask):
        """ids (B, T) -> next-token logits (B, T, V)."""
        x = self.tok_emb(ids)
        if self.pos_emb is not None:
            x = x + self.pos_emb[: ids.shape[1]]
        for blk in self.layers:
            x = blk(x, ctx, cmask)
        return self.head(self.ln(x))


class TwinModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.names = [e["modality"] for e in cfg["encoders"]]
        for e in cfg["encoders"]:
            setattr(self, e["modality"], Encoder(cfg, e))
        kind = cfg["fusion"]["type"]
        self.fusion = {"early": Fusion, "late": LateFusion, "cross": CrossFusion,
                       "bottleneck": BottleneckFusion}[kind](cfg)
        if "contrastive" in cfg:
            E = cfg["contrastive"]["dim"]
            for n in self.names:
                setattr(self, "proj_" + n, nn.Linear(cfg["dim"], E, bias=False))
            self.logit_scale = nn.Parameter(torch.tensor(float(cfg["contrastive"]["logit_scale_init"])))
        if "masked_token" in cfg:
            self.mlm = nn.Module()
            V = cfg["encoders"][self.names.index("text")]["vocab_size"]
            self.mlm.head = nn.Linear(cfg["dim"], V)
        if "caption" in cfg:
            self.caption = CaptionHead(cfg)

    def encode(self, inputs):
        outs = []
        for n in self.names:
            x = inputs[{"text": "tokens", "vision": "image", "audio": "mel"}[n]]
            outs.append(getattr(self, n)(x))
        return outs

    def caption_context(self, outs, present, fused):
        """-> the decoder's context (B, Tm, C), its key mask (B, Tm), and
        whether each example has a context at all."""
        where = self.cfg["caption"]["context"]
        masks = modality_masks(outs, present)
        if where != "fusion":
            i = self.names.index(where)
            return outs[i][0], masks[i], present[:, i]
        has = present.any(dim=1)
        if self.cfg["fusion"]["type"] == "early" and self.cfg["fusion"]["cls_token"]:
            cls = torch.where(has, 0.0, -math.inf).to(masks[0].dtype)[:, None]
            masks = [cls] + masks
        return fused, torch.cat(masks, dim=1), has

    def forward(self, inputs, present=None, need_loss=True):
        """-> dict with logits, emb (list), caption_logits, mlm_logits,
        loss and its parts classification, contrastive, caption, masked
        (a part is absent when the batch has no label for it)."""
        outs = self.encode(inputs)
        B = outs[0][0].shape[0]
        if present is None:
            present = torch.ones(B, len(self.names), dtype=torch.bool)
        logits, fused = self.fusion(outs, present, [getattr(self, n) for n in self.names])
        r = {"logits": logits}
        cfg = self.cfg
        total = 0.0
        if r["logits"] is not None and need_loss and "labels" in inputs:
            if (inputs["labels"] != -100).any():
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
                if pair_losses:
                    r["contrastive"] = sum(pair_losses) / len(pair_losses)
                    total = total + cfg["loss"]["contrastive"] * r["contrastive"]
        if "masked_token" in cfg:
            r["mlm_logits"] = self.mlm.head(outs[self.names.index("text")][0])  # (B, T, V)
            lab = inputs.get("mlm_labels")
            if lab is not None:
                # an example whose text is absent has no masked-token loss
                ti = self.names.index("text")
                lab = torch.where(present[:, ti:ti + 1], lab, torch.full_like(lab, -100))
            if need_loss and lab is not None and (lab != -100).any():
                V = r["mlm_logits"].shape[-1]
                r["masked"] = F.cross_entropy(r["mlm_logits"].reshape(-1, V), lab.reshape(-1),
                                              ignore_index=-100)
                total = total + cfg["loss"]["masked"] * r["masked"]
        if "caption" in cfg and "caption" in inputs:
            cp = cfg["caption"]
            ctx, cmask, has = self.caption_context(outs, present, fused)
            r["caption_context"] = (ctx, cmask, has)
            cap = inputs["caption"]
            # teacher forcing: read positions 0..Tc-2, predict 1..Tc-1
            r["caption_logits"] = self.caption(cap[:, :-1], ctx, cmask)  # (B, Tc-1, V)
            tgt = cap[:, 1:].clone()
            tgt[tgt == cp["pad_id"]] = -100
            tgt[~has] = -100
            V = r["caption_logits"].shape[-1]
            lp = torch.log_softmax(r["caption_logits"], dim=-1)
            tok = lp.gather(-1, tgt.clamp(min=0)[:, :, None])[:, :, 0]
            r["caption_logprob"] = torch.where(has, (tok * (tgt != -100).to(tok.dtype)).sum(1),
                                               torch.tensor(-math.inf, dtype=tok.dtype))
            if need_loss and (tgt != -100).any():
                r["caption"] = F.cross_entropy(r["caption_logits"].reshape(-1, V), tgt.reshape(-1),
                                               ignore_index=-100)
                total = total + cfg["loss"]["caption"] * r["caption"]
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
    if "masked_token" in cfg:
        # about a third of the real tokens become mask_id; their labels are
        # the original ids, -100 elsewhere
        e = [e for e in cfg["encoders"] if e["modality"] == "text"][0]
        ids = inp["tokens"]
        pick = (torch.rand(ids.shape, generator=gen) < 0.35) & (ids != e["pad_id"])
        inp["mlm_labels"] = torch.where(pick, ids, torch.full_like(ids, -100))
        inp["tokens"] = torch.where(pick, torch.full_like(ids, cfg["masked_token"]["mask_id"]), ids)
    if "caption" in cfg:
        # [bos, body..., eos, pad...] with bodies of decreasing length; with
        # five examples or more, the second-to-last has no caption (all pad)
        cp = cfg["caption"]
        Tc, V = cp["max_tokens"], cp["vocab_size"]
        special = {cp["bos_id"], cp["eos_id"], cp["pad_id"]}
        words = torch.tensor([v for v in range(V) if v not in special])
        body = words[torch.randint(0, len(words), (B, Tc), generator=gen)]
        cap = torch.full((B, Tc), cp["pad_id"], dtype=torch.long)
        for b in range(B):
            if B >= 5 and b == B - 2:
                continue
            n = (Tc - 2 - b) % (Tc - 1)
            cap[b, 0] = cp["bos_id"]
            cap[b, 1:1 + n] = body[b, :n]
            cap[b, 1 + n] = cp["eos_id"]
        inp["caption"] = cap
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
    parts = ["classification", "contrastive"]
    if "caption" in cfg or "masked_token" in cfg:
        parts += ["caption", "masked"]
    total = r["loss"] if torch.is_tensor(r["loss"]) else torch.tensor(float(r["loss"]), dtype=torch.float64)
    out.append(("loss", torch.stack([total] + [r.get(k, nan) for k in parts]).float()))
    for k in ("caption_logits", "caption_logprob", "mlm_logits"):
        if k in r:
            out.append((k, r[k].detach().float()))
    if "caption_context" in r:
        ids, lengths, scores, margins = greedy_captions(m64, cfg, *r["caption_context"])
        out += [("caption_greedy", ids), ("caption_greedy_len", lengths),
                ("caption_greedy_score", scores.float()), ("caption_greedy_margin", margins.float())]
    for name, p in m64.named_parameters():
        out.append(("grad." + name, (p.grad if p.grad is not None else torch.zeros_like(p)).float()))
    model.float()
    return out


def greedy_captions(model, cfg, ctx, cmask, has):
    """Greedy decoding as tm_model_captioner_run with beam 1: from BOS, the
    most probable token that is neither pad nor BOS, until EOS or Tc-1
    tokens; score = summed log-probability / generated tokens (EOS
    counted; length penalty 1). -> ids (B, Tc-1) after BOS without EOS,
    padded; lengths (B); scores (B); margins (B): the smallest gap between
    the two best candidates on the way (a near tie could flip in float32).
    An example without a context decodes nothing (length 0, score -inf)."""
    cp = cfg["caption"]
    maxg = cp["max_tokens"] - 1
    B = ctx.shape[0]
    ids_out = torch.full((B, maxg), cp["pad_id"], dtype=torch.int32)
    lengths = torch.zeros(B, dtype=torch.int32)
    scores = torch.full((B,), -math.inf, dtype=torch.float64)
    margins = torch.full((B,), math.inf, dtype=torch.float64)
    with torch.no_grad():
        for b in range(B):
            if not has[b]:
                continue
            seq, total, gen = [cp["bos_id"]], 0.0, []
            for t in range(maxg):
                logits = model.caption(torch.tensor([seq]), ctx[b:b + 1], cmask[b:b + 1])[0, -1]
                lp = torch.log_softmax(logits, dim=-1)
                lp[cp["pad_id"]] = -math.inf
                lp[cp["bos_id"]] = -math.inf
                top = torch.topk(lp, 2)
                margins[b] = min(float(margins[b]), float(top.values[0] - top.values[1]))
                v = int(top.indices[0])
                total += float(lp[v])
                if v == cp["eos_id"]:
                    scores[b] = total / (t + 1)
                    break
                seq.append(v)
                gen.append(v)
            else:
                scores[b] = total / maxg
            lengths[b] = len(gen)
            ids_out[b, :len(gen)] = torch.tensor(gen, dtype=torch.int32)
    return ids_out, lengths, scores, margins


def cmd_export(args):
    cfg = load_config(args.config)
    for k in ("dropout", "drop_path"):
        if cfg.get(k, 0):
            raise SystemExit("%s: \"%s\" draws random masks the twin cannot match; set it to 0 "
                             "for an export" % (args.config, k))
    os.makedirs(args.outdir, exist_ok=True)
    model = build(cfg, args.seed)
    if args.eos_bias:
        if "caption" not in cfg:
            raise SystemExit("--eos-bias needs a caption head")
        # random weights rarely choose EOS (or always do): a nudge makes
        # greedy decoding stop at varied lengths
        with torch.no_grad():
            model.caption.head.bias[cfg["caption"]["eos_id"]] += args.eos_bias
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
        if B >= M + 2:  # a batch large enough also has an example with nothing
            miss[B - 1] = False
        cases["missing"] = miss
    for case, present in cases.items():
        tensors = []
        for k in ("tokens", "image", "mel", "labels", "caption", "mlm_labels"):
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
    e.add_argument("--eos-bias", type=float, default=0.0,
                   help="add this to the caption head's EOS bias (varied greedy lengths)")
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
