"""The ``--device gpu`` path on the CPU, on the strict CuPy stand-in of fakecupy.py.

Every trainer mode and side command runs with ``--device gpu``; every op passes its
gradient check on device arrays; negative controls show the stand-in catches each kind
of device bug; its names are checked against the real CuPy when that imports (it does
without a GPU); and a machine whose CUDA libraries are missing fails at start-up.
"""
import inspect
import json
import os
import sys

import numpy as np
import pytest

import fakecupy
import npvit
from autograd import Tensor, backend, gradcheck, kernels, ops
from npvit import analyze, bench
from npvit import recipes
from npvit import trainer as T
from npvit.cli import main
from npvit.data import augment, seed_generator

# the trainer's TINY of test_train.py, smaller still: 2 steps an epoch
TINY = ["--dataset", "synthetic", "--model", "vit_cifar_tiny", "--embed-dim", "16", "--depth", "2",
        "--num-heads", "2", "--image-size", "16", "--batch-size", "16", "--eval-examples", "32",
        "--train-examples", "32", "--no-progress", "--log-every", "1", "--device", "gpu"]


def _cupy_modules():
    return {k: v for k, v in sys.modules.items() if k in ("cupy", "cupyx") or k.startswith(("cupy.", "cupyx."))}


@pytest.fixture
def gpu(monkeypatch):
    """The stand-in as ``cupy`` for one test; the real modules (if any were imported) come back after."""
    saved = _cupy_modules()
    for name in saved:
        del sys.modules[name]
    monkeypatch.setenv("NPVIT_FAKE_CUPY", "1")
    monkeypatch.setattr(backend, "_cupy", None)
    monkeypatch.setattr(backend, "_global_generators", {})
    fakecupy.meter.reset()
    yield fakecupy
    for name in _cupy_modules():
        del sys.modules[name]
    sys.modules.update(saved)
    fakecupy.mode = "1"  # a test's mode (no-cublas) must not outlive it: other files use the stand-in directly


def run(tmp_path, name, *flags):
    out = str(tmp_path / name)
    return main([*TINY, "--out", out, *flags]), out


def _steps(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if "eval" not in line]


# --- the trainer in every mode ------------------------------------------------------------
@pytest.mark.parametrize("flags", [
    [],
    ["--mode", "pretrain"],
    ["--mode", "mpp", "--mpp-target", "mean_color"],
    ["--mode", "mpp", "--mpp-target", "patch_color"],
    ["--mode", "mpp", "--mpp-target", "pixels"],
    ["--model", "vit_hybrid_cifar_mini", "--embed-dim", "16", "--depth", "1"],
    ["--pos-embed", "none", "--pool", "avg"],
    ["--pos-embed", "2d", "--pos-embed-at", "every_block"],
    ["--pos-embed", "relative", "--pos-embed-at", "every_block_shared"],
    ["--pos-embed", "1d", "--pos-embed-at", "every_block_shared"],
    ["--dropout", "0.1", "--attn-dropout", "0.1", "--drop-path", "0.1", "--mixup", "0.5", "--crop-padding", "2"],
    ["--cutmix", "1.0", "--randaugment", "2", "--optimizer", "sgd", "--clip-grad", "1.0"],
    ["--ema", "0.9", "--eval-flip", "--low-res-epochs", "1", "--low-res-size", "8", "--epochs", "2"],
    ["--mode", "mpp", "--low-res-epochs", "1", "--low-res-size", "8", "--epochs", "2"],
], ids=lambda f: " ".join(f) or "supervised")
def test_every_mode_trains_on_the_device(gpu, tmp_path, flags):
    code, out = run(tmp_path, "r", "--epochs", "1", *flags)
    assert code == 0
    assert all(np.isfinite(m["loss"]) for m in _steps(out))
    assert sum(gpu.meter.launches.values()) > 100  # the steps ran as device ops


def test_pretrain_then_finetune_at_a_new_size_then_eval_only(gpu, tmp_path, capsys):
    code, pre = run(tmp_path, "pre", "--mode", "pretrain", "--epochs", "1")
    assert code == 0
    code, fine = run(tmp_path, "fine", "--init", os.path.join(pre, "checkpoint-last.npz"), "--image-size", "24",
                     "--epochs", "1")
    assert code == 0
    assert npvit.load_checkpoint(os.path.join(fine, "checkpoint-last.npz")).pos_embed.shape == (1, 1 + 36, 16)
    capsys.readouterr()
    best = os.path.join(fine, "checkpoint-best.npz")
    flags = ["--dataset", "synthetic", "--image-size", "24", "--eval-only", "--eval-examples", "32", "--init", best,
             "--no-progress"]
    assert main([*flags, "--device", "gpu"]) == 0
    on_gpu = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main([*flags, "--device", "cpu"]) == 0
    on_cpu = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert on_gpu["acc"] == on_cpu["acc"] and on_gpu["loss"] == pytest.approx(on_cpu["loss"], rel=1e-5)


def test_an_interrupted_device_run_resumes_to_the_same_parameters(gpu, tmp_path, monkeypatch):
    flags = ["--epochs", "2", "--dropout", "0.1", "--drop-path", "0.1", "--mixup", "0.5"]
    code, straight = run(tmp_path, "straight", *flags)
    assert code == 0
    original = T.Trainer.train_step

    def interrupt_at_step_3(self, batch):
        if self.step == 3:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(T.Trainer, "train_step", interrupt_at_step_3)
    code, broken = run(tmp_path, "broken", *flags)
    assert code == 130
    monkeypatch.setattr(T.Trainer, "train_step", original)
    assert main(["--resume", broken, "--no-progress", "--device", "gpu"]) == 0
    a = npvit.read_checkpoint(os.path.join(straight, "checkpoint-last.npz")).state
    b = npvit.read_checkpoint(os.path.join(broken, "checkpoint-last.npz")).state
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_analyze_and_bench_run_on_the_device(gpu, tmp_path, capsys):
    code, out = run(tmp_path, "r", "--epochs", "1")
    assert code == 0
    assert analyze.main([out, "--out", str(tmp_path / "fig"), "--images", "4", "--batch-size", "4",
                         "--device", "gpu"]) == 0
    assert os.path.exists(tmp_path / "fig" / "figures.npz")
    assert bench.main(["--model", "vit_cifar_mini", "--batch-size", "2", "--device", "gpu", "--steps", "1",
                       "--repeats", "1", "--warmup", "1", "--no-torch", "--no-memory"]) == 0
    assert "gpu:0" in capsys.readouterr().out


LAUNCH_BUDGET = 1200  # issue 14: per steady-state step of vit_cifar_tiny, CuPy's own operations only
KERNEL_LAUNCH_BUDGET = 405  # issue 15: with every registered fused kernel, each one launch (400 measured)
# RandAugment 2 on the recipe's batch, beyond the crop and flip: its fused kernel is one
# launch and saves normalise's cast from uint8, so 0 measured (396 in all then, 498 before the
# kernel; 400 since the last block makes the [class] token alone); issue 15 asks for 450 in all.
RANDAUGMENT_LAUNCHES = 5
RECIPE_BATCH = 128  # the cifar10 recipe's batch: large enough that every RandAugment op is drawn in a step


def _cifar10_trainer(**overrides):
    """vit_cifar_tiny with the cifar10 recipe's step (AdamW, clipping, RandAugment 2) on synthetic data."""
    settings = dict(dataset="synthetic", model="vit_cifar_tiny", batch_size=2, rand_ops=2, crop_padding=4, flip=True,
                    label_smoothing=0.1, train_examples=8, eval_examples=2, device="gpu", clip_grad=1.0,
                    optimizer="adamw", progress=False)
    return T.Trainer(recipes.resolve(recipes.TrainConfig(**{**settings, **overrides})))


@pytest.fixture
def without_kernels():
    """Every fused kernel switched off for one test: the ops' own CuPy paths."""
    kernels.disable()
    yield
    kernels.enable()


def _augment_launches(launches):
    return sum(n for site, n in launches.items() if site.startswith("npvit/data/augment.py"))


@pytest.mark.parametrize("rand_ops, fused", [(0, True), (0, False), (2, True), (2, False)],
                         ids=["kernels", "cupy-only", "kernels-randaugment", "cupy-only-randaugment"])
def test_a_steady_state_step_never_syncs_and_keeps_to_the_launch_budget(gpu, request, rand_ops, fused):
    if not fused:
        request.getfixturevalue("without_kernels")
    trainer = _cifar10_trainer(rand_ops=rand_ops)
    for step in range(3):  # the first step makes the optimizer's state, the second its kernel's; the third counts
        gpu.meter.reset()
        trainer.train_step(trainer.loader.batch(0, step, trainer.positions))
    assert sum(gpu.meter.syncs.values()) == 0, gpu.meter.syncs
    # the batch's indices and its augmentation plan; with the kernels also each parameter
    # group's learning rate and step number (4 bytes each, never a read back)
    groups = len(trainer.optimizer.param_groups)
    assert sum(gpu.meter.uploads.values()) <= 2 + (2 * groups if fused else 0), gpu.meter.uploads
    step = gpu.meter.launches.copy()
    optimizer_sites = [s for s in step if s.startswith(("autograd/optim.py", "autograd/flat.py"))]
    assert sum(step[s] for s in optimizer_sites) < (15 if fused else 60)  # whole buffers; one kernel a group
    # The step runs on 2 images, which draw a few RandAugment ops; the recipe's batch draws
    # them all, so the augmentation is counted again on a batch of the recipe's size.
    x = gpu.asarray(np.random.default_rng(0).integers(0, 256, (RECIPE_BATCH, 3, 32, 32), dtype=np.uint8))
    if rand_ops:
        _, _, colour = augment._rand_augment_plan(seed_generator(0, "augment"), *x.shape, 2, 9.0, augment.RAND_AUGMENT_OPS)
        assert len(colour) == 7  # every colour op has images (and so do the geometric ones)
    gpu.meter.reset()
    trainer.augment(x, gpu.arange(RECIPE_BATCH) % 10, seed_generator(0, "augment"))
    assert sum(gpu.meter.syncs.values()) == 0 and sum(gpu.meter.uploads.values()) == 1, gpu.meter.uploads
    total = sum(step.values()) - _augment_launches(step) + _augment_launches(gpu.meter.launches)
    budget = LAUNCH_BUDGET if not fused else KERNEL_LAUNCH_BUDGET + (RANDAUGMENT_LAUNCHES if rand_ops else 0)
    assert total <= budget, (total, gpu.meter.launches.most_common(10))


def test_an_fp16_step_never_syncs_and_an_overflow_is_skipped_on_the_device(gpu):
    """fp16's loss scale lives on the device: a good step and a skipped one read nothing back."""
    trainer = _cifar10_trainer(rand_ops=0, precision="fp16")
    for step in range(3):  # as the fp32 step above: the third step counts
        gpu.meter.reset()
        trainer.train_step(trainer.loader.batch(0, step, trainer.positions))
    groups = len(trainer.optimizer.param_groups)
    assert sum(gpu.meter.syncs.values()) == 0, gpu.meter.syncs
    assert sum(gpu.meter.uploads.values()) <= 2 + 2 * groups, gpu.meter.uploads  # the fp32 step's, no more
    params = {k: v.copy() for k, v in trainer.model.state_dict().items()}
    forced = trainer.scaler.state_dict()["scale"] * 2.0**90  # every float16 gradient overflows
    trainer.scaler.load_state_dict(gpu, {"scale": forced, "good_steps": 1})
    gpu.meter.reset()
    trainer.train_step(trainer.loader.batch(0, 3, trainer.positions))
    assert sum(gpu.meter.syncs.values()) == 0, gpu.meter.syncs
    for k, v in trainer.model.state_dict().items():
        np.testing.assert_array_equal(v, params[k], err_msg=k)
    assert trainer.scaler.state_dict() == {"scale": forced / 2, "good_steps": 0}
    trainer.check_finite()  # a skipped step is no failure of the run


def test_the_tf32_flag_reaches_cupy(gpu):
    linalg = gpu._core._routines_linalg
    _cifar10_trainer(rand_ops=0, tf32=True)
    assert gpu._core.get_compute_type(np.float32) == linalg.COMPUTE_TYPE_TF32
    _cifar10_trainer(rand_ops=0)  # off by default, whatever an earlier run in the process set
    assert gpu._core.get_compute_type(np.float32) == linalg.COMPUTE_TYPE_DEFAULT


def test_the_kernels_train_as_the_cupy_path_does(gpu, monkeypatch):
    """Three steps of the cifar10 recipe's model, kernels on and off: the same parameters in float32."""
    def trained():
        trainer = _cifar10_trainer(rand_ops=0)
        for step in range(3):
            trainer.train_step(trainer.loader.batch(0, step, trainer.positions))
        return trainer.model.state_dict()

    ran, honest = set(), gpu.as_one_launch

    def noted(twin, *args, **kwargs):
        ran.add(twin.__name__)
        return honest(twin, *args, **kwargs)

    monkeypatch.setattr(gpu, "as_one_launch", noted)
    with_kernels = trained()
    assert ran >= {"layer_norm_forward", "layer_norm_backward", "bias_gelu_forward", "gelu_backward",
                   "bias_residual_forward", "softmax_forward", "softmax_backward", "cross_entropy_forward",
                   "cross_entropy_backward", "adamw_step"}
    kernels.disable()
    try:
        without = trained()
    finally:
        kernels.enable()
    # float32, summed in another order: rounding only (1e-7 seen). Adam divides by sqrt(v),
    # so where a gradient is itself at rounding level its update can flip sign: an element
    # may then differ by up to twice the steps' learning rates (1e-6 seen), never a tensor.
    for k, v in with_kernels.items():
        off = ~np.isclose(v, without[k], rtol=1e-5, atol=1e-6)
        assert off.mean() <= 0.01 and np.abs(v - without[k]).max() <= 1e-5, (k, int(off.sum()), off.size)


def test_a_step_without_dropout_builds_no_device_generator(gpu, monkeypatch):
    trainer = _cifar10_trainer(rand_ops=0)
    built, make = [], backend.generator
    monkeypatch.setattr(backend, "generator", lambda *keys, device="cpu": built.append(device) or make(*keys, device=device))
    trainer.train_step(trainer.loader.batch(0, 0, trainer.positions))
    assert built == []
    dropped = _cifar10_trainer(rand_ops=0, model_overrides=dict(drop_path_rate=0.1))
    built.clear()  # building a model draws its initial weights on the host
    dropped.train_step(dropped.loader.batch(0, 0, dropped.positions))
    assert built == ["gpu:0"]  # one for the step's masks, however many layers draw from it


def test_a_bad_step_on_the_device_changes_nothing_and_stops_the_run_at_the_next_check(gpu, monkeypatch):
    trainer = _cifar10_trainer()
    original = T.Trainer.loss_and_metrics

    def nan_from_step_one(self, x, y, gen):
        loss, correct, count = original(self, x, y, gen)
        return (loss * float("nan") if self.step >= 1 else loss), correct, count

    trainer.train_step(trainer.loader.batch(0, 0, trainer.positions))
    params = {k: v.copy() for k, v in trainer.model.state_dict().items()}
    moments = {k: v.copy() for k, v in trainer.optimizer.state_dict()["state"].items() if not k.endswith(".step")}
    monkeypatch.setattr(T.Trainer, "loss_and_metrics", nan_from_step_one)
    gpu.meter.reset()
    for step in (1, 2):
        trainer.train_step(trainer.loader.batch(0, step, trainer.positions))
    assert sum(gpu.meter.syncs.values()) == 0  # the bad steps were not read yet
    for k, v in trainer.model.state_dict().items():
        np.testing.assert_array_equal(v, params[k], err_msg=k)
    for k, v in trainer.optimizer.state_dict()["state"].items():
        if k in moments:
            np.testing.assert_array_equal(v, moments[k], err_msg=k)
    with pytest.raises(T.NonFiniteLoss, match="the loss became nan at step 1$"):
        trainer.check_finite()


# --- every op's gradient on device arrays ---------------------------------------------------
def _r(*shape, seed=0):
    return np.random.default_rng(seed + len(shape)).standard_normal(shape)


def _gpu(*arrays):
    return [backend.to_device(a, "gpu") for a in arrays]


OPS = {
    "add": (ops.add, (_r(2, 3), _r(3))),
    "sub": (ops.sub, (_r(2, 3), _r(2, 1))),
    "mul": (ops.mul, (_r(2, 3), _r(2, 3, seed=1))),
    "div": (ops.div, (_r(2, 3), 2.0 + np.abs(_r(3)))),
    "neg": (ops.neg, (_r(4),)),
    "exp": (ops.exp, (_r(4),)),
    "log": (ops.log, (1.0 + np.abs(_r(4)),)),
    "sqrt": (ops.sqrt, (1.0 + np.abs(_r(4)),)),
    "tanh": (ops.tanh, (_r(4),)),
    "relu": (ops.relu, (_r(5) + 0.05,)),
    "pow": (lambda a: ops.pow(a, 3.0), (_r(4),)),
    "maximum": (ops.maximum, (_r(5), _r(5, seed=3) + 0.3)),
    "where": (lambda a, b: ops.where(a.data > 0, a, b), (_r(5), _r(5, seed=2))),
    "astype": (lambda a: ops.astype(a, np.float64) * 2, (_r(3),)),
    "sum": (lambda a: ops.sum(a, axis=1), (_r(2, 3),)),
    "mean": (lambda a: ops.mean(a, axis=0, keepdims=True), (_r(2, 3),)),
    "var": (lambda a: ops.var(a, axis=-1), (_r(2, 4),)),
    "max": (lambda a: ops.max(a, axis=1), (_r(2, 4),)),
    "matmul": (ops.matmul, (_r(2, 3, 4), _r(4, 2))),
    "reshape": (lambda a: ops.reshape(a, (3, 2)) * _gpu(_r(3, 2))[0], (_r(2, 3),)),
    "transpose": (lambda a: ops.transpose(a, (1, 0, 2)), (_r(2, 3, 2),)),
    "permute": (lambda a: ops.permute(a, (2, 0, 1)), (_r(2, 3, 2),)),
    "swapaxes": (lambda a: ops.swapaxes(a, 0, 1), (_r(2, 3),)),
    "broadcast_to": (lambda a: ops.broadcast_to(a, (3, 2, 3)), (_r(2, 3),)),
    "getitem": (lambda a: ops.getitem(a, (backend.to_device(np.array([0, 2, 0]), "gpu"), slice(1, None))), (_r(3, 3),)),
    "concatenate": (lambda a, b: ops.concatenate([a, b], axis=1), (_r(2, 1), _r(2, 3))),
    "stack": (lambda a, b: ops.stack([a, b], axis=0), (_r(2, 3), _r(2, 3, seed=1))),
    "split": (lambda a: ops.split(a, [1], axis=1)[1], (_r(2, 3),)),
    "unbind": (lambda a: ops.unbind(a, axis=0)[1], (_r(2, 3),)),
    "pad": (lambda a: ops.pad(a, ((1, 0), (0, 2))), (_r(2, 2),)),
    "linear": (ops.linear, (_r(2, 3), _r(4, 3), _r(4))),
    "layer_norm": (ops.layer_norm, (_r(2, 4), _r(4), _r(4))),
    "layer_norm_linear": (lambda x, w_ln, b_ln, w, b: ops.layer_norm_linear(x, w_ln, b_ln, w, b, activation="gelu"),
                          (_r(2, 4), _r(4), _r(4), _r(3, 4), _r(3))),
    "gelu": (ops.gelu, (_r(5),)),
    "gelu_tanh": (lambda a: ops.gelu(a, approximate="tanh"), (_r(5),)),
    "softmax": (ops.softmax, (_r(2, 4),)),
    "log_softmax": (ops.log_softmax, (_r(2, 4),)),
    "cross_entropy": (lambda a: ops.cross_entropy(a, _gpu(np.array([1, 0, 3]))[0], label_smoothing=0.1), (_r(3, 4),)),
    "dropout": (lambda a: ops.dropout(a, 0.5, generator=backend.generator(1, device="gpu")), (_r(6),)),
    "drop_path": (lambda a: ops.drop_path(a, 0.5, generator=backend.generator(1, device="gpu")), (_r(4, 2, 2),)),
    "attention": (lambda q, k, v: ops.scaled_dot_product_attention(q, k, v), (_r(1, 2, 3, 2), _r(1, 2, 3, 2, seed=1),
                                                                            _r(1, 2, 3, 2, seed=2))),
    "attention_dropout": (lambda q, k, v: ops.scaled_dot_product_attention(
        q, k, v, dropout_p=0.3, generator=backend.generator(2, device="gpu")),
        (_r(1, 1, 3, 2), _r(1, 1, 3, 2, seed=1), _r(1, 1, 3, 2, seed=2))),
    "conv2d": (lambda x, w, b: ops.conv2d(x, w, b, stride=2, padding=1), (_r(1, 2, 4, 4), _r(3, 2, 3, 3), _r(3))),
    "avg_pool2d": (lambda x: ops.avg_pool2d(x, 2), (_r(1, 1, 4, 4),)),
    "max_pool2d": (lambda x: ops.max_pool2d(x, 3, 2, 1), (_r(1, 1, 4, 4),)),
    "group_norm": (lambda x, w, b: ops.group_norm(x, 2, w, b), (_r(1, 4, 2, 2), _r(4), _r(4))),
    "resize_2d": (lambda x: ops.resize_2d(x, (3, 5)), (_r(1, 1, 2, 3),)),
    "resize_2d_bicubic": (lambda x: ops.resize_2d(x, (5, 3), "bicubic"), (_r(1, 1, 3, 2),)),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_gradcheck_on_device_arrays(gpu, name):
    fn, inputs = OPS[name]
    with backend.default_dtype_as(np.float64):
        assert gradcheck(fn, _gpu(*inputs))


def test_every_differentiable_op_is_checked_on_the_device():
    checked = {n.removesuffix("_tanh").removesuffix("_bicubic").removesuffix("_dropout") for n in OPS}
    checked |= {"scaled_dot_product_attention"} if "attention" in OPS else set()
    public = {n for n in dir(ops) if callable(getattr(ops, n)) and not n.startswith("_")}
    not_differentiable = {"attention_weights", "greater", "interpolation_matrix", "to_device_op"}
    assert public - not_differentiable - checked == set()


# --- negative controls: each kind of device bug fails on the stand-in ------------------------
def test_a_host_array_in_a_device_op_is_refused(gpu):
    x = Tensor(np.ones(3), device="gpu")
    with pytest.raises(TypeError, match="Unsupported type"):
        x.data + np.ones(3)
    with pytest.raises(TypeError, match="Unsupported type"):
        np.ones(3) * x.data
    with pytest.raises(TypeError, match="Unsupported type"):
        gpu.concatenate([x.data, np.ones(3)])


def test_an_implicit_conversion_to_the_host_is_refused(gpu):
    x = Tensor(np.ones(3), device="gpu")
    with pytest.raises(TypeError, match="Implicit conversion"):
        np.asarray(x.data)
    with pytest.raises(TypeError, match="no implementation found for 'numpy.savez'"):  # CuPy has no savez
        np.savez(os.devnull, x=x.data)
    assert backend.to_numpy(x.data).tolist() == [1.0, 1.0, 1.0]  # the explicit way


def test_a_host_generator_on_device_data_is_caught(gpu):
    x = Tensor(np.ones((4, 4)), device="gpu")
    with pytest.raises(TypeError, match="Unsupported type"):
        ops.dropout(x, 0.5, generator=np.random.default_rng(0))
    with pytest.raises(AttributeError):  # CuPy's Generator has no permutation, choice or normal
        backend.generator(0, device="gpu").permutation(4)


def test_syncs_are_counted_by_the_callers_line(gpu):
    x = Tensor(np.ones(3), device="gpu").data
    gpu.meter.reset()  # forget the start-up probe
    float(x.sum()), bool((x > 0).all()), x.get()  # noqa: B018
    here = f"tests/test_gpu_path.py:{sys._getframe().f_lineno - 1}"
    assert gpu.meter.syncs == {here: 3}
    assert gpu.meter.launches[here] == 3  # sum, >, all


# --- names: only what CuPy 14.2.0 has --------------------------------------------------------
def _public(obj):
    return {n for n in dir(obj) if not n.startswith("_")}


def test_the_stand_in_exposes_only_names_real_cupy_has(gpu):
    for name in _cupy_modules():  # the fixture's own stand-in modules; import the real package instead
        del sys.modules[name]
    try:
        import cupy
        import cupyx.scipy.special

        real_generator = cupy.random.Generator  # imported lazily, so before the stand-in is back
    except ImportError:
        pytest.skip("CuPy is not installed")
    finally:
        gpu.install()
    assert cupy is not fakecupy
    pairs = [(fakecupy, cupy, set(fakecupy.STANDIN_API) | {"annotations"}), (fakecupy.random, cupy.random, set()),
             (fakecupy.cuda, cupy.cuda, set()), (fakecupy.cuda.runtime, cupy.cuda.runtime, set()),
             (fakecupy.linalg, cupy.linalg, set()), (fakecupy.lib.stride_tricks, cupy.lib.stride_tricks, set()),
             (fakecupy.ndarray, cupy.ndarray, set()), (fakecupy.random.Generator, real_generator, set()),
             (fakecupy.cuda.Device, cupy.cuda.Device, set()), (fakecupy.cuda.Stream, cupy.cuda.Stream, set()),
             (fakecupy.ufunc, type(cupy.add), set()), (sys.modules["cupyx"], cupyx, set()),
             (sys.modules["cupyx.scipy.special"], cupyx.scipy.special, set()), (fakecupy._core, cupy._core, set()),
             (fakecupy._core._routines_linalg, cupy._core._routines_linalg, set())]
    for fake, real, own in pairs:
        extra = {n for n in _public(fake) - own if not isinstance(getattr(fake, n), type(sys))} - _public(real)
        assert extra == set(), f"{fake.__name__} has names {real.__name__} lacks: {sorted(extra)}"
    # CuPy's compute-type functions are Cython, their signatures in the docstring's first line
    for name in ("set_compute_type", "get_compute_type"):
        fake = getattr(fakecupy._core, name)
        assert getattr(cupy._core, name).__doc__.splitlines()[0] == f"{name}{inspect.signature(fake)}"
    constants = {n for n in _public(fakecupy._core._routines_linalg) if n.startswith("COMPUTE_TYPE_")}
    assert {n: getattr(cupy._core._routines_linalg, n) for n in constants} == \
        {n: getattr(fakecupy._core._routines_linalg, n) for n in constants}
    dunders = {n for n in dir(fakecupy.ndarray) if n.startswith("__") and n not in dir(object)}
    assert dunders - set(dir(cupy.ndarray)) <= {"__slots__", "__dict__", "__weakref__"}


# --- start-up: missing CUDA libraries are one line, before the first step ---------------------
def test_missing_cublas_is_one_device_error_line_at_start_up(gpu, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("NPVIT_FAKE_CUPY", "no-cublas")
    code = main([*TINY, "--out", str(tmp_path / "r"), "--epochs", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "libcublas.so.12" in err and "npvit[gpu]" in err
    assert not os.path.exists(tmp_path / "r" / "metrics.jsonl")
