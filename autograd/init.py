"""Parameter initialisers, in place, like ``torch.nn.init``.

Each takes a Tensor (usually a Parameter), overwrites its data and returns it. Values
are drawn from ``generator`` when given, else from the global generator of the
tensor's device (``backend.global_generator``), so a seeded run initialises the same
model every time. Draws are made in float64 and cast once to the tensor's dtype.

Fans follow PyTorch: for a weight of shape ``(out, in, *kernel)`` fan_in is
``in * prod(kernel)`` and fan_out is ``out * prod(kernel)``.
"""
from __future__ import annotations

import math

from . import backend

# The standard deviation of a standard normal truncated to [-2, 2]; dividing by it makes
# a truncated draw have the variance asked for (JAX's variance_scaling "truncated_normal").
_TRUNC2_STD = 0.87962566103423978


def _generator(t, generator):
    return backend.global_generator(t.device) if generator is None else generator


def _fill(t, values):
    """Copy ``values`` into ``t.data`` in place, on t's device and in t's dtype."""
    t.data[...] = backend.to_device(values, t.device)
    return t


def fans(shape) -> tuple[int, int]:
    """(fan_in, fan_out) of a weight of shape ``(out, in, *kernel)``, as PyTorch computes them."""
    if len(shape) < 2:
        raise ValueError(f"fans need a weight with at least 2 dimensions, not shape {tuple(shape)}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def zeros_(t):
    """Fill with 0."""
    t.data[...] = 0
    return t


def ones_(t):
    """Fill with 1."""
    t.data[...] = 1
    return t


def constant_(t, value):
    """Fill with ``value``."""
    t.data[...] = value
    return t


def uniform_(t, a=0.0, b=1.0, generator=None):
    """Fill with draws from U(a, b)."""
    u = _generator(t, generator).random(t.shape)
    return _fill(t, a + (b - a) * u)


def normal_(t, mean=0.0, std=1.0, generator=None):
    """Fill with draws from N(mean, std^2)."""
    z = _generator(t, generator).standard_normal(t.shape)
    return _fill(t, mean + std * z)


def trunc_normal_(t, std=1.0, mean=0.0, a=-2.0, b=2.0, generator=None):
    """Fill with N(mean, std^2) conditioned on [a, b] (absolute bounds, as torch's), by exact rejection."""
    lo, hi = (a - mean) / std, (b - mean) / std
    if not lo < hi:
        raise ValueError(f"trunc_normal_: need a < b, got a={a}, b={b}")
    mass = 0.5 * (math.erf(hi / math.sqrt(2)) - math.erf(lo / math.sqrt(2)))
    if mass < 1e-4:
        raise ValueError(
            f"trunc_normal_: [{a}, {b}] holds only {mass:.2g} of N({mean}, {std}^2); rejection would not finish"
        )
    if t.size == 0:
        return t
    g = _generator(t, generator)
    chunks, need = [], t.size
    while need > 0:
        # Draw enough that one round almost always suffices; each accepted draw is an
        # exact sample of the truncated law, so the loop only tops up the rare shortfall.
        z = g.standard_normal(int(need / mass * 1.1) + 16)
        z = z[(z >= lo) & (z <= hi)][:need]
        chunks.append(z)
        need -= z.size
    xp = backend.get_array_module(chunks[0])
    z = xp.concatenate(chunks).reshape(t.shape)
    return _fill(t, mean + std * z)


def xavier_uniform_(t, gain=1.0, generator=None):
    """Fill with U(-s, s), s = gain * sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010)."""
    fan_in, fan_out = fans(t.shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -bound, bound, generator)


def kaiming_uniform_(t, a=0.0, mode="fan_in", generator=None):
    """Fill with U(-s, s), s = sqrt(6 / ((1 + a^2) fan)): He et al. 2015 for a leaky ReLU of slope ``a``."""
    fan_in, fan_out = fans(t.shape)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"kaiming_uniform_: mode must be 'fan_in' or 'fan_out', not {mode!r}")
    fan = fan_in if mode == "fan_in" else fan_out
    bound = math.sqrt(6.0 / ((1.0 + a * a) * fan))
    return uniform_(t, -bound, bound, generator)


def lecun_uniform_(t, generator=None):
    """Fill with U(-s, s), s = sqrt(3 / fan_in), variance 1 / fan_in (JAX's lecun_uniform)."""
    bound = math.sqrt(3.0 / fans(t.shape)[0])
    return uniform_(t, -bound, bound, generator)


def lecun_normal_(t, generator=None):
    """Fill with a normal truncated at 2 std whose variance is 1 / fan_in (JAX's lecun_normal)."""
    std = math.sqrt(1.0 / fans(t.shape)[0]) / _TRUNC2_STD
    return trunc_normal_(t, std=std, a=-2.0 * std, b=2.0 * std, generator=generator)
