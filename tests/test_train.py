"""train.py end to end on the synthetic data set: every mode, resume, errors, and a model that learns."""
import json
import os

import numpy as np
import pytest

import npvit
from npvit import recipes as R
from npvit import trainer as T
from npvit.cli import main

# A ViT small enough for a few dozen CPU steps a second: 16x16 images, 4x4 patches, D=32.
TINY = ["--dataset", "synthetic", "--model", "vit_cifar_tiny", "--embed-dim", "32", "--depth", "2",
        "--num-heads", "2", "--image-size", "16", "--batch-size", "32", "--eval-examples", "128",
        "--train-examples", "256", "--no-progress", "--log-every", "4"]


def run(tmp_path, name, *flags):
    """Run train.py in-process with TINY plus ``flags``; return (exit code, run dir)."""
    out = str(tmp_path / name)
    return main([*TINY, "--out", out, *flags]), out


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def params(path):
    return {k: v for k, v in npvit.read_checkpoint(path).state.items()}


def test_supervised_run_writes_the_run_directory_and_learns(tmp_path):
    code, out = run(tmp_path, "sup", "--epochs", "3", "--lr", "2e-3")
    assert code == 0
    for name in ("config.json", "metrics.jsonl", "checkpoint-last.npz", "checkpoint-best.npz", "summary.json"):
        assert os.path.exists(os.path.join(out, name)), name
    steps = [m for m in metrics(out) if "eval" not in m]
    evals = [m for m in metrics(out) if "eval" in m]
    assert len(evals) == 3
    assert steps[-1]["loss"] < steps[0]["loss"] * 0.8
    assert evals[-1]["acc"] > 0.5  # 10 classes: chance is 0.1
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["optimizer"] == "adamw" and cfg["model_overrides"]["embed_dim"] == 32


def test_pretrain_then_finetune_at_a_larger_image_size(tmp_path):
    code, pre = run(tmp_path, "pre", "--mode", "pretrain", "--epochs", "1")
    assert code == 0
    model = npvit.load_checkpoint(os.path.join(pre, "checkpoint-last.npz"))
    assert model.cfg.representation_size == 32  # the paper's pre-training head has a tanh layer
    code, fine = run(tmp_path, "fine", "--init", os.path.join(pre, "checkpoint-last.npz"), "--image-size", "24",
                     "--epochs", "2")
    assert code == 0
    with open(os.path.join(fine, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["mode"] == "finetune" and cfg["optimizer"] == "sgd" and cfg["weight_decay"] == 0.0
    tuned = npvit.load_checkpoint(os.path.join(fine, "checkpoint-last.npz"))
    assert tuned.cfg.image_hw == (24, 24) and tuned.cfg.representation_size is None
    assert tuned.pos_embed.shape == (1, 1 + 6 * 6, 32)  # the 4x4 grid interpolated to 6x6
    steps = [m for m in metrics(fine) if "eval" not in m]
    assert steps[-1]["loss"] < steps[0]["loss"]


@pytest.mark.parametrize("target", ["mean_color", "patch_color", "pixels"])
def test_masked_patch_prediction_then_finetune(tmp_path, target):
    code, pre = run(tmp_path, "mpp", "--mode", "mpp", "--mpp-target", target, "--epochs", "2", "--lr", "2e-3")
    assert code == 0
    steps = [m for m in metrics(pre) if "eval" not in m]
    assert steps[-1]["loss"] < steps[0]["loss"]
    code, fine = run(tmp_path, "fine", "--init", os.path.join(pre, "checkpoint-last.npz"), "--epochs", "1")
    assert code == 0
    tuned = npvit.load_checkpoint(os.path.join(fine, "checkpoint-last.npz"))
    assert tuned.cfg.num_classes == 10 and tuned.cfg.mpp_target is None


def test_eval_only(tmp_path, capsys):
    code, out = run(tmp_path, "sup", "--epochs", "1")
    assert code == 0
    capsys.readouterr()
    code = main(["--dataset", "synthetic", "--image-size", "16", "--eval-only", "--eval-examples", "128",
                 "--init", os.path.join(out, "checkpoint-best.npz"), "--no-progress"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    best = max(m["acc"] for m in metrics(out) if "eval" in m)
    assert result["examples"] == 128 and result["acc"] == pytest.approx(best)


def test_interrupted_and_resumed_run_ends_with_the_same_parameters(tmp_path, monkeypatch):
    flags = ["--epochs", "2", "--drop-path", "0.1", "--dropout", "0.1", "--crop-padding", "2", "--mixup", "0.5"]
    code, straight = run(tmp_path, "straight", *flags)
    assert code == 0

    original = T.Trainer.train_step

    def interrupt_at_step_11(self, batch):
        if self.step == 11:  # mid-epoch: 8 steps per epoch
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(T.Trainer, "train_step", interrupt_at_step_11)
    code, broken = run(tmp_path, "broken", *flags)
    assert code == 130
    assert npvit.read_checkpoint(os.path.join(broken, "checkpoint-last.npz")).step == 11
    monkeypatch.setattr(T.Trainer, "train_step", original)
    assert main(["--resume", broken, "--no-progress"]) == 0

    a = params(os.path.join(straight, "checkpoint-last.npz"))
    b = params(os.path.join(broken, "checkpoint-last.npz"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_overfits_a_tiny_set_to_full_training_accuracy():
    cfg = R.resolve(R.TrainConfig(
        dataset="synthetic", model="vit_cifar_tiny", image_size=16, batch_size=16, train_examples=16,
        eval_examples=16, epochs=150, lr=2e-3, warmup_steps=10, weight_decay=0.0, label_smoothing=0.0,
        model_overrides=dict(embed_dim=32, depth=2, num_heads=2), progress=False, log_every=1000,
    ))
    trainer = T.Trainer(cfg)
    trainer.fit()
    trainer.model.eval()
    x = trainer.augment.prepare(trainer.train_set.x)
    predictions = trainer.model(x).data.argmax(axis=-1)
    assert (predictions == trainer.train_set.y).mean() == 1.0


def test_cifar10_defaults_follow_the_device():
    cpu = R.resolve(R.TrainConfig(dataset="cifar10", device="cpu"))
    gpu = R.resolve(R.TrainConfig(dataset="cifar10", device="gpu"))
    assert (cpu.model, cpu.epochs, cpu.rand_ops, cpu.warmup_steps) == ("vit_cifar_mini", 12, 0, 400)
    assert (gpu.model, gpu.epochs, gpu.warmup_steps) == ("vit_cifar_tiny", 100, None)
    # what the user says wins, and other modes keep their own recipe
    assert R.resolve(R.TrainConfig(dataset="cifar10", device="cpu", model="vit_cifar_tiny")).model == "vit_cifar_tiny"
    assert R.resolve(R.TrainConfig(dataset="cifar10", device="cpu", mode="mpp")).model == "vit_cifar_tiny"


def test_val_split_evaluates_on_held_out_training_images(tmp_path, capsys):
    cfg = R.resolve(R.TrainConfig(dataset="synthetic", val_split=40, train_examples=100, eval_examples=30))
    full = T.load_dataset("synthetic", "train", image_size=32)
    train, val = T.load_data(cfg)
    assert val.split == "val" and len(train.y) == 100 and len(val.y) == 30
    np.testing.assert_array_equal(val.x, full.x[-40:][:30])  # the last 40 training images, not the test split
    np.testing.assert_array_equal(train.x, full.x[:100])
    assert (val.mean, val.std) == (full.mean, full.std)

    code, out = run(tmp_path, "r", "--epochs", "1", "--val-split", "64")
    printed = capsys.readouterr().out
    assert code == 0 and "val acc" in printed and "best val accuracy" in printed and "test acc" not in printed
    assert [m["split"] for m in metrics(out) if m.get("eval")] == ["val"]


def test_a_val_split_as_large_as_the_training_set_is_refused(tmp_path, capsys):
    full = len(T.load_dataset("synthetic", "train", image_size=16).y)
    code = main([*TINY, "--out", str(tmp_path / "r"), "--val-split", str(full)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--val-split" in err and "hold out fewer" in err and len(err.splitlines()) == 1


def test_config_json_says_where_the_recipe_is_not_the_papers(tmp_path):
    code, out = run(tmp_path, "r", "--epochs", "1", "--warmup-steps", "3")
    assert code == 0
    with open(os.path.join(out, "config.json")) as f:
        differs = json.load(f)["differs_from_paper"]
    assert differs["batch_size"]["paper"] == 4096 and differs["batch_size"]["here"] != 4096
    assert differs["warmup_steps"] == {"paper": 10_000, "here": 3, "why": differs["warmup_steps"]["why"]}
    assert all(entry["why"] for entry in differs.values())
    # a setting given at the paper's value is not listed; warmup in epochs is named as such
    paper_like = R.resolve(R.TrainConfig(dataset="cifar10", mode="mpp", batch_size=4096))
    differs = R.paper_differences(paper_like)
    assert "batch_size" not in differs and differs["warmup_steps"]["here"] == "2 epochs"
    assert R.paper_differences(R.resolve(R.TrainConfig(dataset="cifar10", mode="finetune", init="x.npz",
                                                       warmup_steps=500))) == {}


@pytest.mark.parametrize("flags, message", [
    (["--dataset", "nope"], "unknown data set"),
    (["--epochs", "0"], "--epochs must be positive"),
    (["--model", "vit_nope"], "unknown model"),
    (["--init", "/nonexistent/ckpt.npz"], "does not exist"),
    (["--mode", "finetune"], "needs a checkpoint"),
    (["--device", "tpu"], "unknown device"),
    (["--batch-size", "100000"], "fewer than one batch"),
])
def test_user_errors_are_one_line_and_exit_2(tmp_path, capsys, flags, message):
    code = main([*TINY, "--out", str(tmp_path / "r"), "--epochs", "1", *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_bad_flag_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--no-such-flag"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "--help" in err


def test_a_checkpoint_that_does_not_fit_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.npz"
    np.savez(bad, **{"patch_embed.proj.weight": np.zeros((32, 3, 4, 4), np.float32)})
    code = main([*TINY, "--out", str(tmp_path / "r"), "--init", str(bad)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "bad.npz" in err and len(err.splitlines()) == 1


def test_resuming_a_finished_directory_is_refused_for_a_new_run(tmp_path, capsys):
    code, out = run(tmp_path, "r", "--epochs", "1")
    assert code == 0
    code, _ = run(tmp_path, "r", "--epochs", "1")
    assert code == 2 and "--resume" in capsys.readouterr().err


def test_non_finite_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch):
    original = T.Trainer.loss_and_metrics

    def nan_in_epoch_two(self, x, y, gen):
        loss, correct, count = original(self, x, y, gen)
        return (loss * float("nan") if self.step >= 9 else loss), correct, count

    monkeypatch.setattr(T.Trainer, "loss_and_metrics", nan_in_epoch_two)
    code, out = run(tmp_path, "nan", "--epochs", "2")
    assert code == 3
    err = capsys.readouterr().err
    assert "step 9" in err and "checkpoint-last.npz is kept" in err
    kept = npvit.read_checkpoint(os.path.join(out, "checkpoint-last.npz"))
    assert kept.step == 8 and all(np.isfinite(v).all() for v in kept.state.values())
