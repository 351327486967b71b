"""The analysis command: a checkpoint in, the paper's Figure 7 and attention maps out as PNGs.

    python -m npvit.analyze runs/cifar10-supervised-... --out figures/
    python -m npvit.analyze ViT-B_16.npz --out figures/ --dataset cifar10 --data-dir ~/data --images 256

RUN_DIR_OR_CHECKPOINT is a training run directory (its ``checkpoint-best.npz``, else
``checkpoint-last.npz``) or a checkpoint file (ours, timm-named or Google's). The data
set for the attention figures comes from ``--dataset`` or the run's ``config.json``
(also looked for beside a checkpoint file); without one only the weight figures are
drawn. Written to ``--out``:

- ``patch_embedding_pca.png``: the first 28 principal components of E (Fig. 7 left);
- ``position_similarity.png``: position-embedding cosine similarity (Fig. 7 centre);
- ``attention_distance.png``: mean attention distance per head against depth (Fig. 7 right);
- ``attention_rollout.png``: attention rollout over sample test images (Figs. 6 and 14);
- ``figures.npz``: the arrays behind them.

Every user error (a missing path, a file that is not a checkpoint, a data problem) is
one line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile

import numpy as np
from PIL import Image

from autograd import backend
from autograd.backend import DeviceError

from . import analysis as A
from . import plot
from .checkpoint import load_checkpoint
from .cli import EXIT_USER_ERROR, Parser
from .data import Augment, DataError, load_dataset, resize, seed_generator

ROLLOUT_SHOWN = 8  # sample images in the rollout figure
RUN_CHECKPOINTS = ("checkpoint-best.npz", "checkpoint-last.npz")


class AnalyzeError(Exception):
    """A problem the user can fix; one line, exit code 2."""


# --- finding the checkpoint and the data ------------------------------------------------------
def resolve_source(source) -> tuple[str, dict]:
    """The checkpoint file of a run directory or checkpoint path, and the run's config.json (or {})."""
    source = os.fspath(source)
    if not os.path.exists(source):
        raise AnalyzeError(f"{source} does not exist; give a run directory or a checkpoint file")
    if os.path.isdir(source):
        found = [os.path.join(source, n) for n in RUN_CHECKPOINTS if os.path.isfile(os.path.join(source, n))]
        if not found:
            raise AnalyzeError(f"{source} holds neither {' nor '.join(RUN_CHECKPOINTS)}; is it a run directory?")
        checkpoint, run_dir = found[0], source
    else:
        checkpoint, run_dir = source, os.path.dirname(os.path.abspath(source))
    config_path = os.path.join(run_dir, "config.json")
    run_config = {}
    if os.path.isfile(config_path):
        try:
            with open(config_path) as f:
                run_config = json.load(f)
        except (OSError, ValueError) as e:
            raise AnalyzeError(f"cannot read {config_path}: {e}") from None
    return checkpoint, run_config


def load_model(path, device="cpu"):
    """The model of checkpoint ``path`` in evaluation mode on ``device``."""
    try:
        model = load_checkpoint(path)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise AnalyzeError(f"{path} is not a checkpoint npvit can read: {first_line}") from None
    return model.eval().to(device)


def sample_images(model, dataset, data_dir=None, count=64, seed=0, download=True):
    """``count`` test images drawn with ``seed``: (pixels (B, H, W, C) uint8 at the model's size,
    inputs (B, C, H, W) float32 normalised as in training, labels (B,), class names)."""
    cfg = model.cfg
    options = {"image_size": cfg.image_hw[0]} if dataset == "synthetic" else {}
    test = load_dataset(dataset, "test", data_dir=data_dir, download=download, channels=cfg.in_chans, **options)
    pick = seed_generator(seed, "analyze").permutation(len(test))[:count]
    x = test.x[pick]                                                       # (B, C, h, w) uint8
    size = cfg.image_hw
    inputs = Augment(test.mean, test.std, test.num_classes, image_size=size).prepare(x)
    pixels = np.clip(np.rint(resize(x, size)), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)  # (B, H, W, C)
    return pixels, inputs, test.y[pick], test.classes


# --- drawing the figures ---------------------------------------------------------------------
def render_pca(components, explained, what) -> Image.Image:
    """The principal components (k, C, P, P) as RGB (or grey) tiles, each scaled to [0, 1], 7 to a row."""
    k, C, P, _ = components.shape
    if C not in (1, 3):
        raise ValueError(f"{C}-channel filters are neither RGB nor grey; nothing to show")
    tiles = np.rint(A.unit_range(components, (1, 2, 3)) * 255).astype(np.uint8).transpose(0, 2, 3, 1)  # (k, P, P, C)
    grid = plot.image_grid(tiles, ncols=min(k, 7), scale=max(1, 56 // P), gap=6,
                           tile_labels=[f"{100 * e:.1f}%" for e in explained])
    return plot.titled(grid, f"First {k} principal components of the {what}\n"
                             "(each scaled to [0, 1]; share of the variance above each)")


def render_similarity(similarity, what, relative=False):
    """The (rows, cols, rows, cols) cosine similarities as a grid of small heat maps with a colour bar;
    ``relative``: the grid is of (dy, dx) offsets, numbered from -(rows // 2)."""
    rows, cols = similarity.shape[:2]
    if relative:
        start, names = (-(rows // 2), -(cols // 2)), ("Row offset dy (query - key)", "Column offset dx (query - key)")
        note = "(tile at dy, dx: cosine similarity of that offset's vector with every offset's)"
    else:
        start, names = (1, 1), ("Input patch row", "Input patch column")
        note = "(tile at row i, column j: cosine similarity of position (i, j) with every position)"
    grid = plot.heatmap_grid(similarity, -1.0, 1.0, ylabel=names[0], xlabel=names[1], gap=3, start=start,
                             colorbar_label="Cosine similarity", scale=max(1, round(48 / max(rows, cols))))
    return plot.titled(grid, f"Position embedding similarity, {what}\n{note}")


def render_distance(distance, pitch, uniform, title) -> Image.Image:
    """Mean attention distance (L, H) in pixels, one dot per head at each depth."""
    L, H = distance.shape
    depth = np.arange(1, L + 1)
    labelled = H <= len(plot.PALETTE)
    # heads side by side around each depth, so equal distances do not hide each other
    offsets = (np.arange(H) - (H - 1) / 2) * (0.4 / max(H - 1, 1))
    series = [(f"head {h + 1}" if labelled else None, depth + offsets[h], distance[:, h]) for h in range(H)]
    top = plot.nice_upper(1.1 * max(float(distance.max()), uniform))
    xticks = list(depth) if L <= 16 else [t for t in plot.nice_ticks(1, L) if t >= 1]
    return plot.scatter_plot(series, xlim=(0.5, L + 0.5), ylim=(0.0, top), xticks=xticks,
                             xlabel="Network depth (layer)", ylabel="Mean attention distance (pixels)",
                             title=title, hlines=[(uniform, f"uniform attention ({uniform:.1f} px)")])


def render_rollout(pixels, maps, row_labels, title) -> Image.Image:
    """Per image (B, H, W, C) uint8: the image, its rollout map (B, H, W) in [0, 1] as a heat map, and
    the image weighted by the map (the paper's overlay)."""
    B, H, W, _ = pixels.shape
    rgb = pixels if pixels.shape[-1] == 3 else np.repeat(pixels, 3, axis=-1)  # (B, H, W, 3), grey repeated
    heat = plot.colormap(maps)                                             # (B, H, W, 3)
    masked = np.rint(rgb * maps[..., None]).astype(np.uint8)
    tiles = np.stack([rgb, heat, masked], axis=1).reshape(3 * B, H, W, 3)
    grid = plot.image_grid(tiles, ncols=3, scale=max(1, 128 // max(H, W)), gap=6, row_labels=row_labels,
                           col_labels=["image", "rollout", "image x rollout"])
    bar = plot.colorbar(0.0, 1.0, min(grid.height - 40, 300), "rollout / its maximum")
    return plot.titled(plot.hstack([grid, bar], gap=12, align="top"), title)


# --- the command ---------------------------------------------------------------------------
def analyze(source, out, dataset=None, data_dir=None, images=64, seed=0, batch_size=32, device="cpu", log=print):
    """Write the figures of a run directory or checkpoint ``source`` into ``out``; returns the files written."""
    checkpoint, run_config = resolve_source(source)
    model = load_model(checkpoint, device)
    cfg = model.cfg
    dataset = dataset or run_config.get("dataset")
    data_dir = data_dir or run_config.get("data_dir")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as e:
        raise AnalyzeError(f"cannot create the output folder {out}: {e.strerror}") from None
    log(f"analyzing {checkpoint}")
    written, arrays = [], {}

    def save(image, name):
        path = os.path.join(out, name)
        image.save(path)
        written.append(path)
        log(f"wrote {path}")

    weight, what = A.embedding_filters(model)
    components, explained = A.patch_embedding_pca(weight, 28)
    arrays.update(pca_components=backend.to_numpy(components), pca_explained=backend.to_numpy(explained))
    try:
        save(render_pca(arrays["pca_components"], arrays["pca_explained"], what), "patch_embedding_pca.png")
    except ValueError as e:
        log(f"skipped patch_embedding_pca.png: {e}")

    try:
        similarity, what = A.position_similarity(model)
    except ValueError as e:
        log(f"skipped position_similarity.png: {e}")
    else:
        arrays["position_similarity"] = similarity = backend.to_numpy(similarity)
        save(render_similarity(similarity, what, cfg.pos_embed == "relative_2d"), "position_similarity.png")

    if not dataset:
        log("skipped the attention figures: no data set (pass --dataset, or a run directory with config.json)")
    else:
        pixels, inputs, labels, classes = sample_images(model, dataset, data_dir, images, seed,
                                                        run_config.get("download", True))
        distance, maps, predictions = A.attention_summary(model, backend.to_device(inputs, device), batch_size)
        distance, maps = backend.to_numpy(distance), backend.to_numpy(maps)
        pitch = cfg.effective_patch_size
        uniform = float(A.patch_distances(cfg.grid_size, pitch).mean())
        kind = (f"hybrid, {pitch} px per token (backbone stride {cfg.backbone_stride})" if cfg.hybrid_layers is not None
                else f"ViT, {cfg.patch_size} px patches")
        save(render_distance(distance, pitch, uniform,
                             f"Mean attention distance per head ({kind}; {len(inputs)} {dataset} test images)"),
             "attention_distance.png")
        log(f"mean attention distance per layer (pixels, {pitch} px between tokens): "
            + " ".join(f"{d:.1f}" for d in distance.mean(axis=1)))
        shown = min(len(inputs), ROLLOUT_SHOWN)
        up = A.upsample(maps[:shown], cfg.image_hw)                          # (shown, H, W)
        up = up / np.maximum(up.max(axis=(1, 2), keepdims=True), 1e-12)
        predicted = None if predictions is None or cfg.num_classes != len(classes) else backend.to_numpy(predictions)
        row_labels = [classes[labels[i]] + ("" if predicted is None else f" (pred: {classes[predicted[i]]})")
                      for i in range(shown)]
        source_row = "[class] token" if cfg.global_pool == "token" and cfg.class_token else "mean over patches (GAP)"
        save(render_rollout(pixels[:shown], up, row_labels, f"Attention rollout, {source_row}; scaled to its maximum"),
             "attention_rollout.png")
        arrays.update(attention_distance=distance, rollout_maps=maps, labels=labels,
                      **({"predictions": backend.to_numpy(predictions)} if predictions is not None else {}))
    np.savez(os.path.join(out, "figures.npz"), **arrays)
    written.append(os.path.join(out, "figures.npz"))
    return written


def build_parser() -> argparse.ArgumentParser:
    """The parser with every flag documented."""
    p = Parser(prog="python -m npvit.analyze",
                description="Draw the paper's Figure 7 (patch-embedding PCA, position-embedding similarity, "
                            "mean attention distance) and attention-rollout maps for a checkpoint.")
    p.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT", help="a training run directory or a checkpoint .npz")
    p.add_argument("--out", required=True, help="folder for the PNGs (created if missing)")
    p.add_argument("--dataset", help="data set of the sample images (default: the run's)")
    p.add_argument("--data-dir", help="where a local copy of the data set lives (default: the run's)")
    p.add_argument("--images", type=int, default=64, help="test images for attention distance and rollout (default 64)")
    p.add_argument("--seed", type=int, default=0, help="which test images are drawn (default 0)")
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--device", default="cpu", help="cpu, gpu or gpu:N (default cpu)")
    return p


def main(argv=None) -> int:
    """Run the command; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.images < 1 or args.batch_size < 1:
        parser.error("--images and --batch-size must be positive")
    try:
        analyze(args.source, args.out, args.dataset, args.data_dir, args.images, args.seed, args.batch_size,
                args.device)
    except (AnalyzeError, DataError, DeviceError) as e:
        print(f"analyze: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
