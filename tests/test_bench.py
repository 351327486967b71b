"""The benchmark (npvit/bench.py): model aliases, the PyTorch twin against npvit, and the printed table."""
import numpy as np
import pytest

from autograd import ops
from checking import torch_or_skip


def test_bench_resolves_aliases_and_rejects_unknown_names():
    from npvit import bench

    assert bench.resolve_model("vit-tiny") == "vit_cifar_tiny"
    assert bench.resolve_model("vit-s16") == "vit_small_patch16_224"
    assert bench.resolve_model("vit_cifar_small") == "vit_cifar_small"
    with pytest.raises(SystemExit, match="unknown model"):
        bench.resolve_model("vit-gigantic")


@pytest.mark.parametrize("overrides", [{}, {"global_pool": "avg"}, {"representation_size": 16},
                                       {"gelu_approximate": "tanh", "class_token": False, "global_pool": "avg"}])
def test_torch_twin_computes_what_npvit_does(overrides):
    torch = torch_or_skip()
    import npvit
    from npvit import bench

    cfg = npvit.get_config("vit_cifar_tiny", depth=2, **overrides)
    model = npvit.VisionTransformer(cfg)
    model.head.weight.data[...] = np.random.default_rng(1).normal(size=model.head.weight.shape) * 0.1
    twin = bench.build_torch_vit(cfg)
    twin.load_state_dict({k: torch.from_numpy(v) for k, v in model.state_dict().items()})
    images, labels = bench.random_batch(cfg, 3)
    ours = model(images)
    theirs = twin(torch.from_numpy(images))
    np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-4, atol=1e-4)
    ops.cross_entropy(ours, labels).backward()
    torch.nn.functional.cross_entropy(theirs, torch.from_numpy(labels)).backward()
    for name, p in model.named_parameters():
        ref = twin.get_parameter(name).grad.numpy()
        np.testing.assert_allclose(p.grad, ref, rtol=1e-3, atol=1e-4 * max(np.abs(ref).max(), 1e-3))


def test_bench_twin_declines_what_it_does_not_model():
    import npvit
    from npvit import bench

    assert bench.torch_unsupported(npvit.get_config("vit_cifar_tiny")) is None
    assert "hybrid" in bench.torch_unsupported(npvit.get_config("vit_hybrid_cifar_tiny"))
    assert "relative" in bench.torch_unsupported(npvit.get_config("vit_cifar_tiny", pos_embed="relative"))


@pytest.mark.parametrize("mode, extra", [("train", []), ("infer", ["--no-memory", "--keep-freed-memory"])])
def test_bench_command_prints_a_table(mode, extra, capsys):
    from npvit import bench

    args = ["--model", "vit-tiny", "--batch-size", "2", "--mode", mode, "--steps", "1", "--repeats", "2",
            "--warmup", "1", *extra]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    assert f"vit_cifar_tiny (vit-tiny), batch 2, {mode}" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert float(lines["npvit"].split()[1]) > 0
    memory = lines["npvit"].split("]")[1].strip()
    assert memory == "n/a" if extra else memory.endswith("MiB")
    try:
        import torch  # noqa: F401
    except ImportError:
        assert "PyTorch not timed: PyTorch is not installed" in out
    else:
        assert float(lines["npvit/PyTorch"].split()[1]) > 0


def test_op_times_charges_each_op_its_own_time_and_puts_everything_back(capsys):
    import importlib.util
    import os
    import time

    from autograd.engine import Function
    from autograd.ops.fused import Linear

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "op_times.py")
    spec = importlib.util.spec_from_file_location("op_times", path)
    op_times = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(op_times)

    class Outer(Function):  # an op that runs another op's forward inside its own, as LayerNormLinear does
        @staticmethod
        def forward(x):
            time.sleep(0.02)
            return Inner.forward(x)[0], None

    class Inner(Function):
        @staticmethod
        def forward(x):
            time.sleep(0.05)
            return x, None

    before = Linear.__dict__["forward"]
    timer = op_times.OpTimer()
    timer.install(Function)
    assert Linear.__dict__["forward"] is not before
    try:
        Outer.apply(np.ones(2))
    finally:
        timer.remove()
    outer, inner = timer.total[("Outer", "forward")], timer.total[("Inner", "forward")]
    assert 0.05 <= inner < 0.07 and 0.02 <= outer < 0.04, (outer, inner)
    assert "forward" in Outer.__dict__ and Outer.forward(np.ones(1))[1] is None  # unwrapped again
    assert Linear.__dict__["forward"] is before and timer._undo == []

    assert op_times.main(["--model", "vit_cifar_mini", "--batch-size", "2", "--steps", "1", "--warmup", "1"]) == 0
    out = capsys.readouterr().out
    rows = {line.rsplit(None, 2)[0]: float(line.split()[-2]) for line in out.splitlines()[2:-1]}
    step = float(out.splitlines()[-1].split()[-1])
    assert {"Linear.forward", "Linear.backward", "ScaledDotProductAttention.backward", "AdamW.step"} <= rows.keys()
    # the rows and "outside the ops" add up to the step, each printed to 0.1 ms
    assert sum(rows.values()) == pytest.approx(step, abs=0.05 * (len(rows) + 1))
