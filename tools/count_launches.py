"""Kernel launches, host syncs and uploads of one steady-state training step on the GPU path, without a GPU.

    python tools/count_launches.py [--rand-ops N] [--batch-size B] [--steps S] [--no-kernels] [--sites K]

Runs the trainer's step for ``vit_cifar_tiny`` with the cifar10 GPU recipe's settings
(AdamW, clipping at 1.0, crop 4 and flip, label smoothing 0.1, RandAugment ``--rand-ops``
ops; 0 switches RandAugment off) on synthetic data, through the strict CuPy stand-in of
``tests/fakecupy.py``, which counts every array op that would launch a kernel, every
read to the host and every copy to the device. Steps run one after another on the same
trainer; the counts are those of the last (``--steps``, default 3: the first step makes
the optimizer's state, the second its kernels'), so they are a steady-state step's.
``--no-kernels`` switches every registered fused kernel off (``kernels.disable``,
npvit's RandAugment one too): every op takes its own CuPy path. ``--sites K`` also lists
the K source lines that launch most, as ``count file:line``. Prints one line:
``<launches> launches <syncs> syncs <uploads> uploads``. BENCHMARKS.md's launch tables
come from it; tests/test_gpu_path.py asserts the budget.
"""
from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main(argv=None) -> int:
    """Parse the flags, run the steps on the stand-in and print the counts of the last; exit code 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rand-ops", type=int, default=2, help="RandAugment's ops per image (0: off; default 2)")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (default 128, the recipe's)")
    parser.add_argument("--steps", type=int, default=3, help="steps to run; the last is counted (default 3)")
    parser.add_argument("--no-kernels", action="store_true", help="switch the fused kernels off")
    parser.add_argument("--sites", type=int, default=0, metavar="K", help="also list the K lines that launch most")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 1 or args.rand_ops < 0:
        parser.error("--steps and --batch-size must be at least 1, --rand-ops at least 0")

    # the stand-in must be installed before anything imports autograd.backend
    sys.path[:0] = [os.path.join(ROOT, "tests"), ROOT]
    os.environ["NPVIT_FAKE_CUPY"] = "1"
    import fakecupy
    from autograd import kernels
    from npvit import recipes, trainer

    if args.no_kernels:
        kernels.disable()
    cfg = recipes.resolve(recipes.TrainConfig(
        dataset="synthetic", model="vit_cifar_tiny", batch_size=args.batch_size, rand_ops=args.rand_ops,
        crop_padding=4, flip=True, label_smoothing=0.1, train_examples=max(64, 4 * args.batch_size),
        eval_examples=16, device="gpu", clip_grad=1.0, progress=False, optimizer="adamw"))
    run = trainer.Trainer(cfg)
    meter = fakecupy.meter
    for step in range(args.steps):
        meter.reset()
        run.train_step(run.loader.batch(0, step, run.positions))
    print(sum(meter.launches.values()), "launches", sum(meter.syncs.values()), "syncs",
          sum(meter.uploads.values()), "uploads")
    for site, n in meter.launches.most_common(args.sites):
        print(f"{n:5d} {site}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
