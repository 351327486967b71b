"""The fused RandAugment kernel (npvit/data/augment_kernel.py): npvit registers it, its twin is the CPU path
bit for bit, its per-image code compiled for the host agrees with the twin, and on the stand-in the augmentation
takes it.

nvcc's compile test and the launcher's signature check are test_kernels.py's, run for every
registered kernel, this one among them.
"""
import ctypes
import shutil
import subprocess

import numpy as np
import pytest

from autograd import backend, kernels
from npvit.data import Augment, augment, seed_generator
from npvit.data import augment_kernel as kernel
from test_gpu_path import gpu  # noqa: F401  (the stand-in fixture)


def _case(seed, dtype, shape, num_ops=2):
    """A batch of ``shape`` in ``dtype`` (float ones off the integers) and its RandAugment plan."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, shape).astype(dtype)
    if dtype != np.uint8:
        x = x + rng.uniform(-3, 3, shape).astype(dtype)
    plan, warp, colour = augment._rand_augment_plan(seed_generator(seed, "rand"), *shape, num_ops, 9.0,
                                                    augment.RAND_AUGMENT_OPS)
    return x, plan, warp, colour


def _table(plan):
    return plan["kernel:codes"], plan["kernel:params"], plan["kernel:matrix"], plan["kernel:moved"]


SHAPES = [(48, 3, 9, 11), (24, 1, 8, 8), (3, 3, 2, 5)]


def test_npvit_registers_the_kernel_with_its_own_colour_ops_as_the_twin(monkeypatch):
    registered = kernels.KERNELS["rand_augment"]
    assert registered.twin is kernel.rand_augment_forward and registered.source is kernel.SOURCE
    assert registered.tolerances == {name: (1e-3, 0.0) for name in ("float32", "float16", "bfloat16")}
    x, codes = np.full((2, 3, 4, 4), 100.0, np.float32), np.array([[2], [0]], np.int32)  # brightness, nothing
    table = (codes, np.full((2, 1), 0.5, np.float32), np.zeros((2, 2, 3), np.float32), np.zeros(2, np.int32))
    assert (kernel.rand_augment_forward(x, *table, augment.GREY)[0] == 50.0).all()
    monkeypatch.setitem(augment._COLOUR_OPS, "brightness", lambda x, factor: x + 1)  # augment.py's op, no copy
    out = kernel.rand_augment_forward(x, *table, augment.GREY)
    assert (out[0] == 101.0).all() and (out[1] == 100.0).all()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_twin_is_the_cpu_path_bit_for_bit(seed, dtype, shape):
    x, plan, warp, colour = _case(seed, dtype, shape, num_ops=3)
    assert colour and warp  # ops of both kinds drawn
    want = augment._rand_augment(x, plan, warp, colour, augment.GREY)
    np.testing.assert_array_equal(kernel.rand_augment_forward(x, *_table(plan), augment.GREY), want)


def test_the_table_gives_each_image_its_colour_ops_in_the_cpu_paths_order():
    _, plan, _, colour = _case(0, np.uint8, (64, 3, 4, 4))
    codes = plan["kernel:codes"]
    for op in colour:
        images = plan[op]
        assert (codes[images] == augment.COLOUR_OPS.index(op) + 1).any(axis=1).all()
    for row in codes:  # no gaps, and in the order of RAND_AUGMENT_OPS
        used = row[row > 0]
        assert list(used) == sorted(used) and (row[len(used):] == 0).all()
    np.testing.assert_array_equal(np.flatnonzero(plan["kernel:moved"]), plan["moved"])


# --- the kernel's code on the host: one thread per block, the CUDA intrinsics as plain float32 ------------
HOST_SHIM = r"""
#include <cmath>
#define __device__
#define __forceinline__ inline
struct Dim { int x; };
static Dim threadIdx = {0}, blockDim = {1}, blockIdx = {0}, gridDim = {1};
static inline void __syncthreads() {}
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float block_sum(float v) { return v; }
static inline float block_max(float v) { return v; }
static inline float ld(float v) { return v; }
#define RUN(name, In) extern "C" void name(const In* x, const int* codes, const float* params, const float* matrix, \
    const int* moved, float* out, float* scratch, int B, int C, int H, int W, int slots, float fill) { \
    gridDim.x = B; \
    for (blockIdx.x = 0; blockIdx.x < B; ++blockIdx.x) \
        rand_augment_image(x, codes, params, matrix, moved, out, scratch, C, H, W, slots, fill); }
"""


@pytest.fixture(scope="module")
def host_kernel(tmp_path_factory):
    """The kernel's per-image code (the source's common part) built with g++ without contraction."""
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ not found: cannot build the kernel's code for the host")
    tmp = tmp_path_factory.mktemp("rand_augment")
    (tmp / "k.cpp").write_text(HOST_SHIM + kernel.SOURCE.common + "\nRUN(run_u8, unsigned char)\nRUN(run_f32, float)\n")
    subprocess.run([compiler, "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-o", str(tmp / "k.so"),
                    str(tmp / "k.cpp")], check=True, capture_output=True)
    return ctypes.CDLL(str(tmp / "k.so"))


def _on_host(lib, x, codes, params, matrix, moved, fill):
    arrays = [np.ascontiguousarray(a) for a in (x, codes, params, matrix, moved)]
    B, C, H, W = x.shape
    out, scratch = np.empty(x.shape, np.float32), np.empty((2, *x.shape), np.float32)
    run = lib.run_u8 if x.dtype == np.uint8 else lib.run_f32
    run(*[a.ctypes.data_as(ctypes.c_void_p) for a in (*arrays, out, scratch)], B, C, H, W, codes.shape[1],
        ctypes.c_float(fill))
    return out


@pytest.mark.parametrize("shape", SHAPES + [(16, 3, 32, 32)])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_the_kernels_code_on_the_host_matches_the_twin_within_its_tolerance(host_kernel, dtype, shape):
    x, plan, _, _ = _case(3, dtype, shape)
    atol, _ = kernels.KERNELS["rand_augment"].tolerances["float32"]
    got = _on_host(host_kernel, x, *_table(plan), augment.GREY)
    # contrast's mean summed in one sequential pass here, the worst order: still well inside
    np.testing.assert_allclose(got, kernel.rand_augment_forward(x, *_table(plan), augment.GREY), rtol=0, atol=atol / 4)


def test_the_kernels_code_on_the_host_passes_the_self_checks_cases(host_kernel):
    atol, _ = kernels.KERNELS["rand_augment"].tolerances["float32"]
    for args in kernel._sample(np.random.default_rng(0), np.dtype(np.float32)):
        np.testing.assert_allclose(_on_host(host_kernel, *args), kernel.rand_augment_forward(*args), rtol=0, atol=atol)


# --- on the stand-in ----------------------------------------------------------------------------------------
def _augment_launches(meter):
    return {site: n for site, n in meter.launches.items() if site.startswith("npvit/data/augment.py")}


def test_on_the_stand_in_randaugment_is_one_launch_and_the_hosts_images(gpu):  # noqa: F811
    kernels.reset()
    x, y = np.random.default_rng(0).integers(0, 256, (64, 3, 32, 32), dtype=np.uint8), np.arange(64) % 10
    aug = Augment((0.5,) * 3, (0.25,) * 3, 10, rand_ops=2)
    host = aug(x, y, seed_generator(4, "augment"))[0]
    backend.xp_for("gpu")
    x_dev, y_dev = gpu.asarray(x), gpu.asarray(y)
    aug(x_dev, y_dev, seed_generator(4, "augment"))  # the first use runs the self-check
    assert kernels.check("rand_augment").ok
    gpu.meter.reset()
    device = aug(x_dev, y_dev, seed_generator(4, "augment"))[0]
    np.testing.assert_array_equal(gpu.asnumpy(device), host)
    fused = _augment_launches(gpu.meter)
    kernels.disable()
    try:
        gpu.meter.reset()
        aug(x_dev, y_dev, seed_generator(4, "augment"))
    finally:
        kernels.enable()
        kernels.reset()
    plain = _augment_launches(gpu.meter)
    # normalise's three (scale, shift, divide) and the kernel; without it, every op's gather, math and scatter
    assert sum(fused.values()) <= 4 and sum(plain.values()) > 50, (fused, plain)
