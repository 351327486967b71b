"""Helpers shared by the ops: broadcasting's backward, axes, and cache-sized blocks."""
from __future__ import annotations

import numpy as np

# Elements per block of ``blocks``: a block and the few temporaries an op makes of it
# stay in the CPU's L2 cache, so the dozen elementwise passes of a fused op over a block
# cost little more than one pass over main memory. (NumPy runs each pass as its own loop;
# a GPU kernel fuses them anyway, so on CuPy there is one block.)
BLOCK = 1 << 15


def unbroadcast(grad, shape):
    """Sum ``grad`` down to ``shape``: the backward of NumPy broadcasting.

    Broadcasting prepends axes and stretches size-1 axes; each stretched copy of an
    input element received its own share of the gradient, so the shares are summed.
    """
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


def normalize_axes(axis, ndim):
    """``axis`` (None, int or tuple, negatives allowed) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        axis = (axis,)
    return tuple(sorted(a % ndim for a in axis))


def expand_reduced(grad, in_shape, axes, keepdims):
    """Give a reduction's gradient back the reduced axes (size 1) so it broadcasts to the input."""
    if not keepdims:
        for a in axes:
            grad = grad.reshape(grad.shape[:a] + (1,) + grad.shape[a:])
    return grad


def blocks(n, item_size, xp):
    """Slices covering ``range(n)``, each about ``BLOCK`` elements of ``item_size`` (one slice on a GPU)."""
    if xp is not np:
        return [slice(None)]
    step = max(1, BLOCK // max(item_size, 1))
    return [slice(i, i + step) for i in range(0, n, step)]
