"""Scaled dot-product attention: gradients by finite differences on drawn shapes (with and
without a bias, broadcast or full, trainable or constant, with attention dropout), values
and gradients against the composition from primitive ops, and the returned weights."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autograd import Tensor, gradcheck, no_grad, ops
from autograd.backend import generator
from checking import assert_matches_torch, assert_same, torch_or_skip
from strategies import arrays, shapes


def composed_attention(q, k, v, bias=None, scale=None, keep=None, p=0.0):
    """softmax(q k^T scale + bias) (* keep / (1 - p)) v from matmul, exp, max and sum."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = ops.matmul(q, ops.swapaxes(k, -1, -2)) * scale
    if bias is not None:
        s = s + bias
    e = ops.exp(s - ops.max(s, axis=-1, keepdims=True))
    w = e / ops.sum(e, axis=-1, keepdims=True)
    if keep is not None:
        w = w * Tensor(keep / (1 - p))
    return ops.matmul(w, v)


@st.composite
def attention_case(draw):
    """q, k, v of shapes (..., Nq, d), (..., Nk, d), (..., Nk, dv) and a bias shape that
    broadcasts to (..., Nq, Nk): full, with size-1 axes, or with leading axes left out."""
    lead = draw(shapes(min_dims=0, max_dims=2, max_side=3))
    nq, nk, d, dv = (draw(st.integers(1, 3)) for _ in range(4))
    logits = lead + (nq, nk)
    ones = draw(st.lists(st.booleans(), min_size=len(logits), max_size=len(logits)))
    bias_shape = tuple(1 if one else n for one, n in zip(ones, logits))
    bias_shape = bias_shape[draw(st.integers(0, len(lead) + 1)):]
    return (
        draw(arrays(lead + (nq, d))), draw(arrays(lead + (nk, d))), draw(arrays(lead + (nk, dv))),
        draw(arrays(bias_shape)),
    )


@given(attention_case(), st.sampled_from(["none", "constant", "trainable"]), st.sampled_from([None, 0.7]))
def test_attention(case, bias_kind, scale):
    q, k, v, bias = case
    if bias_kind == "none":
        inputs = [q, k, v]
        fused = lambda q, k, v: ops.scaled_dot_product_attention(q, k, v, scale=scale)  # noqa: E731
        composed = lambda q, k, v: composed_attention(q, k, v, scale=scale)  # noqa: E731
    else:
        inputs = [q, k, v, bias]
        fused = lambda q, k, v, b: ops.scaled_dot_product_attention(q, k, v, b, scale=scale)  # noqa: E731
        composed = lambda q, k, v, b: composed_attention(q, k, v, b, scale=scale)  # noqa: E731
    check = [0, 1, 2] if bias_kind == "constant" else None
    gradcheck(fused, inputs, check=check)
    assert_same(fused, composed, inputs)


@given(attention_case(), st.sampled_from([0.2, 0.5]))
def test_attention_dropout(case, p):
    q, k, v, bias = case
    fused = lambda q, k, v, b: ops.scaled_dot_product_attention(  # noqa: E731  the same mask every call
        q, k, v, b, dropout_p=p, generator=generator(9)
    )
    gradcheck(fused, [q, k, v, bias])
    keep = generator(9).random(q.shape[:-1] + (k.shape[-2],), dtype=np.float32) >= p
    assert_same(fused, lambda q, k, v, b: composed_attention(q, k, v, b, keep=keep, p=p), [q, k, v, bias])


def test_attention_with_a_constant_bias_gives_the_same_gradients():
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(2, 3, 5, 4)) for _ in range(3))
    bias = rng.normal(size=(5, 5))
    grads = []
    for bias_grad in (True, False):
        ts = [Tensor(a, requires_grad=True) for a in (q, k, v)]
        b = Tensor(bias, requires_grad=bias_grad)
        ops.scaled_dot_product_attention(*ts, bias=b).sum().backward()
        grads.append([t.grad for t in ts])
        assert (b.grad is not None) == bias_grad
    for with_bias, without in zip(*grads):
        np.testing.assert_allclose(with_bias, without, rtol=1e-12)


def test_attention_dropout_off_in_eval_and_reproducible():
    rng = np.random.default_rng(0)
    q, k, v = (Tensor(rng.standard_normal((2, 3, 5, 4))) for _ in range(3))
    plain = ops.scaled_dot_product_attention(q, k, v).data
    np.testing.assert_array_equal(ops.scaled_dot_product_attention(q, k, v, dropout_p=0.5, training=False).data, plain)
    a = ops.scaled_dot_product_attention(q, k, v, dropout_p=0.5, generator=generator(1)).data
    b = ops.scaled_dot_product_attention(q, k, v, dropout_p=0.5, generator=generator(1)).data
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, plain)


def test_attention_returns_weights_before_dropout():
    rng = np.random.default_rng(1)
    q, k, v = (Tensor(rng.standard_normal((2, 3, 5, 4)), requires_grad=True) for _ in range(3))
    bias = Tensor(rng.standard_normal((3, 5, 5)), requires_grad=True)
    out, weights = ops.scaled_dot_product_attention(q, k, v, bias, dropout_p=0.3, generator=generator(2),
                                                    return_weights=True)
    assert weights.shape == (2, 3, 5, 5) and not weights.requires_grad
    expected = ops.softmax(ops.matmul(q, ops.swapaxes(k, -1, -2)) * 0.5 + bias).data
    np.testing.assert_allclose(weights.data, expected, rtol=1e-12)
    out.sum().backward()  # the weights leave the graph intact
    assert q.grad is not None and bias.grad is not None
    with no_grad():  # and come back without a graph too, as the analysis tools ask for them
        out, weights = ops.scaled_dot_product_attention(q, k, v, bias, return_weights=True)
    np.testing.assert_allclose(weights.data, expected, rtol=1e-12)
    np.testing.assert_allclose(out.data, np.matmul(expected, v.data), rtol=1e-12)


def test_attention_rejects_mismatched_shapes():
    q = Tensor(np.zeros((2, 5, 4)))
    with pytest.raises(ValueError):
        ops.scaled_dot_product_attention(q, Tensor(np.zeros((2, 5, 3))), q)
    with pytest.raises(ValueError):
        ops.scaled_dot_product_attention(q, q, Tensor(np.zeros((2, 6, 4))))
    with pytest.raises(ValueError):  # the bias may not add batch dims to the logits
        ops.scaled_dot_product_attention(q, q, q, Tensor(np.zeros((3, 2, 5, 5))))


def test_attention_float32_stays_float32():
    rng = np.random.default_rng(0)
    q, k, v = (Tensor(rng.standard_normal((2, 3, 5, 4)).astype(np.float32), requires_grad=True) for _ in range(3))
    bias = Tensor(rng.standard_normal((3, 5, 5)).astype(np.float32), requires_grad=True)
    out, weights = ops.scaled_dot_product_attention(q, k, v, bias, dropout_p=0.1, generator=generator(0),
                                                    return_weights=True)
    assert out.dtype == weights.dtype == np.float32
    (out * out).sum().backward()
    assert all(t.grad.dtype == np.float32 for t in (q, k, v, bias))


def test_attention_matches_torch():
    torch = torch_or_skip()
    rng = np.random.default_rng(4)
    inputs = [rng.standard_normal(s) for s in [(2, 3, 5, 4), (2, 3, 6, 4), (2, 3, 6, 2), (3, 1, 6)]]
    assert_matches_torch(lambda q, k, v, b: ops.scaled_dot_product_attention(q, k, v, b, scale=0.3),
                         lambda q, k, v, b: torch.softmax(q @ k.transpose(-1, -2) * 0.3 + b, dim=-1) @ v,
                         inputs, rtol=1e-12, atol=0, grad_rtol=1e-10, grad_atol=1e-13)


def test_attention_takes_arrays_as_well_as_tensors():
    rng = np.random.default_rng(4)
    q, k, v = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 5, 4)), rng.normal(size=(2, 5, 2))
    bias = rng.normal(size=(3, 5))
    for p in (0.0, 0.5):  # with dropout, the mask is drawn on q's device
        want = ops.scaled_dot_product_attention(Tensor(q), Tensor(k), Tensor(v), Tensor(bias), dropout_p=p,
                                                generator=generator(2))
        got = ops.scaled_dot_product_attention(q, k, v, bias, dropout_p=p, generator=generator(2))
        np.testing.assert_array_equal(got.data, want.data)
    np.testing.assert_array_equal(ops.attention_weights(q, k, bias).data,
                                  ops.attention_weights(Tensor(q), Tensor(k), Tensor(bias)).data)
