"""Dropout and the residual add in one kernel, its mask from a counter-based generator (Philox4x32-10).

out = residual + x keep / (1 - p): the ViT's x + Dropout(MLP(LN(x))) of Eq. 3. The keep
mask is not drawn on the host nor stored: element i keeps when the first word of
Philox4x32-10 (Salmon et al. 2011, "Parallel random numbers: as easy as 1, 2, 3") of
counter (i, offset) and key seed, shifted to 24 bits, is at least ceil(p 2^24). So a
mask is a pure function of (seed, offset, i): the backward remakes it, a resumed run
gets the same one, and the NumPy twin computes it bit for bit. The caller derives
seed and offset from (run seed, step, layer), like every other draw.
Backward: dx = g keep / (1 - p) (the residual's gradient is g itself).
"""
from __future__ import annotations

import math

import numpy as np

from ..backend import get_array_module
from ..ops import fused
from .registry import Kernel, Source, grid_for, register

_M0, _M1, _W0, _W1 = 0xD2511F53, 0xCD9E8D57, 0x9E3779B9, 0xBB67AE85

SOURCE = Source("dropout", common=r"""
// Philox4x32-10's first output word for counter (counter, offset) and key seed
__device__ __forceinline__ unsigned philox_word(unsigned long long seed, unsigned long long counter,
                                                unsigned long long offset) {
    unsigned c0 = (unsigned)counter, c1 = (unsigned)(counter >> 32), c2 = (unsigned)offset,
             c3 = (unsigned)(offset >> 32), k0 = (unsigned)seed, k1 = (unsigned)(seed >> 32);
    for (int round = 0; round < 10; ++round) {
        if (round) { k0 += 0x9E3779B9u; k1 += 0xBB67AE85u; }
        unsigned hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
        unsigned hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
        c0 = hi1 ^ c1 ^ k0; c1 = lo1; c2 = hi0 ^ c3 ^ k1; c3 = lo0;
    }
    return c0;
}

__device__ __forceinline__ bool kept(unsigned long long seed, unsigned long long offset, long long i,
                                     unsigned threshold) {
    return (philox_word(seed, (unsigned long long)i, offset) >> 8) >= threshold;
}
""", body=r"""
extern "C" __global__ void NAME(dropout_residual_forward)(const scalar_t* x, const scalar_t* residual,
                                                          scalar_t* out, long long n, unsigned threshold, float scale,
                                                          unsigned long long seed, unsigned long long offset) {
    FOR_EACH(i, n) st(&out[i], ld(residual[i]) + (kept(seed, offset, i, threshold) ? ld(x[i]) * scale : 0.0f));
}

extern "C" __global__ void NAME(dropout_residual_backward)(const scalar_t* g, scalar_t* dx, long long n,
                                                           unsigned threshold, float scale, unsigned long long seed,
                                                           unsigned long long offset) {
    FOR_EACH(i, n) st(&dx[i], kept(seed, offset, i, threshold) ? ld(g[i]) * scale : 0.0f);
}
""")


def philox_word(xp, seed, counter, offset):
    """Philox4x32-10's first output word (uint32) for each counter in ``counter`` (uint64 array), as the kernel's."""
    mask = np.uint64(0xFFFFFFFF)
    c0, c1 = counter & mask, counter >> np.uint64(32)
    c2 = xp.full_like(counter, offset & 0xFFFFFFFF)
    c3 = xp.full_like(counter, offset >> 32)
    k0, k1 = seed & 0xFFFFFFFF, seed >> 32
    for round_ in range(10):
        if round_:
            k0, k1 = (k0 + _W0) & 0xFFFFFFFF, (k1 + _W1) & 0xFFFFFFFF
        p0, p1 = c0 * np.uint64(_M0), c2 * np.uint64(_M1)  # 32 x 32 -> 64 bits: hi and lo words
        c0, c1, c2, c3 = (p1 >> np.uint64(32)) ^ c1 ^ np.uint64(k0), p1 & mask, (p0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1), p0 & mask
    return c0


def keep_mask(xp, shape, p, seed, offset):
    """The kernel's keep mask of ``shape``: True where element i's Philox word clears ceil(p 2^24)."""
    counter = xp.arange(math.prod(shape), dtype=np.uint64)
    return ((philox_word(xp, seed, counter, offset) >> np.uint64(8)) >= _threshold(p)).reshape(shape)


def _threshold(p):
    return math.ceil(p * (1 << 24))


def _scale(p):
    return 1 / (1 - p) if p < 1 else 0.0


def dropout_residual_forward(x, residual, p, seed, offset):
    """residual + dropout(x) with the Philox keep mask of (seed, offset); the twin."""
    keep = keep_mask(get_array_module(x), x.shape, p, seed, offset)
    out, _ = fused.DropMask.forward(x, keep, _scale(p))
    out += residual
    return out


def dropout_residual_backward(g, p, seed, offset):
    """The gradient for x of dropout_residual_forward (the residual's is g); the twin."""
    keep = keep_mask(get_array_module(g), g.shape, p, seed, offset)
    return fused.DropMask.backward(g, (keep, _scale(p)))


def _launch_forward(function, x, residual, p, seed, offset):
    xp = get_array_module(x)
    x, residual = xp.ascontiguousarray(x), xp.ascontiguousarray(residual)
    out = xp.empty_like(x)
    function(x.dtype, "dropout_residual_forward")(grid_for(x.size), (256,), (
        x, residual, out, np.int64(x.size), np.uint32(_threshold(p)), np.float32(_scale(p)), np.uint64(seed),
        np.uint64(offset)))
    return out


def _launch_backward(function, g, p, seed, offset):
    xp = get_array_module(g)
    g = xp.ascontiguousarray(g)
    dx = xp.empty_like(g)
    function(g.dtype, "dropout_residual_backward")(grid_for(g.size), (256,), (
        g, dx, np.int64(g.size), np.uint32(_threshold(p)), np.float32(_scale(p)), np.uint64(seed), np.uint64(offset)))
    return dx


def _sample_forward(rng, dtype):
    x, r = rng.standard_normal((2, 4, 33)).astype(dtype), rng.standard_normal((2, 4, 33)).astype(dtype)
    return [(x, r, 0.3, 2**40 + 7, 5), (x, r, 0.0, 1, 0), (x, r, 1.0, 3, 2)]


def _sample_backward(rng, dtype):
    return [(rng.standard_normal((2, 4, 33)).astype(dtype), 0.3, 2**40 + 7, 5)]


register(Kernel("dropout_residual_forward", SOURCE, _launch_forward, dropout_residual_forward, _sample_forward))
register(Kernel("dropout_residual_backward", SOURCE, _launch_backward, dropout_residual_backward, _sample_backward))
