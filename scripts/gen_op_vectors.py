#!/usr/bin/python3
"""Reference vectors for every graph op, forward and backward, from PyTorch.

Run with Debian's python3 (which has python3-torch):

    /usr/bin/python3 scripts/gen_op_vectors.py [outdir]

Writes tests/data/ops/<case>.safetensors, read by tests/graph/test_ops_torch.c.
Each file holds
  in0, in1, ...      the op's inputs (F32, or I32 for ids and labels)
  G  (or G0, G1...)  a fixed random tensor of the output's shape
  out (or out0...)   op(inputs), computed in float64 and stored as F32
  grad_in<i>         d loss / d in<i> for loss = sum(out * G), for each float
                     input whose gradient is wanted (its presence says so)
and __metadata__ {"op": ..., "case": ..., parameters as strings}.

Every case draws its inputs from a generator seeded by the case's name, so
adding a case leaves the others' bytes unchanged. Needs only torch and the
standard library (the safetensors writer is below).
"""

import array
import json
import os
import struct
import sys
import zlib

import torch
import torch.nn.functional as F

OUTDIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "ops")

# ------------------------------------------------------------ safetensors


def _tensor_bytes(t):
    t = t.detach().contiguous().reshape(-1)
    if t.dtype == torch.float32:
        a = array.array("f", t.tolist())
        code = "F32"
    elif t.dtype == torch.int32:
        a = array.array("i", t.tolist())
        code = "I32"
    else:
        raise ValueError("unsupported dtype %s" % t.dtype)
    assert a.itemsize == 4
    if sys.byteorder != "little":
        a.byteswap()
    return code, a.tobytes()


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, tensor) in file order; metadata: str -> str."""
    header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}}
    blobs = []
    offset = 0
    for name, t in tensors:
        code, raw = _tensor_bytes(t)
        header[name] = {
            "dtype": code,
            "shape": list(t.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)


# ------------------------------------------------------------- the cases


class Case:
    """Draws inputs for one case from a generator seeded by its name."""

    def __init__(self, name):
        self.name = name
        self.gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))

    def randn(self, *shape):
        return torch.randn(*shape, generator=self.gen, dtype=torch.float32)

    def uniform(self, lo, hi, *shape):
        u = torch.rand(*shape, generator=self.gen, dtype=torch.float32)
        return (lo + (hi - lo) * u).float()

    def randint(self, lo, hi, *shape):
        return torch.randint(lo, hi, shape, generator=self.gen, dtype=torch.int64).to(torch.int32)


CASES = []


def case(name, op, inputs, fn, params=None, grad=None, multi_out=False):
    """Registers a case.

    inputs: list of float32 / int32 tensors (in0, in1, ...).
    fn: maps the float64 (ids: int64) versions of the inputs to the output,
        or to a list of outputs when multi_out.
    grad: which inputs get a gradient (default: every float input).
    """
    CASES.append((name, op, inputs, fn, params or {}, grad, multi_out))


def run_case(outdir, name, op, inputs, fn, params, grad, multi_out):
    if grad is None:
        grad = [t.dtype == torch.float32 for t in inputs]
    ref = []
    for t, g in zip(inputs, grad):
        if t.dtype == torch.float32:
            r = t.double().clone()
            r.requires_grad_(bool(g))
        else:
            r = t.long()
        ref.append(r)
    outs = fn(*ref)
    if not multi_out:
        outs = [outs]
    gen = torch.Generator().manual_seed(zlib.crc32((name + "/G").encode()))
    Gs = [torch.randn(tuple(o.shape), generator=gen, dtype=torch.float32) for o in outs]
    loss = sum((o * G.double()).sum() for o, G in zip(outs, Gs))
    wanted = [r for r, g in zip(ref, grad) if g]
    grads = torch.autograd.grad(loss, wanted, allow_unused=True) if wanted else []

    tensors = [("in%d" % i, t) for i, t in enumerate(inputs)]
    if multi_out:
        tensors += [("G%d" % i, G) for i, G in enumerate(Gs)]
        tensors += [("out%d" % i, o.detach().float()) for i, o in enumerate(outs)]
    else:
        tensors += [("G", Gs[0]), ("out", outs[0].detach().float())]
    gi = iter(grads)
    for i, g in enumerate(grad):
        if g:
            d = next(gi)
            if d is None:
                d = torch.zeros_like(ref[i])
            tensors.append(("grad_in%d" % i, d.float()))
    meta = {"op": op, "case": name}
    meta.update(params)
    if multi_out:
        meta["outputs"] = str(len(outs))
    for n, t in tensors:
        if t.dtype == torch.float32:
            assert torch.isfinite(t).all() or n == "in3", (name, n)
    write_safetensors(os.path.join(outdir, name + ".safetensors"), tensors, meta)
    return sum(t.numel() * 4 for _, t in tensors)


def axes_str(axes):
    return ",".join(str(a) for a in axes)


def build_cases():
    # -------------------------------------------------------- matmul
    def mm(ta, tb):
        def f(a, b):
            if ta:
                a = a.transpose(-1, -2)
            if tb:
                b = b.transpose(-1, -2)
            return torch.matmul(a, b)
        return f

    M, K, N = 4, 6, 5
    for ta in (0, 1):
        for tb in (0, 1):
            c = Case("matmul_%s%s" % ("t" if ta else "n", "t" if tb else "n"))
            a = c.randn(*((K, M) if ta else (M, K)))
            b = c.randn(*((N, K) if tb else (K, N)))
            case(c.name, "matmul", [a, b], mm(ta, tb), {"trans_a": ta, "trans_b": tb})
    for ta, tb in ((0, 0), (1, 1), (0, 1), (1, 0)):
        c = Case("matmul_batch_%s%s" % ("t" if ta else "n", "t" if tb else "n"))
        a = c.randn(2, 3, *((K, M) if ta else (M, K)))
        b = c.randn(2, 3, *((N, K) if tb else (K, N)))
        case(c.name, "matmul", [a, b], mm(ta, tb), {"trans_a": ta, "trans_b": tb})
    c = Case("matmul_batch3d")
    case(c.name, "matmul", [c.randn(3, M, K), c.randn(3, K, N)], mm(0, 0),
         {"trans_a": 0, "trans_b": 0})
    for ta, tb in ((0, 0), (0, 1), (1, 0)):
        c = Case("matmul_shared_b_%s%s" % ("t" if ta else "n", "t" if tb else "n"))
        a = c.randn(2, 3, *((K, M) if ta else (M, K)))
        b = c.randn(*((N, K) if tb else (K, N)))
        case(c.name, "matmul", [a, b], mm(ta, tb), {"trans_a": ta, "trans_b": tb})

    # -------------------------------------------------------- linear
    c = Case("linear")
    case(c.name, "linear", [c.randn(2, 3, 6), c.randn(5, 6), c.randn(5)],
         lambda x, w, b: F.linear(x, w, b))
    c = Case("linear_nobias")
    case(c.name, "linear", [c.randn(4, 6), c.randn(5, 6)], lambda x, w: F.linear(x, w))

    # -------------------------------------------------- elementwise binary
    binops = {
        "add": lambda a, b: a + b,
        "sub": lambda a, b: a - b,
        "mul": lambda a, b: a * b,
        "div": lambda a, b: a / b,
    }
    shapes = [
        ("same", (3, 5), (3, 5)),
        ("bcast_a", (2, 3, 4), (3, 1)),
        ("bcast_b", (4,), (2, 1, 4)),
        ("bcast_both", (2, 1, 4), (3, 1)),
        ("bcast_scalar", (2, 3, 4), (1,)),
    ]
    for opname, fn in binops.items():
        for tag, sa, sb in shapes:
            c = Case("%s_%s" % (opname, tag))
            a = c.randn(*sa)
            if opname == "div":
                # Denominators away from zero, of either sign.
                sign = torch.where(c.randn(*sb) < 0, -1.0, 1.0).float()
                b = c.uniform(0.5, 2.0, *sb) * sign
            else:
                b = c.randn(*sb)
            case(c.name, opname, [a, b], fn)

    c = Case("scale")
    case(c.name, "scale", [c.randn(3, 4, 5)], lambda x: 1.5 * x - 0.25,
         {"a": "1.5", "b": "-0.25"})

    # ----------------------------------------------------- reductions
    red = [
        ("axis1", [1], 0),
        ("axis_neg1_keep", [-1], 1),
        ("axes02_keep", [0, 2], 1),
        ("axes13", [1, 3], 0),
        ("all", [], 0),
        ("all_keep", [], 1),
    ]
    for opname, tfn in (("sum", torch.sum), ("mean", torch.mean)):
        for tag, axes, keep in red:
            c = Case("%s_%s" % (opname, tag))
            x = c.randn(2, 3, 4, 5)
            dims = axes if axes else list(range(4))

            def f(x, dims=dims, keep=keep, tfn=tfn):
                return tfn(x, dim=dims, keepdim=bool(keep))
            case(c.name, opname, [x], f, {"axes": axes_str(axes), "keepdim": keep})

    # ------------------------------------------------------ unary
    unary = [
        ("exp", torch.exp, (-2.0, 2.0)),
        ("log", torch.log, (0.1, 3.0)),
        ("sqrt", torch.sqrt, (0.1, 3.0)),
        ("tanh", torch.tanh, (-3.0, 3.0)),
        ("sigmoid", torch.sigmoid, (-4.0, 4.0)),
        ("relu", F.relu, (-2.0, 2.0)),
        ("gelu", lambda x: F.gelu(x), (-4.0, 4.0)),
        ("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), (-4.0, 4.0)),
        ("silu", F.silu, (-4.0, 4.0)),
    ]
    for opname, fn, (lo, hi) in unary:
        c = Case(opname)
        case(c.name, opname, [c.uniform(lo, hi, 4, 5, 6)], fn)

    c = Case("softmax")
    case(c.name, "softmax", [2.0 * c.randn(3, 4, 7)], lambda x: F.softmax(x, dim=-1))
    c = Case("log_softmax")
    case(c.name, "log_softmax", [2.0 * c.randn(3, 4, 7)], lambda x: F.log_softmax(x, dim=-1))

    # -------------------------------------------------- normalisation
    C = 8
    c = Case("layernorm")
    x = 1.0 + 2.0 * c.randn(2, 3, C)
    case(c.name, "layernorm", [x, 1.0 + 0.5 * c.randn(C), c.randn(C)],
         lambda x, w, b: F.layer_norm(x, (C,), w, b, 1e-5),
         {"eps": "1e-05", "has_weight": 1, "has_bias": 1})
    c = Case("layernorm_noaffine")
    x = 1.0 + 2.0 * c.randn(2, 3, C)
    case(c.name, "layernorm", [x], lambda x: F.layer_norm(x, (C,), None, None, 1e-5),
         {"eps": "1e-05", "has_weight": 0, "has_bias": 0})
    c = Case("layernorm_weight_only")
    x = c.randn(4, C)
    case(c.name, "layernorm", [x, 1.0 + 0.5 * c.randn(C)],
         lambda x, w: F.layer_norm(x, (C,), w, None, 1e-5),
         {"eps": "1e-05", "has_weight": 1, "has_bias": 0})

    def rms(x, w, eps=1e-6):
        return x / torch.sqrt((x * x).mean(dim=-1, keepdim=True) + eps) * w
    c = Case("rmsnorm")
    case(c.name, "rmsnorm", [c.randn(2, 3, C), 1.0 + 0.5 * c.randn(C)], rms, {"eps": "1e-06"})

    # --------------------------------------------------- embedding
    c = Case("embedding")
    table = c.randn(10, 6)
    ids = torch.tensor([[1, 3, 3, 0], [9, 1, 5, 3], [7, 7, 7, 2]], dtype=torch.int32)
    case(c.name, "embedding", [table, ids], lambda t, i: F.embedding(i, t))

    # ------------------------------------------- shape manipulation
    c = Case("concat_mid")
    xs = [c.randn(2, 3, 4), c.randn(2, 1, 4), c.randn(2, 2, 4)]
    case(c.name, "concat", xs, lambda a, b, d: torch.cat([a, b, d], dim=1), {"axis": 1})
    c = Case("concat_last")
    xs = [c.randn(3, 2), c.randn(3, 5), c.randn(3, 1)]
    case(c.name, "concat", xs, lambda a, b, d: torch.cat([a, b, d], dim=-1), {"axis": -1})

    c = Case("slice_step")
    case(c.name, "slice", [c.randn(3, 8, 4)], lambda x: x[:, 1:7:2],
         {"axis": 1, "start": 1, "stop": 7, "step": 2})
    c = Case("slice_first")
    case(c.name, "slice", [c.randn(6, 5)], lambda x: x[2:5],
         {"axis": 0, "start": 2, "stop": 5, "step": 1})
    c = Case("slice_last_step3")
    case(c.name, "slice", [c.randn(2, 3, 10)], lambda x: x[..., 0:10:3],
         {"axis": 2, "start": 0, "stop": 10, "step": 3})

    c = Case("split")
    case(c.name, "split", [c.randn(2, 7, 3)], lambda x: list(torch.split(x, [2, 4, 1], dim=1)),
         {"axis": 1, "sizes": "2,4,1"}, multi_out=True)
    c = Case("split_last")
    case(c.name, "split", [c.randn(3, 6)], lambda x: list(torch.split(x, [3, 3], dim=-1)),
         {"axis": -1, "sizes": "3,3"}, multi_out=True)

    c = Case("reshape")
    case(c.name, "reshape", [c.randn(2, 3, 4)], lambda x: x.reshape(6, -1), {"shape": "6,-1"})
    c = Case("reshape_4d")
    case(c.name, "reshape", [c.randn(4, 6)], lambda x: x.reshape(2, 2, 3, 2),
         {"shape": "2,2,3,2"})

    c = Case("permute")
    case(c.name, "permute", [c.randn(2, 3, 4, 5)], lambda x: x.permute(2, 0, 3, 1),
         {"perm": "2,0,3,1"})
    c = Case("transpose_02")
    case(c.name, "transpose", [c.randn(2, 3, 4)], lambda x: x.transpose(0, 2),
         {"axis0": 0, "axis1": 2})
    c = Case("transpose_last2")
    case(c.name, "transpose", [c.randn(2, 3, 4, 5)], lambda x: x.transpose(-1, -2),
         {"axis0": -1, "axis1": -2})

    # ---------------------------------------------------- convolution
    c = Case("conv1d")
    case(c.name, "conv1d", [c.randn(2, 3, 10), 0.3 * c.randn(4, 3, 3), c.randn(4)],
         lambda x, w, b: F.conv1d(x, w, b, stride=2, padding=1), {"stride": 2, "pad": 1})
    c = Case("conv1d_nobias")
    case(c.name, "conv1d", [c.randn(2, 3, 10), 0.3 * c.randn(4, 3, 3)],
         lambda x, w: F.conv1d(x, w, None, stride=2, padding=1), {"stride": 2, "pad": 1})
    c = Case("conv2d")
    p = {"stride_h": 2, "stride_w": 1, "pad_h": 1, "pad_w": 2}
    case(c.name, "conv2d", [c.randn(2, 3, 7, 6), 0.3 * c.randn(4, 3, 3, 3), c.randn(4)],
         lambda x, w, b: F.conv2d(x, w, b, stride=(2, 1), padding=(1, 2)), p)
    c = Case("conv2d_nobias")
    case(c.name, "conv2d", [c.randn(2, 3, 7, 6), 0.3 * c.randn(4, 3, 3, 3)],
         lambda x, w: F.conv2d(x, w, None, stride=(2, 1), padding=(1, 2)), p)
    c = Case("conv2d_patch")  # bench-small's patch embedding: k = 4, s = 4
    case(c.name, "conv2d", [c.randn(2, 3, 16, 16), 0.2 * c.randn(8, 3, 4, 4), c.randn(8)],
         lambda x, w, b: F.conv2d(x, w, b, stride=4),
         {"stride_h": 4, "stride_w": 4, "pad_h": 0, "pad_w": 0})

    # ------------------------------------------------------- pooling
    pools = [
        ("k3s2p1", (2, 3, 7, 8), (3, 3, 2, 2, 1, 1)),
        ("k2x3s2x1p0x1", (2, 3, 6, 7), (2, 3, 2, 1, 0, 1)),
    ]
    for opname in ("maxpool2d", "avgpool2d"):
        for tag, shape, (kh, kw, sh, sw, ph, pw) in pools:
            c = Case("%s_%s" % (opname, tag))
            if opname == "maxpool2d":
                fn = (lambda x, a=(kh, kw), s=(sh, sw), pd=(ph, pw):
                      F.max_pool2d(x, a, s, pd))
            else:
                fn = (lambda x, a=(kh, kw), s=(sh, sw), pd=(ph, pw):
                      F.avg_pool2d(x, a, s, pd, count_include_pad=True))
            case(c.name, opname, [c.randn(*shape)], fn,
                 {"kh": kh, "kw": kw, "sh": sh, "sw": sw, "ph": ph, "pw": pw})
        # 1-D pooling on (N, C, L): kh = 1, sh = 1, ph = 0.
        c = Case("%s_1d" % opname)
        if opname == "maxpool2d":
            fn = lambda x: F.max_pool1d(x, 3, 2, 1)
        else:
            fn = lambda x: F.avg_pool1d(x, 3, 2, 1, count_include_pad=True)
        case(c.name, opname, [c.randn(2, 3, 11)], fn,
             {"kh": 1, "kw": 3, "sh": 1, "sw": 2, "ph": 0, "pw": 1})

    # ----------------------------------------------------- attention
    def attn(scale, causal, with_bias):
        def f(q, k, v, bias=None):
            D = q.shape[-1]
            s = scale if scale > 0 else 1.0 / (D ** 0.5)
            scores = torch.matmul(q, k.transpose(-1, -2)) * s
            if with_bias:
                scores = scores + bias[:, None, None, :]
            if causal:
                Tq, Tk = q.shape[-2], k.shape[-2]
                i = torch.arange(Tq)[:, None]
                j = torch.arange(Tk)[None, :]
                # Query i sees key j when j <= i + (Tk - Tq) (ops.h); for
                # Tq == Tk this is torch's is_causal mask.
                scores = scores.masked_fill(j > i + (Tk - Tq), float("-inf"))
            return torch.matmul(torch.softmax(scores, dim=-1), v)
        return f

    def key_mask(c, B, Tk):
        m = torch.zeros(B, Tk)
        keep = c.uniform(0.0, 1.0, B, Tk) < 0.7
        keep[:, 0] = True  # every query keeps at least one key
        m[~keep] = float("-inf")
        return m

    c = Case("attention")
    q, k, v = c.randn(2, 2, 5, 8), c.randn(2, 2, 5, 8), c.randn(2, 2, 5, 8)
    case(c.name, "attention", [q, k, v], attn(0, 0, False),
         {"scale": "0", "causal": 0, "key_bias": 0})
    c = Case("attention_scale")
    q, k, v = c.randn(2, 2, 5, 8), c.randn(2, 2, 5, 8), c.randn(2, 2, 5, 8)
    case(c.name, "attention", [q, k, v], attn(0.5, 0, False),
         {"scale": "0.5", "causal": 0, "key_bias": 0})
    c = Case("attention_mask")
    q, k, v = c.randn(2, 2, 6, 8), c.randn(2, 2, 6, 8), c.randn(2, 2, 6, 8)
    case(c.name, "attention", [q, k, v, key_mask(c, 2, 6)], attn(0, 0, True),
         {"scale": "0", "causal": 0, "key_bias": 1}, grad=[1, 1, 1, 0])
    c = Case("attention_causal")
    q, k, v = c.randn(2, 2, 6, 8), c.randn(2, 2, 6, 8), c.randn(2, 2, 6, 8)
    case(c.name, "attention", [q, k, v], attn(0, 1, False),
         {"scale": "0", "causal": 1, "key_bias": 0})
    c = Case("attention_causal_mask")
    q, k, v = c.randn(2, 2, 6, 8), c.randn(2, 2, 6, 8), c.randn(2, 2, 6, 8)
    case(c.name, "attention", [q, k, v, key_mask(c, 2, 6)], attn(0, 1, True),
         {"scale": "0", "causal": 1, "key_bias": 1}, grad=[1, 1, 1, 0])
    c = Case("attention_cross")
    q, k, v = c.randn(2, 3, 5, 16), c.randn(2, 3, 9, 16), c.randn(2, 3, 9, 16)
    case(c.name, "attention", [q, k, v, key_mask(c, 2, 9)], attn(0, 0, True),
         {"scale": "0", "causal": 0, "key_bias": 1}, grad=[1, 1, 1, 0])
    c = Case("attention_cross_causal")  # bottom-right aligned, as ops.h states
    q, k, v = c.randn(1, 2, 3, 8), c.randn(1, 2, 7, 8), c.randn(1, 2, 7, 8)
    case(c.name, "attention", [q, k, v], attn(0, 1, False),
         {"scale": "0", "causal": 1, "key_bias": 0})
    c = Case("attention_bias")  # a finite additive key bias (no gradient: it is a mask input)
    q, k, v = c.randn(2, 2, 4, 8), c.randn(2, 2, 5, 8), c.randn(2, 2, 5, 8)
    case(c.name, "attention", [q, k, v, c.randn(2, 5)], attn(0, 0, True),
         {"scale": "0", "causal": 0, "key_bias": 1}, grad=[1, 1, 1, 0])

    # ---------------------------------------------------------- losses
    c = Case("cross_entropy_smooth")
    logits = 2.0 * c.randn(8, 5)
    labels = c.randint(0, 5, 8)
    labels[2] = -100
    labels[5] = -100
    case(c.name, "cross_entropy", [logits, labels],
         lambda x, y: F.cross_entropy(x, y, ignore_index=-100, label_smoothing=0.1),
         {"label_smoothing": "0.1", "ignore_index": -100})
    c = Case("cross_entropy")
    logits = 2.0 * c.randn(6, 7)
    labels = c.randint(0, 7, 6)
    case(c.name, "cross_entropy", [logits, labels],
         lambda x, y: F.cross_entropy(x, y, ignore_index=-100),
         {"label_smoothing": "0", "ignore_index": -100})

    c = Case("l2_normalize")
    case(c.name, "l2_normalize", [c.randn(2, 3, 6)],
         lambda x: F.normalize(x, p=2.0, dim=-1, eps=1e-12), {"eps": "1e-12"})
    c = Case("cosine_similarity")
    case(c.name, "cosine_similarity", [c.randn(4, 6), c.randn(4, 6)],
         lambda a, b: F.cosine_similarity(a, b, dim=-1, eps=1e-8), {"eps": "1e-08"})
    c = Case("cosine_similarity_bcast")
    case(c.name, "cosine_similarity", [c.randn(3, 1, 6), c.randn(1, 4, 6)],
         lambda a, b: F.cosine_similarity(a, b, dim=-1, eps=1e-8), {"eps": "1e-08"})


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else OUTDIR
    os.makedirs(outdir, exist_ok=True)
    torch.set_grad_enabled(True)
    build_cases()
    names = [c[0] for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    total = 0
    for c in CASES:
        total += run_case(outdir, *c)
    print("wrote %d cases to %s (%.1f KiB of tensor data)" % (len(CASES), outdir, total / 1024))


if __name__ == "__main__":
    main()
