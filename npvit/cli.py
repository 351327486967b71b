"""The command line of ``train.py``: flags in, a run directory out.

Every flag of a setting is made from its field in ``npvit/recipes.py`` (``TrainConfig``),
with its default in the help; a flag not given leaves the field to the table's default.

Exit codes (README.md, "Exit codes"): every user error (a bad flag, an unknown data set,
missing data, a checkpoint that does not fit, a full or read-only disk, a batch too big
for memory) ends in one line on stderr and exit code 2; a loss or state that stops being
finite ends with exit code 3, no checkpoint written from it, and the line says which
checkpoint is kept; Ctrl-C saves the run and exits 130, SIGTERM the same with 143.

Started by an MPI launcher as one of several processes (``mpirun -np N python train.py``)
it trains data parallel (``npvit/distributed.py``). Then a failure in any process ends
them all at once with its exit code (MPI abort), its message printed by that process,
rather than leaving the others waiting for it; a non-finite loss is seen by every
process at the same step and ends them all with code 3.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import time
import traceback

from autograd.backend import DeviceError, keep_freed_memory

from . import distributed, interrupts, recipes
from .data import DataError

EXIT_USER_ERROR = 2
EXIT_NON_FINITE = 3


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2), not the usage block; used by every npvit command."""

    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


GROUPS = ("data", "mode", "model", "optimisation", "augmentation", "run")


def _add_setting(group, f) -> None:
    """The flag of one TrainConfig field, from its ``setting``: type, choices and the default stated in the help."""
    meta = f.metadata
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    shown = meta["default_help"] or (recipes.PER_RECIPE if default is None else default)
    if isinstance(shown, tuple):
        shown = " ".join(map(str, shown))
    text = f"{meta['help']} (default: {shown})"
    kind = f.type.split(" ")[0]  # the annotation, a string: "int | None" -> "int"
    options = dict(dest=f.name, default=argparse.SUPPRESS, help=text, metavar=meta["metavar"])
    if meta["choices"] is not None:
        options.update(metavar=meta["metavar"] or "{" + ",".join(meta["choices"]) + "}")
    if kind == "bool":
        options.update(action=argparse.BooleanOptionalAction)
        options.pop("metavar")
    elif kind == "tuple":
        options.update(type=float, nargs=len(default))
    else:
        options.update(type={"int": int, "float": float, "str": str}[kind])
    group.add_argument(recipes.flag_of(f), **options)


def build_parser() -> argparse.ArgumentParser:
    """The parser: a flag for every TrainConfig field (``npvit/recipes.py``), the model flags, and what to do."""
    p = Parser(
        prog="train.py",
        description="Train, pre-train, fine-tune or evaluate a Vision Transformer on NumPy/CuPy.",
        epilog="Defaults depend on the data set and mode; the resolved values are written to RUN_DIR/config.json. "
               "Example: python train.py --device gpu --dataset cifar10",
    )
    groups = {name: p.add_argument_group(name) for name in GROUPS}
    for f in dataclasses.fields(recipes.TrainConfig):
        if f.name != "model_overrides":  # set by the model flags below
            _add_setting(groups[f.metadata["group"]], f)
    for flag, name, typ, choices, text in recipes.MODEL_FLAGS:
        groups["model"].add_argument(flag, dest=f"model.{name}", type=typ, choices=choices, default=argparse.SUPPRESS,
                                     metavar=None if choices else flag[2:].upper().replace("-", "_"),
                                     help=f"{text} (default: the model's)")
    g = groups["mode"]
    g.add_argument("--eval-only", action="store_true", help="evaluate the --init checkpoint (with --resume: the "
                                                            "run's last) on the test split (with --val-split: "
                                                            "the held-out images), print JSON and exit (default: train)")
    g.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run exactly where it stopped; only "
                   f"{', '.join(map(recipes.flag_named, recipes.CHANGE_ON_RESUME))} may be given with it "
                   "(default: a new run)")
    groups["run"].add_argument(
        "--distributed", action="store_true",
        help="use MPI even for a single process (it is used anyway when an MPI launcher starts several: "
             "mpirun -np N python train.py ...) (default: only then)")
    return p


def config_from_args(args) -> recipes.TrainConfig:
    """A TrainConfig from parsed flags: the flags given, the table's defaults for the rest."""
    given = vars(args)
    names = {f.name for f in dataclasses.fields(recipes.TrainConfig)}
    values = {k: v for k, v in given.items() if k in names}
    values["model_overrides"] = {k[len("model."):]: v for k, v in given.items() if k.startswith("model.")}
    if "dataset" in values:
        values["dataset"] = values["dataset"].replace("_", "-")
    if "mode" not in values and values.get("init"):
        values["mode"] = "finetune"
    if "betas" in values:
        values["betas"] = tuple(values["betas"])
    return recipes.TrainConfig(**values)


def _run(args, comm) -> int:
    from . import trainer as T

    if args.resume:
        given = {k: v for k, v in vars(args).items() if k not in ("resume", "eval_only", "distributed")}
        if args.eval_only:  # the run's last checkpoint on its own evaluation split (test, or --val-split's)
            T.check_resume_changes(args.resume, given)
            cfg, _ = T.read_run_config(args.resume)
            cfg = dataclasses.replace(cfg, init=os.path.join(args.resume, "checkpoint-last.npz"), **given)
            return _print_evaluation(T.evaluate_checkpoint(cfg, comm), comm)
        t = T.resume(args.resume, changes=given, comm=comm)
    else:
        cfg = recipes.resolve(config_from_args(args))
        if args.eval_only:
            return _print_evaluation(T.evaluate_checkpoint(cfg, comm), comm)
        if cfg.out is None:  # rank 0's clock names the run for every process
            cfg.out = comm.share(os.path.join("runs", f"{cfg.dataset}-{cfg.mode}-{time.strftime('%Y%m%d-%H%M%S')}"))
        t = T.start(cfg, comm)
    summary = t.fit()
    if comm.is_main:
        best = f"{summary['best_acc']:.4f}" if summary["best_acc"] >= 0 else "n/a"
        print(f"done: {summary['steps']} steps in {summary['time_s']:.1f} s, best {summary['split']} accuracy {best}; "
              f"checkpoints in {summary['run_dir']}", flush=True)
    return 0


def _print_evaluation(result: dict, comm) -> int:
    """Print an evaluation's result as one JSON line (rank 0); the exit code of --eval-only."""
    if comm.is_main:
        print(json.dumps(result))
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


def _out_of_memory(args) -> str:
    """What to say when a batch does not fit in memory: the batch sizes to halve."""
    given = vars(args)
    batch = given.get("batch_size")
    lower = f"--batch-size {batch // 2}" if batch and batch > 1 else "a smaller --batch-size"
    evals = given.get("eval_batch_size", 500)
    return (f"out of memory; try {lower} (or, if it ran out while evaluating, --eval-batch-size "
            f"{max(evals // 2, 1)})")


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
        # Under MPI with several processes SIGTERM is the launcher aborting the job (a peer
        # failed): holding it to a step boundary would wait on a collective that never ends.
        signals = (signal.SIGINT, signal.SIGTERM) if comm.world_size == 1 else (signal.SIGINT,)
        with interrupts.handle_signals(signals):
            return _run(args, comm)
    except (recipes.TrainError, DataError, DeviceError, distributed.DistributedError) as e:
        return _fail(comm, EXIT_USER_ERROR, f"train.py: error: {e}")
    except MemoryError:
        return _fail(comm, EXIT_USER_ERROR, f"train.py: error: {_out_of_memory(args)}")
    except T.NonFiniteLoss as e:  # every process stops at the same step: no abort needed
        if comm.is_main:
            kept = (f"the last good checkpoint {e.kept} is kept; continue from it with --resume "
                    f"{os.path.dirname(e.kept)} --lr LOWER" if e.kept else "no checkpoint was written")
            print(f"train.py: stopped: {e}; {kept}", file=sys.stderr)
        return EXIT_NON_FINITE
    except KeyboardInterrupt as e:
        return _fail(comm, interrupts.exit_code(e))
    except Exception:
        if comm.world_size == 1:
            raise
        return _fail(comm, 1, f"train.py: failed:\n{traceback.format_exc().rstrip()}")
