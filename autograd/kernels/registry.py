"""The kernel registry: CUDA sources, their launchers and NumPy twins, and the self-check at first use.

A fused kernel is three things side by side: its CUDA source (plain C++ for a
``cupy.RawModule``, so ``nvcc -ptx`` compiles exactly what NVRTC will), a launcher with
the same signature as its twin, and the twin, written in xp-generic NumPy from the
existing ops' math: the reference and the fallback. ``get(name, dtype)`` hands out the
launcher only when three things hold: CuPy is loaded, the dtype is one the source is
instantiated for, and the kernel's self-check passed in this process. The self-check
runs the kernel once on a small random input from its ``sample`` and compares it with
the twin computed in float64 on the host, to a tolerance per dtype; a mismatch (or a
compile error) warns once, naming the kernel and its error, and ``get`` answers None
for the rest of the process, so the caller takes its CuPy path and a wrong kernel
never trains a model.

The families of autograd/kernels register themselves when ``autograd.kernels`` is
imported; code outside autograd adds its own with ``register`` and they are treated
alike.

On the CuPy stand-in of tests/fakecupy.py no CUDA runs: a kernel's launcher is its
twin, run through the stand-in's ``as_one_launch``, so it counts as the one launch the
kernel would be.

Source layout: every source is the shared PRELUDE, then the family's dtype-independent
``common`` part, then its ``body`` once per dtype with ``scalar_t`` defined and every
kernel named ``NAME(base)``, which becomes ``base_f32``, ``base_f16`` or ``base_bf16``.
Arithmetic is float32 throughout; ``ld``/``st`` convert on load and store.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import backend

# dtype name -> (C type, kernel-name suffix)
CTYPES = {"float32": ("float", "f32"), "float16": ("__half", "f16"), "bfloat16": ("__nv_bfloat16", "bf16")}

# Every tolerance below is (atol, rtol) against the float64 twin on the same rounded
# inputs: float32 kernels differ by rounding order only; float16 and bfloat16 ones
# compute in float32 and round once on the store (bfloat16 keeps 8 mantissa bits to
# float16's 11), a few units in the last place where a twin computing in float16 (the
# stand-in's) rounds at every step. A wrong kernel is off by far more.
TOLERANCES = {"float32": (1e-5, 1e-4), "float16": (5e-3, 5e-3), "bfloat16": (3e-2, 3e-2)}

PRELUDE = r"""
#include <cuda_fp16.h>
#define NPVIT_CAT2(a, b) a##_##b
#define NPVIT_CAT(a, b) NPVIT_CAT2(a, b)
#define NAME(base) NPVIT_CAT(base, SUFFIX)

__device__ __forceinline__ float ld(float v) { return v; }
__device__ __forceinline__ float ld(__half v) { return __half2float(v); }
__device__ __forceinline__ void st(float* p, float v) { *p = v; }
__device__ __forceinline__ void st(__half* p, float v) { *p = __float2half_rn(v); }
#ifdef NPVIT_BF16
#include <cuda_bf16.h>
__device__ __forceinline__ float ld(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void st(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }
#endif

// Block-wide sum and max for row kernels (one block per row, blockDim.x a multiple of
// 32, at most 1024): a butterfly within each warp, one value per warp through shared
// memory, a butterfly over those; every thread gets the result. The leading barrier
// lets a kernel call them twice in a row without a warp overwriting what another reads.
__device__ float block_sum(float v) {
    __shared__ float part[32];
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
    __syncthreads();
    v = (threadIdx.x & 31) < (blockDim.x >> 5) ? part[threadIdx.x & 31] : 0.0f;
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ float block_max(float v) {
    __shared__ float part[32];
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    __syncthreads();
    if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = v;
    __syncthreads();
    v = (threadIdx.x & 31) < (blockDim.x >> 5) ? part[threadIdx.x & 31] : -INFINITY;
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// grid-stride loop over n elements, for the elementwise kernels
#define FOR_EACH(i, n) \
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < (n); \
         i += (long long)blockDim.x * gridDim.x)
"""


@dataclass(frozen=True)
class Source:
    """One family's CUDA source: ``common`` once, ``body`` once per dtype (see the module docstring)."""

    family: str
    common: str
    body: str

    def text(self, dtypes=tuple(CTYPES)) -> str:
        """The whole translation unit, the body instantiated for each of ``dtypes`` (bfloat16's header only for it)."""
        parts = ["#define NPVIT_BF16\n" if "bfloat16" in dtypes else "", PRELUDE, self.common]
        for name in dtypes:
            ctype, suffix = CTYPES[name]
            parts.append(f"#define scalar_t {ctype}\n#define SUFFIX {suffix}\n{self.body}\n#undef scalar_t\n#undef SUFFIX\n")
        return "\n".join(parts)


@dataclass
class Kernel:
    """A registry entry: the launcher ``launch(function, *args)`` and its ``twin(*args)``.

    ``function(dtype, base)`` gives the launcher the compiled kernel ``base_<suffix>``;
    ``sample(rng, dtype)`` makes the self-check's cases: a list of argument tuples, small
    host inputs (arrays in ``dtype`` where the kernel reads ``scalar_t``). Both return an array or a tuple of arrays;
    in-place kernels (the optimizers) return the buffers they changed.
    """

    name: str
    source: Source
    launch: Callable
    twin: Callable
    sample: Callable
    dtypes: tuple = tuple(CTYPES)
    tolerances: dict = field(default_factory=lambda: dict(TOLERANCES))


KERNELS: dict = {}
_verdicts: dict = {}  # name -> Verdict, the self-check's result, once per process
_switch = {"on": True}  # off (``disable``): every op takes its own CuPy path, as before the kernels


@dataclass(frozen=True)
class Verdict:
    """A kernel's self-check: passed or not, and one line saying why."""

    name: str
    ok: bool
    detail: str


def register(kernel: Kernel) -> Kernel:
    """Add a kernel to the registry (each name once) and return it; for kernels outside autograd too.

    A library built on autograd registers its own fused kernels with this, at import,
    the same way the modules of autograd/kernels do: from then on ``get`` gates it,
    ``check`` (and so a self-check over ``KERNELS``) proves it against its twin, and
    ``disable`` switches it off with the rest. Refused (ValueError): a name already
    taken, a dtype the sources are not instantiated for, a dtype without a tolerance.
    """
    if kernel.name in KERNELS:
        raise ValueError(f"kernel {kernel.name!r} registered twice")
    unknown = [name for name in kernel.dtypes if name not in CTYPES]
    if unknown:
        raise ValueError(f"kernel {kernel.name!r}: no source instantiation for {unknown}; choose from {list(CTYPES)}")
    untolerated = [name for name in kernel.dtypes if name not in kernel.tolerances]
    if untolerated:
        raise ValueError(f"kernel {kernel.name!r}: no tolerance for {untolerated}")
    KERNELS[kernel.name] = kernel
    return kernel


def _cupy():
    """The loaded cupy module (or its stand-in), None while only NumPy is in use."""
    return backend._cupy


def _on_standin(cupy) -> bool:
    return hasattr(cupy, "STANDIN_API")


@functools.lru_cache(maxsize=None)
def _module(source: Source, dtype_name: str):
    """The family's RawModule for one dtype, compiled by NVRTC on first use (CuPy caches the binary on disk).

    One module per dtype, so that a toolkit whose NVRTC lacks a header (cuda_bf16.h)
    costs that dtype only.
    """
    return _cupy().RawModule(code=source.text((dtype_name,)), options=("--std=c++14",))


def _function(source: Source, dtype, base: str):
    """The compiled kernel ``base`` of ``source`` for ``dtype``."""
    name = np.dtype(dtype).name
    return _module(source, name).get_function(f"{base}_{CTYPES[name][1]}")


def _callable(kernel: Kernel, cupy):
    """What ``get`` hands out: the CUDA launcher, or on the stand-in the twin counted as one launch."""
    if _on_standin(cupy):
        return functools.partial(cupy.as_one_launch, kernel.twin)
    return functools.partial(kernel.launch, functools.partial(_function, kernel.source))


def available_dtypes(kernel: Kernel) -> list:
    """The kernel's dtypes that NumPy can represent here (bfloat16 needs ml_dtypes)."""
    out = []
    for name in kernel.dtypes:
        try:
            out.append(np.dtype(name))
        except TypeError:
            continue
    return out


def _as_tuple(r):
    return r if isinstance(r, tuple) else (r,)


def _to_device(a, cupy):
    return cupy.asarray(a) if isinstance(a, np.ndarray) else a


def _float64(a):
    return a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a


def check(name: str, seed: int = 0) -> Verdict:
    """Run kernel ``name`` against its twin on a small random input in every available dtype; cached per process.

    The twin runs in float64 on the host on the same (rounded) inputs. On a mismatch
    or an error it warns one line and the kernel stays off for the rest of the process.
    """
    if name in _verdicts:
        return _verdicts[name]
    kernel, cupy = KERNELS[name], _cupy()
    if cupy is None:
        raise RuntimeError(f"kernel {name!r}: no GPU in use, nothing to check")
    run = _callable(kernel, cupy)
    checked, failure = [], None
    try:
        for dtype in available_dtypes(kernel):
            atol, rtol = kernel.tolerances[dtype.name]
            for case, args in enumerate(kernel.sample(np.random.default_rng(seed), dtype)):
                got = _as_tuple(run(*[_to_device(a, cupy) for a in args]))
                want = _as_tuple(kernel.twin(*[_float64(a) for a in args]))
                for i, (g, w) in enumerate(zip(got, want)):
                    g = backend.to_numpy(g).astype(np.float64)
                    err = np.abs(g - w)
                    bad = ~(err <= atol + rtol * np.abs(w)) & ~(np.isnan(g) & np.isnan(w))  # NaN only where the twin's is
                    if bad.any() and failure is None:
                        failure = (f"{dtype.name} case {case} output {i}: max error {np.nanmax(err):.3g} "
                                   f"(atol {atol:g}, rtol {rtol:g}), {int(bad.sum())} of {g.size} off")
            checked.append(dtype.name)
    except Exception as e:  # a compile or launch error is a failed check, not a crash
        failure = " ".join(f"{type(e).__name__}: {e}".split())[:300]
    if failure is not None:
        return _fail(Verdict(name, False, failure))
    _verdicts[name] = Verdict(name, True, "matches its twin in " + ", ".join(checked))
    return _verdicts[name]


def _fail(verdict: Verdict) -> Verdict:
    """Record a failed check and warn once: the kernel is replaced by its twin for the rest of the process."""
    _verdicts[verdict.name] = verdict
    warnings.warn(f"fused kernel {verdict.name} disagrees with its NumPy twin ({verdict.detail}); "
                  f"using the twin for the rest of this process", RuntimeWarning, stacklevel=3)
    return verdict


def get(name: str, dtype=np.float32):
    """The fused kernel ``name`` for arrays of ``dtype`` if it may be used, else None (the caller's own path).

    None on the CPU, while the kernels are switched off (``disable``), for a dtype the
    source is not instantiated for, and when the kernel's self-check failed; the first
    call on a GPU runs that check.
    """
    kernel, cupy = KERNELS[name], _cupy()
    if cupy is None or not _switch["on"] or np.dtype(dtype).name not in kernel.dtypes:
        return None
    if not check(name).ok:
        return None
    return _callable(kernel, cupy)


def disable() -> None:
    """Switch every kernel off: ``get`` answers None, so each op runs its CuPy path (to measure or test that path)."""
    _switch["on"] = False


def enable() -> None:
    """Switch the kernels back on (the default): ``get`` hands out each kernel whose self-check passes."""
    _switch["on"] = True


def reset() -> None:
    """Forget every self-check verdict and compiled module (for tests and a switch of device)."""
    _verdicts.clear()
    _module.cache_clear()


def grid_for(n: int, threads: int = 256) -> tuple:
    """A 1-D grid for a grid-stride loop over n elements: enough blocks to fill a GPU, no more."""
    return (max(1, min((n + threads - 1) // threads, 8192)),)


def row_threads(width: int) -> int:
    """Threads per block for a row kernel over rows of ``width``: a multiple of 32, at most 1024."""
    return min(1024, max(32, (width + 31) // 32 * 32))
