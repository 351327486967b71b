"""Batch augmentation, vectorised over the batch, on NumPy or CuPy arrays.

Every function takes a batch ``(B, C, H, W)`` on either device and works out the array
module from it, so the same code runs where the data set lives. Random choices come from
an explicit host generator ``gen`` (a ``np.random.Generator``, or a ``RowGenerator`` over
one); only ``random``, ``standard_normal`` and ``beta`` are called, so the same generator
state always gives the same batch.

Each random transform is split in two: a plan on the host, which draws and works out
everything that depends on the draws alone (a few numbers per image: crop windows, which
images take which RandAugment op, affine matrices, erasing boxes), and the per-pixel work
on the batch's device. A GPU step therefore launches no kernels for bookkeeping, and
``Augment`` sends all its plans to the device in one copy (``_send``).

Pixel-valued ops take uint8 or float batches on the [0, 255] scale; the geometric index
ops (crop, flip) keep the dtype, the others return float32. ``normalize`` maps to the
data set's mean/std; ``Augment`` chains it all for training.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from autograd import kernels

from .core import array_module

RAND_AUGMENT_OPS = ("identity", "autocontrast", "brightness", "color", "contrast", "sharpness", "posterize",
                    "solarize", "rotate", "shear_x", "shear_y", "translate_x", "translate_y")
# the colour ops in RAND_AUGMENT_OPS' order; the fused kernel's op codes are their positions + 1
COLOUR_OPS = ("autocontrast", "brightness", "color", "contrast", "sharpness", "posterize", "solarize")
_GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")
GREY = 128.0  # what RandAugment's geometric ops fill uncovered pixels with


def _uniform(gen, shape, low=0.0, high=1.0):
    """Uniform float32 draws on the host."""
    return np.asarray(gen.random(shape), dtype=np.float32) * (high - low) + low


def _randint(gen, shape, high):
    """Integers in [0, high) on the host (``high`` may be an array)."""
    u = np.asarray(gen.random(shape))
    return np.minimum(np.floor(u * high), np.asarray(high) - 1).astype(np.int64)


def _send(xp, *plans):
    """Move the host arrays of each plan (a dict) to the device of ``xp`` in one copy.

    Returns the plans with device arrays, each a view of one uploaded byte buffer; every
    array starts on an 8-byte boundary, so any dtype can be viewed in place. On the CPU
    the plans come back as they are.
    """
    if xp is np:
        return plans
    parts, offset = [], 0
    layout = []  # per plan: {key: (byte offset, dtype, shape, bytes)}
    for plan in plans:
        where = {}
        for key, a in plan.items():
            a = np.ascontiguousarray(a)
            raw = a.reshape(-1).view(np.uint8)
            where[key] = (offset, a.dtype, a.shape, raw.size)
            parts += [raw, np.zeros(-raw.size % 8, np.uint8)]
            offset += raw.size + (-raw.size % 8)
        layout.append(where)
    buffer = xp.asarray(np.concatenate(parts)) if parts else None
    return tuple({key: buffer[o:o + n].view(dtype).reshape(shape) for key, (o, dtype, shape, n) in where.items()}
                 for where in layout)


def _per_example(v):
    """(B,) -> (B, 1, 1, 1), to broadcast a per-example value over an image."""
    return v.reshape(-1, 1, 1, 1)


def hflip(x):
    """Mirror every image left to right."""
    return x[:, :, :, ::-1]


def _window_plan(B, C, H, W):
    """Index arrays that gather every image unchanged: rows (B, H), cols (B, W), batch and channel."""
    return {"rows": np.broadcast_to(np.arange(H), (B, H)).copy(), "cols": np.broadcast_to(np.arange(W), (B, W)).copy(),
            "b": np.arange(B).reshape(-1, 1, 1, 1), "c": np.arange(C).reshape(1, -1, 1, 1)}


def _crop_plan(gen, B, C, H, W, padding, size):
    """Draw the crop windows of a batch padded by ``padding``: a window plan (as ``_window_plan``)."""
    h, w = (H, W) if size is None else (size, size) if isinstance(size, int) else size
    if h > H + 2 * padding or w > W + 2 * padding:
        raise ValueError(f"crop {h}x{w} is larger than the padded image {H + 2 * padding}x{W + 2 * padding}")
    top = _randint(gen, B, H + 2 * padding - h + 1)  # (B,)
    left = _randint(gen, B, W + 2 * padding - w + 1)  # (B,)
    plan = _window_plan(B, C, h, w)
    plan["rows"] += top[:, None]  # (B, h)
    plan["cols"] += left[:, None]  # (B, w)
    return plan


def _flip_plan(gen, plan, p):
    """Mirror the columns of a window plan for each image with probability ``p``."""
    flip = _uniform(gen, len(plan["cols"])) < p  # (B,)
    plan["cols"] = np.where(flip[:, None], plan["cols"][:, ::-1], plan["cols"])
    return plan


def _window(x, plan, padding=0, fill=0):
    """Gather each image's window of ``x`` padded by ``padding`` (value ``fill``): one fancy index."""
    xp = array_module(x)
    if padding:
        x = xp.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=fill)  # (B, C, H+2p, W+2p)
    return x[plan["b"], plan["c"], plan["rows"][:, None, :, None], plan["cols"][:, None, None, :]]  # (B, C, h, w)


def random_flip(x, gen, p: float = 0.5):
    """Mirror each image left to right with probability ``p``."""
    (plan,) = _send(array_module(x), _flip_plan(gen, _window_plan(*x.shape), p))
    return _window(x, plan)


def random_crop(x, gen, padding: int = 4, size=None, fill=0):
    """Pad each image by ``padding`` (value ``fill``) and cut a random ``size`` crop.

    ``size`` is an int or (h, w), default the input size; all crops are gathered with one
    fancy index, so there is no loop over the batch.
    """
    (plan,) = _send(array_module(x), _crop_plan(gen, *x.shape, padding, size))
    return _window(x, plan, padding, fill)


def _resize_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of triangle-filter weights: bilinear, antialiased when shrinking.

    Pixel i covers [i, i+1), so output pixel j is centred at (j + 0.5) * n_in / n_out in
    input units; the tent widens with the shrink factor so that downsampling averages
    rather than aliases. Rows are normalised, which clamps at the borders.
    """
    scale = n_in / n_out
    support = max(scale, 1.0)
    centres = (np.arange(n_out) + 0.5) * scale  # (n_out,)
    dist = np.abs((np.arange(n_in) + 0.5)[None, :] - centres[:, None]) / support  # (n_out, n_in)
    weights = np.maximum(0.0, 1.0 - dist)
    return (weights / weights.sum(axis=1, keepdims=True)).astype(np.float32)


def resize(x, size):
    """Resize a batch to ``size`` (int or (h, w)) with separable bilinear weights; float32 out."""
    xp = array_module(x)
    h, w = (size, size) if isinstance(size, int) else size
    x = x.astype(xp.float32)
    if (h, w) == x.shape[2:]:
        return x
    (plan,) = _send(xp, _resize_plan(x.shape, size))
    return _resize(x, plan)


def _resize_plan(shape, size):
    """The weights of a resize of (B, C, H, W) images to ``size``: rows (h, H) and cols (w, W)."""
    h, w = (size, size) if isinstance(size, int) else size
    return {"rows": _resize_weights(shape[2], h), "cols": _resize_weights(shape[3], w)}


def _resize(x, plan):
    """Apply a resize plan to float32 ``x``: two matmuls."""
    xp = array_module(x)
    x = xp.matmul(x, plan["cols"].T)  # (B, C, H, w)
    return xp.matmul(plan["rows"], x)  # (B, C, h, w)


def normalize(x, mean, std):
    """Scale [0, 255] pixels to [0, 1], then standardise per channel; float32 out."""
    xp = array_module(x)
    m = xp.asarray(mean, dtype=xp.float32).reshape(-1, 1, 1)  # (C, 1, 1)
    s = xp.asarray(std, dtype=xp.float32).reshape(-1, 1, 1)
    return (x.astype(xp.float32, copy=False) * xp.float32(1 / 255) - m) / s


def one_hot(y, num_classes: int, smoothing: float = 0.0):
    """Soft targets (B, K) float32: one-hot with label smoothing (each row sums to 1)."""
    xp = array_module(y)
    t = xp.full((len(y), num_classes), smoothing / num_classes, dtype=xp.float32)  # (B, K)
    t[xp.arange(len(y)), y] += 1.0 - smoothing
    return t


def mixup(x, targets, gen, alpha: float = 0.8):
    """Blend each example with its mirror in the batch (B-1-i) by one lam ~ Beta(alpha, alpha)."""
    lam = float(gen.beta(alpha, alpha))
    x = x.astype(array_module(x).float32)
    return lam * x + (1 - lam) * x[::-1], lam * targets + (1 - lam) * targets[::-1]


def cutmix(x, targets, gen, alpha: float = 1.0):
    """Paste one box from each example's mirror (B-1-i); targets mix by the pasted area.

    The box has area about (1 - lam) of the image for lam ~ Beta(alpha, alpha); where it
    is clipped at the border the target weight follows the area actually pasted.
    """
    B, C, H, W = x.shape
    lam = float(gen.beta(alpha, alpha))
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(H * cut), int(W * cut)
    cy, cx = int(float(gen.random()) * H), int(float(gen.random()) * W)
    y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, H)
    x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, W)
    x = x.copy()
    patch = x[::-1, :, y0:y1, x0:x1].copy()  # copied: the assignment below overwrites its source
    x[:, :, y0:y1, x0:x1] = patch
    lam = 1.0 - (y1 - y0) * (x1 - x0) / (H * W)
    return x, lam * targets + (1 - lam) * targets[::-1]


def mix(x, targets, gen, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, prob: float = 1.0,
        switch_prob: float = 0.5):
    """With probability ``prob``, mixup or cutmix the batch (cutmix with ``switch_prob`` when both are on)."""
    apply, switch = float(gen.random()), float(gen.random())  # always drawn, so the stream never depends on the settings
    if apply >= prob or (mixup_alpha <= 0 and cutmix_alpha <= 0):
        return x, targets
    if cutmix_alpha > 0 and (mixup_alpha <= 0 or switch < switch_prob):
        return cutmix(x, targets, gen, cutmix_alpha)
    return mixup(x, targets, gen, mixup_alpha)


ERASE_AREA, ERASE_RATIO = (0.02, 1 / 3), (0.3, 3.3)  # random erasing's box: share of the image, aspect


def _erasing_plan(gen, B, C, H, W, p, area=ERASE_AREA, ratio=ERASE_RATIO):
    """Draw which images are erased and their boxes: rows [top, bottom) and cols [left, right), empty when not erased."""
    erase = _uniform(gen, B) < p  # (B,)
    target = _uniform(gen, B, *area) * (H * W)  # (B,) box area in pixels
    aspect = np.exp(_uniform(gen, B, math.log(ratio[0]), math.log(ratio[1])))  # (B,)
    h = np.clip(np.rint(np.sqrt(target * aspect)), 1, H).astype(np.int64)  # (B,)
    w = np.clip(np.rint(np.sqrt(target / aspect)), 1, W).astype(np.int64)
    top, left = _randint(gen, B, H - h + 1), _randint(gen, B, W - w + 1)
    fill = np.asarray(gen.standard_normal((B, C, 1, 1)), dtype=np.float32)  # (B, C, 1, 1)
    return {"top": top[:, None, None, None], "bottom": np.where(erase, top + h, top)[:, None, None, None],
            "left": left[:, None, None, None], "right": (left + w)[:, None, None, None], "fill": fill,
            "rows": np.arange(H)[:, None], "cols": np.arange(W)}


def _erase(x, plan):
    """Fill each planned box of ``x`` with its colour; float32 out."""
    xp = array_module(x)
    inside = ((plan["rows"] >= plan["top"]) & (plan["rows"] < plan["bottom"])
              & (plan["cols"] >= plan["left"]) & (plan["cols"] < plan["right"]))  # (B, 1, H, W)
    return xp.where(inside, plan["fill"], x.astype(xp.float32))


def random_erasing(x, gen, p: float = 0.25, area=ERASE_AREA, ratio=ERASE_RATIO):
    """With probability ``p`` per image, fill one random box with per-channel normal noise.

    Meant for normalised images (where N(0, 1) is a plausible colour). The box has a
    share ``area`` of the image and aspect ``ratio`` (log-uniform), cut to fit.
    """
    (plan,) = _send(array_module(x), _erasing_plan(gen, *x.shape, p, area, ratio))
    return _erase(x, plan)


# ---------------------------------------------------------------------------- RandAugment ops
# Each takes float images on [0, 255] and a per-example parameter (B,); they follow the
# definitions of PIL's ImageEnhance / ImageOps, which RandAugment was defined with.

def _grey(x):
    """Luminance (B, 1, H, W) by ITU-R 601-2 weights, as PIL's convert('L').

    Written out channel by channel (the order a sum over the channel axis adds in), so
    that no weight vector has to be copied to the device.
    """
    if x.shape[1] == 1:
        return x
    return x[:, 0:1] * 0.299 + x[:, 1:2] * 0.587 + x[:, 2:3] * 0.114


def _blend(degenerate, x, factor):
    """degenerate + factor * (x - degenerate): factor 1 is the identity, 0 the degenerate image."""
    return degenerate + _per_example(factor) * (x - degenerate)


def brightness(x, factor):
    """Scale towards black (factor < 1) or brighten (> 1)."""
    return _blend(0.0, x, factor)


def contrast(x, factor):
    """Blend with each image's mean grey level."""
    return _blend(_grey(x).mean(axis=(1, 2, 3), keepdims=True), x, factor)


def color(x, factor):
    """Blend with the image's own greyscale: saturation."""
    return _blend(_grey(x), x, factor)


def sharpness(x, factor):
    """Blend with a 3x3 smoothed copy (PIL's SMOOTH kernel; border pixels kept)."""
    H, W = x.shape[2:]
    smooth = 4 * x[:, :, 1:-1, 1:-1]  # centre weight 5 = 4 + the 1 added in the loop
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            smooth = smooth + x[:, :, dy:dy + H - 2, dx:dx + W - 2]
    degenerate = x.copy()
    degenerate[:, :, 1:-1, 1:-1] = smooth / 13.0
    return _blend(degenerate, x, factor)


def posterize(x, bits):
    """Keep the top ``bits`` bits of each (rounded) 8-bit value."""
    xp = array_module(x)
    step = _per_example(2.0 ** (8 - bits)).astype(xp.float32)
    return xp.floor(xp.rint(x) / step) * step


def solarize(x, threshold):
    """Invert the pixels at or above ``threshold``."""
    xp = array_module(x)
    return xp.where(x >= _per_example(threshold), 255.0 - x, x)


def autocontrast(x):
    """Stretch each channel of each image to the full [0, 255] range."""
    xp = array_module(x)
    lo = x.min(axis=(2, 3), keepdims=True)  # (B, C, 1, 1)
    hi = x.max(axis=(2, 3), keepdims=True)
    flat = hi <= lo  # a constant channel stays as it is
    scale = 255.0 / xp.where(flat, 1.0, hi - lo)
    return xp.where(flat, x, (x - lo) * scale)


def _affine_plan(matrix, C, H, W):
    """The sampling constants of ``_affine`` for (n, 2, 3) matrices on (C, H, W) images; coordinate axis is (x, y)."""
    n = len(matrix)
    return {"matrix": np.asarray(matrix, dtype=np.float32)[:, :, :, None, None],  # (n, 2, 3, 1, 1)
            "u": (np.arange(W, dtype=np.float32) - (W - 1) / 2)[None, :],  # (1, W)
            "v": (np.arange(H, dtype=np.float32) - (H - 1) / 2)[:, None],  # (H, 1)
            "centre": np.array([(W - 1) / 2, (H - 1) / 2], np.float32)[:, None, None],  # (2, 1, 1)
            # the four neighbours in the order (dy, dx) = (0, 0), (0, 1), (1, 0), (1, 1)
            "offset": np.array([[0, 1, 0, 1], [0, 0, 1, 1]], np.float32)[:, :, None, None],  # (2, 4, 1, 1)
            "far": np.array([[0, 1, 0, 1], [0, 0, 1, 1]], bool)[:, :, None, None],
            "size": np.array([W, H])[:, None, None, None], "last": np.array([W - 1, H - 1])[:, None, None, None],
            "b": np.arange(n).reshape(-1, 1, 1, 1, 1), "c": np.arange(C).reshape(1, -1, 1, 1, 1)}


def _affine(x, plan, fill):
    """Bilinear resampling of float32 ``x`` (n, C, H, W) through the matrices of an ``_affine_plan``.

    All four neighbours are gathered with one fancy index; their weighted values are added
    in the order (0, 0), (0, 1), (1, 0), (1, 1), as a loop over them would.
    """
    xp = array_module(x)
    m = plan["matrix"]
    src = m[:, :, 0] * plan["u"] + m[:, :, 1] * plan["v"] + m[:, :, 2] + plan["centre"]  # (n, 2, H, W) sampled (x, y)
    base = xp.floor(src)
    frac = (src - base)[:, :, None]  # (n, 2, 1, H, W) bilinear fractions
    corner = (base[:, :, None] + plan["offset"]).astype(xp.int64)  # (n, 2, 4, H, W)
    valid = ((corner >= 0) & (corner < plan["size"])).all(axis=1)  # (n, 4, H, W)
    corner = xp.clip(corner, 0, plan["last"])
    pixels = x[plan["b"], plan["c"], corner[:, 1:2], corner[:, 0:1]]  # (n, C, 4, H, W)
    weight = xp.where(plan["far"], frac, 1 - frac)  # (n, 2, 4, H, W): f towards the far neighbour, 1 - f the near
    part = (weight[:, 1] * weight[:, 0])[:, None] * xp.where(valid[:, None], pixels, fill)  # (n, C, 4, H, W)
    return part[:, :, 0] + part[:, :, 1] + part[:, :, 2] + part[:, :, 3]


def affine(x, matrix, fill: float = GREY):
    """Resample each image through its own affine map, bilinearly; outside pixels get ``fill``.

    ``matrix`` (B, 2, 3) maps an output pixel's (col, row), taken from the image centre,
    to the input position it samples: [[a, b, tx], [c, d, ty]]; a host array, like every
plan. Returns float32.
    """
    xp = array_module(x)
    (plan,) = _send(xp, _affine_plan(matrix, *x.shape[1:]))
    return _affine(x.astype(xp.float32), plan, fill)


def affine_matrix(rotate=None, shear_x=None, shear_y=None, translate_x=None, translate_y=None, *, batch: int, xp=np):
    """(B, 2, 3) sampling matrices from per-example parameters (B,) (None means none).

    rotate in degrees, shears as slopes, translations in pixels; the linear part is
    rotate @ shear_x @ shear_y. Sampling through a map moves the content by its inverse,
    which RandAugment need not tell apart: its magnitudes come with a random sign.
    """
    zero = xp.zeros(batch, dtype=xp.float32)
    theta = xp.deg2rad(zero if rotate is None else rotate)
    sx = zero if shear_x is None else shear_x
    sy = zero if shear_y is None else shear_y
    cos, sin = xp.cos(theta), xp.sin(theta)
    a, b = 1 + sx * sy, sx  # shear_x @ shear_y = [[1 + sx*sy, sx], [sy, 1]]
    c, d = sy, xp.ones_like(sy)
    m = xp.stack([
        xp.stack([cos * a - sin * c, cos * b - sin * d, zero if translate_x is None else translate_x], axis=-1),
        xp.stack([sin * a + cos * c, sin * b + cos * d, zero if translate_y is None else translate_y], axis=-1),
    ], axis=1)  # (B, 2, 3)
    return m.astype(xp.float32)


def _rand_augment_plan(gen, B, C, H, W, num_ops, magnitude, ops):
    """Draw each image's ops and signs; group the images by colour op and compose the geometric ones.

    Returns the plan, the affine plan of the images that move (``_affine_plan``; empty if
    none does) and the colour ops to run, in the order of ``ops``: each op's images and
    parameter go in the plan under ``"<op>"`` and ``"<op>:param"``. The plan also holds
    the same per image, for the fused kernel (``_kernel_table``).
    """
    unknown = sorted(set(ops) - set(RAND_AUGMENT_OPS))
    if unknown:
        raise ValueError(f"unknown RandAugment ops {unknown}; choose from {RAND_AUGMENT_OPS}")
    picks = _randint(gen, (B, num_ops), len(ops))  # (B, num_ops)
    chosen = (picks[:, :, None] == np.arange(len(ops))).any(axis=1)  # (B, K)
    sign = np.where(_uniform(gen, (B, len(ops))) < 0.5, -1.0, 1.0).astype(np.float32)  # (B, K)
    m = magnitude / 10.0
    plan, colour, geometric = {}, [], {}
    for k, op in enumerate(ops):
        if op in _GEOMETRIC:
            scale = {"rotate": 30.0, "shear_x": 0.3, "shear_y": 0.3, "translate_x": 0.45 * W, "translate_y": 0.45 * H}[op]
            geometric[op] = np.where(chosen[:, k], sign[:, k] * (scale * m), 0.0).astype(np.float32)
            continue
        images = np.flatnonzero(chosen[:, k])
        if op == "identity" or not len(images):
            continue
        colour.append(op)
        plan[op] = images
        if op == "posterize":
            plan[op + ":param"] = np.full(len(images), 8 - round(4 * m), dtype=np.float32)
        elif op == "solarize":
            plan[op + ":param"] = np.full(len(images), 256.0 * (1 - m), dtype=np.float32)
        elif op != "autocontrast":
            plan[op + ":param"] = (1.0 + sign[:, k] * 0.9 * m)[images]  # enhance factor
    moved = np.zeros(B, dtype=bool)
    for v in geometric.values():
        moved |= v != 0
    if not moved.any():
        plan.update(_kernel_table(plan, colour, B, num_ops, moved, None))
        return plan, {}, colour
    plan["moved"] = np.flatnonzero(moved)
    matrix = affine_matrix(**{op: v[moved] for op, v in geometric.items()}, batch=len(plan["moved"]))
    plan.update(_kernel_table(plan, colour, B, num_ops, moved, matrix))
    return plan, _affine_plan(matrix, C, H, W), colour


def _kernel_table(plan, colour, B, num_ops, moved, matrix):
    """The plan per image, as the fused kernel (augment_kernel.py) reads it.

    ``kernel:codes`` (B, S) and ``kernel:params`` (B, S): each image's colour ops (the
    kernel's codes, 0 for none) in the order ``_rand_augment`` runs them, with their
    parameters; ``kernel:matrix`` (B, 2, 3) and ``kernel:moved`` (B,): the composed
    affine maps and which images take theirs.
    """
    codes = np.zeros((B, max(num_ops, 1)), np.int32)
    params = np.zeros(codes.shape, np.float32)
    slot = np.zeros(B, np.int64)  # each image's next free column
    for op in colour:
        images = plan[op]
        codes[images, slot[images]] = COLOUR_OPS.index(op) + 1
        params[images, slot[images]] = plan.get(op + ":param", 0.0)
        slot[images] += 1
    full = np.zeros((B, 2, 3), np.float32)
    if matrix is not None:
        full[moved] = matrix
    return {"kernel:codes": codes, "kernel:params": params, "kernel:matrix": full,
            "kernel:moved": moved.astype(np.int32)}


_COLOUR_OPS = {"autocontrast": lambda x, _: autocontrast(x), "brightness": brightness, "color": color,
               "contrast": contrast, "sharpness": sharpness, "posterize": posterize, "solarize": solarize}


def _rand_augment(x, plan, warp, colour, fill):
    """Run a RandAugment plan: each colour op on its images (gather, op, scatter), then one affine resampling.

    Every op works image by image, so running it on the images that drew it gives them
    the same values, bit for bit, as running it on the whole batch and keeping theirs.
    On a GPU the fused kernel ``rand_augment`` (augment_kernel.py, registered when
    ``npvit.data`` is imported) does it all in one launch from the plan's per-image table
    (within its stated tolerance of this path).
    """
    xp = array_module(x)
    fused = kernels.get("rand_augment", np.float32 if x.dtype == np.uint8 else x.dtype)
    if fused is not None:
        return fused(x, plan["kernel:codes"], plan["kernel:params"], plan["kernel:matrix"], plan["kernel:moved"], fill)
    x = x.astype(xp.float32)  # a copy: the ops write into it
    for op in colour:
        images = plan[op]
        x[images] = xp.clip(_COLOUR_OPS[op](x[images], plan.get(op + ":param")), 0.0, 255.0)
    if warp:
        x[plan["moved"]] = _affine(x[plan["moved"]], warp, fill)
    return xp.clip(x, 0.0, 255.0)


def rand_augment(x, gen, num_ops: int = 2, magnitude: float = 9.0, ops=RAND_AUGMENT_OPS, fill: float = GREY):
    """RandAugment (Cubuk et al. 2019): each image gets ``num_ops`` ops drawn from ``ops``.

    ``magnitude`` on the paper's 0..10 scale sets every op's strength (rotate up to 30
    degrees, shear 0.3, translate 45% of the size, enhance factors 1 +- 0.9, posterize
    down to 4 bits, solarize down to threshold 0); signed ops get a random sign. The
    colour ops run in the order of ``ops``, each on the images that drew it, and then one
    affine resampling composes all geometric ops of the images that drew any. Returns
    float32 on [0, 255].
    """
    plan, warp, colour = _rand_augment_plan(gen, *x.shape, num_ops, magnitude, ops)
    return _rand_augment(x, *_send(array_module(x), plan, warp), colour, fill)


@dataclass
class Augment:
    """The training transform: uint8 batch and labels in, normalised images and soft targets out.

    Steps, each off by default: random crop with ``crop_padding``; horizontal ``flip``;
    RandAugment with ``rand_ops`` ops at ``rand_magnitude``; resize to ``image_size``;
    normalise with ``mean``/``std``; random erasing with ``erase_prob``; targets with
    ``label_smoothing``; mixup/cutmix with ``mixup_alpha``/``cutmix_alpha`` applied to a
    batch with probability ``mix_prob``.
    """

    mean: tuple
    std: tuple
    num_classes: int
    image_size: int | None = None
    crop_padding: int = 0
    flip: bool = False
    rand_ops: int = 0
    rand_magnitude: float = 9.0
    erase_prob: float = 0.0
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    mix_prob: float = 1.0

    def __call__(self, x, y, gen):
        """(B, C, H, W) uint8 and (B,) labels -> inputs (B, C, S, S) float32, targets (B, K) float32.

        Every plan is drawn first, in the order of the steps, and sent to the device in one copy.
        On a GPU, a batch that mixup and cutmix leave unmixed keeps its labels (B,) as its
        targets: the loss smooths them by ``label_smoothing`` inside the cross-entropy kernel
        (``classification_loss``), with no (B, K) rows to build. The CPU builds the rows, so
        its losses stay bit for bit those of earlier runs.
        """
        xp = array_module(x)
        B, C, H, W = x.shape
        window = _crop_plan(gen, B, C, H, W, self.crop_padding, None) if self.crop_padding else {}
        if self.flip:
            window = _flip_plan(gen, window or _window_plan(B, C, H, W), 0.5)
        rand, warp, colour = (_rand_augment_plan(gen, B, C, H, W, self.rand_ops, self.rand_magnitude, RAND_AUGMENT_OPS)
                              if self.rand_ops else ({}, {}, []))
        size = (H, W) if self.image_size is None else (self.image_size,) * 2
        scale = _resize_plan(x.shape, size) if size != (H, W) else {}
        erasing = _erasing_plan(gen, B, C, *size, self.erase_prob) if self.erase_prob else {}
        stats = {"mean": np.asarray(self.mean, np.float32), "std": np.asarray(self.std, np.float32)}
        window, rand, warp, scale, erasing, stats = _send(xp, window, rand, warp, scale, erasing, stats)
        if window:
            x = _window(x, window, self.crop_padding)
        if self.rand_ops:
            x = _rand_augment(x, rand, warp, colour, GREY)
        if scale:
            x = _resize(x.astype(xp.float32, copy=False), scale)
        x = normalize(x, stats["mean"], stats["std"])
        if self.erase_prob:
            x = _erase(x, erasing)
        mixing = self.mixup_alpha or self.cutmix_alpha
        if xp is not np and not mixing:
            return x, y
        targets = one_hot(y, self.num_classes, self.label_smoothing)
        if mixing:
            x, targets = mix(x, targets, gen, self.mixup_alpha, self.cutmix_alpha, self.mix_prob)
        return x, targets

    def prepare(self, x):
        """The evaluation transform: resize to ``image_size`` (if set) and normalise; float32 out."""
        if self.image_size is not None:
            x = resize(x, self.image_size)
        return normalize(x, self.mean, self.std)
