"""autograd/parallel.py: the thread pool of the CPU's blocked elementwise work."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from autograd import parallel
from autograd.ops import util
from npvit import VisionTransformer
from tiny_models import TINY, adamw_steps


@pytest.fixture
def threads():
    """Set the pool's thread count inside a test; the count from before is put back after it."""
    before = parallel.threads()
    yield parallel.set_threads
    parallel.set_threads(before)


def test_run_keeps_the_pieces_order_and_shares_them_out(threads):
    threads(3)
    together = threading.Barrier(3, timeout=30)  # each piece waits for one of each of the other runs

    def piece(i):
        together.wait()
        return i, threading.get_ident()

    seen = parallel.run(piece, range(9))
    assert [i for i, _ in seen] == list(range(9))
    assert len({t for _, t in seen}) == 3


def test_pieces_run_on_one_blas_thread_and_the_count_comes_back(threads):
    threads(2)
    outside = parallel._set_blas_threads(2)  # a known count, whatever the environment gave
    try:
        inside = parallel.run(lambda i: parallel._set_blas_threads(1), range(4))
        after = parallel._set_blas_threads(2)
    finally:
        parallel._set_blas_threads(outside)
    if parallel._blas_local.__name__ == "<lambda>":
        pytest.skip("NumPy's BLAS has no openblas_set_num_threads_local")
    assert inside == [1, 1, 1, 1]
    assert after == 2


def test_importing_npvit_shortens_openblas_spin_unless_set():
    code = "import os, npvit; print(os.environ['OPENBLAS_THREAD_TIMEOUT'])"
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "12"
    env["OPENBLAS_THREAD_TIMEOUT"] = "20"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "20"


def test_one_thread_runs_everything_in_the_caller(threads):
    threads(1)
    assert set(parallel.run(lambda i: threading.get_ident(), range(5))) == {threading.get_ident()}


def test_an_exception_in_a_piece_is_raised_after_the_other_threads_finished(threads):
    threads(2)
    done = []

    def piece(i):
        if i == 0:
            raise ValueError("piece 0")
        done.append(i)

    with pytest.raises(ValueError, match="piece 0"):
        parallel.run(piece, range(4))  # the caller's run, pieces 0 and 1, stops at 0; the pool's does 2 and 3
    assert sorted(done) == [2, 3]


def test_a_pool_task_that_runs_pieces_runs_them_itself(threads):
    threads(2)
    inner = parallel.run(lambda i: parallel.run(lambda j: j, range(3)), range(2))  # would deadlock if it waited
    assert inner == [[0, 1, 2], [0, 1, 2]]


def test_thread_count_comes_from_the_blas_variables(monkeypatch):
    for name in parallel.THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    assert parallel.default_threads() == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert parallel.default_threads() == 1


def test_thread_count_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        parallel.set_threads(0)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_makes_its_own_pool(threads):
    threads(2)
    parallel.run(lambda i: i, range(2))  # the parent's pool exists
    pid = os.fork()
    if pid == 0:  # the child: its pool's threads must be its own
        ok = parallel.run(lambda i: i * i, range(4)) == [0, 1, 4, 9]
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def _training_step(seed=0):
    """Loss, gradients and updated parameters of two AdamW steps of a tiny float32 ViT with every dropout on."""
    model = VisionTransformer(**{**TINY, "depth": 1}, drop_rate=0.1, attn_drop_rate=0.1, proj_drop_rate=0.1,
                              drop_path_rate=0.1, generator=np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((24, 3, 8, 8), dtype=np.float32)
    y = rng.integers(0, 3, 24)
    return adamw_steps(model, x, y, seed)


def test_a_training_step_is_bit_identical_for_any_thread_count(threads, monkeypatch):
    # blocks of 64 elements, so that the tiny model's arrays span many blocks and every
    # blocked op (layer norm's column sums among them) is split across the threads
    monkeypatch.setattr(util, "BLOCK", 64)
    threads(1)
    one = _training_step()
    threads(3)
    three = _training_step()
    assert all(np.array_equal(a, b) for a, b in zip(one, three))
