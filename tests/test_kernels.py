"""Fused kernels (autograd/kernels, and npvit's RandAugment one registered from outside): each CUDA source
compiles, each twin is the existing op, each launcher passes what its kernel's signature takes, and on the
stand-in each kernel is one launch and a wrong one falls back to its twin.

The sources are plain C++ for ``cupy.RawModule`` (no ElementwiseKernel): CuPy hands a
RawModule's code to NVRTC as it is, so ``nvcc -ptx`` on the same text, per dtype as the
registry compiles it, checks what the GPU will compile. An ElementwiseKernel's body
would only compile inside the loop and declarations CuPy generates around it, which
a test could imitate but not prove faithful.
"""
import dataclasses
import functools
import glob
import os
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

from autograd import Tensor, backend, kernels, ops, optim
from autograd.kernels import cross_entropy, dropout, epilogue, gelu, layer_norm, registry, softmax
from autograd.kernels import optim as koptim
from autograd.ops.fused import DropMask
from checking import outputs_and_grads, upstream
from npvit import selfcheck
from test_gpu_path import gpu  # noqa: F401  (the stand-in fixture)


def _nvcc():
    found = shutil.which("nvcc")
    return found or next(iter(sorted(glob.glob("/usr/local/cuda*/bin/nvcc"))), None)


NVCC = _nvcc()
ARCHS = ("sm_80", "sm_90")


@pytest.fixture(autouse=True)
def fresh_registry():
    """Every test starts with no self-check verdicts and ends without leaving any."""
    kernels.reset()
    yield
    kernels.reset()


# --- every source compiles, as the registry compiles it (one module per dtype) --------------
def _entries(source):
    return re.findall(r"NAME\((\w+)\)", source.body)


@functools.lru_cache(maxsize=None)
def _ptx(family, arch, tmp):
    source = next(k.source for k in kernels.KERNELS.values() if k.source.family == family)
    files = []
    for dtype in registry.CTYPES:
        path = os.path.join(tmp, f"{family}_{dtype}.cu")
        with open(path, "w") as f:
            f.write(source.text((dtype,)))
        files.append(path)
    out = os.path.join(tmp, arch)
    os.makedirs(out, exist_ok=True)
    run = subprocess.run([NVCC, f"-arch={arch}", "-ptx", "--std=c++14", "-Werror", "all-warnings", *files,
                          "--output-directory", out], capture_output=True, text=True)
    return run.returncode, run.stderr, {d: open(os.path.join(out, f"{family}_{d}.ptx")).read()
                                        for d in registry.CTYPES if run.returncode == 0}


@pytest.mark.skipif(NVCC is None, reason="nvcc not found on PATH nor in /usr/local/cuda*/bin: no CUDA toolkit")
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("name", sorted(kernels.KERNELS))
def test_the_kernel_source_compiles_with_nvcc(name, arch, tmp_path_factory):
    source = kernels.KERNELS[name].source
    code, err, ptx = _ptx(source.family, arch, str(tmp_path_factory.getbasetemp()))
    assert code == 0, err
    for dtype, (_, suffix) in registry.CTYPES.items():
        for base in _entries(source):
            assert f".entry {base}_{suffix}(" in ptx[dtype], f"{base}_{suffix} missing from the {arch} PTX"


# --- each twin is the existing op, forward and backward, in float64 -------------------------
def _rng(seed=0):
    return np.random.default_rng(seed)


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_twins_are_ops_gelu(approximate):
    x = _rng().normal(0, 3, (4, 9))
    out, (dx,) = outputs_and_grads(lambda t: ops.gelu(t, approximate), [x])
    _close(gelu.gelu_forward(x, approximate), out)
    _close(gelu.gelu_backward(upstream(out.shape, x.dtype), x, approximate), dx)


def test_layer_norm_twins_are_ops_layer_norm():
    rng = _rng()
    x, w, b = rng.standard_normal((3, 5, 8)) + 1, rng.standard_normal(8), rng.standard_normal(8)
    out, (dx, dw, db) = outputs_and_grads(lambda *t: ops.layer_norm(*t, eps=1e-5), [x, w, b])
    y, mean, rstd = layer_norm.layer_norm_forward(x, w, b, 1e-5)
    _close(y, out)
    _close(mean, x.mean(-1).ravel())
    _close(rstd, 1 / np.sqrt(x.var(-1).ravel() + 1e-5))
    for got, want in zip(layer_norm.layer_norm_backward(upstream(out.shape, x.dtype), x, mean, rstd, w),
                         (dx, dw, db)):
        _close(got, want)


def test_the_layer_norm_backward_twin_adds_the_residual_streams_gradient():
    rng = _rng()
    x, w, b = rng.standard_normal((3, 5, 8)) + 1, rng.standard_normal(8), rng.standard_normal(8)
    out, (dx, dw, db) = outputs_and_grads(lambda x, w, b: x + ops.layer_norm(x, w, b, eps=1e-5), [x, w, b])
    _, mean, rstd = layer_norm.layer_norm_forward(x, w, b, 1e-5)
    g = upstream(out.shape, x.dtype)
    for got, want in zip(layer_norm.layer_norm_backward(g, x, mean, rstd, w, g), (dx, dw, db)):
        _close(got, want)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_the_epilogue_twins_are_the_ops_they_fold(approximate):
    rng = _rng()
    y, b, r = rng.normal(0, 3, (4, 9)), rng.standard_normal(9), rng.standard_normal((4, 9))
    z, out = epilogue.bias_gelu_forward(y, b, approximate)
    _close(z, y + b)
    _close(out, ops.gelu(Tensor(y + b), approximate).data)
    _close(epilogue.bias_residual_forward(y, b, r), r + (y + b))


def test_softmax_twins_are_ops_softmax_of_the_scaled_masked_logits():
    rng = _rng()
    x, mask = rng.standard_normal((2, 3, 4, 6)), rng.standard_normal((4, 6))
    out, (dx, dmask) = outputs_and_grads(lambda a, m: ops.softmax(a * 0.3 + m), [x, mask])
    p = softmax.softmax_forward(x, 0.3, mask)
    _close(p, out)
    g = upstream(out.shape, x.dtype)
    _close(softmax.softmax_backward(g, p, 0.3), dx)
    _close(softmax.softmax_backward(g, p).sum(axis=(0, 1)), dmask)
    _close(softmax.softmax_forward(x), ops.softmax(Tensor(x)).data)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_cross_entropy_twins_are_ops_cross_entropy(eps):
    rng = _rng()
    logits, labels = rng.normal(0, 2, (7, 5)), np.array([0, 4, -100, 2, 2, 1, 3])
    out, (dz,) = outputs_and_grads(lambda z: ops.cross_entropy(z, labels, eps, reduction="none"), [logits])
    loss, lse = cross_entropy.cross_entropy_forward(logits, labels, eps)
    _close(loss, out)
    assert loss[2] == 0
    _close(lse, np.log(np.exp(logits).sum(1)))
    _close(cross_entropy.cross_entropy_backward(upstream(out.shape, logits.dtype), logits, lse, labels, eps), dz)
    mean = Tensor(logits, requires_grad=True)
    ops.cross_entropy(mean, labels, eps).backward()  # "mean": one g, 1/count, for every row
    _close(cross_entropy.cross_entropy_backward(np.array(1 / 6), logits, lse, labels, eps), mean.grad)


def test_philox_matches_the_random123_known_answers():
    zero, ones = np.zeros(1, np.uint64), np.full(1, 2**64 - 1, np.uint64)
    assert dropout.philox_word(np, 0, zero, 0)[0] == 0x6627E8D5
    assert dropout.philox_word(np, 2**64 - 1, ones, 2**64 - 1)[0] == 0x408F276D


def test_the_dropout_mask_is_a_function_of_seed_and_offset_and_keeps_1_minus_p():
    keep = dropout.keep_mask(np, (400, 500), 0.3, seed=11, offset=2)
    assert abs(keep.mean() - 0.7) < 0.005
    np.testing.assert_array_equal(keep, dropout.keep_mask(np, (400, 500), 0.3, seed=11, offset=2))
    assert (keep != dropout.keep_mask(np, (400, 500), 0.3, seed=11, offset=3)).mean() > 0.3
    assert dropout.keep_mask(np, (10,), 0.0, 1, 0).all() and not dropout.keep_mask(np, (10,), 1.0, 1, 0).any()


def test_dropout_residual_twins_are_the_residual_plus_ops_drop_mask():
    rng = _rng()
    x, r = rng.standard_normal((3, 50)), rng.standard_normal((3, 50))
    keep = dropout.keep_mask(np, x.shape, 0.25, 5, 9)
    out, (dx, dr) = outputs_and_grads(lambda a, b: b + DropMask.apply(a, keep=keep, scale=1 / 0.75), [x, r])
    _close(dropout.dropout_residual_forward(x, r, 0.25, 5, 9), out)
    g = upstream(out.shape, x.dtype)
    _close(dropout.dropout_residual_backward(g, 0.25, 5, 9), dx)
    _close(dr, g)


def _flat_case():
    rng = _rng()
    w, b = rng.standard_normal((3, 4)), rng.standard_normal(4)
    grads = [(rng.standard_normal((3, 4)), rng.standard_normal(4)) for _ in range(3)]
    decay = np.concatenate([np.ones(12, np.uint8), np.zeros(4, np.uint8)])  # the matrix decays, the bias not
    return w, b, grads, decay


def _device_step(step, ok=1):
    return np.array([step], np.int32), np.array([ok], np.uint8)


@pytest.mark.parametrize("opt", ["adamw", "sgd", "sgd_nesterov"])
def test_the_flat_optimizer_twins_are_autograd_optim_with_decay_groups(opt):
    w, b, grads, decay = _flat_case()
    pw, pb = Tensor(w.copy(), requires_grad=True), Tensor(b.copy(), requires_grad=True)
    groups = [{"params": [pw], "weight_decay": 0.05}, {"params": [pb], "weight_decay": 0.0}]
    if opt == "adamw":
        reference = optim.AdamW(groups, lr=0.01, betas=(0.9, 0.99))
    else:
        reference = optim.SGD(groups, lr=0.1, momentum=0.9, nesterov=opt == "sgd_nesterov")
    flat = np.concatenate([w.ravel(), b])
    state = [np.zeros(16), np.zeros(16)] if opt == "adamw" else [np.zeros(16)]
    lr = np.array([0.01 if opt == "adamw" else 0.1])
    for t, (gw, gb) in enumerate(grads, start=1):
        pw.grad, pb.grad = gw, gb
        reference.step()
        g = np.concatenate([gw.ravel(), gb])
        if opt == "adamw":
            koptim.adamw_step(flat, g, *state, decay, lr, *_device_step(t), betas=(0.9, 0.99), weight_decay=0.05)
        else:
            koptim.sgd_step(flat, g, *state, decay, lr, *_device_step(t), momentum=0.9,
                            nesterov=opt == "sgd_nesterov", weight_decay=0.05)
    _close(flat, np.concatenate([pw.data.ravel(), pb.data]))


def test_the_flat_optimizer_twins_skip_the_update_when_not_ok():
    w, b, grads, decay = _flat_case()
    flat, g = np.concatenate([w.ravel(), b]), np.concatenate([grads[0][0].ravel(), grads[0][1]])
    m, v, buf = np.ones(16), np.ones(16), np.ones(16)
    koptim.adamw_step(flat, g, m, v, decay, np.array([0.1]), *_device_step(2, ok=0))
    koptim.sgd_step(flat, g, buf, decay, np.array([0.1]), *_device_step(2, ok=0), momentum=0.9)
    _close(flat, np.concatenate([w.ravel(), b]))
    assert (m == 1).all() and (v == 1).all() and (buf == 1).all()


# --- the launchers pass what each kernel's CUDA signature takes ------------------------------
_C_TYPES = {"float": np.float32, "int": np.int32, "long long": np.int64, "unsigned": np.uint32,
            "unsigned long long": np.uint64, "unsigned char": np.uint8}


def _signatures(source):
    found = re.findall(r'extern "C" __global__ void NAME\((\w+)\)\((.*?)\)\s*\{', source.body, re.S)
    return {base: [" ".join(p.split()[:-1]).replace("const ", "") for p in params.split(",")]
            for base, params in found}


@pytest.mark.parametrize("name", sorted(kernels.KERNELS))
def test_each_launcher_passes_the_arguments_its_kernel_declares(gpu, name):  # noqa: F811
    kernel = kernels.KERNELS[name]
    signatures, launched = _signatures(kernel.source), []

    def function(dtype, base):
        def launch(grid, block, args):
            launched.append(base)
            threads = int(np.prod(block))
            assert threads <= 1024 and threads % 32 == 0 and all(0 < n < 2**31 for n in grid)
            assert len(args) == len(signatures[base]), f"{base}: {len(args)} arguments for {signatures[base]}"
            for i, (arg, ctype) in enumerate(zip(args, signatures[base])):
                pointer = ctype.endswith("*")
                ctype = ctype.rstrip("*").strip()
                want = np.dtype(dtype) if ctype == "scalar_t" else np.dtype(_C_TYPES[ctype])
                assert isinstance(arg, gpu.ndarray) == pointer, f"{base} argument {i} ({ctype}) is {type(arg)}"
                assert arg.dtype == want, f"{base} argument {i}: {arg.dtype}, the kernel takes {ctype}"
                assert not pointer or arg.flags.c_contiguous
        return launch

    backend.xp_for("gpu")
    for dtype in (np.float32, np.float16):
        for args in kernel.sample(_rng(), np.dtype(dtype)):
            kernel.launch(function, *[backend.to_device(a, "gpu") if isinstance(a, np.ndarray) else a
                                      for a in args])
    assert launched and set(launched) <= set(signatures)


# --- on the stand-in: each kernel is one launch; a wrong one is caught and replaced ----------
def test_no_kernel_on_the_cpu_nor_for_float64(gpu):  # noqa: F811
    assert kernels.get("gelu_forward") is None  # CuPy not loaded yet: the CPU
    backend.xp_for("gpu")
    assert kernels.get("gelu_forward", np.float64) is None
    assert kernels.get("gelu_forward", np.float32) is not None


@pytest.mark.parametrize("name", sorted(kernels.KERNELS))
def test_on_the_stand_in_a_kernel_is_its_twin_and_one_launch(gpu, name):  # noqa: F811
    kernel = kernels.KERNELS[name]
    backend.xp_for("gpu")
    fused = kernels.get(name)
    assert kernels.check(name).ok
    args = kernel.sample(_rng(1), np.dtype(np.float32))[0]
    device = [backend.to_device(a, "gpu") if isinstance(a, np.ndarray) else a for a in args]
    gpu.meter.reset()
    got = fused(*device)
    here = f"tests/test_kernels.py:{sys._getframe().f_lineno - 1}"
    assert dict(gpu.meter.launches) == {here: 1} and not gpu.meter.syncs
    want = kernel.twin(*[a.copy() if isinstance(a, np.ndarray) else a for a in args])
    for g, w in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        np.testing.assert_allclose(backend.to_numpy(g), w, rtol=1e-5, atol=1e-6)  # the stand-in's erf is CuPy's


def test_a_kernel_that_disagrees_with_its_twin_warns_once_and_is_switched_off(gpu, monkeypatch):  # noqa: F811
    backend.xp_for("gpu")
    honest = gpu.as_one_launch

    def sabotaged(twin, *args, **kwargs):  # the "device" gets GELU slightly wrong
        out = honest(twin, *args, **kwargs)
        return out * 1.001 + 1e-3 if twin is gelu.gelu_forward else out

    monkeypatch.setattr(gpu, "as_one_launch", sabotaged)
    with pytest.warns(RuntimeWarning, match=r"fused kernel gelu_forward disagrees .*max error .*using the twin") as w:
        assert kernels.get("gelu_forward") is None
    assert len(w) == 1
    verdict = kernels.check("gelu_forward")
    assert not verdict.ok and "float32" in verdict.detail
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernels.get("gelu_forward") is None  # cached: no second check, no second warning
        assert kernels.get("gelu_backward") is not None  # the others are unaffected


def test_a_kernel_that_fails_to_run_is_switched_off_too(gpu, monkeypatch):  # noqa: F811
    backend.xp_for("gpu")

    def broken(twin, *args, **kwargs):
        raise RuntimeError("CompileException: cuda_bf16.h: No such file")

    monkeypatch.setattr(gpu, "as_one_launch", broken)
    with pytest.warns(RuntimeWarning, match="softmax_forward .*CompileException"):
        assert kernels.get("softmax_forward") is None


def test_a_kernel_registered_outside_autograd_is_gated_and_checked_like_its_own(gpu, monkeypatch):  # noqa: F811
    monkeypatch.setattr(registry, "KERNELS", dict(registry.KERNELS))  # this test's kernel leaves with it
    outside = kernels.register(kernels.Kernel(
        "outside_double", kernels.KERNELS["gelu_forward"].source, launch=None, twin=lambda x: 2 * x,
        sample=lambda rng, dtype: [(rng.standard_normal(5).astype(dtype),)], dtypes=("float32",)))
    assert kernels.get("outside_double") is None  # the CPU
    backend.xp_for("gpu")
    assert kernels.get("outside_double", np.float16) is None  # not built for it
    gpu.meter.reset()
    assert gpu.asnumpy(kernels.get("outside_double")(gpu.asarray([1.0, 3.0]))).tolist() == [2.0, 6.0]
    assert kernels.check("outside_double").ok and gpu.meter.launches  # the self-check ran it
    kernels.disable()
    try:
        assert kernels.get("outside_double") is None
    finally:
        kernels.enable()
    with pytest.raises(ValueError, match="registered twice"):
        kernels.register(outside)
    with pytest.raises(ValueError, match=r"no source instantiation for \['float64'\]"):
        kernels.register(dataclasses.replace(outside, name="outside_f64", dtypes=("float64",)))
    with pytest.raises(ValueError, match=r"no tolerance for \['float32'\]"):
        kernels.register(dataclasses.replace(outside, name="outside_loose", tolerances={}))
    assert set(registry.KERNELS) - set(kernels.KERNELS) == {"outside_double"}


def test_autograd_imports_nothing_of_npvit():
    """The arrow points one way: npvit's RandAugment kernel comes to the registry, the registry never fetches it."""
    code = ("import importlib, pkgutil, sys, autograd\n"
            "for m in pkgutil.walk_packages(autograd.__path__, 'autograd.'): importlib.import_module(m.name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'npvit'))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         env={**os.environ, "PYTHONPATH": root})
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stdout + run.stderr


# --- python -m npvit.selfcheck on the stand-in ------------------------------------------------
def test_the_selfcheck_passes_on_the_stand_in(gpu, capsys):  # noqa: F811
    assert selfcheck.main(["--device", "gpu", "--steps", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert {line.split()[2].rstrip(":") for line in lines if line.startswith("PASS kernel")} == set(kernels.KERNELS)
    assert any(line.startswith("PASS train: 5 steps") for line in lines)
    assert any(line.startswith("PASS train fp16: 5 steps") for line in lines)
    assert any(line.startswith("PASS train tf32: 5 steps") for line in lines)
    assert any(line.startswith(("PASS train bf16", "SKIP train bf16")) for line in lines)
    assert all(line.split()[0] in ("PASS", "SKIP") for line in lines) and lines[-1].startswith("PASS selfcheck")


def test_the_selfcheck_fails_a_low_precision_curve_that_drifts(gpu, monkeypatch, capsys):  # noqa: F811
    from autograd import precision

    honest = selfcheck.train_losses

    def drifting(device, steps, seed=0):
        losses = honest(device, steps, seed)
        return losses * 1.05 if precision._compute == np.float16 else losses

    monkeypatch.setattr(selfcheck, "train_losses", drifting)
    assert selfcheck.main(["--device", "gpu", "--steps", "3"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("FAIL train fp16") for line in lines)
    assert any(line.startswith("PASS train: 3 steps") for line in lines)
    assert "failed: train fp16" in lines[-1]


def test_the_selfcheck_reports_a_sabotaged_kernel_and_exits_1(gpu, monkeypatch, capsys):  # noqa: F811
    honest = gpu.as_one_launch

    def sabotaged(twin, *args, **kwargs):
        out = honest(twin, *args, **kwargs)
        return (out[0] + 0.01, *out[1:]) if twin is layer_norm.layer_norm_forward else out

    monkeypatch.setattr(gpu, "as_one_launch", sabotaged)
    assert selfcheck.main(["--device", "gpu", "--steps", "2"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^FAIL kernel layer_norm_forward: float32 case 0 output 0: max error 0\.01", out, re.M)
    assert "PASS kernel layer_norm_backward" in out
    assert out.strip().splitlines()[-1].endswith("failed: kernel layer_norm_forward")


def test_the_selfcheck_without_a_gpu_is_one_line_and_exit_2(gpu, monkeypatch, capsys):  # noqa: F811
    monkeypatch.setattr(gpu.cuda.runtime, "getDeviceCount", lambda: 0)
    assert selfcheck.main(["--device", "gpu"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1 and "no CUDA GPU" in captured.err


# --- the ops that call the kernels: on the stand-in, kernel path = CuPy path in float32 -----
def _f32(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


_LABELS = np.array([3, -100, 0, 9, 9, 1])
WIRED = {  # op on Tensors, float32 inputs (integer ones are constants), the kernels it must run
    "layer_norm": (ops.layer_norm, (_f32(2, 5, 48), 1 + _f32(48, seed=1), _f32(48, seed=2)),
                   {"layer_norm_forward", "layer_norm_backward"}),
    "gelu": (ops.gelu, (3 * _f32(5, 37),), {"gelu_forward", "gelu_backward"}),
    "gelu_tanh": (lambda x: ops.gelu(x, approximate="tanh"), (3 * _f32(5, 37),), {"gelu_forward", "gelu_backward"}),
    "attention": (ops.scaled_dot_product_attention, (_f32(2, 3, 7, 16), _f32(2, 3, 7, 16, seed=1),
                                                     _f32(2, 3, 7, 16, seed=2)), {"softmax_forward", "softmax_backward"}),
    "attention_bias": (ops.scaled_dot_product_attention, (_f32(2, 3, 7, 16), _f32(2, 3, 7, 16, seed=1),
                                                          _f32(2, 3, 7, 16, seed=2), _f32(1, 3, 7, 7, seed=3)),
                       {"softmax_forward", "softmax_backward"}),
    "attention_dropout": (lambda q, k, v: ops.scaled_dot_product_attention(
        q, k, v, dropout_p=0.3, generator=backend.generator(2, device="gpu")),
        (_f32(2, 3, 7, 16), _f32(2, 3, 7, 16, seed=1), _f32(2, 3, 7, 16, seed=2)), {"softmax_backward"}),
    "layer_norm_residual": (lambda x, w, b: x + ops.layer_norm(x, w, b), (_f32(2, 5, 48), 1 + _f32(48, seed=1),
                                                                            _f32(48, seed=2)),
                            {"layer_norm_forward", "layer_norm_backward"}),
    **{f"linear_{form}": ((lambda form: lambda x, w, b: ops.linear(x, w, b, activation=form))(form),
                          (_f32(2, 5, 12), _f32(7, 12, seed=1), _f32(7, seed=2)), {"bias_gelu_forward", "gelu_backward"})
       for form in ("gelu", "gelu_tanh")},
    "linear_residual": (lambda x, w, b, r: ops.linear(x, w, b, residual=r),
                        (_f32(2, 5, 12), _f32(7, 12, seed=1), _f32(7, seed=2), _f32(2, 5, 7, seed=3)),
                        {"bias_residual_forward"}),
    **{f"cross_entropy_{r}": ((lambda r: lambda z, y: ops.cross_entropy(z, y, label_smoothing=0.1, reduction=r))(r),
                              (3 * _f32(6, 10), _LABELS), {"cross_entropy_forward", "cross_entropy_backward"})
       for r in ("mean", "sum", "none")},
}


def _on_device(fn, inputs):
    tensors = [Tensor(backend.to_device(x.copy(), "gpu"), requires_grad=x.dtype.kind == "f") for x in inputs]
    out = fn(*tensors)
    out.backward(backend.to_device(upstream(out.shape, out.dtype), "gpu"))
    return backend.to_numpy(out.data), [backend.to_numpy(t.grad) for t in tensors if t.requires_grad]


@pytest.mark.parametrize("name", sorted(WIRED))
def test_an_op_through_its_kernels_matches_its_cupy_path_in_float32(gpu, monkeypatch, name):  # noqa: F811
    # The float64 gradchecks of test_gpu_path.py take the CuPy paths (no kernel has a
    # float64 body), so this is what tests the wiring: float32, kernels on and off,
    # which differ by summation order only.
    fn, inputs, wanted = WIRED[name]
    ran, honest = set(), gpu.as_one_launch

    def noted(twin, *args, **kwargs):
        ran.add(twin.__name__)
        return honest(twin, *args, **kwargs)

    monkeypatch.setattr(gpu, "as_one_launch", noted)
    fused = _on_device(fn, inputs)
    assert wanted <= ran
    kernels.disable()
    try:
        ran.clear()
        plain = _on_device(fn, inputs)
        assert not ran
    finally:
        kernels.enable()
    np.testing.assert_allclose(fused[0], plain[0], rtol=1e-5, atol=1e-6)
    for a, b in zip(fused[1], plain[1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["layer_norm", "gelu", "cross_entropy_mean", "attention_bias"])
def test_an_op_whose_backward_kernel_fails_its_check_falls_back_after_the_kernels_forward(gpu, monkeypatch,  # noqa: F811
                                                                                          name):
    fn, inputs, _ = WIRED[name]
    honest = gpu.as_one_launch

    def no_backward(twin, *args, **kwargs):
        if twin.__name__.endswith("_backward"):
            raise RuntimeError("CompileException: the backward does not build")
        return honest(twin, *args, **kwargs)

    monkeypatch.setattr(gpu, "as_one_launch", no_backward)
    with pytest.warns(RuntimeWarning, match="_backward disagrees"):
        fused = _on_device(fn, inputs)
    kernels.disable()
    try:
        plain = _on_device(fn, inputs)
    finally:
        kernels.enable()
    np.testing.assert_allclose(fused[0], plain[0], rtol=1e-5, atol=1e-6)
    for a, b in zip(fused[1], plain[1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_the_cpu_never_asks_for_a_kernel(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel was asked for on the CPU")

    monkeypatch.setattr(kernels, "get", refuse)
    for name, (fn, inputs, _) in WIRED.items():
        if "dropout" not in name:
            outputs_and_grads(fn, inputs)
    params = [Tensor(_f32(5), requires_grad=True)]
    params[0].grad = _f32(5, seed=1)
    for opt in (optim.AdamW(params, lr=0.1), optim.SGD(params, lr=0.1, momentum=0.9)):
        opt.step()
        opt.step()


@pytest.mark.parametrize("make", [lambda ps: optim.AdamW(ps, lr=0.1, weight_decay=0.05),
                                  lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)],
                         ids=["adamw", "sgd"])
def test_the_flat_optimizer_through_its_kernel_matches_its_cupy_path(gpu, monkeypatch, make):  # noqa: F811
    ran, honest = [], gpu.as_one_launch
    monkeypatch.setattr(gpu, "as_one_launch", lambda twin, *a, **k: (ran.append(twin.__name__), honest(twin, *a, **k))[1])

    def stepped():
        params = [Tensor(backend.to_device(_f32(*shape, seed=i), "gpu"), requires_grad=True)
                  for i, shape in enumerate(((4, 3), (3,), (5,)))]
        opt = make([{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.0}])
        for step in range(4):
            for i, p in enumerate(params):
                p.grad = backend.to_device(_f32(*p.shape, seed=10 * step + i), "gpu")
            opt.step(ok=backend.to_device(np.array(step != 2), "gpu"))  # step 2 is skipped on the device
        return [backend.to_numpy(p.data) for p in params]

    backend.xp_for("gpu")
    assert kernels.check("adamw_step").ok and kernels.check("sgd_step").ok
    ran.clear()  # the self-checks' launches
    fused = stepped()
    assert len(ran) == 2 * 3  # two groups, one launch each, from the second step on (the first makes the state)
    kernels.disable()
    try:
        plain = stepped()
    finally:
        kernels.enable()
    for a, b in zip(fused, plain):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
