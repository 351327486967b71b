"""The learning-curve command: accuracy against wall time from runs' metrics.jsonl."""
import json

import numpy as np
import pytest
from PIL import Image

from npvit import curves, plot


def write_run(tmp_path, name, evals, train_records=2):
    """A run directory whose metrics.jsonl has some training records and ``evals`` (elapsed_s, acc)."""
    run = tmp_path / name
    run.mkdir()
    lines = [{"step": 10 * k, "epoch": 0, "lr": 1e-3, "loss": 2.0, "images_per_s": 100.0} for k in range(train_records)]
    lines += [{"loss": 1.0, "acc": acc, "step": 100 * (k + 1), "epoch": k, "eval": True, "split": "val",
               "elapsed_s": t} for k, (t, acc) in enumerate(evals)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return str(run)


def test_read_curve_takes_the_evaluations_in_minutes_and_percent(tmp_path):
    run = write_run(tmp_path, "a", [(60.0, 0.4), (150.0, 0.55)])
    assert curves.read_curve(run) == ([1.0, 2.5], [40.0, 55.00000000000001], "val")
    assert curves.read_curve(run, x="step")[0] == [100.0, 200.0]


def test_the_command_draws_one_curve_per_run_with_lines_between_points(tmp_path):
    a = write_run(tmp_path, "seed0", [(60.0, 0.40), (600.0, 0.70)])
    b = write_run(tmp_path, "seed1", [(60.0, 0.45), (600.0, 0.72)])
    out = tmp_path / "fig" / "curve.png"
    assert curves.main([a, b, "--out", str(out), "--target", "75"]) == 0
    img = np.asarray(Image.open(out).convert("RGB"))
    pixels = set(map(tuple, img.reshape(-1, 3).tolist()))
    assert plot.PALETTE[0] in pixels and plot.PALETTE[1] in pixels
    # a curve, not only two dots: the first series' colour runs across many columns of the frame
    columns = np.nonzero((img == plot.PALETTE[0]).all(axis=-1).any(axis=0))[0]
    assert columns.max() - columns.min() > 200
    assert not list(tmp_path.joinpath("fig").glob(".*tmp"))  # written atomically, nothing left behind


@pytest.mark.parametrize("make, says", [
    (lambda p: str(p / "missing"), "has no metrics.jsonl"),
    (lambda p: write_run(p, "fresh", []), "no evaluation"),
    (lambda p: (write_run(p, "old", [(1.0, 0.5)]), (p / "old" / "metrics.jsonl").write_text(
        json.dumps({"acc": 0.5, "step": 1, "eval": True}) + "\n"))[0], "elapsed_s"),
    (lambda p: (write_run(p, "bad", [(1.0, 0.5)]), (p / "bad" / "metrics.jsonl").write_text("{not json\n"))[0],
     "not JSON"),
])
def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, make, says):
    run = make(tmp_path)
    assert curves.main([run, "--out", str(tmp_path / "c.png")]) == 2
    err = capsys.readouterr().err
    assert says in err and err.count("\n") == 1 and not (tmp_path / "c.png").exists()
