"""Resizing the last two axes of a grid, as ``torch.nn.functional.interpolate`` does.

Fine-tuning a ViT at a higher resolution than it was pre-trained at gives it more
patches, so its learned position embeddings, a (h, w) grid of vectors, are resampled
to the new grid (the paper's section 3.2; timm's ``resample_abs_pos_embed``).

Bilinear and bicubic resampling are linear and separable: along each axis every
output sample is a fixed weighted sum of input samples. So a resize is two matrix
products, ``out = Ry @ x @ Rx^T`` with ``Ry`` (H2, H) and ``Rx`` (W2, W), and its
backward is the same two products with the matrices transposed. The weights follow
PyTorch's ``align_corners`` conventions exactly, borders clamped.
"""
from __future__ import annotations

import numpy as np

from ..backend import default_dtype, get_array_module
from ..engine import Function

__all__ = ["interpolation_matrix", "resize_2d"]

_MODES = ("bilinear", "bicubic")
_CUBIC_A = -0.75  # PyTorch's (and OpenCV's) cubic convolution parameter; Keys' paper uses -0.5


def _check(mode, in_size, out_size):
    """Reject an unknown mode or an empty size before any work."""
    if mode not in _MODES:
        raise ValueError(f"interpolation mode must be one of {_MODES}, not {mode!r}")
    if min(*in_size, *out_size) < 1:
        raise ValueError(f"interpolation sizes must be positive, not {tuple(in_size)} -> {tuple(out_size)}")


def _cubic_weights(t):
    """Weights of the four taps at offsets -1, 0, 1, 2 for a sample a fraction ``t`` past tap 0: (n, 4)."""
    a = _CUBIC_A

    def near(d):  # the kernel for distances |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):  # the kernel for distances 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], axis=-1)


def interpolation_matrix(in_size, out_size, mode="bilinear", align_corners=False, dtype=None):
    """The (out_size, in_size) NumPy matrix resampling one axis as F.interpolate does; each row sums to 1.

    ``mode`` is "bilinear" (linear along the axis) or "bicubic" (cubic convolution,
    a = -0.75). Taps beyond the border are clamped to the edge sample. Equal sizes give
    exactly the identity. ``dtype`` defaults to the default float dtype.
    """
    _check(mode, (in_size,), (out_size,))
    dtype = default_dtype() if dtype is None else dtype
    if in_size == out_size:  # both conventions map sample i to sample i
        return np.eye(in_size, dtype=dtype)
    # Weights in float64, rounded once to dtype.
    dst = np.arange(out_size, dtype=np.float64)
    if align_corners:  # the corner samples' centres coincide
        src = dst * ((in_size - 1) / (out_size - 1) if out_size > 1 else 0.0)
    else:  # the corner samples' outer edges coincide
        src = (dst + 0.5) * (in_size / out_size) - 0.5
    if mode == "bilinear":
        # PyTorch clamps a negative source to 0; with the taps clamped below that changes nothing
        base = np.floor(src)
        t = src - base
        taps = base[:, None] + np.arange(2)                                # (out, 2)
        weights = np.stack([1 - t, t], axis=-1)                            # (out, 2)
    else:
        base = np.floor(src)
        taps = base[:, None] + np.arange(-1, 3)                            # (out, 4)
        weights = _cubic_weights(src - base)                               # (out, 4)
    taps = np.clip(taps, 0, in_size - 1).astype(np.int64)
    m = np.zeros((out_size, in_size))
    np.add.at(m, (np.arange(out_size)[:, None], taps), weights)  # clamped taps pile onto the edge sample
    return m.astype(dtype)


class Resize2d(Function):
    @staticmethod
    def forward(x, size, mode, align_corners):
        xp = get_array_module(x)
        (h, w), (h2, w2) = x.shape[-2:], size
        # None for an axis whose size does not change: no product, so the values pass bit for bit
        ry = None if h == h2 else xp.asarray(interpolation_matrix(h, h2, mode, align_corners, x.dtype))  # (H2, H)
        rx = None if w == w2 else xp.asarray(interpolation_matrix(w, w2, mode, align_corners, x.dtype))  # (W2, W)
        out = x if ry is None else ry @ x                                   # (..., H2, W)
        out = out if rx is None else out @ rx.T                             # (..., H2, W2)
        return (out.copy() if out is x else out), (ry, rx)

    @staticmethod
    def backward(g, cache):
        # out = Ry x Rx^T is linear in x:  dx = Ry^T dout Rx
        ry, rx = cache
        g = g if rx is None else g @ rx                                     # (..., H2, W)
        return g if ry is None else ry.T @ g                                # (..., H, W)


def resize_2d(x, size, mode="bilinear", align_corners=False):
    """Resize the last two axes of ``x`` (..., H, W) to ``size`` = (H2, W2) by bilinear or bicubic interpolation."""
    if len(x.shape) < 2:
        raise ValueError(f"resize_2d needs at least two axes, not shape {x.shape}")
    size = tuple(int(n) for n in size)
    if len(size) != 2:
        raise ValueError(f"resize_2d: size must be (H2, W2), not {size}")
    _check(mode, x.shape[-2:], size)
    return Resize2d.apply(x, size=size, mode=mode, align_corners=bool(align_corners))
