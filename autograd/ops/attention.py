"""Scaled dot-product attention as one fused op: softmax(q k^T * scale + bias) v.

One Function for the whole block keeps just the softmax weights, the output and the
dropout mask for the backward, instead of every intermediate a composition of
matmul, softmax and dropout would record, and its backward is five matrix products.
The batch dims (batch, heads, ...) ride along in NumPy's batched matmul, which hands
every (N, d) slice to BLAS. On a GPU the scaled, biased softmax and its backward are
the softmax kernels of autograd/kernels when ``kernels.get`` hands them out.
"""
from __future__ import annotations

import numpy as np

from .. import kernels, precision
from ..backend import get_array_module
from ..engine import Function
from ..tensor import Tensor, as_tensor_like
from .util import check_probability, keep_mask, unbroadcast

__all__ = ["attention_weights", "scaled_dot_product_attention"]


class ScaledDotProductAttention(Function):
    takes_needs_input_grad = True

    @staticmethod
    def forward(q, k, v, *bias, scale, keep=None, drop_scale=1.0, needs_input_grad=()):
        dtype = q.dtype
        q, k, v = precision.lower(q, k, v)  # the products' operands, 16-bit under mixed precision (and cached so)
        p = _softmax_weights(q, k, bias[0] if bias else None, scale, dtype)  # (..., Nq, Nk), in float32
        pd = p if keep is None else _drop(p, keep, drop_scale)
        out = precision.matmul(pd, v, v.dtype, dtype)  # (..., Nq, dv)
        # a constant bias (a mask) needs no gradient, and so no sum of dS down to its shape
        bias_shape = bias[0].shape if bias and needs_input_grad[3] else None
        return out, (q, k, v, p, out, keep, drop_scale, scale, bias_shape, bool(bias))

    @staticmethod
    def backward(g, cache):
        # S = q k^T scale + bias, P = softmax(S), Pd = P * keep * drop_scale, O = Pd V.
        #   dV = Pd^T dO,   dPd = dO V^T,   dP = dPd * keep * drop_scale,
        #   dS = P * (dP - rowsum(dP * P))   (the softmax backward, row by row),
        #   dq = dS k scale,   dk = dS^T q scale,   dbias = dS summed to the bias's shape.
        # rowsum(dP * P) = rowsum(dPd * Pd) = sum_j Pd_ij (dO_i . V_j) = dO_i . O_i, so it
        # is taken from the (Nq, dv) arrays instead of the (Nq, Nk) ones (FlashAttention's D).
        # On a GPU the softmax kernel makes dS from dP and P in one launch, taking the row
        # sum from them; folding the scale in too when no bias gradient needs dS unscaled.
        # The four products run in the forward's precision (the cached q, k, v's dtype),
        # the softmax backward between them in float32.
        q, k, v, p, out, keep, drop_scale, scale, bias_shape, has_bias = cache
        low = v.dtype
        pd = p if keep is None else _drop(p, keep, drop_scale)
        dv = precision.matmul(pd.swapaxes(-1, -2), g, low, g.dtype)  # (..., Nk, dv)
        ds = precision.matmul(g, v.swapaxes(-1, -2), low, g.dtype)  # dPd, (..., Nq, Nk)
        if keep is not None:
            ds = _drop(ds, keep, drop_scale)  # dP
        fused = kernels.get("softmax_backward", p.dtype) if get_array_module(g) is not np else None
        fold = fused is not None and bias_shape is None  # dS scale at once: no bias gradient wants dS itself
        if fused is not None:
            ds = fused(ds, p, scale if fold else 1.0)
        else:
            ds -= (g * out).sum(axis=-1, keepdims=True)  # (..., Nq, 1) broadcast over keys
            ds *= p  # dS
        dq = precision.matmul(ds, k, low, g.dtype)
        dk = precision.matmul(ds.swapaxes(-1, -2), q, low, g.dtype)  # (..., Nk, d)
        if not fold:
            dq *= scale
            dk *= scale
        if not has_bias:
            return dq, dk, dv
        return dq, dk, dv, None if bias_shape is None else unbroadcast(ds, bias_shape)


def _softmax_weights(q, k, bias, scale, dtype):
    """softmax(q k^T * scale + bias) over the keys in ``dtype``, arrays in and out, in place in one (..., Nq, Nk) array.

    The product runs in q and k's dtype (16-bit under mixed precision), the softmax in ``dtype``.

    On a GPU, the scale, the bias and the softmax are one kernel when the bias (if any)
    is one array for every leading index the kernel walks (its trailing axes are the logits').
    """
    xp = get_array_module(q)
    p = precision.matmul(q, k.swapaxes(-1, -2), k.dtype, dtype)  # (..., Nq, Nk)
    fused = kernels.get("softmax_forward", p.dtype) if xp is not np and _trailing(bias, p.shape) else None
    if fused is not None:
        return fused(p, scale, bias)
    p *= scale  # the logits; scaled here rather than in a copy of q that the cache would keep
    if bias is not None:
        p += bias
    p -= p.max(axis=-1, keepdims=True)
    xp.exp(p, out=p)
    p /= p.sum(axis=-1, keepdims=True)
    return p


def _trailing(bias, shape) -> bool:
    """Whether ``bias`` is None or, less its leading 1s, the trailing axes of ``shape`` (what the softmax kernel reads)."""
    if bias is None:
        return True
    dims = tuple(bias.shape)
    while len(dims) > 1 and dims[0] == 1:
        dims = dims[1:]
    return dims == tuple(shape[len(shape) - len(dims):])


def _drop(a, keep, scale):
    """a * keep * scale in one new array."""
    out = a * scale
    out *= keep
    return out


def scaled_dot_product_attention(q, k, v, bias=None, dropout_p=0.0, training=True, generator=None,
                                 return_weights=False, scale=None):
    """softmax(q @ k^T * scale + bias) @ v over ``(..., N, d)`` inputs, with dropout on the attention weights.

    ``scale`` defaults to d ** -0.5; ``bias`` (a Tensor that may require grad, e.g.
    relative position embeddings) broadcasts to the logits ``(..., Nq, Nk)``. The
    dropout mask comes from ``generator`` (or the global generator of q's device).
    With ``return_weights`` it returns ``(out, attention_weights(q, k, bias, scale))``:
    the softmax weights ``(..., Nq, Nk)`` before dropout, without history.
    """
    check_probability(dropout_p)
    q = as_tensor_like(q)
    k, v = as_tensor_like(k, (q,)), as_tensor_like(v, (q,))
    if not (q.shape[:-2] == k.shape[:-2] == v.shape[:-2] and q.shape[-1] == k.shape[-1]
            and k.shape[-2] == v.shape[-2]):
        raise ValueError(
            f"attention needs q (..., Nq, d), k (..., Nk, d), v (..., Nk, dv) with the same leading dims; "
            f"got {q.shape}, {k.shape}, {v.shape}"
        )
    logits_shape = q.shape[:-1] + (k.shape[-2],)
    inputs = (q, k, v)
    if bias is not None:
        bias = as_tensor_like(bias, (q,))
        if np.broadcast_shapes(bias.shape, logits_shape) != logits_shape:
            raise ValueError(f"attention bias of shape {bias.shape} does not broadcast to the logits {logits_shape}")
        inputs += (bias,)
    keep, drop_scale = None, 1.0
    if training and dropout_p > 0:
        keep = keep_mask(logits_shape, dropout_p, generator, q.device)
        drop_scale = 1 / (1 - dropout_p) if dropout_p < 1 else 0.0
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    out = ScaledDotProductAttention.apply(*inputs, scale=scale, keep=keep, drop_scale=drop_scale)
    if not return_weights:
        return out
    return out, attention_weights(q, k, bias, scale)


def attention_weights(q, k, bias=None, scale=None):
    """The softmax weights softmax(q @ k^T * scale + bias) ``(..., Nq, Nk)`` as a Tensor without history.

    For attention maps: the same numbers ``scaled_dot_product_attention`` computes
    (before dropout), computed again outside the graph, so that training never keeps
    or hands out an extra (Nq, Nk) array per layer.
    """
    q = as_tensor_like(q)
    k = as_tensor_like(k, (q,))
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    bias = None if bias is None else as_tensor_like(bias, (q,)).data
    return Tensor(_softmax_weights(*precision.lower(q.data, k.data), bias, scale, q.dtype))
