"""Shape ops: they move elements around, so the backward moves the gradient back."""
from __future__ import annotations

import numpy as np

from .. import parallel
from ..backend import get_array_module
from ..engine import Function
from ..tensor import Tensor
from .util import blocks, unbroadcast


class Reshape(Function):
    @staticmethod
    def forward(a, shape):
        return a.reshape(shape), a.shape

    @staticmethod
    def backward(g, in_shape):
        return g.reshape(in_shape)


def reshape(a, shape):
    """The same elements in a new shape (one axis may be -1)."""
    return Reshape.apply(a, shape=tuple(shape))


class Transpose(Function):
    @staticmethod
    def forward(a, axes=None):
        axes = tuple(reversed(range(a.ndim))) if axes is None else tuple(ax % a.ndim for ax in axes)
        return a.transpose(axes), axes

    @staticmethod
    def backward(g, axes):
        # the inverse permutation puts every axis back where it came from
        return g.transpose(tuple(np.argsort(axes)))


def transpose(a, axes=None):
    """Permute the axes (reverse them when ``axes`` is None)."""
    return Transpose.apply(a, axes=None if axes is None else tuple(axes))


def permute(a, axes):
    """Permute the axes into ``axes`` order."""
    return transpose(a, axes)


def swapaxes(a, axis1, axis2):
    """Exchange two axes."""
    ndim = len(a.shape)
    axes = list(range(ndim))
    axes[axis1 % ndim], axes[axis2 % ndim] = axes[axis2 % ndim], axes[axis1 % ndim]
    return transpose(a, axes)


class BroadcastTo(Function):
    @staticmethod
    def forward(a, shape):
        xp = get_array_module(a)
        return xp.broadcast_to(a, shape), a.shape

    @staticmethod
    def backward(g, in_shape):
        return unbroadcast(g, in_shape)


def broadcast_to(a, shape):
    """Broadcast to ``shape``; the backward sums over the stretched axes."""
    return BroadcastTo.apply(a, shape=tuple(shape))


class Concatenate(Function):
    @staticmethod
    def forward(*arrays, axis=0):
        xp = get_array_module(*arrays)
        out = xp.concatenate(arrays, axis=axis)
        bounds = np.cumsum([a.shape[axis] for a in arrays])[:-1]
        return out, (axis, bounds)

    @staticmethod
    def backward(g, cache):
        # each input gets back its own slab of the gradient
        axis, bounds = cache
        xp = get_array_module(g)
        return tuple(xp.split(g, bounds, axis=axis))


def concatenate(tensors, axis=0):
    """Join tensors along an existing axis."""
    return Concatenate.apply(*tensors, axis=axis)


class Stack(Function):
    @staticmethod
    def forward(*arrays, axis=0):
        xp = get_array_module(*arrays)
        return xp.stack(arrays, axis=axis), (axis, len(arrays))

    @staticmethod
    def backward(g, cache):
        axis, n = cache
        xp = get_array_module(g)
        return tuple(xp.squeeze(part, axis=axis) for part in xp.split(g, n, axis=axis))


def stack(tensors, axis=0):
    """Join tensors along a new axis."""
    return Stack.apply(*tensors, axis=axis)


class Split(Function):
    multiple_outputs = True

    @staticmethod
    def forward(a, bounds, axis, squeeze):
        xp = get_array_module(a)
        parts = xp.split(a, bounds, axis=axis)  # views
        if squeeze:
            parts = [part.squeeze(axis) for part in parts]
        return tuple(parts), (a.shape, bounds, axis, squeeze)

    @staticmethod
    def backward(grads, cache):
        # The pieces tile the input, so its gradient is theirs put back in place (zeros
        # for a piece that got none): one C-ordered array written once, where slicing
        # piece by piece would make a zero array of the input's size per piece and add
        # them up (and np.stack would follow the pieces' transposed layout).
        shape, bounds, axis, squeeze = cache
        g0 = next(g for g in grads if g is not None)
        xp = get_array_module(g0)
        out = xp.empty(shape, dtype=g0.dtype)
        edges = [0, *(min(b, shape[axis]) for b in bounds), shape[axis]]
        lead = (slice(None),) * (axis - 1)

        def fill(r):  # the rows r of the first axis, over the threads of autograd.parallel on the CPU
            for g, lo, hi in zip(grads, edges[:-1], edges[1:]):
                piece = lo if squeeze else slice(lo, hi)
                if axis == 0:
                    out[piece] = 0 if g is None else g
                else:
                    out[(r,) + lead + (piece,)] = 0 if g is None else g[r]

        parallel.run(fill, [slice(None)] if axis == 0 else blocks(shape[0], int(np.prod(shape[1:])), xp))
        return out


def split(a, indices_or_sections, axis=0):
    """Split into a list of tensors, like ``numpy.split``; the backward joins the pieces' gradients in one go."""
    n = a.shape[axis]
    if isinstance(indices_or_sections, int):
        if n % indices_or_sections:
            raise ValueError(f"axis of length {n} does not split into {indices_or_sections} equal parts")
        bounds = range(n // indices_or_sections, n, n // indices_or_sections)
    else:
        bounds = [int(i) for i in indices_or_sections]
        if any(i < 0 for i in bounds) or bounds != sorted(bounds):
            raise ValueError(f"split indices must be non-negative and non-decreasing, got {bounds}")
    return list(Split.apply(a, bounds=tuple(int(b) for b in bounds), axis=axis % len(a.shape), squeeze=False))


def unbind(a, axis=0):
    """The slices of ``a`` along ``axis``, that axis removed (``q, k, v = unbind(qkv, axis=2)``)."""
    axis = axis % len(a.shape)
    return Split.apply(a, bounds=tuple(range(1, a.shape[axis])), axis=axis, squeeze=True)


class GetItem(Function):
    @staticmethod
    def forward(a, index):
        return a[index], (a.shape, a.dtype, index)

    @staticmethod
    def backward(g, cache):
        # scatter-add: an element picked twice by an integer-array index gets both gradients
        shape, dtype, index = cache
        xp = get_array_module(g)
        out = xp.zeros(shape, dtype=g.dtype)
        if _is_basic_index(index):
            out[index] = g
        elif xp is np:
            np.add.at(out, index, g)
        else:
            import cupyx

            cupyx.scatter_add(out, index, g)
        return out


def getitem(a, index):
    """``a[index]``: slices, ints, None, Ellipsis and integer-array gathers."""
    if isinstance(index, Tensor):
        index = index.data
    elif isinstance(index, tuple):
        index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
    elif isinstance(index, list):
        index = np.asarray(index)
    return GetItem.apply(a, index=index)


def _is_basic_index(index) -> bool:
    """True when ``index`` uses only ints, slices, None and Ellipsis (so no element repeats)."""
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis for i in items)


class Pad(Function):
    @staticmethod
    def forward(a, pad_width, value=0.0):
        xp = get_array_module(a)
        out = xp.pad(a, pad_width, mode="constant", constant_values=value)
        return out, (a.shape, pad_width)

    @staticmethod
    def backward(g, cache):
        # the padding was constant; only the original window carries gradient
        shape, pad_width = cache
        window = tuple(slice(before, before + n) for (before, _), n in zip(pad_width, shape))
        return g[window]


def pad(a, pad_width, value=0.0):
    """Constant padding; ``pad_width`` is ((before, after), ...) per axis, as in ``numpy.pad``."""
    ndim = len(a.shape)
    if isinstance(pad_width, int):
        pad_width = ((pad_width, pad_width),) * ndim
    pad_width = tuple((int(lo), int(hi)) for lo, hi in pad_width)
    return Pad.apply(a, pad_width=pad_width, value=value)
