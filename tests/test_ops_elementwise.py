"""Elementwise ops (autograd/ops/elementwise.py): their gradients, forwards and inputs are checked
for every op by the op table (test_op_table.py); here, the subgradients at kinks and ties, and the
arguments they refuse."""
import numpy as np
import pytest

from autograd import Tensor, ops


def test_maximum_tie_sends_the_gradient_to_a():
    a, b = Tensor(np.array([1.0, 2.0]), requires_grad=True), Tensor(np.array([1.0, 3.0]), requires_grad=True)
    ops.maximum(a, b).sum().backward()
    np.testing.assert_array_equal(a.grad, [1.0, 0.0])
    np.testing.assert_array_equal(b.grad, [0.0, 1.0])


def test_relu_gradient_at_zero_is_zero():
    a = Tensor(np.array([-1.0, 0.0, 2.0]), requires_grad=True)
    ops.relu(a).sum().backward()
    np.testing.assert_array_equal(a.grad, [0.0, 0.0, 1.0])


def test_where_gives_the_condition_no_gradient_and_broadcasts():
    cond = Tensor(np.array([True, False, True]))
    a, b = Tensor(np.ones((2, 3)), requires_grad=True), Tensor(np.array(5.0), requires_grad=True)
    ops.where(cond, a, b).sum().backward()
    np.testing.assert_array_equal(a.grad, [[1.0, 0.0, 1.0]] * 2)
    assert b.grad == 2.0 and cond.grad is None


def test_pow_takes_only_a_number_as_exponent():
    with pytest.raises(TypeError, match="constant number"):
        ops.pow(Tensor(np.ones(2)), Tensor(np.ones(2)))
