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
