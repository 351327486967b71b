"""Reductions over any axes, with keepdims. The backward spreads the gradient back over the reduced axes."""
from __future__ import annotations

from ..backend import get_array_module
from ..engine import Function
from .util import expand_reduced, normalize_axes


class Sum(Function):
    @staticmethod
    def forward(a, axis=None, keepdims=False):
        axes = normalize_axes(axis, a.ndim)
        return a.sum(axis=axes, keepdims=keepdims), (a.shape, axes, keepdims)

    @staticmethod
    def backward(g, cache):
        # every summed element contributed with weight 1
        shape, axes, keepdims = cache
        xp = get_array_module(g)
        return xp.broadcast_to(expand_reduced(g, shape, axes, keepdims), shape).copy()


def sum(a, axis=None, keepdims=False):
    """Sum over ``axis`` (None: all axes; int or tuple)."""
    return Sum.apply(a, axis=axis, keepdims=keepdims)


class Mean(Function):
    @staticmethod
    def forward(a, axis=None, keepdims=False):
        axes = normalize_axes(axis, a.ndim)
        return a.mean(axis=axes, keepdims=keepdims), (a.shape, axes, keepdims)

    @staticmethod
    def backward(g, cache):
        # each of the n averaged elements has weight 1/n
        shape, axes, keepdims = cache
        n = 1
        for ax in axes:
            n *= shape[ax]
        xp = get_array_module(g)
        return xp.broadcast_to(expand_reduced(g, shape, axes, keepdims) / n, shape).copy()


def mean(a, axis=None, keepdims=False):
    """Mean over ``axis``."""
    return Mean.apply(a, axis=axis, keepdims=keepdims)


class Max(Function):
    @staticmethod
    def forward(a, axis=None, keepdims=False):
        axes = normalize_axes(axis, a.ndim)
        out = a.max(axis=axes, keepdims=True)
        is_max = a == out
        return (out if keepdims else out.squeeze(axis=axes)), (is_max, axes, keepdims)

    @staticmethod
    def backward(g, cache):
        # the gradient goes to the maximum; ties split it evenly (a valid subgradient)
        is_max, axes, keepdims = cache
        share = is_max / is_max.sum(axis=axes, keepdims=True)
        return expand_reduced(g, is_max.shape, axes, keepdims) * share.astype(g.dtype)


def max(a, axis=None, keepdims=False):
    """Maximum over ``axis``; tied maxima share the gradient equally."""
    return Max.apply(a, axis=axis, keepdims=keepdims)


class Var(Function):
    @staticmethod
    def forward(a, axis=None, keepdims=False, ddof=0):
        axes = normalize_axes(axis, a.ndim)
        n = 1
        for ax in axes:
            n *= a.shape[ax]
        centred = a - a.mean(axis=axes, keepdims=True)
        out = (centred * centred).sum(axis=axes, keepdims=keepdims) / (n - ddof)
        return out, (centred, axes, keepdims, n - ddof)

    @staticmethod
    def backward(g, cache):
        # var = sum((a - mean)^2) / (n - ddof); the mean's own dependence on a drops out
        # because sum(a - mean) = 0, leaving 2 (a - mean) / (n - ddof)
        centred, axes, keepdims, denom = cache
        return expand_reduced(g, centred.shape, axes, keepdims) * (2 / denom) * centred


def var(a, axis=None, keepdims=False, ddof=0):
    """Variance over ``axis`` (population variance unless ``ddof``)."""
    return Var.apply(a, axis=axis, keepdims=keepdims, ddof=ddof)
