"""Reductions (autograd/ops/reduce.py): forward against NumPy, gradient against finite differences,
over drawn axes with and without keepdims; tied maxima share the gradient."""
import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from autograd import Tensor, gradcheck, ops
from checking import check_forward
from strategies import arrays, shapes


def reduction_axes(ndim):
    """None, a single axis (negative too) or a tuple of distinct axes."""
    return st.one_of(
        st.none(),
        st.integers(-ndim, ndim - 1),
        st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple),
    )


@given(st.sampled_from(["sum", "mean", "var", "max"]), shapes(), st.booleans(), st.data())
def test_reductions(name, shape, keepdims, data):
    axis = data.draw(reduction_axes(len(shape)))
    a = data.draw(arrays(shape))
    if name == "max":  # distinct values spaced apart: no ties, none within the step
        a = np.random.default_rng(a.size).permutation(a.size).reshape(shape) * 0.1
    fn = lambda x: getattr(ops, name)(x, axis=axis, keepdims=keepdims)  # noqa: E731
    np_fn = lambda x: getattr(np, name)(x, axis=axis, keepdims=keepdims)  # noqa: E731
    check_forward(fn, np_fn, a)
    gradcheck(fn, [a])


def test_max_ties_share_the_gradient():
    a = Tensor(np.array([1.0, 3.0, 3.0]), requires_grad=True)
    ops.max(a).backward()
    np.testing.assert_array_equal(a.grad, [0.0, 0.5, 0.5])


def test_var_with_ddof():
    a = np.random.default_rng(0).normal(size=(3, 5))
    check_forward(lambda x: ops.var(x, axis=1, ddof=1), lambda x: np.var(x, axis=1, ddof=1), a)
    gradcheck(lambda x: ops.var(x, axis=1, ddof=1), [a])
