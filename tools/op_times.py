"""Where a CPU training step's (or inference pass's) time goes, op by op.

    python tools/op_times.py [--model vit-tiny] [--batch-size 128] [--threads N] [--mode train|infer]
                             [--steps 5] [--warmup 2] [--keep-freed-memory]

Runs ``npvit.bench``'s step (zero grad, forward, cross-entropy, backward, AdamW; or a
forward under ``no_grad``) on its random batch, with every autograd ``Function``'s
``forward`` and ``backward`` wrapped in a timer. Each op's time is exclusive: an op that
runs another op's forward inside its own (``LayerNormLinear`` runs LayerNorm's and
Linear's) is charged only for what is not the inner op's. The optimizer's ``step`` is
timed the same way, and "outside the ops" is the rest of the step: the engine's graph
walk and gradient sums, tensor bookkeeping, Python. Prints one row per op and direction,
milliseconds a step (the mean over ``--steps`` after ``--warmup`` untimed steps), most
first, then the step's total. BENCHMARKS.md's per-op tables come from it. The timers
cost a few microseconds an op; the total is a little above ``npvit.bench``'s.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _all_subclasses(cls) -> list:
    out, todo = [], [cls]
    while todo:
        for sub in todo.pop().__subclasses__():
            out.append(sub)
            todo.append(sub)
    return out


class OpTimer:
    """Wraps each Function's forward and backward (and a few named callables) in exclusive timers."""

    def __init__(self):
        self.total = defaultdict(float)  # (name, direction) -> seconds, exclusive
        self._stack = []                 # seconds spent in inner timed calls, one entry per open call
        self._undo = []

    def _wrap(self, owner, attr, key, static):
        inner = owner.__dict__[attr]
        fn = inner.__func__ if static else inner
        timer = self

        def timed(*args, **kwargs):
            timer._stack.append(0.0)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.perf_counter() - start
                nested = timer._stack.pop()
                timer.total[key] += spent - nested
                if timer._stack:
                    timer._stack[-1] += spent

        setattr(owner, attr, staticmethod(timed) if static else timed)
        self._undo.append((owner, attr, inner))

    def install(self, function_base, extra=()):
        for cls in _all_subclasses(function_base):
            for attr in ("forward", "backward"):
                if isinstance(cls.__dict__.get(attr), staticmethod):
                    self._wrap(cls, attr, (cls.__name__, attr), static=True)
        for cls, attr, name in extra:  # on the class that defines it (a base class, for an optimizer's step)
            owner = next(c for c in cls.__mro__ if attr in c.__dict__)
            self._wrap(owner, attr, (name, ""), static=False)

    def remove(self):
        for owner, attr, inner in reversed(self._undo):
            setattr(owner, attr, inner)
        self._undo.clear()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="vit-tiny", help="a model name or a bench alias (default vit-tiny)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--mode", choices=("train", "infer"), default="train")
    p.add_argument("--steps", type=int, default=5, help="timed steps (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    p.add_argument("--threads", type=int, default=None, help="BLAS threads (and the elementwise pool's size)")
    p.add_argument("--keep-freed-memory", action="store_true", help="have malloc keep freed memory (as train.py)")
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.steps < 1 or args.warmup < 0 or args.batch_size < 1:
        print("op_times: --steps and --batch-size must be at least 1, --warmup at least 0", file=sys.stderr)
        return 2
    sys.path.insert(0, ROOT)
    from npvit import bench

    if args.threads is not None:  # this process has loaded BLAS already: the restart sets the count first
        bench._restart_with_threads(args.threads, argv, command=(os.path.abspath(__file__),))
    from autograd import optim
    from autograd.backend import keep_freed_memory
    from autograd.engine import Function
    from npvit.config import get_config

    if args.keep_freed_memory:
        keep_freed_memory()
    name = bench.resolve_model(args.model)  # an unknown name exits with the list of known ones
    images, labels = bench.random_batch(get_config(name), args.batch_size)
    _, step = bench.npvit_runner(name, args.mode, images, labels, "cpu")
    for _ in range(args.warmup):
        step()
    timer = OpTimer()
    timer.install(Function, extra=[(optim.AdamW, "step", "AdamW.step"), (optim.AdamW, "zero_grad", "zero_grad")])
    try:
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        elapsed = (time.perf_counter() - start) / args.steps
    finally:
        timer.remove()
    per_step = {k: v / args.steps for k, v in timer.total.items()}
    rows = sorted(per_step.items(), key=lambda kv: -kv[1])
    threads = os.environ.get("OPENBLAS_NUM_THREADS", "BLAS's own")
    print(f"op_times: {name}, batch {args.batch_size}, {args.mode}, cpu, {threads} threads, "
          f"mean of {args.steps} steps after {args.warmup}")
    print(f"{'op':<34} {'ms a step':>10} {'share':>7}")
    for (op, direction), s in rows:
        label = f"{op}.{direction}" if direction else op
        print(f"{label:<34} {1e3 * s:>10.1f} {s / elapsed:>7.1%}")
    outside = elapsed - sum(per_step.values())
    print(f"{'outside the ops':<34} {1e3 * outside:>10.1f} {outside / elapsed:>7.1%}")
    print(f"{'step':<34} {1e3 * elapsed:>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
