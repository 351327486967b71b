"""The analysis tools: figure arrays on hand-made known cases, the Pillow plots, the command end to end.

Known cases: PCA of a matrix built from known directions; one-hot position embeddings
give an identity similarity grid (2-D: one half for a shared row or column); identity
attention has distance 0 and uniform attention the mean distance between two patches
(computed here with plain loops); attention rollout of identity, uniform and one-hot
attention in closed form. The command runs on tiny checkpoints with the synthetic data set.
"""
import itertools
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

import npvit
from npvit import analysis as A
from npvit import analyze, plot

TINY = dict(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2)
HYBRID = dict(img_size=16, patch_size=1, embed_dim=16, depth=2, num_heads=2, hybrid_layers=(1, 1), hybrid_width=8,
              hybrid_groups=2, hybrid_stem_kernel=3, hybrid_stem_stride=1, hybrid_stem_pool=False)


def tiny(**fields):
    """A tiny randomly initialised model in evaluation mode."""
    return npvit.create_model("vit_cifar_tiny", generator=np.random.default_rng(0), **{**TINY, **fields}).eval()


def loop_distances(grid, pitch):
    """(N, N) patch-centre distances, one pair at a time."""
    rows, cols = grid
    cells = [(r, c) for r in range(rows) for c in range(cols)]
    return np.array([[pitch * math.hypot(a[0] - b[0], a[1] - b[1]) for b in cells] for a in cells])


def softmax_rows(shape, seed):
    """Random attention weights whose last axis sums to 1."""
    logits = np.random.default_rng(seed).normal(0.0, 2.0, shape)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# --- PCA of the patch embedding -------------------------------------------------------------
def test_pca_finds_known_components_and_their_variance_shares():
    u, _ = np.linalg.qr(np.random.default_rng(0).normal(size=(6, 2)))     # two orthonormal directions
    a = np.array([1.0, -1.0, 1.0, -1.0]) * 3.0                             # variance 9 along u1
    b = np.array([1.0, 1.0, -1.0, -1.0])                                   # variance 1 along u2, uncorrelated
    rows = 5.0 + a[:, None] * u[:, 0] + b[:, None] * u[:, 1]               # (4, 6), an offset mean
    components, explained = A.pca(rows, 5)
    assert components.shape == (3, 6)                                      # capped at 4 rows - 1
    for k in range(2):
        assert abs(components[k] @ u[:, k]) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(explained[:2], [0.9, 0.1], atol=1e-12)
    assert explained[2] == pytest.approx(0.0, abs=1e-12)


@given(st.integers(3, 9), st.integers(2, 7), st.integers(0, 2**32 - 1))
def test_pca_matches_the_covariance_eigenvectors(n, features, seed):
    rows = np.random.default_rng(seed).normal(size=(n, features)) * np.linspace(3.0, 0.5, features)
    components, explained = A.pca(rows, 28)
    centred = rows - rows.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred)                 # ascending
    values, vectors = values[::-1], vectors[:, ::-1]
    k = min(n - 1, features)
    assert components.shape == (k, features)
    np.testing.assert_allclose(np.abs(np.sum(components * vectors[:, :k].T, axis=1)), 1.0, atol=1e-6)
    np.testing.assert_allclose(explained, values[:k] / values.sum(), atol=1e-10)
    peaks = components[np.arange(k), np.abs(components).argmax(axis=1)]
    assert (peaks > 0).all()                                               # the sign convention


def test_patch_embedding_pca_gives_filters_and_keeps_float32():
    weight = np.random.default_rng(1).normal(size=(40, 3, 4, 4)).astype(np.float32)
    components, explained = A.patch_embedding_pca(weight, 28)
    assert components.shape == (28, 3, 4, 4) and components.dtype == np.float32
    assert explained.dtype == np.float32 and np.all(np.diff(explained) <= 1e-7)
    flat = components.reshape(28, -1)
    np.testing.assert_allclose(flat @ flat.T, np.eye(28), atol=1e-5)
    tiles = A.unit_range(components, (1, 2, 3))
    np.testing.assert_allclose(tiles.min(axis=(1, 2, 3)), 0.0, atol=1e-6)
    np.testing.assert_allclose(tiles.max(axis=(1, 2, 3)), 1.0, atol=1e-6)
    assert (A.unit_range(np.ones((2, 3)), 1) == 0.5).all()


def test_embedding_filters_of_the_plain_vit_and_the_hybrid():
    weight, what = A.embedding_filters(tiny())
    assert weight.shape == (16, 3, 4, 4) and "patch embedding E" in what
    weight, what = A.embedding_filters(tiny(**HYBRID))
    assert weight.shape == (8, 3, 3, 3) and "hybrid" in what and "stem" in what
    np.testing.assert_allclose(weight.mean(axis=(1, 2, 3)), 0.0, atol=1e-5)  # standardised as the conv uses it
    np.testing.assert_allclose(weight.std(axis=(1, 2, 3)), 1.0, atol=1e-3)


# --- position-embedding similarity -----------------------------------------------------------
def test_one_hot_1d_embeddings_give_an_identity_similarity_grid():
    model = tiny()
    model.pos_embed.data[0, 1:] = np.eye(16, dtype=np.float32)[::-1]       # 16 patches, D = 16, distinct one-hots
    model.pos_embed.data[0, 0] = 1.0                                      # the [class] token's: must be left out
    similarity, what = A.position_similarity(model)
    assert similarity.shape == (4, 4, 4, 4) and "1D" in what
    np.testing.assert_allclose(similarity.reshape(16, 16), np.eye(16), atol=1e-6)


def test_one_hot_2d_embeddings_are_half_similar_along_a_row_or_column():
    model = tiny(pos_embed="2d")
    model.pos_embed_row.data[...] = np.eye(4, 8, dtype=np.float32)
    model.pos_embed_col.data[...] = 3.0 * np.eye(4, 8, k=4, dtype=np.float32)  # any length: cosine ignores it
    similarity, _ = A.position_similarity(model)
    expected = np.zeros((4, 4, 4, 4))
    for i, j, k, m in itertools.product(range(4), repeat=4):
        row, col = np.eye(4)[i] @ np.eye(4)[k], np.eye(4)[j] @ np.eye(4)[m]
        expected[i, j, k, m] = (row + 9.0 * col) / 10.0                 # |e| = sqrt(1 + 9) for every position
    np.testing.assert_allclose(similarity, expected, atol=1e-6)


def test_2d_embeddings_against_a_loop_over_positions():
    model = tiny(pos_embed="2d")
    similarity, _ = A.position_similarity(model)
    row, col = model.pos_embed_row.data, model.pos_embed_col.data
    for i, j, k, m in itertools.product(range(4), repeat=4):
        a, b = np.concatenate([row[i], col[j]]), np.concatenate([row[k], col[m]])
        assert similarity[i, j, k, m] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b), abs=1e-5)


def test_relative_embeddings_compare_offsets_and_none_has_nothing():
    similarity, what = A.position_similarity(tiny(pos_embed="relative_2d"))
    assert similarity.shape == (7, 7, 7, 7) and "offset" in what
    np.testing.assert_allclose(np.diagonal(similarity.reshape(49, 49)), 1.0, atol=1e-5)
    similarity, what = A.position_similarity(tiny(pos_embed="relative"))              # 16 patches: 31 offsets
    assert similarity.shape == (1, 31, 1, 31) and "raster offset" in what
    np.testing.assert_allclose(np.diagonal(similarity.reshape(31, 31)), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="no position embedding"):
        A.position_similarity(tiny(pos_embed="none"))


def test_every_block_embeddings_are_read_from_the_block_asked_for():
    model = tiny(pos_embed_at="every_block")
    model.blocks[1].pos_embed.data[0, 1:] = np.eye(16, dtype=np.float32)
    similarity, what = A.position_similarity(model, block=1)
    assert "block 2" in what
    np.testing.assert_allclose(similarity.reshape(16, 16), np.eye(16), atol=1e-6)
    assert not np.allclose(A.position_similarity(model, block=0)[0].reshape(16, 16), np.eye(16), atol=1e-3)


# --- mean attention distance -------------------------------------------------------------
def test_patch_distances_match_a_loop():
    np.testing.assert_allclose(A.patch_distances((3, 5), 4.0), loop_distances((3, 5), 4.0), rtol=1e-6)


def test_identity_attention_has_distance_zero():
    eye = np.broadcast_to(np.eye(17, dtype=np.float32), (2, 3, 17, 17))   # [class] token + 4x4 patches
    distance = A.mean_attention_distance([eye, eye], (4, 4), 8.0, num_prefix_tokens=1)
    assert distance.shape == (2, 3) and distance.dtype == np.float32
    np.testing.assert_array_equal(distance, 0.0)


def test_uniform_attention_has_the_mean_distance_between_two_patches():
    grid, pitch = (3, 4), 16.0
    N = 12
    expected = loop_distances(grid, pitch).sum() / N**2
    uniform = np.full((2, 2, N + 1, N + 1), 1.0 / (N + 1))
    uniform[:, :, :, 0] = 0.7                                              # mass on the [class] key is dropped,
    uniform[:, :, :, 1:] = 0.3 / N                                         # the patch weights renormalised
    np.testing.assert_allclose(A.mean_attention_distance([uniform], grid, pitch, 1), [[expected] * 2], rtol=1e-12)
    assert expected == pytest.approx(A.patch_distances(grid, pitch).mean())


def test_attention_to_one_patch_has_that_patchs_mean_distance():
    grid, pitch, key = (4, 4), 2.0, 5
    a = np.zeros((1, 1, 16, 16))
    a[..., key] = 1.0
    expected = loop_distances(grid, pitch)[:, key].mean()
    assert A.mean_attention_distance([a], grid, pitch)[0, 0] == pytest.approx(expected)


@given(st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(1, 3), st.integers(0, 1),
       st.integers(0, 2**32 - 1))
def test_mean_attention_distance_matches_a_loop(rows, cols, batch, heads, prefix, seed):
    N = rows * cols
    layers = [softmax_rows((batch, heads, N + prefix, N + prefix), seed + i) for i in range(2)]
    d = loop_distances((rows, cols), 3.0)
    expected = np.zeros((2, heads))
    for layer, b, h, q in itertools.product(range(2), range(batch), range(heads), range(N)):
        w = layers[layer][b, h, prefix + q, prefix:]
        expected[layer, h] += sum(w[k] * d[q, k] for k in range(N)) / w.sum() / (batch * N)
    np.testing.assert_allclose(A.mean_attention_distance(layers, (rows, cols), 3.0, prefix), expected, rtol=1e-10)


# --- attention rollout --------------------------------------------------------------------
def test_rollout_rows_sum_to_one_and_match_a_loop():
    model = tiny()
    x = np.random.default_rng(2).normal(size=(3, 3, 16, 16)).astype(np.float32)
    _, extras = model.forward_intermediates(x)
    rollout = A.attention_rollout(extras["attention"])
    assert rollout.shape == (3, 17, 17) and rollout.dtype == np.float32
    np.testing.assert_allclose(rollout.sum(axis=-1), 1.0, atol=1e-5)
    for b in range(3):
        expected = np.eye(17)
        for w in extras["attention"]:
            a = w.data[b].astype(np.float64).mean(axis=0) * 0.5 + np.eye(17) * 0.5  # rows of (A + I) sum to 2
            expected = a @ expected
        np.testing.assert_allclose(rollout[b], expected, atol=1e-5)
    maps = A.rollout_maps(rollout, (4, 4), 1, "token")
    np.testing.assert_allclose(maps.reshape(3, 16), rollout[:, 0, 1:], atol=0)


def test_rollout_of_identity_attention_is_the_identity():
    eye = np.broadcast_to(np.eye(17), (2, 2, 17, 17))
    rollout = A.attention_rollout([eye] * 3)
    np.testing.assert_allclose(rollout, np.broadcast_to(np.eye(17), (2, 17, 17)))
    np.testing.assert_array_equal(A.rollout_maps(rollout, (4, 4), 1, "token"), 0.0)  # [class] keeps to itself
    eye16 = np.broadcast_to(np.eye(16), (2, 2, 16, 16))
    gap = A.rollout_maps(A.attention_rollout([eye16] * 3), (4, 4), 0, "avg")
    np.testing.assert_allclose(gap, 1.0 / 16)                              # every patch keeps to itself


@pytest.mark.parametrize("layers", [1, 2, 5])
def test_rollout_of_uniform_attention_in_closed_form(layers):
    n = 17
    uniform = np.full((1, 2, n, n), 1.0 / n)
    rollout = A.attention_rollout([uniform] * layers)
    # ((U + I) / 2)^L with U^2 = U: I / 2^L + (1 - 1 / 2^L) U
    expected = np.eye(n) / 2**layers + (1 - 0.5**layers) / n
    np.testing.assert_allclose(rollout[0], expected, atol=1e-12)


def test_rollout_of_attention_to_one_patch_is_one_hot():
    key, layers = 6, 3
    a = np.zeros((1, 1, 17, 17))
    a[..., 1 + key] = 1.0
    maps = A.rollout_maps(A.attention_rollout([a] * layers), (4, 4), 1, "token")
    expected = np.zeros(16)
    expected[key] = 1 - 0.5**layers                                        # the rest stays on the [class] token
    np.testing.assert_allclose(maps.reshape(16), expected, atol=1e-12)


def test_upsample_keeps_constants_and_gives_the_image_size():
    up = A.upsample(np.full((2, 4, 4), 0.25, dtype=np.float32), (16, 16))
    assert up.shape == (2, 16, 16) and up.dtype == np.float32
    np.testing.assert_allclose(up, 0.25, atol=1e-6)


@pytest.mark.parametrize("fields", [{}, dict(global_pool="avg", class_token=False), HYBRID])
def test_attention_summary_is_the_same_in_any_batch_size(fields):
    model = tiny(**fields)
    x = np.random.default_rng(3).normal(size=(5, 3, 16, 16)).astype(np.float32)
    distance, maps, predictions = A.attention_summary(model, x, batch_size=2)
    whole, whole_maps, _ = A.attention_summary(model, x, batch_size=5)
    L, H = model.cfg.depth, model.cfg.num_heads
    assert distance.shape == (L, H) and maps.shape == (5, *model.cfg.grid_size) and predictions.shape == (5,)
    np.testing.assert_allclose(distance, whole, rtol=1e-5)
    np.testing.assert_allclose(maps, whole_maps, atol=1e-6)
    uniform = A.patch_distances(model.cfg.grid_size, model.cfg.effective_patch_size).mean()
    assert 0 < distance.min() and distance.max() < 2 * uniform           # a random model attends broadly


# --- the plotting helper ------------------------------------------------------------------
def test_colormap_ends_clips_and_dtype():
    rgb = plot.colormap([-1.0, 0.0, 1.0, 2.0])
    assert rgb.dtype == np.uint8 and rgb.shape == (4, 3)
    np.testing.assert_array_equal(rgb[0], rgb[1])
    np.testing.assert_array_equal(rgb[2], rgb[3])
    assert tuple(rgb[1]) == (68, 1, 84) and tuple(rgb[2]) == (253, 231, 37)


@pytest.mark.parametrize("lo, hi, expected", [(0, 17, [0, 5, 10, 15]), (-1, 1, [-1, -0.5, 0, 0.5, 1]),
                                              (1, 12, [2.5, 5, 7.5, 10]), (3, 31, [10, 20, 30]),
                                              (0, 0.9, [0, 0.2, 0.4, 0.6, 0.8])])
def test_nice_ticks(lo, hi, expected):
    np.testing.assert_allclose(plot.nice_ticks(lo, hi), expected)
    assert plot.nice_upper(17.6) == 20 and plot.nice_upper(20) == 20
    assert plot.format_tick(2.0) == "2" and plot.format_tick(0.25) == "0.25"


def colours(image):
    """How many different colours an RGB image has."""
    return len(np.unique(np.asarray(image).reshape(-1, 3), axis=0))


def test_scatter_plot_draws_its_points_and_axes():
    img = plot.scatter_plot([("head 1", [1, 2], [3.0, 5.0]), ("head 2", [1, 2], [4.0, 1.0])], xlim=(0.5, 2.5),
                            ylim=(0, 6), xticks=[1, 2], xlabel="x", ylabel="y", title="t", hlines=[(2.0, "ref")],
                            size=(400, 300))
    assert img.size == (400, 300) and img.mode == "RGB"
    pixels = set(map(tuple, np.asarray(img).reshape(-1, 3).tolist()))
    assert plot.PALETTE[0] in pixels and plot.PALETTE[1] in pixels and plot.BLACK in pixels


def test_a_title_wider_than_the_plot_wraps_and_stays_inside():
    title = "Mean attention distance per head (hybrid, 4 px per token; 256 cifar10 test images)"
    lines = plot.wrap_text(title, 200)
    assert len(lines) > 1 and " ".join(lines) == title
    assert all(plot.text_size(line)[0] <= 200 for line in lines if " " in line)
    img = np.asarray(plot.scatter_plot([("h", [1], [1.0])], xlim=(0, 2), ylim=(0, 2), xlabel="x", ylabel="y",
                                       title=title, size=(300, 300)))
    ink = np.nonzero((img[:60] < 128).all(axis=-1))[1]                 # dark title pixels in the top rows
    assert ink.min() > 0 and ink.max() < 299                            # clipped text would touch the edges


def test_image_grid_and_heatmap_grid_sizes():
    tiles = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    grid = plot.image_grid(tiles, ncols=3, scale=5, gap=2)
    assert grid.size == (3 * 20 + 2 * 2, 2 * 20 + 2)
    assert np.array_equal(np.asarray(grid)[:20, :20], plot.upscale(tiles[0], 5))
    heat = plot.heatmap_grid(np.random.default_rng(1).uniform(-1, 1, (3, 3, 3, 3)), -1, 1, xlabel="c", ylabel="r",
                             scale=4, gap=2)
    assert heat.width > 3 * 12 + 4 and heat.height >= 120 and colours(heat) > 20


# --- the command --------------------------------------------------------------------------
PNGS = ("patch_embedding_pca.png", "position_similarity.png", "attention_distance.png", "attention_rollout.png")


def check_png(path, min_size):
    with Image.open(path) as img:
        img.load()
        assert img.format == "PNG" and img.mode == "RGB"
        assert img.width >= min_size[0] and img.height >= min_size[1]
        assert colours(img) > 20                                           # not blank or a single colour


def test_command_on_a_checkpoint_writes_every_figure(tmp_path, capsys):
    model = npvit.create_model("vit_cifar_tiny", img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2)
    path = npvit.save_checkpoint(tmp_path / "ck.npz", model)
    out = tmp_path / "figs"
    assert analyze.main([path, "--out", str(out), "--dataset", "synthetic", "--images", "6", "--batch-size", "4"]) == 0
    printed = capsys.readouterr().out
    for name in PNGS:
        assert f"wrote {out / name}" in printed
    check_png(out / "patch_embedding_pca.png", (7 * 14 * 4, 4 * 14 * 4))   # 28 tiles of 4 x 4 pixels, 14x each
    check_png(out / "position_similarity.png", (4 * 12 * 4, 4 * 12 * 4))  # 4 x 4 maps of 4 x 4, 12x each
    check_png(out / "attention_distance.png", (720, 480))
    check_png(out / "attention_rollout.png", (3 * 128, 6 * 128))          # 6 images, 3 columns, 128 px tiles
    with np.load(out / "figures.npz") as z:
        assert z["pca_components"].shape == (28, 3, 4, 4)
        assert z["position_similarity"].shape == (4, 4, 4, 4)
        assert z["attention_distance"].shape == (3, 2)
        assert z["rollout_maps"].shape == (6, 4, 4) and z["predictions"].shape == (6,)


def test_command_on_a_run_directory_takes_the_data_set_from_config_json(tmp_path, capsys):
    model = tiny(pos_embed="relative", global_pool="avg", class_token=False)
    npvit.save_checkpoint(tmp_path / "checkpoint-last.npz", model)
    (tmp_path / "config.json").write_text(json.dumps({"dataset": "synthetic", "data_dir": None}))
    assert analyze.main([str(tmp_path), "--out", str(tmp_path / "figs"), "--images", "3"]) == 0
    assert "checkpoint-last.npz" in capsys.readouterr().out
    for name in PNGS:
        check_png(tmp_path / "figs" / name, (100, 100))


def test_command_without_a_data_set_draws_the_weight_figures_only(tmp_path, capsys):
    npvit.save_checkpoint(tmp_path / "ck.npz", tiny(pos_embed="none", **HYBRID))
    assert analyze.main([str(tmp_path / "ck.npz"), "--out", str(tmp_path / "figs")]) == 0
    printed = capsys.readouterr().out
    assert "skipped position_similarity.png" in printed and "skipped the attention figures" in printed
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == ["figures.npz", "patch_embedding_pca.png"]


def test_hybrid_attention_distance_uses_the_backbone_stride(tmp_path, capsys):
    model = tiny(**{**HYBRID, "hybrid_stem_stride": 2})                   # 16 px -> 8x8 map -> 4x4 map: 4 px a token
    assert model.cfg.effective_patch_size == 4 and model.cfg.grid_size == (4, 4)
    npvit.save_checkpoint(tmp_path / "ck.npz", model)
    assert analyze.main([str(tmp_path / "ck.npz"), "--out", str(tmp_path), "--dataset", "synthetic",
                         "--images", "2"]) == 0
    assert "(pixels, 4 px between tokens)" in capsys.readouterr().out
    with np.load(tmp_path / "figures.npz") as z:
        distance = z["attention_distance"]
    uniform = loop_distances((4, 4), 4.0).mean()                           # in pixels of the 16 x 16 input
    assert 0.5 * uniform < distance.mean() < 1.5 * uniform                 # a random model attends broadly
    check_png(tmp_path / "attention_distance.png", (720, 480))


@pytest.mark.parametrize("make, message", [
    (lambda d: d / "missing.npz", "does not exist"),
    (lambda d: (d / "notes.npz").write_text("hello") and d / "notes.npz", "not a checkpoint"),
    (lambda d: (d / "bad.npz").write_bytes(b"PK\x03\x04broken") and d / "bad.npz", "not a checkpoint"),
    (lambda d: d, "neither checkpoint-best.npz nor checkpoint-last.npz"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, make, message):
    assert analyze.main([str(make(tmp_path)), "--out", str(tmp_path / "figs")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("analyze: error:") and message in err and err.count("\n") == 1


def test_unknown_data_set_and_bad_flags_exit_2(tmp_path, capsys):
    npvit.save_checkpoint(tmp_path / "ck.npz", tiny())
    assert analyze.main([str(tmp_path / "ck.npz"), "--out", str(tmp_path), "--dataset", "nope"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(SystemExit) as e:
        analyze.main([str(tmp_path / "ck.npz"), "--out", str(tmp_path), "--images", "0"])
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_python_dash_m_runs_the_command(tmp_path):
    npvit.save_checkpoint(tmp_path / "ck.npz", tiny())
    done = subprocess.run([sys.executable, "-m", "npvit.analyze", str(tmp_path / "ck.npz"), "--out", str(tmp_path),
                           "--dataset", "synthetic", "--images", "2"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "attention_rollout.png").is_file()
