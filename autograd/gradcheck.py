"""Finite-difference gradient checking, the test every op in this library must pass.

``gradcheck(fn, inputs)`` compares the gradient the engine computes for
``sum(fn(*inputs) * w)`` (``w`` a fixed random weighting, so every output element
matters and none cancel) with central differences

    (f(x + eps e_i) - f(x - eps e_i)) / (2 eps)

for every element ``i`` of every input that requires grad. It runs in float64, where
the truncation error is O(eps^2) and the rounding error O(1e-16 / eps), both far below
the tolerance at ``eps = 1e-6``. On a mismatch the report names the input and the
element that is off by the most, with both values.
"""
from __future__ import annotations

import numpy as np

from . import backend
from .engine import no_grad
from .tensor import Tensor


class GradcheckError(AssertionError):
    """Raised when an analytic gradient disagrees with finite differences."""


def _as_float64_leaf(x):
    """A float64 copy of an input; floating inputs require grad unless they say otherwise."""
    if isinstance(x, Tensor):
        flag = x.requires_grad or x.is_leaf and x.dtype.kind == "f"
        data = x.data
    else:
        data = np.asarray(x) if not backend.is_gpu_array(x) else x
        flag = data.dtype.kind == "f"
    if data.dtype.kind == "f":
        data = data.astype(np.float64)
    return Tensor(data.copy(), requires_grad=flag and data.dtype.kind == "f")


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, seed=0, check=None, raise_exception=True):
    """Check ``fn``'s gradients against central finite differences in float64.

    ``fn`` takes the inputs as Tensors and returns a Tensor. ``inputs`` may be
    Tensors or arrays; floating ones are checked unless ``check`` (a list of input
    positions) says which. Returns True, or raises ``GradcheckError`` (returns False
    when ``raise_exception`` is False) naming the worst element.
    """
    leaves = [_as_float64_leaf(x) for x in inputs]
    if check is not None:
        for i, t in enumerate(leaves):
            t.requires_grad = i in check and t.dtype.kind == "f"
    checked = [i for i, t in enumerate(leaves) if t.requires_grad]
    if not checked:
        raise ValueError("gradcheck: no floating input to check")

    out = fn(*leaves)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    xp = out.xp
    weights = xp.asarray(np.random.default_rng(seed).standard_normal(out.shape))

    if not out.requires_grad:
        raise GradcheckError("gradcheck: the output does not depend on any checked input")
    (out * Tensor(weights)).sum().backward()
    analytic = {i: leaves[i].grad if leaves[i].grad is not None else xp.zeros_like(leaves[i].data) for i in checked}

    def objective():
        with no_grad():
            return float((fn(*leaves).data * weights).sum())

    worst = None  # (score, input, index, analytic, numeric)
    for i in checked:
        data = leaves[i].data
        flat = data.reshape(-1)  # a view: writing into it perturbs the input
        numeric = np.empty(flat.size)
        for k in range(flat.size):
            orig = float(flat[k])
            flat[k] = orig + eps
            f_plus = objective()
            flat[k] = orig - eps
            f_minus = objective()
            flat[k] = orig
            numeric[k] = (f_plus - f_minus) / (2 * eps)
        exact = backend.to_numpy(analytic[i]).reshape(-1)
        excess = np.abs(exact - numeric) - (atol + rtol * np.abs(numeric))
        k = int(np.argmax(excess)) if excess.size else 0
        if excess.size and excess[k] > 0 and (worst is None or excess[k] > worst[0]):
            worst = (excess[k], i, np.unravel_index(k, data.shape), exact[k], numeric[k])

    if worst is None:
        return True
    _, i, index, a, n = worst
    message = (
        f"gradcheck failed for input {i} (shape {leaves[i].shape}) at index {tuple(int(j) for j in index)}: "
        f"analytic {a:.8g} vs numeric {n:.8g} (abs error {abs(a - n):.3g}, atol {atol}, rtol {rtol})"
    )
    if raise_exception:
        raise GradcheckError(message)
    return False
