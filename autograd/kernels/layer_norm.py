"""Layer normalisation (Ba et al. 2016; the ViT's Eq. 2-3 apply it before every block) as row kernels.

Forward: one block per row of D, the mean and then the variance of the centred row
(two passes over a row that sits in L1, not the cancelling E[x^2] - E[x]^2), the row's
mean and rstd saved in float32. Backward: the input gradient one block per row (with the
gradient x has from elsewhere, a residual stream's, added as it is written); the
weight and bias gradients, sums over all rows, a second kernel whose 32 x 8 blocks give
each thread a column and a stride of rows, so a warp reads 32 neighbouring columns.
Twins: LayerNorm.forward / backward of ops/fused.py.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..ops import fused
from .registry import Kernel, Source, register, row_threads

SOURCE = Source("layer_norm", common="", body=r"""
extern "C" __global__ void NAME(layer_norm_forward)(const scalar_t* x, const scalar_t* w, const scalar_t* b,
                                                    scalar_t* out, float* mean, float* rstd, int d, float eps) {
    const scalar_t* xr = x + blockIdx.x * (long long)d;
    scalar_t* yr = out + blockIdx.x * (long long)d;
    float s = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) s += ld(xr[j]);
    float mu = block_sum(s) / d;
    float q = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) { float c = ld(xr[j]) - mu; q += c * c; }
    float rs = rsqrtf(block_sum(q) / d + eps);
    for (int j = threadIdx.x; j < d; j += blockDim.x) st(&yr[j], (ld(xr[j]) - mu) * rs * ld(w[j]) + ld(b[j]));
    if (threadIdx.x == 0) { mean[blockIdx.x] = mu; rstd[blockIdx.x] = rs; }
}

// dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)), dxhat = g w (derivation in ops/fused.py),
// plus, when has_add, the gradient x has from elsewhere (a residual stream's own), added as dx is written
extern "C" __global__ void NAME(layer_norm_backward_dx)(const scalar_t* g, const scalar_t* x, const float* mean,
                                                        const float* rstd, const scalar_t* w, const scalar_t* add,
                                                        int has_add, scalar_t* dx, int d) {
    long long base = blockIdx.x * (long long)d;
    float mu = mean[blockIdx.x], rs = rstd[blockIdx.x];
    float a = 0.0f, b = 0.0f;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float dxh = ld(g[base + j]) * ld(w[j]);
        a += dxh;
        b += dxh * (ld(x[base + j]) - mu) * rs;
    }
    a = block_sum(a) / d;
    b = block_sum(b) / d;
    for (int j = threadIdx.x; j < d; j += blockDim.x) {
        float xh = (ld(x[base + j]) - mu) * rs;
        float other = has_add ? ld(add[base + j]) : 0.0f;
        st(&dx[base + j], other + rs * (ld(g[base + j]) * ld(w[j]) - a - xh * b));
    }
}

// dw = sum over rows of g xhat, db = sum over rows of g; blockDim (32, 8)
extern "C" __global__ void NAME(layer_norm_backward_dwdb)(const scalar_t* g, const scalar_t* x, const float* mean,
                                                          const float* rstd, scalar_t* dw, scalar_t* db,
                                                          long long m, int d) {
    __shared__ float sw[8][33], sb[8][33];  // 33: no bank conflicts on the column sums
    int j = blockIdx.x * 32 + threadIdx.x;
    float aw = 0.0f, ab = 0.0f;
    if (j < d) {
        for (long long r = threadIdx.y; r < m; r += 8) {
            float gv = ld(g[r * d + j]);
            aw += gv * (ld(x[r * d + j]) - mean[r]) * rstd[r];
            ab += gv;
        }
    }
    sw[threadIdx.y][threadIdx.x] = aw;
    sb[threadIdx.y][threadIdx.x] = ab;
    __syncthreads();
    if (threadIdx.y == 0 && j < d) {
        for (int y = 1; y < 8; ++y) { aw += sw[y][threadIdx.x]; ab += sb[y][threadIdx.x]; }
        st(&dw[j], aw);
        st(&db[j], ab);
    }
}
""")


def layer_norm_forward(x, weight, bias, eps=1e-6):
    """(out, mean, rstd) of layer norm over the last axis, mean and rstd one per row ``(M,)``; the twin.

    The op's GPU fallback (ops/fused.py), which runs on either device and never asks for
    a kernel, in float32 at least, as the kernel computes (a float16 sum over rows
    rounds at every step).
    """
    d, work = x.shape[-1], np.promote_types(x.dtype, np.float32)
    mean, xh, rstd = fused.layer_norm_rows(x.reshape(-1, d).astype(work), eps)
    out = xh * weight
    out += bias
    return out.astype(x.dtype).reshape(x.shape), mean[:, 0], rstd[:, 0]


def layer_norm_backward(g, x, mean, rstd, weight, add=None):
    """(dx, dweight, dbias) of layer norm from the forward's mean and rstd, ``add`` (x's gradient from
    elsewhere, or None) added to dx; the twin (the op's GPU fallback), in float32 at least."""
    d, work = x.shape[-1], np.promote_types(x.dtype, np.float32)
    xh = fused.layer_norm_xhat(x.reshape(-1, d).astype(work), mean, rstd)
    dx, dw, db = fused._layer_norm_whole_backward(g.reshape(-1, d).astype(work), xh, rstd[:, None].astype(work),
                                                  weight.astype(work), True, (True, True, True), x.shape)
    if add is not None:
        dx = add.astype(work) + dx
    return tuple(a.astype(x.dtype) for a in (dx, dw, db))


def _launch_forward(function, x, weight, bias, eps=1e-6):
    xp = get_array_module(x)
    x = xp.ascontiguousarray(x)
    d, m = x.shape[-1], x.size // x.shape[-1]
    out = xp.empty_like(x)
    mean, rstd = xp.empty(m, dtype=np.float32), xp.empty(m, dtype=np.float32)
    function(x.dtype, "layer_norm_forward")((m,), (row_threads(d),), (x, weight, bias, out, mean, rstd,
                                                                     np.int32(d), np.float32(eps)))
    return out, mean, rstd


def _launch_backward(function, g, x, mean, rstd, weight, add=None):
    xp = get_array_module(x)
    g, x = xp.ascontiguousarray(g), xp.ascontiguousarray(x)
    d, m = x.shape[-1], x.size // x.shape[-1]
    dx, dw, db = xp.empty_like(x), xp.empty(d, dtype=x.dtype), xp.empty(d, dtype=x.dtype)
    other = g if add is None else xp.ascontiguousarray(add)  # any pointer when there is nothing to add
    function(x.dtype, "layer_norm_backward_dx")((m,), (row_threads(d),), (
        g, x, mean, rstd, weight, other, np.int32(add is not None), dx, np.int32(d)))
    function(x.dtype, "layer_norm_backward_dwdb")(((d + 31) // 32,), (32, 8), (g, x, mean, rstd, dw, db,
                                                                              np.int64(m), np.int32(d)))
    return dx, dw, db


def _affine(rng, dtype, d):
    return (1 + 0.3 * rng.standard_normal(d)).astype(dtype), (0.3 * rng.standard_normal(d)).astype(dtype)


def _sample_forward(rng, dtype):
    x = (rng.standard_normal((2, 5, 48)) * 2 + 0.5).astype(dtype)
    return [(x, *_affine(rng, dtype, 48), 1e-6), (x[..., :7], *_affine(rng, dtype, 7), 1e-5)]


def _sample_backward(rng, dtype):
    cases = []
    for shape in ((2, 5, 48), (70, 7)):  # 70 rows: more than the 8 row-walkers, a column block part full
        x = (rng.standard_normal(shape) * 2 + 0.5).astype(dtype)
        w, b = _affine(rng, dtype, shape[-1])
        _, mean, rstd = layer_norm_forward(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64))
        g = rng.standard_normal(shape).astype(dtype)
        cases.append((g, x, mean.astype(np.float32), rstd.astype(np.float32), w))
    g, x, mean, rstd, w = cases[0]
    cases.append((g, x, mean, rstd, w, rng.standard_normal(g.shape).astype(dtype)))  # a residual's gradient joins dx
    return cases


register(Kernel("layer_norm_forward", SOURCE, _launch_forward, layer_norm_forward, _sample_forward))
register(Kernel("layer_norm_backward", SOURCE, _launch_backward, layer_norm_backward, _sample_backward))
