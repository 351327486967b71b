"""The checks every op test is made of, in one place.

Each op is checked three ways (tinygrad's and chainer's habit): its gradient against
finite differences in float64 (``autograd.gradcheck``, called by the tests directly);
its output and gradients against an independent reference, be it NumPy, the same
computation composed from primitive ops, or a direct loop (``check_forward``,
``assert_same``); and against PyTorch when it is installed (``assert_matches_torch``).
"""
import numpy as np
import pytest

from autograd import Tensor


TORCH_MISSING = ("PyTorch is not installed; the PyTorch cross-checks need its CPU build: "
                 "pip install torch==2.13.0 (.ci/run installs it where it can)")


def torch_or_skip():
    """The torch module, or a skip of the calling test that says how to install it."""
    return pytest.importorskip("torch", reason=TORCH_MISSING)


def check_forward(fn, np_fn, *inputs):
    """The op's forward equals NumPy's on the same inputs."""
    out = fn(*(Tensor(x) for x in inputs))
    np.testing.assert_allclose(out.data, np_fn(*inputs), rtol=1e-12, atol=1e-12)


def upstream(shape, dtype, seed=0):
    """A fixed random dLoss/dOut, so that every output element counts and none cancel."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def outputs_and_grads(fn, inputs, seed=0):
    """``fn``'s output array and the gradient of every floating input for the upstream gradient of ``seed``."""
    tensors = [Tensor(x.copy(), requires_grad=x.dtype.kind == "f") for x in inputs]
    out = fn(*tensors)
    out.backward(upstream(out.shape, out.dtype, seed))
    return out.data, [t.grad for t in tensors if t.requires_grad]


def assert_close(got, want, rtol, atol, grad_rtol=None, grad_atol=None):
    """Two (output, gradients) pairs agree, the gradients to ``grad_rtol``/``grad_atol`` when given."""
    (out_a, grads_a), (out_b, grads_b) = got, want
    np.testing.assert_allclose(out_a, out_b, rtol=rtol, atol=atol)
    assert len(grads_a) == len(grads_b)
    for ga, gb in zip(grads_a, grads_b):
        np.testing.assert_allclose(ga, gb, rtol=rtol if grad_rtol is None else grad_rtol,
                                   atol=atol if grad_atol is None else grad_atol)


def assert_same(fused, composed, inputs, rtol=1e-10, atol=1e-12):
    """Two implementations agree on the output and on the gradient of every floating input (float64)."""
    assert_close(outputs_and_grads(fused, inputs), outputs_and_grads(composed, inputs), rtol, atol)


def assert_matches_torch(fn, torch_fn, inputs, rtol, atol, grad_rtol=None, grad_atol=None):
    """``fn`` on Tensors and ``torch_fn`` on torch tensors agree on the output and every input's gradient.

    Skips the test when PyTorch is not installed.
    """
    torch = torch_or_skip()
    tensors = [torch.tensor(x, requires_grad=True) for x in inputs]
    out = torch_fn(*tensors)
    out.backward(torch.from_numpy(upstream(tuple(out.shape), inputs[0].dtype)))
    theirs = out.detach().numpy(), [t.grad.numpy() for t in tensors]
    assert_close(outputs_and_grads(fn, inputs), theirs, rtol, atol, grad_rtol, grad_atol)
