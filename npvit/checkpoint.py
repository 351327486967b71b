"""Checkpoints: our own, timm-named state dicts, and the original Google ViT ``.npz`` files.

Three kinds of ``.npz`` file load into a ready model with ``load_checkpoint(path)``:

- **ours** (``save_checkpoint``): the model's state dict under its timm names, the
  optimizer state, the moving average of the weights (``--ema``) and any extra arrays
  under ``optimizer/...``, ``ema/...`` and ``extra/...``, and one
  JSON document under ``__npvit__`` holding the format version, the ``ViTConfig``, the
  step and the structure of the optimizer state. One file, written to a temporary file
  beside the target and renamed over it, so a crash never leaves half a checkpoint;
  nothing is pickled, and everything loads with ``np.load(allow_pickle=False)``.
- **timm** state dicts saved with NumPy (``np.savez(path, **{k: v.numpy() ...})``): the
  config is inferred from the shapes (embed dim, depth, patch size, MLP width, classes,
  position grid, [class] token, pre-logits, ``fc_norm``, the hybrid's stages, its stem-only
  form's ``patch_embed.backbone.{conv,norm}`` renamed to ``.stem.*``); the hybrid runs with
  timm's normalisation constants (``hybrid_convention="timm"``). ``num_heads`` cannot be
  seen in the shapes and defaults by width (ViT-Ti 3, S 6, B 12, L 16, H 16, else D / 64)
  unless given. The pooling is what the keys prove: ``fc_norm.*`` (timm builds it only for
  GAP) or no [class] token mean GAP; a [class] token without ``fc_norm`` is [class]
  pooling or GAP without ``fc_norm`` alike, so ``global_pool`` must then be given.
- **Google**'s (google-research/vision_transformer, e.g. ``ViT-B_16.npz``,
  ``R50+ViT-B_16.npz``): Flax names and layouts (kernels (in, out), convolutions HWIO,
  attention (D, heads, d)), renamed and transposed as timm's ``_load_weights`` does. They
  run as Google's own code ran them, not as timm's models do: flax's tanh-approximated GELU
  (``gelu_approximate="tanh"``; timm's Google-weight models use the exact GELU), the
  hybrid with Google's normalisation constants, GAP files with the final LayerNorm on every
  token before the average (``fc_norm=False``).

``load_checkpoint(path, img_size=384, num_classes=10)`` is the paper's fine-tuning
recipe: the position embeddings are interpolated to the new grid and the head is
replaced by a zero-initialised linear layer (the pre-logits layer dropped). The
interpolation defaults to the source's own (``RESIZE_DEFAULTS``): bicubic with
antialiasing for timm files (timm's ``resample_abs_pos_embed``), bilinear without for
Google files (timm's ``_load_weights``), bicubic without for ours.

A checkpoint of ours with a moving average of the weights loads the average
(``load_checkpoint(path)``, so ``--init`` and ``--eval-only`` use it); ``ema=False``
loads the trained weights themselves, as ``--resume`` does. Format version 3 added it.

Our format's version 1 (before the paper's 1-D relative attention) called the 2-D kind
``"relative"``; such files load as ``"relative_2d"``, which is what they hold. A version-1
GAP model with a [class] token says so in its config (``class_token: true``) and loads
as it was trained.
"""
from __future__ import annotations

import json
import math
import os
import re
import zipfile
import zlib
from dataclasses import dataclass, field, replace

import numpy as np

from autograd import backend
from autograd.nn import StateDictError

from . import pos_embed as pe
from .config import ViTConfig, check_fields
from .fileio import atomic_write
from .model import VisionTransformer

FORMAT_VERSION = 3
META_KEY = "__npvit__"
# format -> (interpolation, antialias) of position embeddings resized on loading
RESIZE_DEFAULTS = {"npvit": ("bicubic", False), "timm": ("bicubic", True), "google": ("bilinear", False)}
_DEFAULT_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16}


class NonFiniteState(ValueError):
    """The state to be saved holds NaN or infinity; nothing was written, so the file on disk stays as it was."""


@dataclass
class Checkpoint:
    """What a checkpoint file holds: its format ("npvit", "timm", "google"), the model's config and
    state dict (timm names, host NumPy arrays), and for ours the step, optimizer state, extras and the
    moving average of the parameters (``ema``: {name: array}, or None)."""

    format: str
    config: ViTConfig
    state: dict
    step: int | None = None
    optimizer_state: object = None
    extra: object = None
    path: str | None = field(default=None, repr=False)
    ema: dict | None = field(default=None, repr=False)


# --- trees of arrays and JSON values --------------------------------------------------
def _encode(tree, key, arrays):
    """A JSON-able copy of ``tree`` whose arrays are moved into ``arrays`` under keys starting with ``key``."""
    if backend.is_gpu_array(tree) or isinstance(tree, (np.ndarray, np.generic)):
        name = key
        while name in arrays:  # a key holding "/" could meet a nested path
            name += "_"
        arrays[name] = backend.to_numpy(tree)
        return {"__scalar__" if isinstance(tree, np.generic) else "__array__": name}
    if isinstance(tree, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in tree):
            return {k: _encode(v, f"{key}/{k}", arrays) for k, v in tree.items()}
        return {"__items__": [[k, _encode(v, f"{key}/{k}", arrays)] for k, v in tree.items()]}
    if isinstance(tree, (list, tuple)):
        items = [_encode(v, f"{key}/{i}", arrays) for i, v in enumerate(tree)]
        return items if isinstance(tree, list) else {"__tuple__": items}
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    raise TypeError(f"cannot store a {type(tree).__name__} at {key!r}: use arrays, numbers, strings, lists and dicts")


def _decode(tree, arrays):
    """The inverse of ``_encode``."""
    if isinstance(tree, list):
        return [_decode(v, arrays) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if "__array__" in tree:
        return arrays[tree["__array__"]]
    if "__scalar__" in tree:
        return arrays[tree["__scalar__"]][()]
    if "__tuple__" in tree:
        return tuple(_decode(v, arrays) for v in tree["__tuple__"])
    if "__items__" in tree:
        return {(tuple(k) if isinstance(k, list) else k): _decode(v, arrays) for k, v in tree["__items__"]}
    return {k: _decode(v, arrays) for k, v in tree.items()}


# --- saving -----------------------------------------------------------------------------
def save_checkpoint(path, model: VisionTransformer, step=0, optimizer_state=None, extra=None, ema=None) -> str:
    """Write ``model`` (state and config), ``step``, ``optimizer_state`` (e.g. ``optimizer.state_dict()``),
    ``extra`` (any tree of arrays, numbers, strings, lists and dicts) and ``ema`` (the moving average of
    the parameters, {name: array} with the model's names; loading builds the model from it) to ``path``
    atomically.

    Returns the path. Loading gives every array back bit for bit. A floating-point array
    holding NaN or infinity raises ``NonFiniteState`` before anything is written: a run
    that diverged must not replace its last good checkpoint with one it cannot resume from.
    """
    path = os.fspath(path)
    arrays = model.state_dict()
    meta = {
        "format": "npvit",
        "version": FORMAT_VERSION,
        "config": model.cfg.to_dict(),
        "step": None if step is None else int(step),
        "optimizer": _encode(optimizer_state, "optimizer", arrays),
        "extra": _encode(extra, "extra", arrays),
        "ema": _encode(ema, "ema", arrays),
    }
    for name, a in arrays.items():
        if np.issubdtype(a.dtype, np.inexact) and not np.isfinite(a).all():
            raise NonFiniteState(f"{name} holds NaN or infinity")
    arrays[META_KEY] = np.array(json.dumps(meta))
    with atomic_write(path, fsync=True) as f:
        np.savez(f, **arrays)
    return path


# --- reading -----------------------------------------------------------------------------
def read_checkpoint(path, **overrides) -> Checkpoint:
    """Read any of the three kinds of checkpoint without building a model.

    ``overrides`` change config fields; for timm and Google files they also fill in what
    the shapes do not tell (``num_heads``, the hybrid's ``hybrid_groups``, stem stride, ...).
    """
    path = os.fspath(path)
    arrays = _read_arrays(path)
    try:
        return _parse(path, arrays, overrides)
    except (KeyError, IndexError, TypeError, AttributeError) as e:  # a damaged or hand-made file
        what = f"has no {e.args[0]!r}" if isinstance(e, KeyError) else f"is malformed ({type(e).__name__}: {e})"
        raise ValueError(f"{path}: an incomplete or damaged checkpoint: it {what}") from None


# How a file starts tells what it is before NumPy guesses: an .npz is a zip archive.
_SAVE_HINT = "save a PyTorch state dict with np.savez(path, **{k: v.numpy() for k, v in state_dict.items()})"


def _read_arrays(path: str) -> dict:
    """Every array of the .npz at ``path``, read without unpickling; ValueError saying what the file is instead
    (empty, a text file, a single .npy, a pickle, a truncated or corrupt archive)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise ValueError(f"{path} is empty (0 bytes); it was cut off before anything was written")
    if head.startswith(b"\x93NUMPY"):
        raise ValueError(f"{path} is a single .npy array, not an .npz checkpoint; {_SAVE_HINT}")
    if head[:1] == b"\x80":
        raise ValueError(f"{path} is a pickle (a torch.save file?); npvit never unpickles: {_SAVE_HINT}")
    if not head.startswith(b"PK"):
        raise ValueError(f"{path} is not a NumPy .npz file (it starts with {head[:8]!r}); {_SAVE_HINT}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as e:  # an object array: it would need unpickling
        raise ValueError(f"{path} cannot be read without unpickling ({e}); {_SAVE_HINT}") from None
    except (EOFError, zipfile.BadZipFile, zlib.error, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ValueError(f"{path} is truncated or corrupt ({type(e).__name__}: {e}); it cannot be used, take "
                         "another copy (or the run's checkpoint-best.npz)") from None


def _parse(path: str, arrays: dict, overrides: dict) -> Checkpoint:
    """The Checkpoint of an .npz's arrays, by its kind (see ``read_checkpoint``)."""
    if META_KEY in arrays:
        meta = json.loads(str(arrays.pop(META_KEY)))
        if meta.get("format") != "npvit" or meta.get("version", 0) > FORMAT_VERSION:
            raise ValueError(f"{path}: npvit checkpoint format {meta.get('format')!r} version {meta.get('version')} "
                             f"is not one this code reads (version <= {FORMAT_VERSION})")
        state = {k: v for k, v in arrays.items() if not k.startswith(("optimizer/", "extra/", "ema/"))}
        config = ViTConfig.from_dict(_upgrade_config(meta["config"], meta.get("version", 0))).replace(**overrides)
        return Checkpoint("npvit", config, state, meta.get("step"), _decode(meta.get("optimizer"), arrays),
                          _decode(meta.get("extra"), arrays), path, _decode(meta.get("ema"), arrays))
    if _google_prefix(arrays) is not None:
        state, hints = google_to_timm(arrays)
        return Checkpoint("google", infer_config(state, **{**hints, **overrides}), state, path=path)
    if "patch_embed.proj.weight" in arrays:
        state = _timm_stem_names(arrays)
        return Checkpoint("timm", infer_config(state, **overrides), state, path=path)
    raise ValueError(
        f"{path}: not a checkpoint npvit knows (no '{META_KEY}' metadata, no timm 'patch_embed.proj.weight', "
        f"no Google 'embedding/kernel'); its first keys: {sorted(arrays)[:8]}"
    )


def _upgrade_config(config: dict, version: int) -> dict:
    """A config dict written by an older format version, in today's terms (see the module docstring)."""
    if version < 2 and config.get("pos_embed") == "relative":
        return {**config, "pos_embed": "relative_2d"}
    return config


def _timm_stem_names(state) -> dict:
    """A timm state dict with the stem-only hybrid's ``patch_embed.backbone.{conv,norm}`` named as the
    stem of the full ResNet, ``patch_embed.backbone.stem.{conv,norm}``, which npvit's backbone always has."""
    stem_only = re.compile(r"^patch_embed\.backbone\.(conv|norm)\.")
    return {stem_only.sub(r"patch_embed.backbone.stem.\1.", k): v for k, v in state.items()}


def _google_prefix(arrays):
    for prefix in ("", "opt/target/"):
        if f"{prefix}embedding/kernel" in arrays:
            return prefix
    return None


def google_to_timm(arrays) -> tuple[dict, dict]:
    """Convert a Google ViT checkpoint's arrays to a timm-named state dict.

    Returns ``(state, hints)``, hints being the config fields the Flax layout reveals
    beyond the shapes timm's keep (the number of heads, the GELU used).
    """
    prefix = _google_prefix(arrays)

    def get(name):
        return arrays[prefix + name]

    def has(name):
        return prefix + name in arrays

    def dense(name):
        return get(name).T                                                  # (in, out) -> (out, in)

    def conv(name):
        return get(name).transpose(3, 2, 0, 1)                               # HWIO -> OIHW

    def norm(dst, src, scale="scale"):
        state[f"{dst}.weight"], state[f"{dst}.bias"] = get(f"{src}/{scale}"), get(f"{src}/bias")

    state = {}
    if has("conv_root/kernel"):
        bb = "patch_embed.backbone"
        state[f"{bb}.stem.conv.weight"] = conv("conv_root/kernel")
        norm(f"{bb}.stem.norm", "gn_root")
        i = 0
        while has(f"block{i + 1}/unit1/conv1/kernel"):
            j = 0
            while has(f"block{i + 1}/unit{j + 1}/conv1/kernel"):
                src, dst = f"block{i + 1}/unit{j + 1}", f"{bb}.stages.{i}.blocks.{j}"
                for r in (1, 2, 3):
                    state[f"{dst}.conv{r}.weight"] = conv(f"{src}/conv{r}/kernel")
                    norm(f"{dst}.norm{r}", f"{src}/gn{r}")
                if has(f"{src}/conv_proj/kernel"):
                    state[f"{dst}.downsample.conv.weight"] = conv(f"{src}/conv_proj/kernel")
                    norm(f"{dst}.downsample.norm", f"{src}/gn_proj")
                j += 1
            i += 1
    state["patch_embed.proj.weight"] = conv("embedding/kernel")
    state["patch_embed.proj.bias"] = get("embedding/bias")
    if has("cls"):
        state["cls_token"] = get("cls")
    if has("Transformer/posembed_input/pos_embedding"):
        state["pos_embed"] = get("Transformer/posembed_input/pos_embedding")
    heads = None
    i = 0
    while has(f"Transformer/encoderblock_{i}/LayerNorm_0/scale"):
        src, dst = f"Transformer/encoderblock_{i}", f"blocks.{i}"
        mha = f"{src}/MultiHeadDotProductAttention_1"
        norm(f"{dst}.norm1", f"{src}/LayerNorm_0")
        kernels = [get(f"{mha}/{n}/kernel") for n in ("query", "key", "value")]  # (D, H, d) each
        heads = kernels[0].shape[1]
        state[f"{dst}.attn.qkv.weight"] = np.concatenate([k.reshape(k.shape[0], -1).T for k in kernels])  # (3D, D)
        state[f"{dst}.attn.qkv.bias"] = np.concatenate(
            [get(f"{mha}/{n}/bias").reshape(-1) for n in ("query", "key", "value")])                    # (3D,)
        out = get(f"{mha}/out/kernel")                                                                 # (H, d, D)
        state[f"{dst}.attn.proj.weight"] = out.reshape(-1, out.shape[-1]).T                           # (D, H d)
        state[f"{dst}.attn.proj.bias"] = get(f"{mha}/out/bias")
        norm(f"{dst}.norm2", f"{src}/LayerNorm_2")
        for r in (0, 1):
            state[f"{dst}.mlp.fc{r + 1}.weight"] = dense(f"{src}/MlpBlock_3/Dense_{r}/kernel")
            state[f"{dst}.mlp.fc{r + 1}.bias"] = get(f"{src}/MlpBlock_3/Dense_{r}/bias")
        i += 1
    norm("norm", "Transformer/encoder_norm")
    for name, dst in (("pre_logits", "pre_logits.fc"), ("head", "head")):
        if has(f"{name}/kernel"):
            state[f"{dst}.weight"], state[f"{dst}.bias"] = dense(f"{name}/kernel"), get(f"{name}/bias")
    hints = {"gelu_approximate": "tanh"}
    if heads is not None:
        hints["num_heads"] = heads
    if has("cls"):  # Google's files say their classifier: a [class] token is classifier="token"
        hints["global_pool"] = "token"
    else:  # classifier="gap": Google's code normalises every token, then averages
        hints["fc_norm"] = False
    if has("conv_root/kernel"):
        hints["hybrid_convention"] = "google"
    return {k: np.ascontiguousarray(v) for k, v in state.items()}, hints


def _count(state, pattern) -> int:
    """How many consecutive indices i from 0 have a key matching ``pattern.format(i)``."""
    n = 0
    while pattern.format(n) in state:
        n += 1
    return n


def infer_config(state, **overrides) -> ViTConfig:
    """The ViTConfig of a timm-named state dict, from its shapes; ``overrides`` win and fill in the rest."""
    def fail(message):
        raise ValueError(f"cannot infer the model from this state dict: {message}")

    check_fields(overrides)
    if "patch_embed.proj.weight" not in state:
        fail("no 'patch_embed.proj.weight'")
    D, channels, patch, _ = state["patch_embed.proj.weight"].shape
    depth = _count(state, "blocks.{}.norm1.weight")
    if depth == 0:
        fail("no 'blocks.0.norm1.weight'")
    cfg = dict(
        embed_dim=D, in_chans=channels, patch_size=patch, depth=depth,
        num_heads=_DEFAULT_HEADS.get(D, max(D // 64, 1)),
        mlp_ratio=state["blocks.0.mlp.fc1.weight"].shape[0] / D,
        qkv_bias="blocks.0.attn.qkv.bias" in state,
        class_token="cls_token" in state,
        mask_token="mask_token" in state,
        fc_norm="fc_norm.weight" in state,
        representation_size=state["pre_logits.fc.weight"].shape[0] if "pre_logits.fc.weight" in state else None,
        num_classes=state["head.weight"].shape[0] if "head.weight" in state else 0,
    )
    # what the keys prove: fc_norm exists only under GAP (timm's default), and [class] pooling needs the token
    if cfg["fc_norm"] or not cfg["class_token"]:
        cfg["global_pool"] = "avg"
    cfg["pos_embed"] = "1d" if "pos_embed" in state else "none"
    bb = "patch_embed.backbone"
    if f"{bb}.stem.conv.weight" in state:
        width, cfg["in_chans"], kernel, _ = state[f"{bb}.stem.conv.weight"].shape
        cfg.update(hybrid_width=width, hybrid_stem_kernel=kernel, hybrid_convention="timm", hybrid_layers=tuple(
            _count(state, f"{bb}.stages.{i}.blocks.{{}}.conv1.weight")
            for i in range(_count(state, f"{bb}.stages.{{}}.blocks.0.conv1.weight"))
        ))
    cfg.update(overrides)
    if "global_pool" not in cfg:
        fail("a [class] token and no fc_norm fit both [class] pooling and GAP without fc_norm; "
             "pass global_pool='token' (timm's default) or global_pool='avg'")
    if cfg["fc_norm"] == (cfg["global_pool"] == "avg"):
        cfg["fc_norm"] = None  # what the pooling implies anyway, as a config built by hand would say
    if "img_size" not in cfg:
        if "pos_embed" not in state:
            fail("no 'pos_embed' to read the image size from; pass read_checkpoint(path, img_size=...)")
        n = state["pos_embed"].shape[1] - int(cfg["class_token"])
        side = math.isqrt(n)
        if side * side != n:
            fail(f"pos_embed holds {n} patch positions, not a square grid; pass read_checkpoint(path, img_size=(H, W))")
        # a throwaway config with the same stem tells how many pixels a feature-map cell spans
        stem = ViTConfig(**{**cfg, "img_size": 1, "patch_size": 1, "mpp_target": None})
        cfg["img_size"] = side * cfg["patch_size"] * stem.backbone_stride
    return ViTConfig(**cfg)


# --- building a model ------------------------------------------------------------------
_POSITION_KEY = re.compile(r"^(?:blocks\.\d+\.)?(" + "|".join(pe.ALL_PARAM_NAMES) + r")$")


def load_checkpoint(source, *, img_size=None, num_classes=None, interpolation=None, antialias=None, generator=None,
                    ema=True, **overrides) -> VisionTransformer:
    """A ready model from a checkpoint path (ours, timm-named or Google's) or a ``Checkpoint``.

    ``img_size``: fine-tune at another resolution, the position embeddings interpolated
    (``interpolation`` "bicubic" or "bilinear", ``antialias`` as ``F.interpolate``'s; None:
    the source's own, ``RESIZE_DEFAULTS``) to the new grid. ``num_classes``: when it
    differs, the fine-tuning head swap (``VisionTransformer.reset_classifier``). Other keywords
    override config fields (``drop_path_rate=0.1``; ``num_heads`` for timm files).
    ``ema``: build the model from the moving average of the weights when the checkpoint
    holds one (False: from the trained weights themselves). A checkpoint that does not fit
    raises ``StateDictError`` naming every key and shape off.
    """
    ck = source if isinstance(source, Checkpoint) else read_checkpoint(source, **overrides)
    if isinstance(source, Checkpoint) and overrides:
        ck = replace(ck, config=ck.config.replace(**overrides))
    old = ck.config
    new = old if img_size is None else old.replace(img_size=img_size)
    default_mode, default_antialias = RESIZE_DEFAULTS[ck.format]
    interpolation = default_mode if interpolation is None else interpolation
    antialias = default_antialias if antialias is None else antialias
    state = {**ck.state, **(ck.ema if ema and ck.ema else {})}
    if new.grid_size != old.grid_size:
        for key, value in state.items():
            match = _POSITION_KEY.match(key)
            if match:
                state[key] = pe.resize(match.group(1), value, old.grid_size, new.grid_size,
                                       old.num_prefix_tokens, interpolation, antialias)
    with backend.default_dtype_as(state["patch_embed.proj.weight"].dtype):  # a float64 checkpoint stays float64
        model = VisionTransformer(new, generator=generator)
    try:
        model.load_state_dict(state)
    except StateDictError as e:
        where = ck.path or "the checkpoint"
        raise StateDictError(f"{where} ({ck.format} format) does not fit the model:\n{e}",
                             e.missing, e.unexpected, e.mismatched) from None
    if num_classes is not None and num_classes != old.num_classes:
        model.reset_classifier(num_classes)
    return model
