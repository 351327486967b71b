"""Scaled dot-product attention as one fused op: softmax(q k^T * scale + bias) v.

One Function for the whole block keeps just the softmax weights, the output and the
dropout mask for the backward, instead of every intermediate a composition of
matmul, softmax and dropout would record, and its backward is five matrix products.
The batch dims (batch, heads, ...) ride along in NumPy's batched matmul, which hands
every (N, d) slice to BLAS. On a GPU the scaled, biased softmax and its backward are
the softmax kernels of autograd/kernels when ``kernels.get`` hands them out. On the CPU
the op runs piece by piece over the batch on autograd.parallel's threads and keeps, in
place of the weights, each row's maximum and sum to remake them (see ``_attend_cpu``).
"""
from __future__ import annotations

import numpy as np

from .. import kernels, parallel, precision
from ..backend import get_array_module
from ..engine import Function
from ..tensor import Tensor, as_tensor_like
from .util import THREAD_BLOCK, blocks, check_probability, keep_mask, unbroadcast

__all__ = ["attention_weights", "scaled_dot_product_attention"]


class ScaledDotProductAttention(Function):
    takes_needs_input_grad = True

    @staticmethod
    def forward(q, k, v, *bias, scale, keep=None, drop_scale=1.0, needs_input_grad=()):
        dtype = q.dtype
        q, k, v = precision.lower(q, k, v)  # the products' operands, 16-bit under mixed precision (and cached so)
        if get_array_module(q) is np and q.dtype == dtype:
            # the CPU in one precision: p is not the weights but what remakes them in the backward (_attend_cpu)
            p, out = _attend_cpu(q, k, v, bias[0] if bias else None, scale, keep, drop_scale)
        else:
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
        if isinstance(p, tuple):  # the CPU's one-precision forward kept what remakes P, not P
            return _attend_cpu_backward(g, cache)
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
    On the CPU, piece by piece over the first axis (see ``_attend_cpu``).
    """
    xp = get_array_module(q)
    if xp is np and q.dtype == dtype:
        p = np.empty(q.shape[:-1] + (k.shape[-2],), dtype=np.result_type(q, k))  # (..., Nq, Nk)
        parallel.run(lambda r: _softmax_piece(q[r], k[r], _part(bias, r, p.ndim), scale, p[r]), _pieces(p.shape))
        return p
    p = precision.matmul(q, k.swapaxes(-1, -2), k.dtype, dtype)  # (..., Nq, Nk)
    fused = kernels.get("softmax_forward", p.dtype) if xp is not np and _trailing(bias, p.shape) else None
    if fused is not None:
        return fused(p, scale, bias)
    return _softmax_in_place(p, scale, bias, xp)


def _softmax_in_place(p, scale, bias, xp, row_max=None, row_sum=None):
    """softmax(p * scale + bias) over the last axis, written over ``p``, which it returns; with ``row_max`` and
    ``row_sum`` ``(..., Nq, 1)`` given, the logits' row maxima and the exponentials' row sums are kept there."""
    p *= scale  # the logits; scaled here rather than in a copy of q that the cache would keep
    if bias is not None:
        p += bias
    p -= p.max(axis=-1, keepdims=True, out=row_max)
    xp.exp(p, out=p)
    p /= p.sum(axis=-1, keepdims=True, out=row_sum)
    return p


def _softmax_piece(q, k, bias, scale, p=None, row_max=None, row_sum=None):
    """One CPU piece of ``_softmax_weights``: the weights of queries ``q`` on keys ``k``, in ``p`` or a new array."""
    return _softmax_in_place(np.matmul(q, k.swapaxes(-1, -2), out=p), scale, bias, np, row_max, row_sum)


def _softmax_again(q, k, bias, scale, row_max, row_sum):
    """The weights of one CPU piece made again from the forward's row maxima and sums: the same operations on the
    same numbers, so the same bits (a new (Nq, Nk) array, in cache)."""
    p = np.matmul(q, k.swapaxes(-1, -2))
    p *= scale
    if bias is not None:
        p += bias
    p -= row_max
    np.exp(p, out=p)
    p /= row_sum
    return p


# --- the CPU's attention: piece by piece over the first axis, over autograd.parallel's threads ---
# Every (Nq, Nk) slice of the logits is its own softmax and its own matrix products, so
# the samples of a batch split into pieces of about util.THREAD_BLOCK logits that each run the
# whole forward (or backward) in cache, one run of pieces per thread. A piece's numbers
# are those of the whole-array code, bit for bit, whatever the thread count. The weights P
# are not kept between the passes (FlashAttention's recomputation, here exact): the
# forward keeps each row's logit maximum and exponential sum, and the backward remakes a
# piece's P from q, k and them, which costs one small matrix product and an exp pass
# and saves a (B, H, N, N) array a layer for the whole step.
def _pieces(logits_shape):
    """Slices of the first axis of the logits ``(..., Nq, Nk)``, each about ``THREAD_BLOCK`` elements (fewer NumPy
    calls, so less GIL traded between the pool's threads; every product and row sum is the same whatever the
    slice's length); one slice for 2-D."""
    if len(logits_shape) < 3:
        return [slice(None)]
    return blocks(logits_shape[0], int(np.prod(logits_shape[1:])), np, THREAD_BLOCK)


def _part(a, r, ndim):
    """The part of ``a`` (None, or broadcasting to ``ndim`` axes) for the slice ``r`` of the first axis."""
    if a is None or a.ndim < ndim or a.shape[0] == 1:
        return a  # the same for every index of the first axis
    return a[r]


def _attend_cpu(q, k, v, bias, scale, keep, drop_scale):
    """((bias, row maxima, row sums), O) of the forward on the CPU: what remakes P, and the output.

    O ``(..., H, Nq, dv)`` is laid out in memory as ``(..., Nq, H, dv)``, heads side by
    side for each query: what the output projection reads, so the model's transpose to
    ``(B, N, H, d)`` and reshape to ``(B, N, D)`` are views, not a copy that its cache
    would keep beside this one's.
    """
    logits = q.shape[:-1] + (k.shape[-2],)  # (..., Nq, Nk)
    dtype = np.result_type(q, k, v)
    row_max, row_sum = np.empty(logits[:-1] + (1,), dtype=dtype), np.empty(logits[:-1] + (1,), dtype=dtype)
    out_shape = q.shape[:-1] + (v.shape[-1],)  # (..., Nq, dv)
    if len(out_shape) >= 3:
        out = np.empty(out_shape[:-3] + (out_shape[-2], out_shape[-3], out_shape[-1]), dtype=dtype).swapaxes(-2, -3)
    else:
        out = np.empty(out_shape, dtype=dtype)

    def piece(r):
        pr = _softmax_piece(q[r], k[r], _part(bias, r, len(logits)), scale, None, row_max[r], row_sum[r])
        np.matmul(pr if keep is None else _drop(pr, keep[r], drop_scale), v[r], out=out[r])

    parallel.run(piece, _pieces(logits))
    return (bias, row_max, row_sum), out


def _attend_cpu_backward(g, cache):
    """The backward on the CPU: the formulas of ``ScaledDotProductAttention.backward``, piece by piece, P
    remade; dS lives one piece at a time unless a bias gradient needs all of it."""
    q, k, v, (bias, row_max, row_sum), out, keep, drop_scale, scale, bias_shape, has_bias = cache
    dq, dk, dv = np.empty_like(q), np.empty_like(k), np.empty_like(v)
    logits = q.shape[:-1] + (k.shape[-2],)
    ds_all = None if bias_shape is None else np.empty(logits, dtype=g.dtype)

    def piece(r):
        pr = _softmax_again(q[r], k[r], _part(bias, r, len(logits)), scale, row_max[r], row_sum[r])
        np.matmul((pr if keep is None else _drop(pr, keep[r], drop_scale)).swapaxes(-1, -2), g[r], out=dv[r])
        ds = np.matmul(g[r], v[r].swapaxes(-1, -2), out=None if ds_all is None else ds_all[r])  # dPd
        if keep is not None:
            ds *= drop_scale
            ds *= keep[r]  # dP
        ds -= (g[r] * out[r]).sum(axis=-1, keepdims=True)
        ds *= pr  # dS
        np.matmul(ds, k[r], out=dq[r])
        dq[r] *= scale
        np.matmul(ds.swapaxes(-1, -2), q[r], out=dk[r])
        dk[r] *= scale

    parallel.run(piece, _pieces(logits))
    if not has_bias:
        return dq, dk, dv
    return dq, dk, dv, None if bias_shape is None else unbroadcast(ds_all, bias_shape)


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
