"""Independent float64 references for the ops: direct loops over output pixels and formulas
written from their definitions (PyTorch's, for resizing), never the ops' own vectorised tricks.

The op table (``op_table.py``) checks every op's forward against one of these or against
NumPy; the per-file tests use them for their special cases.
"""
import math

import numpy as np


def padded(x, padding, fill):
    """``x`` with ``padding`` cells of ``fill`` around its last two axes."""
    (ph, pw) = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)


def windows_of(x, kernel, stride):
    """Every window as a list over output pixels: a direct loop, independent of the ops' strided views."""
    (kh, kw), (sh, sw) = kernel, stride
    ho, wo = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    return ho, wo, [(i, j, x[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]) for i in range(ho) for j in range(wo)]


def conv_reference(x, w, b, stride, padding):
    """conv2d by a loop over output pixels."""
    ho, wo, wins = windows_of(padded(x, padding, 0.0), w.shape[2:], stride)
    out = np.zeros((x.shape[0], w.shape[0], ho, wo))
    for i, j, win in wins:
        out[:, :, i, j] = np.einsum("bckl,ockl->bo", win, w) + (0 if b is None else b)
    return out


def pool_reference(x, kernel, stride, padding, reduce, fill):
    """A pool by a loop over output pixels."""
    ho, wo, wins = windows_of(padded(x, padding, fill), kernel, stride)
    out = np.zeros(x.shape[:2] + (ho, wo))
    for i, j, win in wins:
        out[:, :, i, j] = reduce(win, axis=(2, 3))
    return out



def distinct(shape, seed):
    """Values 0.1 apart in random order: no ties, and no eps-sized nudge reorders a window."""
    rng = np.random.default_rng(seed)
    return rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1 - 1.0



def source(dst, n_in, n_out, align_corners):
    """The input coordinate an output sample reads from, as F.interpolate computes it."""
    if align_corners:
        return dst * (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    return (dst + 0.5) * n_in / n_out - 0.5


def keys_cubic(d, a=-0.75):
    """The cubic convolution kernel at distance d."""
    d = abs(d)
    if d <= 1:
        return (a + 2) * d**3 - (a + 3) * d**2 + 1
    if d < 2:
        return a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    return 0.0


def taps(s, mode):
    """(input index, weight) pairs for a sample at coordinate s, before clamping to the border."""
    if mode == "bilinear":
        s = max(s, 0.0)
        base = math.floor(s)
        return [(base + k, 1 - abs(s - base - k)) for k in (0, 1)]
    base = math.floor(s)
    return [(base + k, keys_cubic(s - base - k)) for k in (-1, 0, 1, 2)]


def resize_reference(x, size, mode, align_corners):
    """resize_2d by a loop over output pixels, each a weighted sum over a 2-D neighbourhood."""
    (h, w), (h2, w2) = x.shape[-2:], size
    out = np.zeros(x.shape[:-2] + (h2, w2))
    for i in range(h2):
        for j in range(w2):
            for ty, wy in taps(source(i, h, h2, align_corners), mode):
                for tx, wx in taps(source(j, w, w2, align_corners), mode):
                    out[..., i, j] += wy * wx * x[..., min(max(ty, 0), h - 1), min(max(tx, 0), w - 1)]
    return out


