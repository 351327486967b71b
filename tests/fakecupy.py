"""A strict CuPy stand-in on NumPy, so CI runs the ``--device gpu`` path on a CPU.

``NPVIT_FAKE_CUPY=1`` makes ``autograd.backend`` import this module as ``cupy`` (tests/
must be on ``sys.path``; pytest puts it there). It is strict where CuPy is strict and a
CPU forgives, which is where GPU bugs hide:

- an array refuses ``__array__`` and NumPy operands (``TypeError``, as CuPy does), so a
  host array in a device op or an implicit device-to-host conversion fails here as on a
  GPU; the host is reached only by ``.get()`` / ``asnumpy``;
- it exposes only names CuPy 14.2.0 has (``tests/test_gpu_path.py`` checks each against
  the real package when it imports), and CuPy's device generator (``random.default_rng``
  gives a ``random.Generator`` with CuPy's 18 methods only: no ``normal``, ``choice``,
  ``permutation`` or ``shuffle``);
- a registered fused kernel runs its NumPy twin through ``as_one_launch``, which
  counts the one launch the kernel would be and none of the twin's own;
- ``meter`` counts array-op launches and host syncs (``.get()``, ``asnumpy``, ``float()``,
  ``int()``, ``bool()``, ``.item()``, ``.tolist()``, printing, synchronising) and uploads
  (host-to-device copies), each by the caller's ``file:line`` outside this module.

``NPVIT_FAKE_CUPY=no-cublas`` makes every matmul raise as CuPy does when libcublas is
missing, to test the start-up probe. Names that are the stand-in's own are in STANDIN_API.
"""
from __future__ import annotations

import builtins  # the module defines its own any, all, sum, max, ... as CuPy does
import math
import os
import sys
import types
from collections import Counter as _Counter

import numpy as np

STANDIN_API = ("STANDIN_API", "meter", "install", "mode", "Meter", "as_one_launch")
__version__ = "14.2.0"
mode = "1"  # the value of NPVIT_FAKE_CUPY; install() sets it
_THIS = os.path.abspath(__file__)
_ROOT = os.path.dirname(os.path.dirname(_THIS))


class Meter:
    """Launches, syncs and uploads counted by the source line outside the stand-in that caused them."""

    def __init__(self):
        self.launches, self.syncs, self.uploads = _Counter(), _Counter(), _Counter()
        self.quiet = 0  # > 0 inside as_one_launch: the twin's own launches are not the device's

    def reset(self):
        """Forget every count."""
        self.__init__()

    @staticmethod
    def _site() -> str:
        f = sys._getframe(2)
        while f is not None and os.path.abspath(f.f_code.co_filename) == _THIS:
            f = f.f_back
        if f is None:
            return "?"
        return f"{os.path.relpath(f.f_code.co_filename, _ROOT)}:{f.f_lineno}"

    def launch(self):
        if not self.quiet:
            self.launches[self._site()] += 1

    def sync(self):
        self.syncs[self._site()] += 1

    def upload(self):
        self.uploads[self._site()] += 1


meter = Meter()


# --- operands ------------------------------------------------------------------------------
def _unwrap(x, seq=True):
    """The NumPy array behind a device operand; host arrays are refused as CuPy refuses them."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, np.ndarray):
        raise TypeError(f"Unsupported type {type(x)}")
    if seq and isinstance(x, (list, tuple)):
        return type(x)(_unwrap(v) for v in x)
    return x


def _wrap(r):
    """Device arrays for NumPy results; a NumPy scalar becomes a 0-d array as CuPy returns."""
    if isinstance(r, (np.ndarray, np.generic)):
        return ndarray(np.asarray(r))
    if isinstance(r, (list, tuple)):
        return (list if isinstance(r, list) else tuple)(_wrap(v) for v in r)  # NumPy's named tuples as tuples
    return r


def _has_array(r) -> bool:
    return isinstance(r, ndarray) or (isinstance(r, (list, tuple)) and builtins.any(_has_array(v) for v in r))


# what may return a view of its input: a launch only when it had to copy (as CuPy does)
_VIEWS = {"reshape", "transpose", "swapaxes", "ravel", "squeeze", "view", "broadcast_to", "moveaxis",
          "expand_dims", "diagonal", "astype", "rollaxis", "T", "real", "imag", "broadcast_arrays", "split",
          "array_split", "hsplit", "vsplit", "ascontiguousarray"}


def _copied(r, source) -> bool:
    if isinstance(r, (list, tuple)):
        return builtins.any(_copied(v, source) for v in r)
    return not (isinstance(source, np.ndarray) and np.may_share_memory(r._a, source))


def _call(func, args, kwargs, launch=True, host=(), name=None, source=None):
    out = kwargs.get("out")
    plain = [a if i in host else _unwrap(a) for i, a in enumerate(args)]
    r = func(*plain, **{k: v if k in host else _unwrap(v) for k, v in kwargs.items()})
    r = out if isinstance(out, ndarray) and r is out._a else _wrap(r)
    if launch and _has_array(r):
        if name not in _VIEWS or _copied(r, source if source is not None else plain[0] if plain else None):
            meter.launch()
    return r


# parameters that CuPy reads on the host (sizes, split points, shapes): host arrays are fine there
_HOST_PARAMETERS = {"split": (1, "indices_or_sections"), "array_split": (1, "indices_or_sections"),
                    "hsplit": (1,), "vsplit": (1,), "pad": (1, "pad_width"), "unravel_index": (1, "shape"),
                    "reshape": (1, "newshape", "shape"), "broadcast_to": (1, "shape"), "tile": (1, "reps"),
                    "transpose": (1, "axes"), "full": (0, "shape"), "zeros": (0, "shape"), "ones": (0, "shape"),
                    "empty": (0, "shape"), "roll": (1, "shift")}


def _function(name, func=None, launch=True):
    func = func or getattr(np, name)
    host = _HOST_PARAMETERS.get(name, ())

    def f(*args, **kwargs):
        return _call(func, args, kwargs, launch, host, name)

    f.__name__ = f.__qualname__ = name
    f.__doc__ = f"cupy.{name} on the stand-in (NumPy's, device operands only)."
    return f


class ufunc:
    """A CuPy ufunc: NumPy's, on device operands only; ``at`` and ``reduce`` as CuPy has them."""

    def __init__(self, np_ufunc):
        self._u = np_ufunc
        self.__name__ = self.name = np_ufunc.__name__
        self.nin, self.nout, self.nargs = np_ufunc.nin, np_ufunc.nout, np_ufunc.nargs

    def __call__(self, *args, **kwargs):
        for a in args:
            if isinstance(a, (list, tuple)):
                raise TypeError(f"Unsupported type {type(a)}")
        return _call(self._u, args, kwargs)

    def at(self, a, indices, b=None):
        """In-place unbuffered operation, like ``numpy.ufunc.at``."""
        meter.launch()
        self._u.at(_unwrap(a), _unwrap(indices), *(() if b is None else (_unwrap(b),)))

    def reduce(self, *args, **kwargs):
        """A reduction along an axis."""
        return _call(self._u.reduce, args, kwargs)

    def outer(self, *args, **kwargs):
        """The ufunc on every pair of elements."""
        return _call(self._u.outer, args, kwargs)


class ndarray:
    """A device array: a NumPy array that reaches the host only through ``get()``."""

    __slots__ = ("_a",)

    def __init__(self, a):
        self._a = a

    # what CuPy refuses
    def __array__(self, *args, **kwargs):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, u, method, *inputs, **kwargs):
        own = _UFUNC_OBJECTS.get(u.__name__)
        if own is None or method not in ("__call__", "reduce", "outer"):
            return NotImplemented
        return (own if method == "__call__" else getattr(own, method))(*inputs, **kwargs)

    def __array_function__(self, func, types_, args, kwargs):
        own = _module.__dict__.get(func.__name__)
        if own is None or not callable(own):
            return NotImplemented
        return own(*args, **kwargs)

    # attributes without a kernel
    shape = property(lambda self: self._a.shape)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    dtype = property(lambda self: self._a.dtype)
    strides = property(lambda self: self._a.strides)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    flags = property(lambda self: self._a.flags)
    base = property(lambda self: None if self._a.base is None else ndarray(self._a.base))
    T = property(lambda self: ndarray(self._a.T))
    mT = property(lambda self: ndarray(np.swapaxes(self._a, -1, -2)))
    device = property(lambda self: _Device(0))

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (ndarray(v) for v in self._a)

    # what reaches the host: each a sync
    def get(self, stream=None, order="C", out=None, blocking=True):
        """Copy to the host (a sync)."""
        meter.sync()
        return np.array(self._a, order=order)

    def __format__(self, spec):
        meter.sync()
        return format(self._a.item() if self._a.ndim == 0 else self._a, spec)

    def set(self, arr, stream=None):
        """Copy a host array into this one."""
        meter.upload()
        self._a[...] = np.asarray(arr)

    # indexing: CuPy takes host index arrays and host values (it copies them up)
    @staticmethod
    def _index(key):
        keys = key if isinstance(key, tuple) else (key,)
        advanced = builtins.any(isinstance(k, (ndarray, np.ndarray, list)) for k in keys)
        if builtins.any(isinstance(k, np.ndarray) for k in keys):
            meter.upload()
        return tuple(k._a if isinstance(k, ndarray) else k for k in keys), advanced

    def __getitem__(self, key):
        key, advanced = self._index(key)
        if advanced:
            meter.launch()
        return ndarray(np.asarray(self._a[key]))

    def __setitem__(self, key, value):
        key, _ = self._index(key)
        if isinstance(value, np.ndarray):
            meter.upload()
        meter.launch()
        self._a[key] = value._a if isinstance(value, ndarray) else value

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    __hash__ = None


def _binary(name, reflected=False, inplace=False):
    u = getattr(np, name)

    def op(self, other):
        if isinstance(other, (list, tuple)):
            raise TypeError(f"Unsupported type {type(other)}")
        o = _unwrap(other)
        meter.launch()
        if inplace:
            u(self._a, o, out=self._a)
            return self
        return ndarray(np.asarray(u(o, self._a) if reflected else u(self._a, o)))

    return op


for _dunder, _np_name in [("add", "add"), ("sub", "subtract"), ("mul", "multiply"), ("truediv", "true_divide"),
                          ("floordiv", "floor_divide"), ("mod", "remainder"), ("pow", "power"),
                          ("matmul", "matmul"), ("and", "bitwise_and"), ("or", "bitwise_or"),
                          ("xor", "bitwise_xor"), ("lshift", "left_shift"), ("rshift", "right_shift")]:
    setattr(ndarray, f"__{_dunder}__", _binary(_np_name))
    setattr(ndarray, f"__r{_dunder}__", _binary(_np_name, reflected=True))
    if _dunder != "matmul":  # CuPy has no in-place matmul
        setattr(ndarray, f"__i{_dunder}__", _binary(_np_name, inplace=True))
for _dunder, _np_name in [("eq", "equal"), ("ne", "not_equal"), ("lt", "less"), ("le", "less_equal"),
                          ("gt", "greater"), ("ge", "greater_equal")]:
    setattr(ndarray, f"__{_dunder}__", _binary(_np_name))
for _dunder, _np_name in [("neg", "negative"), ("pos", "positive"), ("abs", "absolute"), ("invert", "invert")]:
    setattr(ndarray, f"__{_dunder}__", (lambda u: lambda self: (meter.launch(), ndarray(np.asarray(u(self._a))))[1])(
        getattr(np, _np_name)))

# methods: a launch each, but a view (reshape, transpose, ...) only when it had to copy
_METHODS = ("all", "any", "argmax", "argmin", "argsort", "astype", "clip", "copy", "cumsum", "cumprod", "diagonal",
            "dot", "fill", "flatten", "max", "mean", "min", "nonzero", "prod", "ptp", "put", "ravel", "repeat",
            "reshape", "round", "sort", "squeeze", "std", "sum", "swapaxes", "take", "trace", "transpose", "var",
            "view", "conj", "conjugate", "searchsorted", "partition", "argpartition")
for _name in _METHODS:
    setattr(ndarray, _name,
            (lambda n: lambda self, *a, **k: _call(getattr(self._a, n), a, k, name=n, source=self._a))(_name))


def _to_host(convert, doc=None):
    def method(self):
        meter.sync()
        return convert(self._a)

    method.__doc__ = doc
    return method


ndarray.item = _to_host(np.ndarray.item, "The single element as a Python scalar (a sync).")
ndarray.tolist = _to_host(np.ndarray.tolist, "The array as nested lists (a sync).")
for _convert in (float, int, complex, bool, repr, str):
    setattr(ndarray, f"__{_convert.__name__}__", _to_host(_convert))
ndarray.real = property(lambda self: ndarray(self._a.real))
ndarray.imag = property(lambda self: ndarray(self._a.imag))


# --- the module's functions ----------------------------------------------------------------
_UFUNCS = ("abs", "absolute", "add", "arccos", "arcsin", "arctan", "arctan2", "bitwise_and", "bitwise_or",
           "bitwise_xor", "cbrt", "ceil", "copysign", "cos", "cosh", "deg2rad", "degrees", "divide", "divmod",
           "equal", "exp", "exp2", "expm1", "fabs", "floor", "floor_divide", "fmax", "fmin", "fmod", "greater",
           "greater_equal", "hypot", "invert", "isfinite", "isinf", "isnan", "left_shift", "less", "less_equal",
           "log", "log10", "log1p", "log2", "logaddexp", "logical_and", "logical_not", "logical_or", "logical_xor",
           "maximum", "minimum", "mod", "multiply", "negative", "not_equal", "positive", "power", "rad2deg",
           "radians", "reciprocal", "remainder", "right_shift", "rint", "sign", "signbit", "sin", "sinh", "sqrt",
           "square", "subtract", "tan", "tanh", "true_divide", "trunc")
_UFUNC_OBJECTS = {n: ufunc(getattr(np, n)) for n in _UFUNCS}
_UFUNC_OBJECTS.update({getattr(np, n).__name__: _UFUNC_OBJECTS[n] for n in _UFUNCS})
_FUNCTIONS = ("all", "allclose", "amax", "amin", "any", "arange", "argmax", "argmin", "argsort", "argwhere",
              "around", "array_equal", "array_split", "ascontiguousarray", "atleast_2d", "average", "bincount",
              "broadcast_arrays", "broadcast_to", "clip", "column_stack", "concatenate", "copy", "copyto",
              "count_nonzero", "cumprod", "cumsum", "diag", "diagonal", "diff", "dot", "dstack", "einsum", "empty",
              "empty_like", "expand_dims", "eye", "flatnonzero", "flip", "full", "full_like", "hsplit", "hstack",
              "identity", "indices", "inner", "interp", "isclose", "kron", "linspace", "logspace", "max",
              "mean", "median", "meshgrid", "min", "moveaxis", "nan_to_num", "nanmax", "nanmean", "nanmin", "nansum",
              "nonzero", "ones", "ones_like", "outer", "pad", "percentile", "prod", "ptp", "put", "quantile", "ravel",
              "repeat", "reshape", "roll", "rollaxis", "rot90", "round", "searchsorted", "select", "sort", "split",
              "squeeze", "stack", "std", "sum", "swapaxes", "take", "take_along_axis", "tensordot", "tile",
              "trace", "transpose", "tri", "tril", "triu", "unique", "unravel_index", "var", "vdot", "vsplit",
              "vstack", "where", "zeros", "zeros_like")
_HOST = ("bool_", "can_cast", "complex64", "complex128", "dtype", "e", "finfo", "float16", "float32", "float64",
         "floating", "generic", "iinfo", "inf", "int8", "int16", "int32", "int64", "integer", "isscalar", "nan",
         "ndim", "newaxis", "number", "pi", "promote_types", "result_type", "shape", "size", "uint8", "uint16",
         "uint32", "uint64", "broadcast_shapes", "issubdtype", "min_scalar_type", "common_type")

_module = sys.modules[__name__]
for _name, _u in _UFUNC_OBJECTS.items():
    if _name in _UFUNCS:
        setattr(_module, _name, _u)
for _name in _FUNCTIONS:
    setattr(_module, _name, _function(_name))
for _name in _HOST:
    setattr(_module, _name, getattr(np, _name))


def _matmul(a, b, out=None, **kwargs):
    if mode == "no-cublas":  # what CuPy raises when it cannot load the cuBLAS library
        raise ImportError("libcublas.so.12: cannot open shared object file: No such file or directory")
    return _call(np.matmul, (a, b), {"out": out, **kwargs} if out is not None else kwargs)


matmul = _matmul
matmul.__name__ = "matmul"
ndarray.__matmul__ = lambda self, other: _matmul(self, other)
ndarray.__rmatmul__ = lambda self, other: _matmul(other, self)


def asarray(a, dtype=None, order=None, *, blocking=False):
    """A device array from a device array (no copy unless the dtype changes) or host data (an upload)."""
    if isinstance(a, ndarray):
        if dtype is None or np.dtype(dtype) == a.dtype:
            return a
        meter.launch()
        return ndarray(a._a.astype(dtype))
    meter.upload()
    return ndarray(np.array(a, dtype=dtype, order=order or "K"))


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
    """A copy on the device of a device array (a launch) or of host data (an upload)."""
    if isinstance(obj, ndarray):
        meter.launch()
        return ndarray(np.array(obj._a, dtype=dtype, order=order, ndmin=ndmin))
    meter.upload()
    return ndarray(np.array(obj, dtype=dtype, order=order, ndmin=ndmin))


def asnumpy(a, stream=None, order="C", out=None, *, blocking=True):
    """Copy a device array to the host (a sync); host data passes through."""
    if isinstance(a, ndarray):
        return a.get(order=order)
    return np.asarray(a, order=order)


def as_one_launch(twin, *args, **kwargs):
    """Run a fused kernel's NumPy twin on device arrays as the kernel: one launch, at the caller's line.

    Syncs and uploads inside the twin still count: the kernel would have none.
    """
    meter.launch()
    meter.quiet += 1
    try:
        return twin(*args, **kwargs)
    finally:
        meter.quiet -= 1


def get_array_module(*args):
    """This module if any argument is a device array, else numpy."""
    return _module if builtins.any(isinstance(a, ndarray) for a in args) else np


# --- submodules ----------------------------------------------------------------------------
def _submodule(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    return m


class _Generator:
    """CuPy's ``cupy.random.Generator``: draws on the device, only the methods CuPy's has."""

    def __init__(self, bit_generator):
        self._g = np.random.default_rng(bit_generator)

    def _draw(self, method, cast, *args, **kwargs):
        meter.launch()
        r = getattr(self._g, method)(*(_unwrap(a) for a in args), **{k: _unwrap(v) for k, v in kwargs.items()})
        r = np.asarray(r)
        return ndarray(r if cast is None else r.astype(cast, copy=False))

    def random(self, size=None, dtype=np.float64, out=None):
        """Uniform floats in [0, 1)."""
        return self._draw("random", None, size, dtype=dtype)

    def standard_normal(self, size=None, dtype=np.float64, out=None):
        """Standard normal draws."""
        return self._draw("standard_normal", None, size, dtype=dtype)

    def integers(self, low, high=None, size=None, dtype=np.int64, endpoint=False):
        """Integers in [low, high)."""
        return self._draw("integers", None, low, high, size, dtype=dtype, endpoint=endpoint)

    def uniform(self, low=0.0, high=1.0, size=None, dtype=np.float64):
        """Uniform floats in [low, high)."""
        return self._draw("uniform", dtype, low, high, size)

    def beta(self, a, b, size=None, dtype=np.float64):
        """Beta(a, b) draws."""
        return self._draw("beta", dtype, a, b, size)

    def exponential(self, scale=1.0, size=None, dtype=np.float64):
        """Exponential draws."""
        return self._draw("exponential", dtype, scale, size)

    def gamma(self, shape, scale=1.0, size=None, dtype=np.float64):
        """Gamma draws."""
        return self._draw("gamma", dtype, shape, scale, size)

    def poisson(self, lam=1.0, size=None):
        """Poisson draws."""
        return self._draw("poisson", None, lam, size)

    def binomial(self, n, p, size=None):
        """Binomial draws."""
        return self._draw("binomial", None, n, p, size)


def _default_rng(seed=None):
    """A device generator seeded like CuPy's (an integer seed)."""
    return _Generator(seed)


random = _submodule("cupy.random", Generator=_Generator, default_rng=_default_rng)


class _CUDARuntimeError(RuntimeError):
    """CuPy's error for a failed CUDA runtime call."""


def _getDeviceCount():
    """One visible device."""
    return 1


class _Device:
    """``cupy.cuda.Device``: the one stand-in device."""

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)
        if self.id != 0:
            raise _CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")

    def use(self):
        """Make it current."""

    def synchronize(self):
        """Wait for the device (a sync)."""
        meter.sync()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Stream:
    """``cupy.cuda.Stream``: the current stream."""

    def synchronize(self):
        """Wait for the stream (a sync)."""
        meter.sync()


_runtime = _submodule("cupy.cuda.runtime", getDeviceCount=_getDeviceCount, CUDARuntimeError=_CUDARuntimeError)
cuda = _submodule("cupy.cuda", Device=_Device, Stream=_Stream, runtime=_runtime,
                  get_current_stream=lambda device=None: _Stream())


def _svd(a, full_matrices=True, compute_uv=True):
    return _call(np.linalg.svd, (a,), dict(full_matrices=full_matrices, compute_uv=compute_uv))


linalg = _submodule("cupy.linalg", svd=_svd, norm=_function("norm", np.linalg.norm))
lib = _submodule("cupy.lib", stride_tricks=_submodule(
    "cupy.lib.stride_tricks",
    as_strided=lambda x, shape=None, strides=None: ndarray(np.lib.stride_tricks.as_strided(_unwrap(x), shape, strides))))


# CuPy's per-dtype cuBLAS compute type (cupy/_core/_routines_linalg.pyx): the constants' values are CuPy's;
# TBD means "not chosen yet", which CuPy turns into DEFAULT (or TF32 under CUPY_TF32) at the first product
_linalg = _submodule("cupy._core._routines_linalg", COMPUTE_TYPE_TBD=0, COMPUTE_TYPE_DEFAULT=1,
                     COMPUTE_TYPE_PEDANTIC=2, COMPUTE_TYPE_FP16=3, COMPUTE_TYPE_FP32=4, COMPUTE_TYPE_FP64=5,
                     COMPUTE_TYPE_BF16=6, COMPUTE_TYPE_TF32=7)
_compute_types = {}  # dtype name -> compute type, as set


def _set_compute_type(dtype, compute_type):
    """Choose the cuBLAS compute type of ``dtype``'s products (the stand-in computes in NumPy whatever it is)."""
    if compute_type not in range(8):
        raise ValueError(f"Unknown compute type: {compute_type}")
    _compute_types[np.dtype(dtype).name] = compute_type


def _get_compute_type(dtype):
    """The compute type ``set_compute_type`` chose for ``dtype``; DEFAULT until one was."""
    return _compute_types.get(np.dtype(dtype).name, _linalg.COMPUTE_TYPE_DEFAULT)


_set_compute_type.__name__, _get_compute_type.__name__ = "set_compute_type", "get_compute_type"
_linalg.set_compute_type, _linalg.get_compute_type = _set_compute_type, _get_compute_type
_core = _submodule("cupy._core", set_compute_type=_set_compute_type, get_compute_type=_get_compute_type,
                   _routines_linalg=_linalg)


def _scatter_add(a, slices, value):
    """``cupyx.scatter_add``: unbuffered ``a[slices] += value``."""
    meter.launch()
    np.add.at(_unwrap(a), _unwrap(slices) if not isinstance(slices, tuple) else tuple(map(_unwrap, slices)),
              _unwrap(value))


_erf = np.frompyfunc(math.erf, 1, 1)
_special = _submodule("cupyx.scipy.special",
                     erf=lambda x: _call(lambda v: _erf(v).astype(v.dtype), (x,), {}))
_cupyx = _submodule("cupyx", scatter_add=_scatter_add, scipy=_submodule("cupyx.scipy", special=_special))


def install(value="1"):
    """Make ``import cupy`` (and its submodules, and cupyx) give this stand-in; ``value`` picks the mode."""
    global mode
    mode = value
    sys.modules.update({"cupy": _module, "cupy.random": random, "cupy.cuda": cuda, "cupy.cuda.runtime": _runtime,
                        "cupy.linalg": linalg, "cupy.lib": lib, "cupy._core": _core,
                        "cupy._core._routines_linalg": _linalg, "cupy.lib.stride_tricks": lib.stride_tricks,
                        "cupyx": _cupyx, "cupyx.scipy": _cupyx.scipy, "cupyx.scipy.special": _special})
    return _module
