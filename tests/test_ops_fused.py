"""Fused ops (autograd/ops/fused.py): gradients by finite differences on drawn shapes, values and
gradients against their composition from primitive ops (or an independent reference), inputs
that need no gradient, the blocked float32 paths against float64, the random ops' masks, and
float32 kept float32."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autograd import Tensor, gradcheck, no_grad, ops, parallel, precision
from autograd.backend import generator, global_generator, manual_seed
from autograd.ops import fused, util
from checking import assert_matches_torch, assert_same, outputs_and_grads, torch_or_skip, upstream
from strategies import arrays, shapes


# --- linear -------------------------------------------------------------------

@given(shapes(min_dims=0, max_dims=3, max_side=3), st.integers(1, 4), st.integers(1, 4), st.booleans(), st.data())
def test_linear(lead, n_in, n_out, with_bias, data):
    x = data.draw(arrays(lead + (n_in,)))
    w = data.draw(arrays((n_out, n_in)))
    b = data.draw(arrays((n_out,)))
    if with_bias:
        inputs, fused = [x, w, b], ops.linear
        composed = lambda x, w, b: ops.matmul(x, ops.transpose(w)) + b  # noqa: E731
    else:
        inputs, fused = [x, w], ops.linear
        composed = lambda x, w: ops.matmul(x, ops.transpose(w))  # noqa: E731
    gradcheck(fused, inputs)
    assert_same(fused, composed, inputs)
    assert fused(*(Tensor(a) for a in inputs)).shape == lead + (n_out,)


@given(st.booleans(), st.booleans(), st.booleans(), st.data())
def test_linear_with_any_inputs_frozen(x_grad, w_grad, b_grad, data):
    x, w, b = data.draw(arrays((2, 3, 4))), data.draw(arrays((5, 4))), data.draw(arrays((5,)))
    tensors = [Tensor(v, requires_grad=flag) for v, flag in ((x, x_grad), (w, w_grad), (b, b_grad))]
    out = ops.linear(*tensors)
    np.testing.assert_allclose(out.data, x @ w.T + b, rtol=1e-12)
    if not (x_grad or w_grad or b_grad):
        assert not out.requires_grad
        return
    g = np.random.default_rng(0).normal(size=out.shape)
    out.backward(g)
    want = (g @ w, g.reshape(-1, 5).T @ x.reshape(-1, 4), g.reshape(-1, 5).sum(0))
    for t, flag, ref in zip(tensors, (x_grad, w_grad, b_grad), want):
        if flag:
            np.testing.assert_allclose(t.grad, ref, rtol=1e-12)
        else:
            assert t.grad is None


@pytest.mark.parametrize("form", ["gelu", "gelu_tanh", "residual"])
def test_linear_with_an_epilogue_is_bit_for_bit_the_ops_it_folds(form):
    # the model's blocks call these on the CPU too: its numbers must be those of the separate ops
    rng = np.random.default_rng(3)
    x, w, b, r = (rng.standard_normal(s).astype(np.float32) for s in ((2, 5, 6), (4, 6), (4,), (2, 5, 4)))
    if form == "residual":
        fused = lambda x, w, b, r: ops.linear(x, w, b, residual=r)  # noqa: E731
        separate = lambda x, w, b, r: r + ops.linear(x, w, b)  # noqa: E731
    else:
        approximate = "tanh" if form == "gelu_tanh" else "none"
        fused = lambda x, w, b, r: ops.linear(x, w, b, activation=form) + r  # noqa: E731
        separate = lambda x, w, b, r: ops.gelu(ops.linear(x, w, b), approximate) + r  # noqa: E731
    got, want = outputs_and_grads(fused, [x, w, b, r]), outputs_and_grads(separate, [x, w, b, r])
    np.testing.assert_array_equal(got[0], want[0])
    for a, c in zip(got[1], want[1]):
        np.testing.assert_array_equal(a, c)
    gradcheck(fused, [a.astype(np.float64) for a in (x, w, b, r)])


@pytest.mark.parametrize("form", ["gelu", "residual"])
@pytest.mark.parametrize("threads", [1, 3])
def test_the_cpu_epilogue_over_many_row_blocks_is_the_ops_it_folds(form, threads):
    # 2,100 rows of 200: several of the in-place pass's row blocks, shared out over the threads
    before = parallel.threads()
    parallel.set_threads(threads)
    try:
        rng = np.random.default_rng(4)
        x, w, b, r = (rng.standard_normal(s).astype(np.float32) for s in ((3, 700, 6), (200, 6), (200,), (3, 700, 200)))
        if form == "residual":
            fused, separate = (lambda x, w, b, r: ops.linear(x, w, b, residual=r),  # noqa: E731
                               lambda x, w, b, r: r + ops.linear(x, w, b))
        else:
            fused, separate = (lambda x, w, b, r: ops.linear(x, w, b, activation="gelu") + r,  # noqa: E731
                               lambda x, w, b, r: ops.gelu(ops.linear(x, w, b)) + r)
        got, want = outputs_and_grads(fused, [x, w, b, r]), outputs_and_grads(separate, [x, w, b, r])
        for a, c in zip([got[0], *got[1]], [want[0], *want[1]]):
            np.testing.assert_array_equal(a, c)
    finally:
        parallel.set_threads(before)


def test_linear_takes_one_epilogue_of_the_output_shape():
    x, w = Tensor(np.ones((2, 3))), Tensor(np.ones((4, 3)))
    with pytest.raises(ValueError, match="not both"):
        ops.linear(x, w, activation="gelu", residual=Tensor(np.ones((2, 4))))
    with pytest.raises(ValueError, match="not both"):
        ops.linear(x, w, activation="relu")
    with pytest.raises(ValueError, match="residual of shape"):
        ops.linear(x, w, residual=Tensor(np.ones((2, 3))))
    np.testing.assert_array_equal(ops.linear(x, w, residual=Tensor(np.ones((2, 4)))).data, np.full((2, 4), 4.0))


# --- layer norm ---------------------------------------------------------------

def composed_layer_norm(x, weight=None, bias=None, eps=1e-6):
    out = (x - ops.mean(x, axis=-1, keepdims=True)) / ops.sqrt(ops.var(x, axis=-1, keepdims=True) + eps)
    if weight is not None:
        out = out * weight
    if bias is not None:
        out = out + bias
    return out


@given(shapes(min_dims=0, max_dims=3, max_side=3), st.integers(2, 6), st.booleans(), st.booleans(),
       st.sampled_from([1e-6, 1e-5, 0.1]), st.data())
def test_layer_norm(lead, dim, with_weight, with_bias, eps, data):
    x = data.draw(arrays(lead + (dim,)))
    w, b = data.draw(arrays((dim,))), data.draw(arrays((dim,)))
    inputs = [x] + [w] * with_weight + [b] * with_bias

    def split(args):
        rest = list(args[1:])
        weight = rest.pop(0) if with_weight else None
        bias = rest.pop(0) if with_bias else None
        return args[0], weight, bias

    fused = lambda *a: ops.layer_norm(*split(a), eps=eps)  # noqa: E731
    composed = lambda *a: composed_layer_norm(*split(a), eps=eps)  # noqa: E731
    gradcheck(fused, inputs)
    assert_same(fused, composed, inputs)


def test_layer_norm_normalises():
    x = np.random.default_rng(1).normal(3.0, 5.0, size=(4, 64))
    out = ops.layer_norm(Tensor(x)).data
    np.testing.assert_allclose(out.mean(-1), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(-1), 1, rtol=1e-6)


def _spanning_blocks(rng, dim):
    """float32 rows enough for several cache blocks and a partial last one."""
    rows = 2 * util.BLOCK // dim + 3
    return (rng.normal(size=(rows, dim)) * 3 + 1).astype(np.float32)


def test_layer_norm_float32_over_many_blocks_matches_float64(rng):
    x = _spanning_blocks(rng, 48)
    w, b = rng.normal(size=48), rng.normal(size=48)
    leaves32 = [Tensor(a.astype(np.float32), requires_grad=True) for a in (x, w, b)]
    leaves64 = [Tensor(a.astype(np.float64), requires_grad=True) for a in (x, w, b)]
    g = rng.normal(size=x.shape)
    out32, out64 = ops.layer_norm(*leaves32), ops.layer_norm(*leaves64)
    out32.backward(g.astype(np.float32))
    out64.backward(g)
    np.testing.assert_allclose(out32.data, out64.data, rtol=1e-4, atol=1e-5)
    for t32, t64 in zip(leaves32, leaves64):
        assert t32.grad.dtype == np.float32
        np.testing.assert_allclose(t32.grad, t64.grad, rtol=1e-4, atol=1e-3 * np.abs(t64.grad).max())


def test_layer_norm_with_frozen_affine_or_constant_input():
    rng = np.random.default_rng(3)
    x, w, b = rng.normal(size=(3, 6)), rng.normal(size=6), rng.normal(size=6)
    full = [Tensor(a, requires_grad=True) for a in (x, w, b)]
    g = rng.normal(size=x.shape)
    ops.layer_norm(*full).backward(g)
    for frozen in range(3):
        part = [Tensor(a, requires_grad=i != frozen) for i, a in enumerate((x, w, b))]
        ops.layer_norm(*part).backward(g)
        for i, (p, f) in enumerate(zip(part, full)):
            if i == frozen:
                assert p.grad is None
            else:
                np.testing.assert_allclose(p.grad, f.grad, rtol=1e-12)


# --- layer norm, then linear --------------------------------------------------

def _two_ops(x, ln_weight, ln_bias, weight, bias, activation=None):
    """What ``layer_norm_linear`` folds, as the two ops."""
    return ops.linear(ops.layer_norm(x, ln_weight, ln_bias), weight, bias, activation=activation)


@pytest.mark.parametrize("activation", [None, "gelu", "gelu_tanh"])
@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("frozen", [(), (0, 1, 2), (3,)])
def test_layer_norm_linear_is_bit_for_bit_the_two_ops(activation, threads, frozen):
    # 2,100 rows of 48: many of layer norm's row blocks, over the threads; x also passes by the layer (a residual),
    # so its two gradients are summed; with x and the norm frozen (0, 1, 2) y is kept, with the weight frozen (3)
    # it is not needed
    before = parallel.threads()
    parallel.set_threads(threads)
    try:
        rng = np.random.default_rng(5)
        inputs = [(rng.standard_normal(s) * 2 + 1).astype(np.float32)
                  for s in ((3, 700, 48), (48,), (48,), (48, 48), (48,))]

        def run(fn):
            tensors = [Tensor(a.copy(), requires_grad=i not in frozen) for i, a in enumerate(inputs)]
            out = tensors[0] + fn(*tensors, activation=activation)
            out.backward(upstream(out.shape, out.dtype))
            return [out.data] + [t.grad for t in tensors if t.requires_grad]

        node = ops.layer_norm_linear(*(Tensor(a, requires_grad=True) for a in inputs), activation=activation)._node
        assert node.fn is fused.LayerNormLinear
        got, want = run(ops.layer_norm_linear), run(_two_ops)
        assert len(got) == len(want) == 1 + 5 - len(frozen)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    finally:
        parallel.set_threads(before)


def _cached_arrays(cache):
    """Every array in a node's cache, nested tuples opened."""
    if isinstance(cache, np.ndarray):
        return [cache]
    if isinstance(cache, (tuple, list)):
        return [a for part in cache for a in _cached_arrays(part)]
    return []


def _held_elements(nodes, inputs):
    """Elements of the arrays the nodes' caches hold that are not (views of) the inputs: what the graph adds."""
    held = [a for node in nodes for a in _cached_arrays(node.cache)]
    return sum(a.size for a in held if not any(np.shares_memory(a, i) for i in inputs))


@pytest.mark.parametrize("activation", [None, "gelu"])
def test_layer_norm_linear_keeps_no_normalised_copy_of_x(activation):
    # the cache holds x itself and per-row statistics, plus GELU's derivative (M, out) when there is one; the two
    # ops' caches hold the (M, D) normalised x besides, which the count below must see
    M, D, n_out = 60, 16, 24
    rng = np.random.default_rng(7)
    inputs = [rng.standard_normal(s).astype(np.float32) for s in ((3, 20, D), (D,), (D,), (n_out, D), (n_out,))]
    tensors = [Tensor(a, requires_grad=True) for a in inputs]
    slope = 0 if activation is None else M * n_out
    node = ops.layer_norm_linear(*tensors, activation=activation)._node
    assert _held_elements([node], inputs) == 2 * M + slope  # mean and rstd, (M, 1) each
    last = _two_ops(*tensors, activation=activation)._node
    assert _held_elements([last, last.inputs[0][0]], inputs) == 2 * M + slope + M * D


def test_layer_norm_linear_on_other_inputs_is_the_two_ops():
    # without the norm's bias, for a GELU without a bias, in mixed dtypes or under autocast: the two ops themselves
    rng = np.random.default_rng(8)
    x, w_ln, b_ln, w, b = (Tensor(rng.standard_normal(s), requires_grad=True) for s in ((2, 3, 4), (4,), (4,), (5, 4),
                                                                                          (5,)))
    assert ops.layer_norm_linear(x, w_ln, None, w, b)._node.fn is fused.Linear
    assert ops.layer_norm_linear(x, w_ln, b_ln, w, None, activation="gelu")._node.fn is fused.Gelu
    w32 = Tensor(w.data.astype(np.float32), requires_grad=True)
    assert ops.layer_norm_linear(x, w_ln, b_ln, w32, b)._node.fn is fused.Linear
    x32, w_ln32, b_ln32, b32 = (Tensor(t.data.astype(np.float32), requires_grad=True) for t in (x, w_ln, b_ln, b))
    with precision.autocast(np.float16):
        assert ops.layer_norm_linear(x32, w_ln32, b_ln32, w32, b32)._node.fn is fused.Linear
    assert ops.layer_norm_linear(x32, w_ln32, b_ln32, w32, b32)._node.fn is fused.LayerNormLinear
    assert ops.layer_norm_linear(x, w_ln, b_ln, w, b)._node.fn is fused.LayerNormLinear
    with pytest.raises(ValueError, match="not 'relu'"):
        ops.layer_norm_linear(x, w_ln, b_ln, w, b, activation="relu")


# --- gelu ---------------------------------------------------------------------

def gelu_reference(x):
    """x Phi(x) and its derivative Phi(x) + x phi(x), elementwise from math.erf."""
    cdf = np.vectorize(lambda v: 0.5 * (1 + math.erf(v / math.sqrt(2))))(x)
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return x * cdf, cdf + x * pdf


def composed_gelu_tanh(x):
    u = math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)
    return 0.5 * x * (1 + ops.tanh(u))


@given(shapes(), st.data())
def test_gelu_exact(shape, data):
    x = data.draw(arrays(shape, low=-4, high=4))
    gradcheck(ops.gelu, [x])
    t = Tensor(x, requires_grad=True)
    out = ops.gelu(t)
    out.sum().backward()
    value, slope = gelu_reference(x)
    np.testing.assert_allclose(out.data, value, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(t.grad, slope, rtol=1e-13, atol=1e-15)


@given(shapes(), st.data())
def test_gelu_tanh(shape, data):
    x = data.draw(arrays(shape, low=-4, high=4))
    fused = lambda a: ops.gelu(a, approximate="tanh")  # noqa: E731
    gradcheck(fused, [x])
    assert_same(fused, composed_gelu_tanh, [x])


def test_gelu_tails_and_forms_agree():
    x = np.array([-40.0, -8.0, -1.0, 0.0, 1.0, 8.0, 40.0])
    exact = ops.gelu(Tensor(x)).data
    approx = ops.gelu(Tensor(x), approximate="tanh").data
    np.testing.assert_allclose(exact, [0, 0, -0.15865525393145707, 0, 0.8413447460685429, 8, 40], atol=1e-14)
    np.testing.assert_allclose(approx, exact, atol=1e-3)  # the approximation's known accuracy
    with pytest.raises(ValueError):
        ops.gelu(Tensor(x), approximate="erf")


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_float32_over_many_blocks_matches_float64(approximate, rng):
    x = _spanning_blocks(rng, 96)
    t32, t64 = Tensor(x, requires_grad=True), Tensor(x.astype(np.float64), requires_grad=True)
    g = rng.normal(size=x.shape)
    out32, out64 = ops.gelu(t32, approximate), ops.gelu(t64, approximate)
    out32.backward(g.astype(np.float32))
    out64.backward(g)
    assert out32.dtype == t32.grad.dtype == np.float32
    np.testing.assert_allclose(out32.data, out64.data, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t32.grad, t64.grad, rtol=1e-5, atol=1e-5)
    with no_grad():
        np.testing.assert_array_equal(ops.gelu(t32, approximate).data, out32.data)


# --- softmax, log_softmax -----------------------------------------------------

def composed_softmax(x, axis):
    e = ops.exp(x - ops.max(x, axis=axis, keepdims=True))
    return e / ops.sum(e, axis=axis, keepdims=True)


def composed_log_softmax(x, axis):
    z = x - ops.max(x, axis=axis, keepdims=True)
    return z - ops.log(ops.sum(ops.exp(z), axis=axis, keepdims=True))


@given(shapes(), st.sampled_from(["softmax", "log_softmax"]), st.data())
def test_softmax(shape, name, data):
    x = data.draw(arrays(shape, low=-3, high=3))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    fused_op, composed_op = {
        "softmax": (ops.softmax, composed_softmax), "log_softmax": (ops.log_softmax, composed_log_softmax),
    }[name]
    fused = lambda a: fused_op(a, axis=axis)  # noqa: E731
    gradcheck(fused, [x])
    assert_same(fused, lambda a: composed_op(a, axis), [x])


def test_softmax_is_stable():
    x = Tensor(np.array([[1000.0, 0.0, -1000.0], [-1e4, -1e4, -1e4]]))
    np.testing.assert_allclose(ops.softmax(x).data, [[1, 0, 0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-300)
    np.testing.assert_allclose(ops.log_softmax(x).data[0], [0, -1000, -2000])


# --- cross entropy ------------------------------------------------------------

def composed_cross_entropy(logits, q, row_weight, reduction):
    """-sum(q log_softmax(logits)) per row, weighted, from primitive ops; q is the full target distribution."""
    losses = -ops.sum(Tensor(q) * composed_log_softmax(logits, -1), axis=-1) * Tensor(row_weight)
    if reduction == "none":
        return losses
    total = ops.sum(losses)
    return total / max(row_weight.sum(), 1) if reduction == "mean" else total


@given(shapes(min_dims=1, max_dims=3, max_side=3), st.integers(1, 4), st.sampled_from([0.0, 0.1, 0.7]),
       st.sampled_from(["mean", "sum", "none"]), st.sampled_from([-100, 1]), st.data())
def test_cross_entropy_labels(lead, n_class, smoothing, reduction, ignore_index, data):
    x = data.draw(arrays(lead + (n_class,), low=-3, high=3))
    labels = data.draw(st.integers(0, 2**32 - 1).map(lambda s: np.random.default_rng(s).integers(0, n_class, lead)))
    ignored = data.draw(st.integers(0, 2**32 - 1).map(lambda s: np.random.default_rng(s).random(lead) < 0.3))
    labels[ignored] = ignore_index
    counted = labels != ignore_index
    q = np.where(counted[..., None], np.eye(n_class)[np.where(counted, labels, 0)], 0.0)
    q = (1 - smoothing) * q + smoothing / n_class

    fused = lambda a: ops.cross_entropy(  # noqa: E731
        a, labels, label_smoothing=smoothing, ignore_index=ignore_index, reduction=reduction
    )
    gradcheck(fused, [x])
    assert_same(fused, lambda a: composed_cross_entropy(a, q, counted.astype(float), reduction), [x])


@given(shapes(min_dims=1, max_dims=3, max_side=3), st.integers(1, 4), st.sampled_from([0.0, 0.2]),
       st.sampled_from(["mean", "sum", "none"]), st.data())
def test_cross_entropy_soft_targets(lead, n_class, smoothing, reduction, data):
    x = data.draw(arrays(lead + (n_class,), low=-3, high=3))
    target = data.draw(st.integers(0, 2**32 - 1).map(
        lambda s: np.random.default_rng(s).dirichlet(np.ones(n_class), size=lead)
    ))
    q = (1 - smoothing) * target + smoothing / n_class
    fused = lambda a: ops.cross_entropy(a, target, label_smoothing=smoothing, reduction=reduction)  # noqa: E731
    gradcheck(fused, [x], check=[0])
    assert_same(fused, lambda a: composed_cross_entropy(a, q, np.ones(lead), reduction), [x])


def test_cross_entropy_soft_target_gets_no_gradient():
    target = Tensor(np.full((2, 3), 1 / 3), requires_grad=True)
    logits = Tensor(np.zeros((2, 3)), requires_grad=True)
    ops.cross_entropy(logits, target).backward()
    assert target.grad is None and logits.grad is not None


def test_cross_entropy_all_ignored_is_zero():
    logits = Tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True)
    loss = ops.cross_entropy(logits, np.full(3, -100), label_smoothing=0.1)
    loss.backward()
    assert loss.item() == 0.0
    assert np.all(logits.grad == 0)


def test_cross_entropy_known_value_and_shape_errors():
    logits = Tensor(np.log(np.array([[0.5, 0.25, 0.25]])))
    np.testing.assert_allclose(ops.cross_entropy(logits, np.array([1])).item(), math.log(4))
    with pytest.raises(ValueError):
        ops.cross_entropy(logits, np.array([1, 2]))
    with pytest.raises(ValueError):
        ops.cross_entropy(logits, np.array([1]), reduction="max")


@pytest.mark.parametrize("case", ["labels", "soft"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_matches_torch(case, reduction):
    torch = torch_or_skip()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, 5))
    target = np.array([0, 4, -100, 2, 2, -100]) if case == "labels" else rng.dirichlet(np.ones(5), size=6)
    torch_target = torch.from_numpy(target)
    assert_matches_torch(
        lambda t: ops.cross_entropy(t, target, label_smoothing=0.1, reduction=reduction),
        lambda t: torch.nn.functional.cross_entropy(t, torch_target, label_smoothing=0.1, reduction=reduction),
        [x], rtol=1e-12, atol=0, grad_atol=1e-15,
    )


# --- dropout, drop_path -------------------------------------------------------

def test_dropout_mask_is_reproducible_and_scaled():
    x = Tensor(np.ones((50, 40), dtype=np.float32))
    a = ops.dropout(x, 0.25, generator=generator(7)).data
    b = ops.dropout(x, 0.25, generator=generator(7)).data
    c = ops.dropout(x, 0.25, generator=generator(8)).data
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert set(np.unique(a)) == {0.0, np.float32(1 / 0.75)}


def test_dropout_uses_the_global_generator():
    x = Tensor(np.ones(1000))
    try:
        manual_seed(11)
        a = ops.dropout(x, 0.5).data
        manual_seed(11)
        b = ops.dropout(x, 0.5).data
        manual_seed(11)
        expected = global_generator("cpu").random(1000, dtype=np.float32) >= 0.5
    finally:
        manual_seed(0)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a != 0, expected)


def test_dropout_preserves_the_expected_value():
    x = Tensor(np.full(400_000, 3.0, dtype=np.float32))
    out = ops.dropout(x, 0.3, generator=generator(1)).data
    assert abs(out.mean() - 3.0) < 0.02
    assert abs((out == 0).mean() - 0.3) < 0.005


@given(shapes(), st.sampled_from([0.1, 0.5, 0.9]), st.data())
def test_dropout_gradient(shape, p, data):
    x = data.draw(arrays(shape))
    fn = lambda a: ops.dropout(a, p, generator=generator(3))  # noqa: E731  the same mask every call
    gradcheck(fn, [x])
    t = Tensor(x, requires_grad=True)
    out = fn(t)
    upstream = np.random.default_rng(0).standard_normal(shape)
    out.backward(upstream)
    keep = generator(3).random(shape, dtype=np.float32) >= p
    np.testing.assert_allclose(t.grad, upstream * keep / (1 - p), rtol=1e-14)
    np.testing.assert_allclose(out.data, x * keep / (1 - p), rtol=1e-14)


@pytest.mark.parametrize("op", [ops.dropout, ops.drop_path])
def test_random_ops_are_the_identity_when_off(op):
    x = Tensor(np.ones((3, 4)), requires_grad=True)
    assert op(x, 0.5, training=False) is x
    assert op(x, 0.0) is x
    np.testing.assert_array_equal(op(x, 1.0).data, 0)
    with pytest.raises(ValueError):
        op(x, 1.5)


def test_drop_path_drops_whole_samples():
    x = np.random.default_rng(0).uniform(1, 2, size=(64, 3, 5))
    out = ops.drop_path(Tensor(x), 0.5, generator=generator(2)).data
    dropped = np.all(out == 0, axis=(1, 2))
    kept = np.all(np.isclose(out, x / 0.5, rtol=1e-14), axis=(1, 2))
    assert np.all(dropped ^ kept)
    assert 10 < dropped.sum() < 54


def test_drop_path_preserves_the_expected_value():
    x = Tensor(np.ones((200_000, 2), dtype=np.float32))
    out = ops.drop_path(x, 0.25, generator=generator(4)).data
    assert out.dtype == np.float32
    assert abs(out.mean() - 1.0) < 0.01


@given(shapes(min_dims=1), st.sampled_from([0.2, 0.6]), st.data())
def test_drop_path_gradient(shape, p, data):
    x = data.draw(arrays(shape))
    gradcheck(lambda a: ops.drop_path(a, p, generator=generator(5)), [x])


# --- float32 end to end -------------------------------------------------------

FLOAT32_CASES = {
    "linear": (lambda x, w: ops.linear(x, w, w[0]), [(2, 3, 4), (4, 4)]),
    "layer_norm": (lambda x, w: ops.layer_norm(x, w, w), [(2, 3, 4), (4,)]),
    "gelu": (lambda x: ops.gelu(x), [(2, 3, 4)]),
    "gelu_tanh": (lambda x: ops.gelu(x, approximate="tanh"), [(2, 3, 4)]),
    "softmax": (lambda x: ops.softmax(x, axis=1), [(2, 3, 4)]),
    "log_softmax": (lambda x: ops.log_softmax(x), [(2, 3, 4)]),
    "cross_entropy": (lambda x: ops.cross_entropy(x, np.array([[0, 1, -100], [3, 3, 2]]), 0.1), [(2, 3, 4)]),
    "cross_entropy_soft": (lambda x, t: ops.cross_entropy(x, t, reduction="none"), [(2, 3, 4), (2, 3, 4)]),
    "dropout": (lambda x: ops.dropout(x, 0.5, generator=generator(0)), [(2, 3, 4)]),
    "drop_path": (lambda x: ops.drop_path(x, 0.5, generator=generator(0)), [(2, 3, 4)]),
}


@pytest.mark.parametrize("name", sorted(FLOAT32_CASES))
def test_float32_stays_float32(name):
    fn, in_shapes = FLOAT32_CASES[name]
    rng = np.random.default_rng(0)
    inputs = [Tensor(rng.random(s).astype(np.float32), requires_grad=True) for s in in_shapes]
    out = fn(*inputs)
    assert out.dtype == np.float32
    (out * out).sum().backward()
    assert inputs[0].grad.dtype == np.float32
    for t in inputs[1:]:
        assert t.grad is None or t.grad.dtype == np.float32
    with no_grad():
        assert fn(*inputs).dtype == np.float32


def test_loss_and_random_ops_take_arrays_as_well_as_tensors():
    rng = np.random.default_rng(5)
    logits, labels, x = rng.normal(size=(4, 3)), np.array([0, 2, 1, 2]), rng.normal(size=(3, 4))
    assert ops.cross_entropy(logits, labels).item() == ops.cross_entropy(Tensor(logits), Tensor(labels)).item()
    for op in (ops.dropout, ops.drop_path):
        np.testing.assert_array_equal(op(x, 0.5, generator=generator(1)).data,
                                      op(Tensor(x), 0.5, generator=generator(1)).data)
