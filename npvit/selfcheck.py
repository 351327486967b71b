"""One command for whoever has a GPU: does npvit compute the same on it as on the CPU?

    python -m npvit.selfcheck --device gpu

Checks, one verdict line each (PASS, FAIL or SKIP, and why):
- ``kernel <name>``: every registered fused kernel (autograd/kernels' and npvit's
  RandAugment one, npvit/data/augment_kernel.py) against its NumPy twin on a small
  random input, in every dtype it is built for (the check that also runs at
  first use in training; a FAIL here means training uses the twin instead);
- ``gradcheck <op>``: a few ops' gradients by finite differences, float64, on the device;
- ``train``: a tiny ViT trained for ``--steps`` steps on the device and on the CPU
  from the same seed and batches; the loss curves agree to ``TRAIN_RTOL`` at every step;
- ``train fp16``, ``train bf16``, ``train tf32``: the same steps with the device's products
  in that precision (``--precision``, ``--tf32``), against the CPU's float32 curve, to the
  looser ``LOW_PRECISION_RTOL`` (bf16 SKIPs without ml_dtypes);
- ``bench``: a ViT training step timed against PyTorch's when PyTorch with CUDA imports.
Exit status 0 when nothing failed, 1 on any FAIL, 2 (one line) when the device cannot
be used. With ``NPVIT_FAKE_CUPY=1`` it runs on the CuPy stand-in of tests/, as CI does.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings

import numpy as np

from autograd import backend, gradcheck, kernels, ops, optim, precision
from autograd.backend import DeviceError

from .data import augment_kernel  # noqa: F401  (registers npvit's RandAugment kernel, so it is checked too)
from .model import create_model

# float32 losses of the same 50 steps computed in two orders (cuBLAS and a GPU's
# reductions against NumPy's) drift apart by rounding only, which stays well under this
TRAIN_RTOL = 2e-3
# 16-bit products round each operand to 11 (fp16) or 8 (bf16) significant bits, TF32 to 11:
# over the 50 steps the loss moves from float32's by up to 8e-4 (bf16, NumPy's products on
# the stand-in), an order of magnitude inside this
LOW_PRECISION_RTOL = 1e-2
TRAIN_MODEL = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=10)


def check_kernels():
    """(name, status, detail) per fused kernel: its self-check, run fresh."""
    kernels.reset()
    results = []
    for name in sorted(kernels.KERNELS):
        with warnings.catch_warnings():  # the verdict line says it; no second line from the fallback's warning
            warnings.simplefilter("ignore", RuntimeWarning)
            verdict = kernels.check(name)
        results.append((f"kernel {name}", "PASS" if verdict.ok else "FAIL", verdict.detail))
    return results


def _r(rng, *shape):
    return rng.standard_normal(shape)


def check_gradients(device):
    """(name, status, detail) per op: autograd.gradcheck in float64 with the inputs on ``device``."""
    rng = np.random.default_rng(0)
    labels = backend.to_device(np.array([1, 0, 3]), device)
    cases = {
        "layer_norm": (ops.layer_norm, (_r(rng, 2, 5), _r(rng, 5), _r(rng, 5))),
        "gelu": (ops.gelu, (_r(rng, 7),)),
        "softmax": (ops.softmax, (_r(rng, 2, 4),)),
        "cross_entropy": (lambda z: ops.cross_entropy(z, labels, label_smoothing=0.1), (_r(rng, 3, 4),)),
        "attention": (ops.scaled_dot_product_attention, (_r(rng, 1, 2, 3, 2), _r(rng, 1, 2, 3, 2),
                                                         _r(rng, 1, 2, 3, 2))),
    }
    results = []
    for name, (fn, inputs) in cases.items():
        with backend.default_dtype_as(np.float64):
            try:
                gradcheck(fn, [backend.to_device(a, device) for a in inputs])
                results.append((f"gradcheck {name}", "PASS", "float64, finite differences"))
            except AssertionError as e:
                results.append((f"gradcheck {name}", "FAIL", " ".join(str(e).split())[:200]))
    return results


def train_losses(device, steps, seed=0):
    """The losses of ``steps`` AdamW steps of a tiny ViT on ``device``, batches and weights from ``seed``."""
    model = create_model("vit_cifar_tiny", generator=backend.generator(seed), **TRAIN_MODEL).to(device)
    opt = optim.AdamW(model.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)
    losses = []
    for _ in range(steps):
        x = backend.to_device(rng.standard_normal((8, 3, 16, 16), dtype=np.float32), device)
        y = backend.to_device(rng.integers(0, 10, 8), device)
        opt.zero_grad()
        loss = ops.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.data)
    return np.array([float(backend.to_numpy(v)) for v in losses])  # read back once, after the steps


def _compare(name, on_device, on_cpu, tolerance):
    """(name, status, detail) of a loss curve on the device against the CPU's."""
    rel = np.abs(on_device - on_cpu) / np.maximum(np.abs(on_cpu), 1.0)
    worst = int(np.argmax(rel))
    detail = (f"{len(on_cpu)} steps, max relative difference {rel[worst]:.2g} at step {worst} "
              f"(tolerance {tolerance:g}); loss {on_cpu[0]:.4f} -> {on_cpu[-1]:.4f} on the CPU")
    ok = np.isfinite(on_device).all() and rel.max() <= tolerance
    return name, "PASS" if ok else "FAIL", detail


def check_training(device, steps):
    """(name, status, detail) per precision: the loss curve on ``device`` against the CPU's float32 one from the
    same seed; float32 to ``TRAIN_RTOL``, then fp16, bf16 and TF32 products to ``LOW_PRECISION_RTOL``."""
    on_cpu = train_losses("cpu", steps)
    results = [_compare("train", train_losses(device, steps), on_cpu, TRAIN_RTOL)]
    for name in ("fp16", "bf16"):
        try:
            dtype = precision.compute_dtype(name)
        except precision.PrecisionError:
            results.append((f"train {name}", "SKIP", "needs ml_dtypes (pip install ml-dtypes)"))
            continue
        with precision.autocast(dtype):
            results.append(_compare(f"train {name}", train_losses(device, steps), on_cpu, LOW_PRECISION_RTOL))
    cupy = backend.xp_for(device)
    precision.set_tf32(cupy, True)
    try:
        results.append(_compare("train tf32", train_losses(device, steps), on_cpu, LOW_PRECISION_RTOL))
    finally:
        precision.set_tf32(cupy, False)
    return results


def check_benchmark(device):
    """(name, status, detail): a vit_cifar_tiny training step, npvit against PyTorch on the same GPU."""
    try:
        import torch
    except ImportError:
        return [("bench", "SKIP", "PyTorch is not installed")]
    if not torch.cuda.is_available():
        return [("bench", "SKIP", "PyTorch has no CUDA device here")]
    from . import bench

    images, labels = bench.random_batch(create_model("vit_cifar_tiny").cfg, 128)
    times = {}
    for lib, runner in (("npvit", bench.npvit_runner), ("torch", bench.torch_runner)):
        _, step = runner("vit_cifar_tiny", "train", images, labels, device)
        step()
        sync = (lambda: torch.cuda.synchronize()) if lib == "torch" else (lambda: bench._synchronize(device))
        sync()
        start = time.perf_counter()
        for _ in range(10):
            step()
        sync()
        times[lib] = (time.perf_counter() - start) / 10
    return [("bench", "PASS", f"vit_cifar_tiny batch 128 train step: npvit {times['npvit'] * 1e3:.1f} ms, "
                              f"PyTorch {times['torch'] * 1e3:.1f} ms (ratio {times['torch'] / times['npvit']:.2f})")]


def main(argv=None) -> int:
    """Run every check and print one verdict line each; 0 if none failed, 1 if any did, 2 without a device."""
    parser = argparse.ArgumentParser(prog="python -m npvit.selfcheck", description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="gpu", help="the device to check (gpu, gpu:N)")
    parser.add_argument("--steps", type=int, default=50, help="training steps compared with the CPU")
    args = parser.parse_args(argv)
    try:
        device = backend.device_name(args.device)
        backend.xp_for(device)
    except DeviceError as e:
        print(f"npvit.selfcheck: {e}", file=sys.stderr)
        return 2
    if device == "cpu":
        print("npvit.selfcheck: --device cpu checks nothing: the CPU is the reference; use --device gpu",
              file=sys.stderr)
        return 2
    results = check_kernels() + check_gradients(device) + check_training(device, args.steps) + check_benchmark(device)
    for name, status, detail in results:
        print(f"{status} {name}: {detail}")
    failed = [name for name, status, _ in results if status == "FAIL"]
    print(f"{'FAIL' if failed else 'PASS'} selfcheck on {device}: {len(results) - len(failed)} of "
          f"{len(results)} checks did not fail" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
