"""Checkpoints: our round trips bit for bit and atomically; timm-named and Google ViT files load.

The Google files are written by the tests in exactly the layout of the
google-research/vision_transformer checkpoints (Flax names, kernels (in, out), HWIO
convolutions, attention kernels (D, heads, d)), and the loaded model's logits are
compared with an independent NumPy forward written in that layout (NHWC, einsums over
the Flax kernels, flax's tanh GELU, TF "SAME" padding), plain and hybrid.
"""
import json
import os

import numpy as np
import pytest

import npvit
from autograd import backend
from autograd.nn import StateDictError
from npvit import Checkpoint, VisionTransformer, create_model, load_checkpoint, read_checkpoint, save_checkpoint
from npvit import pos_embed as pe

from tiny_models import TINY, tiny
from checking import torch_or_skip


def images(batch=2, size=8, seed=3):
    return np.random.default_rng(seed).uniform(0.0, 1.0, (batch, 3, size, size))


def assert_same_state(a, b):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]), k


# --- our format ---------------------------------------------------------------------------
@pytest.mark.parametrize("fields", [
    dict(),
    dict(pos_embed="relative", pos_embed_at="every_block"),
    dict(pos_embed="2d", pos_embed_at="every_block_shared", global_pool="avg", class_token=False),
    dict(mask_token=True, mpp_target="patch_color", mpp_grid=2, representation_size=5),
    dict(patch_size=1, hybrid_layers=(1,), hybrid_width=4, hybrid_groups=2, hybrid_stem_kernel=3),
])
def test_round_trip_is_bit_exact(tmp_path, fields):
    model = tiny(**fields)
    optimizer = {
        "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0, 1, 2]}],
        "state": {"0.exp_avg": np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32),
                  "0.step": np.asarray(5, dtype=np.int64)},
        "step": 5,
    }
    extra = {"epoch": 2, "lr_scale": np.float32(0.25), "seen": [1, 2, None], 3: "int key", "ema": None}
    path = save_checkpoint(tmp_path / "model.npz", model, step=123, optimizer_state=optimizer, extra=extra)
    assert path == str(tmp_path / "model.npz") and os.listdir(tmp_path) == ["model.npz"]

    ck = read_checkpoint(path)
    assert ck.format == "npvit" and ck.step == 123 and ck.config == model.cfg
    assert_same_state(ck.state, model.state_dict())
    assert ck.optimizer_state["param_groups"] == optimizer["param_groups"]
    assert ck.optimizer_state["step"] == 5
    for k, v in optimizer["state"].items():
        got = ck.optimizer_state["state"][k]
        assert got.dtype == v.dtype and np.array_equal(got, v)
    assert ck.extra == {"epoch": 2, "lr_scale": 0.25, "seen": [1, 2, None], 3: "int key", "ema": None}
    assert type(ck.extra["lr_scale"]) is np.float32

    loaded = load_checkpoint(path)
    assert loaded.cfg == model.cfg
    assert_same_state(loaded.state_dict(), model.state_dict())
    x = images()
    np.testing.assert_array_equal(loaded.eval()(x).data, model(x).data)


def test_round_trip_float32(tmp_path):
    model = create_model("vit_cifar_tiny", depth=2, generator=np.random.default_rng(0))
    loaded = load_checkpoint(save_checkpoint(tmp_path / "a.npz", model))
    assert_same_state(loaded.state_dict(), model.state_dict())
    assert loaded.dtype == np.float32


def test_file_is_plain_npz_with_json_metadata(tmp_path):
    model = tiny()
    path = save_checkpoint(tmp_path / "a.npz", model, step=9)
    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(str(z["__npvit__"]))
        assert set(z.files) == set(model.state_dict()) | {"__npvit__"}
    assert meta["format"] == "npvit" and meta["step"] == 9 and meta["config"]["embed_dim"] == 8


def test_save_is_atomic(tmp_path, monkeypatch):
    model = tiny()
    path = save_checkpoint(tmp_path / "a.npz", model, step=1)
    before = open(path, "rb").read()

    def broken_savez(f, **arrays):
        f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, step=2)
    monkeypatch.undo()
    assert open(path, "rb").read() == before and os.listdir(tmp_path) == ["a.npz"]
    with pytest.raises(TypeError, match="cannot store a object"):
        save_checkpoint(tmp_path / "b.npz", model, extra={"bad": object()})
    assert os.listdir(tmp_path) == ["a.npz"]


def test_unreadable_files(tmp_path):
    np.savez(tmp_path / "pickled.npz", a=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="without unpickling"):
        read_checkpoint(tmp_path / "pickled.npz")
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(ValueError, match=r"not a checkpoint npvit knows.*\['weights'\]"):
        read_checkpoint(tmp_path / "other.npz")


def test_mismatch_names_every_key(tmp_path):
    state = tiny().state_dict()
    state["blocks.1.mlp.fc2.weight"] = np.zeros((8, 5))
    del state["blocks.0.norm2.bias"]
    state["blocks.0.attn.extra"] = np.zeros(2)
    path = tmp_path / "timm.npz"
    np.savez(path, **state)
    with pytest.raises(StateDictError) as info:
        load_checkpoint(path, num_heads=2, global_pool="token")
    message = str(info.value)
    assert str(path) in message and "timm format" in message
    assert "blocks.0.norm2.bias" in message and "blocks.0.attn.extra" in message
    assert "blocks.1.mlp.fc2.weight given (8, 5) but the model has (8, 32)" in message
    ours = save_checkpoint(tmp_path / "ours.npz", tiny())
    with pytest.raises(StateDictError, match="missing keys.*blocks.2.norm1.weight"):
        load_checkpoint(ours, depth=3)


def test_fine_tune_from_our_checkpoint(tmp_path):
    model = tiny(representation_size=6)
    path = save_checkpoint(tmp_path / "a.npz", model)
    tuned = load_checkpoint(path, img_size=12, num_classes=5, interpolation="bilinear", drop_path_rate=0.1)
    assert tuned.cfg.grid_size == (3, 3) and tuned.cfg.drop_path_rate == 0.1
    assert "pre_logits.fc.weight" not in tuned.state_dict() and not tuned.head.weight.data.any()
    expected = pe.resize("pos_embed", model.pos_embed.data, (2, 2), (3, 3), 1, "bilinear")
    np.testing.assert_array_equal(tuned.pos_embed.data, expected)
    np.testing.assert_array_equal(tuned.blocks[1].mlp.fc1.weight.data, model.blocks[1].mlp.fc1.weight.data)
    same = load_checkpoint(path, img_size=8, num_classes=3)
    assert_same_state(same.state_dict(), model.state_dict())


# --- timm-named state dicts -------------------------------------------------------------------
@pytest.mark.parametrize("fields", [
    dict(),
    dict(representation_size=5),
    dict(global_pool="avg"),  # timm's GAP: class token kept, fc_norm after pooling
    dict(global_pool="avg", class_token=False, qkv_bias=False, mlp_ratio=2.0),
    dict(num_classes=0),
    dict(img_size=(8, 12)),
    dict(patch_size=1, hybrid_layers=(1, 2), hybrid_width=4, hybrid_groups=2, img_size=32,
         hybrid_convention="timm"),
])
def test_timm_state_dict_loads_with_its_config(tmp_path, fields):
    model = tiny(**fields)
    path = tmp_path / "timm.npz"
    np.savez(path, **model.state_dict())
    hints = {"num_heads": 2}
    if model.cfg.class_token and not model.cfg.use_fc_norm:  # the keys cannot tell the pooling
        hints["global_pool"] = model.cfg.global_pool
    if isinstance(model.cfg.img_size, tuple):
        hints["img_size"] = model.cfg.img_size
    if model.cfg.hybrid_layers is not None:
        hints["hybrid_groups"] = 2
    ck = read_checkpoint(path, **hints)
    assert ck.format == "timm" and ck.step is None
    assert ck.config == model.cfg
    # load_checkpoint's img_size is the size to fine-tune at; the file's own size goes to read_checkpoint
    loaded = load_checkpoint(ck)
    x = np.random.default_rng(0).uniform(size=(2, 3) + model.cfg.image_hw)
    np.testing.assert_array_equal(loaded.eval()(x).data, model(x).data)


def test_timm_inference_defaults_and_errors(tmp_path):
    model = create_model("vit_small_patch16_224", depth=1, generator=np.random.default_rng(0))
    path = tmp_path / "s.npz"
    np.savez(path, **model.state_dict())
    with pytest.raises(ValueError, match="fit both .* pass global_pool='token' .* or global_pool='avg'"):
        read_checkpoint(path)
    cfg = read_checkpoint(path, global_pool="token").config
    assert (cfg.num_heads, cfg.img_size, cfg.patch_size, cfg.num_classes) == (6, 224, 16, 1000)
    # GAP without fc_norm (the final LayerNorm before the average) loads when asked for
    assert read_checkpoint(path, global_pool="avg").config.use_fc_norm is False
    state = model.state_dict()
    state["pos_embed"] = state["pos_embed"][:, :-1]
    np.savez(path, **state)
    with pytest.raises(ValueError, match="195 patch positions, not a square grid"):
        read_checkpoint(path, global_pool="token")
    with pytest.raises(ValueError, match="unknown config field"):
        read_checkpoint(tmp_path / "s.npz", heads=3)


# --- Google's layout --------------------------------------------------------------------------
def google_checkpoint(rng, D=8, heads=2, depth=2, patch=4, grid=2, classes=3, rep=None, cls=True, resnet=None,
                      prefix=""):
    """Random arrays under the names and layouts of a google-research/vision_transformer .npz."""
    def r(*shape, scale=0.5):
        return rng.normal(0.0, scale, shape)

    a, d, M = {}, D // heads, 2 * D
    channels = 3
    if resnet is not None:
        width, layers = resnet
        a["conv_root/kernel"], a["gn_root/scale"], a["gn_root/bias"] = r(7, 7, 3, width), 1 + r(width), r(width)
        cin = width
        for i, n in enumerate(layers):
            w = width * 2**i
            for j in range(n):
                u = f"block{i + 1}/unit{j + 1}/"
                for name, shape in (("conv1", (1, 1, cin, w)), ("conv2", (3, 3, w, w)), ("conv3", (1, 1, w, 4 * w))):
                    a[u + name + "/kernel"] = r(*shape)
                for name, c in (("gn1", w), ("gn2", w), ("gn3", 4 * w)):
                    a[u + name + "/scale"], a[u + name + "/bias"] = 1 + r(c), r(c)
                if j == 0:
                    a[u + "conv_proj/kernel"] = r(1, 1, cin, 4 * w)
                    a[u + "gn_proj/scale"], a[u + "gn_proj/bias"] = 1 + r(4 * w), r(4 * w)
                cin = 4 * w
        channels = cin
    a["embedding/kernel"], a["embedding/bias"] = r(patch, patch, channels, D), r(D)
    if cls:
        a["cls"] = r(1, 1, D)
    a["Transformer/posembed_input/pos_embedding"] = r(1, grid * grid + cls, D)
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}/"
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            a[b + ln + "/scale"], a[b + ln + "/bias"] = 1 + r(D), r(D)
        for n in ("query", "key", "value"):
            a[b + f"MultiHeadDotProductAttention_1/{n}/kernel"] = r(D, heads, d)
            a[b + f"MultiHeadDotProductAttention_1/{n}/bias"] = r(heads, d)
        a[b + "MultiHeadDotProductAttention_1/out/kernel"] = r(heads, d, D)
        a[b + "MultiHeadDotProductAttention_1/out/bias"] = r(D)
        a[b + "MlpBlock_3/Dense_0/kernel"], a[b + "MlpBlock_3/Dense_0/bias"] = r(D, M), r(M)
        a[b + "MlpBlock_3/Dense_1/kernel"], a[b + "MlpBlock_3/Dense_1/bias"] = r(M, D), r(D)
    a["Transformer/encoder_norm/scale"], a["Transformer/encoder_norm/bias"] = 1 + r(D), r(D)
    if rep:
        a["pre_logits/kernel"], a["pre_logits/bias"] = r(D, rep), r(rep)
    a["head/kernel"], a["head/bias"] = r(rep or D, classes), r(classes)
    return {prefix + k: v.astype(np.float32) for k, v in a.items()}


def _same_pad(x, k, s, value=0.0):
    """TF SAME padding of NHWC x for a k x k window at stride s."""
    pads = []
    for n in x.shape[1:3]:
        total = max((-(-n // s) - 1) * s + k - n, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), *pads, (0, 0)), constant_values=value)


def flax_conv(x, kernel, stride, same=True):
    """NHWC convolution with an HWIO kernel, flax's nn.Conv (SAME or VALID), one tap at a time."""
    k = kernel.shape[0]
    if same:
        x = _same_pad(x, k, stride)
    oh, ow = (x.shape[1] - k) // stride + 1, (x.shape[2] - k) // stride + 1
    out = 0
    for i in range(k):
        for j in range(k):
            out = out + x[:, i:i + stride * oh:stride, j:j + stride * ow:stride] @ kernel[i, j]
    return out


def flax_forward(a, x, heads, classifier="token"):
    """The original model, written from models_vit.py / models_resnet.py: NHWC, Flax kernels."""
    x = x.transpose(0, 2, 3, 1)                                                    # NHWC

    def group_norm(v, name, groups=32):
        n, h, w, c = v.shape
        g = v.reshape(n, h, w, min(groups, c), -1)
        g = (g - g.mean(axis=(1, 2, 4), keepdims=True)) / np.sqrt(g.var(axis=(1, 2, 4), keepdims=True) + 1e-6)
        return g.reshape(v.shape) * a[name + "/scale"] + a[name + "/bias"]

    def std_conv(v, name, stride=1):
        w = a[name + "/kernel"]
        w = (w - w.mean(axis=(0, 1, 2))) / (w.std(axis=(0, 1, 2)) + 1e-5)
        return flax_conv(v, w, stride)

    def layer_norm(v, name):
        return (v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + 1e-6) * a[name + "/scale"] \
            + a[name + "/bias"]

    if "conv_root/kernel" in a:
        x = np.maximum(group_norm(std_conv(x, "conv_root", 2), "gn_root", GROUPS), 0)
        x = _same_pad(x, 3, 2, -np.inf)
        oh, ow = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
        x = np.max([x[:, i:i + 2 * oh:2, j:j + 2 * ow:2] for i in range(3) for j in range(3)], axis=0)
        i = 1
        while f"block{i}/unit1/conv1/kernel" in a:
            j = 1
            while f"block{i}/unit{j}/conv1/kernel" in a:
                u, s = f"block{i}/unit{j}/", 2 if i > 1 and j == 1 else 1
                res = x
                if u + "conv_proj/kernel" in a:
                    res = group_norm(std_conv(x, u + "conv_proj", s), u + "gn_proj", GROUPS)
                y = np.maximum(group_norm(std_conv(x, u + "conv1"), u + "gn1", GROUPS), 0)
                y = np.maximum(group_norm(std_conv(y, u + "conv2", s), u + "gn2", GROUPS), 0)
                y = group_norm(std_conv(y, u + "conv3"), u + "gn3", GROUPS)
                x = np.maximum(res + y, 0)
                j += 1
            i += 1
    p = a["embedding/kernel"].shape[0]
    x = flax_conv(x, a["embedding/kernel"], p, same=False) + a["embedding/bias"]
    n, h, w, c = x.shape
    x = x.reshape(n, h * w, c)
    if classifier == "token":
        x = np.concatenate([np.tile(a["cls"], (n, 1, 1)), x], axis=1)
    x = x + a["Transformer/posembed_input/pos_embedding"]
    i = 0
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in a:
        b = f"Transformer/encoderblock_{i}/"
        m = b + "MultiHeadDotProductAttention_1/"
        y = layer_norm(x, b + "LayerNorm_0")
        q, k, v = (np.einsum("bnd,dhk->bnhk", y, a[m + t + "/kernel"]) + a[m + t + "/bias"]
                   for t in ("query", "key", "value"))
        logits = np.einsum("bqhk,bnhk->bhqn", q / np.sqrt(q.shape[-1]), k)
        weights = np.exp(logits - logits.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        o = np.einsum("bhqn,bnhk->bqhk", weights, v)
        x = x + np.einsum("bqhk,hkd->bqd", o, a[m + "out/kernel"]) + a[m + "out/bias"]
        y = layer_norm(x, b + "LayerNorm_2") @ a[b + "MlpBlock_3/Dense_0/kernel"] + a[b + "MlpBlock_3/Dense_0/bias"]
        y = 0.5 * y * (1 + np.tanh(np.sqrt(2 / np.pi) * (y + 0.044715 * y**3)))    # flax's nn.gelu
        x = x + y @ a[b + "MlpBlock_3/Dense_1/kernel"] + a[b + "MlpBlock_3/Dense_1/bias"]
        i += 1
    x = layer_norm(x, "Transformer/encoder_norm")
    x = x[:, 0] if classifier == "token" else x.mean(axis=1)
    if "pre_logits/kernel" in a:
        x = np.tanh(x @ a["pre_logits/kernel"] + a["pre_logits/bias"])
    return x @ a["head/kernel"] + a["head/bias"]


GROUPS = 2  # the hybrid test's GroupNorm groups (the original uses 32 on 64+ channels)


@pytest.mark.parametrize("kind", ["token", "pre_logits", "opt_target_prefix", "gap", "hybrid"])
def test_google_checkpoint_matches_the_original_forward(tmp_path, kind):
    rng = np.random.default_rng(0)
    spec = dict(rep=6 if kind == "pre_logits" else None, cls=kind != "gap",
                prefix="opt/target/" if kind == "opt_target_prefix" else "")
    hints = {}
    if kind == "hybrid":
        # 32x32 -> stem /2 -> pool /2 -> stage 2 /2: a 4x4 map of 32 channels, 1x1 patches
        spec.update(resnet=(4, (1, 1)), patch=1, grid=4)
        hints["hybrid_groups"] = GROUPS
    arrays = google_checkpoint(rng, **spec)
    path = tmp_path / "ViT-test.npz"
    np.savez(path, **arrays)
    size = 32 if kind == "hybrid" else 8
    x = rng.uniform(size=(2, 3, size, size))
    plain = {k[len(spec["prefix"]):]: v.astype(np.float64) for k, v in arrays.items()}
    expected = flax_forward(plain, x, heads=2, classifier="gap" if kind == "gap" else "token")

    ck = read_checkpoint(path, **hints)
    assert ck.format == "google" and ck.config.num_heads == 2 and ck.config.gelu_approximate == "tanh"
    assert ck.config.global_pool == ("avg" if kind == "gap" else "token") and not ck.config.use_fc_norm
    with backend.default_dtype_as(np.float64):
        model = load_checkpoint(path, **hints)
    assert model.dtype == np.float32  # the file's dtype
    np.testing.assert_allclose(model.eval()(x).data, expected, rtol=1e-4, atol=1e-4)
    # exactly, in float64: the same arrays, widened, through the same conversion
    state = {k: v.astype(np.float64) for k, v in ck.state.items()}
    exact = load_checkpoint(Checkpoint("google", ck.config, state))
    assert exact.dtype == np.float64
    np.testing.assert_allclose(exact.eval()(x).data, expected, rtol=1e-10, atol=1e-10)


def test_google_checkpoint_fine_tuning(tmp_path):
    arrays = google_checkpoint(np.random.default_rng(1), rep=6)
    path = tmp_path / "ViT-B_16.npz"
    np.savez(path, **arrays)
    model = load_checkpoint(path, img_size=16, num_classes=5)
    assert model.cfg.grid_size == (4, 4) and model.cfg.representation_size is None
    assert "pre_logits.fc.weight" not in model.state_dict() and not model.head.weight.data.any()
    pos = arrays["Transformer/posembed_input/pos_embedding"]
    # Google files resize bilinear without antialiasing, as timm's _load_weights
    np.testing.assert_array_equal(model.pos_embed.data, pe.resize("pos_embed", pos, (2, 2), (4, 4), 1, "bilinear"))
    np.testing.assert_array_equal(model.pos_embed.data[:, 0], pos[:, 0])
    logits = model(np.zeros((3, 3, 16, 16), dtype=np.float32))
    assert logits.shape == (3, 5) and not logits.data.any()


def test_converted_names_are_timms(tmp_path):
    arrays = google_checkpoint(np.random.default_rng(2), rep=6)
    state, hints = npvit.checkpoint.google_to_timm(arrays)
    model = VisionTransformer(**{**TINY, "representation_size": 6, "mlp_ratio": 2.0})
    assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert hints == {"num_heads": 2, "gelu_approximate": "tanh", "global_pool": "token"}
    q = arrays["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"]      # (D, H, d)
    np.testing.assert_array_equal(state["blocks.0.attn.qkv.weight"][:8], q.reshape(8, 8).T)
    out = arrays["Transformer/encoderblock_1/MultiHeadDotProductAttention_1/out/kernel"]     # (H, d, D)
    np.testing.assert_array_equal(state["blocks.1.attn.proj.weight"], out.transpose(2, 0, 1).reshape(8, 8))
    np.testing.assert_array_equal(state["patch_embed.proj.weight"], arrays["embedding/kernel"].transpose(3, 2, 0, 1))


# --- timm's conventions ---------------------------------------------------------------------
def test_timm_stem_only_hybrid_loads_and_runs_timms_standardisation(tmp_path):
    torch = torch_or_skip()
    F = torch.nn.functional
    with backend.default_dtype_as(np.float64):
        model = tiny(img_size=16, patch_size=2, hybrid_layers=(), hybrid_width=4, hybrid_groups=2,
                     hybrid_stem_kernel=3, hybrid_convention="timm", global_pool="avg", class_token=False)
    # vit_tiny_r_s16_p8's names: the stem-only backbone is timm's create_resnetv2_stem, keys conv/norm
    state = {k.replace("patch_embed.backbone.stem.", "patch_embed.backbone."): v
             for k, v in model.state_dict().items()}
    assert "patch_embed.backbone.conv.weight" in state and "fc_norm.weight" in state
    path = tmp_path / "vit_tiny_r_s16_p8.npz"
    np.savez(path, **state)
    ck = read_checkpoint(path, num_heads=2, hybrid_groups=2)
    assert ck.config.hybrid_layers == () and ck.config.hybrid_convention == "timm"
    assert ck.config.global_pool == "avg" and ck.config.use_fc_norm  # fc_norm.* proves GAP
    loaded = load_checkpoint(ck)
    # timm's stem: StdConv2dSame(eps=1e-8) = batch_norm of the kernel, then GroupNorm eps 1e-5, ReLU
    x = np.random.default_rng(3).uniform(size=(2, 3, 16, 16))
    w = torch.tensor(state["patch_embed.backbone.conv.weight"])
    w_hat = F.batch_norm(w.reshape(1, 4, -1), None, None, training=True, momentum=0.0, eps=1e-8).reshape_as(w)
    y = F.conv2d(F.pad(torch.tensor(x), (0, 1, 0, 1)), w_hat, stride=2)     # SAME pads the end only
    y = F.relu(F.group_norm(y, 2, torch.tensor(state["patch_embed.backbone.norm.weight"]),
                            torch.tensor(state["patch_embed.backbone.norm.bias"]), eps=1e-5))
    y = F.max_pool2d(F.pad(y, (0, 1, 0, 1)), 3, 2)                     # SAME: the odd cell at the end
    stem = loaded.patch_embed.backbone.stem(x).data
    np.testing.assert_allclose(stem, y.numpy(), atol=1e-12)
    google = tiny(img_size=16, patch_size=2, hybrid_layers=(), hybrid_width=4, hybrid_groups=2,
                  hybrid_stem_kernel=3, global_pool="avg", class_token=False)
    google.load_state_dict(loaded.state_dict())
    assert np.abs(google.patch_embed.backbone.stem(x.astype(np.float32)).data - stem).max() > 1e-6


def test_timm_files_resize_bicubic_with_antialias(tmp_path):
    model = tiny()
    path = tmp_path / "timm.npz"
    np.savez(path, **model.state_dict())
    tuned = load_checkpoint(path, num_heads=2, global_pool="token", img_size=16)  # 2x2 grid -> 4x4
    expected = pe.resize("pos_embed", model.pos_embed.data, (2, 2), (4, 4), 1, "bicubic", antialias=True)
    np.testing.assert_array_equal(tuned.pos_embed.data, expected)
    ours = load_checkpoint(save_checkpoint(tmp_path / "ours.npz", model), img_size=16)
    plain = pe.resize("pos_embed", model.pos_embed.data, (2, 2), (4, 4), 1, "bicubic")
    np.testing.assert_array_equal(ours.pos_embed.data, plain)
    assert np.abs(plain - expected).max() > 1e-3


def test_version_1_relative_files_load_as_the_2d_kind(tmp_path):
    model = tiny(pos_embed="relative_2d", pos_embed_at="input", global_pool="avg")  # GAP with a [class] token
    path = save_checkpoint(tmp_path / "old.npz", model)
    with np.load(path) as z:
        arrays = dict(z)
    meta = json.loads(str(arrays["__npvit__"]))
    meta["version"], meta["config"]["pos_embed"] = 1, "relative"
    del meta["config"]["hybrid_convention"]
    arrays["__npvit__"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    loaded = load_checkpoint(path)
    assert loaded.cfg == model.cfg and loaded.cfg.class_token
    x = np.random.default_rng(0).uniform(size=(2, 3) + model.cfg.image_hw)
    np.testing.assert_array_equal(loaded.eval()(x).data, model.eval()(x).data)


def test_timm_spelling_of_the_learned_embedding():
    assert npvit.ViTConfig(pos_embed="learn").pos_embed == "1d"
    assert npvit.ViTConfig(pos_embed="").pos_embed == "none"


def test_damaged_files_are_one_line_value_errors_saying_what_they_are(tmp_path):
    good = tmp_path / "good.npz"
    save_checkpoint(good, tiny(), step=3)
    raw = good.read_bytes()
    cases = {
        "empty.npz": (b"", "is empty"),
        "text.npz": (b"step,loss\n1,2.3\n", "not a NumPy .npz file"),
        "array.npz": (None, "single .npy array"),
        "truncated.npz": (raw[: len(raw) // 2], "truncated or corrupt"),
        "flipped.npz": (raw[:2000] + bytes(b ^ 0xFF for b in raw[2000:2400]) + raw[2400:], "truncated or corrupt"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        if data is None:
            with open(path, "wb") as f:
                np.save(f, np.zeros(3))
        else:
            path.write_bytes(data)
        with pytest.raises(ValueError, match=message) as info:
            read_checkpoint(path)
        assert name in str(info.value) and "\n" not in str(info.value), name


def test_a_google_checkpoint_missing_a_key_names_it(tmp_path):
    arrays = {"embedding/kernel": np.zeros((4, 4, 3, 8)), "embedding/bias": np.zeros(8)}
    np.savez(tmp_path / "g.npz", **arrays)
    with pytest.raises(ValueError, match="g.npz: an incomplete or damaged checkpoint: it has no "
                                         "'Transformer/encoder_norm/scale'"):
        read_checkpoint(tmp_path / "g.npz")
