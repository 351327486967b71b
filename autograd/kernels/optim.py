"""AdamW and SGD with momentum over a flat parameter buffer, one elementwise kernel per step.

The whole model's parameters are one flat buffer per dtype (and their gradients
another), so one launch updates them all. What the host would otherwise pass in, and
so read back or upload every step, stays on the device: the learning rate ``lr`` (float32,
shape (1,)) and the step number ``step`` (int32, (1,), 1 on the first update; the caller
advances it, by ``ok``) are read by every thread, and the update happens only where the
device flag ``ok`` ((1,), nonzero) says the gradients are finite, so a step with an
overflow is skipped without a sync. ``decay`` (uint8 per element) is 1 where weight decay
applies (timm's groups: not on biases, norms, tokens, position embeddings). Parameters
and gradients are ``scalar_t``; the moments and the momentum buffer are float32.
The twins are new (ops have no flat-buffer optimizer) and follow autograd/optim.py's
update rules, written in xp so they run on either device without a sync.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from .registry import Kernel, Source, grid_for, register

SOURCE = Source("optim", common="", body=r"""
// AdamW (torch.optim.AdamW): p -= lr wd p; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
// p -= lr / (1 - b1^t) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
extern "C" __global__ void NAME(adamw_step)(scalar_t* param, const scalar_t* grad, float* m, float* v,
                                            const unsigned char* decay, const float* lr, const int* step,
                                            const unsigned char* ok, long long n, float b1, float b2, float eps,
                                            float wd) {
    if (!ok[0]) return;
    float rate = lr[0], t = (float)step[0];
    float c1 = 1.0f - powf(b1, t), c2 = sqrtf(1.0f - powf(b2, t));
    FOR_EACH(i, n) {
        float p = ld(param[i]), g = ld(grad[i]);
        if (decay[i]) p *= 1.0f - rate * wd;
        float mi = b1 * m[i] + (1.0f - b1) * g, vi = b2 * v[i] + (1.0f - b2) * g * g;
        m[i] = mi;
        v[i] = vi;
        st(&param[i], p - rate / c1 * mi / (sqrtf(vi) / c2 + eps));
    }
}

// SGD (torch.optim.SGD): d = g + wd p; b = momentum b + (1 - dampening) d (b = d on step 1);
// p -= lr (d + momentum b) with Nesterov, else p -= lr b
extern "C" __global__ void NAME(sgd_step)(scalar_t* param, const scalar_t* grad, float* buf,
                                          const unsigned char* decay, const float* lr, const int* step,
                                          const unsigned char* ok, long long n, float momentum, float dampening,
                                          int nesterov, float wd) {
    if (!ok[0]) return;
    float rate = lr[0];
    int first = step[0] == 1;
    FOR_EACH(i, n) {
        float p = ld(param[i]), d = ld(grad[i]);
        if (decay[i]) d += wd * p;
        if (momentum != 0.0f) {
            float b = first ? d : momentum * buf[i] + (1.0f - dampening) * d;
            buf[i] = b;
            d = nesterov ? d + momentum * b : b;
        }
        st(&param[i], p - rate * d);
    }
}
""")


def adamw_step(param, grad, exp_avg, exp_avg_sq, decay, lr, step, ok, betas=(0.9, 0.999), eps=1e-8,
               weight_decay=0.01):
    """One AdamW update of the flat ``param`` in place where ``ok``; returns (param, exp_avg, exp_avg_sq). The twin."""
    xp = get_array_module(param)
    b1, b2 = betas
    t = step.astype(np.float64)
    keep = ok.astype(bool)
    p = param * (1 - lr * weight_decay * decay)
    m = b1 * exp_avg + (1 - b1) * grad
    v = b2 * exp_avg_sq + (1 - b2) * (grad * grad)
    p -= lr / (1 - b1**t) * m / (xp.sqrt(v) / xp.sqrt(1 - b2**t) + eps)
    for buffer, new in ((param, p), (exp_avg, m), (exp_avg_sq, v)):
        buffer[...] = xp.where(keep, new, buffer)
    return param, exp_avg, exp_avg_sq


def sgd_step(param, grad, buf, decay, lr, step, ok, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    """One SGD update of the flat ``param`` in place where ``ok``; returns (param, buf). The twin."""
    xp = get_array_module(param)
    keep = ok.astype(bool)
    d = grad + weight_decay * decay * param
    if momentum:
        b = xp.where(step == 1, d, momentum * buf + (1 - dampening) * d)
        d = d + momentum * b if nesterov else b
        buf[...] = xp.where(keep, b, buf)
    param[...] = xp.where(keep, param - lr * d, param)
    return param, buf


def _scalars(xp, lr, step, ok):
    return xp.ascontiguousarray(lr.astype(np.float32, copy=False)), step.astype(np.int32, copy=False), \
        ok.astype(np.uint8, copy=False)


def _launch_adamw(function, param, grad, exp_avg, exp_avg_sq, decay, lr, step, ok, betas=(0.9, 0.999), eps=1e-8,
                  weight_decay=0.01):
    xp = get_array_module(param)
    lr, step, ok = _scalars(xp, lr, step, ok)
    function(param.dtype, "adamw_step")(grid_for(param.size), (256,), (
        param, grad, exp_avg, exp_avg_sq, decay, lr, step, ok, np.int64(param.size), np.float32(betas[0]),
        np.float32(betas[1]), np.float32(eps), np.float32(weight_decay)))
    return param, exp_avg, exp_avg_sq


def _launch_sgd(function, param, grad, buf, decay, lr, step, ok, momentum=0.0, dampening=0.0, nesterov=False,
                weight_decay=0.0):
    xp = get_array_module(param)
    lr, step, ok = _scalars(xp, lr, step, ok)
    function(param.dtype, "sgd_step")(grid_for(param.size), (256,), (
        param, grad, buf, decay, lr, step, ok, np.int64(param.size), np.float32(momentum), np.float32(dampening),
        np.int32(bool(nesterov)), np.float32(weight_decay)))
    return param, buf


def _flat(rng, dtype, n=301):
    param, grad = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    return param, grad, (rng.random(n) < 0.7).astype(np.uint8)


def _device_scalars(lr, step, ok):
    return np.array([lr], np.float32), np.array([step], np.int32), np.array([ok], np.uint8)


def _sample_adamw(rng, dtype):
    cases = []
    for step, ok in ((1, 1), (7, 1), (3, 0)):
        param, grad, decay = _flat(rng, dtype)
        m, v = (0.1 * rng.standard_normal(param.size)).astype(np.float32), rng.random(param.size).astype(np.float32)
        cases.append((param, grad, m, v, decay, *_device_scalars(1e-2, step, ok), (0.9, 0.99), 1e-8, 0.05))
    return cases


def _sample_sgd(rng, dtype):
    cases = []
    for step, ok, nesterov in ((1, 1, False), (4, 1, True), (4, 0, False)):
        param, grad, decay = _flat(rng, dtype)
        buf = rng.standard_normal(param.size).astype(np.float32)
        cases.append((param, grad, buf, decay, *_device_scalars(0.1, step, ok), 0.9, 0.0, nesterov, 1e-3))
    return cases


register(Kernel("adamw_step", SOURCE, _launch_adamw, adamw_step, _sample_adamw))
register(Kernel("sgd_step", SOURCE, _launch_sgd, sgd_step, _sample_sgd))
