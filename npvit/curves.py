"""Learning curves: accuracy against wall time (or steps) of training runs, as a PNG.

    python -m npvit.curves runs/cpu-recipe-seed0 runs/cpu-recipe-seed1 --out docs/figures/cpu-recipe/curve.png

Each RUN_DIR's ``metrics.jsonl`` gives one curve: its evaluation records (one per
evaluated epoch), the accuracy in percent against the minutes since the run started
(``elapsed_s``, which ``train.py`` records with every evaluation and which carries on
across ``--resume``), or against the step with ``--x step``. A curve is labelled with
its run directory's name. Every user error (a missing run, a run with no evaluation yet,
a run older than ``elapsed_s``) is one line on stderr and exit code 2.
"""
from __future__ import annotations

import json
import os
import sys

from . import plot
from .cli import EXIT_USER_ERROR, Parser
from .fileio import atomic_write

X_AXES = {"minutes": ("elapsed_s", 1 / 60, "wall time (minutes, evaluation included)"),
          "step": ("step", 1, "optimizer step")}


class CurveError(Exception):
    """A problem the user can fix; one line, exit code 2."""


def read_curve(run_dir: str, x: str = "minutes") -> tuple[list[float], list[float], str]:
    """``(xs, accuracies in percent, split)`` of a run's evaluations, in the order they were made."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise CurveError(f"{run_dir} has no metrics.jsonl: pass the run directory that train.py --out wrote")
    key, scale, _ = X_AXES[x]
    xs, ys, split = [], [], None
    with open(path) as f:
        for number, line in enumerate(f, 1):
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise CurveError(f"{path} line {number} is not JSON: the file is damaged") from None
            if not isinstance(record, dict) or not record.get("eval") or "acc" not in record:
                continue
            if key not in record:
                raise CurveError(f"{path} has evaluations without {key!r} (a run from before it was recorded); "
                                 f"use --x step")
            xs.append(float(record[key]) * scale)
            ys.append(100.0 * float(record["acc"]))
            split = record.get("split", split)
    if not xs:
        raise CurveError(f"{run_dir} has no evaluation with an accuracy yet: let it finish an epoch")
    return xs, ys, split or "test"


def draw_curves(run_dirs, x: str = "minutes", title: str | None = None, hlines=()):
    """The figure (a ``PIL.Image``) of every run's accuracy curve on one pair of axes."""
    series, splits = [], set()
    for run_dir in run_dirs:
        xs, ys, split = read_curve(run_dir, x)
        series.append((os.path.basename(os.path.normpath(run_dir)), xs, ys))
        splits.add(split)
    xlim = (0.0, plot.nice_upper(max(max(s[1]) for s in series)))
    ys = [y for s in series for y in s[2]] + [y for y, _ in hlines]
    ylim = (10.0 * (min(ys) // 10.0), min(100.0, 10.0 * (max(ys) // 10.0 + 1)))  # whole tens around the data
    split = "/".join(sorted(splits))
    return plot.scatter_plot(series, xlim=xlim, ylim=ylim, xlabel=X_AXES[x][2], ylabel=f"{split} accuracy (%)",
                             title=title, hlines=hlines, lines=True)


def build_parser() -> Parser:
    """The parser with every flag documented."""
    p = Parser(prog="python -m npvit.curves",
               description="Draw the accuracy of training runs against wall time (or steps) as one PNG.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="training run directories (train.py --out)")
    p.add_argument("--out", required=True, help="the PNG to write (its folder is created if missing)")
    p.add_argument("--x", choices=tuple(X_AXES), default="minutes", help="the x axis (default minutes)")
    p.add_argument("--title", help="a title above the plot (default none)")
    p.add_argument("--target", type=float, action="append", default=[],
                   help="draw a dashed reference line at this accuracy in percent (repeatable)")
    return p


def main(argv=None) -> int:
    """Run the command; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        image = draw_curves(args.runs, args.x, args.title, hlines=[(t, f"{t:g}%") for t in args.target])
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with atomic_write(args.out) as f:
            image.save(f, format="PNG")
    except CurveError as e:
        print(f"curves: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:
        print(f"curves: error: cannot write {args.out}: {e.strerror}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0


if __name__ == "__main__":
    sys.exit(main())
