"""The training loop behind ``train.py``: one trainer for every mode of the paper's pipeline.

Modes (``TrainConfig.mode``):

- ``supervised``: from scratch on labelled data (the default).
- ``pretrain``: supervised on an upstream data set with the paper's pre-training head
  (a tanh hidden layer before the classifier), Adam(W), warmup then linear decay.
- ``finetune``: from ``init`` (a checkpoint of any kind ``npvit.load_checkpoint`` reads);
  the head is replaced by a zero-initialised linear layer for the new classes and the
  position embeddings are resized to the new image size. The paper's recipe is the
  default: SGD with momentum 0.9, global-norm clipping at 1, warmup then cosine, no
  weight decay.
- ``mpp``: self-supervised masked patch prediction (Sec. 4.6 / Appendix B.1.2), see
  ``npvit/mpp.py``.

What a run keeps, in its run directory: ``config.json`` (the resolved config),
``metrics.jsonl`` (one JSON object per logged step and per evaluation),
``checkpoint-last.npz`` (every epoch, on Ctrl-C and at the end) and
``checkpoint-best.npz`` (best evaluation accuracy at full size). Each checkpoint holds the
parameters, the optimizer state, the step and, with ``--ema``, the weights' moving average,
which every evaluation scores. ``--low-res-epochs`` trains the first epochs at a lower
resolution, then goes on at full size as fine-tuning would (``Trainer.enter_full_size``).
The step says where the run is in the data (epoch, batch = divmod(step, batches per
epoch)), and every random draw of the run is a pure function of (seed, step) or (seed,
epoch, batch), so ``--resume`` continues exactly where the run stopped. Nothing good is lost: a checkpoint is written only from a finite
state, atomically; a signal ends the run at a step boundary, saved; a lock file keeps a
second process out of a run directory; and a resume cuts ``metrics.jsonl`` back to its
checkpoint's step. ``config.json`` also records the trained model's config, a warmup
scaled to a short run, and what each ``--resume`` changed (README.md, "Resuming").

Data parallel (``mpirun -np N python train.py ...``, see ``npvit/distributed.py``): each
process trains on its share of every global batch and the gradients are averaged, so a
run on N processes is the same experiment as on one, and either can resume the other.
Rank 0 alone writes the run directory and prints.
"""
from __future__ import annotations

import copy
import fcntl
import json
import math
import os
import shutil
import time
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from functools import partial

import numpy as np

import autograd
from autograd import backend, nn, ops, optim, precision

from . import checkpoint as ckpt
from . import distributed, interrupts, mpp, recipes
from . import pos_embed as pe
from .config import get_config, model_name
from .data import Augment, Loader, hflip, load_dataset, seed_generator
from .data.download import clean_partial
from .fileio import atomic_write
from .model import Attention, VisionTransformer
from .recipes import TrainConfig, TrainError

# The stream of the evaluation's random draws (only masked patch prediction's corruption draws from it).
EVAL_STREAM = "mpp-eval"

class NonFiniteLoss(Exception):
    """The loss (or the parameters, or the optimizer state) became NaN or infinite; the run stops.

    ``kept`` is the run's last good checkpoint, or None when none was written yet:
    a checkpoint is only ever written from a finite state.
    """

    kept: str | None = None


# --- the loss of each mode -------------------------------------------------------------
def classification_loss(model, inputs, targets, labels, generator, label_smoothing=0.0, flip=False):
    """Cross-entropy of the logits against ``targets``, and how many of ``labels`` the model
    predicts: ``(loss, correct, count)``. ``targets`` are labels, smoothed here by
    ``label_smoothing``, or distributions, which ``Augment`` has smoothed and mixed already.
    ``flip``: the logits are the mean of the image's and its mirror image's (test-time augmentation)."""
    logits = model(inputs)
    if flip:
        logits = (logits + model(hflip(inputs))) * 0.5
    correct = (logits.data.argmax(axis=-1) == labels).sum()
    smoothing = 0.0 if targets.dtype.kind == "f" else label_smoothing
    return ops.cross_entropy(logits, targets, smoothing), correct, labels.shape[0]


def mode_loss(cfg: TrainConfig, mean, std, training=False):
    """The loss of the run's mode, one function of ``(model, inputs, targets, labels, generator)``
    giving ``(loss, correct, count)``; ``mean`` and ``std`` are the data's normalisation.
    ``training``: the training step's, which smooths labels by the run's label smoothing (the
    targets a GPU's unmixed batch gets from ``Augment``); the evaluation's never smooths, and
    averages over mirror images with ``--eval-flip``."""
    if cfg.mode == "mpp":
        return partial(mpp.loss, mean=mean, std=std, mask_ratio=cfg.mpp_mask_ratio)
    if training:
        return partial(classification_loss, label_smoothing=cfg.label_smoothing)
    return partial(classification_loss, flip=cfg.eval_flip)


# --- building the pieces --------------------------------------------------------------
def load_data(cfg: TrainConfig):
    """The train and evaluation splits of the run's data set (DataError on any data problem)."""
    options = {}
    if cfg.dataset == "synthetic":
        options["image_size"] = cfg.image_size or 32
    elif cfg.dataset == "imagefolder" and cfg.image_size:  # decoded at the run's size, whatever each file's
        options["image_size"] = cfg.image_size
    train = load_dataset(cfg.dataset, "train", data_dir=cfg.data_dir, download=cfg.download,
                         progress=cfg.progress, **options)
    if cfg.val_split is not None:
        test = held_out(train, cfg.val_split)
    else:
        test = load_dataset(cfg.dataset, "test", data_dir=cfg.data_dir, download=cfg.download,
                            progress=cfg.progress, **options)
    # subsets, for quick experiments and overfitting checks
    if cfg.train_examples is not None:
        train.x, train.y = train.x[: cfg.train_examples], train.y[: cfg.train_examples]
    if cfg.eval_examples is not None:
        test.x, test.y = test.x[: cfg.eval_examples], test.y[: cfg.eval_examples]
    return train, test


def held_out(train, n: int):
    """Split the last ``n`` examples off ``train`` (in place) and return them as a split named "val".

    The held-out images keep the training split's normalisation (``mean``/``std`` are the full
    training split's), so the model sees them exactly as it would see test images; the test
    split itself is not read, so tuning cannot leak into the figure reported at the end.
    """
    if n >= len(train.y):
        raise TrainError(f"--val-split {n} leaves no training examples (the training split has {len(train.y)}); "
                         "hold out fewer")
    val = copy.copy(train)
    val.split, val.x, val.y = "val", train.x[-n:], train.y[-n:]
    train.x, train.y = train.x[:-n], train.y[:-n]
    return val


def full_image_size(cfg: TrainConfig, train_set) -> int:
    """The image size the run trains at (after its low-resolution stage, if any) and ends at."""
    return cfg.image_size or train_set.image_size[0]


def build_model(cfg: TrainConfig, train_set) -> tuple[VisionTransformer, dict]:
    """The model for the run, at ``--low-res-size`` when the run starts with a low-resolution stage; for
    fine-tuning, the loaded checkpoint with a new head and grid."""
    image_size = full_image_size(cfg, train_set)
    num_classes = train_set.num_classes
    overrides = dict(cfg.model_overrides)
    if cfg.mode == "finetune":
        # a timm file's keys may not tell its pooling; --pool says it then
        model = _load(cfg.init, img_size=image_size, **{k: overrides[k] for k in ("global_pool",) if k in overrides})
        if model.cfg.in_chans != train_set.channels:
            raise TrainError(f"{cfg.init} takes {model.cfg.in_chans}-channel images but {cfg.dataset} has "
                             f"{train_set.channels}")
        model.reset_classifier(num_classes)  # always a fresh zero head and no pre-training head, as the paper
        return model, {"init": cfg.init}
    try:
        config = get_config(cfg.model, img_size=image_size, in_chans=train_set.channels, num_classes=num_classes,
                            **overrides)
    except ValueError as e:
        raise TrainError(str(e)) from None
    if cfg.mode == "pretrain" and config.representation_size is None:
        config = config.replace(representation_size=config.embed_dim)
    if cfg.mode == "mpp":
        config = config.replace(mask_token=True, mpp_target=cfg.mpp_target)
    if cfg.low_res_epochs:
        size, patch = cfg.low_res_size, config.effective_patch_size
        if size % patch:
            raise TrainError(f"--low-res-size {size} is not a multiple of the patch size {patch}")
        if size >= image_size:
            raise TrainError(f"--low-res-size {size} must be smaller than the image size {image_size}")
        config = config.replace(img_size=size)
    autograd.manual_seed(cfg.seed, 0x1417)  # parameter initialisation
    return VisionTransformer(config), {}


def build_optimizer(cfg: TrainConfig, model) -> optim.Optimizer:
    """The optimizer, with no weight decay on biases, norms, position embeddings and tokens."""
    groups = optim.param_groups_weight_decay(model.named_parameters(), cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    if cfg.optimizer == "adam":
        return optim.Adam(groups, lr=cfg.lr, betas=cfg.betas)
    return optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas)


def warmup_steps(cfg: TrainConfig, total_steps: int, steps_per_epoch: int) -> tuple[int, str | None]:
    """The run's warmup in steps, and why it differs from the asked one (None when it does not).

    A run shorter than its warmup (``--max-steps 100`` against 400 warmup steps) would end
    at the peak lr, never decaying: its warmup is scaled to the run instead, keeping the
    share of the full schedule it was meant to take (a tenth of the run when the warmup
    was as long as the whole schedule).
    """
    asked = cfg.warmup_steps if cfg.warmup_steps is not None else int(round(cfg.warmup_epochs * steps_per_epoch))
    if asked < total_steps:
        return asked, None
    planned = cfg.epochs * steps_per_epoch
    share = asked / planned if asked < planned else 0.1
    used = min(int(round(share * total_steps)), max(total_steps - 1, 0))
    return used, (f"the warmup of {asked} steps is not shorter than the run's {total_steps}; scaled to {used} steps "
                  f"({share:.1%} of the run)")


def build_schedule(cfg: TrainConfig, total_steps: int, steps_per_epoch: int):
    """The learning rate as a function of the step: linear warmup (``warmup_steps``), then the decay."""
    warmup, _ = warmup_steps(cfg, total_steps, steps_per_epoch)
    if cfg.schedule == "cosine":
        return optim.warmup_cosine(cfg.lr, total_steps, warmup_steps=warmup, final_lr=cfg.min_lr)
    if cfg.schedule == "linear":
        return optim.warmup_linear(cfg.lr, total_steps, warmup_steps=warmup, final_lr=cfg.min_lr)
    return optim.constant(cfg.lr, warmup_steps=warmup)


# --- the run --------------------------------------------------------------------------
class Trainer:
    """Owns one run (or this process's part of it): the model, the data, the optimizer and the run directory."""

    def __init__(self, cfg: TrainConfig, resume_from: ckpt.Checkpoint | None = None, comm=None):
        """A new run, or with ``resume_from`` (the run's last checkpoint) the same run continued."""
        # the run's wall clock (start-up, data loading and evaluations included), summed over its sessions
        self.clock_started = time.time()
        self.clock_before = 0.0 if resume_from is None else float(resume_from.extra.get("elapsed_s", 0.0))
        comm = distributed.Communicator() if comm is None else comm
        if not comm.is_main:
            cfg = replace(cfg, progress=False)  # rank 0 alone shows progress bars
        self.cfg = cfg
        self.device = comm.pick_device(cfg.device)
        self.xp = backend.xp_for(self.device)
        try:
            self.low = precision.compute_dtype(cfg.precision)  # what the products run in, None: float32
        except precision.PrecisionError as e:
            raise TrainError(str(e)) from None
        if backend.parse_device(self.device)[0] == "gpu":  # process-wide in CuPy: set either way, so the flag holds
            precision.set_tf32(self.xp, cfg.tf32)
        self.comm = comm.for_device(self.device)
        with self.comm.node_leader_first():  # one download per machine
            train, test = load_data(cfg)
        self.train_set, self.test_set = train, test
        if resume_from is not None:
            self.model = _load(resume_from, ema=False)  # the trained weights; their average is loaded below
            self.extra = {k: v for k, v in resume_from.extra.items() if k == "init"}
        else:
            self.model, self.extra = build_model(cfg, train)
        self.model.to(self.device)
        self.full_size = full_image_size(cfg, train)
        self.image_size = self.model.cfg.image_hw[0]  # --low-res-size in the low-resolution stage
        data_size = train.image_size[0]
        if self.model.cfg.in_chans != train.channels:
            raise TrainError(f"the model takes {self.model.cfg.in_chans}-channel images but the data has "
                             f"{train.channels}")
        resize_to = None if self.image_size == data_size else self.image_size
        self.augment = Augment(
            train.mean, train.std, train.num_classes, image_size=resize_to, crop_padding=cfg.crop_padding,
            flip=cfg.flip, rand_ops=cfg.rand_ops, rand_magnitude=cfg.rand_magnitude,
            label_smoothing=cfg.label_smoothing, mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix,
        )
        self.loss = mode_loss(cfg, train.mean, train.std)
        self.train_loss = mode_loss(cfg, train.mean, train.std, training=True)
        to_dev = lambda a: backend.to_device(a, self.device)  # noqa: E731
        if len(train) < cfg.batch_size:
            raise TrainError(f"the training set has {len(train)} examples, fewer than one batch of {cfg.batch_size}; "
                             "lower --batch-size")
        rank, world = self.comm.rank, self.comm.world_size
        if cfg.batch_size % world:
            raise TrainError(f"--batch-size {cfg.batch_size} does not split evenly over {world} processes")
        # The loader serves the job's global batches; this process loads its rows of each by
        # position and draws for the whole batch (RowGenerator), keeping its rows' draws.
        self.loader = Loader(to_dev(train.x), to_dev(train.y), cfg.batch_size, seed=cfg.seed)
        self.rows = distributed.shard(cfg.batch_size, rank, world)
        self.positions = distributed.shard_positions(cfg.batch_size, rank, world,
                                                     mirror=bool(self.augment.mixup_alpha or self.augment.cutmix_alpha))
        self.dropouts = [m for m in self.model.modules()
                         if (isinstance(m, (nn.Dropout, nn.DropPath)) and m.p > 0)
                         or (isinstance(m, Attention) and m.attn_drop > 0)]
        self.test_x, self.test_y = to_dev(test.x), to_dev(test.y)
        self.steps_per_epoch = len(self.loader)
        total = cfg.epochs * self.steps_per_epoch
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps is not None else total
        if resume_from is not None and self.total_steps < resume_from.step:
            raise TrainError(f"the run is already at step {resume_from.step}, past the {self.total_steps} steps "
                             "--max-steps/--epochs now ask for")
        self.low_res_steps = cfg.low_res_epochs * self.steps_per_epoch  # steps 0 .. low_res_steps - 1 at low_res_size
        if self.low_res_steps and self.total_steps <= self.low_res_steps:
            raise TrainError(f"the run ends at step {self.total_steps} (--max-steps), inside its --low-res-epochs "
                             f"stage of {self.low_res_steps} steps; it must end at full size")
        self.optimizer = build_optimizer(cfg, self.model)
        self.schedule = build_schedule(cfg, self.total_steps, self.steps_per_epoch)
        self.warmup_note = warmup_steps(cfg, self.total_steps, self.steps_per_epoch)[1]
        self.lock = None  # the run directory's lock (``start`` and ``resume`` take it, ``fit`` lets it go)
        self.step = 0
        self.best_acc = -1.0
        self.run_dir = cfg.out if self.comm.is_main else None  # rank 0 alone writes the run directory
        # float16's loss scale (autograd/precision.py); bfloat16 has float32's range and needs none
        self.scaler = precision.GradScaler(self.xp) if cfg.precision == "fp16" else None
        if resume_from is not None:
            self.optimizer.load_state_dict(resume_from.optimizer_state)
            self.step = resume_from.step
            self.best_acc = resume_from.extra["best_acc"]
            if self.scaler is not None and "grad_scaler" in resume_from.extra:
                self.scaler.load_state_dict(self.xp, resume_from.extra["grad_scaler"])
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.comm.broadcast_parameters(self.params)
        names = {id(p): name for name, p in self.model.named_parameters()}
        self.param_names = [names[id(p)] for g in self.optimizer.param_groups for p in g["params"]]
        # Every process holds the same weights after every step (npvit/distributed.py), so each
        # updates its own average identically, with no communication.
        self.ema = optim.ExponentialMovingAverage(self.optimizer, cfg.ema) if cfg.ema else None
        if self.ema is not None and resume_from is not None:
            self._resume_ema(resume_from)
        self.finite = None  # were all steps since the last check finite: a 0-d bool array on the device
        self.unchecked = []  # (step, loss, grad norm, finite) of those steps, to name the first bad one

    def _resume_ema(self, ck: ckpt.Checkpoint) -> None:
        """Restore the moving average of the weights from the run's checkpoint (one update per step so far)."""
        if not ck.ema:
            raise TrainError(f"{ck.path} holds no moving average of the weights, which this run (--ema "
                             f"{self.cfg.ema}) keeps; it was not written by this run")
        try:
            self.ema.load([ck.ema[name] for name in self.param_names], updates=ck.step)
        except (KeyError, ValueError) as e:
            raise TrainError(f"cannot resume the moving average of the weights from {ck.path}: "
                             f"{_one_line(e)}") from None

    # --- the low-resolution stage -------------------------------------------------------
    def stage_size(self, step: int) -> int:
        """The image size step ``step`` trains at: ``--low-res-size`` for the first ``--low-res-epochs``."""
        return self.cfg.low_res_size if step < self.low_res_steps else self.full_size

    def enter_full_size(self) -> None:
        """End the low-resolution stage: the model, its optimizer state and its average move to the full size.

        The paper's fine-tuning at a higher resolution (Sec. 3.2) inside one run: the patch
        size stays, so the sequence grows and only the position tables change shape. They
        are interpolated as fine-tuning our checkpoints does (``checkpoint.RESIZE_DEFAULTS``),
        relative tables and their gather index included, and so is their moving average.
        """
        model, opt = self.model, self.optimizer
        old = model.cfg
        averages = self.ema.arrays() if self.ema is not None else None  # views in the layout before the switch
        mode, antialias = ckpt.RESIZE_DEFAULTS["npvit"]
        model.set_img_size(self.full_size, mode, antialias)
        grids = (old.grid_size, model.cfg.grid_size, old.num_prefix_tokens)
        for i, name in enumerate(self.param_names):
            kind = name.rsplit(".", 1)[-1]
            if kind not in pe.ALL_PARAM_NAMES:
                continue
            # The optimizer's moments (and SGD's momentum) are each position's gradient statistics:
            # interpolated, a new position starts with its neighbours', where zeros would give its
            # first Adam steps ~3x the size (m^ = 0.1 g against sqrt(v^) = 0.03 |g| once bias
            # correction is spent) and split the group's step counters, and with them its single
            # fused update. Bilinear, not the weights' bicubic: a convex mix keeps the second
            # moment >= 0, where bicubic's negative lobes could make its square root NaN.
            state = opt.state.get(i, {})
            for key in opt.array_state:
                if key in state:
                    state[key] = pe.resize(kind, state[key], *grids, "bilinear")
            if averages is not None:
                averages[i] = pe.resize(kind, averages[i], *grids, mode, antialias)
        if averages is not None:
            self.ema.load(averages, self.ema.updates)
        self.image_size = self.full_size
        self.augment = replace(self.augment, image_size=None if self.full_size == self.train_set.image_size[0]
                               else self.full_size)

    # --- one step -------------------------------------------------------------------
    def loss_and_metrics(self, x, y, gen):
        """Forward the augmented batch; return the loss Tensor and (correct, count) arrays on the device.

        Rows of ``x`` past this process's share are the examples its own are mixed with
        (``distributed.shard_positions``): augmented and mixed in, then dropped.
        """
        inputs, targets = self.augment(x, y, gen)
        n = self.rows.stop - self.rows.start
        return self.train_loss(self.model, inputs[:n], targets[:n], y[:n], gen)

    def train_step(self, batch) -> tuple:
        """One optimizer step on this process's rows of a global batch.

        Returns the loss, correct and count of the whole global batch, the grad norm and the lr.
        """
        cfg = self.cfg
        if self.image_size != self.stage_size(self.step):  # the first full-size step, in this session or a resumed one
            self.enter_full_size()
        # Dropout, drop-path and attention-dropout masks are drawn for the global batch and
        # sliced; anything else random draws from the global generator, seeded per step.
        masks = distributed.RowGenerator(backend.LazyGenerator(cfg.seed, 0xD1, self.step, device=self.device),
                                         self.rows, cfg.batch_size)
        for m in self.dropouts:
            m.generator = masks
        autograd.manual_seed(cfg.seed, 0xD0, self.step)
        self.model.train()
        lr = self.schedule(self.step)
        optim.set_lr(self.optimizer, lr)
        gen = distributed.RowGenerator(batch.rng, self.positions, cfg.batch_size)
        with precision.autocast(self.low):
            loss, correct, count = self.loss_and_metrics(batch.x, batch.y, gen)
        self.optimizer.zero_grad()
        loss.backward(None if self.scaler is None else self.scaler.scale)  # d(S loss): S = 1 but for float16
        flat = self.optimizer.flat
        flat.gather_grads()
        # one all-reduce for the gradients and one for the step's numbers: every process sees the global loss
        loss_sum, correct, count = self.comm.average_gradients(flat, (loss.data, correct, count))
        loss_value = loss_sum / self.comm.world_size
        # float16 gradients that overflowed are expected: they skip the step and halve the scale; the run goes on
        with np.errstate(over="ignore", invalid="ignore") if self.scaler is not None else nullcontext():
            if self.scaler is not None:
                self.scaler.unscale(flat.grads)
            grad_norm = flat.clip_grad_norm(cfg.clip_grad) if cfg.clip_grad else None
            if self.scaler is not None:
                grads_ok = self.xp.isfinite(flat.grad_norm() if grad_norm is None else grad_norm)
        finite = self.xp.isfinite(loss_value)
        if self.scaler is None and grad_norm is not None:
            finite &= self.xp.isfinite(grad_norm)
        # Sticky: once a step is bad every later update is masked too, so when the flag is
        # read (check_finite) the parameters are those after the last good step.
        self.finite = finite if self.finite is None else self.finite & finite
        self.unchecked.append((self.step, loss_value, grad_norm, finite))
        if self.scaler is None:
            self.optimizer.step(ok=self.finite)
        else:
            self.optimizer.step(ok=self.finite & grads_ok)
            self.scaler.update(grads_ok)
        if self.ema is not None:
            self.ema.update()
        self.step += 1
        if not backend.is_gpu_array(self.finite):
            self.check_finite()  # a NumPy flag is read for free: the CPU stops at the bad step itself
        return loss_value, correct, count, grad_norm, lr

    def check_finite(self) -> None:
        """Raise NonFiniteLoss naming the first bad step since the last check (on a GPU, a sync).

        Called at every logging boundary and before every checkpoint, so a run stops at
        the first of them after a bad step, with nothing of that step or after it saved.
        """
        if self.finite is not None and not bool(self.finite):
            for step, loss, grad_norm, finite in self.unchecked:
                if not bool(finite):
                    loss = float(loss)
                    what = f"the loss became {loss}" if not math.isfinite(loss) else \
                        f"the gradient norm became {float(grad_norm)}"
                    raise NonFiniteLoss(f"{what} at step {step}")
        self.unchecked.clear()

    # --- evaluation -----------------------------------------------------------------
    def elapsed(self) -> float:
        """Seconds of wall time this run has taken so far, over all its sessions (``metrics.jsonl``'s
        ``elapsed_s``; ``python -m npvit.curves`` draws accuracy against it)."""
        return self.clock_before + time.time() - self.clock_started

    def evaluate(self) -> dict:
        """Loss and accuracy (for the pixel target of mpp: the loss) on the test split, at the run's precision,
        of the moving average of the weights when the run keeps one, at the image size of the current stage."""
        with precision.autocast(self.low), self.ema.applied() if self.ema is not None else nullcontext():
            return evaluate_model(self.model, self.test_x, self.test_y, self.augment, self.cfg.eval_batch_size,
                                  loss=self.loss, seed=self.cfg.seed, comm=self.comm, progress=self.cfg.progress)

    # --- the run directory --------------------------------------------------------------
    def log(self, record: dict) -> None:
        """Append one JSON line to metrics.jsonl."""
        if self.run_dir is None:
            return
        path = os.path.join(self.run_dir, "metrics.jsonl")
        with _writing(path, self.run_dir), open(path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def save(self, name: str) -> str:
        """Write a checkpoint of the whole run state atomically into the run directory.

        A bad step seen on the device flag raises NonFiniteLoss before anything is written;
        a state holding NaN or infinity raises it too and writes nothing; a disk that is
        full or read-only raises TrainError; either way the file on disk is kept.
        """
        self.check_finite()
        path = os.path.join(self.run_dir, name)
        try:
            with _writing(path, self.run_dir):
                ckpt.save_checkpoint(
                    path, self.model, step=self.step, optimizer_state=self.optimizer.state_dict(),
                    extra={"best_acc": self.best_acc, "elapsed_s": self.elapsed(), **self.extra,
                           **({} if self.scaler is None else {"grad_scaler": self.scaler.state_dict()})},
                    ema=None if self.ema is None else dict(zip(self.param_names, self.ema.arrays())),
                )
        except ckpt.NonFiniteState as e:
            raise NonFiniteLoss(f"the model or optimizer state is not finite at step {self.step} ({e})") from None
        return path

    def last_good(self) -> str | None:
        """The run's checkpoint-last.npz when there is one (it was written from a finite state), else None."""
        if self.run_dir is None:
            return None
        path = os.path.join(self.run_dir, "checkpoint-last.npz")
        return path if os.path.exists(path) else None

    # --- the loop -------------------------------------------------------------------
    def fit(self) -> dict:
        """Train until ``total_steps``; evaluate and checkpoint every epoch; return the summary."""
        from tqdm import tqdm

        cfg = self.cfg
        started = time.time()
        first_step = self.step
        last_eval = None
        try:
            while self.step < self.total_steps:
                epoch, index = divmod(self.step, self.steps_per_epoch)
                steps_left = min(self.steps_per_epoch - index, self.total_steps - self.step)
                bar = tqdm(total=steps_left, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not cfg.progress,
                           leave=False, dynamic_ncols=True)
                # running sums stay on the device; they are read (a sync on a GPU) only when logged
                run_loss, run_steps, run_correct, run_count, tick, tick_images = 0.0, 0, 0, 0, time.time(), 0
                for _ in range(steps_left):
                    batch = self.loader.batch(*divmod(self.step, self.steps_per_epoch), self.positions)
                    with interrupts.step_boundary():  # a signal ends the run between steps, never inside one
                        loss, correct, count, grad_norm, lr = self.train_step(batch)
                    run_loss = run_loss + loss
                    run_steps += 1
                    run_correct = run_correct + correct
                    run_count += count
                    tick_images += cfg.batch_size
                    bar.update(1)
                    if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                        self.check_finite()
                        elapsed = time.time() - tick
                        record = {"step": self.step, "epoch": epoch, "lr": lr, "loss": float(run_loss) / run_steps,
                                  "images_per_s": tick_images / max(elapsed, 1e-9), "elapsed_s": self.elapsed()}
                        if run_count:  # the pixel-regression target has nothing to count as right
                            record["acc"] = float(run_correct) / float(run_count)
                        if grad_norm is not None:
                            record["grad_norm"] = float(grad_norm)
                        # the whole run's time left, at this session's pace so far (evaluations included)
                        per_step = (time.time() - started) / (self.step - first_step)
                        bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record.get('acc', 0):.3f}",
                                        lr=f"{lr:.2e}", img_s=f"{record['images_per_s']:.0f}",
                                        run_eta=_duration(per_step * (self.total_steps - self.step)))
                        self.log(record)
                        run_loss, run_steps, run_correct, run_count, tick, tick_images = 0.0, 0, 0, 0, time.time(), 0
                bar.close()
                epoch_done = self.step % self.steps_per_epoch == 0
                if (epoch_done and (epoch + 1) % cfg.eval_every_epochs == 0) or self.step >= self.total_steps:
                    last_eval = self.evaluate()
                    last_eval.update(step=self.step, epoch=epoch, eval=True, split=self.test_set.split,
                                     elapsed_s=self.elapsed())
                    notes = []
                    if self.ema is not None:
                        last_eval["weights"] = "ema"
                        notes.append("the weights' moving average")
                    if self.low_res_steps:
                        last_eval["image_size"] = self.image_size
                    low_res = self.image_size != self.full_size
                    if low_res:
                        notes.append(f"at the low-resolution stage's {self.image_size}x{self.image_size}")
                    self.log(last_eval)
                    # checkpoint-best is a full-size model: a low-resolution score is of another task
                    improved = not low_res and last_eval["acc"] > self.best_acc
                    if improved:
                        self.best_acc = last_eval["acc"]
                    if self.comm.is_main:
                        split = self.test_set.split
                        # the pixel target counts nothing right: its "acc" is minus the loss, not shown as one
                        acc = f", {split} acc {last_eval['acc']:.4f}" if last_eval["acc"] >= 0 else ""
                        print(f"epoch {epoch + 1}: step {self.step}, {split} loss {last_eval['loss']:.4f}{acc}"
                              + (" (best)" if improved else "") +
                              (f" [{'; '.join(notes)}]" if notes else ""), flush=True)
                    if self.run_dir is not None:
                        self.save("checkpoint-last.npz")
                        if improved:
                            self.save("checkpoint-best.npz")
                elif self.run_dir is not None:
                    self.save("checkpoint-last.npz")
        except NonFiniteLoss as e:
            e.kept = self.last_good()
            raise
        except KeyboardInterrupt:
            if self.run_dir is not None:
                self._save_on_interrupt()
            raise
        finally:
            _unlock(self.lock)
            self.lock = None
        summary = {"steps": self.step, "best_acc": self.best_acc, "split": self.test_set.split, "time_s": time.time() - started,
                   "final": last_eval, "run_dir": self.cfg.out, "processes": self.comm.world_size}
        if self.run_dir is not None:
            _write_json(os.path.join(self.run_dir, "summary.json"), summary)
        return summary

    def _save_on_interrupt(self) -> None:
        """Save the run after Ctrl-C or SIGTERM and say how to continue; say why when it cannot be saved."""
        where = f"at step {self.step}"
        try:
            path = self.save("checkpoint-last.npz")
            print(f"interrupted {where}; saved {path}; continue with --resume {self.run_dir}", flush=True)
        except (NonFiniteLoss, TrainError) as e:
            kept = self.last_good()
            print(f"interrupted {where}; not saved: {e}; " +
                  (f"{kept} is kept" if kept else "no checkpoint was written"), flush=True)


# --- entry points used by the command line ------------------------------------------------
def start(cfg: TrainConfig, comm=None) -> Trainer:
    """A new run: make and lock the run directory, build everything, write config.json (``comm``: see Trainer).

    A start that fails removes the run directory it made, so no empty run is left behind.
    """
    comm = distributed.Communicator() if comm is None else comm
    if os.path.exists(os.path.join(cfg.out, "checkpoint-last.npz")):
        raise TrainError(f"{cfg.out} already holds a run; continue it with --resume {cfg.out} or pick another --out")
    created, lock = False, None
    if comm.is_main:
        created = not os.path.isdir(cfg.out)
        try:
            os.makedirs(cfg.out, exist_ok=True)
        except OSError as e:
            raise TrainError(f"cannot create the run directory {cfg.out}: {e.strerror}") from None
    try:
        if comm.is_main:
            lock = _lock(cfg.out)
        if cfg.mode == "finetune":  # the model is the checkpoint's, not the data set's default
            cfg = replace(cfg, model=None)
        trainer = Trainer(cfg, comm=comm)
        if comm.is_main:
            if cfg.mode == "finetune":
                trainer.cfg.model = model_name(trainer.model.cfg)
            _write_config(trainer, {})
    except BaseException:
        _unlock(lock)
        if created:
            shutil.rmtree(cfg.out, ignore_errors=True)
        raise
    trainer.lock = lock
    return trainer


def resume(run_dir: str, changes: dict | None = None, comm=None) -> Trainer:
    """Continue the run in ``run_dir`` from its last checkpoint, exactly (same batches, same draws), on any number
    of processes.

    ``changes``: settings given again on the command line. Those in
    ``recipes.CHANGE_ON_RESUME`` apply (``--max-steps``, ``--epochs``, ``--lr`` and the
    ones that do not touch the experiment); any other is a TrainError naming it. What
    they change is recorded in config.json under "resumed".
    """
    comm = distributed.Communicator() if comm is None else comm
    changes = dict(changes or {})
    check_resume_changes(run_dir, changes)
    cfg, record = read_run_config(run_dir)
    last = os.path.join(run_dir, "checkpoint-last.npz")
    if not os.path.exists(last):
        raise TrainError(f"{run_dir} holds no checkpoint-last.npz to resume from; it stopped before its first "
                         "checkpoint, so start it again")
    old = cfg.to_dict()
    cfg = replace(cfg, out=run_dir, **changes)
    recipes.check(cfg)
    lock = _lock(run_dir) if comm.is_main else None
    try:
        ck = ckpt.read_checkpoint(last)
    except (OSError, ValueError) as e:  # read_checkpoint says what is wrong with a damaged file
        _unlock(lock)
        raise TrainError(f"cannot resume from {last}: {_one_line(e)}") from None
    try:
        trainer = Trainer(cfg, resume_from=ck, comm=comm)
        if comm.is_main:
            clean_partial(run_dir, older_than=0)  # the lock is ours: what a killed run left is dead
            _truncate_metrics(run_dir, ck.step)
            changed = {k: [old[k], v] for k, v in changes.items() if old[k] != v and k not in ("device", "progress")}
            if changed:
                record["resumed"] = [*record.get("resumed", []), {"step": ck.step, "changed": changed}]
            _write_config(trainer, record, persist=old, session=("device", "progress"))
    except BaseException:
        _unlock(lock)
        raise
    trainer.lock = lock
    return trainer


def check_resume_changes(run_dir: str, changes: dict) -> None:
    """TrainError naming the flags given with --resume that are not in ``recipes.CHANGE_ON_RESUME``."""
    refused = sorted(set(changes) - set(recipes.CHANGE_ON_RESUME))
    if refused:
        flags = ", ".join(recipes.flag_named(name) for name in refused)
        raise TrainError(f"--resume continues the experiment in {run_dir} as it was set up; {flags} would change it "
                         f"(only {', '.join(map(recipes.flag_named, recipes.CHANGE_ON_RESUME))} may be given); "
                         "start a new run with --init instead")


def read_run_config(run_dir: str) -> tuple[TrainConfig, dict]:
    """The TrainConfig of a run directory's config.json and what else it records; TrainError naming the file
    when it is missing, empty, truncated or not a config."""
    path = os.path.join(run_dir, "config.json")
    if not os.path.isfile(path):
        raise TrainError(f"{run_dir} holds no run to resume (no config.json); is it a run directory?")
    try:
        with open(path) as f:
            d = json.load(f)
        if not isinstance(d, dict):
            raise ValueError("not a JSON object")
        record = {k: d.pop(k) for k in RECORD_KEYS if k in d}
        return TrainConfig.from_dict(d), record
    except (OSError, ValueError, TypeError) as e:
        raise TrainError(f"cannot read {path} ({_one_line(e) or 'empty'}); it is damaged: restore it or start the run "
                         "again") from None


# What config.json records beside the TrainConfig: the trained model's config, the warmup
# actually used when it differs from the asked one, what each --resume changed, and where the
# recipe is not the paper's (and why: ``recipes.PAPER_RECIPES``).
RECORD_KEYS = ("model_config", "warmup", "resumed", "differs_from_paper")


def _write_config(trainer: Trainer, record: dict, persist: dict | None = None, session=()) -> None:
    """Write config.json: the run's TrainConfig (``session`` fields kept at their ``persist`` values) and
    ``record`` with the model's config, the warmup note and the recipe's differences from the paper."""
    d = trainer.cfg.to_dict()
    for name in session:
        d[name] = persist[name]
    model_config = trainer.model.cfg
    if trainer.low_res_steps:  # the model the run ends with, not the low-resolution stage's
        model_config = model_config.replace(img_size=trainer.full_size)
    record = {**record, "model_config": model_config.to_dict(),
              "differs_from_paper": recipes.paper_differences(trainer.cfg)}
    if trainer.warmup_note:
        record["warmup"] = trainer.warmup_note
    _write_json(os.path.join(trainer.cfg.out, "config.json"), {**d, **record})


def _truncate_metrics(run_dir: str, step: int) -> None:
    """Drop the lines of metrics.jsonl past ``step`` (the run repeats them) and any line a kill cut short."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.exists(path):
        return
    kept = []
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("step", 0) <= step:
                kept.append(line if line.endswith("\n") else line + "\n")
    with _writing(path, run_dir), atomic_write(path, "w") as f:
        f.writelines(kept)


def _lock(run_dir: str) -> int:
    """Hold ``run_dir/.lock`` for this process (released when it ends, even by ``kill -9``); TrainError when
    another process holds it."""
    path = os.path.join(run_dir, ".lock")
    with _writing(path, run_dir):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise TrainError(f"another process is training in {run_dir} (it holds {path}); wait for it to end or stop "
                         "it first") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _unlock(fd: int | None) -> None:
    """Let go of a run directory's lock taken by ``_lock`` (None: none was taken)."""
    if fd is not None:
        os.close(fd)


def evaluate_checkpoint(cfg: TrainConfig, comm=None) -> dict:
    """Accuracy and loss of ``cfg.init`` on the test split of ``cfg.dataset`` (sharded over ``comm``'s processes);
    with ``--val-split N``, on the last N training images instead, the split a tuning run evaluated on."""
    comm = distributed.Communicator() if comm is None else comm
    if not cfg.init:
        raise TrainError("--eval-only needs the checkpoint to evaluate: pass --init CHECKPOINT")
    model = _load(cfg.init)
    split = "test" if cfg.val_split is None else "train"
    with comm.node_leader_first():
        test = load_dataset(cfg.dataset, split, data_dir=cfg.data_dir, download=cfg.download,
                            progress=cfg.progress and comm.is_main,
                            **({"image_size": model.cfg.image_hw[0]} if cfg.dataset in ("synthetic", "imagefolder")
                               else {}))
    if cfg.val_split is not None:
        test = held_out(test, cfg.val_split)
    if model.cfg.num_classes != test.num_classes:
        raise TrainError(f"{cfg.init} has {model.cfg.num_classes} classes but {cfg.dataset} has "
                         f"{test.num_classes}; fine-tune it on {cfg.dataset} first (--init without --eval-only)")
    if cfg.eval_examples is not None:
        test.x, test.y = test.x[: cfg.eval_examples], test.y[: cfg.eval_examples]
    device = comm.pick_device(cfg.device)
    model.to(device)
    size = model.cfg.image_hw[0]
    augment = Augment(test.mean, test.std, test.num_classes, image_size=None if size == test.image_size[0] else size)
    x, y = backend.to_device(test.x, device), backend.to_device(test.y, device)
    loss = partial(classification_loss, flip=cfg.eval_flip)
    result = evaluate_model(model, x, y, augment, cfg.eval_batch_size, loss=loss, comm=comm,
                            progress=cfg.progress and comm.is_main)
    return {"dataset": cfg.dataset, "split": test.split, "examples": int(len(y)), **result}


@autograd.no_grad()
def evaluate_model(model, x, y, augment, batch_size, loss=classification_loss, seed=0, comm=None,
                   progress=False) -> dict:
    """Mean ``loss`` (a mode's, see ``mode_loss``) and accuracy of ``model`` on uint8 images ``x`` (N, C, H, W)
    with labels ``y``.

    Each batch's random draws (masked patch prediction's corruption) come from ``seed``
    and the batch's index, so that evaluations compare. A loss that counts nothing right
    or wrong (the pixel target) reports minus the loss as ``acc``, so that "best" still
    means best. With ``comm`` each process scores its share of every batch and the sums
    are reduced, so every process gets the whole set's result. ``progress``: a bar over the batches.
    """
    from tqdm import tqdm

    comm = distributed.Communicator() if comm is None else comm
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    starts = range(0, len(y), batch_size)
    for k, lo in enumerate(tqdm(starts, desc="evaluating", unit="batch", disable=not progress, leave=False,
                                dynamic_ncols=True)):
        size = min(batch_size, len(y) - lo)
        rows = distributed.shard(size, comm.rank, comm.world_size)
        if rows.stop == rows.start:  # a short last batch may leave a process nothing
            continue
        inputs, labels = augment.prepare(x[lo + rows.start: lo + rows.stop]), y[lo + rows.start: lo + rows.stop]
        gen = distributed.RowGenerator(seed_generator(seed, EVAL_STREAM, k), rows, size)
        value, c, n = loss(model, inputs, labels, labels, gen)
        total_loss += float(value.data) * len(labels)
        correct += int(c)
        count += int(n)
    total_loss, correct, count = comm.sum([total_loss, correct, count])
    mean_loss = total_loss / len(y)
    return {"loss": mean_loss, "acc": correct / count if count else -mean_loss}


def _load(source, **options):
    """``npvit.load_checkpoint`` with every failure turned into a one-line TrainError."""
    try:
        return ckpt.load_checkpoint(source, **options)
    except FileNotFoundError:
        raise TrainError(f"checkpoint {source} does not exist") from None
    except (OSError, ValueError) as e:
        raise TrainError(f"cannot use checkpoint {getattr(source, 'path', source)}: {_one_line(e)}") from None


def _duration(seconds: float) -> str:
    """A duration as H:MM:SS."""
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def _one_line(error) -> str:
    """An exception's message folded onto one line."""
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())


def _write_json(path: str, obj) -> None:
    """Write JSON atomically (``atomic_write``); a full or read-only disk is a TrainError."""
    with _writing(path, os.path.dirname(path)), atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2)


@contextmanager
def _writing(path: str, run_dir: str):
    """Turn an OSError while writing ``path`` (disk full, read-only folder) into a one-line TrainError."""
    try:
        yield
    except OSError as e:
        then = (f"continue with --resume {run_dir}" if os.path.exists(os.path.join(run_dir, "checkpoint-last.npz"))
                else "run again")
        raise TrainError(f"cannot write {path} ({e.strerror or e}); free some space or make {run_dir} "
                         f"writable, then {then}; what was written before is intact") from None
