"""Cross entropy with label smoothing and ignore_index for integer labels, one block per row.

Forward, per row r of logits z (C classes) with label y and smoothing eps:
    lse = max z + log sum exp(z - max z),
    loss_r = -sum_c q_c log softmax(z)_c = lse - (1 - eps) z_y - (eps / C) sum_c z_c,
with q = (1 - eps) onehot(y) + eps / C; a row whose label is ``ignore_index`` has loss 0.
The kernel writes each row's loss and lse (float32); the reduction (mean over the
counted rows, or sum) is the caller's, one more launch. Backward: dz = g_r (softmax(z) - q)
with softmax(z) = exp(z - lse), 0 on ignored rows; g is one value per row or a single
value for every row (the caller folds in "mean"'s 1/count). Soft targets (mixup) stay on
the CuPy path. Twins: cross_entropy_xp / cross_entropy_xp_backward of ops/fused.py, reduction "none".
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..ops import fused
from .registry import Kernel, Source, register, row_threads

SOURCE = Source("cross_entropy", common="", body=r"""
extern "C" __global__ void NAME(cross_entropy_forward)(const scalar_t* z, const long long* labels, float* loss,
                                                       float* lse, int c, float eps, long long ignore_index) {
    const scalar_t* zr = z + blockIdx.x * (long long)c;
    float top = -INFINITY, total = 0.0f;
    for (int j = threadIdx.x; j < c; j += blockDim.x) { float v = ld(zr[j]); top = fmaxf(top, v); total += v; }
    top = block_max(top);
    total = block_sum(total);
    float s = 0.0f;
    for (int j = threadIdx.x; j < c; j += blockDim.x) s += expf(ld(zr[j]) - top);
    s = block_sum(s);
    if (threadIdx.x == 0) {
        long long y = labels[blockIdx.x];
        float l = top + logf(s);
        lse[blockIdx.x] = l;
        loss[blockIdx.x] = y == ignore_index ? 0.0f : l - (1.0f - eps) * ld(zr[y]) - eps / c * total;
    }
}

extern "C" __global__ void NAME(cross_entropy_backward)(const float* g, long long g_stride, const scalar_t* z,
                                                        const float* lse, const long long* labels, scalar_t* dz,
                                                        int c, float eps, long long ignore_index) {
    long long base = blockIdx.x * (long long)c;
    long long y = labels[blockIdx.x];
    float gr = y == ignore_index ? 0.0f : g[blockIdx.x * g_stride];
    float l = lse[blockIdx.x];
    for (int j = threadIdx.x; j < c; j += blockDim.x)
        st(&dz[base + j], gr * (expf(ld(z[base + j]) - l) - (j == y ? 1.0f - eps : 0.0f) - eps / c));
}
""")


def cross_entropy_forward(logits, labels, label_smoothing=0.0, ignore_index=-100):
    """(loss per row, logsumexp per row) of logits ``(M, C)`` against integer labels ``(M,)``; the twin."""
    losses, cache = fused.cross_entropy_xp(logits, labels, label_smoothing, ignore_index, "none")
    logp = cache[0]
    return losses, logits[:, 0] - logp[:, 0]


def cross_entropy_backward(g, logits, lse, labels, label_smoothing=0.0, ignore_index=-100):
    """The gradient for the logits given g per row ``(M,)`` or one g for all rows; the twin (it remakes lse)."""
    _, cache = fused.cross_entropy_xp(logits, labels, label_smoothing, ignore_index, "none")
    return fused.cross_entropy_xp_backward(g, cache)


def _launch_forward(function, logits, labels, label_smoothing=0.0, ignore_index=-100):
    xp = get_array_module(logits)
    logits, labels = xp.ascontiguousarray(logits), xp.ascontiguousarray(labels.astype(np.int64, copy=False))
    m, c = logits.shape
    loss, lse = xp.empty(m, dtype=np.float32), xp.empty(m, dtype=np.float32)
    function(logits.dtype, "cross_entropy_forward")((m,), (row_threads(c),), (
        logits, labels, loss, lse, np.int32(c), np.float32(label_smoothing), np.int64(ignore_index)))
    return loss, lse


def _launch_backward(function, g, logits, lse, labels, label_smoothing=0.0, ignore_index=-100):
    xp = get_array_module(logits)
    logits, labels = xp.ascontiguousarray(logits), xp.ascontiguousarray(labels.astype(np.int64, copy=False))
    g = xp.ascontiguousarray(g.astype(np.float32, copy=False))
    m, c = logits.shape
    dz = xp.empty_like(logits)
    function(logits.dtype, "cross_entropy_backward")((m,), (row_threads(c),), (
        g, np.int64(g.size > 1), logits, lse, labels, dz, np.int32(c), np.float32(label_smoothing),
        np.int64(ignore_index)))
    return dz


def _case(rng, dtype, m, c):
    logits = rng.normal(0, 3, (m, c)).astype(dtype)
    labels = rng.integers(0, c, m)
    labels[1] = -100
    return logits, labels


def _sample_forward(rng, dtype):
    return [(*_case(rng, dtype, 9, 10), 0.0), (*_case(rng, dtype, 6, 1000), 0.1)]


def _sample_backward(rng, dtype):
    cases = []
    for (logits, labels), eps in ((_case(rng, dtype, 9, 10), 0.1), (_case(rng, dtype, 6, 1000), 0.0)):
        _, lse = cross_entropy_forward(logits.astype(np.float64), labels, eps)
        g = rng.standard_normal(len(labels)).astype(np.float32)
        cases += [(g, logits, lse.astype(np.float32), labels, eps), (g[:1].reshape(()), logits,
                                                                      lse.astype(np.float32), labels, eps)]
    return cases


register(Kernel("cross_entropy_forward", SOURCE, _launch_forward, cross_entropy_forward, _sample_forward))
register(Kernel("cross_entropy_backward", SOURCE, _launch_backward, cross_entropy_backward, _sample_backward))
