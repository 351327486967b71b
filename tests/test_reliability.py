"""train.py under faults and bad input: nothing good is lost, and every failure is one line with a fixed exit code.

Every run here is in-process on the synthetic data set with the tiny model of
test_train.py (8 steps an epoch), so a case costs a fraction of a second to a few seconds.
"""
import errno
import json
import os
import signal

import numpy as np
import pytest

import npvit
from npvit import fileio
from npvit import trainer as T
from npvit.cli import main

from test_train import TINY, params, run

LAST = "checkpoint-last.npz"


def one_line_error(capsys) -> str:
    """The stderr of the command, checked to be one line without a traceback."""
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def finite(path) -> bool:
    return all(np.isfinite(v).all() for v in npvit.read_checkpoint(path).state.values())


# --- data loss ---------------------------------------------------------------------------
def _explode_after(monkeypatch, at_step):
    """Weights turn to NaN after step ``at_step`` while the loss of that step was still finite."""
    original = T.Trainer.train_step

    def step(self, batch):
        out = original(self, batch)
        if self.step == at_step:
            self.params[0].data[...] = np.nan
        return out

    monkeypatch.setattr(T.Trainer, "train_step", step)


def test_weights_that_explode_on_an_epoch_last_step_are_never_saved(tmp_path, capsys, monkeypatch):
    _explode_after(monkeypatch, 16)  # the last step of epoch 2
    code, out = run(tmp_path, "nan", "--epochs", "3")
    assert code == 3
    err = capsys.readouterr().err
    assert "not finite at step 16" in err and f"{LAST} is kept" in err and "--resume" in err
    kept = npvit.read_checkpoint(os.path.join(out, LAST))
    assert kept.step == 8 and finite(os.path.join(out, LAST))
    best = os.path.join(out, "checkpoint-best.npz")
    assert finite(best)


def test_a_run_that_diverges_before_its_first_checkpoint_says_nothing_was_kept(tmp_path, capsys, monkeypatch):
    _explode_after(monkeypatch, 8)
    code, out = run(tmp_path, "nan", "--epochs", "2")
    assert code == 3
    err = capsys.readouterr().err
    assert "no checkpoint was written" in err and "is kept" not in err
    assert not os.path.exists(os.path.join(out, LAST))


def test_sigterm_saves_at_a_step_boundary_and_resumes_bit_exact(tmp_path, monkeypatch):
    flags = ["--epochs", "2", "--dropout", "0.1", "--crop-padding", "2"]
    code, straight = run(tmp_path, "straight", *flags)
    assert code == 0
    original = T.Trainer.train_step

    def sigterm_inside_step_11(self, batch):
        if self.step == 11:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives inside the step: held until it ends
        return original(self, batch)

    monkeypatch.setattr(T.Trainer, "train_step", sigterm_inside_step_11)
    code, broken = run(tmp_path, "broken", *flags)
    assert code == 143
    assert npvit.read_checkpoint(os.path.join(broken, LAST)).step == 12
    monkeypatch.setattr(T.Trainer, "train_step", original)
    assert main(["--resume", broken, "--no-progress"]) == 0
    a, b = params(os.path.join(straight, LAST)), params(os.path.join(broken, LAST))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # main puts the old handler back


@pytest.mark.parametrize("fault", [errno.ENOSPC, errno.EROFS], ids=["disk-full", "read-only"])
def test_a_disk_that_cannot_be_written_is_one_line_and_keeps_the_last_checkpoint(tmp_path, capsys, monkeypatch,
                                                                                    fault):
    original = fileio.tempfile.mkstemp
    calls = {"n": 0}

    def failing_mkstemp(*args, **kwargs):
        if kwargs.get("prefix", "").startswith(f".{LAST}"):
            calls["n"] += 1
            if calls["n"] == 2:  # the second epoch's checkpoint
                raise OSError(fault, os.strerror(fault))
        return original(*args, **kwargs)

    monkeypatch.setattr(fileio.tempfile, "mkstemp", failing_mkstemp)
    code, out = run(tmp_path, "disk", "--epochs", "2")
    err = one_line_error(capsys)
    assert code == 2 and os.strerror(fault) in err and LAST in err and f"--resume {out}" in err
    assert npvit.read_checkpoint(os.path.join(out, LAST)).step == 8
