"""The engine: accumulation, shared parameters, diamonds, no_grad, freed graphs, deep chains, dtypes, devices."""
import numpy as np
import pytest

import autograd
from autograd import GradcheckError, GraphFreedError, Tensor, gradcheck, no_grad, ops
from autograd.backend import DeviceError, parse_device
from autograd.engine import Function

from devices import HAS_GPU


def leaf(values):
    return Tensor(np.asarray(values, dtype=np.float64), requires_grad=True)


def test_tensor_used_twice_gets_both_contributions():
    x = leaf([3.0])
    (x * x).sum().backward()  # d(x^2)/dx = 2x
    assert x.grad[0] == 6.0


def test_shared_parameter_between_two_layers():
    w = leaf([[2.0]])
    x = Tensor(np.array([[5.0]]))
    y = ops.matmul(ops.matmul(x, w), w)  # x w^2
    y.sum().backward()
    assert w.grad[0, 0] == pytest.approx(2 * 5.0 * 2.0)


def test_diamond_graph():
    x = leaf([1.5])
    a = x * 2.0
    b = x.exp()
    c = a * b  # 2x e^x
    c.sum().backward()
    assert x.grad[0] == pytest.approx(2 * np.exp(1.5) + 2 * 1.5 * np.exp(1.5))


def test_gradients_accumulate_across_backward_calls():
    x = leaf([1.0, 2.0])
    (x * 3.0).sum().backward()
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [6.0, 6.0])
    x.zero_grad()
    assert x.grad is None


def test_no_grad_records_nothing():
    x = leaf([1.0])
    with no_grad():
        y = x * 2.0
    assert not y.requires_grad and y.is_leaf
    assert autograd.is_grad_enabled()


def test_no_grad_as_decorator():
    @no_grad()
    def f(t):
        return t * 2.0

    assert not f(leaf([1.0])).requires_grad


def test_detach_cuts_the_graph():
    x = leaf([2.0])
    y = x.detach() * x  # only the second factor carries gradient
    y.sum().backward()
    assert x.grad[0] == 2.0


def test_backward_twice_through_freed_graph_is_an_error():
    x = leaf([1.0, 2.0])
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(GraphFreedError, match="retain_graph"):
        loss.backward()


def test_retain_graph_allows_a_second_pass():
    x = leaf([1.0])
    loss = (x * x).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    assert x.grad[0] == 4.0


def test_graph_is_freed_after_backward():
    x = leaf(np.ones(4))
    y = x * 2.0
    loss = (y * y).sum()
    loss.backward()
    assert loss._node.cache is None and y._node.cache is None


def test_non_scalar_backward_needs_a_gradient():
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="explicit gradient"):
        (x * 2.0).backward()
    (x * 2.0).backward(np.array([1.0, 10.0]))
    np.testing.assert_array_equal(x.grad, [2.0, 20.0])


def test_backward_on_constant_is_an_error():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(2)).sum().backward()


def test_deep_chain_of_ten_thousand_ops():
    x = leaf([1.0])
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    y.sum().backward()
    assert x.grad[0] == pytest.approx(1.0001**10_000)


def test_dtype_policy():
    assert Tensor([1.0, 2.0]).dtype == np.float32
    assert Tensor(np.zeros(2)).dtype == np.float64  # an array keeps its dtype
    assert Tensor([1, 2]).dtype.kind == "i"
    assert (Tensor([1.0]) * 2.5).dtype == np.float32
    with autograd.default_dtype_as(np.float64):
        assert Tensor([1.0]).dtype == np.float64
    assert Tensor([1.0]).dtype == np.float32


def test_integer_tensors_carry_no_gradient():
    with pytest.raises(TypeError, match="floating"):
        Tensor(np.arange(3), requires_grad=True)
    x = leaf(np.arange(6.0).reshape(2, 3))
    idx = Tensor(np.array([1, 1, 0]))
    x[idx].sum().backward()  # the index tensor takes no part in the gradient
    np.testing.assert_array_equal(x.grad, [[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]])  # row 1 picked twice


def test_float32_gradients_stay_float32():
    x = Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    w = Tensor(np.ones((3, 4), np.float32), requires_grad=True)
    (ops.matmul(x, w).tanh() * 0.5).sum().backward()
    assert x.grad.dtype == np.float32 and w.grad.dtype == np.float32


def test_cast_is_differentiable():
    x = Tensor(np.array([1.5], np.float32), requires_grad=True)
    y = x.astype(np.float64)
    assert y.dtype == np.float64 and x.to(dtype=np.float16).dtype == np.float16
    assert x.to() is x and x.to("cpu", np.float32) is x  # nothing to change: the tensor itself
    (y * 2.0).sum().backward()
    assert x.grad.dtype == np.float32 and x.grad[0] == 2.0


def test_device_parsing():
    assert parse_device("cpu") == ("cpu", 0)
    assert parse_device("gpu") == ("gpu", 0)
    assert parse_device("cuda:1") == ("gpu", 1)
    with pytest.raises(DeviceError, match="unknown device"):
        parse_device("tpu")


@pytest.mark.skipif(HAS_GPU, reason="checks the error raised when no GPU is usable")
def test_asking_for_a_gpu_without_one_is_a_clear_error():
    with pytest.raises(DeviceError, match="(CuPy is not installed|no CUDA GPU)"):
        Tensor([1.0], device="gpu")
    with pytest.raises(DeviceError, match="(CuPy is not installed|no CUDA GPU)"):
        Tensor([1.0]).to("gpu")


def test_wrong_backward_shape_is_caught():
    class Broken(Function):
        @staticmethod
        def forward(a):
            return a * 2, a.shape

        @staticmethod
        def backward(g, shape):
            return g.sum()

    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="shape"):
        Broken.apply(x).sum().backward()


def test_multi_output_backward_runs_once_and_frees_its_graph():
    calls = []

    class Halves(Function):
        multiple_outputs = True

        @staticmethod
        def forward(a):
            return (a[:2] * 1.0, a[2:] * 1.0), None

        @staticmethod
        def backward(grads, cache):
            calls.append(grads)
            lo, hi = (np.zeros(2) if g is None else g for g in grads)
            return np.concatenate([lo, hi])

    x = Tensor(np.arange(4.0), requires_grad=True)
    lo, hi = Halves.apply(x)
    loss = (lo * 2.0).sum() + (lo * 3.0).sum()  # lo reaches the loss twice, hi not at all
    loss.backward(retain_graph=True)
    assert len(calls) == 1 and calls[0][1] is None
    np.testing.assert_array_equal(x.grad, [5, 5, 0, 0])
    loss.backward()
    np.testing.assert_array_equal(x.grad, [10, 10, 0, 0])
    with pytest.raises(GraphFreedError):
        loss.backward()
    with no_grad():
        lo, hi = Halves.apply(x)
    assert lo._node is None and not hi.requires_grad


def test_only_ops_that_ask_are_told_which_inputs_need_gradients():
    seen = []

    class Probe(Function):
        takes_needs_input_grad = True

        @staticmethod
        def forward(a, b, needs_input_grad):
            seen.append(needs_input_grad)
            return a + b, None

        @staticmethod
        def backward(g, cache):
            return g, g

    w = Tensor(np.ones(2), requires_grad=True)
    Probe.apply(w, np.ones(2))
    Probe.apply(np.ones(2), np.ones(2))
    with no_grad():
        Probe.apply(w, w)
    assert seen == [(True, False), (False, False), (False, False)]


def test_gradcheck_catches_a_sabotaged_backward():
    class WrongSquare(Function):
        @staticmethod
        def forward(a):
            return a * a, a

        @staticmethod
        def backward(g, a):
            return g * a  # should be 2 a

    with pytest.raises(GradcheckError, match=r"input 0 .* at index"):
        gradcheck(lambda a: WrongSquare.apply(a), [np.array([0.5, -1.0, 2.0])])
    assert not gradcheck(lambda a: WrongSquare.apply(a), [np.array([1.0])], raise_exception=False)


def test_gradcheck_reports_the_worst_element():
    class OffAtOne(Function):
        @staticmethod
        def forward(a):
            return a * 1.0, None

        @staticmethod
        def backward(g, cache):
            out = g.copy()
            out[2] += 1.0  # only element 2 is wrong
            return out

    with pytest.raises(GradcheckError, match=r"at index \(2,\)"):
        gradcheck(lambda a: OffAtOne.apply(a), [np.zeros(4)])


def test_gradcheck_passes_a_correct_op():
    assert gradcheck(lambda a, b: (a * b).exp(), [np.array([0.3, -0.2]), np.array([1.0, 2.0])])


def test_leaves_never_share_a_gradient_array():
    a, b = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    (a + b).sum().backward()  # Add hands the same upstream array to both inputs
    a.grad *= 10.0
    np.testing.assert_array_equal(b.grad, [1.0, 1.0])


def test_views_of_one_tensor_accumulate_into_it():
    # x reaches the loss through itself, a slice, a transpose and a reshape: four contributions
    x = leaf(np.arange(6.0).reshape(2, 3))
    loss = (x * 2.0).sum() + (x[0] * x[0]).sum() + (x.T * 3.0).sum() + x.reshape(6)[4] * 5.0
    loss.backward()
    want = np.full((2, 3), 2.0 + 3.0)
    want[0] += 2 * np.arange(3.0)
    want[1, 1] += 5.0
    np.testing.assert_array_equal(x.grad, want)


def test_backward_leaves_the_callers_gradient_alone():
    # Add and reshape pass the upstream gradient through, yet the leaf's grad is its own array
    x = leaf([[1.0, 2.0], [3.0, 4.0]])
    g = np.array([[1.0, -1.0], [0.5, 2.0]])
    kept = g.copy()
    (x + 1.0).reshape(2, 2).backward(g)
    x.grad *= 7.0  # what gradient clipping or an optimizer may do in place
    np.testing.assert_array_equal(g, kept)
    np.testing.assert_array_equal(x.grad, 7.0 * kept)


def test_a_second_backward_does_not_change_an_earlier_gradient():
    x = leaf([1.0, 2.0])
    (x * 3.0).sum().backward()
    first = x.grad
    (x * 3.0).sum().backward()
    np.testing.assert_array_equal(first, [3.0, 3.0])
    np.testing.assert_array_equal(x.grad, [6.0, 6.0])


def test_tensor_takes_a_dtype_and_holds_no_other_attributes():
    assert Tensor(np.ones(2), dtype=np.float32).dtype == np.float32
    assert autograd.tensor([1, 2], dtype=np.float64).dtype == np.float64
    t = Tensor(np.ones(2))
    with pytest.raises(AttributeError):  # __slots__: a graph of many tensors carries no per-tensor dict
        t.label = "x"
