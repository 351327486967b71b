"""Mixed precision (autograd/precision.py) on the CPU: 16-bit products, the loss scale, and fp16 runs.

The products' rule is checked op by op against the same ops computed by hand in float16;
the loss scale's rule (torch.cuda.amp.GradScaler's) on its own and inside the trainer
(a forced overflow skips the step and halves the scale, good steps grow it); and whole
fp16 runs train, come near the float32 run, and resume bit for bit with the scale.
Gradient checks stay in float64, which ``lower`` never touches.
"""
import functools
import json
import os
import sys

import numpy as np
import pytest

import npvit
from autograd import Tensor, ops, precision
from npvit import recipes
from npvit import trainer as T
from npvit.cli import main

TINY = ["--dataset", "synthetic", "--model", "vit_cifar_tiny", "--embed-dim", "16", "--depth", "2",
        "--num-heads", "2", "--image-size", "16", "--batch-size", "16", "--eval-examples", "32",
        "--train-examples", "64", "--no-progress", "--log-every", "1"]


def _r(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _trainer(**overrides):
    settings = dict(dataset="synthetic", model="vit_cifar_tiny", batch_size=8, train_examples=16, eval_examples=8,
                    image_size=16, precision="fp16", progress=False, model_overrides=dict(embed_dim=16, depth=1,
                                                                                         num_heads=2))
    return T.Trainer(recipes.resolve(recipes.TrainConfig(**{**settings, **overrides})))


def _steps(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if "eval" not in line]


# --- the products ------------------------------------------------------------------------
def test_outside_autocast_and_for_float64_lower_hands_back_the_very_arrays():
    a, b = _r(2, 3), _r(3, 4)
    assert precision.lower(a, b)[0] is a
    with precision.autocast(np.float16):
        assert precision.lower(a.astype(np.float64), b)[0].dtype == np.float64  # mixed: left alone
        low = precision.lower(a, b)
    assert [x.dtype for x in low] == [np.float16, np.float16]
    assert precision.lower(a, b)[1] is b  # the context is over


def test_linear_multiplies_in_float16_and_gives_float32_values_and_gradients():
    x, w, bias = _r(5, 3), _r(4, 3, seed=1), _r(4, seed=2)
    xt, wt, bt = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True), Tensor(bias, requires_grad=True)
    with precision.autocast(np.float16):
        out = ops.linear(xt, wt, bt)
    g = _r(5, 4, seed=3)
    out.backward(g)  # after the context: the backward keeps the forward's precision
    h = np.float16
    assert out.dtype == xt.grad.dtype == wt.grad.dtype == np.float32
    np.testing.assert_array_equal(out.data, (x.astype(h) @ w.T.astype(h)).astype(np.float32) + bias)
    np.testing.assert_array_equal(xt.grad, (g.astype(h) @ w.astype(h)).astype(np.float32))
    np.testing.assert_array_equal(wt.grad, (g.T.astype(h) @ x.astype(h)).astype(np.float32))
    assert not np.array_equal(wt.grad, g.T @ x)  # float16 is not float32


def test_attention_multiplies_in_float16_and_keeps_the_softmax_in_float32():
    q, k, v = (Tensor(_r(2, 4, 8, seed=i), requires_grad=True) for i in range(3))
    with precision.autocast(np.float16):
        out = ops.scaled_dot_product_attention(q, k, v)
        weights = ops.attention_weights(q, k)
    out.sum().backward()
    h = np.float16
    s = (q.data.astype(h) @ k.data.swapaxes(-1, -2).astype(h)).astype(np.float32) * 8 ** -0.5
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(weights.data, p, rtol=1e-6)
    np.testing.assert_allclose(out.data, (p.astype(h) @ v.data.astype(h)).astype(np.float32), rtol=1e-6)
    assert all(t.grad.dtype == np.float32 and np.isfinite(t.grad).all() for t in (q, k, v))
    np.testing.assert_array_equal(v.grad, (p.swapaxes(-1, -2).astype(h) @ np.ones((2, 4, 8), h)).astype(np.float32))


@pytest.mark.parametrize("op", ["matmul", "conv2d"])
def test_matmul_and_conv2d_come_near_float32_under_float16(op):
    a, b = (_r(2, 3, 5), _r(5, 4, seed=1)) if op == "matmul" else (_r(2, 3, 6, 6), _r(4, 3, 3, 3, seed=1))
    fn = ops.matmul if op == "matmul" else functools.partial(ops.conv2d, padding=1)

    def run():
        ta, tb = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
        out = fn(ta, tb)
        out.sum().backward()
        return out.data, ta.grad, tb.grad

    full = run()
    with precision.autocast(np.float16):
        half = run()
    for f, h in zip(full, half):
        assert h.dtype == np.float32 and not np.array_equal(f, h)
        np.testing.assert_allclose(h, f, rtol=2e-2, atol=2e-2)


# --- the loss scale --------------------------------------------------------------------------
def test_the_scale_halves_on_an_overflow_and_doubles_after_the_interval_of_good_steps():
    scaler = precision.GradScaler(np, growth_interval=3)
    assert float(scaler.scale) == 2.0**16
    for ok in (True, True, False, True, True):
        scaler.update(np.bool_(ok))
    assert float(scaler.scale) == 2.0**15 and int(scaler.good_steps) == 2  # the bad step reset the count
    scaler.update(np.bool_(True))
    assert float(scaler.scale) == 2.0**16 and int(scaler.good_steps) == 0
    assert scaler.scale.dtype == np.float32 and scaler.good_steps.dtype == np.int32
    grads = [np.full(3, 2.0**16, np.float32)]
    scaler.unscale(grads)
    np.testing.assert_array_equal(grads[0], 1.0)
    again = precision.GradScaler(np)
    again.load_state_dict(np, scaler.state_dict())
    assert again.state_dict() == {"scale": 2.0**16, "good_steps": 0}


def test_a_forced_overflow_skips_the_step_and_halves_the_scale():
    trainer = _trainer()
    trainer.train_step(trainer.loader.batch(0, 0, trainer.positions))  # the optimizer's state exists
    params = {k: v.copy() for k, v in trainer.model.state_dict().items()}
    state = {k: np.copy(v) for k, v in trainer.optimizer.state_dict()["state"].items()}
    trainer.scaler.scale = np.asarray(np.float32(2.0**100))  # every float16 gradient overflows
    trainer.train_step(trainer.loader.batch(0, 1, trainer.positions))  # no NonFiniteLoss: the run goes on
    assert float(trainer.scaler.scale) == 2.0**99 and int(trainer.scaler.good_steps) == 0
    for k, v in trainer.model.state_dict().items():
        np.testing.assert_array_equal(v, params[k], err_msg=k)
    for k, v in trainer.optimizer.state_dict()["state"].items():
        np.testing.assert_array_equal(v, state[k], err_msg=k)
    trainer.scaler.scale = np.asarray(np.float32(2.0**16))
    trainer.train_step(trainer.loader.batch(1, 0, trainer.positions))  # a good step updates again
    assert any(not np.array_equal(v, params[k]) for k, v in trainer.model.state_dict().items())
    trainer.check_finite()


def test_good_steps_grow_the_scale_in_the_trainer():
    trainer = _trainer()
    trainer.scaler = precision.GradScaler(np, init_scale=2.0**4, growth_interval=2)  # too small to overflow
    for step in range(4):
        trainer.train_step(trainer.loader.batch(*divmod(step, 2), trainer.positions))
    assert float(trainer.scaler.scale) == 2.0**6 and int(trainer.scaler.good_steps) == 0


def test_a_non_finite_loss_still_stops_an_fp16_run(monkeypatch):
    trainer = _trainer()
    original = T.Trainer.loss_and_metrics
    monkeypatch.setattr(T.Trainer, "loss_and_metrics",
                        lambda self, x, y, gen: (lambda r: (r[0] * float("nan"), *r[1:]))(original(self, x, y, gen)))
    with pytest.raises(T.NonFiniteLoss, match="the loss became nan at step 0$"):
        trainer.train_step(trainer.loader.batch(0, 0, trainer.positions))


# --- whole runs ----------------------------------------------------------------------------------
def test_an_fp16_run_trains_and_comes_near_the_float32_run(tmp_path):
    runs = {}
    for name in ("fp32", "fp16"):
        out = str(tmp_path / name)
        assert main([*TINY, "--epochs", "3", "--precision", name, "--out", out]) == 0
        runs[name] = [m["loss"] for m in _steps(out)]
        with open(os.path.join(out, "config.json")) as f:
            assert json.load(f)["precision"] == name
    half = runs["fp16"]
    assert np.mean(half[-3:]) < np.mean(half[:3]) - 0.03  # it learns
    np.testing.assert_allclose(half, runs["fp32"], atol=5e-3)  # and as float32 does, to float16's rounding
    assert half != runs["fp32"]


def test_an_interrupted_fp16_run_resumes_bit_for_bit_with_its_loss_scale(tmp_path, monkeypatch):
    # a short growth interval so that the scale grows, and at 2**20 overflows, within the run
    monkeypatch.setattr(T.precision, "GradScaler", functools.partial(precision.GradScaler, growth_interval=2))
    flags = [*TINY, "--epochs", "3", "--precision", "fp16", "--dropout", "0.1"]
    straight, broken = str(tmp_path / "straight"), str(tmp_path / "broken")
    assert main([*flags, "--out", straight]) == 0
    original = T.Trainer.train_step

    def interrupt_at_step_5(self, batch):
        if self.step == 5:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(T.Trainer, "train_step", interrupt_at_step_5)
    assert main([*flags, "--out", broken]) == 130
    monkeypatch.setattr(T.Trainer, "train_step", original)
    assert npvit.read_checkpoint(os.path.join(broken, "checkpoint-last.npz")).extra["grad_scaler"] != \
        {"scale": 2.0**16, "good_steps": 0}
    assert main(["--resume", broken, "--no-progress"]) == 0
    a, b = (npvit.read_checkpoint(os.path.join(d, "checkpoint-last.npz")) for d in (straight, broken))
    assert a.extra["grad_scaler"] == b.extra["grad_scaler"]
    assert a.extra["grad_scaler"]["scale"] < 2.0 ** (16 + 12 // 2)  # less than 12 good steps give: some were skipped
    for k in a.state:
        np.testing.assert_array_equal(a.state[k], b.state[k], err_msg=k)
    for k, v in a.optimizer_state["state"].items():
        np.testing.assert_array_equal(v, b.optimizer_state["state"][k], err_msg=k)
    clocks = ("images_per_s", "elapsed_s")  # wall-clock readings, the only fields that may differ
    assert _steps(straight) == [{**m, **{c: s[c] for c in clocks}} for m, s in zip(_steps(broken), _steps(straight))]


def test_a_checkpoint_without_a_loss_scale_resumes_with_a_fresh_one(tmp_path):
    trainer = _trainer()
    trainer.scaler.scale = np.asarray(np.float32(2.0**3))
    out = tmp_path / "ck.npz"
    npvit.save_checkpoint(str(out), trainer.model, step=0, optimizer_state=trainer.optimizer.state_dict(),
                          extra={"best_acc": -1.0})
    again = _trainer()
    resumed = T.Trainer(again.cfg, resume_from=npvit.read_checkpoint(str(out)))
    assert resumed.scaler.state_dict() == {"scale": 2.0**16, "good_steps": 0}


# --- bfloat16 and the flags -----------------------------------------------------------------------
def test_bf16_without_ml_dtypes_is_one_line_naming_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # import ml_dtypes raises ImportError
    code = main([*TINY, "--precision", "bf16", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "pip install ml-dtypes" in err and "--precision fp16" in err
    assert not os.path.exists(tmp_path / "r")


def test_a_bf16_run_trains_where_ml_dtypes_is_installed(tmp_path):
    ml_dtypes = pytest.importorskip("ml_dtypes", reason="pip install ml-dtypes to run the bfloat16 path")
    assert precision.compute_dtype("bf16") == np.dtype(ml_dtypes.bfloat16)
    out = str(tmp_path / "bf16")
    assert main([*TINY, "--epochs", "2", "--precision", "bf16", "--out", out]) == 0
    losses = [m["loss"] for m in _steps(out)]
    assert np.isfinite(losses).all() and np.mean(losses[-2:]) < np.mean(losses[:2])
    assert "grad_scaler" not in npvit.read_checkpoint(os.path.join(out, "checkpoint-last.npz")).extra


def test_an_unknown_precision_is_refused_and_the_flags_are_not_changed_on_resume(tmp_path, capsys):
    assert main([*TINY, "--precision", "fp8", "--out", str(tmp_path / "r")]) == 2
    assert "fp32, fp16, bf16" in capsys.readouterr().err
    assert "precision" not in recipes.CHANGE_ON_RESUME and "tf32" not in recipes.CHANGE_ON_RESUME
    assert recipes.TrainConfig().precision == "fp32" and recipes.TrainConfig().tf32 is False
