"""Batch augmentation, vectorised over the batch, on NumPy or CuPy arrays.

Every function takes a batch ``(B, C, H, W)`` on either device and works out the array
module from it, so the same code runs where the data set lives. Random choices come from
an explicit generator ``gen``: a ``np.random.Generator`` (its draws are a few numbers per
example and are moved to the device) or a ``cupy.random.Generator``; only ``random``,
``standard_normal`` and ``beta``, which both have, are called. The same generator state
therefore always gives the same batch.

Pixel-valued ops take uint8 or float batches on the [0, 255] scale; the geometric index
ops (crop, flip) keep the dtype, the others return float32. ``normalize`` maps to the
data set's mean/std; ``Augment`` chains it all for training.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .core import array_module

RAND_AUGMENT_OPS = ("identity", "autocontrast", "brightness", "color", "contrast", "sharpness", "posterize",
                    "solarize", "rotate", "shear_x", "shear_y", "translate_x", "translate_y")
_GEOMETRIC = ("rotate", "shear_x", "shear_y", "translate_x", "translate_y")


def _uniform(gen, xp, shape, low=0.0, high=1.0):
    """Uniform float32 draws on the device of ``xp``."""
    return xp.asarray(gen.random(shape), dtype=xp.float32) * (high - low) + low


def _randint(gen, xp, shape, high):
    """Integers in [0, high) on the device of ``xp`` (``high`` may be an array)."""
    u = xp.asarray(gen.random(shape))
    return xp.minimum(xp.floor(u * high), xp.asarray(high) - 1).astype(xp.int64)


def _per_example(v):
    """(B,) -> (B, 1, 1, 1), to broadcast a per-example value over an image."""
    return v.reshape(-1, 1, 1, 1)


def hflip(x):
    """Mirror every image left to right."""
    return x[:, :, :, ::-1]


def random_flip(x, gen, p: float = 0.5):
    """Mirror each image left to right with probability ``p``."""
    xp = array_module(x)
    flip = _uniform(gen, xp, len(x)) < p  # (B,)
    return xp.where(_per_example(flip), hflip(x), x)


def random_crop(x, gen, padding: int = 4, size=None, fill=0):
    """Pad each image by ``padding`` (value ``fill``) and cut a random ``size`` crop.

    ``size`` is an int or (h, w), default the input size; all crops are gathered with one
    fancy index, so there is no loop over the batch.
    """
    xp = array_module(x)
    B, C, H, W = x.shape
    h, w = (H, W) if size is None else (size, size) if isinstance(size, int) else size
    if padding:
        x = xp.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=fill)  # (B, C, H+2p, W+2p)
    if h > x.shape[2] or w > x.shape[3]:
        raise ValueError(f"crop {h}x{w} is larger than the padded image {x.shape[2]}x{x.shape[3]}")
    top = _randint(gen, xp, B, x.shape[2] - h + 1)  # (B,)
    left = _randint(gen, xp, B, x.shape[3] - w + 1)  # (B,)
    rows = top[:, None] + xp.arange(h)  # (B, h)
    cols = left[:, None] + xp.arange(w)  # (B, w)
    b = xp.arange(B)[:, None, None, None]
    c = xp.arange(C)[None, :, None, None]
    return x[b, c, rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, h, w)


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
    rows = xp.asarray(_resize_weights(x.shape[2], h))  # (h, H)
    cols = xp.asarray(_resize_weights(x.shape[3], w))  # (w, W)
    x = xp.matmul(x, cols.T)  # (B, C, H, w)
    return xp.matmul(rows, x)  # (B, C, h, w)


def normalize(x, mean, std):
    """Scale [0, 255] pixels to [0, 1], then standardise per channel; float32 out."""
    xp = array_module(x)
    m = xp.asarray(mean, dtype=xp.float32).reshape(-1, 1, 1)  # (C, 1, 1)
    s = xp.asarray(std, dtype=xp.float32).reshape(-1, 1, 1)
    return (x.astype(xp.float32) * xp.float32(1 / 255) - m) / s


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


def random_erasing(x, gen, p: float = 0.25, area=(0.02, 1 / 3), ratio=(0.3, 3.3)):
    """With probability ``p`` per image, fill one random box with per-channel normal noise.

    Meant for normalised images (where N(0, 1) is a plausible colour). The box has a
    share ``area`` of the image and aspect ``ratio`` (log-uniform), cut to fit.
    """
    xp = array_module(x)
    B, C, H, W = x.shape
    erase = _uniform(gen, xp, B) < p  # (B,)
    target = _uniform(gen, xp, B, *area) * (H * W)  # (B,) box area in pixels
    aspect = xp.exp(_uniform(gen, xp, B, math.log(ratio[0]), math.log(ratio[1])))  # (B,)
    h = xp.clip(xp.rint(xp.sqrt(target * aspect)), 1, H).astype(xp.int64)  # (B,)
    w = xp.clip(xp.rint(xp.sqrt(target / aspect)), 1, W).astype(xp.int64)
    top, left = _randint(gen, xp, B, H - h + 1), _randint(gen, xp, B, W - w + 1)
    fill = xp.asarray(gen.standard_normal((B, C, 1, 1)), dtype=xp.float32)  # (B, C, 1, 1)
    rows = xp.arange(H)[None, :, None]  # (1, H, 1)
    cols = xp.arange(W)[None, None, :]  # (1, 1, W)
    inside = ((rows >= top[:, None, None]) & (rows < (top + h)[:, None, None])
              & (cols >= left[:, None, None]) & (cols < (left + w)[:, None, None]))  # (B, H, W)
    mask = (inside & erase[:, None, None])[:, None]  # (B, 1, H, W)
    return xp.where(mask, fill, x.astype(xp.float32))


# ---------------------------------------------------------------------------- RandAugment ops
# Each takes float images on [0, 255] and a per-example parameter (B,); they follow the
# definitions of PIL's ImageEnhance / ImageOps, which RandAugment was defined with.

def _grey(x):
    """Luminance (B, 1, H, W) by ITU-R 601-2 weights, as PIL's convert('L')."""
    if x.shape[1] == 1:
        return x
    xp = array_module(x)
    weights = xp.asarray([0.299, 0.587, 0.114], dtype=xp.float32).reshape(1, 3, 1, 1)
    return (x * weights).sum(axis=1, keepdims=True)


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


def affine(x, matrix, fill: float = 128.0):
    """Resample each image through its own affine map, bilinearly; outside pixels get ``fill``.

    ``matrix`` (B, 2, 3) maps an output pixel's (col, row), taken from the image centre,
    to the input position it samples: [[a, b, tx], [c, d, ty]]. Returns float32.
    """
    xp = array_module(x)
    B, C, H, W = x.shape
    x = x.astype(xp.float32)
    matrix = xp.asarray(matrix, dtype=xp.float32)
    u = (xp.arange(W, dtype=xp.float32) - (W - 1) / 2)[None, None, :]  # (1, 1, W)
    v = (xp.arange(H, dtype=xp.float32) - (H - 1) / 2)[None, :, None]  # (1, H, 1)
    m = matrix[:, :, :, None, None]  # (B, 2, 3, 1, 1)
    src_x = m[:, 0, 0] * u + m[:, 0, 1] * v + m[:, 0, 2] + (W - 1) / 2  # (B, H, W)
    src_y = m[:, 1, 0] * u + m[:, 1, 1] * v + m[:, 1, 2] + (H - 1) / 2
    x0, y0 = xp.floor(src_x), xp.floor(src_y)
    fx, fy = src_x - x0, src_y - y0  # (B, H, W) bilinear fractions
    b = xp.arange(B)[:, None, None, None]
    c = xp.arange(C)[None, :, None, None]
    out = xp.zeros_like(x)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            cy, cx = (y0 + dy).astype(xp.int64), (x0 + dx).astype(xp.int64)
            valid = (cy >= 0) & (cy < H) & (cx >= 0) & (cx < W)  # (B, H, W)
            pixels = x[b, c, xp.clip(cy, 0, H - 1)[:, None], xp.clip(cx, 0, W - 1)[:, None]]  # (B, C, H, W)
            out += (wy * wx)[:, None] * xp.where(valid[:, None], pixels, fill)
    return out


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


def rand_augment(x, gen, num_ops: int = 2, magnitude: float = 9.0, ops=RAND_AUGMENT_OPS, fill: float = 128.0):
    """RandAugment (Cubuk et al. 2019): each image gets ``num_ops`` ops drawn from ``ops``.

    ``magnitude`` on the paper's 0..10 scale sets every op's strength (rotate up to 30
    degrees, shear 0.3, translate 45% of the size, enhance factors 1 +- 0.9, posterize
    down to 4 bits, solarize down to threshold 0); signed ops get a random sign. To stay
    vectorised, each op is computed for the whole batch and kept where chosen, the
    colour ops in the order of ``ops`` and then one affine resampling that composes all
    geometric ops. Returns float32 on [0, 255].
    """
    unknown = sorted(set(ops) - set(RAND_AUGMENT_OPS))
    if unknown:
        raise ValueError(f"unknown RandAugment ops {unknown}; choose from {RAND_AUGMENT_OPS}")
    xp = array_module(x)
    B, C, H, W = x.shape
    x = x.astype(xp.float32)
    picks = _randint(gen, xp, (B, num_ops), len(ops))  # (B, num_ops)
    chosen = (picks[:, :, None] == xp.arange(len(ops))).any(axis=1)  # (B, K)
    sign = xp.where(_uniform(gen, xp, (B, len(ops))) < 0.5, -1.0, 1.0).astype(xp.float32)  # (B, K)
    m = magnitude / 10.0
    geometric = {}
    for k, op in enumerate(ops):
        picked = chosen[:, k]  # (B,)
        enhance = 1.0 + sign[:, k] * 0.9 * m  # (B,)
        if op in _GEOMETRIC:
            scale = {"rotate": 30.0, "shear_x": 0.3, "shear_y": 0.3, "translate_x": 0.45 * W, "translate_y": 0.45 * H}[op]
            geometric[op] = xp.where(picked, sign[:, k] * (scale * m), 0.0).astype(xp.float32)
            continue
        if op == "identity":
            continue
        if op == "autocontrast":
            y = autocontrast(x)
        elif op == "brightness":
            y = brightness(x, enhance)
        elif op == "color":
            y = color(x, enhance)
        elif op == "contrast":
            y = contrast(x, enhance)
        elif op == "sharpness":
            y = sharpness(x, enhance)
        elif op == "posterize":
            y = posterize(x, xp.full(B, 8 - round(4 * m), dtype=xp.float32))
        else:  # solarize
            y = solarize(x, xp.full(B, 256.0 * (1 - m), dtype=xp.float32))
        x = xp.where(_per_example(picked), xp.clip(y, 0.0, 255.0), x)
    if geometric:
        warped = affine(x, affine_matrix(**geometric, batch=B, xp=xp), fill)
        moved = xp.zeros(B, dtype=bool)
        for v in geometric.values():
            moved |= v != 0
        x = xp.where(_per_example(moved), warped, x)
    return xp.clip(x, 0.0, 255.0)


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
        """(B, C, H, W) uint8 and (B,) labels -> inputs (B, C, S, S) float32, targets (B, K) float32."""
        if self.crop_padding:
            x = random_crop(x, gen, self.crop_padding)
        if self.flip:
            x = random_flip(x, gen)
        if self.rand_ops:
            x = rand_augment(x, gen, self.rand_ops, self.rand_magnitude)
        x = self.prepare(x)
        if self.erase_prob:
            x = random_erasing(x, gen, self.erase_prob)
        targets = one_hot(y, self.num_classes, self.label_smoothing)
        if self.mixup_alpha or self.cutmix_alpha:
            x, targets = mix(x, targets, gen, self.mixup_alpha, self.cutmix_alpha, self.mix_prob)
        return x, targets

    def prepare(self, x):
        """The evaluation transform: resize to ``image_size`` (if set) and normalise; float32 out."""
        if self.image_size is not None:
            x = resize(x, self.image_size)
        return normalize(x, self.mean, self.std)
