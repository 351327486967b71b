"""A small pool of threads for the CPU's elementwise work, as many as BLAS has.

NumPy runs each elementwise pass (an add, an exp, erf's two dozen) on one thread, while
BLAS spreads a matrix product over all of its threads; so on two cores the GELU, layer
norm, softmax and residual passes of a training step leave a core idle. NumPy releases
the GIL inside its loops, so Python threads, each walking its own contiguous run of the
cache-sized blocks an op already cuts its arrays into, do run at once.

What each block computes does not depend on which thread runs it, and no op here sums
across blocks in a thread-dependent order (partial sums go to one row per block and are
added in block order), so results are bit-identical for any number of threads and a run
resumes exactly.

The thread count is BLAS's: the first of ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
``MKL_NUM_THREADS`` that is set, else every core this process may use (as OpenBLAS);
``set_threads`` changes it. With one thread no pool is made and every block runs in the
caller. The pool's threads run NumPy loops only (never MPI, never a pool task of their
own), are made on first use, are forgotten in a forked child (the data loader's workers
make their own if they need one) and are joined when the interpreter exits.

OpenBLAS's own threads, once a product is done, spin for 2**28 cycles (about 0.1 s)
waiting for the next one before they sleep, on the cores that the pool's threads want
for the elementwise op that follows: on two cores a vit-tiny training step at two
threads ran at 54 images/s so, and at 60 with the pool off. ``OPENBLAS_THREAD_TIMEOUT``
shortens the spin (to 2**12 cycles: 63 images/s with the pool, products as fast);
OpenBLAS reads it once, when NumPy loads it, so this module sets it (unless it is
set) before NumPy is imported: ``autograd`` imports it first, and ``npvit`` imports
``autograd`` first.

A piece that calls BLAS (attention's per-piece products, layer norm's row means as
matrix-vector products) would hand each small product to OpenBLAS's threads while the
pool's other thread does the same: three or four threads on two cores, and a wake-up of
a sleeping BLAS thread per product. So while pieces run, OpenBLAS runs on one thread
(``openblas_set_num_threads_local``, OpenBLAS 0.3.27 on; NumPy's bundled build applies it
to the whole process, so the caller sets it before the pool starts and restores it once
every run has ended, and each run sets it too, for a build where it is per thread;
where NumPy's BLAS is not such an OpenBLAS, nothing changes). OpenBLAS splits a product
over its threads by output rows and columns, never within one sum, so this changes no bit.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "12")  # before NumPy loads OpenBLAS: see above

_threads = None  # the count in use; None until first asked
_pool = None  # ThreadPoolExecutor with _threads - 1 workers: the caller is the last thread
_lock = threading.Lock()
_worker = threading.local()
_blas_local = None  # OpenBLAS's openblas_set_num_threads_local, or a stand-in that does nothing


def default_threads() -> int:
    """BLAS's thread count as the environment sets it, else the cores this process may use."""
    for name in THREAD_VARIABLES:
        value = os.environ.get(name, "").split(",")[0].strip()
        if value.isdigit() and int(value) > 0:
            return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads() -> int:
    """How many threads the blocked elementwise work uses (the caller among them)."""
    global _threads
    if _threads is None:
        _threads = default_threads()
    return _threads


def set_threads(n: int) -> None:
    """Use ``n`` threads (1: none but the caller) from the next call on."""
    global _threads, _pool
    if n < 1:
        raise ValueError(f"threads must be at least 1, got {n}")
    with _lock:
        old, _pool = _pool, None
        _threads = n
    if old is not None:
        old.shutdown(wait=True)


def _get_pool() -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(threads() - 1, thread_name_prefix="autograd-blocks",
                                       initializer=_mark_worker)
        return _pool


def _mark_worker():
    _worker.active = True


def _set_blas_threads(n: int) -> int:
    """Set OpenBLAS's thread count to ``n`` (for this thread, or in NumPy's build for the process); return what it was."""
    global _blas_local
    if _blas_local is None:
        _blas_local = _find_blas_local()
    return _blas_local(n)


def _find_blas_local():
    """``openblas_set_num_threads_local`` of the OpenBLAS this process has loaded (NumPy's), else a no-op.

    The library is found by its path in ``/proc/self/maps`` (Linux): NumPy loads it
    privately, so its symbols are not in the process's global namespace.
    """
    import ctypes  # here, not above: only once a pool runs BLAS pieces

    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line}
    except OSError:
        paths = set()
    for path in sorted(paths):
        try:
            fn = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        return fn
    return lambda n: 0


def _forget_pool():
    """In a forked child: the parent's workers do not exist here; a pool is made again when needed."""
    global _pool
    _pool = None


os.register_at_fork(after_in_child=_forget_pool)


def _each(fn, pieces):
    return [fn(p) for p in pieces]


def _each_on_one_blas_thread(fn, pieces):
    blas_threads = _set_blas_threads(1)
    try:
        return _each(fn, pieces)
    finally:
        _set_blas_threads(blas_threads)


def run(fn, pieces) -> list:
    """``[fn(p) for p in pieces]``, the pieces shared out in contiguous runs, one run per thread.

    The caller takes the first run and waits for the rest, so when it returns every piece
    is done. A piece's exception ends its run and is raised once every run has ended, so
    no thread is still writing when the caller sees it. Called from a pool thread, it runs
    every piece there (a pool task never waits on the pool).
    """
    pieces = list(pieces)
    n = min(threads(), len(pieces))
    if n <= 1 or getattr(_worker, "active", False):
        return _each(fn, pieces)
    runs = [pieces[len(pieces) * i // n:len(pieces) * (i + 1) // n] for i in range(n)]
    blas_threads = _set_blas_threads(1)
    try:
        futures = [_get_pool().submit(_each_on_one_blas_thread, fn, r) for r in runs[1:]]
        try:
            results = _each(fn, runs[0])
        finally:
            for f in futures:
                f.exception()  # wait, whatever the caller's run did
    finally:
        _set_blas_threads(blas_threads)
    for f in futures:
        results.extend(f.result())
    return results
