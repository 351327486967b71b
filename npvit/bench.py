"""Benchmark: training steps and inference of a named ViT, npvit side by side with PyTorch.

    python -m npvit.bench --model vit-tiny --batch-size 128 --device cpu --threads 2
    python -m npvit.bench --model vit-s16 --batch-size 128 --device gpu --mode infer

Kernel launches and host syncs per step are printed beside the rates: npvit's where the
device counts them (the CuPy stand-in of ``tests/fakecupy.py``, e.g.
``NPVIT_FAKE_CUPY=1 PYTHONPATH=tests python -m npvit.bench --device gpu``), with the
registered fused kernels (each one launch) and without them, PyTorch's as its
non-view aten ops under a ``TorchDispatchMode`` with foreach AdamW.

A training step is what the trainer does for one batch: zero the gradients, forward,
cross-entropy, backward, AdamW step. Inference is a forward pass under ``no_grad`` in
eval mode. Both run on random images and labels, the data already on the device, so
the numbers are the model's and the engine's, not the data pipeline's.

When PyTorch is importable the same ViT is built in plain ``torch.nn``
(``npvit/torch_reference.py``) and trained with ``torch.optim.AdamW`` at its defaults, loaded with npvit's own initial weights, and timed in the same
process in alternation with npvit (npvit, PyTorch, npvit, PyTorch, ...), so that a
noisy machine slows both alike. Throughput is the median over the repeats; the ratio
printed is npvit / PyTorch, above 1 meaning npvit is faster (for memory: uses more).
Configs PyTorch's twin does not cover (the hybrid, 2-D or relative position
embeddings) are timed for npvit alone.

Threads: ``--threads N`` gives both the same number. NumPy's BLAS reads its thread
count from the environment when NumPy is first imported, so the command sets
``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` and ``MKL_NUM_THREADS`` and restarts
itself once; PyTorch gets ``torch.set_num_threads(N)``. Without ``--threads`` both
keep their defaults (all cores). NumPy's own elementwise loops use one thread; npvit's
blocked elementwise work (GELU, layer norm, attention's softmax, residual adds, the
optimizer) runs over a pool of as many threads as BLAS has (``autograd/parallel.py``),
as PyTorch's loops use all N.

Freed memory: glibc's malloc hands big freed blocks back to the kernel, and every
array made afterwards in that memory pays for fresh pages again (page faults, zeroing).
A training step makes and frees hundreds of megabytes of activations and gradients,
so with ``--keep-freed-memory`` the bench first asks malloc (``mallopt``) to keep freed
memory for reuse; it applies to the whole process, so to PyTorch as well. Without it,
the same effect comes from the environment:
``MALLOC_MMAP_THRESHOLD_=1073741824 MALLOC_TRIM_THRESHOLD_=4294967296``.

Peak memory: on the CPU, how much a fresh Python process grows its peak resident set
while it builds the model, the optimizer and the batch and runs two steps, measured
the same way for both libraries (Linux ``/proc/self/status`` VmHWM); on a GPU, the bytes CuPy's memory pool holds after a step
versus ``torch.cuda.max_memory_allocated``.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import time

import numpy as np

from autograd import backend, kernels, ops, optim, parallel
from autograd.backend import keep_freed_memory
from autograd.engine import no_grad

from .config import get_config, list_models
from .model import create_model
from .torch_reference import build_torch_vit, torch_unsupported

ALIASES = {"vit-tiny": "vit_cifar_tiny", "vit-s16": "vit_small_patch16_224"}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
MEMORY_PROBE_STEPS = 2


def resolve_model(name: str) -> str:
    """A registered model name from a name or an alias (``vit-tiny``, ``vit-s16``)."""
    name = ALIASES.get(name, name)
    if name not in list_models():
        aliases = ", ".join(f"{a} ({n})" for a, n in ALIASES.items())
        raise SystemExit(f"npvit.bench: unknown model {name!r}; use an alias ({aliases}) or one of: "
                         f"{', '.join(list_models())}")
    return name


# --- the two libraries' steps --------------------------------------------------------
def _synchronize(device):
    """Wait for the GPU (a no-op on the CPU), so that a timer sees finished work."""
    if backend.parse_device(device)[0] == "gpu":
        backend.xp_for(device).cuda.get_current_stream().synchronize()


def random_batch(cfg, batch_size, seed=0):
    """Host images (B, C, H, W) drawn from N(0, 1) in float32, and integer labels (B,)."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch_size, cfg.in_chans, *cfg.image_hw), dtype=np.float32)
    return images, rng.integers(0, max(cfg.num_classes, 1), batch_size)


def npvit_runner(name, mode, images, labels, device):
    """(model, step): one training step or one inference pass of npvit, data already on the device."""
    model = create_model(name, generator=backend.generator(0)).to(device)
    x = backend.to_device(images, device)
    y = backend.to_device(labels, device)
    if mode == "infer":
        model.eval()

        @no_grad()
        def step():
            model(x)
    else:
        opt = optim.AdamW(model.parameters(), lr=1e-3)

        def step():
            opt.zero_grad()
            ops.cross_entropy(model(x), y).backward()
            opt.step()
    return model, step


def _torch_device(device):
    kind, index = backend.parse_device(device)
    return "cpu" if kind == "cpu" else f"cuda:{index}"


def torch_runner(name, mode, images, labels, device, state_dict=None, foreach=None):
    """(model, step): the PyTorch twin's training step or inference pass, loaded with ``state_dict`` if given."""
    import torch
    import torch.nn.functional as F

    model = build_torch_vit(get_config(name))
    if state_dict is not None:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()})
    dev = _torch_device(device)
    if dev != "cpu":  # the same float32 arithmetic as npvit's: no TF32 in the matmuls
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    model = model.to(dev)
    x = torch.from_numpy(images).to(dev)
    y = torch.from_numpy(labels).to(dev)
    if mode == "infer":
        model.eval()

        @torch.no_grad()
        def step():
            model(x)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=foreach)

        def step():
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
    return model, step


def npvit_step_counts(step, device):
    """(kernel launches, host syncs) of one npvit step, where the device counts them (the CuPy stand-in
    of tests/fakecupy.py, ``NPVIT_FAKE_CUPY=1``), else None: real CuPy keeps no count."""
    meter = getattr(backend.xp_for(device), "meter", None) if device != "cpu" else None
    if meter is None:
        return None
    meter.reset()
    step()
    return sum(meter.launches.values()), sum(meter.syncs.values())


def torch_step_counts(name, mode, images, labels):
    """(aten ops, reads of CPU scalars) of one step of the PyTorch twin with foreach AdamW, on the CPU.

    Counted under a ``TorchDispatchMode``: every aten op that is not a view (a view
    launches nothing on a GPU); reads of a CPU scalar (``_local_scalar_dense``: AdamW's
    step counters live on the host, so on a GPU too they are no sync) are counted
    apart. The CPU's count stands for a GPU's: the same ops dispatch on both.
    """
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops, self.reads = 0, 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is torch.ops.aten._local_scalar_dense.default:
                self.reads += 1
            elif not func.is_view:
                self.ops += 1
            return func(*args, **(kwargs or {}))

    _, step = torch_runner(name, mode, images, labels, "cpu", foreach=True)
    step()  # the optimizer makes its state on the first step
    with Count() as count:
        step()
    return count.ops, count.reads


def _torch_synchronize(device):
    if backend.parse_device(device)[0] == "gpu":
        import torch

        torch.cuda.synchronize(_torch_device(device))


# --- measuring -------------------------------------------------------------------------
def time_alternating(runs: dict, batch_size, steps, repeats) -> dict:
    """Images/s of each run for ``repeats`` timed blocks of ``steps`` steps, the runs taking turns.

    ``runs`` maps a name to ``(step, synchronize)``; returns name -> list of images/s.
    """
    rates = {name: [] for name in runs}
    for _ in range(repeats):
        for name, (step, synchronize) in runs.items():
            synchronize()
            start = time.perf_counter()
            for _ in range(steps):
                step()
            synchronize()
            rates[name].append(batch_size * steps / (time.perf_counter() - start))
    return rates


def _status_kib(field) -> int:
    """A field of /proc/self/status, in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _probe_peak_rss(library, name, mode, batch_size, device, keep_freed, conn):
    """In a fresh interpreter: peak resident-set growth (bytes) over building a run and taking its steps."""
    try:
        if keep_freed:
            keep_freed_memory()
        if library == "PyTorch":
            import torch  # noqa: F401  (loaded before the baseline: the library itself is not the run's memory)
        images, labels = random_batch(get_config(name), batch_size)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM, the peak resident set, to the current size
        before = _status_kib("VmRSS")
        _, step = (npvit_runner if library == "npvit" else torch_runner)(name, mode, images, labels, device)
        for _ in range(MEMORY_PROBE_STEPS):
            step()
        conn.send((_status_kib("VmHWM") - before) * 1024)
    except Exception as e:  # the run itself failed: report it, never hang the parent
        conn.send(f"{type(e).__name__}: {e}")
    conn.close()


def peak_rss_growth(library, name, mode, batch_size, device, keep_freed=False):
    """Bytes by which the peak resident set of a fresh interpreter grows while it builds ``library``'s
    run (model, optimizer, batch) and takes two steps; (None, why) where that cannot be measured.

    A spawned interpreter, not a fork: forking a process whose OpenMP or BLAS threads
    have run can deadlock, and a fork would inherit this process's heap.
    """
    if not os.path.exists("/proc/self/clear_refs"):
        return None, "needs Linux's /proc/self/status"
    ctx = multiprocessing.get_context("spawn")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_probe_peak_rss, args=(library, name, mode, batch_size, device, keep_freed, send))
    child.start()
    send.close()
    try:
        result = receive.recv()
    except EOFError:
        result = f"the probe process died (exit code {child.exitcode})"
    child.join()
    return (result, None) if isinstance(result, int) else (None, result)


def gpu_peak_bytes(library, step, device):
    """Peak GPU bytes over one step: CuPy's memory pool total, or PyTorch's max allocated."""
    if library == "npvit":
        pool = backend.xp_for(device).get_default_memory_pool()
        pool.free_all_blocks()  # the pool keeps what it frees; empty it so its size after the step is the peak
        step()
        _synchronize(device)
        return pool.total_bytes()
    import torch

    torch.cuda.synchronize(_torch_device(device))
    torch.cuda.reset_peak_memory_stats(_torch_device(device))
    step()
    torch.cuda.synchronize(_torch_device(device))
    return torch.cuda.max_memory_allocated(_torch_device(device))


# --- threads ----------------------------------------------------------------------------
def _restart_with_threads(n, argv, command=("-m", "npvit.bench")):
    """Re-run this command (``python *command *argv``) with the BLAS thread variables set to ``n``, unless
    they already are: BLAS reads them once, when NumPy loads."""
    if all(os.environ.get(v) == str(n) for v in THREAD_VARIABLES):
        return
    for v in THREAD_VARIABLES:
        os.environ[v] = str(n)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, *command, *argv])


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def blas_threads() -> str:
    """How many threads NumPy's BLAS uses, as far as can be told."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        for v in THREAD_VARIABLES:
            if v in os.environ:
                return f"{os.environ[v]} ({v})"
        return f"default ({os.cpu_count()} cores)"
    found = [f"{i['num_threads']} ({i['internal_api']})" for i in threadpool_info() if i["user_api"] == "blas"]
    return ", ".join(found) or "unknown"


# --- the command ------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    """The command's flags."""
    p = argparse.ArgumentParser(prog="python -m npvit.bench", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="vit-tiny",
                   help=f"a model name or an alias ({', '.join(ALIASES)}); default vit-tiny")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="cpu", help="cpu, gpu or gpu:N")
    p.add_argument("--mode", choices=("train", "infer"), default="train")
    p.add_argument("--steps", type=int, default=3, help="steps per timed repeat (default 3)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per library, alternating (default 5)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per library first (default 2)")
    p.add_argument("--torch", action=argparse.BooleanOptionalAction, default=True,
                   help="also time the PyTorch twin when torch is importable (default on)")
    p.add_argument("--threads", type=int, help="threads for BLAS and PyTorch (default: each library's own)")
    p.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                   help="measure peak memory too (default on)")
    p.add_argument("--keep-freed-memory", action="store_true",
                   help="have malloc keep freed memory for reuse, for both libraries (see above)")
    return p


def _mib(n):
    return "n/a" if n is None else f"{n / 2**20:.0f} MiB"


def main(argv=None) -> int:
    """Run the benchmark and print a table; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit("npvit.bench: --threads must be at least 1")
        _restart_with_threads(args.threads, argv)
    name = resolve_model(args.model)
    cfg = get_config(name)
    device = backend.device_name(args.device)
    on_gpu = device != "cpu"
    if on_gpu:
        backend.xp_for(device)  # fail now, with the backend's message, if there is no GPU

    torch_note = None
    use_torch = args.torch
    if use_torch:
        try:
            import torch
        except ImportError:
            use_torch, torch_note = False, "PyTorch is not installed"
    countable = use_torch and not torch_unsupported(cfg)  # PyTorch's ops are counted on the CPU
    if use_torch and on_gpu and not torch.cuda.is_available():
        use_torch, torch_note = False, "this PyTorch has no CUDA device"
    if use_torch and torch_unsupported(cfg):
        use_torch, torch_note = False, f"the PyTorch twin does not model {torch_unsupported(cfg)}"
    if use_torch and args.threads is not None:
        torch.set_num_threads(args.threads)

    malloc_note = keep_freed_memory() if args.keep_freed_memory else None
    images, labels = random_batch(cfg, args.batch_size)
    memory = {}
    if args.memory and not on_gpu:
        for lib in ("npvit", "PyTorch") if use_torch else ("npvit",):
            memory[lib] = peak_rss_growth(lib, name, args.mode, args.batch_size, device, args.keep_freed_memory)

    model, step = npvit_runner(name, args.mode, images, labels, device)
    runs = {"npvit": (step, lambda: _synchronize(device))}
    if use_torch:
        _, torch_step = torch_runner(name, args.mode, images, labels, device, state_dict=model.state_dict())
        runs["PyTorch"] = (torch_step, lambda: _torch_synchronize(device))
    for run_step, synchronize in runs.values():
        for _ in range(args.warmup):
            run_step()
        synchronize()
    if args.memory and on_gpu:
        memory = {lib: (gpu_peak_bytes(lib, s, device), None) for lib, (s, _) in runs.items()}
    rates = time_alternating(runs, args.batch_size, args.steps, args.repeats)
    counts = {"npvit": npvit_step_counts(step, device)}
    if counts["npvit"] is not None:  # and once more with every op on its own CuPy path, for the difference
        kernels.disable()
        try:
            counts["npvit without fused kernels"] = npvit_step_counts(step, device)
        finally:
            kernels.enable()
    if countable:
        torch_ops, torch_reads = torch_step_counts(name, args.mode, images[:2], labels[:2])
        counts["PyTorch"] = (torch_ops, 0)

    print(f"npvit.bench: {name}" + (f" ({args.model})" if args.model != name else "")
          + f", batch {args.batch_size}, {args.mode}, float32, {device}")
    print(f"machine: {cpu_name()}, {os.cpu_count()} cpus; python "
          f"{platform.python_version()}, numpy {np.__version__}"
          + (f", torch {torch.__version__}" if use_torch else "") + "; threads: BLAS " + blas_threads()
          + f", npvit's pool {parallel.threads()}"
          + (f", torch {torch.get_num_threads()}" if use_torch else ""))
    print(f"timing: {args.repeats} repeats x {args.steps} steps after {args.warmup} warm-up steps"
          + (", npvit and PyTorch alternating" if use_torch else "")
          + (", malloc keeping freed memory" if args.keep_freed_memory and not malloc_note else ""))
    memory_kind = "GPU peak" if on_gpu else "peak RSS growth"
    print(f"{'':16s}{'images/s (median)':>20s}{'[min - max]':>20s}{memory_kind:>20s}")
    for lib, r in rates.items():
        peak = memory.get(lib, (None, None))[0]
        print(f"{lib:16s}{statistics.median(r):20.1f}{f'[{min(r):.1f} - {max(r):.1f}]':>20s}{_mib(peak):>20s}")
    if use_torch:
        speed = statistics.median(rates["npvit"]) / statistics.median(rates["PyTorch"])
        paired = [a / b for a, b in zip(rates["npvit"], rates["PyTorch"])]
        mem = [memory.get(lib, (None, None))[0] for lib in ("npvit", "PyTorch")]
        mem_ratio = f"{mem[0] / mem[1]:.2f}" if None not in mem and mem[1] else "n/a"
        print(f"{'npvit/PyTorch':16s}{speed:20.2f}{f'[{min(paired):.2f} - {max(paired):.2f}]':>20s}{mem_ratio:>20s}")
    print("kernel launches per step (host syncs): " + ", ".join(
        f"{lib} " + ("not counted on this device" if c is None else f"{c[0]} ({c[1]})") for lib, c in counts.items())
        + (f"; PyTorch's: its non-view aten ops, foreach AdamW, {torch_reads} reads of CPU scalars left out"
           if countable else ""))
    for lib, (_, why) in memory.items():
        if why:
            print(f"memory of {lib} not measured: {why}")
    if torch_note:
        print(f"PyTorch not timed: {torch_note}")
    if malloc_note:
        print(f"--keep-freed-memory ignored: {malloc_note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
