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
``checkpoint-best.npz`` (best evaluation accuracy). Each checkpoint holds the
parameters, the optimizer state and the step. The step says where the run is in the data
(epoch, batch = divmod(step, batches per epoch)), and every random draw of the run is a
pure function of (seed, step) or (seed, epoch, batch), so ``--resume`` continues exactly
where the run stopped.

Data parallel (``mpirun -np N python train.py ...``, see ``npvit/distributed.py``): each
process trains on its share of every global batch and the gradients are averaged, so a
run on N processes is the same experiment as on one, and either can resume the other.
Rank 0 alone writes the run directory and prints.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace

import autograd
from autograd import backend, nn, ops, optim

from . import checkpoint as ckpt
from . import distributed, mpp
from .config import get_config
from .data import Augment, Loader, load_dataset, seed_generator
from .model import Attention, VisionTransformer

MODES = ("supervised", "pretrain", "finetune", "mpp")


class TrainError(Exception):
    """A problem with the run's settings or inputs that the user can fix; one line, exit code 2."""


class NonFiniteLoss(Exception):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


@dataclass
class TrainConfig:
    """Everything that defines a run. ``None`` means: the default for this data set and mode."""

    dataset: str = "cifar10"
    mode: str = "supervised"
    data_dir: str | None = None
    download: bool = True
    model: str | None = None
    model_overrides: dict = field(default_factory=dict)
    init: str | None = None
    image_size: int | None = None
    epochs: int | None = None
    max_steps: int | None = None
    batch_size: int | None = None
    eval_batch_size: int = 500
    optimizer: str | None = None
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.9
    betas: tuple = (0.9, 0.999)
    schedule: str | None = None
    warmup_steps: int | None = None
    warmup_epochs: float | None = None
    min_lr: float = 0.0
    clip_grad: float | None = None
    label_smoothing: float | None = None
    crop_padding: int | None = None
    flip: bool | None = None
    rand_ops: int | None = None
    rand_magnitude: float = 9.0
    mixup: float | None = None
    cutmix: float | None = None
    mpp_target: str = "mean_color"
    mpp_mask_ratio: float = 0.5
    train_examples: int | None = None
    eval_examples: int | None = None
    seed: int = 0
    device: str = "cpu"
    out: str | None = None
    log_every: int = 20
    eval_every_epochs: int = 1
    progress: bool = True

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
        return cls(**d)


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
    # the paper's pre-training: Adam, high weight decay, warmup then linear decay
    "pretrain": dict(optimizer="adamw", lr=1e-3, weight_decay=0.1, schedule="linear", warmup_epochs=2,
                     clip_grad=1.0),
    # the paper's fine-tuning: SGD momentum 0.9, clip at global norm 1, no weight decay, cosine
    "finetune": dict(optimizer="sgd", lr=0.01, weight_decay=0.0, schedule="cosine", warmup_epochs=1, clip_grad=1.0,
                     epochs=10),
    # masked patch prediction: Adam, warmup then cosine (Appendix B.1.2)
    "mpp": dict(optimizer="adamw", lr=5e-4, weight_decay=0.05, schedule="cosine", warmup_epochs=2, clip_grad=1.0,
                label_smoothing=0.0, mixup=0.0, cutmix=0.0),
}
# Training from scratch on the CPU: a recipe that ends within an hour on 2 cores, in place of the
# data set's GPU-sized one (REPRODUCTION.md has the run). Short schedules do better without RandAugment.
CPU_RECIPES = {
    "cifar10": dict(model="vit_cifar_mini", epochs=12, rand_ops=0, warmup_steps=400),
}


def resolve(cfg: TrainConfig) -> TrainConfig:
    """Fill every ``None`` from the data set's and the mode's defaults; check the choices."""
    if cfg.mode not in MODES:
        raise TrainError(f"unknown mode {cfg.mode!r}; choose one of {', '.join(MODES)}")
    if cfg.dataset not in DATASET_DEFAULTS:
        raise TrainError(f"unknown data set {cfg.dataset!r}; choose one of {', '.join(DATASET_DEFAULTS)}")
    if cfg.mode == "finetune" and not cfg.init:
        raise TrainError("fine-tuning needs a checkpoint to start from: pass --init CHECKPOINT")
    # the mode's recipe wins over the data set's where both speak (finetune epochs, mpp's no-mixup)
    defaults = {**DATASET_DEFAULTS[cfg.dataset], **MODE_DEFAULTS[cfg.mode]}
    if cfg.mode == "supervised" and backend.parse_device(cfg.device)[0] == "cpu":
        defaults.update(CPU_RECIPES.get(cfg.dataset, {}))
    values = {k: v for k, v in defaults.items() if getattr(cfg, k) is None}
    out = TrainConfig(**{**cfg.to_dict(), **values, "betas": tuple(cfg.betas)})
    if out.optimizer not in ("sgd", "adam", "adamw"):
        raise TrainError(f"unknown optimizer {out.optimizer!r}; choose sgd, adam or adamw")
    if out.schedule not in ("cosine", "linear", "constant"):
        raise TrainError(f"unknown schedule {out.schedule!r}; choose cosine, linear or constant")
    for name in ("batch_size", "epochs"):
        if getattr(out, name) <= 0:
            raise TrainError(f"--{name.replace('_', '-')} must be positive, not {getattr(out, name)}")
    if out.lr <= 0:
        raise TrainError(f"--lr must be positive, not {out.lr}")
    if out.mpp_target not in mpp.TARGETS:
        raise TrainError(f"unknown --mpp-target {out.mpp_target!r}; choose one of {', '.join(mpp.TARGETS)}")
    return out


# --- building the pieces --------------------------------------------------------------
def load_data(cfg: TrainConfig):
    """The train and evaluation splits of the run's data set (DataError on any data problem)."""
    options = {}
    if cfg.dataset == "synthetic":
        options["image_size"] = cfg.image_size or 32
    train = load_dataset(cfg.dataset, "train", data_dir=cfg.data_dir, download=cfg.download,
                         progress=cfg.progress, **options)
    test = load_dataset(cfg.dataset, "test", data_dir=cfg.data_dir, download=cfg.download,
                        progress=cfg.progress, **options)
    # subsets, for quick experiments and overfitting checks
    if cfg.train_examples is not None:
        train.x, train.y = train.x[: cfg.train_examples], train.y[: cfg.train_examples]
    if cfg.eval_examples is not None:
        test.x, test.y = test.x[: cfg.eval_examples], test.y[: cfg.eval_examples]
    return train, test


def build_model(cfg: TrainConfig, train_set) -> tuple[VisionTransformer, dict]:
    """The model for the run; for fine-tuning, the loaded checkpoint with a new head and grid."""
    image_size = cfg.image_size or train_set.image_size[0]
    num_classes = train_set.num_classes
    overrides = dict(cfg.model_overrides)
    if cfg.mode == "finetune":
        model = _load(cfg.init, img_size=image_size, drop_pretraining_parts=True)
        if model.cfg.in_chans != train_set.channels:
            raise TrainError(f"{cfg.init} takes {model.cfg.in_chans}-channel images but {cfg.dataset} has "
                             f"{train_set.channels}")
        model.reset_classifier(num_classes)  # always a fresh zero head, as the paper fine-tunes
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


def build_schedule(cfg: TrainConfig, total_steps: int, steps_per_epoch: int):
    """The learning rate as a function of the step: linear warmup, then the decay."""
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else int(round(cfg.warmup_epochs * steps_per_epoch))
    warmup = min(warmup, max(total_steps - 1, 0))
    if cfg.schedule == "cosine":
        return optim.warmup_cosine(cfg.lr, total_steps, warmup_steps=warmup, final_lr=cfg.min_lr)
    if cfg.schedule == "linear":
        return optim.warmup_linear(cfg.lr, total_steps, warmup_steps=warmup, final_lr=cfg.min_lr)
    return optim.constant(cfg.lr, warmup_steps=warmup)


# --- the run --------------------------------------------------------------------------
class Trainer:
    """Owns one run (or this process's part of it): the model, the data, the optimizer and the run directory."""

    def __init__(self, cfg: TrainConfig, resume_state: dict | None = None, comm=None):
        comm = distributed.Communicator() if comm is None else comm
        if not comm.is_main:
            cfg = replace(cfg, progress=False)  # rank 0 alone shows progress bars
        self.cfg = cfg
        self.device = comm.pick_device(cfg.device)
        self.xp = backend.xp_for(self.device)
        self.comm = comm.for_device(self.device)
        with self.comm.node_leader_first():  # one download per machine
            train, test = load_data(cfg)
        self.train_set, self.test_set = train, test
        if resume_state is not None:
            self.model = resume_state["model"]
            self.extra = resume_state.get("extra", {})
        else:
            self.model, self.extra = build_model(cfg, train)
        self.model.to(self.device)
        self.image_size = self.model.cfg.image_hw[0]
        data_size = train.image_size[0]
        if self.model.cfg.in_chans != train.channels:
            raise TrainError(f"the model takes {self.model.cfg.in_chans}-channel images but the data has "
                             f"{train.channels}")
        resize_to = None if self.image_size == data_size else self.image_size
        mixing = cfg.mode != "mpp"
        self.augment = Augment(
            train.mean, train.std, train.num_classes, image_size=resize_to, crop_padding=cfg.crop_padding,
            flip=cfg.flip, rand_ops=cfg.rand_ops, rand_magnitude=cfg.rand_magnitude,
            label_smoothing=cfg.label_smoothing if mixing else 0.0,
            mixup_alpha=cfg.mixup if mixing else 0.0, cutmix_alpha=cfg.cutmix if mixing else 0.0,
        )
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
        self.total_steps = min(total, cfg.max_steps) if cfg.max_steps else total
        self.optimizer = build_optimizer(cfg, self.model)
        self.schedule = build_schedule(cfg, self.total_steps, self.steps_per_epoch)
        self.step = 0
        self.best_acc = -1.0
        self.run_dir = cfg.out if self.comm.is_main else None  # rank 0 alone writes the run directory
        if resume_state is not None:
            self.optimizer.load_state_dict(resume_state["optimizer"])
            self.step = resume_state["step"]
            self.best_acc = resume_state["best_acc"]
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.comm.broadcast_parameters(self.params)

    # --- one step -------------------------------------------------------------------
    def loss_and_metrics(self, x, y, gen):
        """Forward the augmented batch; return the loss Tensor and (correct, count) arrays on the device.

        Rows of ``x`` past this process's share are the examples its own are mixed with
        (``distributed.shard_positions``): augmented and mixed in, then dropped.
        """
        cfg = self.cfg
        if cfg.mode == "mpp":
            inputs, _ = self.augment(x, y, gen)
            return mpp.loss(self.model, inputs, self.augment.mean, self.augment.std, gen, cfg.mpp_mask_ratio)
        inputs, targets = self.augment(x, y, gen)
        n = self.rows.stop - self.rows.start
        inputs, targets, y = inputs[:n], targets[:n], y[:n]
        logits = self.model(inputs)
        loss = ops.cross_entropy(logits, targets)
        correct = (logits.data.argmax(axis=-1) == y).sum()
        return loss, correct, y.shape[0]

    def train_step(self, batch) -> tuple:
        """One optimizer step on this process's rows of a global batch.

        Returns the loss, correct and count of the whole global batch, the grad norm and the lr.
        """
        cfg = self.cfg
        # Dropout, drop-path and attention-dropout masks are drawn for the global batch and
        # sliced; anything else random draws from the global generator, seeded per step.
        masks = distributed.RowGenerator(backend.generator(cfg.seed, 0xD1, self.step, device=self.device), self.rows,
                                         cfg.batch_size)
        for m in self.dropouts:
            m.generator = masks
        autograd.manual_seed(cfg.seed, 0xD0, self.step)
        self.model.train()
        lr = self.schedule(self.step)
        optim.set_lr(self.optimizer, lr)
        gen = distributed.RowGenerator(batch.rng, self.positions, cfg.batch_size)
        loss, correct, count = self.loss_and_metrics(batch.x, batch.y, gen)
        self.optimizer.zero_grad()
        loss.backward()
        # one all-reduce for the gradients and the step's numbers: every process sees the global loss
        loss_sum, correct, count = self.comm.average_gradients(self.params, (loss.data, correct, count))
        loss_value = loss_sum / self.comm.world_size
        if not bool(self.xp.isfinite(loss_value)):
            raise NonFiniteLoss(f"the loss became {float(loss_value)} at step {self.step}")
        grad_norm = optim.clip_grad_norm(self.params, cfg.clip_grad) if cfg.clip_grad else None
        self.optimizer.step()
        self.step += 1
        return loss_value, correct, count, grad_norm, lr

    # --- evaluation -----------------------------------------------------------------
    def evaluate(self) -> dict:
        """Loss and accuracy (for the pixel target of mpp: the loss) on the test split."""
        cfg = self.cfg
        return evaluate_model(self.model, self.test_x, self.test_y, self.augment, cfg.eval_batch_size,
                              mpp_ratio=cfg.mpp_mask_ratio if cfg.mode == "mpp" else None, seed=cfg.seed,
                              comm=self.comm)

    # --- the run directory --------------------------------------------------------------
    def log(self, record: dict) -> None:
        """Append one JSON line to metrics.jsonl."""
        if self.run_dir is None:
            return
        with open(os.path.join(self.run_dir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")

    def save(self, name: str) -> str:
        """Write a checkpoint of the whole run state atomically into the run directory."""
        path = os.path.join(self.run_dir, name)
        ckpt.save_checkpoint(
            path, self.model, step=self.step, optimizer_state=self.optimizer.state_dict(),
            extra={"best_acc": self.best_acc, **self.extra},
        )
        return path

    # --- the loop -------------------------------------------------------------------
    def fit(self) -> dict:
        """Train until ``total_steps``; evaluate and checkpoint every epoch; return the summary."""
        from tqdm import tqdm

        cfg = self.cfg
        started = time.time()
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
                    loss, correct, count, grad_norm, lr = self.train_step(batch)
                    run_loss = run_loss + loss
                    run_steps += 1
                    run_correct = run_correct + correct
                    run_count += count
                    tick_images += cfg.batch_size
                    bar.update(1)
                    if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                        elapsed = time.time() - tick
                        record = {"step": self.step, "epoch": epoch, "lr": lr, "loss": float(run_loss) / run_steps,
                                  "images_per_s": tick_images / max(elapsed, 1e-9)}
                        if run_count:  # the pixel-regression target has nothing to count as right
                            record["acc"] = float(run_correct) / float(run_count)
                        if grad_norm is not None:
                            record["grad_norm"] = grad_norm
                        bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record.get('acc', 0):.3f}",
                                        lr=f"{lr:.2e}", img_s=f"{record['images_per_s']:.0f}")
                        self.log(record)
                        run_loss, run_steps, run_correct, run_count, tick, tick_images = 0.0, 0, 0, 0, time.time(), 0
                bar.close()
                epoch_done = self.step % self.steps_per_epoch == 0
                if (epoch_done and (epoch + 1) % cfg.eval_every_epochs == 0) or self.step >= self.total_steps:
                    last_eval = self.evaluate()
                    last_eval.update(step=self.step, epoch=epoch, eval=True)
                    self.log(last_eval)
                    improved = last_eval["acc"] > self.best_acc
                    if improved:
                        self.best_acc = last_eval["acc"]
                    if self.comm.is_main:
                        print(f"epoch {epoch + 1}: step {self.step}, test loss {last_eval['loss']:.4f}, "
                              f"test acc {last_eval['acc']:.4f}" + (" (best)" if improved else ""), flush=True)
                    if self.run_dir is not None:
                        self.save("checkpoint-last.npz")
                        if improved:
                            self.save("checkpoint-best.npz")
                elif self.run_dir is not None:
                    self.save("checkpoint-last.npz")
        except KeyboardInterrupt:
            if self.run_dir is not None:
                path = self.save("checkpoint-last.npz")
                print(f"interrupted at step {self.step}; saved {path}; continue with --resume {self.run_dir}",
                      flush=True)
            raise
        summary = {"steps": self.step, "best_acc": self.best_acc, "time_s": time.time() - started,
                   "final": last_eval, "run_dir": self.cfg.out, "processes": self.comm.world_size}
        if self.run_dir is not None:
            with open(os.path.join(self.run_dir, "summary.json"), "w") as f:
                json.dump(summary, f, indent=2)
        return summary


# --- entry points used by the command line ------------------------------------------------
def start(cfg: TrainConfig, comm=None) -> Trainer:
    """A new run: make the run directory, write config.json, build everything (``comm``: see Trainer)."""
    comm = distributed.Communicator() if comm is None else comm
    if os.path.exists(os.path.join(cfg.out, "checkpoint-last.npz")):
        raise TrainError(f"{cfg.out} already holds a run; continue it with --resume {cfg.out} or pick another --out")
    if comm.is_main:
        try:
            os.makedirs(cfg.out, exist_ok=True)
        except OSError as e:
            raise TrainError(f"cannot create the run directory {cfg.out}: {e.strerror}") from None
    trainer = Trainer(cfg, comm=comm)
    if comm.is_main:
        _write_json(os.path.join(cfg.out, "config.json"), cfg.to_dict())
    return trainer


def resume(run_dir: str, device: str | None = None, progress: bool | None = None, comm=None) -> Trainer:
    """Continue the run in ``run_dir`` from its last checkpoint, exactly (same batches, same draws), on any number
    of processes."""
    config_path = os.path.join(run_dir, "config.json")
    last = os.path.join(run_dir, "checkpoint-last.npz")
    if not os.path.exists(config_path) or not os.path.exists(last):
        raise TrainError(f"{run_dir} holds no run to resume (config.json and checkpoint-last.npz are needed)")
    with open(config_path) as f:
        cfg = TrainConfig.from_dict(json.load(f))
    if device is not None:
        cfg.device = device
    if progress is not None:
        cfg.progress = progress
    cfg.out = run_dir
    try:
        ck = ckpt.read_checkpoint(last)
    except (OSError, ValueError) as e:
        raise TrainError(f"cannot resume from {last}: {_one_line(e)}") from None
    state = {"model": _load(ck), "optimizer": ck.optimizer_state, "step": ck.step, "best_acc": ck.extra["best_acc"],
             "extra": {k: v for k, v in ck.extra.items() if k == "init"}}
    return Trainer(cfg, resume_state=state, comm=comm)


def evaluate_checkpoint(cfg: TrainConfig, comm=None) -> dict:
    """Accuracy and loss of ``cfg.init`` on the test split of ``cfg.dataset`` (sharded over ``comm``'s processes)."""
    comm = distributed.Communicator() if comm is None else comm
    if not cfg.init:
        raise TrainError("--eval-only needs the checkpoint to evaluate: pass --init CHECKPOINT")
    model = _load(cfg.init)
    with comm.node_leader_first():
        test = load_dataset(cfg.dataset, "test", data_dir=cfg.data_dir, download=cfg.download,
                            progress=cfg.progress and comm.is_main,
                            **({"image_size": model.cfg.image_hw[0]} if cfg.dataset == "synthetic" else {}))
    if model.cfg.num_classes != test.num_classes:
        raise TrainError(f"the checkpoint has {model.cfg.num_classes} classes but {cfg.dataset} has "
                         f"{test.num_classes}; fine-tune it first (--init)")
    if cfg.eval_examples is not None:
        test.x, test.y = test.x[: cfg.eval_examples], test.y[: cfg.eval_examples]
    device = comm.pick_device(cfg.device)
    model.to(device)
    size = model.cfg.image_hw[0]
    augment = Augment(test.mean, test.std, test.num_classes, image_size=None if size == test.image_size[0] else size)
    x, y = backend.to_device(test.x, device), backend.to_device(test.y, device)
    result = evaluate_model(model, x, y, augment, cfg.eval_batch_size, comm=comm)
    return {"dataset": cfg.dataset, "split": "test", "examples": int(len(y)), **result}


@autograd.no_grad()
def evaluate_model(model, x, y, augment, batch_size, mpp_ratio=None, seed=0, comm=None) -> dict:
    """Mean loss and accuracy of ``model`` on uint8 images ``x`` (N, C, H, W) with labels ``y``.

    With ``mpp_ratio`` it scores masked patch prediction instead, under one fixed
    corruption drawn from ``seed`` so that evaluations compare; the pixel target has no
    accuracy, and reports minus its loss as ``acc`` so that "best" still means best.
    With ``comm`` each process scores its share of every batch and the sums are reduced,
    so every process gets the whole set's result.
    """
    comm = distributed.Communicator() if comm is None else comm
    model.eval()
    total_loss, correct, count = 0.0, 0, 0
    for k, lo in enumerate(range(0, len(y), batch_size)):
        size = min(batch_size, len(y) - lo)
        rows = distributed.shard(size, comm.rank, comm.world_size)
        if rows.stop == rows.start:  # a short last batch may leave a process nothing
            continue
        inputs, labels = augment.prepare(x[lo + rows.start: lo + rows.stop]), y[lo + rows.start: lo + rows.stop]
        if mpp_ratio is not None:
            gen = distributed.RowGenerator(seed_generator(seed, "mpp-eval", k), rows, size)
            loss, c, n = mpp.loss(model, inputs, augment.mean, augment.std, gen, mpp_ratio)
        else:
            logits = model(inputs)
            loss = ops.cross_entropy(logits, labels)
            c, n = (logits.data.argmax(axis=-1) == labels).sum(), labels.shape[0]
        total_loss += float(loss.data) * len(labels)
        correct += int(c)
        count += int(n)
    total_loss, correct, count = comm.sum([total_loss, correct, count])
    mean_loss = total_loss / len(y)
    return {"loss": mean_loss, "acc": correct / count if count else -mean_loss}


def _load(source, drop_pretraining_parts=False, **options):
    """``npvit.load_checkpoint`` with every failure turned into a one-line TrainError.

    ``drop_pretraining_parts`` leaves out what only masked patch prediction uses (the
    [mask] token and the patch-prediction head), for fine-tuning.
    """
    try:
        if drop_pretraining_parts:
            source = ckpt.read_checkpoint(source)
            source.state = {k: v for k, v in source.state.items() if not k.startswith(("mpp_head.", "mask_token"))}
            source.config = source.config.replace(mpp_target=None, mask_token=False)
        return ckpt.load_checkpoint(source, **options)
    except FileNotFoundError:
        raise TrainError(f"checkpoint {source} does not exist") from None
    except (OSError, ValueError) as e:
        raise TrainError(f"cannot use checkpoint {getattr(source, 'path', source)}: {_one_line(e)}") from None


def _one_line(error) -> str:
    """An exception's message folded onto one line."""
    return "; ".join(line.strip() for line in str(error).splitlines() if line.strip())


def _write_json(path: str, obj) -> None:
    """Write JSON atomically: a temporary file in the same folder, then a rename."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)
