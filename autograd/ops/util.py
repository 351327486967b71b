"""Helpers shared by the ops (and the layers of nn.py): broadcasting's backward, axes, argument checks, cache-sized blocks."""
from __future__ import annotations

from numbers import Integral

import numpy as np

from .. import parallel
from ..backend import get_array_module, global_generator

# Elements per block of ``blocks``: a block and the few temporaries an op makes of it
# stay in the CPU's L2 cache, so the dozen elementwise passes of a fused op over a block
# cost little more than one pass over main memory. (NumPy runs each pass as its own loop;
# a GPU kernel fuses them anyway, so on CuPy there is one block.)
BLOCK = 1 << 15
# Elements per block of an elementwise op whose blocks run over autograd.parallel's
# threads and whose numbers cannot depend on where a block ends (no sum across elements):
# each block is a few NumPy calls, each taking the GIL for its few microseconds of Python,
# so with BLOCK's blocks two threads spent their time handing the GIL back and forth
# (GELU's forward, 6.4 M elements: 32 ms at one thread and at two). Four times BLOCK
# halves that time at two threads (18 ms) and costs nothing at one.
THREAD_BLOCK = 4 * BLOCK


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


def blocks(n, item_size, xp, size=BLOCK):
    """Slices covering ``range(n)``, each about ``size`` elements of ``item_size`` (one slice on a GPU)."""
    if xp is not np:
        return [slice(None)]
    step = max(1, size // max(item_size, 1))
    return [slice(i, i + step) for i in range(0, n, step)]


def blockwise(ufunc, a, b):
    """``ufunc(a, b)`` (a NumPy ufunc such as np.add), block by block over autograd.parallel's threads where
    ``a`` and ``b`` are C-ordered NumPy arrays of one shape; else the ufunc as NumPy or CuPy broadcasts it."""
    if not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape and a.size > BLOCK
            and a.flags.c_contiguous and b.flags.c_contiguous):
        return getattr(get_array_module(a, b), ufunc.__name__)(a, b)
    out = np.empty(a.shape, dtype=np.result_type(a, b))
    fa, fb, fo = a.reshape(-1), b.reshape(-1), out.reshape(-1)
    parallel.run(lambda r: ufunc(fa[r], fb[r], out=fo[r]), blocks(fo.size, 1, np, THREAD_BLOCK))
    return out


def add_rows(out, row):
    """out += row for a C-contiguous ``(M, n)`` array and a row ``(n,)``, in row blocks over the threads on the CPU."""
    if get_array_module(out) is not np:
        out += row
        return
    parallel.run(lambda r: np.add(out[r], row, out=out[r]), blocks(len(out), out.shape[-1], np, THREAD_BLOCK))


def sum_rows(a):
    """The sum of the rows of ``(n, D)``, added one after another from the first: one order whatever the threads."""
    total = np.zeros(a.shape[1:], dtype=a.dtype)
    for row in a:
        total += row
    return total


def pair(v, name):
    """An int or a pair of ints (a kernel size, stride or padding) as a pair of non-negative ints."""
    both = (v, v) if isinstance(v, Integral) else tuple(v)
    if len(both) != 2 or any(int(p) != p or p < 0 for p in both):
        raise ValueError(f"{name} must be a non-negative int or a pair of them, not {v!r}")
    return int(both[0]), int(both[1])


def check_probability(p):
    """``p`` itself if it is a drop probability, in [0, 1]; else a ValueError."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop probability must be in [0, 1], got {p}")
    return p


def keep_mask(shape, p, generator, device):
    """A boolean mask of ``shape``, True with probability 1 - p, from ``generator`` or the global one of ``device``."""
    if generator is None:
        generator = global_generator(device)
    return generator.random(shape, dtype=np.float32) >= p
