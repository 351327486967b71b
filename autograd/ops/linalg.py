"""Matrix products."""
from __future__ import annotations

import numpy as np

from .. import precision
from ..engine import Function
from .util import unbroadcast


class MatMul(Function):
    @staticmethod
    def forward(a, b):
        # 1-D operands are promoted to matrices so the backward needs one rule only
        squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
        dtype = np.result_type(a.dtype, b.dtype)
        a, b = precision.lower(a, b)  # 16-bit under mixed precision, and cached so for the backward
        a2 = a[None, :] if squeeze_a else a
        b2 = b[:, None] if squeeze_b else b
        out = precision.matmul(a2, b2, np.result_type(a.dtype, b.dtype), dtype)
        if squeeze_a:
            out = out[..., 0, :]
        if squeeze_b:
            out = out[..., 0]
        return out, (a, b, squeeze_a, squeeze_b)

    @staticmethod
    def backward(g, cache):
        # C = A B  =>  dA = dC B^T,  dB = A^T dC, summed over broadcast batch dims;
        # both products in the forward's precision (the cached operands')
        a, b, squeeze_a, squeeze_b = cache
        low = np.result_type(a.dtype, b.dtype)
        a2 = a[None, :] if squeeze_a else a
        b2 = b[:, None] if squeeze_b else b
        if squeeze_b:
            g = g[..., None]
        if squeeze_a:
            g = g[..., None, :]
        ga = precision.matmul(g, b2.swapaxes(-1, -2), low, g.dtype)
        gb = precision.matmul(a2.swapaxes(-1, -2), g, low, g.dtype)
        ga = unbroadcast(ga, a2.shape)
        gb = unbroadcast(gb, b2.shape)
        return ga.reshape(a.shape), gb.reshape(b.shape)


def matmul(a, b):
    """Matrix product with NumPy's rules: batched, leading dims broadcast, 1-D promoted."""
    return MatMul.apply(a, b)
