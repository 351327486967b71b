"""Elementwise ops. Binary ops broadcast; their backward sums the gradient back to each input's shape."""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module
from ..engine import Function
from .util import blockwise, unbroadcast


class Add(Function):
    @staticmethod
    def forward(a, b):
        return blockwise(np.add, a, b), (a.shape, b.shape)

    @staticmethod
    def backward(g, cache):
        # d(a+b)/da = d(a+b)/db = 1
        sa, sb = cache
        return unbroadcast(g, sa), unbroadcast(g, sb)


def add(a, b):
    """a + b with broadcasting."""
    return Add.apply(a, b)


class Sub(Function):
    @staticmethod
    def forward(a, b):
        return a - b, (a.shape, b.shape)

    @staticmethod
    def backward(g, cache):
        sa, sb = cache
        return unbroadcast(g, sa), unbroadcast(-g, sb)


def sub(a, b):
    """a - b with broadcasting."""
    return Sub.apply(a, b)


class Mul(Function):
    @staticmethod
    def forward(a, b):
        return a * b, (a, b)

    @staticmethod
    def backward(g, cache):
        # d(ab)/da = b, d(ab)/db = a
        a, b = cache
        return unbroadcast(g * b, a.shape), unbroadcast(g * a, b.shape)


def mul(a, b):
    """a * b with broadcasting."""
    return Mul.apply(a, b)


class Div(Function):
    @staticmethod
    def forward(a, b):
        return a / b, (a, b)

    @staticmethod
    def backward(g, cache):
        # d(a/b)/da = 1/b, d(a/b)/db = -a/b^2
        a, b = cache
        gb = g / b
        return unbroadcast(gb, a.shape), unbroadcast(-gb * a / b, b.shape)


def div(a, b):
    """a / b with broadcasting."""
    return Div.apply(a, b)


class Neg(Function):
    @staticmethod
    def forward(a):
        return -a, None

    @staticmethod
    def backward(g, cache):
        return -g


def neg(a):
    """-a."""
    return Neg.apply(a)


class Pow(Function):
    @staticmethod
    def forward(a, exponent):
        return a ** exponent, (a, exponent)

    @staticmethod
    def backward(g, cache):
        # d(a^p)/da = p a^(p-1); the exponent is a constant
        a, p = cache
        return g * p * a ** (p - 1)


def pow(a, exponent):
    """a ** exponent for a constant (number) exponent."""
    if not isinstance(exponent, (int, float)):
        raise TypeError("pow takes a constant number as exponent; use exp(b * log(a)) for a tensor")
    return Pow.apply(a, exponent=exponent)


class Exp(Function):
    @staticmethod
    def forward(a):
        out = get_array_module(a).exp(a)
        return out, out

    @staticmethod
    def backward(g, out):
        # d(e^a)/da = e^a, which forward already computed
        return g * out


def exp(a):
    """e ** a."""
    return Exp.apply(a)


class Log(Function):
    @staticmethod
    def forward(a):
        return get_array_module(a).log(a), a

    @staticmethod
    def backward(g, a):
        return g / a


def log(a):
    """Natural logarithm."""
    return Log.apply(a)


class Sqrt(Function):
    @staticmethod
    def forward(a):
        out = get_array_module(a).sqrt(a)
        return out, out

    @staticmethod
    def backward(g, out):
        # d(sqrt a)/da = 1 / (2 sqrt a)
        return g / (2 * out)


def sqrt(a):
    """Square root."""
    return Sqrt.apply(a)


class Tanh(Function):
    @staticmethod
    def forward(a):
        out = get_array_module(a).tanh(a)
        return out, out

    @staticmethod
    def backward(g, out):
        # d(tanh a)/da = 1 - tanh(a)^2
        return g * (1 - out * out)


def tanh(a):
    """Hyperbolic tangent."""
    return Tanh.apply(a)


class Maximum(Function):
    @staticmethod
    def forward(a, b):
        xp = get_array_module(a, b)
        a_wins = a >= b  # ties send the gradient to a, as relu's subgradient 0 at 0 sends it to the 0
        return xp.where(a_wins, a, b), (a_wins, a.shape, b.shape)

    @staticmethod
    def backward(g, cache):
        a_wins, sa, sb = cache
        return unbroadcast(g * a_wins, sa), unbroadcast(g * ~a_wins, sb)


def maximum(a, b):
    """Elementwise maximum with broadcasting; a tie sends the gradient to ``a``."""
    return Maximum.apply(a, b)


class Relu(Function):
    @staticmethod
    def forward(a):
        mask = a > 0
        return a * mask, mask

    @staticmethod
    def backward(g, mask):
        return g * mask


def relu(a):
    """max(a, 0); the gradient at exactly 0 is taken as 0."""
    return Relu.apply(a)


class Where(Function):
    @staticmethod
    def forward(cond, a, b):
        xp = get_array_module(a, b)
        cond = cond.astype(bool)
        return xp.where(cond, a, b), (cond, a.shape, b.shape)

    @staticmethod
    def backward(g, cache):
        cond, sa, sb = cache
        zero = g.dtype.type(0)
        xp = get_array_module(g)
        return None, unbroadcast(xp.where(cond, g, zero), sa), unbroadcast(xp.where(cond, zero, g), sb)


def where(cond, a, b):
    """``a`` where ``cond`` holds, else ``b`` (broadcasting); ``cond`` gets no gradient."""
    return Where.apply(cond, a, b)


class Greater(Function):
    differentiable = False

    @staticmethod
    def forward(a, b):
        return a > b, None


def greater(a, b):
    """a > b as a boolean tensor (no gradient)."""
    return Greater.apply(a, b)


class AsType(Function):
    @staticmethod
    def forward(a, dtype):
        return a.astype(dtype), a.dtype

    @staticmethod
    def backward(g, dtype):
        return g.astype(dtype)


def astype(a, dtype):
    """Cast to ``dtype``; the gradient is cast back."""
    return AsType.apply(a, dtype=dtype)


class ToDevice(Function):
    @staticmethod
    def forward(a, device):
        from ..backend import array_device, to_device

        return to_device(a, device), array_device(a)

    @staticmethod
    def backward(g, device):
        from ..backend import to_device

        return to_device(g, device)


def to_device_op(a, device):
    """Move to another device; the gradient moves back."""
    return ToDevice.apply(a, device=device)
