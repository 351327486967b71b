"""Matrix products."""
from __future__ import annotations

from ..engine import Function
from .util import unbroadcast


class MatMul(Function):
    @staticmethod
    def forward(a, b):
        # 1-D operands are promoted to matrices so the backward needs one rule only
        squeeze_a, squeeze_b = a.ndim == 1, b.ndim == 1
        a2 = a[None, :] if squeeze_a else a
        b2 = b[:, None] if squeeze_b else b
        out = a2 @ b2
        if squeeze_a:
            out = out[..., 0, :]
        if squeeze_b:
            out = out[..., 0]
        return out, (a, b, squeeze_a, squeeze_b)

    @staticmethod
    def backward(g, cache):
        # C = A B  =>  dA = dC B^T,  dB = A^T dC, summed over broadcast batch dims
        a, b, squeeze_a, squeeze_b = cache
        a2 = a[None, :] if squeeze_a else a
        b2 = b[:, None] if squeeze_b else b
        if squeeze_b:
            g = g[..., None]
        if squeeze_a:
            g = g[..., None, :]
        ga = g @ b2.swapaxes(-1, -2)
        gb = a2.swapaxes(-1, -2) @ g
        ga = unbroadcast(ga, a2.shape)
        gb = unbroadcast(gb, b2.shape)
        return ga.reshape(a.shape), gb.reshape(b.shape)


def matmul(a, b):
    """Matrix product with NumPy's rules: batched, leading dims broadcast, 1-D promoted."""
    return MatMul.apply(a, b)
