"""Convolution, pooling and group norm: gradients by finite differences on drawn shapes
(strides, paddings and kernels of 1-3 included), values against direct loops over output
pixels, group norm against its composition from primitive ops, PyTorch as an optional
reference, and float32 kept float32."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autograd import Tensor, gradcheck, ops
from devices import requires_gpu
from checking import assert_matches_torch, outputs_and_grads, torch_or_skip
from references import conv_reference, distinct
from strategies import arrays


# --- conv2d -------------------------------------------------------------------------------------

def test_conv2d_overlapping_windows_accumulate_in_dx():
    # a 3x3 all-ones kernel at stride 1: each input pixel's gradient counts the windows covering it
    x = Tensor(np.zeros((1, 1, 4, 4)), requires_grad=True)
    ops.conv2d(x, Tensor(np.ones((1, 1, 3, 3))), padding=1).sum().backward()
    counts = np.array([2, 3, 3, 2])
    np.testing.assert_array_equal(x.grad[0, 0], np.outer(counts, counts))


@pytest.mark.parametrize("shape, w_shape, stride, padding", [
    ((2, 3, 15, 14), (8, 3, 7, 7), 2, 3),       # the ResNet stem's first conv
    ((2, 4, 9, 9), (5, 4, 3, 3), 1, 1),
    ((3, 6, 5, 5), (4, 6, 1, 1), 1, 0),
    ((2, 4, 8, 9), (4, 4, 1, 1), 2, 0),         # a ResNet downsampling shortcut
    ((1, 2, 6, 7), (3, 2, 2, 3), (2, 1), (1, 0)),
])
def test_conv2d_matches_torch(shape, w_shape, stride, padding):
    torch = torch_or_skip()
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal(shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    assert_matches_torch(lambda x, w, b: ops.conv2d(x, w, b, stride=stride, padding=padding),
                         lambda x, w, b: torch.nn.functional.conv2d(x, w, b, stride=stride, padding=padding),
                         [x, w, b], rtol=1e-10, atol=1e-10)


def test_conv2d_keeps_float32():
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((2, 3, 8, 8), (4, 3, 3, 3), (4,)))
    out, grads = outputs_and_grads(lambda x, w, b: ops.conv2d(x, w, b, stride=2, padding=1), [x, w, b])
    assert out.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
    np.testing.assert_allclose(out, conv_reference(x.astype(np.float64), w.astype(np.float64), b, (2, 2), (1, 1)),
                               rtol=1e-5, atol=1e-5)


def test_conv2d_rejects_bad_shapes():
    x = Tensor(np.zeros((1, 3, 4, 4)))
    with pytest.raises(ValueError, match="channels"):
        ops.conv2d(x, Tensor(np.zeros((2, 4, 3, 3))))
    with pytest.raises(ValueError, match="does not fit"):
        ops.conv2d(x, Tensor(np.zeros((2, 3, 5, 5))))
    with pytest.raises(ValueError, match="bias"):
        ops.conv2d(x, Tensor(np.zeros((2, 3, 3, 3))), Tensor(np.zeros(3)))
    with pytest.raises(ValueError, match="stride"):
        ops.conv2d(x, Tensor(np.zeros((2, 3, 3, 3))), stride=0)


# --- pooling ------------------------------------------------------------------------------------

def test_max_pool2d_tie_goes_to_the_first_element():
    x = Tensor(np.zeros((1, 1, 4, 4)), requires_grad=True)
    ops.max_pool2d(x, 2).sum().backward()
    expected = np.zeros((4, 4))
    expected[::2, ::2] = 1
    np.testing.assert_array_equal(x.grad[0, 0], expected)


def test_max_pool2d_stride_defaults_to_kernel_and_winners_collect_every_window():
    x = np.arange(25.0).reshape(1, 1, 5, 5)
    assert ops.max_pool2d(Tensor(x), 2).shape == (1, 1, 2, 2)
    # overlapping 3x3 windows at stride 1 with padding 1: the largest pixel wins all 4 around it
    t = Tensor(x, requires_grad=True)
    ops.max_pool2d(t, 3, stride=1, padding=1).sum().backward()
    assert t.grad[0, 0, 4, 4] == 4 and t.grad.sum() == 25


@pytest.mark.parametrize("kernel, stride, padding", [(3, 2, 1), (2, None, 0), ((3, 2), (1, 2), (1, 1)), (3, 1, 0)])
def test_pools_match_torch(kernel, stride, padding):
    torch = torch_or_skip()
    x = distinct((2, 3, 7, 6), 0)
    x[0, 0, :2, :2] = 30.0  # a tie above every other value: both must send the gradient to the first of the tied pixels
    for ours, theirs in ((ops.max_pool2d, torch.nn.functional.max_pool2d),
                         (ops.avg_pool2d, torch.nn.functional.avg_pool2d)):
        assert_matches_torch(lambda x: ours(x, kernel, stride, padding), lambda x: theirs(x, kernel, stride, padding),
                             [x], rtol=1e-12, atol=1e-12)


def test_pools_keep_float32_and_check_arguments():
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    for pool in (ops.max_pool2d, ops.avg_pool2d):
        out, (grad,) = outputs_and_grads(lambda x: pool(x, 3, 2, 1), [x])
        assert out.dtype == np.float32 and grad.dtype == np.float32
        with pytest.raises(ValueError, match="half"):
            pool(Tensor(x), 3, 1, 2)
        with pytest.raises(ValueError, match="does not fit"):
            pool(Tensor(x), 8)


# --- group norm ---------------------------------------------------------------------------------

def group_norm_composed(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Group norm from primitive ops: statistics over (channels of a group, positions)."""
    shape = x.shape
    xg = ops.reshape(x, (shape[0], num_groups, -1))
    mean = ops.mean(xg, axis=-1, keepdims=True)
    var = ops.var(xg, axis=-1, keepdims=True)
    out = ops.reshape((xg - mean) / ops.sqrt(var + eps), shape)
    channel = (shape[1],) + (1,) * (len(shape) - 2)
    if weight is not None:
        out = out * ops.reshape(weight, channel)
    if bias is not None:
        out = out + ops.reshape(bias, channel)
    return out


@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 2),
       st.lists(st.integers(1, 3), min_size=0, max_size=2), st.booleans(), st.booleans(), st.data())
def test_group_norm_gradcheck_and_composition(batch, groups, per_group, spatial, with_weight, with_bias, data):
    c = groups * per_group
    x = data.draw(arrays((batch, c) + tuple(spatial)))
    w, b = data.draw(arrays((c,), 0.5, 2.0)), data.draw(arrays((c,)))
    inputs = [x] + [w] * with_weight + [b] * with_bias

    def call(norm):
        def fn(x, *affine):
            rest = iter(affine)
            return norm(x, groups, next(rest) if with_weight else None, next(rest) if with_bias else None)
        return fn

    gradcheck(call(ops.group_norm), inputs)
    (out_a, grads_a), (out_b, grads_b) = outputs_and_grads(call(ops.group_norm), inputs), outputs_and_grads(call(group_norm_composed), inputs)
    np.testing.assert_allclose(out_a, out_b, rtol=1e-10, atol=1e-10)
    for ga, gb in zip(grads_a, grads_b):
        np.testing.assert_allclose(ga, gb, rtol=1e-8, atol=1e-8)


def test_group_norm_extremes_are_layer_and_instance_norm():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 4, 3, 5)), rng.standard_normal(4), rng.standard_normal(4)
    channel = w[:, None, None], b[:, None, None]
    for groups, axes in ((1, (1, 2, 3)), (4, (2, 3))):  # one group: layer norm; one per channel: instance norm
        mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
        expected = (x - mean) / np.sqrt(var + 1e-5) * channel[0] + channel[1]
        out = ops.group_norm(Tensor(x), groups, Tensor(w), Tensor(b)).data
        np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)


def test_group_norm_matches_torch_and_keeps_float32():
    torch = torch_or_skip()
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(np.float32) for s in ((2, 6, 4, 5), (6,), (6,)))
    out, grads = outputs_and_grads(lambda x, w, b: ops.group_norm(x, 3, w, b), [x, w, b])
    assert out.dtype == np.float32 and all(g.dtype == np.float32 for g in grads)
    assert_matches_torch(lambda x, w, b: ops.group_norm(x, 3, w, b),
                         lambda x, w, b: torch.nn.functional.group_norm(x, 3, w, b),
                         [x, w, b], rtol=1e-5, atol=1e-5, grad_rtol=1e-4, grad_atol=1e-4)


def test_group_norm_rejects_groups_that_do_not_divide_channels():
    with pytest.raises(ValueError, match="divide"):
        ops.group_norm(Tensor(np.zeros((1, 6, 2, 2))), 4)


# --- GPU ----------------------------------------------------------------------------------------

@requires_gpu
def test_ops_on_gpu_match_cpu():
    rng = np.random.default_rng(0)
    x, w, b = rng.standard_normal((2, 3, 9, 8)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    cases = [
        (lambda x, w, b: ops.conv2d(x, w, b, stride=2, padding=1), [x, w, b]),
        (lambda x: ops.max_pool2d(x, 3, 2, 1), [distinct(x.shape, 0)]),
        (lambda x: ops.avg_pool2d(x, 3, 2, 1), [x]),
        (lambda x, w, b: ops.group_norm(x, 3, w[:3, 0, 0, 0], b[:3]), [x, w, b]),
    ]
    for fn, inputs in cases:
        cpu_out, cpu_grads = outputs_and_grads(fn, inputs)
        tensors = [Tensor(a, requires_grad=True, device="gpu") for a in inputs]
        out = fn(*tensors)
        out.backward(Tensor(np.random.default_rng(0).standard_normal(out.shape), device="gpu"))
        np.testing.assert_allclose(out.numpy(), cpu_out, rtol=1e-10, atol=1e-10)
        for t, g in zip(tensors, cpu_grads):
            np.testing.assert_allclose(t.grad.get(), g, rtol=1e-10, atol=1e-10)
