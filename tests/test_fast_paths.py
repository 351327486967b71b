"""The engine's and the ops' fast paths: multi-output split/unbind, ops told which inputs
need gradients, the blocked float32 GELU and LayerNorm, and the benchmark's PyTorch twin."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autograd import Tensor, gradcheck, no_grad, ops
from autograd.ops import util
from autograd.engine import Function, GraphFreedError
from strategies import arrays, shapes


# --- split / unbind: one node, several outputs ------------------------------------

@given(shapes(min_dims=1, max_dims=4), st.data())
def test_unbind(shape, data):
    a = data.draw(arrays(shape))
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    pieces = ops.unbind(Tensor(a), axis=axis)
    assert len(pieces) == shape[axis]
    for i, piece in enumerate(pieces):
        np.testing.assert_array_equal(piece.data, np.take(a, i, axis=axis))
    weights = [np.random.default_rng(i).normal(size=p.shape) for i, p in enumerate(pieces)]
    gradcheck(lambda x: sum(p * w for p, w in zip(ops.unbind(x, axis=axis), weights)), [a])


@given(shapes(min_dims=1, max_dims=3, max_side=5), st.data())
def test_split_at_indices_with_unused_and_reused_pieces(shape, data):
    a = data.draw(arrays(shape))
    axis = data.draw(st.integers(0, len(shape) - 1))
    n = shape[axis]
    bounds = sorted(data.draw(st.lists(st.integers(0, n + 1), max_size=3)))
    used = data.draw(st.lists(st.booleans(), min_size=len(bounds) + 1, max_size=len(bounds) + 1))

    def fn(x):
        pieces = ops.split(x, bounds, axis=axis)
        terms = [(p * p + p).sum() for p, u in zip(pieces, used) if u]  # a used piece feeds two ops
        return sum(terms) if terms else (x * 0.0).sum()

    for got, want in zip(ops.split(Tensor(a), bounds, axis=axis), np.split(a, bounds, axis=axis)):
        np.testing.assert_array_equal(got.data, want)
    gradcheck(fn, [a])


def test_split_gradient_is_c_ordered_even_from_transposed_pieces():
    x = Tensor(np.arange(24.0).reshape(2, 3, 4), requires_grad=True)
    q, k, v = ops.unbind(x, axis=1)  # (2, 4) each
    (q.T * 1.0).sum().backward()  # upstream gradients arrive transposed
    assert x.grad.flags.c_contiguous
    np.testing.assert_array_equal(x.grad, np.stack([np.ones((2, 4)), np.zeros((2, 4)), np.zeros((2, 4))], axis=1))


def test_split_rejects_decreasing_or_negative_indices():
    for bad in ([3, 1], [-1]):
        with pytest.raises(ValueError, match="non-decreasing"):
            ops.split(Tensor(np.zeros(4)), bad)


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


def test_backward_from_one_output_of_several():
    x = Tensor(np.arange(6.0).reshape(3, 2), requires_grad=True)
    a, b, c = ops.unbind(x)
    b.backward(np.array([1.0, 2.0]))
    np.testing.assert_array_equal(x.grad, [[0, 0], [1, 2], [0, 0]])


# --- needs_input_grad --------------------------------------------------------------

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


# --- blocked float32 GELU and LayerNorm ------------------------------------------

def test_normal_cdf_matches_math_erf():
    import math

    from autograd.ops.special import normal_cdf

    x = np.concatenate([np.linspace(-9, 9, 4001), np.geomspace(1e-30, 1e-2, 30)])
    x = np.concatenate([x, -x, [0.0, np.inf, -np.inf]])
    ref = np.array([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    np.testing.assert_allclose(normal_cdf(x), ref, rtol=1e-14, atol=1e-16)
    x32 = x.astype(np.float32)
    got = normal_cdf(x32)
    assert got.dtype == np.float32 and got.min() >= 0 and got.max() <= 1
    ref32 = np.array([0.5 * (1 + math.erf(float(v) / math.sqrt(2))) for v in x32])
    np.testing.assert_allclose(got, ref32, rtol=0, atol=3e-7)  # absolute: 1/2 + x A/B cancels in the left tail
    np.testing.assert_array_equal(normal_cdf(x32, x32 * x32), got)
    assert np.isnan(normal_cdf(np.float32([np.nan]))).all()


def _spanning_blocks(rng, dim):
    """float32 rows enough for several cache blocks and a partial last one."""
    rows = 2 * util.BLOCK // dim + 3
    return (rng.normal(size=(rows, dim)) * 3 + 1).astype(np.float32)


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


# --- the benchmark ----------------------------------------------------------------

def test_bench_resolves_aliases_and_rejects_unknown_names():
    from npvit import bench

    assert bench.resolve_model("vit-tiny") == "vit_cifar_tiny"
    assert bench.resolve_model("vit-s16") == "vit_small_patch16_224"
    assert bench.resolve_model("vit_cifar_small") == "vit_cifar_small"
    with pytest.raises(SystemExit, match="unknown model"):
        bench.resolve_model("vit-gigantic")


@pytest.mark.parametrize("overrides", [{}, {"global_pool": "avg"}, {"representation_size": 16},
                                       {"gelu_approximate": "tanh", "class_token": False, "global_pool": "avg"}])
def test_torch_twin_computes_what_npvit_does(overrides):
    torch = pytest.importorskip("torch")
    import npvit
    from npvit import bench

    cfg = npvit.get_config("vit_cifar_tiny", depth=2, **overrides)
    model = npvit.VisionTransformer(cfg)
    model.head.weight.data[...] = np.random.default_rng(1).normal(size=model.head.weight.shape) * 0.1
    twin = bench.build_torch_vit(cfg)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    images, labels = bench.random_batch(cfg, 3)
    ours = model(images)
    theirs = twin(torch.from_numpy(images))
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-4, atol=1e-4)
    ops.cross_entropy(ours, labels).backward()
    torch.nn.functional.cross_entropy(theirs, torch.from_numpy(labels)).backward()
    for name, p in model.named_parameters():
        ref = twin.get_parameter(name).grad.numpy()
        np.testing.assert_allclose(p.grad, ref, rtol=1e-3, atol=1e-4 * max(np.abs(ref).max(), 1e-3))


def test_bench_twin_declines_what_it_does_not_model():
    import npvit
    from npvit import bench

    assert bench.torch_unsupported(npvit.get_config("vit_cifar_tiny")) is None
    assert "hybrid" in bench.torch_unsupported(npvit.get_config("vit_hybrid_cifar_tiny"))
    assert "relative" in bench.torch_unsupported(npvit.get_config("vit_cifar_tiny", pos_embed="relative"))


@pytest.mark.parametrize("mode, extra", [("train", []), ("infer", ["--no-memory", "--keep-freed-memory"])])
def test_bench_command_prints_a_table(mode, extra, capsys):
    from npvit import bench

    args = ["--model", "vit-tiny", "--batch-size", "2", "--mode", mode, "--steps", "1", "--repeats", "2",
            "--warmup", "1", *extra]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    assert f"vit_cifar_tiny (vit-tiny), batch 2, {mode}" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert float(lines["npvit"].split()[1]) > 0
    memory = lines["npvit"].split("]")[1].strip()
    assert memory == "n/a" if extra else memory.endswith("MiB")
    try:
        import torch  # noqa: F401
    except ImportError:
        assert "PyTorch not timed: PyTorch is not installed" in out
    else:
        assert float(lines["npvit/PyTorch"].split()[1]) > 0
