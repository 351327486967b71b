"""Modules (registration, names, state dicts, modes, devices, layers against the functional ops,
a gradient check through a stack of them) and the initialisers' distributions."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autograd import Tensor, backend, default_dtype_as, gradcheck, init, manual_seed, nn, ops
from checking import torch_or_skip
from devices import requires_gpu
from strategies import arrays, shapes


class Attention(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(3 * dim, dim)


class Block(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim)
        self.scratch = Tensor(np.zeros(dim))  # a plain tensor: not a parameter


class TinyViT(nn.Module):
    def __init__(self, dim=4, depth=2):
        super().__init__()
        self.cls_token = nn.Parameter(np.zeros((1, 1, dim), dtype=np.float32))
        self.blocks = nn.ModuleList([Block(dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 3)
        self.register_buffer("index", np.arange(6).reshape(2, 3))
        self.register_buffer("cache", np.zeros(2), persistent=False)


BLOCK_PARAMS = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias"]
TINY_PARAMS = (
    ["cls_token"]
    + [f"blocks.{i}.{n}" for i in range(2) for n in BLOCK_PARAMS]
    + ["norm.weight", "norm.bias", "head.weight", "head.bias"]
)


# --- registration -------------------------------------------------------------------------
def test_parameters_are_registered_under_their_dotted_paths():
    model = TinyViT()
    names = [n for n, _ in model.named_parameters()]
    assert names == TINY_PARAMS
    assert model.blocks[1].attn.qkv.weight is dict(model.named_parameters())["blocks.1.attn.qkv.weight"]
    assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in model.parameters())
    assert model.num_parameters() == 4 + 2 * (8 + 4 * 12 + 12 + 12 * 4 + 4) + 8 + 4 * 3 + 3


def test_modules_children_and_buffers():
    model = TinyViT()
    assert [n for n, _ in model.named_children()] == ["blocks", "norm", "head"]
    assert [n for n, _ in model.named_modules()][:6] == [
        "", "blocks", "blocks.0", "blocks.0.norm1", "blocks.0.attn", "blocks.0.attn.qkv"
    ]
    assert [n for n, _ in model.named_buffers()] == ["index", "cache"]
    assert "scratch" not in {n.split(".")[-1] for n, _ in model.named_parameters()}
    assert isinstance(model.blocks[0].scratch, Tensor)


def test_a_shared_parameter_or_module_is_listed_once():
    model = nn.Sequential(nn.Linear(3, 3), nn.Tanh(), nn.Linear(3, 3))
    model[2].weight = model[0].weight  # tied weights
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "2.bias"]
    assert model.num_parameters() == 9 + 3 + 3
    assert set(model.state_dict()) == {"0.weight", "0.bias", "2.weight", "2.bias"}  # as in PyTorch

    shared = nn.Linear(2, 2)
    twice = nn.ModuleList([shared, shared])
    assert len(list(twice.modules())) == 2
    assert [n for n, _ in twice.named_parameters()] == ["0.weight", "0.bias"]


def test_reassigning_a_name_moves_it_between_registries():
    m = nn.Module()
    m.x = nn.Parameter(np.zeros(2))
    m.x = nn.Identity()
    assert list(m.named_parameters()) == [] and [n for n, _ in m.named_children()] == ["x"]
    m.x = 3
    assert list(m.named_children()) == [] and m.x == 3
    m.w = nn.Parameter(np.zeros(2))
    with pytest.raises(TypeError, match="wrap it in Parameter"):
        m.w = Tensor(np.ones(2))
    del m.w
    assert list(m.parameters()) == []
    with pytest.raises(AttributeError):
        m.w


def test_assigning_to_a_buffer_name_replaces_the_buffer():
    m = nn.Module()
    m.register_buffer("b", np.zeros(2))
    m.b = np.ones(3)
    assert m.state_dict()["b"].shape == (3,) and "b" not in m.__dict__


def test_module_list_and_sequential():
    layers = nn.ModuleList([nn.Tanh(), nn.ReLU()])
    layers.append(nn.Identity())
    assert len(layers) == 3 and isinstance(layers[-1], nn.Identity)
    assert [type(m) for m in layers[1:]] == [nn.ReLU, nn.Identity]
    layers[0] = nn.GELU()
    assert isinstance(layers[0], nn.GELU)
    with pytest.raises(TypeError):
        layers.append(lambda x: x)
    seq = nn.Sequential(nn.Tanh(), nn.ReLU())
    assert isinstance(seq[:1], nn.Sequential)
    x = Tensor(np.array([-1.0, 0.5]))
    np.testing.assert_allclose(seq(x).data, np.maximum(np.tanh(x.data), 0))


def test_repr_is_an_indented_tree():
    model = nn.Sequential(nn.Linear(2, 3), nn.ModuleList([nn.GELU(approximate="tanh")]))
    assert repr(model) == (
        "Sequential(\n"
        "  (0): Linear(in_features=2, out_features=3, bias=True)\n"
        "  (1): ModuleList(\n"
        "    (0): GELU(approximate='tanh')\n"
        "  )\n"
        ")"
    )


def test_forward_must_be_defined():
    with pytest.raises(NotImplementedError, match="Module does not define forward"):
        nn.Module()(1)


# --- state dicts -------------------------------------------------------------------------------
def test_state_dict_round_trip_is_bit_exact_and_keeps_identity(tmp_path):
    manual_seed(1)
    a = TinyViT()
    manual_seed(2)
    b = TinyViT()
    b.index[...] = 0
    params_before = {n: (p, p.data) for n, p in b.named_parameters()}
    sd = a.state_dict()
    assert "index" in sd and "cache" not in sd
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    np.savez(tmp_path / "m.npz", **sd)
    with np.load(tmp_path / "m.npz", allow_pickle=False) as f:
        assert b.load_state_dict({k: f[k] for k in f.files}) == ([], [], [])
    for name, p in b.named_parameters():
        assert p is params_before[name][0] and p.data is params_before[name][1]
        assert p.dtype == np.float32
        np.testing.assert_array_equal(p.data, dict(a.named_parameters())[name].data)
    np.testing.assert_array_equal(b.index, a.index)


def test_state_dict_is_a_snapshot():
    m = nn.Linear(2, 2)
    sd = m.state_dict()
    m.weight.data[...] = 5
    assert not np.any(sd["weight"] == 5)


def test_state_dict_order_is_per_module_parameters_then_buffers():
    model = TinyViT()
    keys = list(model.state_dict())
    assert keys[:2] == ["cls_token", "index"] and keys[2:] == TINY_PARAMS[1:]


def test_load_state_dict_casts_dtype():
    m = nn.Linear(2, 2)
    m.load_state_dict({"weight": np.ones((2, 2), dtype=np.float64), "bias": [1, 2]})
    assert m.weight.dtype == np.float32 and m.bias.dtype == np.float32
    np.testing.assert_array_equal(m.bias.data, [1.0, 2.0])


def test_strict_loading_names_every_bad_key_in_one_error_and_loads_nothing():
    model = TinyViT()
    sd = model.state_dict()
    before = model.state_dict()
    del sd["head.bias"], sd["blocks.1.norm1.weight"]
    sd["fc.weight"] = np.zeros((2, 2))
    sd["pos_embed_extra"] = np.zeros(1)
    sd["head.weight"] = np.zeros((5, 4))
    sd["cls_token"] = np.ones((1, 1, 4))  # fits, but must not be loaded when strict fails
    with pytest.raises(nn.StateDictError) as err:
        model.load_state_dict(sd)
    msg = str(err.value)
    for key in ("head.bias", "blocks.1.norm1.weight", "fc.weight", "pos_embed_extra"):
        assert key in msg
    assert "head.weight given (5, 4) but the model has (3, 4)" in msg
    assert "missing keys (2)" in msg and "unexpected keys (2)" in msg and "mis-shaped keys (1)" in msg
    assert err.value.missing == ["blocks.1.norm1.weight", "head.bias"]
    assert isinstance(err.value, ValueError)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_strict_loading_refuses_a_single_unexpected_key():
    m = nn.Linear(2, 2)
    sd = dict(m.state_dict(), extra=np.zeros(1))
    with pytest.raises(nn.StateDictError, match=r"unexpected keys \(1\): extra"):
        m.load_state_dict(sd)


def test_non_strict_loading_loads_what_fits():
    model = TinyViT()
    sd = {"cls_token": np.ones((1, 1, 4)), "head.weight": np.zeros((5, 4)), "extra": np.zeros(1)}
    result = model.load_state_dict(sd, strict=False)
    assert result.unexpected == ["extra"]
    assert result.mismatched == [("head.weight", (5, 4), (3, 4))]
    assert len(result.missing) == len(model.state_dict()) - 2
    np.testing.assert_array_equal(model.cls_token.data, np.ones((1, 1, 4)))
    assert not np.all(model.head.weight.data == 0)


# --- modes and devices ---------------------------------------------------------------------------
def test_train_and_eval_propagate():
    model = TinyViT()
    assert all(m.training for m in model.modules())
    assert model.eval() is model
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_dropout_and_drop_path_respect_training_mode():
    x = Tensor(np.ones((64, 8, 4), dtype=np.float32))
    for layer in (nn.Dropout(0.5), nn.DropPath(0.5)):
        y = layer(x).data
        assert np.any(y == 0) and np.allclose(y[y != 0], 2.0)
        layer.eval()
        np.testing.assert_array_equal(layer(x).data, x.data)
    sample_mask = nn.DropPath(0.5)(x).data != 0  # whole samples dropped together
    assert np.all(sample_mask.all(axis=(1, 2)) | ~sample_mask.any(axis=(1, 2)))


def test_dropout_draws_from_its_generator_or_the_global_one():
    x = Tensor(np.ones((16, 16), dtype=np.float32))
    a = nn.Dropout(0.5, generator=backend.generator(7))(x).data
    b = nn.Dropout(0.5, generator=backend.generator(7))(x).data
    np.testing.assert_array_equal(a, b)
    manual_seed(5)
    c = nn.Dropout(0.5)(x).data
    manual_seed(5)
    np.testing.assert_array_equal(nn.Dropout(0.5)(x).data, c)
    assert not np.array_equal(a, c)


def test_zero_grad():
    m = nn.Linear(2, 2)
    m(Tensor(np.ones((1, 2), dtype=np.float32))).sum().backward()
    assert m.weight.grad is not None
    m.zero_grad()
    assert m.weight.grad is None and m.bias.grad is None


def test_to_cpu_keeps_identity():
    model = TinyViT()
    params = list(model.parameters())
    datas = [p.data for p in params]
    assert model.to("cpu") is model
    assert all(p is q and p.data is d for p, q, d in zip(model.parameters(), params, datas))


@requires_gpu
def test_to_gpu_moves_parameters_grads_and_buffers_in_place():
    from autograd import optim

    model = TinyViT()
    params = list(model.parameters())
    opt = optim.AdamW(params, lr=0.1)
    for p in params:
        p.grad = np.ones(p.shape, dtype=p.dtype)
    opt.step()
    reference = {k: v.copy() for k, v in model.state_dict().items()}
    model.to("gpu")
    assert all(p is q and p.device == "gpu:0" for p, q in zip(model.parameters(), params))
    assert all(backend.is_gpu_array(p.grad) for p in params)
    assert all(backend.is_gpu_array(b) for b in model.buffers())
    sd = model.state_dict()
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    for k in reference:
        np.testing.assert_array_equal(sd[k], reference[k])
    opt.step()  # its state follows the parameters to the GPU
    assert backend.is_gpu_array(opt.state[0]["exp_avg"])
    model.load_state_dict(reference)
    assert all(p.device == "gpu:0" for p in model.parameters())


# --- layers against the functional ops ---------------------------------------------------------
@given(shapes(min_dims=0, max_dims=2, max_side=3), st.integers(1, 4), st.integers(1, 4), st.booleans(), st.data())
def test_linear_forward(batch, n_in, n_out, bias, data):
    layer = nn.Linear(n_in, n_out, bias=bias)
    x = data.draw(arrays(batch + (n_in,))).astype(np.float32)
    out = layer(Tensor(x))
    np.testing.assert_array_equal(out.data, ops.linear(Tensor(x), layer.weight, layer.bias).data)
    expected = x @ layer.weight.data.T + (layer.bias.data if bias else 0)
    np.testing.assert_allclose(out.data, expected, rtol=1e-5, atol=1e-6)
    assert out.shape == batch + (n_out,) and out.dtype == np.float32


@given(shapes(min_dims=1, max_dims=3, max_side=4), st.booleans(), st.data())
def test_layer_norm_forward(shape, affine, data):
    dim = shape[-1]
    layer = nn.LayerNorm(dim, elementwise_affine=affine)
    if affine:
        layer.weight.data[...] = data.draw(arrays((dim,)))
        layer.bias.data[...] = data.draw(arrays((dim,)))
    x = data.draw(arrays(shape)).astype(np.float32)
    out = layer(Tensor(x)).data
    np.testing.assert_array_equal(out, ops.layer_norm(Tensor(x), layer.weight, layer.bias, 1e-6).data)
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    expected = (x - mu) / np.sqrt(var + 1e-6)
    if affine:
        expected = expected * layer.weight.data + layer.bias.data
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def conv2d_reference(x, w, b, stride, padding):
    """Direct convolution by loops over the kernel taps (independent of the op's im2col)."""
    x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    _, _, kh, kw = w.shape
    oh = (x.shape[2] - kh) // stride + 1
    ow = (x.shape[3] - kw) // stride + 1
    out = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i : i + stride * oh : stride, j : j + stride * ow : stride]  # (B, C, oh, ow)
            out += np.einsum("bchw,oc->bohw", patch, w[:, :, i, j])
    return out + (0 if b is None else b[None, :, None, None])


@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 2),
       st.integers(0, 1), st.booleans(), st.data())
def test_conv2d_forward(batch, c_in, c_out, k, stride, padding, bias, data):
    layer = nn.Conv2d(c_in, c_out, k, stride=stride, padding=padding, bias=bias)
    assert layer.weight.shape == (c_out, c_in, k, k)
    x = data.draw(arrays((batch, c_in, 5, 5))).astype(np.float32)
    out = layer(Tensor(x)).data
    np.testing.assert_array_equal(
        out, ops.conv2d(Tensor(x), layer.weight, layer.bias, stride=stride, padding=padding).data
    )
    expected = conv2d_reference(x, layer.weight.data, layer.bias.data if bias else None, stride, padding)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)


@given(st.sampled_from([(1, 2), (2, 4), (3, 3)]), st.data())
def test_group_norm_forward(groups_channels, data):
    groups, channels = groups_channels
    layer = nn.GroupNorm(groups, channels)
    layer.weight.data[...] = data.draw(arrays((channels,)))
    layer.bias.data[...] = data.draw(arrays((channels,)))
    x = data.draw(arrays((2, channels, 3, 2))).astype(np.float32)
    out = layer(Tensor(x)).data
    np.testing.assert_array_equal(out, ops.group_norm(Tensor(x), groups, layer.weight, layer.bias, 1e-5).data)
    g = x.reshape(2, groups, -1)
    normed = ((g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + 1e-5)).reshape(x.shape)
    expected = normed * layer.weight.data[:, None, None] + layer.bias.data[:, None, None]
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_group_norm_needs_divisible_channels():
    with pytest.raises(ValueError, match="do not split"):
        nn.GroupNorm(3, 4)


def test_activations():
    x = np.array([-2.0, -0.5, 0.3, 1.7])
    np.testing.assert_array_equal(nn.GELU()(Tensor(x)).data, ops.gelu(Tensor(x)).data)
    np.testing.assert_array_equal(nn.GELU("tanh")(Tensor(x)).data, ops.gelu(Tensor(x), approximate="tanh").data)
    np.testing.assert_array_equal(nn.Tanh()(Tensor(x)).data, np.tanh(x))
    np.testing.assert_array_equal(nn.ReLU()(Tensor(x)).data, np.maximum(x, 0))
    np.testing.assert_array_equal(nn.Identity()(Tensor(x)).data, x)


def bind(model):
    """(fn, arrays) for gradcheck: fn(x, *params) runs ``model`` with the checker's leaves as its parameters."""
    slots = [(m, name) for _, m in model.named_modules() for name in m._parameters]

    def fn(x, *params):
        for (m, name), p in zip(slots, params):
            m._parameters[name] = p
        return model(x)

    return fn, [m._parameters[name].data for m, name in slots]


def test_gradcheck_through_a_sequential():
    with default_dtype_as(np.float64):
        model = nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.LayerNorm(4), nn.Tanh(), nn.Linear(4, 2))
    assert all(p.dtype == np.float64 for p in model.parameters())
    model[2].weight.data[...] = np.random.default_rng(0).uniform(0.5, 1.5, 4)
    model[2].bias.data[...] = np.random.default_rng(1).uniform(-0.5, 0.5, 4)
    fn, params = bind(model)
    x = np.random.default_rng(2).standard_normal((2, 3))
    gradcheck(fn, [x] + params)


def test_gradcheck_through_conv_and_group_norm():
    with default_dtype_as(np.float64):
        model = nn.Sequential(nn.Conv2d(2, 4, 3, stride=1, padding=1), nn.GroupNorm(2, 4), nn.GELU())
    model[1].weight.data[...] = np.random.default_rng(0).uniform(0.5, 1.5, 4)
    fn, params = bind(model)
    x = np.random.default_rng(3).standard_normal((1, 2, 3, 3))
    gradcheck(fn, [x] + params)


# --- default initialisation ----------------------------------------------------------------------
def test_default_init_is_float32_on_cpu_and_pytorchs_uniform():
    manual_seed(0)
    layer = nn.Linear(64, 256)
    conv = nn.Conv2d(4, 64, 3)
    for p, fan_in in [(layer.weight, 64), (layer.bias, 64), (conv.weight, 36), (conv.bias, 36)]:
        bound = 1 / math.sqrt(fan_in)
        assert p.dtype == np.float32 and p.device == "cpu"
        assert np.abs(p.data).max() <= bound and np.abs(p.data).max() > 0.9 * bound
    assert layer.weight.data.std() == pytest.approx(1 / math.sqrt(3 * 64), rel=0.03)
    norm = nn.LayerNorm(5)
    np.testing.assert_array_equal(norm.weight.data, np.ones(5))
    np.testing.assert_array_equal(norm.bias.data, np.zeros(5))


def test_default_init_is_deterministic():
    a = nn.Linear(4, 4, generator=backend.generator(1))
    b = nn.Linear(4, 4, generator=backend.generator(1))
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    manual_seed(9)
    c = nn.Linear(4, 4)
    manual_seed(9)
    d = nn.Linear(4, 4)
    np.testing.assert_array_equal(c.weight.data, d.weight.data)
    assert not np.array_equal(a.weight.data, c.weight.data)


# --- initialisers ------------------------------------------------------------------------------
def truncated_normal_cdf(x, mean, std, a, b):
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    lo, hi = phi((a - mean) / std), phi((b - mean) / std)
    return (np.vectorize(phi)((np.clip(x, a, b) - mean) / std) - lo) / (hi - lo)


@pytest.mark.parametrize("mean,std,a,b", [(0.0, 1.0, -2.0, 2.0), (0.5, 2.0, -1.0, 3.0), (0.0, 0.02, -2.0, 2.0)])
def test_trunc_normal_has_the_exact_distribution(mean, std, a, b):
    t = Tensor(np.zeros(200_000, dtype=np.float32))
    init.trunc_normal_(t, std=std, mean=mean, a=a, b=b, generator=backend.generator(0))
    x = t.data.astype(np.float64)
    assert t.dtype == np.float32 and x.min() >= a and x.max() <= b
    # Kolmogorov distance to the truncated normal's CDF (its 0.1% critical value at n = 2e5 is 0.0044)
    xs = np.sort(x)[::997]
    ecdf = (np.arange(len(x))[::997] + 0.5) / len(x)
    assert np.max(np.abs(ecdf - truncated_normal_cdf(xs, mean, std, a, b))) < 0.005
    alpha, beta = (a - mean) / std, (b - mean) / std
    pdf = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    z = 0.5 * (math.erf(beta / math.sqrt(2)) - math.erf(alpha / math.sqrt(2)))  # the mass inside [a, b]
    true_mean = mean + std * (pdf(alpha) - pdf(beta)) / z
    true_var = std**2 * (1 + (alpha * pdf(alpha) - beta * pdf(beta)) / z - ((pdf(alpha) - pdf(beta)) / z) ** 2)
    assert x.mean() == pytest.approx(true_mean, abs=0.01 * std)
    assert x.std() == pytest.approx(math.sqrt(true_var), rel=0.01)


def test_trunc_normal_refuses_bounds_with_no_mass():
    with pytest.raises(ValueError, match="holds only"):
        init.trunc_normal_(Tensor(np.zeros(3)), std=0.01, a=1.0, b=2.0)
    with pytest.raises(ValueError, match="a < b"):
        init.trunc_normal_(Tensor(np.zeros(3)), a=1.0, b=1.0)


def test_fans_as_pytorch():
    assert init.fans((8, 4)) == (4, 8)
    assert init.fans((8, 4, 3, 3)) == (36, 72)
    with pytest.raises(ValueError):
        init.fans((5,))
    torch = torch_or_skip()
    for shape in [(8, 4), (8, 4, 3, 3), (2, 3, 5)]:
        assert init.fans(shape) == torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(shape))


@pytest.mark.parametrize("shape", [(300, 200), (64, 32, 3, 3)])
def test_xavier_uniform_bound_and_std(shape):
    t = Tensor(np.zeros(shape, dtype=np.float32))
    init.xavier_uniform_(t, gain=2.0, generator=backend.generator(0))
    fan_in, fan_out = init.fans(shape)
    bound = 2.0 * math.sqrt(6 / (fan_in + fan_out))
    assert np.abs(t.data).max() <= bound and np.abs(t.data).max() > 0.99 * bound
    assert t.data.std() == pytest.approx(bound / math.sqrt(3), rel=0.01)
    assert abs(t.data.mean()) < 0.01 * bound


def test_kaiming_and_lecun_uniform_bounds():
    t = Tensor(np.zeros((400, 100), dtype=np.float32))
    init.kaiming_uniform_(t, a=math.sqrt(5), generator=backend.generator(0))
    assert np.abs(t.data).max() == pytest.approx(1 / math.sqrt(100), rel=0.01)
    init.kaiming_uniform_(t, mode="fan_out", generator=backend.generator(0))
    assert np.abs(t.data).max() == pytest.approx(math.sqrt(6 / 400), rel=0.01)
    init.lecun_uniform_(t, generator=backend.generator(0))
    assert t.data.std() == pytest.approx(math.sqrt(1 / 100), rel=0.01)
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_uniform_(t, mode="fan_avg")


def test_lecun_normal_has_variance_one_over_fan_in():
    t = Tensor(np.zeros((500, 50, 2, 2), dtype=np.float32))
    init.lecun_normal_(t, generator=backend.generator(0))
    std = math.sqrt(1 / 200)
    assert t.data.std() == pytest.approx(std, rel=0.01)
    assert np.abs(t.data).max() <= 2 * std / 0.87962566103423978 * (1 + 1e-6)


def test_normal_uniform_and_constants():
    t = Tensor(np.zeros(100_000, dtype=np.float32))
    init.normal_(t, mean=1.0, std=3.0, generator=backend.generator(0))
    assert t.data.mean() == pytest.approx(1.0, abs=0.03) and t.data.std() == pytest.approx(3.0, rel=0.01)
    init.uniform_(t, -1.0, 3.0, generator=backend.generator(0))
    assert t.data.min() >= -1.0 and t.data.max() <= 3.0 and t.data.mean() == pytest.approx(1.0, abs=0.02)
    assert t.dtype == np.float32
    assert np.all(init.zeros_(t).data == 0) and np.all(init.ones_(t).data == 1)
    assert np.all(init.constant_(t, 0.25).data == 0.25)


@pytest.mark.parametrize("fill", [
    lambda t, g: init.trunc_normal_(t, std=0.02, generator=g),
    lambda t, g: init.normal_(t, generator=g),
    lambda t, g: init.xavier_uniform_(t, generator=g),
    lambda t, g: init.lecun_normal_(t, generator=g),
])
def test_initialisers_are_deterministic_given_a_generator(fill):
    a, b, c = (Tensor(np.zeros((6, 5), dtype=np.float32)) for _ in range(3))
    fill(a, backend.generator(4))
    fill(b, backend.generator(4))
    fill(c, backend.generator(5))
    np.testing.assert_array_equal(a.data, b.data)
    assert not np.array_equal(a.data, c.data)
    manual_seed(11)
    fill(a, None)
    manual_seed(11)
    fill(b, None)
    np.testing.assert_array_equal(a.data, b.data)
