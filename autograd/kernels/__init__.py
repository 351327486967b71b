"""Fused CUDA kernels beside their NumPy twins, each proving itself against its twin at first use.

``get(name, dtype)`` is the whole interface for an op: the fused callable (same
signature as the twin) when CuPy is in use and the kernel's self-check passed, else
None, so the caller keeps its own CuPy/NumPy path. The registry is in registry.py; one
module per kernel family holds its CUDA source, launchers, twins and self-check inputs.
A library on top of autograd adds kernels of its own domain with ``register(Kernel(...))``
(its twin its own code); they get the same gating, self-check and switch.
"""
from . import cross_entropy, dropout, epilogue, gelu, layer_norm, optim, softmax  # noqa: F401  (they register)
from .registry import (KERNELS, TOLERANCES, Kernel, Source, Verdict, check, disable, enable, get,  # noqa: F401
                       register, reset)
