"""The command line of ``train.py``: flags in, a run directory out.

Every user error (a bad flag, an unknown data set, missing data, a checkpoint that does
not fit) ends in one line on stderr and exit code 2; a loss that stops being finite ends
with exit code 3 and the last good checkpoint kept; Ctrl-C saves the run and exits 130.

Started by an MPI launcher as one of several processes (``mpirun -np N python train.py``)
it trains data parallel (``npvit/distributed.py``). Then a failure in any process ends
them all at once with its exit code (MPI abort), its message printed by that process,
rather than leaving the others waiting for it; a non-finite loss is seen by every
process at the same step and ends them all with code 3.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

from autograd.backend import DeviceError, keep_freed_memory

from . import distributed
from .config import GLOBAL_POOLS, MPP_TARGETS, POS_EMBED_AT, POS_EMBED_KINDS, list_models
from .data import DataError

EXIT_USER_ERROR = 2
EXIT_NON_FINITE = 3
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2), not the usage block."""

    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


# model flags: (flag, config field, type, choices, help)
MODEL_FLAGS = [
    ("--patch-size", "patch_size", int, None, "patch size P"),
    ("--embed-dim", "embed_dim", int, None, "token width D"),
    ("--depth", "depth", int, None, "number of encoder blocks"),
    ("--num-heads", "num_heads", int, None, "attention heads"),
    ("--mlp-ratio", "mlp_ratio", float, None, "MLP hidden width / D"),
    ("--pos-embed", "pos_embed", str, POS_EMBED_KINDS, "kind of position embedding (paper Appendix D.4)"),
    ("--pos-embed-at", "pos_embed_at", str, POS_EMBED_AT, "where position embeddings are added"),
    ("--pool", "global_pool", str, GLOBAL_POOLS, "[class] token or global average pooling"),
    ("--dropout", "drop_rate", float, None, "dropout rate (head, MLP, after the attention projection)"),
    ("--attn-dropout", "attn_drop_rate", float, None, "attention-weights dropout rate"),
    ("--drop-path", "drop_path_rate", float, None, "stochastic depth rate of the last block"),
]


def build_parser() -> argparse.ArgumentParser:
    """The parser with every flag documented."""
    p = _Parser(
        prog="train.py",
        description="Train, pre-train, fine-tune or evaluate a Vision Transformer on NumPy/CuPy.",
        epilog="Defaults depend on the data set and mode; the resolved values are written to RUN_DIR/config.json. "
               "Example: python train.py --device gpu --dataset cifar10",
    )
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="cifar10",
                   help="cifar10, cifar100, tiny-imagenet, fashion-mnist, imagefolder or synthetic (default cifar10)")
    g.add_argument("--data-dir", help="a local copy in the official layout (or an image folder); nothing is "
                                      "downloaded then")
    g.add_argument("--no-download", action="store_true", help="never download; fail if the data is not local")
    g.add_argument("--image-size", type=int, help="train at this resolution (images are resized; fine-tuning "
                                                  "interpolates the position embeddings)")
    g.add_argument("--train-examples", type=int, help="use only the first N training examples")
    g.add_argument("--eval-examples", type=int, help="evaluate on only the first N test examples")

    g = p.add_argument_group("mode")
    g.add_argument("--mode", choices=["supervised", "pretrain", "finetune", "mpp"],
                   help="supervised from scratch (default), pretrain (with the pre-training head), finetune "
                        "(needs --init) or mpp (masked patch prediction); --init alone means finetune")
    g.add_argument("--init", metavar="CHECKPOINT", help="start from this checkpoint (ours, a timm-named .npz or a "
                                                        "Google ViT .npz) and fine-tune")
    g.add_argument("--mpp-target", choices=MPP_TARGETS, default="mean_color",
                   help="what masked patch prediction predicts (default mean_color: 3-bit mean colour)")
    g.add_argument("--eval-only", action="store_true", help="evaluate the --init checkpoint on the test split, print JSON and exit")
    g.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run exactly where it stopped")

    g = p.add_argument_group("model")
    g.add_argument("--model", help=f"model name (default per data set); one of: {', '.join(list_models())}")
    for flag, _, typ, choices, text in MODEL_FLAGS:
        g.add_argument(flag, type=typ, choices=choices, help=text)

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, help="epochs to train")
    g.add_argument("--max-steps", type=int, help="stop after this many steps (the schedule ends there too)")
    g.add_argument("--batch-size", type=int, help="batch size")
    g.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], help="optimizer (default per mode)")
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--weight-decay", type=float, help="weight decay (decoupled for adamw)")
    g.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    g.add_argument("--schedule", choices=["cosine", "linear", "constant"], help="decay after warmup")
    g.add_argument("--warmup-steps", type=int, help="linear warmup steps (default: per-mode epochs)")
    g.add_argument("--clip-grad", type=float, help="clip the global gradient norm (0: off)")

    g = p.add_argument_group("augmentation")
    g.add_argument("--label-smoothing", type=float, help="label smoothing")
    g.add_argument("--crop-padding", type=int, help="random crop with this padding (0: off)")
    g.add_argument("--no-flip", action="store_true", help="no random horizontal flips")
    g.add_argument("--randaugment", type=int, metavar="N", help="RandAugment ops per image (0: off)")
    g.add_argument("--randaugment-magnitude", type=float, default=9.0, help="RandAugment magnitude (default 9)")
    g.add_argument("--mixup", type=float, help="mixup alpha (0: off)")
    g.add_argument("--cutmix", type=float, help="cutmix alpha (0: off)")

    g = p.add_argument_group("run")
    g.add_argument("--device", default="cpu", help="cpu, gpu or gpu:N (default cpu)")
    g.add_argument("--seed", type=int, default=0, help="seed of every random draw in the run (default 0)")
    g.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/DATASET-MODE-TIME)")
    g.add_argument("--log-every", type=int, default=20, help="steps between metric lines (default 20)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g.add_argument("--distributed", action="store_true",
                   help="use MPI even for a single process (it is used anyway when an MPI launcher starts several: "
                        "mpirun -np N python train.py ...)")
    return p


def config_from_args(args):
    """A TrainConfig from parsed flags (unset flags stay None: the defaults decide)."""
    from .trainer import TrainConfig

    overrides = {field: getattr(args, flag[2:].replace("-", "_")) for flag, field, *_ in MODEL_FLAGS}
    overrides = {k: v for k, v in overrides.items() if v is not None}
    mode = args.mode or ("finetune" if args.init else "supervised")
    return TrainConfig(
        dataset=args.dataset.replace("_", "-"), mode=mode, data_dir=args.data_dir, download=not args.no_download,
        model=args.model, model_overrides=overrides, init=args.init, image_size=args.image_size,
        epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size, optimizer=args.optimizer,
        lr=args.lr, weight_decay=args.weight_decay, momentum=args.momentum, schedule=args.schedule,
        warmup_steps=args.warmup_steps, clip_grad=args.clip_grad, label_smoothing=args.label_smoothing,
        crop_padding=args.crop_padding, flip=False if args.no_flip else None, rand_ops=args.randaugment,
        rand_magnitude=args.randaugment_magnitude, mixup=args.mixup, cutmix=args.cutmix,
        mpp_target=args.mpp_target, train_examples=args.train_examples, eval_examples=args.eval_examples,
        seed=args.seed, device=args.device,
        out=args.out, log_every=args.log_every, progress=not args.no_progress,
    )


def _run(args, comm) -> int:
    from . import trainer as T

    if args.resume:
        t = T.resume(args.resume, device=args.device if args.device != "cpu" else None,
                     progress=not args.no_progress, comm=comm)
    else:
        cfg = T.resolve(config_from_args(args))
        if args.eval_only:
            result = T.evaluate_checkpoint(cfg, comm)
            if comm.is_main:
                print(json.dumps(result))
            return 0
        if cfg.out is None:  # rank 0's clock names the run for every process
            cfg.out = comm.share(os.path.join("runs", f"{cfg.dataset}-{cfg.mode}-{time.strftime('%Y%m%d-%H%M%S')}"))
        t = T.start(cfg, comm)
    summary = t.fit()
    if comm.is_main:
        best = f"{summary['best_acc']:.4f}" if summary["best_acc"] >= 0 else "n/a"
        print(f"done: {summary['steps']} steps in {summary['time_s']:.1f} s, best test accuracy {best}; "
              f"checkpoints in {summary['run_dir']}", flush=True)
    return 0


def _fail(comm, code: int, message: str | None = None) -> int:
    """Report a failure of this process: return ``code``, or, in a job of several processes, end them all with it."""
    if comm.world_size > 1:
        if message:
            print(f"{message} (process {comm.rank} of {comm.world_size})", file=sys.stderr, flush=True)
        comm.abort(code)  # the others may be waiting for this one in a collective
    if message:
        print(message, file=sys.stderr)
    return code


def main(argv=None) -> int:
    """Run the command line; returns the process exit code."""
    from . import trainer as T

    args = build_parser().parse_args(argv)
    keep_freed_memory()  # a NumPy step then reuses the pages of the last one (autograd.backend)
    try:
        comm = distributed.init(force=args.distributed)
    except distributed.DistributedError as e:
        print(f"train.py: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        return _run(args, comm)
    except (T.TrainError, DataError, DeviceError, distributed.DistributedError) as e:
        return _fail(comm, EXIT_USER_ERROR, f"train.py: error: {e}")
    except T.NonFiniteLoss as e:  # every process stops at the same step: no abort needed
        if comm.is_main:
            print(f"train.py: stopped: {e}; the last good checkpoint is kept", file=sys.stderr)
        return EXIT_NON_FINITE
    except KeyboardInterrupt:
        return _fail(comm, EXIT_INTERRUPTED)
    except Exception:
        if comm.world_size == 1:
            raise
        return _fail(comm, 1, f"train.py: failed:\n{traceback.format_exc().rstrip()}")
