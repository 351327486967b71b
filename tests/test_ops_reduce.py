"""Reductions (autograd/ops/reduce.py): forwards and gradients over drawn axes, keepdims and ddof
are checked by the op table (test_op_table.py); here, tied maxima share the gradient and the
sample variance divides by n - 1."""
import numpy as np

from autograd import Tensor, gradcheck, ops
from checking import check_forward


def test_max_ties_share_the_gradient():
    a = Tensor(np.array([1.0, 3.0, 3.0]), requires_grad=True)
    ops.max(a).backward()
    np.testing.assert_array_equal(a.grad, [0.0, 0.5, 0.5])


def test_var_with_ddof():
    a = np.random.default_rng(0).normal(size=(3, 5))
    check_forward(lambda x: ops.var(x, axis=1, ddof=1), lambda x: np.var(x, axis=1, ddof=1), a)
    gradcheck(lambda x: ops.var(x, axis=1, ddof=1), [a])
