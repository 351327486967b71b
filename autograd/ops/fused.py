"""Fused ops: the layers of a transformer, each one Function with a hand-derived backward.

Composed from primitives, layer norm would record a dozen nodes and keep a dozen
intermediate arrays; fused, it keeps two and its backward is three lines. Each
backward's derivation is written beside it. All of them run unchanged on NumPy and
CuPy, keep float32 in float32, and hand matrix products to BLAS (cuBLAS on a GPU).

The random ops (dropout, drop-path) draw their mask in the public function and pass
it to the Function, so the Function itself is a pure function of its inputs.

On a GPU, layer norm, GELU and cross entropy run as the fused kernels of
autograd/kernels (one launch where CuPy's operations take a dozen) when
``kernels.get`` hands one out, and otherwise as the whole-array CuPy code below; the
CPU never asks for a kernel.
"""
from __future__ import annotations

import math

import numpy as np

from .. import kernels, parallel, precision
from ..backend import get_array_module
from ..engine import Function
from ..tensor import as_tensor_like
from .special import normal_cdf
from .util import BLOCK, THREAD_BLOCK, add_rows, blocks, blockwise, check_probability, keep_mask, sum_rows

__all__ = [
    "linear", "layer_norm", "layer_norm_linear", "gelu", "softmax", "log_softmax", "cross_entropy", "dropout",
    "drop_path",
]

_RSQRT_2PI = 1 / math.sqrt(2 * math.pi)
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_GELU_TANH_CUBIC = 0.044715


class Linear(Function):
    takes_needs_input_grad = True

    @staticmethod
    def forward(x, weight, *bias, needs_input_grad=(False, False)):
        x2 = x.reshape(-1, x.shape[-1])  # (M, in): every leading dim is a row of one GEMM
        x2, weight = precision.lower(x2, weight)  # 16-bit under mixed precision; cached so for the backward
        out = precision.matmul(x2, weight.T, weight.dtype, x.dtype)  # (M, out)
        if bias:
            add_rows(out, bias[0])
        # keep only what the wanted gradients need: no input for a frozen weight, no
        # weight when the input needs no gradient (a first layer's images)
        needs = needs_input_grad
        cache = (x2 if needs[1] else None, weight if needs[0] else None, x.shape, needs)
        return out.reshape(x.shape[:-1] + (weight.shape[0],)), cache

    @staticmethod
    def backward(g, cache):
        # Y = X W^T + b  =>  dX = dY W,  dW = dY^T X,  db = sum over rows of dY;
        # with all leading dims flattened into rows each is a single GEMM, run in the
        # forward's precision (the cached operands'), its results in dY's (float32).
        x2, weight, x_shape, needs = cache
        g2 = g.reshape(-1, g.shape[-1])  # (M, out)
        dx = precision.matmul(g2, weight, weight.dtype, g.dtype).reshape(x_shape) if needs[0] else None
        dw = precision.matmul(g2.T, x2, x2.dtype, g.dtype) if needs[1] else None  # (out, in)
        if len(needs) == 2:
            return dx, dw
        return dx, dw, g2.sum(axis=0) if needs[2] else None


def linear(x, weight, bias=None, *, activation=None, residual=None):
    """x @ weight.T + bias, weight ``(out, in)`` as in PyTorch, x ``(..., in)``.

    ``activation="gelu"`` (or ``"gelu_tanh"``) applies GELU to that, ``residual`` (an
    array of the output's shape) is added to it: the same numbers as ``gelu(linear(...))``
    or ``residual + linear(...)``, as one op, so that on a GPU the bias and what follows
    it are one kernel after the GEMM (autograd/kernels/epilogue.py). One of the two at most.
    """
    if activation is None and residual is None:
        return Linear.apply(x, weight) if bias is None else Linear.apply(x, weight, bias)
    if activation not in (None, "gelu", "gelu_tanh") or (activation is not None and residual is not None):
        raise ValueError(f"linear takes activation 'gelu' or 'gelu_tanh', or a residual, not both; got {activation!r}")
    if residual is not None and tuple(residual.shape) != tuple(x.shape[:-1]) + (weight.shape[0],):
        raise ValueError(f"residual of shape {residual.shape} for a linear output of shape "
                         f"{tuple(x.shape[:-1]) + (weight.shape[0],)}")
    if bias is None:
        out = Linear.apply(x, weight)
        return gelu(out, _APPROXIMATE[activation]) if residual is None else residual + out
    inputs = (x, weight, bias) if residual is None else (x, weight, bias, residual)
    return LinearEpilogue.apply(*inputs, activation=activation)


_APPROXIMATE = {"gelu": "none", "gelu_tanh": "tanh"}


class LinearEpilogue(Function):
    takes_needs_input_grad = True

    @staticmethod
    def forward(x, weight, bias, *residual, activation, needs_input_grad):
        # The GEMM alone, then the bias and what follows it: on a GPU with the epilogue
        # kernels one kernel; on the CPU in one dtype one pass of row blocks over the threads,
        # in place in the GEMM's output and in cache (Linear's bias add, then Gelu or the
        # residual's Add, the same operations in their order, so the separate ops' numbers,
        # with a pass over memory and an array fewer). Else Linear, then Gelu or the Add.
        fused = _epilogue_kernel(x, weight, bias, residual, activation)
        if fused is None and not _epilogue_on_cpu(x, weight, bias, residual):
            out, linear_cache = Linear.forward(x, weight, bias, needs_input_grad=needs_input_grad[:3])
            if residual:
                return residual[0] + out, (linear_cache, None, True, False, needs_input_grad)
            out, gelu_cache = Gelu.forward(out, _APPROXIMATE[activation], needs_input_grad=(any(needs_input_grad),))
            return out, (linear_cache, gelu_cache, False, False, needs_input_grad)
        y, linear_cache = Linear.forward(x, weight, needs_input_grad=needs_input_grad[:2])  # (..., out), no bias
        y2 = y.reshape(-1, y.shape[-1])
        if fused is None:  # the CPU's pass
            if residual:
                _add_bias_residual(y2, bias, residual[0].reshape(y2.shape))
                return y, (linear_cache, None, True, True, needs_input_grad)
            _, slope = gelu_values(y, _APPROXIMATE[activation], any(needs_input_grad), bias=bias, overwrite=True)
            return y, (linear_cache, (slope, None, _APPROXIMATE[activation]), False, True, needs_input_grad)
        if residual:
            out = fused(y2, bias, residual[0].reshape(y2.shape))
            return out.reshape(y.shape), (linear_cache, None, True, True, needs_input_grad)
        z, out = fused(y2, bias, _APPROXIMATE[activation])
        gelu_cache = (None, z.reshape(y.shape), _APPROXIMATE[activation])  # Gelu's cache after its kernel: z itself
        return out.reshape(y.shape), (linear_cache, gelu_cache, False, True, needs_input_grad)

    @staticmethod
    def backward(g, cache):
        # out = f(z), z = x W^T + b: dz = g f'(z) (GELU's backward; the identity for the
        # residual add, whose own gradient is g), then Linear's backward from dz. Where
        # the bias was added after the GEMM (the GPU kernel, the CPU pass), db = sum over
        # rows of dz, as in Linear.backward.
        linear_cache, gelu_cache, has_residual, bias_apart, needs = cache
        dz = g if gelu_cache is None else Gelu.backward(g, gelu_cache)
        if bias_apart:
            dx, dw = Linear.backward(dz, linear_cache)
            db = dz.reshape(-1, dz.shape[-1]).sum(axis=0) if needs[2] else None
        else:
            dx, dw, db = Linear.backward(dz, linear_cache)
        return (dx, dw, db, g) if has_residual else (dx, dw, db)


def _epilogue_on_cpu(x, weight, bias, residual) -> bool:
    """Whether ``LinearEpilogue`` runs its CPU pass: NumPy arrays, every one in x's dtype (so one in-place pass)."""
    return (get_array_module(x) is np and weight.dtype == bias.dtype == x.dtype
            and all(r.dtype == x.dtype for r in residual))


def _add_bias_residual(y2, bias, residual2):
    """y2 += bias, then y2 += residual2, for the GEMM's output ``(M, n)``: row blocks over the threads, each in cache.

    (y + b) + r is r + (y + b), the separate ops' sum, bit for bit: IEEE addition commutes.
    """
    def rows(r):
        y = y2[r]
        y += bias
        y += residual2[r]

    parallel.run(rows, blocks(len(y2), y2.shape[-1], np, THREAD_BLOCK))


def _epilogue_kernel(x, weight, bias, residual, activation):
    """The epilogue kernel for ``LinearEpilogue`` on a GPU when every array is in x's dtype, else None."""
    if get_array_module(x) is np or not weight.dtype == bias.dtype == x.dtype:
        return None
    if residual:
        return kernels.get("bias_residual_forward", x.dtype) if residual[0].dtype == x.dtype else None
    return kernels.get("bias_gelu_forward", x.dtype)


class LayerNorm(Function):
    takes_needs_input_grad = True
    adds_to_first_grad = True  # a pre-norm block's residual stream: x's other gradient joins in the kernel

    @staticmethod
    def forward(x, *affine, eps, has_weight, has_bias, needs_input_grad=()):
        # Rows in cache-sized blocks; the row means are matrix-vector products with a
        # vector of 1/D, which BLAS does several times faster than NumPy's sum over short
        # rows. The cache keeps x (alive anyway as this op's input), the means and rstd,
        # not xhat: the backward remakes xhat block by block, in cache, for two passes.
        xp = get_array_module(x)
        weight = affine[0] if has_weight else None
        bias = affine[-1] if has_bias else None
        dim = x.shape[-1]
        x2 = x.reshape(-1, dim)  # (M, D)
        if xp is not np:
            # the kernel reads the weight and bias in x's dtype, and takes both
            affine_ok = has_weight and has_bias and weight.dtype == bias.dtype == x.dtype
            fused = kernels.get("layer_norm_forward", x.dtype) if affine_ok else None
            if fused is None:
                return _layer_norm_whole(x2, weight, bias, eps, has_bias, needs_input_grad, x.shape)
            out, mean, rstd = fused(x2, weight, bias, eps)  # mean and rstd (M,) in float32
            cache = (x2, mean, rstd, weight, has_bias, needs_input_grad) if any(needs_input_grad) else None
            return out.reshape(x.shape), cache
        out = xp.empty(x2.shape, dtype=x.dtype)
        mean = xp.empty((len(x2), 1), dtype=x.dtype)  # (M, 1)
        rstd = xp.empty((len(x2), 1), dtype=x.dtype)  # (M, 1)
        mean_of = xp.full(dim, 1.0 / dim, dtype=x.dtype)

        def rows(run):
            r, parts = run
            xr = x2[r]
            for _, b, part in parts:
                mean[b, 0] = xr[part] @ mean_of
            xh = xr - mean[r]
            sq = xh * xh
            for _, b, part in parts:
                rstd[b, 0] = sq[part] @ mean_of  # the variance
            rstd[r] += eps
            xp.sqrt(rstd[r], out=rstd[r])
            xp.reciprocal(rstd[r], out=rstd[r])
            xh *= rstd[r]  # xhat = (x - mean) / sqrt(var + eps)
            _scale_shift(xh, weight, bias, out[r])

        parallel.run(rows, _block_runs(blocks(len(x2), dim, xp)))
        cache = (x2, mean, rstd, weight, has_bias, needs_input_grad) if any(needs_input_grad) else None
        return out.reshape(x.shape), cache

    @staticmethod
    def backward(g, cache, so_far=None):
        # y = xhat w + b, xhat = (x - mean) rstd. With dxhat = g w, differentiating
        # through mean and rstd (llm.c's layernorm.py) gives
        #   dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)),
        # the means over the normalised (last) axis; dw and db sum over all leading axes.
        # mean(dxhat) = g . (w / D) and mean(dxhat xhat) = (g xhat) . (w / D), row by row,
        # so g xhat, which dw needs too, is the only product formed for the means; the
        # column sums for dw and db are matrix-vector products as well.
        x2, mean, rstd, weight, has_bias, needs = cache
        xp = get_array_module(g)
        dim = g.shape[-1]
        g2 = g.reshape(-1, dim)  # (M, D)
        if xp is not np:
            return _layer_norm_gpu_backward(g2, x2, mean, rstd, weight, has_bias, needs, g.shape, so_far)
        w_mean = xp.full(dim, 1.0 / dim, dtype=g.dtype) if weight is None else weight / dim
        dx = xp.empty(g2.shape, dtype=g.dtype) if needs[0] else None
        row_blocks = blocks(len(g2), dim, xp)
        # each block's column sums in a row of its own, added up in block order below:
        # the same sums, in the same order, whatever thread ran which block
        dws = xp.empty((len(row_blocks), dim), dtype=g.dtype) if weight is not None and needs[1] else None
        dbs = xp.empty((len(row_blocks), dim), dtype=g.dtype) if has_bias and needs[-1] else None
        ones = xp.ones(len(g2), dtype=g.dtype)
        a, b = xp.empty(len(g2), dtype=g.dtype), xp.empty(len(g2), dtype=g.dtype)  # mean(dxhat), mean(dxhat xhat)

        def rows(run):
            r, parts = run
            gr = g2[r]
            xh = x2[r] - mean[r]
            xh *= rstd[r]  # xhat, remade
            gx = gr * xh
            for i, rb, part in parts:
                if dws is not None:
                    dws[i] = ones[:len(gx[part])] @ gx[part]
                if dbs is not None:
                    dbs[i] = ones[:len(gr[part])] @ gr[part]
                if dx is not None:
                    a[rb] = gr[part] @ w_mean
                    b[rb] = gx[part] @ w_mean
            if dx is None:
                return
            d = dx[r]
            if weight is None:
                d[...] = gr
            else:
                xp.multiply(gr, weight, out=d)
            d -= a[r, None]
            xh *= b[r, None]
            d -= xh
            d *= rstd[r]

        parallel.run(rows, _block_runs(row_blocks))
        grads = [_plus(so_far, None if dx is None else dx.reshape(g.shape))]
        if weight is not None:
            grads.append(None if dws is None else sum_rows(dws))
        if has_bias:
            grads.append(None if dbs is None else sum_rows(dbs))
        return tuple(grads)


def _scale_shift(xh, weight, bias, out):
    """out = xhat w + b, w or b None for none: LayerNorm's last step on the CPU, shared with ``_layer_norm_remade``
    so that the two give the same numbers."""
    if weight is None:
        out[...] = xh
    else:
        np.multiply(xh, weight, out=out)
    if bias is not None:
        out += bias


def _block_runs(row_blocks):
    """The row blocks (of ``blocks``) in runs of ``THREAD_BLOCK // BLOCK``, each ``(its rows, [(block index, the
    block's rows, those rows within the run)])``: a run's elementwise passes go over all its rows at once (few NumPy
    calls, little GIL between the pool's threads), its matrix-vector products block by block, so their sums are
    those of BLOCK-sized blocks, bit for bit, as before the runs."""
    per_run = max(1, THREAD_BLOCK // BLOCK)
    runs = []
    for first in range(0, len(row_blocks), per_run):
        run = row_blocks[first:first + per_run]
        start = run[0].start
        runs.append((slice(start, run[-1].stop),
                     [(i, rb, slice(rb.start - start, rb.stop - start)) for i, rb in enumerate(run, first)]))
    return runs


def layer_norm_rows(x2, eps):
    """(mean, xhat, rstd) of the rows of ``x2`` ``(M, D)``, mean and rstd ``(M, 1)``: whole-array passes.

    The GPU fallback's statistics (and the layer-norm kernels' twins): the blocking of
    the CPU path buys cache locality a GPU does not need, and its matrix-vector means
    cost two launches each.
    """
    xp = get_array_module(x2)
    mean = x2.mean(axis=1, keepdims=True)  # (M, 1)
    xh = x2 - mean
    var = xp.square(xh).mean(axis=1, keepdims=True)
    var += eps
    rstd = var ** -0.5  # (M, 1)
    xh *= rstd  # xhat
    return mean, xh, rstd


def _layer_norm_whole(x2, weight, bias, eps, has_bias, needs, shape):
    """LayerNorm's forward on a GPU without its kernel; the cache keeps xhat itself (the ``x2`` slot, mean None)
    so that the backward does not remake it."""
    _, xh, rstd = layer_norm_rows(x2, eps)
    out = xh if weight is None else xh * weight
    if bias is not None:
        out = out + bias
    cache = (xh, None, rstd, weight, has_bias, needs) if any(needs) else None
    return out.reshape(shape), cache


def _plus(so_far, dx):
    """``so_far + dx``, the engine's own sum (``adds_to_first_grad``), or whichever of the two there is."""
    if so_far is None or dx is None:
        return dx if so_far is None else so_far
    return so_far + dx


def _layer_norm_gpu_backward(g2, x2, mean, rstd, weight, has_bias, needs, shape, so_far=None):
    """LayerNorm's backward on a GPU: the kernel's when the forward's was (mean saved), else whole arrays.

    The kernel gives all three gradients in two launches whichever are needed, adding x's
    gradient ``so_far`` into dx as it writes it; should its self-check have failed where
    the forward's passed, xhat is remade from the kernel forward's mean and rstd.
    """
    if mean is None:  # the CuPy forward: x2 is xhat
        dx, *rest = _layer_norm_whole_backward(g2, x2, rstd, weight, has_bias, needs, shape)
        return (_plus(so_far, dx), *rest)
    fused = kernels.get("layer_norm_backward", g2.dtype)
    if fused is not None:
        add = so_far is not None and needs[0] and so_far.dtype == g2.dtype
        dx, dw, db = fused(g2, x2, mean, rstd, weight, so_far.reshape(g2.shape) if add else None)
        dx = dx.reshape(shape) if needs[0] else None
        return dx if add else _plus(so_far, dx), dw if needs[1] else None, db if needs[2] else None
    xh = layer_norm_xhat(x2, mean, rstd)
    dx, *rest = _layer_norm_whole_backward(g2, xh, rstd.astype(x2.dtype)[:, None], weight, has_bias, needs, shape)
    return (_plus(so_far, dx), *rest)


def layer_norm_xhat(x2, mean, rstd):
    """xhat = (x - mean) rstd of the rows ``(M, D)`` from the per-row mean and rstd ``(M,)`` (float32) of the kernel."""
    xh = x2 - mean.astype(x2.dtype)[:, None]
    xh *= rstd.astype(x2.dtype)[:, None]
    return xh


def _layer_norm_whole_backward(g2, xh, rstd, weight, has_bias, needs, shape):
    """LayerNorm's backward on a GPU, from the cached xhat: the formula of ``LayerNorm.backward``, whole arrays."""
    grads = []
    dxhat = g2 if weight is None else g2 * weight
    if needs[0]:
        dx = dxhat - dxhat.mean(axis=1, keepdims=True)  # dxhat - mean(dxhat)
        dx -= xh * (dxhat * xh).mean(axis=1, keepdims=True)  # - xhat mean(dxhat xhat)
        dx *= rstd
        grads.append(dx.reshape(shape))
    else:
        grads.append(None)
    if weight is not None:
        grads.append((g2 * xh).sum(axis=0) if needs[1] else None)
    if has_bias:
        grads.append(g2.sum(axis=0) if needs[-1] else None)
    return tuple(grads)


def layer_norm(x, weight=None, bias=None, eps=1e-6):
    """Normalise over the last axis to zero mean and unit variance, then scale by weight and shift by bias."""
    affine = [t for t in (weight, bias) if t is not None]
    return LayerNorm.apply(x, *affine, eps=eps, has_weight=weight is not None, has_bias=bias is not None)


class LayerNormLinear(Function):
    takes_needs_input_grad = True
    adds_to_first_grad = True  # x is a pre-norm block's residual stream, as for LayerNorm

    @staticmethod
    def forward(x, ln_weight, ln_bias, weight, *bias, eps, activation, needs_input_grad):
        # LayerNorm's CPU forward, then Linear's (LinearEpilogue's, for a GELU): the two ops' own code, so their
        # numbers. Their caches together keep y = LN(x) (M, in) for the Linear's dW = dz^T y; it is dropped here,
        # and the backward remakes it from x, mean and rstd, which LayerNorm's cache keeps anyway (x is alive as
        # the residual stream): one (M, in) activation fewer held from the forward to the backward. With x and
        # the layer norm's parameters all frozen there is no LayerNorm cache to remake y from, and y stays.
        ln_needs = needs_input_grad[:3]
        y, ln_cache = LayerNorm.forward(x, ln_weight, ln_bias, eps=eps, has_weight=True, has_bias=True,
                                        needs_input_grad=ln_needs)
        linear_needs = (any(ln_needs),) + needs_input_grad[3:]
        if activation is None:
            out, linear_cache = Linear.forward(y, weight, *bias, needs_input_grad=linear_needs)
        else:
            out, linear_cache = LinearEpilogue.forward(y, weight, *bias, activation=activation,
                                                       needs_input_grad=linear_needs)
        dropped = ln_cache is not None and linear_needs[1]
        if dropped:
            linear_cache = _with_linear_input(linear_cache, None, activation is not None)
        return out, (ln_cache, ln_bias, linear_cache, activation, dropped)

    @staticmethod
    def backward(g, cache, so_far=None):
        # out = f(y W^T + b), y = xhat w_ln + b_ln: Linear's (LinearEpilogue's) backward gives dy, dW and db, then
        # LayerNorm's takes dy, and x's gradient so far, to dx, dw_ln and db_ln, as the two ops' backwards would.
        # dW = dz^T y needs the y the forward dropped: xhat = (x - mean) rstd, then xhat w_ln + b_ln, again, by
        # the forward's own elementwise operations (no sum among them), so the same y bit for bit, and the same dW.
        ln_cache, ln_bias, linear_cache, activation, dropped = cache
        epilogue = activation is not None
        if dropped:
            x2, mean, rstd, ln_weight = ln_cache[:4]
            linear_cache = _with_linear_input(linear_cache, _layer_norm_remade(x2, mean, rstd, ln_weight, ln_bias),
                                              epilogue)
        dy, *linear_grads = (LinearEpilogue if epilogue else Linear).backward(g, linear_cache)
        del linear_cache  # the remade y, before LayerNorm's backward allocates its own
        ln_grads = (so_far, None, None) if ln_cache is None else LayerNorm.backward(dy, ln_cache, so_far)
        return (*ln_grads, *linear_grads)


def _with_linear_input(cache, x2, epilogue):
    """Linear's cache (LinearEpilogue's, with ``epilogue``) with ``x2`` for the input ``(M, in)`` it keeps for dW."""
    if epilogue:
        linear_cache, *rest = cache
        return (_with_linear_input(linear_cache, x2, False), *rest)
    return (x2, *cache[1:])


def _layer_norm_remade(x2, mean, rstd, weight, bias):
    """LayerNorm's CPU output ``(M, D)`` again from x, mean and rstd: xhat as ``LayerNorm.backward`` remakes it,
    scaled and shifted as the forward does, in row blocks over the threads; elementwise operations only, so the
    forward's numbers bit for bit."""
    out = np.empty_like(x2)

    def rows(r):
        xh = x2[r] - mean[r]
        xh *= rstd[r]
        _scale_shift(xh, weight, bias, out[r])

    parallel.run(rows, blocks(len(x2), x2.shape[-1], np, THREAD_BLOCK))
    return out


def layer_norm_linear(x, ln_weight, ln_bias, weight, bias=None, *, activation=None, eps=1e-6):
    """``linear(layer_norm(x, ln_weight, ln_bias, eps), weight, bias, activation=activation)``: a pre-norm layer.

    The same numbers, bit for bit; on the CPU one op, whose backward remakes the normalised
    input instead of keeping it from the forward: one ``(..., in)`` array fewer alive
    between the passes per layer (a ViT block has two). Elsewhere the two ops themselves:
    on CuPy arrays (their kernels, and launch counts, stay those of the two ops), without
    the layer norm's weight or bias, for a GELU without a bias, with arrays of mixed
    dtypes and under ``autocast``.
    """
    if activation not in (None, "gelu", "gelu_tanh"):
        raise ValueError(f"layer_norm_linear takes activation None, 'gelu' or 'gelu_tanh', not {activation!r}")
    x = as_tensor_like(x)
    parts = [as_tensor_like(t, (x,)) for t in (ln_weight, ln_bias, weight, bias) if t is not None]
    if (x.xp is not np or ln_weight is None or ln_bias is None or (bias is None and activation is not None)
            or any(t.dtype != x.dtype for t in parts) or precision.lowers(x.data)):
        return linear(layer_norm(x, ln_weight, ln_bias, eps), weight, bias, activation=activation)
    return LayerNormLinear.apply(x, *parts, eps=eps, activation=activation)


class Gelu(Function):
    takes_needs_input_grad = True

    @staticmethod
    def forward(x, approximate="none", needs_input_grad=(False,)):
        # On a GPU with the kernels, one launch each way: the backward remakes the
        # derivative from x (the op's input, alive anyway), so the cache is x.
        # Otherwise the derivative is made here and cached instead of x.
        if get_array_module(x) is not np:
            fused = kernels.get("gelu_forward", x.dtype)
            if fused is not None:
                return fused(x, approximate), (None, x, approximate) if needs_input_grad[0] else None
        out, slope = gelu_values(x, approximate, needs_input_grad[0])
        return out, (slope, None, approximate)

    @staticmethod
    def backward(g, cache):
        slope, x, approximate = cache
        if slope is None:  # the kernel's forward
            fused = kernels.get("gelu_backward", x.dtype)
            if fused is not None:
                return fused(g, x, approximate)
            slope = gelu_values(x, approximate, True)[1]
        return blockwise(np.multiply, g, slope.reshape(g.shape))


def gelu_values(x, approximate, with_slope, bias=None, overwrite=False):
    """(GELU(x + bias), its derivative or None), computed block by block so that erf's two dozen passes (or tanh's
    few) and the derivative run in cache; the NumPy/CuPy path, and the GELU kernels' twin.

    ``bias`` (the last axis's, or None) is added to x in place, block by block, before GELU;
    with ``overwrite`` the values are written over x (over a copy where x is not C-ordered).
    """
    xp = get_array_module(x)
    rows = xp.ascontiguousarray(x).reshape(-1, x.shape[-1] if x.ndim else 1)  # (M, n)
    out = rows if overwrite else xp.empty_like(rows)
    slope = xp.empty_like(rows) if with_slope else None
    block = _gelu_tanh_block if approximate == "tanh" else _gelu_erf_block

    def run(r):
        z = rows[r]
        if bias is not None:
            z += bias
        block(xp, z.reshape(-1), out[r].reshape(-1), None if slope is None else slope[r].reshape(-1))

    parallel.run(run, blocks(len(rows), rows.shape[1], xp, THREAD_BLOCK))
    return out.reshape(x.shape), None if slope is None else slope.reshape(-1)


def gelu(x, approximate="none"):
    """x Phi(x), Phi the standard normal CDF; ``approximate="tanh"`` for the tanh approximation."""
    if approximate not in ("none", "tanh"):
        raise ValueError(f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return Gelu.apply(x, approximate=approximate)


def _gelu_erf_block(xp, x, out, slope):
    """out = x Phi(x), Phi the standard normal CDF; slope = d/dx [x Phi(x)] = Phi(x) + x phi(x),
    phi(x) = exp(-x^2 / 2) / sqrt(2 pi)."""
    x2 = x * x
    cdf = normal_cdf(x, x2)
    if slope is not None:
        x2 *= -0.5
        xp.exp(x2, out=x2)
        x2 *= x
        x2 *= _RSQRT_2PI
        xp.add(x2, cdf, out=slope)
    xp.multiply(x, cdf, out=out)  # last: out may be x itself


def _gelu_tanh_block(xp, x, out, slope):
    """out = 0.5 x (1 + t), t = tanh(u), u = sqrt(2/pi) (x + 0.044715 x^3); slope = its derivative,
    0.5 (1 + t) + 0.5 x (1 - t^2) u', u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)."""
    x2 = x * x
    t = x2 * _GELU_TANH_CUBIC
    t += 1.0
    t *= x
    t *= _SQRT_2_OVER_PI
    xp.tanh(t, out=t)
    half = t + 1.0
    half *= 0.5  # 0.5 (1 + t)
    if slope is not None:
        du = x2
        du *= 3 * _GELU_TANH_CUBIC
        du += 1.0
        du *= _SQRT_2_OVER_PI
        t *= t
        xp.subtract(1.0, t, out=t)  # 1 - t^2
        du *= t
        du *= x
        du *= 0.5
        xp.add(du, half, out=slope)
    xp.multiply(x, half, out=out)  # last: out may be x itself


class Softmax(Function):
    @staticmethod
    def forward(x, axis=-1):
        xp = get_array_module(x)
        s = x - x.max(axis=axis, keepdims=True)  # the largest exponent is 0: no overflow
        xp.exp(s, out=s)
        s /= s.sum(axis=axis, keepdims=True)
        return s, (s, axis)

    @staticmethod
    def backward(g, cache):
        # ds_i/dx_j = s_i (delta_ij - s_j)  =>  dx = s (g - sum_j g_j s_j)
        s, axis = cache
        dx = g - (g * s).sum(axis=axis, keepdims=True)
        dx *= s
        return dx


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along ``axis``, computed stably."""
    return Softmax.apply(x, axis=axis)


class LogSoftmax(Function):
    @staticmethod
    def forward(x, axis=-1):
        xp = get_array_module(x)
        out = x - x.max(axis=axis, keepdims=True)
        out -= xp.log(xp.exp(out).sum(axis=axis, keepdims=True))  # (x - max) - log sum exp(x - max)
        return out, (out, axis)

    @staticmethod
    def backward(g, cache):
        # y_i = x_i - log sum_j e^x_j  =>  dy_i/dx_j = delta_ij - softmax_j  =>  dx = g - softmax sum(g)
        out, axis = cache
        xp = get_array_module(g)
        return g - xp.exp(out) * g.sum(axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    """log(softmax(x)) along ``axis``, computed stably (no log of a rounded-to-zero probability)."""
    return LogSoftmax.apply(x, axis=axis)


class CrossEntropy(Function):
    @staticmethod
    def forward(logits, target, label_smoothing=0.0, ignore_index=-100, reduction="mean"):
        # On a GPU, integer labels go to the cross-entropy kernel: each row's loss and
        # logsumexp in one launch, the reduction a few more; soft targets stay on CuPy.
        if get_array_module(logits) is not np and target.dtype.kind != "f":
            fused = kernels.get("cross_entropy_forward", logits.dtype)
            if fused is not None:
                return _cross_entropy_fused(fused, logits, target, label_smoothing, ignore_index, reduction)
        out, cache = cross_entropy_xp(logits, target, label_smoothing, ignore_index, reduction)
        return out, (False, cache)

    @staticmethod
    def backward(g, cache):
        fused, cache = cache
        if fused:
            return _cross_entropy_fused_backward(g, cache), None
        return cross_entropy_xp_backward(g, cache), None  # the targets are constants


def cross_entropy_xp(logits, target, label_smoothing, ignore_index, reduction):
    """(loss, cache) of cross entropy in NumPy/CuPy operations: the CPU's path, and the kernels' twin."""
    xp = get_array_module(logits)
    n_class = logits.shape[-1]
    eps = label_smoothing
    logp = logits.reshape(-1, n_class)  # (M, C): every leading position is a sample
    logp = logp - logp.max(axis=1, keepdims=True)
    logp -= xp.log(xp.exp(logp).sum(axis=1, keepdims=True))  # log_softmax
    if target.dtype.kind == "f":  # soft targets (mixup, cutmix): a distribution per row
        q = target.reshape(-1, n_class).astype(logp.dtype, copy=False)  # (M, C)
        if eps:
            q = q * (1 - eps) + eps / n_class
        losses = -(q * logp).sum(axis=1)  # (M,)
        weight = xp.ones(len(logp), dtype=logp.dtype)
        labels = None
    else:  # integer labels: q = (1 - eps) onehot(label) + eps / C, never built
        labels = target.reshape(-1)  # (M,)
        counted = labels != ignore_index
        labels = xp.where(counted, labels, 0)  # any valid index; the row's weight is 0
        losses = xp.take_along_axis(logp, labels[:, None], axis=1)[:, 0]  # (M,)
        losses *= -(1 - eps)
        if eps:
            losses -= eps / n_class * logp.sum(axis=1)
        weight = counted.astype(logp.dtype)
        q = None
    if reduction == "mean":  # over the counted rows; none counted gives 0, not 0/0
        weight /= xp.maximum(weight.sum(), 1)
    losses *= weight
    out = losses.reshape(logits.shape[:-1]) if reduction == "none" else losses.sum()
    return out, (logp, q, labels, weight, eps, reduction, logits.shape)


def cross_entropy_xp_backward(g, cache):
    """The logits' gradient from ``cross_entropy_xp``'s cache."""
    # loss_r = -sum_c q_c log softmax(z)_c  =>  dloss_r/dz = softmax(z) sum_c q_c - q,
    # which is softmax - q for a distribution q; each row is scaled by its weight
    # (0 for ignored rows, 1/count for "mean") and by its upstream gradient.
    logp, q, labels, weight, eps, reduction, shape = cache
    xp = get_array_module(g)
    dz = xp.exp(logp)  # softmax, (M, C)
    if q is not None:
        dz *= q.sum(axis=1, keepdims=True)
        dz -= q
    else:
        dz[xp.arange(len(labels)), labels] -= 1 - eps
        if eps:
            dz -= eps / shape[-1]
    row = weight * (g.reshape(-1) if reduction == "none" else g)  # (M,)
    dz *= row[:, None]
    return dz.reshape(shape)


def _cross_entropy_fused(fused, logits, target, eps, ignore_index, reduction):
    """CrossEntropy.forward by the kernel: per-row losses (0 where ignored) and logsumexp, then the reduction."""
    xp = get_array_module(logits)
    logits2, labels = logits.reshape(-1, logits.shape[-1]), target.reshape(-1)
    losses, lse = fused(logits2, labels, eps, ignore_index)  # float32, (M,)
    count = None
    if reduction == "none":
        out = losses.reshape(logits.shape[:-1])
    elif reduction == "sum":
        out = losses.sum()
    else:  # the mean over the counted rows; none counted gives 0, not 0/0
        count = xp.maximum((labels != ignore_index).sum(dtype=np.float32), 1)
        out = losses.sum() / count
    return out.astype(logits.dtype, copy=False), (True, (logits2, lse, labels, count, eps, ignore_index, reduction,
                                                        logits.shape))


def _cross_entropy_fused_backward(g, cache):
    """The logits' gradient by the kernel: dz = g_r (softmax(z) - q), g_r g per row ("none"), g, or g / count."""
    logits2, lse, labels, count, eps, ignore_index, reduction, shape = cache
    rows = g.reshape(-1) if reduction == "none" else g if count is None else g / count
    fused = kernels.get("cross_entropy_backward", logits2.dtype)
    if fused is not None:
        return fused(rows, logits2, lse, labels, eps, ignore_index).reshape(shape)
    _, cache = cross_entropy_xp(logits2, labels, eps, ignore_index, "none")
    return cross_entropy_xp_backward(rows.astype(logits2.dtype, copy=False), cache).reshape(shape)


def cross_entropy(logits, target, label_smoothing=0.0, ignore_index=-100, reduction="mean"):
    """Cross entropy of softmax(logits) ``(..., C)`` against integer labels ``(...)`` or soft targets ``(..., C)``.

    As PyTorch's: labels equal to ``ignore_index`` count for nothing (the mean is over
    the others; all ignored gives 0), label smoothing mixes the target with the uniform
    distribution, ``(1 - eps) target + eps / C``, and ``reduction`` is "mean", "sum" or "none".
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    logits = as_tensor_like(logits)
    target = as_tensor_like(target, (logits,))
    soft = target.dtype.kind == "f"
    expected = logits.shape if soft else logits.shape[:-1]
    if target.shape != expected:
        kind = "soft targets" if soft else "integer labels"
        raise ValueError(f"{kind} of shape {target.shape} for logits of shape {logits.shape}; expected {expected}")
    return CrossEntropy.apply(
        logits, target, label_smoothing=float(label_smoothing), ignore_index=ignore_index, reduction=reduction
    )


class DropMask(Function):
    @staticmethod
    def forward(x, keep, scale):
        out = x * scale
        out *= keep  # keep broadcasts: per element for dropout, per sample for drop-path
        return out, (keep, scale)

    @staticmethod
    def backward(g, cache):
        # y = x keep scale, keep and scale constants  =>  dx = g keep scale
        keep, scale = cache
        dx = g * scale
        dx *= keep
        return dx


def dropout(x, p, training=True, generator=None):
    """Zero each element with probability p and scale the rest by 1/(1-p); the input itself when not training."""
    return _drop(x, p, training, generator, per_sample=False)


def drop_path(x, p, training=True, generator=None):
    """Stochastic depth: zero whole samples (first axis) with probability p, scale the rest by 1/(1-p)."""
    return _drop(x, p, training, generator, per_sample=True)


def _drop(x, p, training, generator, per_sample):
    """x keep / (1 - p), keep True with probability 1 - p per element or per sample; x itself when off."""
    check_probability(p)
    if not training or p == 0:
        return x
    x = as_tensor_like(x)
    shape = (x.shape[0],) + (1,) * (x.ndim - 1) if per_sample else x.shape  # per sample: (B, 1, ..., 1)
    keep = keep_mask(shape, p, generator, x.device)
    return DropMask.apply(x, keep=keep, scale=1 / (1 - p) if p < 1 else 0.0)
