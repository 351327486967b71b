"""Helpers shared by the ops' backward passes."""
from __future__ import annotations


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
