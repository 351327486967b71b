"""Data-parallel training: the pieces in one process, then real ``mpirun`` jobs.

The MPI tests need ``mpirun`` (Debian: openmpi-bin libopenmpi-dev) and mpi4py
(``pip install 'npvit[mpi]'``) and skip without them; the NCCL tests need CuPy and a GPU.
"""
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from devices import HAS_GPU
from test_train import TINY

import npvit
from autograd import backend, ops
from npvit import distributed
from npvit import trainer as T
from npvit.cli import main
from npvit.data import Augment, seed_generator, synthetic

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MPIRUN = shutil.which("mpirun")
requires_mpi = pytest.mark.skipif(
    MPIRUN is None or importlib.util.find_spec("mpi4py") is None,
    reason="needs mpirun and mpi4py (apt-get install openmpi-bin libopenmpi-dev; pip install 'npvit[mpi]')",
)

# Everything random at once: dropout, attention dropout, drop-path, crop, RandAugment, mixup and cutmix (16 steps of 32).
RANDOM = ["--epochs", "2", "--dropout", "0.1", "--attn-dropout", "0.1", "--drop-path", "0.1", "--crop-padding", "2", "--randaugment", "2",
          "--mixup", "0.5", "--cutmix", "1.0"]


# --- the pieces, in one process -----------------------------------------------------------
def test_shards_are_contiguous_cover_the_rows_and_differ_by_at_most_one():
    for n, world in [(32, 2), (30, 4), (7, 3), (2, 3)]:
        parts = [distributed.shard(n, r, world) for r in range(world)]
        np.testing.assert_array_equal(np.concatenate([np.arange(n)[s] for s in parts]), np.arange(n))
        sizes = [s.stop - s.start for s in parts]
        assert max(sizes) - min(sizes) <= 1
        assert sizes == [len(a) for a in np.array_split(np.arange(n), world)]


def test_shard_positions_put_each_examples_mixing_partner_at_its_mirror():
    for batch, world in [(32, 1), (32, 2), (30, 3), (32, 4)]:
        for rank in range(world):
            own = np.arange(batch)[distributed.shard(batch, rank, world)]
            rows = distributed.shard_positions(batch, rank, world, mirror=True)
            np.testing.assert_array_equal(rows[: len(own)], own)
            np.testing.assert_array_equal(rows[::-1][: len(own)], batch - 1 - own)  # B-1-i, mirrored in the rows
            np.testing.assert_array_equal(distributed.shard_positions(batch, rank, world), own)


def test_row_generator_gives_the_rows_of_a_whole_batch_draw():
    rows = np.array([4, 5, 6, 1])
    for method, args in [("random", ()), ("standard_normal", ()), ("beta", (0.5, 0.5)), ("integers", (0, 9))]:
        whole = getattr(np.random.default_rng(3), method)(*args, size=(8, 2))
        part = getattr(distributed.RowGenerator(np.random.default_rng(3), rows, 8), method)(*args, size=(4, 2))
        np.testing.assert_array_equal(part, whole[rows], err_msg=method)
    sliced = distributed.RowGenerator(np.random.default_rng(3), slice(2, 5), 8)
    np.testing.assert_array_equal(sliced.random(3, dtype=np.float32),
                                  np.random.default_rng(3).random(8, dtype=np.float32)[2:5])
    scalar = distributed.RowGenerator(np.random.default_rng(3), slice(2, 5), 8).random()
    assert scalar == np.random.default_rng(3).random()  # a whole-batch scalar passes through
    with pytest.raises(ValueError, match="not per example"):
        sliced.random((4,))


def _augment(ds, **options):
    return Augment(ds.mean, ds.std, ds.num_classes, crop_padding=2, rand_ops=2, label_smoothing=0.1, **options)


@pytest.mark.parametrize("world", [2, 3, 4])
@pytest.mark.parametrize("mixing", [dict(mixup_alpha=0.5), dict(cutmix_alpha=1.0), {}])
def test_each_share_is_augmented_as_the_rows_of_the_whole_batch(world, mixing):
    ds = synthetic("train", num_examples=24, num_classes=4, image_size=8)
    augment = _augment(ds, **mixing)
    whole_x, whole_t = augment(ds.x, ds.y, seed_generator(1, "augment"))
    for rank in range(world):
        rows = distributed.shard_positions(24, rank, world, mirror=bool(mixing))
        x, t = augment(ds.x[rows], ds.y[rows], distributed.RowGenerator(seed_generator(1, "augment"), rows, 24))
        own = distributed.shard(24, rank, world)
        n = own.stop - own.start
        np.testing.assert_allclose(x[:n], whole_x[own], atol=1e-4)
        np.testing.assert_allclose(t[:n], whole_t[own], atol=1e-6)


def test_each_share_gets_the_rows_of_the_whole_batch_dropout_masks():
    x = np.ones((6, 3, 5), np.float32)
    whole = ops.dropout(x, 0.5, generator=backend.generator(7, 1)).data
    for rows in (slice(0, 3), slice(3, 6)):
        part = ops.dropout(x[rows], 0.5, generator=distributed.RowGenerator(backend.generator(7, 1), rows, 6)).data
        np.testing.assert_array_equal(part, whole[rows])
    # attention dropout too: its (B, heads, N, N) mask is per example
    q = np.random.default_rng(0).standard_normal((6, 2, 4, 3)).astype(np.float32)
    whole = ops.scaled_dot_product_attention(q, q, q, dropout_p=0.5, generator=backend.generator(7, 2)).data
    for rows in (slice(0, 2), slice(2, 6)):
        gen = distributed.RowGenerator(backend.generator(7, 2), rows, 6)
        part = ops.scaled_dot_product_attention(q[rows], q[rows], q[rows], dropout_p=0.5, generator=gen).data
        np.testing.assert_allclose(part, whole[rows], rtol=1e-6)


class _Rank(distributed.Communicator):
    """One process of a pretend job: its sums are recorded instead of reduced."""

    def __init__(self, rank, world_size):
        self.rank, self.world_size, self.sums = rank, world_size, []

    def sum(self, values):
        self.sums.append(np.asarray(values, dtype=np.float64))
        return self.sums[-1]


def test_sharded_evaluation_sums_to_the_whole_sets_counts():
    ds = synthetic("test", num_examples=50, num_classes=4, image_size=8)
    model = npvit.create_model("vit_cifar_tiny", img_size=8, patch_size=4, embed_dim=16, depth=1, num_heads=2,
                               num_classes=4)
    augment = Augment(ds.mean, ds.std, ds.num_classes)
    whole = _Rank(0, 1)
    T.evaluate_model(model, ds.x, ds.y, augment, 16, comm=whole)
    for world in (2, 3):
        ranks = [_Rank(r, world) for r in range(world)]
        for comm in ranks:
            T.evaluate_model(model, ds.x, ds.y, augment, 16, comm=comm)
        np.testing.assert_allclose(sum(c.sums[0] for c in ranks), whole.sums[0], rtol=1e-5)
    assert whole.sums[0][2] == 50


def test_one_process_needs_no_mpi_and_a_launcher_without_mpi4py_is_a_clear_error(monkeypatch):
    for name in distributed.LAUNCHER_SIZE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    comm = distributed.init()
    assert type(comm) is distributed.Communicator and comm.world_size == 1 and comm.is_main
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert distributed.launcher_world_size() == 2
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import fails
    with pytest.raises(distributed.DistributedError, match=r"pip install 'npvit\[mpi\]'"):
        distributed.init()


# --- real jobs ----------------------------------------------------------------------------
def mpirun(n, script, *args, timeout=120):
    """Run ``python script args`` on ``n`` processes; return (exit code, stdout, stderr, seconds).

    The job runs in its own session, so that on a timeout all of it can be killed.
    """
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=REPO)
    version = subprocess.run([MPIRUN, "--version"], capture_output=True, text=True).stdout
    extra = []
    if "Open MPI" in version:  # more processes than cores is fine here; CI runs as root
        extra = ["--oversubscribe"] + (["--allow-run-as-root"] if os.geteuid() == 0 else [])
    started = time.time()
    proc = subprocess.Popen([MPIRUN, "-np", str(n), *extra, sys.executable, script, *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"mpirun -np {n} {script} did not end within {timeout} s")
    return proc.returncode, out, err, time.time() - started


def train(n, out, *flags, timeout=120):
    """train.py with TINY on ``n`` processes."""
    return mpirun(n, "train.py", *TINY, "--out", str(out), *flags, timeout=timeout)


def with_failure(n, tmp_path, rank, step, kind, *flags):
    """tests/mpi_worker.py: train.py with process ``rank`` failing at ``step``; also returns the pids it ran as."""
    pids = tmp_path / "pids"
    pids.mkdir(exist_ok=True)
    result = mpirun(n, os.path.join("tests", "mpi_worker.py"), "--fail-rank", str(rank), "--fail-step", str(step),
                    "--fail-with", kind, "--pid-dir", str(pids), "--", *TINY, *flags)
    return result, [int(p) for p in os.listdir(pids)]


def running(pid) -> bool:
    """Whether process ``pid`` still runs (a zombie, dead but not reaped by its new parent, does not)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()
    except FileNotFoundError:
        return False


def params(run_dir):
    return npvit.read_checkpoint(os.path.join(run_dir, "checkpoint-last.npz")).state


def assert_same_parameters(a, b):
    """Equal to float32 rounding: the same sums, added in another order, after 16 steps of AdamW."""
    a, b = params(a), params(b)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-3, atol=1e-4, err_msg=k)


def metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The reference: RANDOM on one process, in this process."""
    out = str(tmp_path_factory.mktemp("one") / "run")
    assert main([*TINY, "--out", out, *RANDOM]) == 0
    return out


@requires_mpi
def test_two_processes_train_exactly_like_one(tmp_path, one_process):
    code, out, err, _ = train(2, tmp_path / "two", *RANDOM)
    assert code == 0, err
    assert_same_parameters(tmp_path / "two", one_process)
    ours, reference = metrics(tmp_path / "two"), metrics(one_process)
    assert [m["step"] for m in ours] == [m["step"] for m in reference]
    for m, r in zip(ours, reference):
        assert m["loss"] == pytest.approx(r["loss"], rel=1e-4) and m["acc"] == pytest.approx(r["acc"])
    assert out.count("epoch 2:") == 1 and out.count("done:") == 1  # rank 0 alone prints
    with open(tmp_path / "two" / "summary.json") as f:
        assert json.load(f)["processes"] == 2


@requires_mpi
def test_a_batch_that_does_not_split_over_the_processes_is_a_user_error(tmp_path):
    code, _, err, _ = train(2, tmp_path / "r", "--batch-size", "31", "--epochs", "1")
    assert code == 2 and "does not split evenly over 2 processes" in err


@requires_mpi
def test_a_two_process_run_resumes_on_one(tmp_path, one_process):
    (code, _, err, _), _ = with_failure(2, tmp_path, 0, 11, "interrupt", "--out", str(tmp_path / "r"), *RANDOM)
    assert code == 130, err
    assert npvit.read_checkpoint(os.path.join(tmp_path / "r", "checkpoint-last.npz")).step == 11
    assert main(["--resume", str(tmp_path / "r"), "--no-progress"]) == 0
    assert_same_parameters(tmp_path / "r", one_process)


@requires_mpi
def test_a_one_process_run_resumes_on_two(tmp_path, one_process, monkeypatch):
    original = T.Trainer.train_step

    def interrupt_at_step_11(self, batch):
        if self.step == 11:
            raise KeyboardInterrupt
        return original(self, batch)

    monkeypatch.setattr(T.Trainer, "train_step", interrupt_at_step_11)
    assert main([*TINY, "--out", str(tmp_path / "r"), *RANDOM]) == 130
    code, _, err, _ = mpirun(2, "train.py", "--resume", str(tmp_path / "r"), "--no-progress")
    assert code == 0, err
    assert_same_parameters(tmp_path / "r", one_process)


@requires_mpi
def test_an_exception_in_one_process_ends_the_whole_job_at_once(tmp_path):
    (code, _, err, seconds), pids = with_failure(2, tmp_path, 1, 3, "error", "--out", str(tmp_path / "r"),
                                                 "--epochs", "100")
    assert code != 0
    assert "injected failure at step 3" in err and "process 1 of 2" in err
    assert seconds < 30  # a hundred epochs would take minutes: the job ended at step 3 (a hang hits the timeout)
    assert len(pids) == 2 and not any(running(pid) for pid in pids)


@requires_mpi
def test_a_non_finite_loss_in_one_process_stops_all_and_keeps_the_last_checkpoint(tmp_path):
    (code, _, err, _), _ = with_failure(2, tmp_path, 1, 9, "nan", "--out", str(tmp_path / "r"), "--epochs", "2")
    assert code == 3, err
    assert "step 9" in err and "checkpoint-last.npz is kept" in err
    kept = npvit.read_checkpoint(os.path.join(tmp_path / "r", "checkpoint-last.npz"))
    assert kept.step == 8 and all(np.isfinite(v).all() for v in kept.state.values())


# --- NCCL, with a GPU --------------------------------------------------------------------------
def _gpu_count() -> int:
    import cupy

    return cupy.cuda.runtime.getDeviceCount()


@requires_mpi
@pytest.mark.skipif(not HAS_GPU, reason="needs CuPy and a CUDA GPU")
@pytest.mark.parametrize("n", [1, 2])
def test_nccl_processes_train_like_one_gpu(tmp_path, n):
    if n > _gpu_count():
        pytest.skip(f"needs {n} GPUs")
    flags = ["--device", "gpu", *RANDOM]
    assert main([*TINY, "--out", str(tmp_path / "one"), *flags]) == 0
    code, _, err, _ = train(n, tmp_path / "nccl", "--distributed", *flags, timeout=300)
    assert code == 0, err
    assert_same_parameters(tmp_path / "nccl", tmp_path / "one")
