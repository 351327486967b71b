"""Optimizers against NumPy references of the published rules (and torch.optim when installed),
state saving and resuming, gradient clipping, weight-decay groups, LR schedules, and training."""
import json
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from autograd import Tensor, manual_seed, nn, optim
from checking import torch_or_skip

STEPS = 6


# --- a small problem: least squares y = x W + b, gradients in closed form -----------------
def problem(seed=0):
    """Initial [W, b] and a function from their current values to their gradients."""
    rng = np.random.default_rng(seed)
    x, y = rng.standard_normal((8, 3)), rng.standard_normal((8, 4))
    init = [rng.standard_normal((3, 4)), rng.standard_normal(4)]

    def grads(w, b):
        r = x @ w + b - y  # (8, 4): d(0.5 mean |r|^2) / d(x w + b), per row
        return [x.T @ r / len(x), r.mean(0)]

    return init, grads


def run_ours(make_opt, steps=STEPS, dtype=np.float64, seed=0):
    """Values of [W, b] after each step of our optimizer."""
    init, grads = problem(seed)
    params = [nn.Parameter(a.astype(dtype)) for a in init]
    opt = make_opt(params)
    trajectory = []
    for _ in range(steps):
        for p, g in zip(params, grads(*(p.data for p in params))):
            p.grad = g.astype(dtype)
        opt.step()
        trajectory.append([p.data.copy() for p in params])
    return trajectory


def run_reference(update, hypers, steps=STEPS, seed=0):
    """Values after each step of ``update(w, g, state, t, **hyper)``, with per-parameter hyper-parameters."""
    init, grads = problem(seed)
    ws = [a.copy() for a in init]
    states = [{} for _ in ws]
    trajectory = []
    for t in range(1, steps + 1):
        gs = grads(*ws)
        ws = [update(w, g, s, t, **h) for w, g, s, h in zip(ws, gs, states, hypers)]
        trajectory.append([w.copy() for w in ws])
    return trajectory


def sgd_reference(w, g, state, t, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    """SGD as written in PyTorch's documentation (Sutskever et al. 2013 momentum)."""
    g = g + weight_decay * w
    if momentum:
        state["b"] = g if t == 1 else momentum * state["b"] + (1 - dampening) * g
        g = g + momentum * state["b"] if nesterov else state["b"]
    return w - lr * g


def adam_reference(w, g, state, t, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
    """Adam (Kingma & Ba 2015, Algorithm 1); L2 in the gradient, or AdamW's decoupled decay."""
    if decoupled:
        w = w - lr * weight_decay * w
    else:
        g = g + weight_decay * w
    b1, b2 = betas
    state["m"] = b1 * state.get("m", 0.0) + (1 - b1) * g
    state["v"] = b2 * state.get("v", 0.0) + (1 - b2) * g * g
    m_hat = state["m"] / (1 - b1**t)
    v_hat = state["v"] / (1 - b2**t)
    return w - lr * m_hat / (np.sqrt(v_hat) + eps)


def assert_trajectories_close(a, b, rtol=1e-12, atol=1e-12):
    for step, (pa, pb) in enumerate(zip(a, b)):
        for wa, wb in zip(pa, pb):
            np.testing.assert_allclose(wa, wb, rtol=rtol, atol=atol, err_msg=f"step {step}")


SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.1, momentum=0.9),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.1, momentum=0.8, dampening=0.3, weight_decay=0.05),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
]
ADAM_CONFIGS = [
    dict(lr=0.01),
    dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=0.01, weight_decay=0.1),
]


@pytest.mark.parametrize("cfg", SGD_CONFIGS)
def test_sgd_matches_reference(cfg):
    ours = run_ours(lambda ps: optim.SGD(ps, **cfg))
    assert_trajectories_close(ours, run_reference(sgd_reference, [cfg, cfg]))


@pytest.mark.parametrize("cfg", ADAM_CONFIGS)
@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_and_adamw_match_reference(cfg, decoupled):
    cls = optim.AdamW if decoupled else optim.Adam
    cfg = dict(cfg, weight_decay=cfg.get("weight_decay", 0.01 if decoupled else 0.0))
    ours = run_ours(lambda ps: cls(ps, **cfg))
    ref_cfg = dict(cfg, decoupled=decoupled)
    assert_trajectories_close(ours, run_reference(adam_reference, [ref_cfg, ref_cfg]))


def run_torch(make_opt, steps=STEPS, dtype="float64", seed=0):
    torch = torch_or_skip()
    init, grads = problem(seed)
    params = [torch.tensor(a, dtype=getattr(torch, dtype), requires_grad=True) for a in init]
    opt = make_opt(torch, params)
    trajectory = []
    for _ in range(steps):
        for p, g in zip(params, grads(*(p.detach().double().numpy() for p in params))):
            p.grad = torch.tensor(g, dtype=getattr(torch, dtype))
        opt.step()
        trajectory.append([p.detach().numpy().copy() for p in params])
    return trajectory


@pytest.mark.parametrize("cfg", SGD_CONFIGS)
def test_sgd_matches_torch(cfg):
    theirs = run_torch(lambda torch, ps: torch.optim.SGD(ps, **cfg))
    assert_trajectories_close(run_ours(lambda ps: optim.SGD(ps, **cfg)), theirs)


@pytest.mark.parametrize("cfg", ADAM_CONFIGS)
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
def test_adam_matches_torch(cfg, name):
    theirs = run_torch(lambda torch, ps: getattr(torch.optim, name)(ps, **cfg))
    assert_trajectories_close(run_ours(lambda ps: getattr(optim, name)(ps, **cfg)), theirs)


@pytest.mark.parametrize("name", ["SGD", "AdamW"])
def test_float32_matches_torch_float32(name):
    cfg = dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01) if name == "SGD" else dict(lr=0.01)
    theirs = run_torch(lambda torch, ps: getattr(torch.optim, name)(ps, **cfg), dtype="float32")
    ours = run_ours(lambda ps: getattr(optim, name)(ps, **cfg), dtype=np.float32)
    assert all(w.dtype == np.float32 for step in ours for w in step)
    assert_trajectories_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_state_and_parameters_stay_float32():
    params = [nn.Parameter(np.ones((2, 3), dtype=np.float32))]
    opt = optim.AdamW(params, lr=0.1)
    params[0].grad = np.full((2, 3), 0.5, dtype=np.float32)
    opt.step()
    assert params[0].dtype == np.float32
    assert all(opt.state[0][k].dtype == np.float32 for k in ("exp_avg", "exp_avg_sq"))


def test_param_groups_take_their_own_hyperparameters():
    w_cfg, b_cfg = dict(lr=0.1, momentum=0.9, weight_decay=0.1), dict(lr=0.02, momentum=0.9, weight_decay=0.0)
    ours = run_ours(
        lambda ps: optim.SGD(
            [{"params": [ps[0]], "weight_decay": 0.1}, {"params": [ps[1]], "lr": 0.02}], lr=0.1, momentum=0.9
        )
    )
    assert_trajectories_close(ours, run_reference(sgd_reference, [w_cfg, b_cfg]))


def test_a_parameter_in_two_groups_is_refused():
    p = nn.Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="twice"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)


def test_parameters_without_gradient_are_skipped():
    a, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))
    opt = optim.Adam([a, b], lr=0.1)
    a.grad = np.ones(2)
    opt.step()
    np.testing.assert_array_equal(b.data, np.ones(2))
    assert 1 not in opt.state and opt.state[0]["step"] == 1
    assert np.all(a.data < 1)


def test_adamw_decays_decoupled_adam_through_the_gradient():
    # With a zero gradient AdamW only shrinks the weights by (1 - lr wd); Adam's decay term
    # goes through the normalised update and moves every weight by about lr towards 0.
    lr, wd = 0.01, 0.1
    w0 = np.array([3.0, -0.5, 0.02])
    a, b = nn.Parameter(w0.copy()), nn.Parameter(w0.copy())
    adamw, adam = optim.AdamW([a], lr=lr, weight_decay=wd), optim.Adam([b], lr=lr, weight_decay=wd)
    a.grad, b.grad = np.zeros(3), np.zeros(3)
    adamw.step()
    adam.step()
    np.testing.assert_allclose(a.data, w0 * (1 - lr * wd), rtol=1e-15)
    np.testing.assert_allclose(b.data, w0 - lr * np.sign(w0), atol=1e-7)  # eps is 1e-8 against |g| >= 2e-3


def test_nesterov_needs_momentum():
    with pytest.raises(ValueError, match="Nesterov"):
        optim.SGD([nn.Parameter(np.zeros(1))], lr=0.1, nesterov=True)


# --- saving and resuming ----------------------------------------------------------------------
def save_and_load(state, tmp_path):
    """Round-trip an optimizer state dict through .npz (arrays, no pickle) and .json (the rest)."""
    np.savez(tmp_path / "opt.npz", **state["state"])
    (tmp_path / "opt.json").write_text(json.dumps({"param_groups": state["param_groups"], "step": state["step"]}))
    meta = json.loads((tmp_path / "opt.json").read_text())
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as f:
        meta["state"] = {k: f[k] for k in f.files}
    return meta


RESUMABLE = {
    "sgd": lambda ps: optim.SGD([{"params": ps[:1]}, {"params": ps[1:], "lr_scale": 0.2}], lr=0.1, momentum=0.9),
    "adamw": lambda ps: optim.AdamW([{"params": ps[:1]}, {"params": ps[1:], "weight_decay": 0.0}], lr=0.01),
    "adam": lambda ps: optim.Adam(ps, lr=0.01, betas=(0.8, 0.9), weight_decay=0.1),
}


@pytest.mark.parametrize("name", sorted(RESUMABLE))
def test_resume_from_saved_state_equals_not_stopping(name, tmp_path):
    make_opt = RESUMABLE[name]
    init, grads = problem()
    schedule = optim.warmup_cosine(0.05, total_steps=6, warmup_steps=2)

    def train(params, opt, steps):
        for _ in range(steps):
            optim.set_lr(opt, schedule(opt.steps))
            for p, g in zip(params, grads(*(p.data for p in params))):
                p.grad = g
            opt.step()

    straight = [nn.Parameter(a.copy()) for a in init]
    train(straight, make_opt(straight), 6)

    first = [nn.Parameter(a.copy()) for a in init]
    opt = make_opt(first)
    train(first, opt, 3)
    resumed = [nn.Parameter(p.data.copy()) for p in first]  # as a model checkpoint would restore them
    opt2 = make_opt(resumed)
    opt2.load_state_dict(save_and_load(opt.state_dict(), tmp_path))
    train(resumed, opt2, 3)
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a.data, b.data)


def test_load_state_dict_restores_hyperparameters(tmp_path):
    params = [nn.Parameter(np.ones(2))]
    opt = optim.Adam(params, lr=0.1, betas=(0.8, 0.9))
    params[0].grad = np.ones(2)
    opt.step()
    optim.set_lr(opt, 0.005)
    opt.param_groups[0]["lr_scale"] = 0.5
    opt2 = optim.Adam([nn.Parameter(np.ones(2))], lr=0.1)
    opt2.load_state_dict(save_and_load(opt.state_dict(), tmp_path))
    group = opt2.param_groups[0]
    assert group["lr"] == 0.005 and group["lr_scale"] == 0.5 and group["betas"] == (0.8, 0.9)
    assert opt2.steps == 1 and opt2.state[0]["step"] == 1
    np.testing.assert_array_equal(opt2.state[0]["exp_avg"], opt.state[0]["exp_avg"])


def test_state_dict_layout():
    params = [nn.Parameter(np.ones((2, 3))), nn.Parameter(np.ones(3))]
    opt = optim.Adam([{"params": params[:1]}, {"params": params[1:], "lr": 0.5}], lr=0.1)
    for p in params:
        p.grad = np.ones(p.shape)
    opt.step()
    sd = opt.state_dict()
    assert [g["params"] for g in sd["param_groups"]] == [[0], [1]]
    assert [g["lr"] for g in sd["param_groups"]] == [0.1, 0.5]
    assert sorted(sd["state"]) == ["0.exp_avg", "0.exp_avg_sq", "0.step", "1.exp_avg", "1.exp_avg_sq", "1.step"]
    assert sd["state"]["0.exp_avg"].shape == (2, 3) and int(sd["state"]["1.step"]) == 1
    assert sd["step"] == 1
    json.dumps({k: v for k, v in sd.items() if k != "state"})
    sd["state"]["0.exp_avg"][...] = 7  # a copy: the optimizer is not affected
    assert not np.any(opt.state[0]["exp_avg"] == 7)


def test_load_state_dict_reports_every_problem_and_loads_nothing():
    params = [nn.Parameter(np.ones((2, 3))), nn.Parameter(np.ones(3))]
    opt = optim.Adam(params, lr=0.1)
    sd = {
        "param_groups": [{"params": [0, 1], "lr": 0.7, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}],
        "state": {"0.exp_avg": np.zeros((3, 2)), "1.bogus": np.zeros(3), "5.exp_avg": np.zeros(3)},
        "step": 4,
    }
    with pytest.raises(ValueError) as err:
        opt.load_state_dict(sd)
    msg = str(err.value)
    assert "'0.exp_avg' has shape (3, 2), expected (2, 3)" in msg
    assert "'1.bogus'" in msg and "'5.exp_avg'" in msg
    assert opt.param_groups[0]["lr"] == 0.1 and opt.steps == 0 and opt.state == {}

    sd["state"] = {}
    sd["param_groups"].append({"params": [2], "lr": 0.1})
    with pytest.raises(ValueError, match="2 parameter groups saved, the optimizer has 1"):
        opt.load_state_dict(sd)


# --- closed forms: the first steps of each rule written out by hand ------------------------------
def test_adamw_defaults_first_two_steps_in_closed_form():
    # Step 1: m_hat = g, v_hat = g^2, so p1 = p0 (1 - lr wd) - lr g / (|g| + eps), the defaults
    # lr 1e-3, betas (0.9, 0.999), eps 1e-8, weight_decay 0.01. Step 2 with gradient h:
    # m_hat = (0.9 0.1 g + 0.1 h) / (1 - 0.81), v_hat = (0.999 0.001 g^2 + 0.001 h^2) / (1 - 0.999^2).
    p0, g, h = np.array([0.5, -2.0, 3.0]), np.array([0.2, -0.1, 4.0]), np.array([-0.3, 0.5, 1.0])
    p = nn.Parameter(p0.copy())
    opt = optim.AdamW([p])
    p.grad = g.copy()
    opt.step()
    p1 = p0 * (1 - 1e-3 * 0.01) - 1e-3 * g / (np.abs(g) + 1e-8)
    np.testing.assert_allclose(p.data, p1, rtol=1e-13)
    p.grad = h.copy()
    opt.step()
    m_hat = (0.9 * 0.1 * g + 0.1 * h) / (1 - 0.9**2)
    v_hat = (0.999 * 0.001 * g**2 + 0.001 * h**2) / (1 - 0.999**2)
    p2 = p1 * (1 - 1e-3 * 0.01) - 1e-3 * m_hat / (np.sqrt(v_hat) + 1e-8)
    np.testing.assert_allclose(p.data, p2, rtol=1e-13)


def test_adam_defaults_first_step_in_closed_form():
    # lr 1e-3, no weight decay: the first step is lr g / (|g| + 1e-8) whatever the betas
    p0, g = np.array([0.5, -2.0]), np.array([0.2, -4.0])
    p = nn.Parameter(p0.copy())
    opt = optim.Adam([p])
    p.grad = g.copy()
    opt.step()
    np.testing.assert_allclose(p.data, p0 - 1e-3 * g / (np.abs(g) + 1e-8), rtol=1e-13)


def test_adam_eps_is_used_and_l2_decay_goes_through_the_gradient():
    # eps as large as |g| halves the first step: lr g / (|g| + |g|); Adam's decay adds wd p to g
    p = nn.Parameter(np.array([1.0, -1.0]))
    opt = optim.Adam([p], lr=0.1, eps=0.5, weight_decay=0.0)
    p.grad = np.array([0.5, -0.5])
    opt.step()
    np.testing.assert_allclose(p.data, [1.0 - 0.05, -1.0 + 0.05], rtol=1e-14)
    q = nn.Parameter(np.array([2.0]))
    opt = optim.Adam([q], lr=0.1, eps=1.0, weight_decay=0.5)
    q.grad = np.array([0.0])
    opt.step()
    d = 0.5 * 2.0  # the decayed gradient
    np.testing.assert_allclose(q.data, [2.0 - 0.1 * d / (d + 1.0)], rtol=1e-14)


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_momentum_under_a_constant_gradient_in_closed_form(nesterov):
    # b_t = g (1 - mu^t) / (1 - mu); heavy ball steps by b_t, Nesterov by g + mu b_t
    lr, mu, g = 0.1, 0.9, np.array([1.0, -2.0])
    p = nn.Parameter(np.zeros(2))
    opt = optim.SGD([p], lr=lr, momentum=mu, nesterov=nesterov)
    total = np.zeros(2)
    for t in range(1, 6):
        p.grad = g.copy()
        opt.step()
        b = g * (1 - mu**t) / (1 - mu)
        total += g + mu * b if nesterov else b
        np.testing.assert_allclose(p.data, -lr * total, rtol=1e-13)


def test_sgd_dampening_and_weight_decay_in_closed_form():
    # b1 = g1 (no dampening on the first step), b2 = mu b1 + (1 - d) g2, with g = grad + wd p
    p = nn.Parameter(np.array([1.0]))
    opt = optim.SGD([p], lr=0.5, momentum=0.5, dampening=0.25, weight_decay=0.2)
    p.grad = np.array([1.0])
    opt.step()
    g1 = 1.0 + 0.2 * 1.0
    p1 = 1.0 - 0.5 * g1
    np.testing.assert_allclose(p.data, [p1], rtol=1e-14)
    p.grad = np.array([1.0])
    opt.step()
    b2 = 0.5 * g1 + 0.75 * (1.0 + 0.2 * p1)
    np.testing.assert_allclose(p.data, [p1 - 0.5 * b2], rtol=1e-14)


@pytest.mark.parametrize("make_opt", [
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1),
    lambda ps: optim.Adam(ps, lr=0.1, weight_decay=0.1),
    lambda ps: optim.AdamW(ps, lr=0.1),
], ids=["sgd", "adam", "adamw"])
def test_step_leaves_the_callers_gradient_and_zero_grad_forgets_it(make_opt):
    p = nn.Parameter(np.array([1.0, 2.0]))
    g = np.array([0.5, -0.5])
    opt = make_opt([p])
    for _ in range(2):
        p.grad = g
        opt.step()
        np.testing.assert_array_equal(g, [0.5, -0.5])
    opt.zero_grad()
    assert p.grad is None


def test_param_group_hyperparameters_override_the_defaults_in_closed_form():
    a, b = nn.Parameter(np.array([1.0])), nn.Parameter(np.array([1.0]))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5, "weight_decay": 1.0}], lr=0.1)
    a.grad, b.grad = np.array([1.0]), np.array([1.0])
    opt.step()
    np.testing.assert_allclose(a.data, [1.0 - 0.1], rtol=1e-15)
    np.testing.assert_allclose(b.data, [1.0 - 0.5 * (1.0 + 1.0)], rtol=1e-15)


# --- gradient clipping ------------------------------------------------------------------------
@given(st.floats(0.01, 100.0), st.integers(0, 2**32 - 1))
def test_clip_grad_norm(max_norm, seed):
    rng = np.random.default_rng(seed)
    params = [nn.Parameter(np.zeros(s)) for s in [(3, 4), (4,), (2, 2, 2)]]
    grads = [rng.standard_normal(p.shape) for p in params]
    for p, g in zip(params, grads):
        p.grad = g.copy()
    norm = math.sqrt(sum(float((g * g).sum()) for g in grads))
    total = optim.clip_grad_norm(params, max_norm)
    assert isinstance(total, float) and total == pytest.approx(norm, rel=1e-12)
    scale = min(1.0, max_norm / (norm + 1e-6))
    for p, g in zip(params, grads):
        np.testing.assert_allclose(p.grad, g * scale, rtol=1e-12)
    clipped = math.sqrt(sum(float((p.grad**2).sum()) for p in params))
    assert clipped <= max_norm * (1 + 1e-9)
    if norm <= max_norm:
        for p, g in zip(params, grads):
            np.testing.assert_array_equal(p.grad, g)


def test_clip_grad_norm_uses_its_eps_and_leaves_the_callers_arrays():
    # total norm 5 over two parameters; the scale is max_norm / (5 + eps)
    a, b = nn.Parameter(np.zeros(1)), nn.Parameter(np.zeros(1))
    ga, gb = np.array([3.0]), np.array([4.0])
    a.grad, b.grad = ga, gb
    assert optim.clip_grad_norm([a, b], 2.0, eps=1.0) == pytest.approx(5.0)
    np.testing.assert_allclose([a.grad[0], b.grad[0]], [3.0 / 3.0, 4.0 / 3.0], rtol=1e-14)
    np.testing.assert_array_equal(ga, [3.0])
    np.testing.assert_array_equal(gb, [4.0])


def test_clip_grad_norm_with_gradients_the_engine_shares():
    # d(a + b)/da and d(a + b)/db are one array in the engine; each must be scaled once.
    a, b = nn.Parameter(np.zeros(4)), nn.Parameter(np.zeros(4))
    ((a + b) * Tensor(np.full(4, 3.0))).sum().backward()
    total = optim.clip_grad_norm([a, b], 1.0)
    assert total == pytest.approx(math.sqrt(8 * 9.0))
    np.testing.assert_allclose(a.grad, np.full(4, 3.0 / math.sqrt(72.0)), rtol=1e-5)
    np.testing.assert_allclose(b.grad, np.full(4, 3.0 / math.sqrt(72.0)), rtol=1e-5)


def test_clip_grad_norm_skips_parameters_without_gradient():
    a, b = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(2))
    a.grad = np.array([3.0, 4.0])
    assert optim.clip_grad_norm([a, b], 10.0) == pytest.approx(5.0)
    assert b.grad is None
    assert optim.clip_grad_norm([b], 1.0) == 0.0


# --- weight-decay groups ----------------------------------------------------------------------
class TinyViT(nn.Module):
    def __init__(self):
        super().__init__()
        self.cls_token = nn.Parameter(np.zeros((1, 1, 4)))
        self.pos_embed = nn.Parameter(np.zeros((1, 3, 4)))
        self.fc = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.table = nn.Parameter(np.zeros((5, 2)))


def test_param_groups_weight_decay_follows_timm():
    model = TinyViT()
    model.frozen = nn.Parameter(np.zeros((2, 2)), requires_grad=False)
    decay, no_decay = optim.param_groups_weight_decay(model.named_parameters(), 0.05)
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert [id(p) for p in decay["params"]] == [id(model.table), id(model.fc.weight)]
    assert {id(p) for p in no_decay["params"]} == {
        id(p) for p in (model.cls_token, model.pos_embed, model.fc.bias, model.norm.weight, model.norm.bias)
    }
    decay, no_decay = optim.param_groups_weight_decay(model.named_parameters(), 0.05, skip=("table",))
    assert [id(p) for p in decay["params"]] == [id(model.cls_token), id(model.pos_embed), id(model.fc.weight)]
    assert id(model.table) in {id(p) for p in no_decay["params"]}


# --- schedules ----------------------------------------------------------------------------------
def test_warmup_cosine_values():
    s = optim.warmup_cosine(1.0, total_steps=110, warmup_steps=10, final_lr=0.1)
    assert [s(i) for i in range(10)] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert s(10) == pytest.approx(1.0)
    assert s(60) == pytest.approx(0.55)  # halfway down the cosine: the mean of the ends
    assert s(110) == pytest.approx(0.1) and s(500) == pytest.approx(0.1)
    decay = [s(i) for i in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert all(a > b for a, b in zip(decay, decay[1:]))


def test_warmup_linear_and_constant():
    s = optim.warmup_linear(2.0, total_steps=20, warmup_steps=4)
    assert [s(i) for i in range(5)] == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.0])
    assert s(12) == pytest.approx(1.0) and s(20) == 0.0 and s(25) == 0.0
    c = optim.constant(0.3, warmup_steps=3)
    assert [c(i) for i in range(6)] == pytest.approx([0.1, 0.2, 0.3, 0.3, 0.3, 0.3])
    assert optim.constant(0.3)(0) == 0.3 and optim.warmup_cosine(1.0, 5)(0) == 1.0


def test_schedules_in_closed_form_with_a_final_lr():
    s = optim.warmup_cosine(1.0, total_steps=110, warmup_steps=10, final_lr=0.1)
    assert s(35) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4)), rel=1e-14)
    s = optim.warmup_linear(2.0, total_steps=24, warmup_steps=4, final_lr=0.4)
    assert s(9) == pytest.approx(0.4 + 1.6 * (1 - 5 / 20), rel=1e-14) and s(30) == pytest.approx(0.4)
    assert optim.warmup_cosine(1.0, 10, warmup_steps=10)(10) == pytest.approx(0.0)  # no decay span: at the end


def test_schedule_is_a_pure_function_of_the_step():
    s = optim.warmup_cosine(0.1, 1000, 50)
    forward = [s(i) for i in range(0, 1000, 7)]
    assert forward == [s(i) for i in range(0, 1000, 7)]
    assert [s(i) for i in reversed(range(0, 1000, 7))] == forward[::-1]
    with pytest.raises(ValueError):
        optim.warmup_cosine(0.1, total_steps=10, warmup_steps=20)


def test_set_lr_applies_each_groups_scale():
    a, b = nn.Parameter(np.zeros(1)), nn.Parameter(np.zeros(1))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr_scale": 0.25}], lr=1.0)
    optim.set_lr(opt, 0.4)
    assert [g["lr"] for g in opt.param_groups] == [0.4, 0.1]


# --- training ---------------------------------------------------------------------------------
def mlp_loss_curve(make_opt, steps=300):
    """Fit a random smooth function with Linear-GELU-Linear; return the loss at each step."""
    manual_seed(3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    y = np.sin(x @ rng.standard_normal((4, 2))).astype(np.float32)  # (64, 2)
    model = nn.Sequential(nn.Linear(4, 32), nn.GELU(), nn.Linear(32, 2))
    opt = make_opt(model.parameters())
    xt, yt = Tensor(x), Tensor(y)
    losses = []
    for _ in range(steps):
        model.zero_grad()
        loss = ((model(xt) - yt) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize(
    "make_opt",
    [lambda ps: optim.AdamW(ps, lr=0.01), lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9)],
    ids=["adamw", "sgd-momentum"],
)
def test_mlp_loss_goes_down(make_opt):
    losses = mlp_loss_curve(make_opt)
    assert losses[-1] < losses[0] / 50, (losses[0], losses[-1])


# --- flat buffers -----------------------------------------------------------------------------
def _two_layer_model():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    x = Tensor(np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32))
    return model, x


def test_parameters_stay_views_of_the_flat_buffer_across_a_model_and_optimizer_load():
    model, x = _two_layer_model()
    opt = optim.AdamW(model.parameters(), lr=1e-2)
    model(x).sum().backward()
    opt.flat.gather_grads()
    opt.step()
    saved_model, saved_opt = model.state_dict(), opt.state_dict()
    model.load_state_dict(saved_model)
    opt.load_state_dict(saved_opt)
    flat = opt._flat  # as it was: a load that rebinds .data would make the next step gather everything again
    for p, view in zip(model.parameters(), flat.data_views):
        assert p.data is view and np.shares_memory(p.data, flat.data[0]), p.shape
    before = model.state_dict()
    opt.zero_grad()
    model(x).sum().backward()
    opt.flat.gather_grads()  # as an all-reduce does (a GPU always): the step then runs on whole buffers
    opt.step()
    assert all(not np.array_equal(v, before[k]) for k, v in model.state_dict().items())
    for i, p in enumerate(model.parameters()):
        assert np.shares_memory(opt.state[i]["exp_avg"], opt._segments[0]["exp_avg"][0])


def test_a_flat_step_matches_the_step_of_each_parameter_alone():
    model, x = _two_layer_model()
    twin = [nn.Parameter(p.data.copy()) for p in model.parameters()]
    flat_opt = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    alone = [optim.AdamW([p], lr=1e-2, weight_decay=0.1) for p in twin]
    for _ in range(3):
        flat_opt.zero_grad()
        model(x).sum().backward()
        for p, t, o in zip(model.parameters(), twin, alone):
            t.grad = p.grad.copy()
            o.step()
        flat_opt.flat.gather_grads()
        flat_opt.step()
    assert flat_opt._segments  # the whole-buffer update ran
    for p, t in zip(model.parameters(), twin):
        np.testing.assert_array_equal(p.data, t.data)


def test_gathering_twice_keeps_the_gradients_when_one_parameter_has_none():
    a, b = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(3))
    opt = optim.SGD([a, b], lr=1.0)
    a.grad = np.array([3.0, 4.0])
    opt.flat.gather_grads()
    opt.flat.gather_grads()
    np.testing.assert_array_equal(a.grad, [3.0, 4.0])
    assert b.grad is None and float(opt.flat.grad_norm()) == 5.0


def test_a_false_flag_leaves_parameters_and_state_as_they_were():
    model, x = _two_layer_model()
    opt = optim.AdamW(model.parameters(), lr=1e-2)
    model(x).sum().backward()
    opt.step()
    params, state = model.state_dict(), opt.state_dict()["state"]
    opt.step(ok=np.bool_(False))
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, params[k])
    for k, v in opt.state_dict()["state"].items():
        np.testing.assert_array_equal(v, state[k])


# --- the moving average of the weights --------------------------------------------------------
def test_the_moving_average_follows_its_warmed_up_rule_and_applied_restores_the_weights():
    init, grads = problem()
    params = [nn.Parameter(a.copy()) for a in init]
    opt = optim.SGD(params, lr=0.1)
    ema = optim.ExponentialMovingAverage(opt, 0.9)
    expected = [a.copy() for a in init]
    for t in range(20):
        for p, g in zip(params, grads(*(p.data for p in params))):
            p.grad = g
        opt.step()
        ema.update()
        d = min(0.9, (1 + t) / (10 + t))  # 0.1 at the first update: the initialisation is soon forgotten
        expected = [d * e + (1 - d) * p.data for e, p in zip(expected, params)]
    for got, want in zip(ema.arrays(), expected):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    assert ema.updates == 20 and ema.rate() == pytest.approx(21 / 30)  # still warming up to 0.9
    weights = [p.data.copy() for p in params]
    with ema.applied():
        for p, want in zip(params, expected):
            np.testing.assert_allclose(p.data, want, rtol=1e-13, atol=1e-15)
    for p, w in zip(params, weights):
        np.testing.assert_array_equal(p.data, w)
    again = optim.ExponentialMovingAverage(opt, 0.9)
    again.load([a.copy() for a in ema.arrays()], ema.updates)
    for a, b in zip(again.arrays(), ema.arrays()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="shape"):
        again.load([np.zeros(3), np.zeros(4)], 0)
