"""What follows a linear layer's GEMM, in one elementwise kernel: the bias with GELU, or the bias with a residual add.

A linear layer on CuPy is its GEMM and then a broadcast add of the bias; the ViT follows
it with GELU (the MLP's first layer, Eq. 3) or with the residual add (the attention
projection and the MLP's second layer, Eq. 2-3), each one more launch. These kernels
take the GEMM's output y (M, N) and do the rest in one pass:

    bias_gelu_forward:      z = y + b,  out = GELU(z)    (z kept: the GELU backward kernel remakes GELU' from it)
    bias_residual_forward:  out = r + (y + b)

Neither needs a backward kernel: GELU's is gelu_backward (gelu.py) on z; the bias's
gradient is the column sum of the gradient that reaches z, and the residual's is the
upstream gradient itself. Twins: the ops' own NumPy/CuPy steps, in the same order.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..ops import fused
from .registry import Kernel, Source, grid_for, register
from . import gelu as _gelu  # GELU's device functions are this family's common part too

SOURCE = Source("epilogue", common=_gelu.SOURCE.common, body=r"""
extern "C" __global__ void NAME(bias_gelu_forward)(const scalar_t* y, const scalar_t* b, scalar_t* z,
                                                   scalar_t* out, long long n, int cols, int tanh_form) {
    FOR_EACH(i, n) {
        float v = ld(y[i]) + ld(b[i % cols]);
        st(&z[i], v);
        st(&out[i], gelu(ld(z[i]), tanh_form).x);  // GELU of z as stored, as the backward will see it
    }
}

extern "C" __global__ void NAME(bias_residual_forward)(const scalar_t* y, const scalar_t* b, const scalar_t* r,
                                                       scalar_t* out, long long n, int cols) {
    FOR_EACH(i, n) st(&out[i], ld(r[i]) + (ld(y[i]) + ld(b[i % cols])));
}
""")


def bias_gelu_forward(y, bias, approximate="none"):
    """(z, GELU(z)) with z = y + bias, y ``(M, N)``, bias ``(N,)``; the twin."""
    z = y + bias
    return z, fused.gelu_values(z, approximate, False)[0]


def bias_residual_forward(y, bias, residual):
    """residual + (y + bias), y and residual ``(M, N)``, bias ``(N,)``; the twin (the order Linear then Add add in)."""
    out = y + bias
    return residual + out


def _launch_gelu(function, y, bias, approximate="none"):
    xp = get_array_module(y)
    y, bias = xp.ascontiguousarray(y), xp.ascontiguousarray(bias)
    z, out = xp.empty_like(y), xp.empty_like(y)
    function(y.dtype, "bias_gelu_forward")(grid_for(y.size), (256,), (
        y, bias, z, out, np.int64(y.size), np.int32(bias.size), _gelu._forms(approximate)))
    return z, out


def _launch_residual(function, y, bias, residual):
    xp = get_array_module(y)
    y, bias, residual = xp.ascontiguousarray(y), xp.ascontiguousarray(bias), xp.ascontiguousarray(residual)
    out = xp.empty_like(y)
    function(y.dtype, "bias_residual_forward")(grid_for(y.size), (256,), (
        y, bias, residual, out, np.int64(y.size), np.int32(bias.size)))
    return out


def _sample_gelu(rng, dtype):
    y, b = rng.normal(0, 3, (5, 37)).astype(dtype), rng.standard_normal(37).astype(dtype)
    return [(y, b, "none"), (y, b, "tanh")]


def _sample_residual(rng, dtype):
    return [tuple(rng.standard_normal(shape).astype(dtype) for shape in ((5, 37), (37,), (5, 37)))]


register(Kernel("bias_gelu_forward", SOURCE, _launch_gelu, bias_gelu_forward, _sample_gelu))
register(Kernel("bias_residual_forward", SOURCE, _launch_residual, bias_residual_forward, _sample_residual))
