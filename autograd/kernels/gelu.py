"""GELU (Hendrycks & Gimpel 2016) forward and backward, erf and tanh forms, each one elementwise kernel.

The fused op of ops/fused.py caches the derivative made in the forward; these kernels
cache nothing but x (the op's input, alive anyway) and remake the derivative in the
backward, which on a GPU costs one read of x instead of one write and one read of a
slope array. Twins: the blocks of ops/fused.py, the same formulas.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..ops import fused
from .registry import Kernel, Source, grid_for, register

SOURCE = Source("gelu", common=r"""
// value and derivative of x Phi(x), Phi the standard normal CDF:
//   d/dx = Phi(x) + x phi(x),  phi(x) = exp(-x^2/2) / sqrt(2 pi)
__device__ __forceinline__ float2 gelu_erf(float x) {
    float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
    return make_float2(x * cdf, cdf + x * 0.39894228040143268f * expf(-0.5f * x * x));
}

// 0.5 x (1 + t), t = tanh(u), u = sqrt(2/pi) (x + 0.044715 x^3):
//   d/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) u',  u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
__device__ __forceinline__ float2 gelu_tanh(float x) {
    const float k = 0.79788456080286536f;
    float t = tanhf(k * (x + 0.044715f * x * x * x));
    float half = 0.5f * (1.0f + t);
    return make_float2(x * half, half + 0.5f * x * (1.0f - t * t) * k * (1.0f + 3.0f * 0.044715f * x * x));
}

__device__ __forceinline__ float2 gelu(float x, int tanh_form) { return tanh_form ? gelu_tanh(x) : gelu_erf(x); }
""", body=r"""
extern "C" __global__ void NAME(gelu_forward)(const scalar_t* x, scalar_t* out, long long n, int tanh_form) {
    FOR_EACH(i, n) st(&out[i], gelu(ld(x[i]), tanh_form).x);
}

extern "C" __global__ void NAME(gelu_backward)(const scalar_t* g, const scalar_t* x, scalar_t* dx, long long n,
                                               int tanh_form) {
    FOR_EACH(i, n) st(&dx[i], ld(g[i]) * gelu(ld(x[i]), tanh_form).y);
}
""")


def _forms(approximate):
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return np.int32(approximate == "tanh")


def gelu_forward(x, approximate="none"):
    """x Phi(x) elementwise (``approximate="tanh"``: the tanh form); the twin of the kernel."""
    return fused.gelu_values(x, approximate, False)[0]


def gelu_backward(g, x, approximate="none"):
    """g * d/dx GELU(x), the derivative remade from x; the twin of the kernel."""
    return g * fused.gelu_values(x, approximate, True)[1].reshape(g.shape)


def _launch_forward(function, x, approximate="none"):
    xp = get_array_module(x)
    x = xp.ascontiguousarray(x)
    out = xp.empty_like(x)
    function(x.dtype, "gelu_forward")(grid_for(x.size), (256,), (x, out, np.int64(x.size), _forms(approximate)))
    return out


def _launch_backward(function, g, x, approximate="none"):
    xp = get_array_module(x)
    g, x = xp.ascontiguousarray(g), xp.ascontiguousarray(x)
    dx = xp.empty_like(x)
    function(x.dtype, "gelu_backward")(grid_for(x.size), (256,), (g, x, dx, np.int64(x.size), _forms(approximate)))
    return dx


def _sample_forward(rng, dtype):
    x = rng.normal(0, 3, (3, 37)).astype(dtype)
    return [(x, "none"), (x, "tanh")]


def _sample_backward(rng, dtype):
    g, x = rng.standard_normal((3, 37)).astype(dtype), rng.normal(0, 3, (3, 37)).astype(dtype)
    return [(g, x, "none"), (g, x, "tanh")]


register(Kernel("gelu_forward", SOURCE, _launch_forward, gelu_forward, _sample_forward))
register(Kernel("gelu_backward", SOURCE, _launch_backward, gelu_backward, _sample_backward))
