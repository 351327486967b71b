"""Hypothesis strategies shared by the op tests: shapes, broadcastable pairs, float64 arrays."""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp


def shapes(min_dims=1, max_dims=4, min_side=1, max_side=4):
    """Array shapes, size-1 axes included."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4):
    """Tuples of shapes that broadcast together (size-1 and missing axes included)."""
    return hnp.mutually_broadcastable_shapes(
        num_shapes=num_shapes, min_dims=min_dims, max_dims=max_dims, max_side=max_side
    ).map(lambda r: r.input_shapes)


def arrays(shape, low=-2.0, high=2.0):
    """float64 arrays of ``shape`` with values in [low, high], drawn from a seed for speed."""
    return st.integers(0, 2**32 - 1).map(
        lambda seed: np.random.default_rng(seed).uniform(low, high, size=shape)
    )


def away_from(a, points, margin=0.05):
    """Move the elements of ``a`` within ``margin`` of any of ``points`` out of that band.

    Finite differences straddling a kink (relu at 0, max at a tie) measure neither side's
    slope, so checks keep inputs off those points.
    """
    a = np.array(a, dtype=np.float64)
    for p in points:
        near = np.abs(a - p) < margin
        a[near] = p + np.where(a[near] >= p, margin, -margin)
    return a


@st.composite
def windows(draw, pool=False):
    """(kernel, stride, padding, size) pairs for a sliding-window op; the padded input fits a window.

    Pools, as in PyTorch, take padding of at most half the kernel.
    """
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    padding = tuple(draw(st.integers(0, k // 2 if pool else 1)) for k in kernel)
    size = tuple(draw(st.integers(max(1, k - 2 * p), 7)) for k, p in zip(kernel, padding))
    return kernel, stride, padding, size
