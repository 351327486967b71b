"""train.py under faults and bad input: nothing good is lost, and every failure is one line with a fixed exit code.

Every run here is in-process on the synthetic data set with the tiny model of
test_train.py (8 steps an epoch), so a case costs a fraction of a second to a few seconds.
"""
import contextlib
import errno
import glob
import io
import json
import os
import re
import shutil
import signal
import tarfile
import tempfile
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import npvit
from npvit import fileio
from npvit.data import datasets
from npvit import trainer as T
from npvit.cli import main

from test_train import TINY, params, run

LAST = "checkpoint-last.npz"
# 2 steps an epoch and a small evaluation: the runs below need epochs, not examples
SHORT = ["--train-examples", "64", "--eval-examples", "32"]


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
    _explode_after(monkeypatch, 4)  # the last step of epoch 2
    code, out = run(tmp_path, "nan", "--epochs", "3", *SHORT)
    assert code == 3
    err = capsys.readouterr().err
    assert "not finite at step 4" in err and f"{LAST} is kept" in err and "--resume" in err
    kept = npvit.read_checkpoint(os.path.join(out, LAST))
    assert kept.step == 2 and finite(os.path.join(out, LAST))
    best = os.path.join(out, "checkpoint-best.npz")
    assert finite(best)


def test_a_run_that_diverges_before_its_first_checkpoint_says_nothing_was_kept(tmp_path, capsys, monkeypatch):
    _explode_after(monkeypatch, 2)
    code, out = run(tmp_path, "nan", "--epochs", "2", *SHORT)
    assert code == 3
    err = capsys.readouterr().err
    assert "no checkpoint was written" in err and "is kept" not in err
    assert not os.path.exists(os.path.join(out, LAST))


def test_sigterm_saves_at_a_step_boundary_and_resumes_bit_exact(tmp_path, monkeypatch):
    flags = ["--epochs", "2", "--dropout", "0.1", "--crop-padding", "2", "--train-examples", "96",
             "--eval-examples", "32"]
    code, straight = run(tmp_path, "straight", *flags)
    assert code == 0
    original = T.Trainer.train_step

    def sigterm_inside_step_11(self, batch):
        if self.step == 4:  # mid-epoch: 3 steps an epoch
            os.kill(os.getpid(), signal.SIGTERM)  # arrives inside the step: held until it ends
        return original(self, batch)

    monkeypatch.setattr(T.Trainer, "train_step", sigterm_inside_step_11)
    code, broken = run(tmp_path, "broken", *flags)
    assert code == 143
    assert npvit.read_checkpoint(os.path.join(broken, LAST)).step == 5
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
    code, out = run(tmp_path, "disk", "--epochs", "2", *SHORT)
    err = one_line_error(capsys)
    assert code == 2 and os.strerror(fault) in err and LAST in err and f"--resume {out}" in err
    assert npvit.read_checkpoint(os.path.join(out, LAST)).step == 2


# --- bad input: exit 2, one line, checked before anything is built ------------------------
@pytest.mark.parametrize("flags, words", [
    (["--max-steps", "-1"], "--max-steps must be positive"),
    (["--max-steps", "0"], "--max-steps must be positive"),
    (["--image-size", "-16"], "--image-size must be positive"),
    (["--image-size", "0"], "--image-size must be positive"),
    (["--image-size", "18"], "img_size (18, 18) is not divisible by patch_size 4"),
    (["--log-every", "0"], "--log-every must be positive"),
    (["--eval-every-epochs", "0"], "--eval-every-epochs must be positive"),
    (["--eval-batch-size", "0"], "--eval-batch-size must be positive"),
    (["--crop-padding", "-1"], "--crop-padding must be >= 0"),
    (["--randaugment", "-2"], "--randaugment must be >= 0"),
    (["--randaugment-magnitude", "11"], "--randaugment-magnitude must be in [0, 10]"),
    (["--randaugment-magnitude", "nan"], "--randaugment-magnitude must be in [0, 10]"),
    (["--warmup-steps", "-5"], "--warmup-steps must be >= 0"),
    (["--warmup-epochs", "-1"], "--warmup-epochs must be >= 0"),
    (["--train-examples", "0"], "--train-examples must be positive"),
    (["--eval-examples", "-3"], "--eval-examples must be positive"),
    (["--mixup", "-0.2"], "--mixup must be >= 0"),
    (["--cutmix", "-1"], "--cutmix must be >= 0"),
    (["--clip-grad", "-1"], "--clip-grad must be >= 0"),
    (["--weight-decay", "-0.1"], "--weight-decay must be >= 0"),
    (["--weight-decay", "inf"], "--weight-decay must be >= 0"),
    (["--label-smoothing", "1"], "--label-smoothing must be in [0, 1)"),
    (["--label-smoothing", "-0.1"], "--label-smoothing must be in [0, 1)"),
    (["--lr", "nan"], "--lr must be positive, not nan"),
    (["--lr", "inf"], "--lr must be positive, not inf"),
    (["--lr", "0"], "--lr must be positive"),
    (["--min-lr", "nan"], "--min-lr must be >= 0"),
    (["--momentum", "nan"], "--momentum must be in [0, 1)"),
    (["--momentum", "1.5"], "--momentum must be in [0, 1)"),
    (["--betas", "0.9", "1.5"], "--betas must be in [0, 1)"),
    (["--mpp-mask-ratio", "0"], "--mpp-mask-ratio must be in (0, 1]"),
    (["--seed", "-1"], "--seed must be >= 0"),
    (["--mlp-ratio", "nan"], "mlp_ratio must be positive"),
    (["--dropout", "1.5"], "drop_rate must be in [0, 1)"),
    (["--num-heads", "3"], "does not split into 3 heads"),
    (["--patch-size", "0"], "patch_size must be a positive integer"),
    (["--ema", "1"], "--ema must be in [0, 1)"),
    (["--ema", "-0.5"], "--ema must be in [0, 1)"),
    (["--mode", "mpp", "--eval-flip"], "--eval-flip averages class logits"),
    (["--low-res-epochs", "-1"], "--low-res-epochs must be >= 0"),
    (["--low-res-epochs", "1", "--epochs", "2"], "--low-res-epochs 1 needs --low-res-size S"),
    (["--low-res-size", "8"], "--low-res-size 8 needs --low-res-epochs K"),
    (["--low-res-epochs", "1", "--low-res-size", "8"], "--low-res-epochs 1 must be fewer than --epochs 1"),
    (["--low-res-epochs", "1", "--low-res-size", "6", "--epochs", "2"], "--low-res-size 6 is not a multiple of the "
                                                                        "patch size 4"),
    (["--low-res-epochs", "1", "--low-res-size", "16", "--epochs", "2"], "--low-res-size 16 must be smaller than "
                                                                         "the image size 16"),
    (["--low-res-epochs", "1", "--low-res-size", "8", "--epochs", "2", "--max-steps", "8"],
     "inside its --low-res-epochs stage of 8 steps"),
    (["--low-res-epochs", "1", "--low-res-size", "8", "--epochs", "2", "--init", "x.npz"],
     "a fine-tune starts from --init's model"),
])
def test_bad_numbers_are_one_line_exit_2_before_anything_is_built(tmp_path, capsys, flags, words):
    out = tmp_path / "run"
    code = main([*TINY, "--out", str(out), "--epochs", "1", *flags])
    err = one_line_error(capsys)
    assert code == 2 and words in err, err
    assert not out.exists()  # nothing was built, so nothing was left


@pytest.mark.parametrize("flags", [["--max-steps", "ten"], ["--lr"], ["--betas", "0.9"]])
def test_malformed_flags_are_argparse_one_line_errors(capsys, flags):
    with pytest.raises(SystemExit) as e:
        main([*TINY, *flags])
    assert e.value.code == 2 and "--help" in one_line_error(capsys)


def test_help_states_every_default(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    options = re.findall(r"^  (-[^\n]*(?:\n {6,}[^\n]*)*)", text.split("\n\n", 1)[1], re.M)
    assert len(options) > 40
    for entry in options:
        if not entry.startswith("-h"):
            assert "default" in entry, entry


def test_a_failed_start_leaves_no_run_directory(tmp_path, capsys):
    out = tmp_path / "run"
    code = main([*TINY, "--out", str(out), "--batch-size", "100000"])
    assert code == 2 and "fewer than one batch" in one_line_error(capsys)
    assert not out.exists()


def test_a_batch_that_does_not_fit_in_memory_names_a_batch_size(tmp_path, capsys, monkeypatch):
    def out_of_memory(self, batch):
        raise MemoryError

    monkeypatch.setattr(T.Trainer, "train_step", out_of_memory)
    code, _ = run(tmp_path, "oom", "--epochs", "1")
    err = one_line_error(capsys)
    assert code == 2 and "out of memory; try --batch-size 16" in err


def _damaged(tmp_path, kind, good):
    """A file that is not a usable checkpoint: empty, cut in half, text, or ``good`` with a byte range garbled."""
    path = tmp_path / f"{kind}.npz"
    raw = good.read_bytes()
    path.write_bytes({"empty": b"", "truncated": raw[: len(raw) // 2], "text": b"this is not a checkpoint\n",
                      "garbled": raw[:3000] + b"\0" * 500 + raw[3500:]}[kind])
    return path


KINDS = ["empty", "truncated", "text", "garbled"]


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_checkpoints_are_one_line_for_init_and_eval_only(tmp_path, capsys, stopped_run, kind):
    path = _damaged(tmp_path, kind, stopped_run / LAST)
    capsys.readouterr()
    for flags in (["--init", str(path), "--out", str(tmp_path / "fine")], ["--eval-only", "--init", str(path)]):
        code = main([*TINY, *flags])
        err = one_line_error(capsys)
        assert code == 2 and path.name in err and "pickled" not in err
    assert not (tmp_path / "fine").exists()


@pytest.mark.parametrize("kind", KINDS)
def test_damaged_checkpoint_for_analyze_is_one_line(tmp_path, capsys, stopped_run, kind):
    from npvit.analyze import main as analyze

    path = _damaged(tmp_path, kind, stopped_run / LAST)
    capsys.readouterr()
    code = analyze([str(path), "--out", str(tmp_path / "figs")])
    assert code == 2 and path.name in one_line_error(capsys)


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A run of 2 epochs interrupted after its first epoch's checkpoint (step 8); copied by each test."""
    out = tmp_path_factory.mktemp("stopped") / "run"
    code = main([*TINY, "--out", str(out), "--epochs", "2", "--max-steps", "8", "--eval-examples", "32"])
    assert code == 0
    return out


@pytest.fixture
def run_dir(stopped_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(stopped_run, copy)
    return copy


@pytest.mark.parametrize("kind", KINDS)
def test_resume_from_a_damaged_checkpoint_is_one_line(run_dir, tmp_path, capsys, kind):
    (run_dir / LAST).write_bytes(_damaged(tmp_path, kind, run_dir / LAST).read_bytes())
    capsys.readouterr()
    code = main(["--resume", str(run_dir), "--no-progress"])
    err = one_line_error(capsys)
    assert code == 2 and LAST in err


@pytest.mark.parametrize("content", ["", '{"dataset": "synth', "[1, 2]", '{"epochs": "many", "bogus": 1}'])
def test_resume_with_a_damaged_config_json_is_one_line(run_dir, capsys, content):
    (run_dir / "config.json").write_text(content)
    code = main(["--resume", str(run_dir), "--no-progress"])
    err = one_line_error(capsys)
    assert code == 2 and "config.json" in err


def test_eval_only_with_another_number_of_classes_names_the_file(tmp_path, capsys, stopped_run):
    from PIL import Image

    out = stopped_run
    for k, cls in enumerate(["cat", "dog"]):  # a data set of 2 classes for a checkpoint of 10
        for split in ("train", "val"):
            (tmp_path / "folder" / split / cls).mkdir(parents=True)
            Image.new("RGB", (16, 16), (100 * k, 0, 0)).save(tmp_path / "folder" / split / cls / "a.png")
    capsys.readouterr()
    code = main(["--dataset", "imagefolder", "--data-dir", str(tmp_path / "folder"), "--eval-only", "--init",
                 os.path.join(out, LAST), "--no-progress"])
    err = one_line_error(capsys)
    assert code == 2 and f"{LAST} has 10 classes but imagefolder has 2" in err


# --- doing what the user meant --------------------------------------------------------------
@pytest.mark.parametrize("flags, named", [
    (["--batch-size", "16"], "--batch-size"),
    (["--seed", "3", "--mixup", "0.2"], "--mixup, --seed"),
    (["--depth", "3"], "--depth"),
    (["--dataset", "cifar10"], "--dataset"),
])
def test_resume_refuses_flags_that_would_change_the_experiment(run_dir, capsys, flags, named):
    before = (run_dir / "config.json").read_text()
    code = main(["--resume", str(run_dir), *flags])
    err = one_line_error(capsys)
    assert code == 2 and f"{named} would change it" in err
    assert (run_dir / "config.json").read_text() == before


def test_resume_takes_the_safe_flags_and_records_them(run_dir):
    assert main(["--resume", str(run_dir), "--max-steps", "12", "--lr", "5e-4", "--progress"]) == 0
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["max_steps"] == 12 and cfg["lr"] == 5e-4 and cfg["progress"] is False  # a session's flag is not kept
    assert cfg["resumed"] == [{"step": 8, "changed": {"max_steps": [8, 12], "lr": [1e-3, 5e-4]}}]
    assert npvit.read_checkpoint(os.path.join(run_dir, LAST)).step == 12
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [m["step"] for m in lines if "eval" not in m]
    assert steps == sorted(set(steps)) and steps[-1] == 12  # each step logged once


def test_resume_truncates_metrics_to_the_checkpoint(run_dir):
    with open(run_dir / "metrics.jsonl", "a") as f:  # steps a killed run logged after its last checkpoint
        f.write(json.dumps({"step": 9, "loss": 1.0}) + "\n" + json.dumps({"step": 10, "loss": 1.0}) + "\n{\"step\": 1")
    (run_dir / ".checkpoint-last.npz.abc.tmp").write_bytes(b"half a checkpoint")
    assert main(["--resume", str(run_dir), "--max-steps", "16", "--no-progress"]) == 0
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if "eval" not in m] == [4, 8, 12, 16]  # the killed run's 9 and 10 are gone
    assert [m["step"] for m in lines if "eval" in m] == [8, 16]
    assert not (run_dir / ".checkpoint-last.npz.abc.tmp").exists()


def test_a_second_process_on_the_same_run_directory_is_refused(run_dir, capsys):
    import fcntl

    with open(run_dir / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another process training there
        code = main(["--resume", str(run_dir), "--no-progress"])
    err = one_line_error(capsys)
    assert code == 2 and "another process is training in" in err


def test_resume_past_the_new_length_is_one_line(run_dir, capsys):
    code = main(["--resume", str(run_dir), "--max-steps", "4"])
    assert code == 2 and "already at step 8" in one_line_error(capsys)


def test_a_run_shorter_than_its_warmup_decays_and_says_so(tmp_path):
    code, out = run(tmp_path, "short", "--max-steps", "10", "--warmup-steps", "400", "--log-every", "1")
    assert code == 0
    cfg = json.loads(open(os.path.join(out, "config.json")).read())
    assert "scaled to 1 steps" in cfg["warmup"]
    lrs = [m["lr"] for m in [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))] if "lr" in m]
    assert max(lrs) == pytest.approx(1e-3) and lrs[-1] < 0.1 * max(lrs)  # peaked, then decayed


def test_a_finetune_config_names_the_model_it_trained(tmp_path, stopped_run):
    code, fine = run(tmp_path, "fine", "--init", os.path.join(stopped_run, LAST), "--max-steps", "2", *SHORT)
    assert code == 0
    cfg = json.loads(open(os.path.join(fine, "config.json")).read())
    tuned = npvit.read_checkpoint(os.path.join(fine, LAST)).config
    assert cfg["model_config"] == tuned.to_dict() and cfg["model"] is None  # a variant with changed widths


# --- properties: whatever the input, a documented exit code and the good checkpoint intact ---
EXIT_CODES = {0, 2, 3}
NUMERIC_FLAGS = ["--max-steps", "--image-size", "--log-every", "--crop-padding", "--randaugment", "--warmup-steps",
                 "--warmup-epochs", "--train-examples", "--eval-examples", "--mixup", "--cutmix", "--clip-grad",
                 "--weight-decay", "--label-smoothing", "--lr", "--min-lr", "--momentum", "--randaugment-magnitude",
                 "--batch-size", "--eval-batch-size", "--seed", "--mpp-mask-ratio", "--dropout", "--drop-path"]
_numbers = st.one_of(st.integers(-3, 40).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
                     st.sampled_from(["nan", "inf", "-inf", "1e309", "0", "-0.0", "1e-30", "x"]))


def _quietly(argv):
    """``main(argv)`` with stdout and stderr captured: (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:  # argparse: a value it cannot parse
            code = e.code
    return code, err.getvalue()


@settings(max_examples=10)
@given(flags=st.lists(st.tuples(st.sampled_from(NUMERIC_FLAGS), _numbers), min_size=1, max_size=3))
def test_random_flag_values_end_in_a_documented_code(flags):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run")
        argv = [*TINY, *SHORT, "--out", out, "--epochs", "1", "--max-steps", "2",
                *[part for flag, value in flags for part in (flag, value)]]
        code, err = _quietly(argv)
        assert code in EXIT_CODES and "Traceback" not in err, (argv, err)
        if code == 2:
            assert len(err.strip().splitlines()) == 1 and not os.path.exists(os.path.join(out, LAST)), err
        if code == 0:
            assert finite(os.path.join(out, LAST))


def _mutate(good: bytes, data) -> bytes:
    """Random bytes, or ``good`` cut short or with a few bytes changed."""
    how = data.draw(st.sampled_from(["random", "cut", "flip"]))
    if how == "random":
        return data.draw(st.binary(max_size=4096))
    if how == "cut":
        return good[: data.draw(st.integers(0, len(good) - 1))]
    out = bytearray(good)
    for _ in range(data.draw(st.integers(1, 8))):
        out[data.draw(st.integers(0, len(out) - 1))] ^= data.draw(st.integers(1, 255))
    return bytes(out)


@settings(max_examples=10)
@given(data=st.data(), target=st.sampled_from(["config.json", LAST]))
def test_random_bytes_in_a_run_directory_end_in_a_documented_code(stopped_run, data, target):
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = os.path.join(tmp, "run")
        shutil.copytree(stopped_run, run_dir)
        path = os.path.join(run_dir, target)
        with open(path, "rb") as f:
            good = f.read()
        with open(path, "wb") as f:
            f.write(_mutate(good, data))
        code, err = _quietly(["--resume", run_dir, "--no-progress", "--max-steps", "10"])
        assert code in EXIT_CODES and "Traceback" not in err, err
        if code == 2:
            assert len(err.strip().splitlines()) == 1, err
        assert finite(os.path.join(run_dir, "checkpoint-best.npz"))  # the good checkpoint is untouched


@settings(max_examples=10)
@given(data=st.data())
def test_random_bytes_as_an_archive_are_a_data_error_and_leave_no_extraction(data):
    from npvit.data import DataError, load_dataset

    body = _mutate(_ARCHIVE, data)
    with tempfile.TemporaryDirectory() as tmp, mock.patch.object(datasets, "_CIFAR_RECORDS", SMALL_CIFAR):
        local, cache = os.path.join(tmp, "local"), os.path.join(tmp, "cache")
        os.makedirs(local)
        with open(os.path.join(local, "cifar-10-binary.tar.gz"), "wb") as f:
            f.write(body)
        try:
            load_dataset("cifar10", data_dir=local, cache_dir=cache, download=False, progress=False)
        except DataError as e:
            assert "\n" not in str(e)
            leftovers = [p for p in glob.glob(os.path.join(cache, "**", "*"), recursive=True)]
            assert not any("cifar-10-batches-bin" in p for p in leftovers), leftovers
        for p in glob.glob(os.path.join(cache, "**", ".*"), recursive=True):
            assert not p.endswith((".extract", ".tmp", ".part")), p


def _tiny_cifar_archive() -> bytes:
    """A small archive in the official cifar-10-binary.tar.gz layout, with ``SMALL_CIFAR``'s record counts."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        files = {f"data_batch_{b}.bin": bytes(3073 * SMALL_CIFAR["data_batch"]) for b in range(1, 6)}
        files.update({"test_batch.bin": bytes(3073 * SMALL_CIFAR["test_batch"]),
                      "batches.meta.txt": b"\n".join(b"c%d" % i for i in range(10))})
        for name, payload in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


SMALL_CIFAR = {"data_batch": 2, "test_batch": 1}
_ARCHIVE = _tiny_cifar_archive()


def test_eval_only_on_resume_evaluates_the_last_checkpoint_and_refuses_other_flags(run_dir, capsys):
    assert main(["--resume", str(run_dir), "--eval-only", "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    last_eval = [m for m in (json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()) if "eval" in m]
    assert result["acc"] == pytest.approx(last_eval[-1]["acc"]) and result["examples"] == 32
    assert main(["--resume", str(run_dir), "--eval-only", "--mixup", "0.5"]) == 2
    assert "--mixup would change it" in one_line_error(capsys)


def test_image_size_resizes_an_imagefolder_of_mixed_sizes(tmp_path, capsys):
    from PIL import Image

    for k, cls in enumerate(["cat", "dog"]):
        for split, count in (("train", 4), ("val", 2)):
            for i in range(count):
                (tmp_path / "folder" / split / cls).mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (10 + 3 * i, 12 + i), (200 * k, 50, 0)).save(tmp_path / "folder" / split / cls / f"{i}.png")
    code = main(["--dataset", "imagefolder", "--data-dir", str(tmp_path / "folder"), "--image-size", "16",
                 "--model", "vit_cifar_tiny", "--embed-dim", "32", "--depth", "1", "--num-heads", "2",
                 "--batch-size", "4", "--max-steps", "2", "--no-progress", "--out", str(tmp_path / "r")],)
    assert code == 0, capsys.readouterr().err
    assert npvit.read_checkpoint(tmp_path / "r" / LAST).config.image_hw == (16, 16)


@pytest.mark.parametrize("content", ["", '{"dataset": '])
def test_analyze_with_a_damaged_config_json_is_one_line(run_dir, tmp_path, capsys, content):
    from npvit.analyze import main as analyze

    (run_dir / "config.json").write_text(content)
    code = analyze([str(run_dir), "--out", str(tmp_path / "figs")])
    assert code == 2 and "config.json" in one_line_error(capsys)
