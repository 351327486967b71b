"""Layers, like ``torch.nn``: each holds its parameters and calls a fused op of ``autograd.ops``.

Every derivative lives in the ops; the Module machinery the layers build on (Parameter,
Module, ModuleList, Sequential, state dicts) is in ``module.py`` and importable from here.
"""
from __future__ import annotations

import math

import numpy as np

from . import backend, init, ops
from .module import (  # noqa: F401
    Identity, LoadResult, Module, ModuleList, Parameter, Sequential, StateDictError,
)
from .ops.util import check_probability, pair


def _empty(shape) -> Parameter:
    """A zero Parameter on the CPU in the default float dtype, for an initialiser to fill."""
    return Parameter(np.zeros(shape, dtype=backend.default_dtype()))


class Linear(Module):
    """y = x W^T + b with W of shape (out_features, in_features), as in PyTorch."""

    def __init__(self, in_features, out_features, bias=True, generator=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = _empty((out_features, in_features))
        self.bias = _empty((out_features,)) if bias else None
        self.reset_parameters(generator)

    def reset_parameters(self, generator=None):
        """PyTorch's default: weight and bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
        # torch writes this as kaiming_uniform_(a=sqrt(5)): sqrt(6 / ((1 + 5) fan_in)) = 1/sqrt(fan_in)
        bound = 1.0 / math.sqrt(self.in_features)
        init.uniform_(self.weight, -bound, bound, generator)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound, generator)

    def forward(self, x):
        return ops.linear(x, self.weight, self.bias)  # (..., in) -> (..., out)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Conv2d(Module):
    """2-D convolution of (B, C_in, H, W) images with a (C_out, C_in, kh, kw) kernel."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True, generator=None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride, self.padding = pair(stride, "stride"), pair(padding, "padding")
        self.weight = _empty((out_channels, in_channels) + self.kernel_size)
        self.bias = _empty((out_channels,)) if bias else None
        self.reset_parameters(generator)

    def reset_parameters(self, generator=None):
        """PyTorch's default: weight and bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = C_in kh kw."""
        bound = 1.0 / math.sqrt(init.fans(self.weight.shape)[0])
        init.uniform_(self.weight, -bound, bound, generator)
        if self.bias is not None:
            init.uniform_(self.bias, -bound, bound, generator)

    def forward(self, x):
        return ops.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self):
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, bias={self.bias is not None}"
        )


class LayerNorm(Module):
    """Normalise over the last axis, then scale and shift (eps 1e-6 as timm's ViT)."""

    def __init__(self, dim, eps=1e-6, elementwise_affine=True):
        super().__init__()
        self.dim, self.eps, self.elementwise_affine = dim, eps, elementwise_affine
        self.weight = init.ones_(_empty((dim,))) if elementwise_affine else None
        self.bias = _empty((dim,)) if elementwise_affine else None

    def forward(self, x):
        return ops.layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"({self.dim},), eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class GroupNorm(Module):
    """Normalise (B, C, ...) over each group of C / num_groups channels and the spatial axes."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: {num_channels} channels do not split into {num_groups} groups")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        self.weight = init.ones_(_empty((num_channels,))) if affine else None
        self.bias = _empty((num_channels,)) if affine else None

    def forward(self, x):
        return ops.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"


class _RandomDrop(Module):
    """The body Dropout and DropPath share: a drop probability, a generator and the op to call while training.

    Draws from ``generator`` when one is set, else from the global generator of the
    input's device, so ``backend.manual_seed`` makes a run repeatable.
    """

    op = None  # the functional op, ops.dropout or ops.drop_path

    def __init__(self, p, generator=None):
        super().__init__()
        self.p, self.generator = check_probability(p), generator

    def forward(self, x):
        return self.op(x, self.p, training=self.training, generator=self.generator)

    def extra_repr(self):
        return f"p={self.p}"


class Dropout(_RandomDrop):
    """Zero each element with probability p while training and scale the rest by 1/(1-p)."""

    op = staticmethod(ops.dropout)

    def __init__(self, p=0.5, generator=None):
        super().__init__(p, generator)


class DropPath(_RandomDrop):
    """Stochastic depth: drop a residual branch for a whole sample with probability p while training."""

    op = staticmethod(ops.drop_path)

    def __init__(self, p=0.0, generator=None):
        super().__init__(p, generator)


class GELU(Module):
    """x Phi(x), exact (``approximate="none"``) or with the tanh approximation (``"tanh"``)."""

    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = approximate

    def forward(self, x):
        return ops.gelu(x, approximate=self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Tanh(Module):
    """Hyperbolic tangent."""

    def forward(self, x):
        return ops.tanh(x)


class ReLU(Module):
    """max(x, 0)."""

    def forward(self, x):
        return ops.relu(x)
