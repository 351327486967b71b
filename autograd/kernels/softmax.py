"""Softmax over the last axis with the attention's scale and additive mask, one block per row.

softmax(x * scale + mask): the attention logits of Eq. 1-3's MSA come scaled by
d ** -0.5 and, for masked or biased attention, shifted by an additive mask (-inf to
forbid a key). The mask has the shape of the trailing axes of x, so one (Nq, Nk) mask
serves every (batch, head); a row r of x reads mask row r mod (mask rows). Backward:
ds = p (g - sum(g p)) per row; the gradient for x is ds * scale, the one for the mask ds
itself (scale 1). Twins: Softmax.forward / backward of ops/fused.py.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..ops import fused
from .registry import Kernel, Source, register, row_threads

SOURCE = Source("softmax", common="", body=r"""
extern "C" __global__ void NAME(softmax_forward)(const scalar_t* x, const scalar_t* mask, scalar_t* p, int c,
                                                 long long mask_rows, float scale) {
    const scalar_t* xr = x + blockIdx.x * (long long)c;
    const scalar_t* mr = mask_rows ? mask + (blockIdx.x % mask_rows) * c : nullptr;
    scalar_t* pr = p + blockIdx.x * (long long)c;
    float top = -INFINITY;
    for (int j = threadIdx.x; j < c; j += blockDim.x) top = fmaxf(top, ld(xr[j]) * scale + (mr ? ld(mr[j]) : 0.0f));
    top = block_max(top);  // the largest exponent is 0: no overflow
    float s = 0.0f;
    for (int j = threadIdx.x; j < c; j += blockDim.x) s += expf(ld(xr[j]) * scale + (mr ? ld(mr[j]) : 0.0f) - top);
    float inv = 1.0f / block_sum(s);
    for (int j = threadIdx.x; j < c; j += blockDim.x)
        st(&pr[j], expf(ld(xr[j]) * scale + (mr ? ld(mr[j]) : 0.0f) - top) * inv);
}

// dp_i/ds_j = p_i (delta_ij - p_j)  =>  ds = p (g - sum_j g_j p_j); dx = ds scale
extern "C" __global__ void NAME(softmax_backward)(const scalar_t* g, const scalar_t* p, scalar_t* dx, int c,
                                                  float scale) {
    long long base = blockIdx.x * (long long)c;
    float s = 0.0f;
    for (int j = threadIdx.x; j < c; j += blockDim.x) s += ld(g[base + j]) * ld(p[base + j]);
    s = block_sum(s);
    for (int j = threadIdx.x; j < c; j += blockDim.x)
        st(&dx[base + j], ld(p[base + j]) * (ld(g[base + j]) - s) * scale);
}
""")


def softmax_forward(x, scale=1.0, mask=None):
    """softmax(x * scale + mask) over the last axis, ``mask`` shaped like trailing axes of x (or None); the twin."""
    s = x * scale
    if mask is not None:
        s += mask
    return fused.Softmax.forward(s, axis=-1)[0]


def softmax_backward(g, p, scale=1.0):
    """The gradient for x of softmax(x * scale + mask) given the output p; with scale 1, the mask's; the twin."""
    return fused.Softmax.backward(g, (p, -1)) * scale


def _launch_forward(function, x, scale=1.0, mask=None):
    xp = get_array_module(x)
    x = xp.ascontiguousarray(x)
    c, rows = x.shape[-1], x.size // x.shape[-1]
    if mask is None:
        mask_rows, mask = 0, x  # a pointer the kernel never reads
    else:
        while mask.ndim > 1 and mask.shape[0] == 1:
            mask = mask[0]
        if mask.shape != x.shape[x.ndim - mask.ndim:]:
            raise ValueError(f"softmax mask of shape {mask.shape} is not the trailing axes of x {x.shape}")
        mask = xp.ascontiguousarray(mask.astype(x.dtype, copy=False))
        mask_rows = mask.size // c
    p = xp.empty_like(x)
    function(x.dtype, "softmax_forward")((rows,), (row_threads(c),), (x, mask, p, np.int32(c), np.int64(mask_rows),
                                                                       np.float32(scale)))
    return p


def _launch_backward(function, g, p, scale=1.0):
    xp = get_array_module(p)
    g, p = xp.ascontiguousarray(g), xp.ascontiguousarray(p)
    c, rows = p.shape[-1], p.size // p.shape[-1]
    dx = xp.empty_like(p)
    function(p.dtype, "softmax_backward")((rows,), (row_threads(c),), (g, p, dx, np.int32(c), np.float32(scale)))
    return dx


def _sample_forward(rng, dtype):
    x = rng.normal(0, 3, (2, 3, 7, 65)).astype(dtype)
    mask = np.where(rng.random((7, 65)) < 0.2, -1e4, 0.5 * rng.standard_normal((7, 65))).astype(dtype)
    return [(x, 0.125), (x, 0.125, mask), (x[..., :5], 1.0, mask[None, :, :5])]


def _sample_backward(rng, dtype):
    p = softmax_forward(rng.normal(0, 2, (2, 3, 7, 65)), 0.5).astype(dtype)
    return [(rng.standard_normal(p.shape).astype(dtype), p, 0.5)]


register(Kernel("softmax_forward", SOURCE, _launch_forward, softmax_forward, _sample_forward))
register(Kernel("softmax_backward", SOURCE, _launch_backward, softmax_backward, _sample_backward))
