"""Mixed precision: 16-bit matrix products over float32 master weights, dynamic loss scaling, TF32.

Under ``autocast(np.float16)`` every matrix product the ops compute (linear layers,
attention's two products, convolution, ``matmul``) casts its float32 operands to float16
at its boundary (``lower``), multiplies in float16 and hands back float32 (``matmul``);
its backward multiplies in float16 too, the float32 upstream gradient cast at the same
boundary, and gives float32 gradients, which accumulate into the float32 parameters'
gradients. Everything between the products stays float32: the parameters and their flat
buffers, the optimizer's state and update, layer norm's and softmax's statistics, GELU,
the residual stream and the loss. The products are where a GPU's tensor cores pay; the
reductions, exponentials and the update are where 16 bits would lose the answer
(Micikevicius et al. 2018, "Mixed Precision Training", Sec. 3; torch.autocast's policy).

float16 ends at 65504 and its normals at 6.1e-5, and the gradients of a batch-mean loss
fall below the latter: flushed to zero, they would stop learning. ``GradScaler`` keeps
them in range (Sec. 3.2 there): the backward starts from S = 2**16 instead of 1, so every
float16 product sees S times the gradient; the float32 gradients are divided by S before
the update; a step whose gradients overflowed (inf or NaN) is skipped and S halved; after
2000 good steps in a row S doubles (torch.cuda.amp.GradScaler's rule and defaults). Its
state lives on the device and the skip is decided there, by the flag the optimizer's
update is masked with, so no step reads anything back.

bfloat16 keeps float32's 8 exponent bits (and 7 of its 23 mantissa bits), so it needs no
loss scaling. NumPy has no bfloat16; the ml_dtypes package adds it to NumPy, and CuPy 14
reads it from there ("initial support for bfloat16 via ml_dtypes.bfloat16", CuPy's v14
upgrade guide), so ``compute_dtype("bf16")`` needs ml_dtypes installed.

TF32 (``set_tf32``) is the other way to the tensor cores: cuBLAS multiplies float32
matrices with their inputs rounded to 10 mantissa bits, accumulating in float32, with no
change to any array's dtype. Off by default, as PyTorch's float32 matmuls are
(``torch.backends.cuda.matmul.allow_tf32``): a float32 run then gives the same numbers on
every GPU and the CPU.
"""
from __future__ import annotations

import numpy as np

from . import backend

# --precision's names -> the products' dtype name (None: float32 throughout)
PRECISIONS = {"fp32": None, "fp16": "float16", "bf16": "bfloat16"}


class PrecisionError(ValueError):
    """A precision this installation cannot run."""


def compute_dtype(name: str):
    """The dtype matrix products run in at precision ``name`` (``PRECISIONS``); None for fp32."""
    if PRECISIONS[name] != "bfloat16":
        return None if PRECISIONS[name] is None else np.dtype(PRECISIONS[name])
    try:
        import ml_dtypes
    except ImportError:
        raise PrecisionError(
            f"--precision {name} needs bfloat16 arrays, which NumPy and CuPy 14 get from the ml_dtypes package, "
            "not installed here: pip install ml-dtypes (npvit[gpu] brings it), or use --precision fp16"
        ) from None
    return np.dtype(ml_dtypes.bfloat16)


_compute = None  # the dtype float32 products are lowered to, None: none are


class autocast:
    """Context manager: ``with autocast(np.float16): ...`` runs float32 products in float16 (None: no change)."""

    def __init__(self, dtype):
        self.dtype = None if dtype is None else np.dtype(dtype)

    def __enter__(self):
        global _compute
        self.saved, _compute = _compute, self.dtype

    def __exit__(self, *exc):
        global _compute
        _compute = self.saved


def lowers(*arrays) -> bool:
    """Whether ``lower`` casts these arrays: inside ``autocast``, all of them float32."""
    return _compute is not None and all(a.dtype == np.float32 for a in arrays)


def lower(*arrays) -> tuple:
    """A product's operands in the dtype it runs in: cast to the ``autocast`` dtype when all are float32.

    Outside ``autocast``, and for float64 (gradient checks) or mixed operands, the very
    same arrays come back, so a float32 run is bit for bit what it was without this module.
    """
    if not lowers(*arrays):
        return arrays
    with np.errstate(over="ignore"):  # float16 overflows to inf; the loss (or the loss scale) sees it
        return tuple(a.astype(_compute) for a in arrays)


def matmul(a, b, compute, dtype):
    """``a @ b`` with both operands in ``compute`` (a forward's ``lower``-ed dtype), the result in ``dtype``.

    A backward passes the dtype its forward's cached operands have, so its products run
    at the forward's precision whatever ``autocast`` says by then. With every dtype the
    same nothing is cast: ``a @ b`` itself.
    """
    if a.dtype == b.dtype == compute == dtype:
        return a @ b
    with np.errstate(over="ignore", invalid="ignore"):  # a float16 overflow is no error: the loss scale sees it
        return _cast(_cast(a, compute) @ _cast(b, compute), dtype)


def _cast(a, dtype):
    """``a`` in ``dtype``, itself when it is already."""
    return a if a.dtype == dtype else a.astype(dtype)


class GradScaler:
    """Dynamic loss scaling (Micikevicius et al. 2018, Sec. 3.2) with torch.cuda.amp.GradScaler's rule, on the device.

    ``scale`` (float32) and ``good_steps`` (int32) are 0-d arrays on the device. A step:
    ``loss.backward(scaler.scale)``; ``unscale(gradient buffers)``; step the optimizer
    where ``ok`` (the gradients' finite flag, a device array); ``update(ok)``. Nothing is
    read back; ``state_dict`` (for a checkpoint) is the one sync.
    """

    def __init__(self, xp, init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000):
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval
        self.load_state_dict(xp, {"scale": init_scale, "good_steps": 0})

    def unscale(self, grads) -> None:
        """Divide each gradient buffer by the scale, in place: the gradients of the loss itself again.

        The scale is a power of two, so its reciprocal and each product are exact.
        """
        inverse = 1.0 / self.scale
        for g in grads:
            g *= inverse

    def update(self, ok) -> None:
        """After a step: good (``ok``) counts toward growth, doubling the scale at the interval; bad halves it.

        Written with ``where`` on the device flag, so the decision never reaches the host.
        """
        xp = backend.get_array_module(self.scale)
        good = xp.where(ok, self.good_steps + 1, 0)
        grow = good >= self.growth_interval
        factor = xp.where(ok, xp.where(grow, self.growth_factor, 1.0), self.backoff_factor)
        self.scale = (self.scale * factor).astype(np.float32)
        self.good_steps = xp.where(grow, 0, good).astype(np.int32)

    def state_dict(self) -> dict:
        """The scale and the count of good steps since it last changed, as JSON numbers (exact: the scale is 2**k)."""
        return {"scale": float(self.scale), "good_steps": int(self.good_steps)}

    def load_state_dict(self, xp, state) -> None:
        """Put ``state_dict``'s numbers on the device of ``xp`` (numpy or cupy)."""
        self.scale = xp.asarray(np.float32(state["scale"]))
        self.good_steps = xp.asarray(np.int32(state["good_steps"]))


def set_tf32(cupy, enabled: bool) -> None:
    """Let cuBLAS run float32 products in TF32 on tensor cores (``enabled``), or in full float32.

    CuPy picks a float32 product's cuBLAS compute type from its per-dtype setting; the
    ``CUPY_TF32`` environment variable only seeds that setting, at the process's first
    float32 product (which the start-up probe of backend.py already made), so the setting
    is changed directly here, where it works at any time. It covers every product of the
    model, convolutions included: they are im2col and a product (CuPy 14 has no cuDNN).
    On a GPU older than Ampere (compute capability 8.0) CuPy warns and keeps float32.
    """
    linalg = cupy._core._routines_linalg
    cupy._core.set_compute_type(np.float32, linalg.COMPUTE_TYPE_TF32 if enabled else linalg.COMPUTE_TYPE_DEFAULT)
