"""train.py with a failure injected into one process, for the MPI tests in test_distributed.py.

    mpirun -np 2 python tests/mpi_worker.py --fail-rank 1 --fail-step 3 --fail-with error --pid-dir DIR -- FLAGS

``--fail-with`` is ``error`` (an exception), ``interrupt`` (Ctrl-C) or ``nan`` (the loss
becomes NaN from that step on); every process writes its pid into ``--pid-dir`` first,
so that a test can check that none is left.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from npvit import trainer as T  # noqa: E402
from npvit.cli import main  # noqa: E402


def inject(rank: int, step: int, kind: str) -> None:
    """Make process ``rank`` fail as ``kind`` at ``step``."""
    train_step, loss_and_metrics = T.Trainer.train_step, T.Trainer.loss_and_metrics

    def failing_train_step(self, batch):
        if self.comm.rank == rank and self.step == step:
            if kind == "error":
                raise RuntimeError(f"injected failure at step {step}")
            raise KeyboardInterrupt
        return train_step(self, batch)

    def nan_loss(self, x, y, gen):
        loss, correct, count = loss_and_metrics(self, x, y, gen)
        return (loss * float("nan") if self.comm.rank == rank and self.step >= step else loss), correct, count

    if kind == "nan":
        T.Trainer.loss_and_metrics = nan_loss
    else:
        T.Trainer.train_step = failing_train_step


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--fail-rank", type=int, required=True)
    p.add_argument("--fail-step", type=int, required=True)
    p.add_argument("--fail-with", choices=["error", "interrupt", "nan"], required=True)
    p.add_argument("--pid-dir", required=True)
    p.add_argument("flags", nargs=argparse.REMAINDER)
    args = p.parse_args()
    with open(os.path.join(args.pid_dir, str(os.getpid())), "w"):
        pass
    inject(args.fail_rank, args.fail_step, args.fail_with)
    sys.exit(main([f for f in args.flags if f != "--"]))
