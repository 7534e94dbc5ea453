#!/usr/bin/python3
"""PyTorch's serving twin of `trimodal serve`, for the load test
(bench/run_serve.sh): the same model folder, the same /v1/classify JSON
request (base64 "image" PNG, "audio" WAV, "text"), the same micro-batching
of concurrent requests, so that one load client (build/bench/bench_serve)
drives both servers in one run.

  /usr/bin/python3 scripts/bench_torch_serve.py MODEL_DIR [--port 0]
      [--port-file FILE] [--threads 2] [--max-batch 32] [--max-wait-ms 2]
      [--dtype f32|int8] [--quiet]

MODEL_DIR is a trimodal model folder (config.json, model.safetensors,
tokenizer.json, optional preprocess.json and labels.json); its weights go
into the PyTorch twin of scripts/bench_small_twin.py. The front-ends are
PyTorch's own: PIL decodes the PNG, torchvision resizes and normalises it,
the `wave` module reads the WAV and torchaudio makes the log-mel
(preprocess.json's settings, defaults as docs/preprocess.md), and the
byte-level BPE of scripts/bpe_reference.py tokenizes the text. --dtype int8
is PyTorch's dynamic quantization of every nn.Linear (per-channel symmetric
qint8 weights, activations quantized per batch), its counterpart of
`trimodal quantize --to int8`.

PyTorch's best setup on this machine: torch.set_num_threads(--threads); run
it with OMP_WAIT_POLICY=passive and without OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE in its environment (bench/run_serve.sh does). The classify
forward runs under torch.inference_mode() and skips the contrastive heads.

Endpoints: POST /v1/classify (JSON: {"model", "class", "label", "probs",
"top"}), GET /healthz. Errors are JSON {"error": {"code", "message"}}.
HTTP/1.1 keep-alive, one thread a connection. A batcher thread takes the
oldest queued request, waits up to --max-wait-ms for more (at most
--max-batch) and runs them as one forward pass.

Exits 3 with a note on stderr when torch, torchvision or torchaudio cannot
be imported (the load test then skips PyTorch).
"""
import argparse
import base64
import io
import json
import os
import queue
import struct
import sys
import threading
import time
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HERE = os.path.dirname(os.path.abspath(__file__))

DEFAULTS = {
    "text": {"max_length": 32, "add_bos": False, "add_eos": False, "pad_to_max_length": True},
    "image": {"mode": "shorter", "size": 32, "height": 32, "width": 32, "filter": "bilinear",
              "antialias": True, "channels": 1, "mean": [0.5], "std": [0.5]},
    "audio": {"sample_rate": 16000, "n_fft": 400, "win_length": 400, "hop": 160,
              "center": True, "pad_mode": "reflect", "power": 2, "n_mels": 64, "f_min": 0,
              "f_max": 8000, "mel_scale": "slaney", "mel_norm": "slaney", "log": "log10",
              "log_floor": 1e-10, "top_db": 8, "whisper_norm": True, "frames": 100},
}
MAX_BODY = 64 << 20


def read_safetensors(path):
    """-> {name: float32/int tensor}, copies of the file's tensors."""
    import torch
    dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
              "I32": torch.int32, "I64": torch.int64, "I8": torch.int8, "U8": torch.uint8}
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        buf = bytearray(data[base + a:base + b])
        x = torch.frombuffer(buf, dtype=dtypes[t["dtype"]]) if b > a else \
            torch.zeros(0, dtype=dtypes[t["dtype"]])
        out[name] = x.reshape(t["shape"]).clone()
    return out


class Frontends:
    """Raw request fields -> the model's input tensors, by PIL, torchvision,
    torchaudio and the reference BPE."""

    def __init__(self, model_dir, cfg):
        import torch
        import torchaudio
        sys.path.insert(0, HERE)
        import bpe_reference as ref

        pp = {k: dict(v) for k, v in DEFAULTS.items()}
        path = os.path.join(model_dir, "preprocess.json")
        if os.path.exists(path):
            with open(path) as f:
                for k, v in json.load(f).items():
                    pp.setdefault(k, {}).update(v)
        self.pp = pp
        self.torch = torch
        enc = {e["modality"]: e for e in cfg["encoders"]}
        self.enc = enc
        self.tok = None
        if "text" in enc:
            with open(os.path.join(model_dir, "tokenizer.json"), encoding="utf-8") as f:
                tj = json.load(f)
            m = tj["model"]
            merges = [tuple(x.split(" ", 1)) if isinstance(x, str) else tuple(x)
                      for x in m["merges"]]
            added = [(a["content"], a["id"], a.get("special", True))
                     for a in tj.get("added_tokens", [])]
            self.tok = ref.Tokenizer(m["vocab"], merges, added)
            self.specials = {a[0]: a[1] for a in added}
        a = pp["audio"]
        if "audio" in enc:
            self.mel = torchaudio.transforms.MelSpectrogram(
                sample_rate=a["sample_rate"], n_fft=a["n_fft"],
                win_length=a["win_length"] or a["n_fft"], hop_length=a["hop"],
                f_min=a["f_min"], f_max=a["f_max"] or a["sample_rate"] / 2, n_mels=a["n_mels"],
                window_fn=torch.hann_window, power=float(a["power"]), center=a["center"],
                pad_mode=a["pad_mode"], norm=None if a["mel_norm"] == "none" else a["mel_norm"],
                mel_scale=a["mel_scale"])

    def text(self, s):
        t = self.pp["text"]
        ids = self.tok.encode(s.encode("utf-8"))
        T = self.enc["text"]["max_tokens"]
        L = min(T, t["max_length"] or T)
        if t.get("add_bos"):
            ids = [self.specials.get("<s>", 1)] + ids
        ids = ids[:L]
        if t.get("add_eos"):
            ids = ids[:L - 1] + [self.specials.get("</s>", 2)]
        x = self.torch.full((T,), self.enc["text"].get("pad_id", 0), dtype=self.torch.long)
        x[:len(ids)] = self.torch.tensor(ids, dtype=self.torch.long)
        return x

    def image(self, raw):
        from PIL import Image
        import torchvision.transforms.functional as TF
        p = self.pp["image"]
        img = Image.open(io.BytesIO(raw))
        img = img.convert("L" if p["channels"] == 1 else "RGB")
        x = TF.pil_to_tensor(img).float() / 255.0
        mode = {"bilinear": TF.InterpolationMode.BILINEAR,
                "bicubic": TF.InterpolationMode.BICUBIC,
                "nearest": TF.InterpolationMode.NEAREST}[p["filter"]]
        if p["mode"] == "exact":
            x = TF.resize(x, [p["height"], p["width"]], interpolation=mode,
                          antialias=p["antialias"])
        else:
            if p["size"]:
                x = TF.resize(x, [p["size"]], interpolation=mode, antialias=p["antialias"])
            x = TF.center_crop(x, [p["height"], p["width"]])
        mean, std = p["mean"], p["std"]
        C = p["channels"]
        return TF.normalize(x, (mean * C)[:C], (std * C)[:C])

    def audio(self, raw):
        import torchaudio.functional as AF
        torch = self.torch
        a = self.pp["audio"]
        with wave.open(io.BytesIO(raw)) as w:
            rate, ch, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
            frames = w.readframes(w.getnframes())
        if width != 2:
            raise ValueError("only 16-bit PCM WAV is supported by this twin")
        x = torch.frombuffer(bytearray(frames), dtype=torch.int16).float() / 32768.0
        x = x.reshape(-1, ch).mean(dim=1)
        if rate != a["sample_rate"]:
            x = AF.resample(x, rate, a["sample_rate"])
        n = a["frames"] * a["hop"]
        x = torch.nn.functional.pad(x, (0, n - len(x))) if len(x) < n else x[:n]
        spec = self.mel(x)[:, :a["frames"]]
        lm = torch.log10(torch.clamp(spec, min=a["log_floor"]))
        if a.get("top_db"):
            lm = torch.maximum(lm, lm.max() - a["top_db"])
        if a.get("whisper_norm"):
            lm = (lm + 4.0) / 4.0
        return lm


TIMEOUT_S = 30.0


class Job:
    __slots__ = ("inputs", "done", "probs", "error", "deadline")

    def __init__(self, inputs):
        self.inputs = inputs
        self.done = threading.Event()
        self.probs = None
        self.error = None
        self.deadline = time.perf_counter() + TIMEOUT_S


class Batcher(threading.Thread):
    def __init__(self, model, cfg, max_batch, max_wait_s):
        super().__init__(daemon=True)
        import torch
        self.torch = torch
        self.model, self.cfg = model, cfg
        self.names = [e["modality"] for e in cfg["encoders"]]
        self.encoders = [getattr(model, n) for n in self.names]
        self.q = queue.Queue()
        self.max_batch, self.max_wait_s = max_batch, max_wait_s
        self.zero = {}
        for e in cfg["encoders"]:
            m = e["modality"]
            if m == "text":
                self.zero["tokens"] = torch.full((e["max_tokens"],), e.get("pad_id", 0),
                                                 dtype=torch.long)
            elif m == "vision":
                self.zero["image"] = torch.zeros(e["channels"], *e["image_hw"])
            else:
                self.zero["mel"] = torch.zeros(e["n_mels"], e["n_frames"])

    def run(self):
        torch = self.torch
        key = {"text": "tokens", "vision": "image", "audio": "mel"}
        while True:
            jobs = [self.q.get()]
            end = time.perf_counter() + self.max_wait_s
            while len(jobs) < self.max_batch:
                left = end - time.perf_counter()
                try:
                    jobs.append(self.q.get(timeout=left) if left > 0 else self.q.get_nowait())
                except queue.Empty:
                    break
            # as trimodal serve: a request past its deadline (its answer
            # already went out as 504) is dropped, not computed
            now = time.perf_counter()
            for j in jobs:
                if now >= j.deadline:
                    j.error = "timeout"
                    j.done.set()
            jobs = [j for j in jobs if not j.done.is_set()]
            if not jobs:
                continue
            try:
                inputs, present = {}, []
                for n in self.names:
                    k = key[n]
                    inputs[k] = torch.stack([j.inputs.get(k, self.zero[k]) for j in jobs])
                    present.append(torch.tensor([k in j.inputs for j in jobs]))
                present = torch.stack(present, dim=1)
                with torch.inference_mode():
                    outs = self.model.encode(inputs)
                    logits, _ = self.model.fusion(outs, present, self.encoders)
                    probs = torch.softmax(logits.float(), dim=-1)
                for i, j in enumerate(jobs):
                    j.probs = probs[i].tolist()
            except Exception as e:  # the whole batch fails, the server goes on
                for j in jobs:
                    j.error = "forward failed: %s" % e
            for j in jobs:
                j.done.set()


def make_handler(state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            if not state["quiet"]:
                sys.stderr.write("bench_torch_serve: " + (fmt % args) + "\n")

        def reply(self, code, obj):
            body = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def fail(self, code, kind, msg):
            self.reply(code, {"error": {"code": kind, "message": msg}})

        def do_GET(self):
            if self.path == "/healthz":
                self.reply(200, {"status": "ok", "model": state["name"]})
            else:
                self.fail(404, "not_found", "no such path: %s" % self.path)

        def do_POST(self):
            n = int(self.headers.get("Content-Length") or 0)
            if n > MAX_BODY:
                self.close_connection = True
                return self.fail(413, "too_large", "the body is over %d bytes" % MAX_BODY)
            raw = self.rfile.read(n)
            if self.path != "/v1/classify":
                return self.fail(404, "not_found", "no such path: %s" % self.path)
            fe = state["frontends"]
            try:
                req = json.loads(raw)
                if not isinstance(req, dict):
                    raise ValueError("the body must be a JSON object")
                inputs = {}
                if "text" in req and fe.tok is not None:
                    inputs["tokens"] = fe.text(str(req["text"]))
                if "image" in req and "vision" in fe.enc:
                    inputs["image"] = fe.image(base64.b64decode(req["image"], validate=True))
                if "audio" in req and "audio" in fe.enc:
                    inputs["mel"] = fe.audio(base64.b64decode(req["audio"], validate=True))
                if not inputs:
                    raise ValueError("give at least one of text, image, audio")
            except Exception as e:
                return self.fail(400, "bad_request", str(e))
            job = Job(inputs)
            state["batcher"].q.put(job)
            if not job.done.wait(TIMEOUT_S) or job.error == "timeout":
                return self.fail(504, "timeout", "no answer within %g s" % TIMEOUT_S)
            if job.error:
                return self.fail(500, "internal", job.error)
            p = job.probs
            order = sorted(range(len(p)), key=lambda i: -p[i])[:5]
            labels = state["labels"]

            def name(i):
                return labels[i] if labels and i < len(labels) else None

            self.reply(200, {"model": state["name"], "class": order[0], "label": name(order[0]),
                             "probs": p,
                             "top": [{"class": i, "label": name(i), "prob": p[i]} for i in order]})

    return Handler


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir")
    ap.add_argument("--port", type=int, default=8081)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port-file", help="write the port here once listening")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (2)")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    ap.add_argument("--dtype", choices=["f32", "int8"], default="f32")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    try:
        import torch
        import torchaudio  # noqa: F401
        import torchvision  # noqa: F401
        from PIL import Image  # noqa: F401
    except Exception as e:
        print("bench_torch_serve: torch, torchvision, torchaudio or PIL not importable (%s)" % e,
              file=sys.stderr)
        return 3
    sys.path.insert(0, HERE)
    import bench_small_twin as twin

    torch.set_num_threads(args.threads)
    cfg = twin.load_config(os.path.join(args.model_dir, "config.json"))
    model = twin.TwinModel(cfg)
    weights = read_safetensors(os.path.join(args.model_dir, "model.safetensors"))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if missing or unexpected:
        print("bench_torch_serve: %s: missing %s, unexpected %s"
              % (args.model_dir, missing[:5], unexpected[:5]), file=sys.stderr)
        return 1
    del weights
    model.eval()
    if args.dtype == "int8":
        import torch.ao.quantization as Q
        engines = torch.backends.quantized.supported_engines
        for e in ("fbgemm", "onednn", "x86", "qnnpack"):
            if e in engines:
                torch.backends.quantized.engine = e
                break
        model = Q.quantize_dynamic(model, {torch.nn.Linear: Q.per_channel_dynamic_qconfig},
                                   dtype=torch.qint8)
    labels = None
    lp = os.path.join(args.model_dir, "labels.json")
    if os.path.exists(lp):
        with open(lp) as f:
            labels = json.load(f)
    state = {"quiet": args.quiet, "name": cfg.get("name", "model"), "labels": labels,
             "frontends": Frontends(args.model_dir, cfg)}
    state["batcher"] = Batcher(model, cfg, args.max_batch, args.max_wait_ms / 1e3)
    state["batcher"].start()
    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256  # listen() backlog: 64 clients connect at once

        def handle_error(self, request, client_address):
            # a client that gave up (closed its socket) is not the server's error
            if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                super().handle_error(request, client_address)

    srv = Server((args.host, args.port), make_handler(state))
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % srv.server_address[1])
        os.replace(tmp, args.port_file)
    if not args.quiet:
        print("bench_torch_serve: %s (%s, torch %s, engine %s) on port %d"
              % (state["name"], args.dtype, torch.__version__,
                 torch.backends.quantized.engine, srv.server_address[1]), file=sys.stderr)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
