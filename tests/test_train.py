"""train.py end to end on the synthetic data set: every mode, resume, errors, and a model that learns."""
import json
import os

import numpy as np
import pytest

import npvit
from npvit import pos_embed as pe
from npvit import recipes as R
from npvit import trainer as T
from npvit.cli import main
from npvit.data import Augment, load_dataset

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
def test_masked_patch_prediction_then_finetune(tmp_path, capsys, target):
    code, pre = run(tmp_path, "mpp", "--mode", "mpp", "--mpp-target", target, "--epochs", "2", "--lr", "2e-3")
    assert code == 0
    epoch_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    # the colour targets report how many patches are right; the pixel target has only its loss
    assert len(epoch_lines) == 2 and all(("test acc 0." in line) == (target != "pixels") for line in epoch_lines)
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
    saved = npvit.read_checkpoint(os.path.join(broken, "checkpoint-last.npz"))
    assert saved.step == 11
    monkeypatch.setattr(T.Trainer, "train_step", original)
    assert main(["--resume", broken, "--no-progress"]) == 0

    a = params(os.path.join(straight, "checkpoint-last.npz"))
    b = params(os.path.join(broken, "checkpoint-last.npz"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    # the run's wall clock goes on from the checkpoint's, so a resumed curve does not restart at zero
    clock = [m["elapsed_s"] for m in metrics(broken)]
    assert all(t > 0 for t in clock) and clock == sorted(clock)
    assert min(m["elapsed_s"] for m in metrics(broken) if m["step"] > 11) > saved.extra["elapsed_s"] > 0


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
    # the hour recipe: 68 epochs, the first 54 at 16x16, with mixup
    assert (cpu.model, cpu.epochs, cpu.rand_ops, cpu.warmup_steps, cpu.mixup) == ("vit_cifar_mini", 68, 0, 400, 0.2)
    assert (cpu.low_res_epochs, cpu.low_res_size) == (54, 16)
    assert (gpu.mixup, R.resolve(R.TrainConfig(dataset="cifar100", device="cpu")).mixup) == (0.0, 0.0)
    assert (gpu.model, gpu.epochs, gpu.warmup_steps, gpu.low_res_epochs, gpu.low_res_size) == (
        "vit_cifar_tiny", 100, None, 0, None)
    assert R.resolve(R.TrainConfig(dataset="cifar100", device="cpu")).low_res_epochs == 0
    # what the user says wins; the low-resolution stage follows --epochs, and goes with another model or size
    tiny = R.resolve(R.TrainConfig(dataset="cifar10", device="cpu", model="vit_cifar_tiny"))
    assert (tiny.model, tiny.low_res_epochs, tiny.low_res_size) == ("vit_cifar_tiny", 0, None)
    short = R.resolve(R.TrainConfig(dataset="cifar10", device="cpu", epochs=3))
    assert (short.epochs, short.low_res_epochs, short.low_res_size) == (3, 2, 16)
    same = dict(dataset="cifar10", device="cpu")
    assert R.resolve(R.TrainConfig(**same, epochs=1)).low_res_epochs == 0
    assert R.resolve(R.TrainConfig(**same, model="vit_cifar_mini")).low_res_epochs == 54
    for changed in (dict(max_steps=50), dict(image_size=48), dict(model_overrides={"patch_size": 8}),
                    dict(low_res_epochs=0)):
        cfg = R.resolve(R.TrainConfig(**same, **changed))
        assert (cfg.low_res_epochs, cfg.low_res_size) == (0, None), changed
    assert (R.resolve(R.TrainConfig(**same, low_res_size=8)).low_res_epochs,
            R.resolve(R.TrainConfig(**same, low_res_size=8)).low_res_size) == (54, 8)
    with pytest.raises(R.TrainError, match="needs --low-res-size"):  # a stage of one's own says its size
        R.resolve(R.TrainConfig(**same, low_res_epochs=5))
    # a config.json written before --low-res-epochs existed is a run without the stage, not the recipe's
    old = R.resolve(R.TrainConfig(dataset="cifar10", device="cpu", low_res_epochs=0)).to_dict()
    del old["low_res_epochs"]
    assert R.TrainConfig.from_dict(old).low_res_epochs == 0


@pytest.mark.parametrize("mode, dataset, epochs", [("pretrain", "tiny-imagenet", 10), ("mpp", "tiny-imagenet", 9),
                                                   ("pretrain", "cifar10", 20), ("supervised", "tiny-imagenet", 10)])
def test_every_mode_has_an_hour_sized_cpu_default_and_keeps_its_recipe(mode, dataset, epochs):
    cpu = R.resolve(R.TrainConfig(dataset=dataset, device="cpu", mode=mode))
    gpu = R.resolve(R.TrainConfig(dataset=dataset, device="gpu", mode=mode))
    assert (cpu.model, cpu.epochs, cpu.rand_ops) == ("vit_cifar_mini", epochs, 0)
    assert gpu.model == "vit_cifar_tiny" and gpu.epochs > 2 * epochs
    # the mode's own recipe (optimizer, rate, schedule) is the same on both devices
    assert (cpu.optimizer, cpu.lr, cpu.schedule) == (gpu.optimizer, gpu.lr, gpu.schedule)
    # fine-tuning keeps its checkpoint's model and its 10 epochs on the CPU too
    tune = R.resolve(R.TrainConfig(dataset=dataset, device="cpu", mode="finetune", init="x.npz"))
    assert tune.epochs == 10


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

    # --eval-only scores a checkpoint on the same held-out images, never on the test split
    last = [m for m in metrics(out) if m.get("eval")][-1]
    for flags in (["--dataset", "synthetic", "--image-size", "16", "--val-split", "64", "--init",
                   os.path.join(out, "checkpoint-last.npz")], ["--resume", out]):
        assert main([*flags, "--eval-only", "--no-progress"]) == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert result["split"] == "val" and result["examples"] == 64
        assert result["loss"] == pytest.approx(last["loss"]) and result["acc"] == pytest.approx(last["acc"])


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


# --- the CPU recipe's tools: the weights' moving average, mirrored evaluation, a low-resolution stage --------
LAST = "checkpoint-last.npz"


def test_ema_is_what_evaluations_and_loading_use_and_it_is_not_the_trained_weights(tmp_path, capsys):
    code, out = run(tmp_path, "ema", "--epochs", "2", "--ema", "0.9")
    assert code == 0
    evals = [m for m in metrics(out) if "eval" in m]
    assert [m["weights"] for m in evals] == ["ema", "ema"] and all(np.isfinite(m["loss"]) for m in evals)
    last = os.path.join(out, LAST)
    ck = npvit.read_checkpoint(last)
    averaged, trained = npvit.load_checkpoint(last), npvit.load_checkpoint(last, ema=False)
    assert ck.ema.keys() == {name for name, _ in averaged.named_parameters()}
    assert any(not np.array_equal(ck.ema[k], ck.state[k]) for k in ck.ema)
    for k, v in averaged.state_dict().items():
        np.testing.assert_array_equal(v, ck.ema.get(k, ck.state[k]), err_msg=k)
    for k, v in trained.state_dict().items():
        np.testing.assert_array_equal(v, ck.state[k], err_msg=k)
    capsys.readouterr()
    assert main(["--dataset", "synthetic", "--image-size", "16", "--eval-only", "--eval-examples", "128",
                 "--init", last, "--no-progress"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["loss"] == pytest.approx(evals[-1]["loss"])  # --eval-only scores the average, as the run did
    test = load_dataset("synthetic", "test", image_size=16)
    raw = T.evaluate_model(trained, test.x[:128], test.y[:128], Augment(test.mean, test.std, test.num_classes), 500)
    assert np.isfinite(raw["loss"]) and raw["loss"] != pytest.approx(result["loss"])


def test_eval_flip_scores_the_mean_of_the_logits_of_each_image_and_its_mirror():
    rng = np.random.default_rng(0)
    model = npvit.create_model("vit_cifar_tiny", img_size=16, embed_dim=32, depth=1, num_heads=2).eval()
    model.head.weight.data[...] = rng.standard_normal(model.head.weight.shape)  # a zero head sees no mirror
    x = rng.standard_normal((6, 3, 16, 16)).astype(np.float32)
    labels = rng.integers(0, 10, 6)
    loss, correct, _ = T.classification_loss(model, x, labels, labels, None, flip=True)
    logits = (model(x).data.astype(np.float64) + model(x[..., ::-1].copy()).data) / 2
    log_p = logits - logits.max(-1, keepdims=True)
    log_p -= np.log(np.exp(log_p).sum(-1, keepdims=True))
    np.testing.assert_allclose(float(loss.data), -log_p[np.arange(6), labels].mean(), rtol=1e-5)
    assert int(correct) == (logits.argmax(-1) == labels).sum()
    plain, _, _ = T.classification_loss(model, x, labels, labels, None)
    assert float(plain.data) != pytest.approx(float(loss.data))


def test_a_low_res_stage_ends_at_the_full_grid_and_the_loss_goes_on_down_across_the_switch(tmp_path):
    code, out = run(tmp_path, "low", "--epochs", "3", "--lr", "2e-3", "--low-res-epochs", "1",
                    "--low-res-size", "8", "--eval-flip")
    assert code == 0
    for name in (LAST, "checkpoint-best.npz"):
        model = npvit.load_checkpoint(os.path.join(out, name))
        assert model.cfg.image_hw == (16, 16) and model.pos_embed.shape == (1, 1 + 4 * 4, 32), name
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    assert cfg["eval_flip"] is True and cfg["low_res_epochs"] == 1 and cfg["model_config"]["img_size"] == 16
    assert [m["image_size"] for m in metrics(out) if "eval" in m] == [8, 16, 16]
    steps = [m for m in metrics(out) if "eval" not in m]
    low, full = [m["loss"] for m in steps if m["step"] <= 8], [m["loss"] for m in steps if m["step"] > 8]
    assert full[0] < low[0] and full[-1] < low[-1]


@pytest.mark.parametrize("kind, name", [("1d", "pos_embed"), ("relative", "blocks.0.rel_pos_embed_1d")])
def test_the_switch_to_full_size_resizes_the_positions_their_average_and_their_moments(kind, name):
    cfg = R.resolve(R.TrainConfig(
        dataset="synthetic", model="vit_cifar_tiny", image_size=16, batch_size=32, train_examples=128,
        eval_examples=32, epochs=2, low_res_epochs=1, low_res_size=8, ema=0.9, progress=False,
        model_overrides=dict(embed_dim=32, depth=2, num_heads=2, pos_embed=kind)))
    trainer = T.Trainer(cfg)
    for index in range(4):  # the low-resolution epoch
        trainer.train_step(trainer.loader.batch(0, index, trainer.positions))
    i = trainer.param_names.index(name)
    p, state = trainer.optimizer.flat.params[i], trainer.optimizer.state[i]
    short = name.rsplit(".", 1)[-1]
    grids = ((2, 2), (4, 4), 1)
    weights = pe.resize(short, p.data, *grids, "bicubic")  # as fine-tuning resizes our checkpoints
    average = pe.resize(short, trainer.ema.arrays()[i], *grids, "bicubic")
    moments = {k: pe.resize(short, state[k], *grids, "bilinear") for k in ("exp_avg", "exp_avg_sq")}
    trainer.enter_full_size()
    assert trainer.model.cfg.grid_size == (4, 4) and trainer.augment.image_size is None
    np.testing.assert_array_equal(p.data, weights)
    np.testing.assert_array_equal(trainer.ema.arrays()[i], average)
    for k, v in moments.items():
        np.testing.assert_array_equal(trainer.optimizer.state[i][k], v, err_msg=k)
    assert (trainer.optimizer.state[i]["exp_avg_sq"] >= 0).all()
    before = trainer.model.state_dict()
    trainer.train_step(trainer.loader.batch(1, 0, trainer.positions))  # a full-size step moves every parameter
    # but the last block's relative table: it biases only patch queries, which [class] pooling never reads
    still = [] if kind == "1d" else ["blocks.1.rel_pos_embed_1d"]
    assert [k for k, v in trainer.model.state_dict().items() if np.array_equal(v, before[k])] == still


def test_ema_and_a_low_res_stage_resume_exactly_before_at_and_after_the_switch(tmp_path, monkeypatch):
    flags = ["--epochs", "2", "--low-res-epochs", "1", "--low-res-size", "8", "--ema", "0.9", "--drop-path", "0.1",
             "--train-examples", "128", "--eval-examples", "32"]
    code, straight = run(tmp_path, "straight", *flags)
    assert code == 0
    want = npvit.read_checkpoint(os.path.join(straight, LAST))
    original = T.Trainer.train_step
    for stop in (2, 4, 6):  # 4 steps an epoch: step 4 is the first at full size
        def interrupt(self, batch, stop=stop):
            if self.step == stop:
                raise KeyboardInterrupt
            return original(self, batch)

        monkeypatch.setattr(T.Trainer, "train_step", interrupt)
        code, broken = run(tmp_path, f"broken-{stop}", *flags)
        assert code == 130
        stopped = npvit.read_checkpoint(os.path.join(broken, LAST))
        assert stopped.step == stop and stopped.config.image_hw == ((8, 8) if stop <= 4 else (16, 16))
        monkeypatch.setattr(T.Trainer, "train_step", original)
        assert main(["--resume", broken, "--no-progress"]) == 0
        got = npvit.read_checkpoint(os.path.join(broken, LAST))
        for name in ("state", "ema"):
            a, b = getattr(want, name), getattr(got, name)
            assert a.keys() == b.keys()
            for k in a:
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{stop} {name} {k}")
        for k, v in want.optimizer_state["state"].items():
            np.testing.assert_array_equal(v, got.optimizer_state["state"][k], err_msg=f"{stop} {k}")
