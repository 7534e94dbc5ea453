#!/usr/bin/python3
"""Reference vectors for the vision layer, from PIL and torchvision.

Run with Debian's python3 (python3-torchvision 0.14, python3-pil):

    /usr/bin/python3 scripts/gen_vision_vectors.py

Writes, under tests/data/vision/:
  img/*          small test images in every supported format, written by PIL
  decode.safetensors
                 what PIL decodes from each of them (F32 holding 0..255,
                 shape (H, W) or (H, W, C)), read by tests/vision/test_image.c
  transform.safetensors
                 torchvision results on float tensors (resize, center_crop,
                 pad, normalize, to_tensor, patchify via unfold, hflip,
                 rotate, adjust_*, resized_crop, whole pipelines), read by
                 tests/vision/test_transform.c and test_augment.c
  idx/*          a tiny IDX image file and label file
and tiny seed inputs under fuzz/corpus/image/.

Every input is drawn from numpy generators with fixed seeds, so running the
script again reproduces the same bytes (for the same PIL and torch).
"""

import json
import os
import struct
import zlib

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "data", "vision")
IMG = os.path.join(OUT, "img")
IDX = os.path.join(OUT, "idx")
CORPUS = os.path.join(ROOT, "fuzz", "corpus", "image")

# ------------------------------------------------------------ safetensors


def write_safetensors(path, tensors, metadata=None):
    """tensors: list of (name, array-like); stored as little-endian F32."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name, t in tensors:
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().numpy()
        a = np.ascontiguousarray(np.asarray(t, dtype="<f4"))
        raw = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ------------------------------------------------------------ test images


def make_rgb(h, w, seed):
    """Smooth colour gradients plus noise, with saturated and gray areas so
    that every hue sector and the saturation blend get exercised."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 127.5 + 127.5 * np.sin(x / w * 2 * np.pi + 0.3)
    g = 127.5 + 127.5 * np.cos(y / h * 2 * np.pi * 1.3)
    b = 255.0 * (x + y) / (w + h - 2)
    img = np.stack([r, g, b], -1) + rng.normal(0, 18, (h, w, 3))
    img[0:3, 0:3] = [255, 0, 0]        # pure colours and grays: hue edge cases
    img[0:3, 3:6] = [0, 255, 0]
    img[3:6, 0:3] = [0, 0, 255]
    img[3:6, 3:6] = [128, 128, 128]
    img[-2:, -3:] = [255, 255, 0]
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def save(img, name, **kw):
    path = os.path.join(IMG, name)
    img.save(path, **kw)
    return path


def pil_decode(path, mode=None):
    with Image.open(path) as im:
        im.seek(0)
        if mode:
            im = im.convert(mode)
        return np.asarray(im).astype(np.float32)


def png_bytes(w, h, ctype, depth, raw, interlace=0):
    """A PNG from already filtered raw scanlines (zlib-compressed here)."""
    def chunk(t, body):
        return (struct.pack(">I", len(body)) + t + body +
                struct.pack(">I", zlib.crc32(t + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) +
            chunk(b"IEND", b""))


def adam7_raw(pixels):
    """Filter-type-0 scanlines of an 8-bit RGB image in Adam7 order."""
    h, w, _ = pixels.shape
    out = b""
    for xo, yo, xs, ys in [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4),
                           (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]:
        sub = pixels[yo::ys, xo::xs]
        if sub.size == 0:
            continue
        for row in sub:
            out += b"\0" + row.tobytes()
    return out


def gen_images():
    os.makedirs(IMG, exist_ok=True)
    refs = []
    rgb = make_rgb(19, 26, 1)
    im_rgb = Image.fromarray(rgb, "RGB")
    gray = make_rgb(15, 21, 2)[..., 1]
    im_gray = Image.fromarray(gray, "L")
    alpha = ((np.arange(19 * 26).reshape(19, 26) * 37) % 256).astype(np.uint8)
    rgba = np.concatenate([rgb, alpha[..., None]], -1)
    im_rgba = Image.fromarray(rgba, "RGBA")

    refs.append(("rgb", pil_decode(save(im_rgb, "rgb.png"))))
    refs.append(("gray_from_rgb", pil_decode(os.path.join(IMG, "rgb.png"), "L")))
    refs.append(("rgba", pil_decode(save(im_rgba, "rgba.png"))))
    refs.append(("rgba_drop", pil_decode(os.path.join(IMG, "rgba.png"), "RGB")))
    refs.append(("gray", pil_decode(save(im_gray, "gray.png"))))
    la = Image.merge("LA", [im_gray, Image.fromarray(alpha[:15, :21], "L")])
    refs.append(("la", pil_decode(save(la, "la.png"))))
    pal = im_rgb.convert("P", palette=Image.ADAPTIVE, colors=32)
    refs.append(("pal", pil_decode(save(pal, "pal.png"), "RGB")))
    g16 = (np.arange(15 * 21).reshape(15, 21) * 211 % 65536).astype(np.uint16)
    Image.fromarray(g16).save(os.path.join(IMG, "gray16.png"))
    refs.append(("gray16_top8", (g16 >> 8).astype(np.float32)))

    # Adam7-interlaced (PIL cannot write them) and a decompression bomb: a
    # 1 x 1 gray image whose data inflates to 1 MiB
    with open(os.path.join(IMG, "interlaced.png"), "wb") as f:
        f.write(png_bytes(26, 19, 2, 8, adam7_raw(rgb), interlace=1))
    refs.append(("interlaced", pil_decode(os.path.join(IMG, "interlaced.png"))))
    with open(os.path.join(IMG, "bomb.png"), "wb") as f:
        f.write(png_bytes(1, 1, 0, 8, b"\0" * (1 << 20)))

    refs.append(("bmp_rgb", pil_decode(save(im_rgb, "rgb.bmp"), "RGB")))
    refs.append(("bmp_gray", pil_decode(save(im_gray, "gray.bmp"), "L")))
    refs.append(("ppm", pil_decode(save(im_rgb, "rgb.ppm"))))
    refs.append(("pgm", pil_decode(save(im_gray, "gray.pgm"))))
    # a PGM with a comment and maxval 1000 (16-bit samples), written by hand
    v = (np.arange(6 * 5).reshape(6, 5) * 37 % 1001).astype(np.uint16)
    with open(os.path.join(IMG, "gray1000.pgm"), "wb") as f:
        f.write(b"P5\n# made by gen_vision_vectors.py\n5 6\n1000\n")
        f.write(v.astype(">u2").tobytes())
    refs.append(("pgm1000", np.floor(v.astype(np.float64) * 255 / 1000 + 0.5).astype(np.float32)))

    refs.append(("gif", pil_decode(save(pal, "rgb.gif"), "RGB")))
    frame2 = Image.fromarray(255 - rgb, "RGB").convert("P", palette=Image.ADAPTIVE, colors=32)
    pal.save(os.path.join(IMG, "anim.gif"), save_all=True, append_images=[frame2], duration=100)
    refs.append(("gif_anim_first", pil_decode(os.path.join(IMG, "anim.gif"), "RGB")))

    refs.append(("jpeg_q90", pil_decode(save(im_rgb, "rgb_q90.jpg", quality=90))))
    refs.append(("jpeg_444", pil_decode(save(im_rgb, "rgb_444.jpg", quality=95, subsampling=0))))
    refs.append(("jpeg_prog", pil_decode(save(im_rgb, "rgb_prog.jpg", quality=90,
                                              progressive=True))))
    refs.append(("jpeg_gray", pil_decode(save(im_gray, "gray.jpg", quality=90))))
    write_safetensors(os.path.join(OUT, "decode.safetensors"), refs,
                      {"made_by": "scripts/gen_vision_vectors.py", "pil": Image.__version__})
    return rgb, gray


# ------------------------------------------------------------ transforms

FILTERS = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
           "nearest": InterpolationMode.NEAREST}
MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def gen_transforms(rgb, gray):
    t = []
    x = TF.to_tensor(Image.fromarray(rgb, "RGB"))            # (3, 19, 26) float32
    xg = TF.to_tensor(Image.fromarray(gray, "L"))            # (1, 15, 21)
    t.append(("x", x))
    t.append(("xg", xg))

    for size in [(9, 13), (40, 31), (30, 7), (4, 5), (19, 40)]:
        for fname in ["bilinear", "bicubic", "nearest"]:
            for aa in ([0, 1] if fname != "nearest" else [0]):
                y = TF.resize(x, list(size), interpolation=FILTERS[fname], antialias=bool(aa))
                t.append(("resize_%s_aa%d_%dx%d" % (fname, aa, size[0], size[1]), y))
    # a large shrink of the gray image, both filters
    for fname in ["bilinear", "bicubic"]:
        y = TF.resize(xg, [3, 2], interpolation=FILTERS[fname], antialias=True)
        t.append(("resize_gray_%s_aa1_3x2" % fname, y))
    for s in [12, 40]:
        t.append(("resize_shorter_%d" % s, TF.resize(x, s, antialias=True)))

    for size in [(10, 10), (11, 8), (25, 30), (19, 26), (20, 9), (4, 26), (2, 3)]:
        t.append(("center_crop_%dx%d" % size, TF.center_crop(x, list(size))))

    for mode in ["constant", "edge", "reflect", "symmetric"]:
        t.append(("pad_" + mode, TF.pad(x, [3, 1, 2, 4], fill=0.25, padding_mode=mode)))

    t.append(("normalize", TF.normalize(x, MEAN, STD)))

    gen = torch.Generator().manual_seed(5)
    xp = torch.rand(3, 16, 24, generator=gen)
    t.append(("xp", xp))
    for p in [4, 8]:
        t.append(("patchify_%d" % p, F.unfold(xp[None], kernel_size=p, stride=p)[0].T))
    x1 = torch.rand(1, 32, 32, generator=gen)
    t.append(("x1", x1))
    t.append(("patchify_bench", F.unfold(x1[None], kernel_size=4, stride=4)[0].T))

    t.append(("hflip", TF.hflip(x)))
    for ang in [10.0, -7.5, 33.0, 90.0, 0.0]:
        name = ("%g" % ang).replace("-", "m").replace(".", "p")
        t.append(("rotate_%s_nofill" % name,
                  TF.rotate(x, ang, interpolation=InterpolationMode.BILINEAR)))
        t.append(("rotate_%s_fill" % name,
                  TF.rotate(x, ang, interpolation=InterpolationMode.BILINEAR,
                            fill=[0.2, 0.5, 0.8])))

    for f in [0.6, 1.3]:
        t.append(("brightness_%g" % f, TF.adjust_brightness(x, f)))
        t.append(("gray_brightness_%g" % f, TF.adjust_brightness(xg, f)))
    for f in [0.5, 1.4]:
        t.append(("contrast_%g" % f, TF.adjust_contrast(x, f)))
        t.append(("gray_contrast_%g" % f, TF.adjust_contrast(xg, f)))
    for f in [0.3, 1.7]:
        t.append(("saturation_%g" % f, TF.adjust_saturation(x, f)))
    for f in [-0.2, 0.35, 0.5]:
        t.append(("hue_%g" % f, TF.adjust_hue(x, f)))

    t.append(("resized_crop_bilinear", TF.resized_crop(x, 2, 3, 12, 17, [8, 8],
                                                       InterpolationMode.BILINEAR,
                                                       antialias=True)))
    t.append(("resized_crop_bicubic", TF.resized_crop(x, 2, 3, 12, 17, [30, 24],
                                                      InterpolationMode.BICUBIC,
                                                      antialias=True)))

    # whole pipelines, as tm_image_preprocess runs them
    y = TF.resize(x, 16, antialias=True)
    y = TF.center_crop(y, [16, 12])
    t.append(("pipeline_shorter", TF.normalize(y, MEAN, STD)))
    y = TF.resize(x, [20, 20], interpolation=InterpolationMode.BICUBIC, antialias=True)
    t.append(("pipeline_exact", TF.normalize(y, MEAN, STD)))
    g = TF.to_tensor(Image.fromarray(rgb, "RGB").convert("L"))
    y = TF.center_crop(TF.resize(g, 32, antialias=True), [32, 32])
    y = TF.normalize(y, [0.5], [0.5])
    t.append(("pipeline_bench", F.unfold(y[None], kernel_size=4, stride=4)[0].T))

    write_safetensors(os.path.join(OUT, "transform.safetensors"), t,
                      {"made_by": "scripts/gen_vision_vectors.py",
                       "torch": torch.__version__,
                       "torchvision": __import__("torchvision").__version__})


# ------------------------------------------------------------ IDX, fuzz seeds


def idx_bytes(arr):
    arr = np.asarray(arr, dtype=np.uint8)
    head = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return head + arr.tobytes()


def gen_idx():
    os.makedirs(IDX, exist_ok=True)
    rng = np.random.RandomState(7)
    imgs = rng.randint(0, 256, (5, 7, 6))
    labels = np.array([3, 1, 4, 1, 5])
    with open(os.path.join(IDX, "images-idx3-ubyte"), "wb") as f:
        f.write(idx_bytes(imgs))
    with open(os.path.join(IDX, "labels-idx1-ubyte"), "wb") as f:
        f.write(idx_bytes(labels))
    return imgs, labels


def gen_corpus():
    os.makedirs(CORPUS, exist_ok=True)
    small = make_rgb(6, 5, 3)
    im = Image.fromarray(small, "RGB")
    for name, kw in [("tiny.png", {}), ("tiny.bmp", {}), ("tiny.ppm", {}),
                     ("tiny.jpg", {"quality": 80}), ("tiny_prog.jpg", {"progressive": True})]:
        im.save(os.path.join(CORPUS, name), **kw)
    im.convert("L").save(os.path.join(CORPUS, "tiny.pgm"))
    im.convert("P", palette=Image.ADAPTIVE, colors=8).save(os.path.join(CORPUS, "tiny.gif"))
    Image.fromarray(np.concatenate([small, small[..., :1]], -1), "RGBA").save(
        os.path.join(CORPUS, "tiny_rgba.png"))
    im.convert("L").save(os.path.join(CORPUS, "tiny_gray.png"))
    with open(os.path.join(CORPUS, "tiny.idx3"), "wb") as f:
        f.write(idx_bytes(small[None, :, :, 0]))
    with open(os.path.join(CORPUS, "tiny.idx1"), "wb") as f:
        f.write(idx_bytes([1, 2, 3]))


def main():
    rgb, gray = gen_images()
    gen_transforms(rgb, gray)
    gen_idx()
    gen_corpus()
    total = 0
    for d in [OUT, CORPUS]:
        for dirpath, _, files in os.walk(d):
            total += sum(os.path.getsize(os.path.join(dirpath, f)) for f in files)
    print("wrote %s and %s: %d bytes" % (OUT, CORPUS, total))


if __name__ == "__main__":
    main()
