"""The Vision Transformer: gradients of every variant, shapes and names, hooks, heads, the API.

Gradients are checked in float64 on a tiny model (8x8 images, 4x4 patches, D = 8, two
blocks, two heads) with ``autograd.gradcheck`` two ways: along one random direction per
parameter tensor (every parameter, two forwards each) and element by element for the
position embeddings, tokens and image. Parameters are randomised first, since the zero
head of a fresh model would make every other gradient zero.
"""
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npvit
from autograd import backend, gradcheck, ops, parallel
from autograd.ops.fused import LayerNormLinear
from autograd.nn import Identity
from autograd import Tensor, no_grad
from npvit import ViTConfig, VisionTransformer, create_model, list_models, mpp_corruption, mpp_targets
from npvit import model as model_module
from npvit.config import POS_EMBED_AT, POS_EMBED_KINDS

from tiny_models import TINY, adamw_steps, tiny
from checking import torch_or_skip
TINY_HYBRID = dict(TINY, patch_size=1, hybrid_layers=(1, 1), hybrid_width=4, hybrid_groups=2,
                   hybrid_stem_kernel=3, hybrid_stem_stride=1)


def images(batch=2, size=8, channels=3, seed=3):
    return np.random.default_rng(seed).uniform(0.0, 1.0, (batch, channels, size, size))


def _slot(model, name):
    """(owning module, attribute) of a dotted parameter name."""
    *path, attr = name.split(".")
    owner = model
    for part in path:
        owner = getattr(owner, part)
    return owner, attr


def functional(model, names, run=None):
    """fn(x, *tensors): ``run(model, x)`` with the named parameters swapped for the given tensors.

    gradcheck differentiates with respect to its own float64 copies of the inputs, so the
    copies must be what the model computes with.
    """
    run = run or (lambda m, x: m(x))
    slots = [_slot(model, n) for n in names]

    def fn(x, *tensors):
        saved = [owner._parameters[attr] for owner, attr in slots]
        for (owner, attr), t in zip(slots, tensors):
            owner._parameters[attr] = t
        try:
            return run(model, x)
        finally:
            for (owner, attr), p in zip(slots, saved):
                owner._parameters[attr] = p

    return fn


def check_directions(model, x, run=None, seed=0):
    """gradcheck of d/dt f(theta_k + t v_k) at t = 0 for one random unit direction v_k per parameter
    tensor (and one for the image): every parameter's gradient, two forwards each."""
    rng = np.random.default_rng(seed)
    named = list(model.named_parameters())
    dirs = [rng.standard_normal(p.shape) for _, p in named]
    dirs = [d / np.linalg.norm(d) for d in dirs]
    x_dir = rng.standard_normal(x.shape)
    inner = functional(model, [n for n, _ in named], run)

    def along(*ts):
        t_x, ts = ts[0], ts[1:]
        moved = [Tensor(p.data) + t * Tensor(d) for (_, p), t, d in zip(named, ts, dirs)]
        return inner(Tensor(x) + t_x * Tensor(x_dir), *moved)

    assert gradcheck(along, [np.zeros(1) for _ in range(len(named) + 1)])


def check_elements(model, x, names, run=None, with_image=False):
    """Element-by-element gradcheck for the named (small) parameters, and the image if asked."""
    params = dict(model.named_parameters())
    inputs = [x] + [params[n].data for n in names]
    check = list(range(0 if with_image else 1, len(inputs)))
    assert gradcheck(functional(model, names, run), inputs, check=check)


def position_names(model):
    return [n for n, _ in model.named_parameters() if n.rsplit(".", 1)[-1] in npvit.pos_embed.ALL_PARAM_NAMES]


VARIANTS = [(k, a) for k in POS_EMBED_KINDS for a in POS_EMBED_AT if k != "none" or a == "input"]


# --- gradients -------------------------------------------------------------------------
@pytest.mark.parametrize("pool", ["token", "avg"])
@pytest.mark.parametrize("kind, at", VARIANTS)
def test_gradients_every_position_embedding_and_pooling(kind, at, pool):
    model = tiny(pos_embed=kind, pos_embed_at=at, global_pool=pool, class_token=pool == "token")
    x = images()
    check_directions(model, x)
    names = position_names(model) + (["cls_token"] if pool == "token" else [])
    if names:
        check_elements(model, x, names, with_image=(kind, at) in (("relative", "input"), ("2d", "every_block")))


def test_gradients_gap_with_class_token_and_fc_norm():
    # timm's global_pool="avg" keeps the class token out of the mean and normalises after pooling
    model = tiny(global_pool="avg", class_token=True)
    assert isinstance(model.norm, Identity) and "fc_norm.weight" in model.state_dict()
    check_directions(model, images())


def test_gradients_hybrid():
    model = tiny(**{k: v for k, v in TINY_HYBRID.items() if k not in TINY or TINY[k] != v})
    assert model.cfg.grid_size == (2, 2)
    check_directions(model, images())
    check_elements(model, images(batch=1), ["pos_embed", "patch_embed.backbone.stem.norm.weight"], with_image=True)


def test_gradients_pretraining_head():
    model = tiny(representation_size=6)
    assert model.state_dict()["pre_logits.fc.weight"].shape == (6, 8)
    check_directions(model, images())
    check_elements(model, images(), ["pre_logits.fc.weight", "head.bias"])


def test_gradients_finetuning_head():
    model = tiny(representation_size=6).reset_classifier(5)
    assert "pre_logits.fc.weight" not in model.state_dict()
    # as it is after the swap (zero head: only the head gets a gradient) ...
    check_elements(model, images(), ["head.weight", "head.bias", "norm.weight"])
    # ... and once the head has moved away from zero
    model.head.weight.data[...] = np.random.default_rng(0).normal(size=model.head.weight.shape)
    check_directions(model, images())


@pytest.mark.parametrize("target", ["mean_color", "patch_color", "pixels"])
def test_gradients_masked_patch_prediction(target):
    model = tiny(mask_token=True, mpp_target=target, mpp_bits=1, mpp_grid=2)
    mask = np.array([[True, False, False, True], [False, True, False, False]])
    replace = np.array([[-1, 6, -1, -1], [-1, -1, 0, -1]])

    def run(m, x):
        return m.forward_mpp(x, mask=mask, replace_with=replace)

    check_directions(model, images(), run)
    check_elements(model, images(), ["mask_token"], run)


def test_gradients_with_dropout_and_stochastic_depth():
    model = tiny(pos_drop_rate=0.2, proj_drop_rate=0.2, attn_drop_rate=0.2, drop_path_rate=0.3, drop_rate=0.2).train()

    def run(m, x):
        backend.manual_seed(7)  # the same masks in every evaluation
        return m(x)

    check_directions(model, images(), run)


def _logits_and_grads(model, x, run):
    model.zero_grad()
    y = run(model, x)
    (y * Tensor(np.arange(y.size, dtype=np.float64).reshape(y.shape))).sum().backward()
    return y.data, {n: p.grad for n, p in model.named_parameters()}


@pytest.mark.parametrize("dropping", [False, True])
@pytest.mark.parametrize("kind, at", VARIANTS)
def test_the_last_block_makes_the_class_token_alone_with_the_same_logits_and_gradients(kind, at, dropping):
    # model(x) skips the last block's other tokens (their outputs reach no logit); forward_features runs it whole
    rates = dict(drop_path_rate=0.3, drop_rate=0.2, pos_drop_rate=0.2) if dropping else {}
    model = tiny(pos_embed=kind, pos_embed_at=at, depth=3, **rates)
    model.train(dropping)
    seen = []
    mlp = model.blocks[-1].mlp
    original = type(mlp).forward
    mlp.forward = lambda x, **kw: seen.append(x.shape) or original(mlp, x, **kw)

    def seeded(run):
        def go(m, x):
            backend.manual_seed(5)  # the same stochastic-depth masks on both paths (drawn per sample)
            return run(m, x)
        return go

    x = images(batch=3)
    alone, a_grads = _logits_and_grads(model, x, seeded(lambda m, x: m(x)))
    whole, w_grads = _logits_and_grads(model, x, seeded(lambda m, x: m.forward_head(m.forward_features(x))))
    # a last block with its relative bias runs whole (its table keeps a gradient); 4 patches + [class] = 5 tokens
    relative_last = kind.startswith("relative") and at != "input"
    assert seen == [(3, 5 if relative_last else 1, 8), (3, 5, 8)]
    np.testing.assert_allclose(alone, whole, rtol=1e-12, atol=1e-12)
    assert a_grads.keys() == w_grads.keys()
    for name in a_grads:
        assert a_grads[name] is not None and w_grads[name] is not None, name
        np.testing.assert_allclose(a_grads[name], w_grads[name], rtol=1e-10, atol=1e-12, err_msg=name)


def _two_ops(x, ln_weight, ln_bias, weight, bias=None, *, activation=None, eps=1e-6):
    """``layer_norm_linear`` as the two ops it folds."""
    return ops.linear(ops.layer_norm(x, ln_weight, ln_bias, eps), weight, bias, activation=activation)


def _steps(dropping):
    """Losses, then gradients and parameters after two AdamW steps of a float32 ViT of 4,160 tokens a batch (several
    of layer norm's row blocks), with every dropout and stochastic depth in the second block on or all off."""
    rates = dict(drop_rate=0.1, attn_drop_rate=0.1, proj_drop_rate=0.1, drop_path_rate=0.2) if dropping else {}
    model = VisionTransformer(img_size=16, patch_size=2, embed_dim=32, depth=2, num_heads=2, num_classes=3, **rates,
                              generator=np.random.default_rng(0))
    rng = np.random.default_rng(1)
    return adamw_steps(model, rng.standard_normal((64, 3, 16, 16), dtype=np.float32), rng.integers(0, 3, 64), seed=2)


@pytest.mark.parametrize("dropping", [False, True])
@pytest.mark.parametrize("threads", [1, 3])
def test_training_steps_are_bit_identical_with_the_layer_norms_apart(dropping, threads, monkeypatch):
    # the blocks' layer norms go into their branch's first layer as one op on the CPU (layer_norm_linear): losses,
    # gradients and AdamW's updates must be those of the two ops it folds, bit for bit, at any thread count
    made = []

    def noted(*args, **kwargs):
        out = ops.layer_norm_linear(*args, **kwargs)
        made.append(out._node.fn)
        return out

    before = parallel.threads()
    parallel.set_threads(threads)
    try:
        monkeypatch.setattr(model_module, "layer_norm_linear", noted)
        fused = _steps(dropping)
        monkeypatch.setattr(model_module, "layer_norm_linear", _two_ops)
        apart = _steps(dropping)
    finally:
        parallel.set_threads(before)
    assert made and set(made) == {LayerNormLinear}
    assert len(fused) == len(apart)
    for a, b in zip(fused, apart):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=6)
@given(
    grid=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    patch=st.integers(1, 3),
    heads=st.sampled_from([1, 2]),
    depth=st.integers(1, 2),
    mlp_ratio=st.sampled_from([0.5, 2.0]),
    qkv_bias=st.booleans(),
    kind=st.sampled_from(POS_EMBED_KINDS),
    pool=st.sampled_from(["token", "avg"]),
)
def test_gradients_drawn_configs(grid, patch, heads, depth, mlp_ratio, qkv_bias, kind, pool):
    size = (grid[0] * patch, grid[1] * patch)
    model = tiny(img_size=size, patch_size=patch, num_heads=heads, depth=depth, mlp_ratio=mlp_ratio,
                 qkv_bias=qkv_bias, pos_embed=kind, global_pool=pool, class_token=pool == "token", in_chans=2)
    x = np.random.default_rng(0).uniform(size=(2, 2) + size)
    check_directions(model, x)


# --- names, shapes, sizes ----------------------------------------------------------------
def timm_vit_base_names():
    """timm's vit_base_patch16_224 state dict, written out by hand from its source."""
    D, M = 768, 3072
    shapes = {"cls_token": (1, 1, D), "pos_embed": (1, 197, D),
              "patch_embed.proj.weight": (D, 3, 16, 16), "patch_embed.proj.bias": (D,)}
    for i in range(12):
        b = f"blocks.{i}."
        shapes.update({
            b + "norm1.weight": (D,), b + "norm1.bias": (D,),
            b + "attn.qkv.weight": (3 * D, D), b + "attn.qkv.bias": (3 * D,),
            b + "attn.proj.weight": (D, D), b + "attn.proj.bias": (D,),
            b + "norm2.weight": (D,), b + "norm2.bias": (D,),
            b + "mlp.fc1.weight": (M, D), b + "mlp.fc1.bias": (M,),
            b + "mlp.fc2.weight": (D, M), b + "mlp.fc2.bias": (D,),
        })
    shapes.update({"norm.weight": (D,), "norm.bias": (D,), "head.weight": (1000, D), "head.bias": (1000,)})
    return shapes


@pytest.mark.slow
def test_vit_base_forward_backward_on_cpu():
    """ViT-B/16 at 224x224, batch 2: timm's names and shapes, 86,567,656 parameters, a full backward.

    About 6 s and 1.5 GB on one core; marked slow only so quick local runs can skip it.
    """
    model = create_model("vit_base_patch16_224", generator=np.random.default_rng(0))
    state = model.state_dict()
    assert {k: v.shape for k, v in state.items()} == timm_vit_base_names()
    assert list(state)[:3] == ["cls_token", "pos_embed", "patch_embed.proj.weight"]
    assert model.num_parameters() == 86_567_656
    model.head.weight.data[...] = np.random.default_rng(1).normal(0, 0.02, model.head.weight.shape)
    x = np.random.default_rng(2).standard_normal((2, 3, 224, 224)).astype(np.float32)
    logits, extras = model.forward_intermediates(x)
    assert logits.shape == (2, 1000) and logits.dtype == np.float32
    assert [a.shape for a in extras["attention"]] == [(2, 12, 197, 197)] * 12
    assert [t.shape for t in extras["tokens"]] == [(2, 197, 768)] * 13
    logits.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape and p.grad.dtype == np.float32, name
        assert np.isfinite(p.grad).all(), name
    assert np.abs(model.patch_embed.proj.weight.grad).max() > 0


def test_model_sizes():
    # ViT-B/16 86.6M, ViT-L/16 304.3M, ViT-H/14 632.0M with a 1000-class head (timm's counts), from a
    # one-block model plus the remaining blocks, so the big ones need not be built
    for name, expected in {"vit_base_patch16_224": 86_567_656, "vit_large_patch16_224": 304_326_632,
                           "vit_huge_patch14_224": 632_045_800}.items():
        model = create_model(name, depth=1)
        per_block = model.blocks[0].num_parameters()
        assert model.num_parameters() + (npvit.get_config(name).depth - 1) * per_block == expected


def test_cifar_tiny_is_the_benchmark_config():
    cfg = npvit.get_config("vit_cifar_tiny")
    assert (cfg.img_size, cfg.patch_size, cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_hidden_dim) == (
        32, 4, 192, 9, 3, 768)
    assert cfg.num_patches == 64


def test_gap_names_follow_timm():
    names = create_model("vit_cifar_tiny", depth=1, global_pool="avg", class_token=False).state_dict()
    assert "fc_norm.weight" in names and "norm.weight" not in names and "cls_token" not in names
    assert names["pos_embed"].shape == (1, 64, 192)


def test_hybrid_names_and_shapes():
    model = create_model("vit_base_r50_s16_224", depth=1)
    state = model.state_dict()
    assert state["patch_embed.backbone.stem.conv.weight"].shape == (64, 3, 7, 7)
    assert state["patch_embed.backbone.stages.2.blocks.8.conv3.weight"].shape == (1024, 256, 1, 1)
    assert state["patch_embed.backbone.stages.1.blocks.0.downsample.conv.weight"].shape == (512, 256, 1, 1)
    assert "patch_embed.backbone.stages.1.blocks.1.downsample.conv.weight" not in state
    assert state["patch_embed.proj.weight"].shape == (768, 1024, 1, 1)
    assert state["pos_embed"].shape == (1, 197, 768)
    assert np.all(state["patch_embed.backbone.stages.0.blocks.0.norm3.weight"] == 0)


def test_hybrid_cifar_makes_64_tokens():
    model = create_model("vit_hybrid_cifar_tiny", depth=1)
    assert model.cfg.grid_size == (8, 8)
    x = np.random.default_rng(0).uniform(size=(2, 3, 32, 32)).astype(np.float32)
    tokens = model.forward_features(x)
    assert tokens.shape == (2, 65, 192) and tokens.dtype == np.float32


# --- equivalence with independent references --------------------------------------------
def test_patch_embedding_is_a_strided_convolution():
    model = tiny(depth=1)
    x = images()
    w, b = model.patch_embed.proj.weight.data, model.patch_embed.proj.bias.data
    expected = np.empty((2, 4, 8))
    for gy in range(2):
        for gx in range(2):
            patch = x[:, :, 4 * gy:4 * gy + 4, 4 * gx:4 * gx + 4]
            expected[:, 2 * gy + gx] = np.einsum("bcij,dcij->bd", patch, w) + b
    np.testing.assert_allclose(model.patch_embed(Tensor(x)).data, expected, atol=1e-12)


def numpy_vit(model, x):
    """An independent NumPy forward of a 1-D position, [class]-token ViT (eval mode)."""
    s = {k: v for k, v in model.state_dict().items()}
    cfg = model.cfg
    B, P, D, H = x.shape[0], cfg.patch_size, cfg.embed_dim, cfg.num_heads
    gh, gw = cfg.grid_size
    patches = x.reshape(B, 3, gh, P, gw, P).transpose(0, 2, 4, 1, 3, 5).reshape(B, gh * gw, -1)
    z = patches @ s["patch_embed.proj.weight"].reshape(D, -1).T + s["patch_embed.proj.bias"]
    z = np.concatenate([np.broadcast_to(s["cls_token"], (B, 1, D)), z], axis=1) + s["pos_embed"]

    def ln(v, p):
        mu, var = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
        return (v - mu) / np.sqrt(var + 1e-6) * s[p + ".weight"] + s[p + ".bias"]

    from math import erf
    gelu = np.vectorize(lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2))))
    for i in range(cfg.depth):
        b = f"blocks.{i}."
        h = ln(z, b + "norm1")
        q, k, v = np.split(h @ s[b + "attn.qkv.weight"].T + s[b + "attn.qkv.bias"], 3, axis=-1)
        q, k, v = (t.reshape(B, -1, H, D // H).transpose(0, 2, 1, 3) for t in (q, k, v))
        logits = q @ k.transpose(0, 1, 3, 2) / np.sqrt(D // H)
        a = np.exp(logits - logits.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        o = (a @ v).transpose(0, 2, 1, 3).reshape(B, -1, D)
        z = z + o @ s[b + "attn.proj.weight"].T + s[b + "attn.proj.bias"]
        h = gelu(ln(z, b + "norm2") @ s[b + "mlp.fc1.weight"].T + s[b + "mlp.fc1.bias"])
        z = z + h @ s[b + "mlp.fc2.weight"].T + s[b + "mlp.fc2.bias"]
    return ln(z, "norm")[:, 0] @ s["head.weight"].T + s["head.bias"]


def test_forward_matches_numpy_reference():
    model = tiny()
    x = images()
    np.testing.assert_allclose(model(x).data, numpy_vit(model, x), atol=1e-10)


def test_position_placements_agree():
    # on every output token: with [class] pooling the last block's relative term never reaches the
    # logits, as the [class] token has no offsets
    x = images()
    for kind in ("1d", "2d", "relative"):
        names = npvit.pos_embed.PARAM_NAMES[kind]
        shared = tiny(pos_embed=kind, pos_embed_at="every_block_shared")
        table = {n: shared.state_dict()[n] for n in names}
        rest = {k: v for k, v in shared.state_dict().items() if k not in table}
        # every block holding a copy of the shared table is the shared placement
        own = tiny(pos_embed=kind, pos_embed_at="every_block")
        own.load_state_dict({**rest, **{f"blocks.{i}.{n}": table[n] for i in range(2) for n in names}})
        np.testing.assert_allclose(own.forward_features(x).data, shared.forward_features(x).data, atol=1e-12)
        # once at the input is every block its own with nothing after the first
        at_input = tiny(pos_embed=kind, pos_embed_at="input")
        at_input.load_state_dict({**rest, **table})
        own.load_state_dict({**rest, **{f"blocks.0.{n}": table[n] for n in names},
                             **{f"blocks.1.{n}": np.zeros_like(table[n]) for n in names}})
        np.testing.assert_allclose(own.forward_features(x).data, at_input.forward_features(x).data, atol=1e-12)
        assert not np.allclose(at_input.forward_features(x).data, shared.forward_features(x).data)


def test_no_position_embedding_ignores_patch_order():
    model = tiny(pos_embed="none")
    x = images()
    swapped = x.copy()
    swapped[:, :, :4, :4], swapped[:, :, 4:, 4:] = x[:, :, 4:, 4:], x[:, :, :4, :4]
    np.testing.assert_allclose(model(swapped).data, model(x).data, atol=1e-12)
    assert not np.allclose(tiny(pos_embed="1d")(swapped).data, tiny(pos_embed="1d")(x).data)


# --- analysis hooks ---------------------------------------------------------------------
def test_attention_and_tokens_hooks():
    model = tiny(pos_embed="relative")
    x = images()
    logits, extras = model.forward_intermediates(x)
    np.testing.assert_array_equal(logits.data, model(x).data)
    assert len(extras["attention"]) == 2 and len(extras["tokens"]) == 3
    for a in extras["attention"]:
        assert a.shape == (2, 2, 5, 5) and not a.requires_grad
        np.testing.assert_allclose(a.data.sum(-1), 1.0)
    np.testing.assert_allclose(model.norm(extras["tokens"][-1]).data, model.forward_features(x).data)
    _, only = model.forward_intermediates(x, attention=False)
    assert only["attention"] == [] and len(only["tokens"]) == 3


@pytest.mark.parametrize("fields", [dict(), dict(global_pool="avg", representation_size=6, gelu_approximate="tanh")])
def test_logits_match_the_pytorch_twin(fields):
    torch = torch_or_skip()
    from npvit.torch_reference import build_torch_vit, torch_unsupported

    model = tiny(**fields)
    assert torch_unsupported(model.cfg) is None
    twin = build_torch_vit(model.cfg).double()
    twin.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in model.state_dict().items()})
    x = images()
    np.testing.assert_allclose(twin(torch.from_numpy(x)).detach().numpy(), model(x).data, rtol=1e-10, atol=1e-12)
    assert torch_unsupported(model.cfg.replace(pos_embed="2d")) is not None


# --- masked patch prediction ------------------------------------------------------------
def test_mpp_corruption_proportions():
    selected, mask, replace = mpp_corruption(64, 100, np.random.default_rng(0))
    assert selected.shape == mask.shape == replace.shape == (64, 100)
    assert (selected.sum(1) == 50).all()
    assert not (mask & ~selected).any() and ((replace >= 0) <= selected).all()
    assert abs(mask.sum() / selected.sum() - 0.8) < 0.02
    assert abs((replace >= 0).sum() / selected.sum() - 0.1) < 0.02
    assert replace.max() < 64 * 100 and not ((replace >= 0) & mask).any()


def test_mask_token_replaces_patch_embeddings():
    model = tiny(mask_token=True, mpp_target="mean_color", mpp_bits=1)
    everything = np.ones((2, 4), dtype=bool)
    a, b = images(seed=1), images(seed=2)
    np.testing.assert_allclose(model.forward_mpp(a, mask=everything).data, model.forward_mpp(b, mask=everything).data,
                               atol=1e-12)
    assert not np.allclose(model.forward_mpp(a).data, model.forward_mpp(b).data)


def test_replace_with_takes_other_patches():
    model = tiny()
    x = images()
    # image 0 gets image 1's patches, image 1 keeps its own
    replace = np.array([[4, 5, 6, 7], [-1, -1, -1, -1]])
    out = model.forward_features(x, replace_with=replace).data
    np.testing.assert_allclose(out[0], out[1], atol=1e-12)
    with pytest.raises(ValueError, match="replace_with"):
        model.forward_features(x, replace_with=np.full((2, 4), 8))
    with pytest.raises(ValueError, match="mask token"):
        model.forward_features(x, mask=np.ones((2, 4), dtype=bool))


def test_mpp_targets():
    cfg = ViTConfig(**TINY, mpp_target="mean_color")
    x = np.zeros((1, 3, 8, 8))
    x[0, :, :4, :4] = np.array([0.99, 0.5, 0.0])[:, None, None]                # patch 0: colour (7, 4, 0) at 3 bits
    x[0, :, 4:, 4:] = 1.0                                                      # patch 3: white
    np.testing.assert_array_equal(mpp_targets(x, cfg), [[7 * 64 + 4 * 8, 0, 0, 511]])
    cells = mpp_targets(x, cfg.replace(mpp_target="patch_color", mpp_grid=2))
    assert cells.shape == (1, 4, 4) and (cells[0, 0] == 7 * 64 + 4 * 8).all() and (cells[0, 3] == 511).all()
    half = x.copy()
    half[0, :, 0:2, 0:2] = 0.0
    half_cells = mpp_targets(half, cfg.replace(mpp_target="patch_color", mpp_grid=2))
    assert half_cells[0, 0].tolist() == [0] + [7 * 64 + 4 * 8] * 3
    model = tiny(mpp_target="pixels")
    pixels = model.mpp_targets(x)
    assert pixels.shape == (1, 4, 48)
    # in the patch embedding's order: projecting the targets is the patch embedding
    w, b = model.patch_embed.proj.weight.data, model.patch_embed.proj.bias.data
    np.testing.assert_allclose(pixels @ w.reshape(8, -1).T + b, model.patch_embed(Tensor(x)).data, atol=1e-12)
    assert model.forward_mpp(x).shape == (1, 4, 48)
    assert tiny(mpp_target="patch_color", mpp_grid=2).forward_mpp(x).shape == (1, 4, 4, 512)
    assert tiny(mpp_target="mean_color", in_chans=1).forward_mpp(x[:, :1]).shape == (1, 4, 8)


# --- heads and resolution -----------------------------------------------------------------
def test_heads_initialise_to_zero():
    model = create_model("vit_cifar_tiny", depth=1, representation_size=192)
    assert not model.head.weight.data.any() and not model.head.bias.data.any()
    logits = model(np.zeros((1, 3, 32, 32), dtype=np.float32))
    assert not logits.data.any()
    model.reset_classifier(100)
    assert model.head.weight.shape == (100, 192) and not model.head.weight.data.any()
    assert model.cfg.num_classes == 100 and model.cfg.representation_size is None
    assert model.head.weight.dtype == np.float32
    model.reset_classifier(0)
    assert model(np.zeros((1, 3, 32, 32))).shape == (1, 192)


def test_set_img_size_same_size_changes_nothing():
    for kind in POS_EMBED_KINDS:
        model = tiny(pos_embed=kind)
        x = images()
        before = model(x).data
        model.set_img_size(8)
        np.testing.assert_array_equal(model(x).data, before)


def test_set_img_size_runs_at_the_new_grid():
    for kind, at in VARIANTS:
        model = tiny(pos_embed=kind, pos_embed_at=at)
        cls_pos = model.pos_embed.data[:, :1].copy() if kind == "1d" and at != "every_block" else None
        model.set_img_size((12, 16), interpolation="bilinear")
        assert model.cfg.grid_size == (3, 4)
        assert model(np.zeros((1, 3, 12, 16))).shape == (1, 3)
        if cls_pos is not None:
            np.testing.assert_array_equal(model.pos_embed.data[:, :1], cls_pos)


# --- initialisation ---------------------------------------------------------------------
def test_initialisation_follows_the_reference():
    model = create_model("vit_cifar_tiny", depth=2, generator=np.random.default_rng(0))
    s = model.state_dict()
    D = 192
    assert abs(s["pos_embed"].std() - 0.02) < 0.002 and abs(s["cls_token"].std() - 0.02) < 0.01
    assert np.abs(s["blocks.0.mlp.fc1.weight"]).max() <= np.sqrt(6 / (D + 4 * D))
    assert np.abs(s["blocks.0.mlp.fc1.weight"]).max() > 0.9 * np.sqrt(6 / (D + 4 * D))
    assert np.abs(s["blocks.0.attn.qkv.weight"]).max() <= np.sqrt(3 / D)
    assert np.abs(s["blocks.0.attn.qkv.weight"]).max() > 0.9 * np.sqrt(3 / D)
    assert 0 < np.abs(s["blocks.0.mlp.fc1.bias"]).max() < 1e-5 and not s["blocks.0.attn.qkv.bias"].any()
    assert abs(s["patch_embed.proj.weight"].std() - np.sqrt(1 / 48)) < 0.01
    assert (s["blocks.1.norm1.weight"] == 1).all() and not s["head.weight"].any()
    again = create_model("vit_cifar_tiny", depth=2, generator=np.random.default_rng(0)).state_dict()
    assert all(np.array_equal(s[k], again[k]) for k in s)


# --- the API -----------------------------------------------------------------------------
def test_list_and_create_models():
    names = list_models()
    for name in ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224", "vit_base_patch32_224",
                 "vit_large_patch16_224", "vit_huge_patch14_224", "vit_cifar_tiny", "vit_cifar_small",
                 "vit_hybrid_cifar_tiny", "vit_base_r50_s16_224"):
        assert name in names
    assert names == sorted(names) and list_models("vit_cifar*") == [n for n in names if n.startswith("vit_cifar")]
    with pytest.raises(ValueError, match="unknown model 'vit_gigantic'.*vit_base_patch16_224"):
        create_model("vit_gigantic")
    with pytest.raises(ValueError, match="unknown config field.*embed_dims.*valid fields: img_size"):
        create_model("vit_cifar_tiny", embed_dims=10)
    model = create_model("vit_cifar_tiny", depth=1, num_classes=100, drop_path_rate=0.1, qkv_bias=False)
    assert model.cfg.depth == 1 and model.head.weight.shape == (100, 192) and model.blocks[0].attn.qkv.bias is None
    # the study's hybrid sees the same 8x8 grid of tokens as the plain model it is compared with
    mini, hybrid = npvit.get_config("vit_cifar_mini"), npvit.get_config("vit_hybrid_cifar_mini")
    assert mini.grid_size == hybrid.grid_size == (8, 8) and hybrid.embed_dim == mini.embed_dim


def test_config_validation_and_serialisation():
    for bad, match in [
        (dict(embed_dim=10, num_heads=3), "does not split into 3 heads"),
        (dict(img_size=30), "not divisible by patch_size"),
        (dict(pos_embed="sinusoid"), "pos_embed must be one of"),
        (dict(pos_embed_at="output"), "pos_embed_at must be one of"),
        (dict(pos_embed="none", pos_embed_at="every_block"), "adds nothing"),
        (dict(global_pool="token", class_token=False), "needs class_token"),
        (dict(global_pool="max"), "global_pool must be"),
        (dict(drop_path_rate=1.0), "drop_path_rate"),
        (dict(mpp_target="depth"), "mpp_target"),
    ]:
        with pytest.raises(ValueError, match=match):
            npvit.get_config("vit_cifar_tiny", **bad)
    cfg = npvit.get_config("vit_hybrid_cifar_tiny", img_size=(32, 64))
    assert ViTConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match="unknown config field"):
        ViTConfig.from_dict({**cfg.to_dict(), "depthh": 3})


def test_input_checks_and_conversion():
    model = tiny()
    with pytest.raises(ValueError, match=r"image size \(16, 16\) does not match the model's img_size \(8, 8\)"):
        model(images(size=16))
    with pytest.raises(ValueError, match="not divisible by the patch size 4"):
        model(images(size=10))
    with pytest.raises(ValueError, match="2 channels"):
        model(images(channels=2))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        model(images()[0])
    x = images()
    expected = model(x).data
    np.testing.assert_array_equal(model(Tensor(x)).data, expected)
    float32 = create_model("vit_cifar_tiny", depth=1)
    out = float32((np.random.default_rng(0).uniform(size=(1, 3, 32, 32)) * 255).astype(np.uint8))
    assert out.dtype == np.float32


def test_dropout_only_in_training():
    model = tiny(pos_drop_rate=0.3, proj_drop_rate=0.3, attn_drop_rate=0.3, drop_path_rate=0.3)
    x = images()
    with no_grad():
        assert np.array_equal(model(x).data, model(x).data)
        model.train()
        assert not np.allclose(model(x).data, model.eval()(x).data)


def test_gap_flags_build_the_papers_gap_model_at_its_own_learning_rate():
    from npvit import recipes
    from npvit.cli import build_parser, config_from_args

    def resolved(*flags):
        return recipes.resolve(config_from_args(build_parser().parse_args(list(flags))))

    token, gap = resolved(), resolved("--pool", "avg")
    assert gap.model_overrides == {"global_pool": "avg", "class_token": False}
    assert token.lr == 1e-3 and gap.lr == pytest.approx(1e-3 * 3 / 8)              # Figure 9: 8e-4 vs 3e-4
    assert resolved("--pool", "avg", "--lr", "0.002").lr == 0.002
    cfg = npvit.get_config("vit_cifar_mini", **gap.model_overrides)
    assert not cfg.class_token and cfg.num_prefix_tokens == 0
    mpp = resolved("--mode", "mpp")
    assert (mpp.optimizer, mpp.lr, mpp.weight_decay) == ("adam", 2e-4, 0.0)        # Appendix B.1.2
    tuned = resolved("--init", "x.npz")
    assert (tuned.batch_size, tuned.label_smoothing, tuned.rand_ops) == (512, 0.0, 0)
    drops = resolved("--proj-dropout", "0.1", "--pos-dropout", "0.2").model_overrides
    assert drops == {"proj_drop_rate": 0.1, "pos_drop_rate": 0.2}


def test_position_dropout_follows_every_addition():
    model = tiny(pos_embed_at="every_block", pos_drop_rate=0.5).train()
    calls = []
    model.pos_drop.forward = lambda x: calls.append(1) or x
    model(np.zeros((1, 3, 8, 8)))
    assert len(calls) == model.cfg.depth
    calls.clear()
    at_input = tiny(pos_drop_rate=0.5).train()
    at_input.pos_drop.forward = lambda x: calls.append(1) or x
    at_input(np.zeros((1, 3, 8, 8)))
    assert len(calls) == 1
