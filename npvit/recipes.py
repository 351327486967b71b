"""Every setting of a run in one table: ``TrainConfig``, the defaults per data set and mode, and ``resolve``.

Each ``TrainConfig`` field is declared with ``setting(default, help, ...)``: its default,
one line saying what it is, and what the command line needs (flag name, choices, a check
of its value). ``npvit/cli.py`` generates every flag of ``train.py`` from these fields, so
a default, a choice list or a check is written here once. ``None`` means: the default of
the run's data set and mode, from the tables below, which ``resolve`` fills in.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

from autograd import backend
from autograd.precision import PRECISIONS

from .config import GLOBAL_POOLS, MPP_TARGETS, POS_EMBED_AT, POS_EMBED_KINDS, get_config, list_models


class TrainError(Exception):
    """A problem with the run's settings or inputs that the user can fix; one line, exit code 2."""


# Defaults per data set (the model and how long to train) and per mode (the recipe).
# Photographs get crop, flip, RandAugment and label smoothing; mixup and cutmix are opt-in.
_PHOTOS = dict(model="vit_cifar_tiny", batch_size=128, crop_padding=4, flip=True, rand_ops=2, label_smoothing=0.1,
               mixup=0.0, cutmix=0.0)
DATASET_DEFAULTS = {
    "cifar10": dict(_PHOTOS, epochs=100),
    "cifar100": dict(_PHOTOS, epochs=100),
    "tiny-imagenet": dict(_PHOTOS, epochs=50),
    "fashion-mnist": dict(_PHOTOS, epochs=30, crop_padding=2, flip=False, rand_ops=0),
    "imagefolder": dict(_PHOTOS, epochs=50, batch_size=64),
    "synthetic": dict(_PHOTOS, epochs=3, batch_size=64, crop_padding=0, flip=False, rand_ops=0, label_smoothing=0.0),
}
MODE_DEFAULTS = {
    "supervised": dict(optimizer="adamw", lr=1e-3, weight_decay=0.05, schedule="cosine", warmup_epochs=5,
                       clip_grad=1.0),
    # the paper's pre-training (Table 3, Appendix B.1): Adam, weight decay 0.1, warmup then linear decay,
    # no label smoothing or RandAugment (the paper names neither). Kept from ours: batch 128, not 4096
    # (a CIFAR-sized epoch would be 12 steps), and warmup in epochs, not 10k steps (more than a whole run here).
    "pretrain": dict(optimizer="adamw", lr=1e-3, weight_decay=0.1, schedule="linear", warmup_epochs=2,
                     clip_grad=1.0, label_smoothing=0.0, rand_ops=0),
    # the paper's fine-tuning (Appendix B.1.1): SGD momentum 0.9, batch 512, clip at global norm 1, no weight
    # decay, cosine, no label smoothing or RandAugment; warmup kept in epochs for the same reason
    "finetune": dict(optimizer="sgd", lr=0.01, weight_decay=0.0, schedule="cosine", warmup_epochs=1, clip_grad=1.0,
                     epochs=10, batch_size=512, label_smoothing=0.0, rand_ops=0),
    # masked patch prediction (Appendix B.1.2): Adam at base lr 2e-4 (no weight decay named), warmup then cosine
    "mpp": dict(optimizer="adam", lr=2e-4, weight_decay=0.0, schedule="cosine", warmup_epochs=2, clip_grad=1.0,
                label_smoothing=0.0, mixup=0.0, cutmix=0.0),
}
# Where a mode's default departs from the paper's recipe for it, and why. Each entry is
# (setting, the paper's value, why npvit's default differs); a run's config.json records under
# "differs_from_paper" every entry whose value in that run is not the paper's (``paper_differences``).
# Sources: Table 3 and Appendix B.1 (pre-training, and ViT-B/16 trained on ImageNet from scratch),
# Appendix B.1.1 and Table 4 (fine-tuning), Appendix B.1.2 (masked patch prediction).
_BIG_BATCH = "4096 images a step would leave a CIFAR-sized epoch 12 steps; a batch of 128 gives it hundreds"
_LONG_WARMUP = ("10k steps is longer than a whole run at this scale; the warmup is set in epochs "
                "(--warmup-epochs) so it scales with the run")
PAPER_RECIPES = {
    "supervised": (
        ("batch_size", 4096, _BIG_BATCH),
        ("warmup_steps", 10_000, _LONG_WARMUP),
        ("lr", 3e-3, "the paper's rate is for ViT-B/16 at batch 4096 on ImageNet; 1e-3 is tuned for batch 128 on "
                     "CIFAR-sized data (REPRODUCTION.md)"),
        ("weight_decay", 0.3, "0.3 is the paper's for 300 ImageNet epochs; short runs of small models underfit, "
                              "and 0.05 (DeiT's) regularises less"),
        ("epochs", 300, "300 epochs is the paper's ImageNet schedule; each data set here has its own length"),
    ),
    "pretrain": (
        ("batch_size", 4096, _BIG_BATCH),
        ("warmup_steps", 10_000, _LONG_WARMUP),
    ),
    "finetune": (
        ("warmup_steps", 500, "Google's fine-tuning code warms up for 500 of 10k steps (CIFAR-10, Table 4); "
                              "runs here are a few hundred steps, so the warmup is set in epochs"),
    ),
    "mpp": (
        ("batch_size", 4096, _BIG_BATCH),
        ("warmup_steps", 10_000, _LONG_WARMUP),
    ),
}


def paper_differences(cfg: "TrainConfig") -> dict:
    """``{setting: {"paper": value, "here": value, "why": reason}}`` for the settings of a resolved config
    whose value is not the paper's recipe for its mode (``PAPER_RECIPES``)."""
    out = {}
    for name, paper, why in PAPER_RECIPES[cfg.mode]:
        here = getattr(cfg, name)
        if name == "warmup_steps" and here is None:
            here = f"{cfg.warmup_epochs:g} epochs"
        if here != paper:
            out[name] = {"paper": paper, "here": here, "why": why}
    return out


# GAP's learning rate, as a multiple of the [class] token's: the paper's Figure 9 (Appendix D.3) trains
# [class] pooling at 8e-4 and finds GAP needs 3e-4 (at 8e-4 it falls well behind), so a from-scratch
# GAP run defaults to 3/8 of its mode's rate (supervised: 3.75e-4 for 1e-3).
POOL_LR_SCALE = {"token": 1.0, "avg": 3e-4 / 8e-4}
# What a mode always uses, whatever was asked: masked patch prediction's labels are the
# patches themselves, so there is nothing to smooth and no label to mix.
MODE_FIXED = {"mpp": dict(label_smoothing=0.0, mixup=0.0, cutmix=0.0)}
# On the CPU, each mode's run on a data set whose GPU-sized defaults would take days (vit_cifar_tiny for 50-100
# epochs) trains vit_cifar_mini for at most an hour of the 2-core machine instead, by mode and data set. Short
# schedules do better without RandAugment. The epochs were sized from vit_cifar_mini's pace in train.py at 2
# threads at 1c74e2d (about 300 images/s supervised and pre-training, 280 for mpp's mean colour: ~1.0 M images in
# 55 minutes); the code has become 1.3-1.8x faster since, so the runs now end well inside the hour (README, "CPU
# defaults", has their measured times). A fine-tune keeps its checkpoint's model and its own 10 epochs.
_CPU_MINI = dict(model="vit_cifar_mini", rand_ops=0)
_CIFAR_CPU = dict(_CPU_MINI, epochs=12, warmup_steps=400)  # CIFAR-10's previous default (REPRODUCTION.md)
# CIFAR-10's is issue 19's hour recipe (REPRODUCTION.md, "The CPU recipe", with its measured runs): 68 epochs, the
# first 80% at 16x16 (4.3x cheaper a step), then at 32x32 with the position table interpolated, and mixup at
# alpha 0.2, which the longer schedule needs against overfitting (1.7 points on the held-out split). ``low_res``
# (share of the epochs, size) is not a TrainConfig field: ``resolve`` turns it into --low-res-epochs/-size.
_CIFAR10_HOUR = dict(_CPU_MINI, epochs=68, warmup_steps=400, mixup=0.2, low_res=(0.8, 16))
CPU_RECIPES = {
    "supervised": {"cifar10": _CIFAR10_HOUR, "cifar100": _CIFAR_CPU, "tiny-imagenet": dict(_CPU_MINI, epochs=10)},
    "pretrain": {"tiny-imagenet": dict(_CPU_MINI, epochs=10), "cifar10": dict(_CPU_MINI, epochs=20),
                 "cifar100": dict(_CPU_MINI, epochs=20)},
    "mpp": {"tiny-imagenet": dict(_CPU_MINI, epochs=9), "cifar10": dict(_CPU_MINI, epochs=18),
            "cifar100": dict(_CPU_MINI, epochs=18)},
}
MODES = tuple(MODE_DEFAULTS)
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("cosine", "linear", "constant")
PER_RECIPE = "per data set and mode"


def _finite(value) -> bool:
    """False for NaN, infinity, and an integer too large for a float (no setting is meant that big)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def positive(value):
    """A ``check``: None when ``value`` is a finite positive number, else what is wrong."""
    return None if _finite(value) and value > 0 else "must be positive"


def non_negative(value):
    """A ``check``: None when ``value`` is a finite number >= 0, else what is wrong."""
    return None if _finite(value) and value >= 0 else "must be >= 0"


def in_range(low, high, *, high_included=False, low_included=True):
    """A ``check`` that ``low <= value < high`` (the ends as asked); NaN and infinity never pass."""
    def check_range(value):
        above = value >= low if low_included else value > low
        below = value <= high if high_included else value < high
        if _finite(value) and above and below:
            return None
        return f"must be in {'[' if low_included else '('}{low:g}, {high:g}{']' if high_included else ')'}"
    return check_range


def each(check_one):
    """A ``check`` of every value of a tuple setting with ``check_one``."""
    def check_all(values):
        return next((problem for problem in map(check_one, values) if problem), None)
    return check_all


def setting(default, help, *, group, flag=None, choices=None, noun=None, check=None, metavar=None,
            default_help=None):
    """A ``TrainConfig`` field with what its flag needs, kept in the field's metadata.

    ``help``: one line, what the setting is; ``group``: the --help section; ``flag``: the
    flag when it is not ``--field-name``; ``choices``: the allowed values (``noun`` names
    them in the error, the flag unless given); ``check``: a
    function of a value giving None or what is wrong with it (``positive``), both applied
    by ``resolve``; ``default_help``: how --help states a ``None`` default
    (``PER_RECIPE`` unless given).
    """
    meta = dict(help=help, group=group, flag=flag, choices=choices, noun=noun, check=check, metavar=metavar,
                default_help=default_help)
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Everything that defines a run, one ``setting`` per field (see the module docstring)."""

    dataset: str = setting("cifar10", "the data set", group="data", choices=tuple(DATASET_DEFAULTS),
                           noun="data set")
    mode: str = setting("supervised", "supervised from scratch, pretrain (with the pre-training head), finetune "
                        "(needs --init) or mpp (masked patch prediction)", group="mode", choices=MODES, noun="mode",
                        default_help="supervised; finetune when --init is given")
    data_dir: str | None = setting(None, "a local copy in the official layout (or an image folder); nothing is "
                                   "downloaded then", group="data", default_help="the download cache")
    download: bool = setting(True, "download the data set when there is no local copy", group="data")
    model: str | None = setting(None, f"model name; one of: {', '.join(list_models())}", group="model")
    model_overrides: dict = setting({}, "model config fields changed by name (the model flags)", group="model")
    init: str | None = setting(None, "start from this checkpoint (ours, a timm-named .npz or a Google ViT .npz) "
                               "and fine-tune", group="mode", metavar="CHECKPOINT", default_help="none")
    image_size: int | None = setting(None, "train at this resolution (images are resized; fine-tuning "
                                     "interpolates the position embeddings)", group="data",
                                     default_help="the data set's", check=positive)
    low_res_epochs: int | None = setting(None, "train the first K epochs at --low-res-size, then at full size with "
                                         "the position embeddings interpolated as fine-tuning does (the paper's Sec. "
                                         "3.2 as a speed trick; 0: off)", group="data", metavar="K",
                                         check=non_negative,
                                         default_help="0; CIFAR-10 on the CPU: 80%% of --epochs at 16x16")
    low_res_size: int | None = setting(None, "the image size of the --low-res-epochs stage, a multiple of the "
                                       "patch size below the full size", group="data", metavar="S",
                                       default_help="none", check=positive)
    epochs: int | None = setting(None, "epochs to train", group="optimisation", check=positive)
    max_steps: int | None = setting(None, "stop after this many steps (the schedule ends there too)",
                                    group="optimisation", default_help="every epoch's", check=positive)
    batch_size: int | None = setting(None, "images per optimizer step, over all processes", group="optimisation",
                                     check=positive)
    eval_batch_size: int = setting(500, "images per forward pass of evaluation", group="optimisation",
                                   check=positive)
    optimizer: str | None = setting(None, "optimizer", group="optimisation", choices=OPTIMIZERS,
                                     noun="optimizer")
    lr: float | None = setting(None, "peak learning rate", group="optimisation", check=positive)
    weight_decay: float | None = setting(None, "weight decay (decoupled for adamw)", group="optimisation",
                                               check=non_negative)
    momentum: float = setting(0.9, "SGD momentum", group="optimisation", check=in_range(0, 1))
    betas: tuple = setting((0.9, 0.999), "Adam's beta1 and beta2", group="optimisation", metavar=("B1", "B2"),
                           check=each(in_range(0, 1)))
    schedule: str | None = setting(None, "decay after warmup", group="optimisation", choices=SCHEDULES,
                                    noun="schedule")
    warmup_steps: int | None = setting(None, "linear warmup steps", group="optimisation",
                                       default_help="--warmup-epochs of steps", check=non_negative)
    warmup_epochs: float | None = setting(None, "linear warmup in epochs, used when --warmup-steps is not given",
                                          group="optimisation", check=non_negative)
    min_lr: float = setting(0.0, "learning rate at the end of the decay", group="optimisation",
                                check=non_negative)
    clip_grad: float | None = setting(None, "clip the global gradient norm (0: off)", group="optimisation",
                                          check=non_negative)
    ema: float = setting(0.0, "keep an exponential moving average of the weights with this decay, warmed up as "
                         "min(DECAY, (1+t)/(10+t)) at step t; every evaluation, the best checkpoint and what "
                         "--init/--eval-only load from a checkpoint use it (0: off)", group="optimisation",
                         metavar="DECAY", check=in_range(0, 1))
    label_smoothing: float | None = setting(None, "label smoothing", group="augmentation",
                                               check=in_range(0, 1))
    crop_padding: int | None = setting(None, "random crop with this padding (0: off)", group="augmentation",
                                          check=non_negative)
    flip: bool | None = setting(None, "random horizontal flips", group="augmentation")
    rand_ops: int | None = setting(None, "RandAugment ops per image (0: off)", group="augmentation",
                                   flag="--randaugment", metavar="N", check=non_negative)
    rand_magnitude: float = setting(9.0, "RandAugment magnitude, on the paper's 0..10 scale",
                                    group="augmentation", flag="--randaugment-magnitude",
                                    check=in_range(0, 10, high_included=True))
    eval_flip: bool = setting(False, "evaluate on the mean of the logits of each image and its mirror image "
                              "(test-time augmentation; not in mpp)", group="augmentation")
    mixup: float | None = setting(None, "mixup alpha (0: off)", group="augmentation", check=non_negative)
    cutmix: float | None = setting(None, "cutmix alpha (0: off)", group="augmentation", check=non_negative)
    mpp_target: str = setting("mean_color", "what masked patch prediction predicts (mean_color: the 3-bit mean "
                              "colour)", group="mode", choices=MPP_TARGETS)
    mpp_mask_ratio: float = setting(0.5, "fraction of each image's patches masked patch prediction corrupts",
                                    group="mode", check=in_range(0, 1, high_included=True, low_included=False))
    train_examples: int | None = setting(None, "use only the first N training examples", group="data",
                                         metavar="N", default_help="all", check=positive)
    eval_examples: int | None = setting(None, "evaluate on only the first N test examples", group="data",
                                        metavar="N", default_help="all", check=positive)
    val_split: int | None = setting(None, "hold out the last N training examples and evaluate on them instead "
                                    "of the test split (tune on these; report the test split once)", group="data",
                                    metavar="N", default_help="off: evaluate on the test split", check=positive)
    seed: int = setting(0, "seed of every random draw in the run", group="run", check=non_negative)
    device: str = setting("cpu", "cpu, gpu or gpu:N", group="run")
    precision: str = setting("fp32", "what the matrix products run in: fp32, or fp16 / bf16 over float32 master "
                             "weights (layer norm, softmax, the loss and the update stay float32; fp16 with dynamic "
                             "loss scaling; bf16 needs ml_dtypes). On the CPU fp16 works but is slow: NumPy has no "
                             "fast float16 product", group="run", choices=tuple(PRECISIONS))
    tf32: bool = setting(False, "on a GPU, let float32 products run in TF32 on tensor cores (10-bit mantissa "
                         "inputs, float32 sums); off by default as PyTorch's matmuls, so float32 runs give the "
                         "same numbers everywhere; no effect on the CPU", group="run")
    out: str | None = setting(None, "run directory", group="run", metavar="RUN_DIR",
                              default_help="runs/DATASET-MODE-TIME")
    log_every: int = setting(20, "steps between metric lines", group="run", check=positive)
    eval_every_epochs: int = setting(1, "epochs between evaluations (the last step is always evaluated)",
                                     group="run", check=positive)
    progress: bool = setting(True, "progress bars", group="run")

    def to_dict(self) -> dict:
        """The config as JSON-able values."""
        d = asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """The inverse of ``to_dict``; unknown keys are an error."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise TrainError(f"config.json has unknown keys {unknown}; was it written by another version of npvit?")
        d = dict(d)
        d["betas"] = tuple(d.get("betas", (0.9, 0.999)))
        d.setdefault("low_res_epochs", 0)  # written before the flag: a run without the stage
        return cls(**d)


# The model flags: each sets one ViTConfig field in ``TrainConfig.model_overrides``.
# (flag, ViTConfig field, type, choices, help)
MODEL_FLAGS = [
    ("--patch-size", "patch_size", int, None, "patch size P"),
    ("--embed-dim", "embed_dim", int, None, "token width D"),
    ("--depth", "depth", int, None, "number of encoder blocks"),
    ("--num-heads", "num_heads", int, None, "attention heads"),
    ("--mlp-ratio", "mlp_ratio", float, None, "MLP hidden width / D"),
    ("--pos-embed", "pos_embed", str, POS_EMBED_KINDS, "kind of position embedding (paper Appendix D.4)"),
    ("--pos-embed-at", "pos_embed_at", str, POS_EMBED_AT, "where position embeddings are added"),
    ("--pool", "global_pool", str, GLOBAL_POOLS, "[class] token, or global average pooling (avg: the model "
     "has no [class] token, only patches, as the paper's GAP)"),
    ("--dropout", "drop_rate", float, None, "dropout before the head (timm's drop_rate)"),
    ("--proj-dropout", "proj_drop_rate", float, None, "dropout after the MLP's layers and the attention projection "
     "(timm's proj_drop_rate; the paper's dropout with --pos-dropout)"),
    ("--pos-dropout", "pos_drop_rate", float, None, "dropout after every addition of position embeddings"),
    ("--attn-dropout", "attn_drop_rate", float, None, "attention-weights dropout rate"),
    ("--drop-path", "drop_path_rate", float, None, "stochastic depth rate of the last block"),
]


def flag_of(f) -> str:
    """The command-line flag of a TrainConfig field."""
    return f.metadata["flag"] or "--" + f.name.replace("_", "-")


def flag_named(name: str) -> str:
    """The flag of the TrainConfig field ``name``, or of a model flag (``model.<field>``)."""
    if name.startswith("model."):
        return next(flag for flag, field_name, *_ in MODEL_FLAGS if field_name == name[len("model."):])
    return flag_of(next(f for f in fields(TrainConfig) if f.name == name))


# What --resume accepts: how long to train (the schedule is recomputed for the new length),
# the lr (the remedy after a non-finite stop), and what does not touch the experiment.
CHANGE_ON_RESUME = ("max_steps", "epochs", "lr", "device", "progress", "log_every", "eval_every_epochs",
                    "eval_batch_size", "data_dir", "download")


def check(cfg: TrainConfig) -> None:
    """Apply every field's ``choices`` and ``check`` to the values that are set; TrainError on the first miss."""
    for f in fields(cfg):
        value, meta = getattr(cfg, f.name), f.metadata
        if value is None:
            continue
        if meta["choices"] is not None and value not in meta["choices"]:
            choices = ", ".join(meta["choices"])
            raise TrainError(f"unknown {meta['noun'] or flag_of(f)} {value!r}; choose one of {choices}")
        problem = meta["check"](value) if meta["check"] is not None else None
        if problem:
            raise TrainError(f"{flag_of(f)} {problem}, not {value}")


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill every ``None`` from the data set's and the mode's defaults; check every value."""
    check(cfg)
    if cfg.mode == "finetune" and not cfg.init:
        raise TrainError("fine-tuning needs a checkpoint to start from: pass --init CHECKPOINT")
    if cfg.eval_flip and cfg.mode == "mpp":
        raise TrainError("--eval-flip averages class logits; masked patch prediction has none")
    # the mode's recipe wins over the data set's where both speak (finetune epochs, mpp's no-mixup)
    defaults = {**DATASET_DEFAULTS[cfg.dataset], **MODE_DEFAULTS[cfg.mode]}
    if backend.parse_device(cfg.device)[0] == "cpu":
        defaults.update(CPU_RECIPES.get(cfg.mode, {}).get(cfg.dataset, {}))
    stage = defaults.pop("low_res", None)
    pool = cfg.model_overrides.get("global_pool", "token")
    if cfg.mode in ("supervised", "pretrain"):
        defaults["lr"] = defaults["lr"] * POOL_LR_SCALE.get(pool, 1.0)
    values = {k: v for k, v in defaults.items() if getattr(cfg, k) is None}
    if cfg.low_res_epochs is None:
        values.update(recipe_low_res(cfg, stage, defaults.get("model"), values.get("epochs", cfg.epochs)))
    overrides = dict(cfg.model_overrides)
    if pool == "avg" and cfg.mode != "finetune":
        overrides.setdefault("class_token", False)  # the paper's GAP model has only image-patch embeddings
    out = TrainConfig(**{**cfg.to_dict(), **values, **MODE_FIXED.get(cfg.mode, {}), "betas": tuple(cfg.betas),
                         "model_overrides": overrides})
    check(out)
    check_low_res(out)
    if out.mode != "finetune":  # a fine-tune's model is its checkpoint's, checked when it is read
        check_model(out)
    return out


def recipe_low_res(cfg: TrainConfig, stage, recipe_model, epochs) -> dict:
    """--low-res-epochs (and --low-res-size) for a run that did not pass --low-res-epochs: its recipe's
    low-resolution stage ``(share of the epochs, size)``, scaled to the run's --epochs, or none (0).

    The stage belongs to the recipe's model at the data set's size, so it is left out when the run
    changes either (--model, --patch-size, --image-size) or ends by --max-steps, which may fall inside
    it; --low-res-size S keeps the stage at S instead; --low-res-epochs 0 turns it off.
    """
    changed = (cfg.model not in (None, recipe_model) or "patch_size" in cfg.model_overrides
               or cfg.image_size is not None or cfg.max_steps is not None)
    if stage is None or changed or not epochs:
        return {"low_res_epochs": 0}
    share, size = stage
    k = int(share * epochs)
    if k < 1:
        return {"low_res_epochs": 0}
    return {"low_res_epochs": k, "low_res_size": cfg.low_res_size or size}


def check_low_res(cfg: TrainConfig) -> None:
    """--low-res-epochs and --low-res-size against each other, the run's length and its mode (TrainError);
    against the patch and image size when the model is built (``npvit.trainer.build_model``)."""
    if cfg.low_res_size is not None and not cfg.low_res_epochs:
        raise TrainError(f"--low-res-size {cfg.low_res_size} needs --low-res-epochs K, the epochs to train at it")
    if not cfg.low_res_epochs:
        return
    if cfg.low_res_size is None:
        raise TrainError(f"--low-res-epochs {cfg.low_res_epochs} needs --low-res-size S, the size to train at")
    if cfg.mode == "finetune":
        raise TrainError("--low-res-epochs starts a new model at low resolution; a fine-tune starts from --init's "
                         "model: fine-tune at --image-size directly")
    if cfg.low_res_epochs >= cfg.epochs:
        raise TrainError(f"--low-res-epochs {cfg.low_res_epochs} must be fewer than --epochs {cfg.epochs}, so "
                         "that the run ends at full size")


def check_model(cfg: TrainConfig) -> None:
    """The model flags and --image-size checked against the named model before anything is built (TrainError)."""
    size = {"img_size": cfg.image_size} if cfg.image_size else {}
    try:
        get_config(cfg.model, **size, **cfg.model_overrides)
    except (ValueError, TypeError) as e:
        raise TrainError(str(e)) from None

