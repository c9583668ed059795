"""LAMB against updates worked out by hand (apex FusedLAMB semantics), plus argument checks."""

import math

import pytest
import torch

from rnnt_plugin.optim import LAMB


def _two_group_lamb():
    a = torch.nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = LAMB([{"params": [a]}, {"params": [b]}], lr=0.1, betas=(0.9, 0.999), eps=1e-9, weight_decay=1e-3)
    return a, b, opt


def test_lamb_matches_hand_computed_two_steps():
    """lr 0.1, betas 0.9/0.999, eps 1e-9, weight decay 1e-3, max_grad_norm 1, two groups of one tensor each.

    Step 1: grads a: [3, 0], b: [0, 4]; global norm 5 > 1, so both are divided by 5: a: [0.6, 0], b: [0, 0.8].
      m = 0.1 g, v = 0.001 g^2; with bias correction m_hat = g, v_hat = g^2, so the Adam part is
      g / (|g| + 1e-9): a: [1 - 1.667e-9, 0], b: [0, 1 - 1.25e-9].
      a: u = [1.0029999983, 0.004] (+ 1e-3 * [3, 4]); ||w|| = 5, ||u|| = 1.0030079745, r = 4.9850052320;
         w = [3, 4] - 0.1 r u = [2.5000039761, 3.9980059979].
      b: u = [0, 0.99999999875] (w = 0 adds no decay); ||w|| = 0 so r = 1; w = [0, -0.099999999875].
    Step 2: grads a: [0.3, 0], b: [0, 0.4]; global norm 0.5 <= 1, no clipping.
      a: m = 0.9 * 0.06 + 0.1 * 0.3 = 0.084, v = 0.999 * 3.6e-4 + 0.001 * 0.09 = 4.4964e-4;
         bias corrections 0.19 and 0.001999: m_hat = 0.44210526, v_hat = 0.22493247, Adam part 0.93218;
         u = [0.9346796408, 0.0039980060] (+ 1e-3 * w); r = ||w|| / ||u|| = 5.0447859787;
         w = [2.0284781014, 3.9959890894].
      b: m = 0.112, v = 7.9936e-4, Adam part 0.93207964; decay adds 1e-3 * -0.1: u = [0, 0.9320796373];
         r = 0.1 / 0.9320796373 = 0.1072869698; w = -0.1 - 0.1 r u = [0, -0.1099999999].
    """
    a, b, opt = _two_group_lamb()
    a.grad = torch.tensor([3.0, 0.0], dtype=torch.float64)
    b.grad = torch.tensor([0.0, 4.0], dtype=torch.float64)
    opt.step()
    assert opt.last_grad_norm.item() == pytest.approx(5.0)
    torch.testing.assert_close(a.detach(), torch.tensor([2.500003976060155, 3.9980059979071956], dtype=torch.float64))
    torch.testing.assert_close(b.detach(), torch.tensor([0.0, -0.09999999987500001], dtype=torch.float64))
    torch.testing.assert_close(opt.state[a]["exp_avg"], torch.tensor([0.06, 0.0], dtype=torch.float64))
    torch.testing.assert_close(opt.state[b]["exp_avg_sq"], torch.tensor([0.0, 6.4e-4], dtype=torch.float64))

    a.grad = torch.tensor([0.3, 0.0], dtype=torch.float64)
    b.grad = torch.tensor([0.0, 0.4], dtype=torch.float64)
    opt.step()
    assert [g["step"] for g in opt.param_groups] == [2, 2]
    torch.testing.assert_close(a.detach(), torch.tensor([2.0284781013974293, 3.9959890894470815], dtype=torch.float64))
    torch.testing.assert_close(b.detach(), torch.tensor([0.0, -0.1099999998625], dtype=torch.float64))
    torch.testing.assert_close(opt.state[a]["exp_avg_sq"], torch.tensor([4.4964e-4, 0.0], dtype=torch.float64))


def test_lamb_clips_over_all_groups_not_per_group():
    """Each group alone has norm 0.8 < 1, together 1.131 > 1: the first moment must see the clipped grads."""
    a = torch.nn.Parameter(torch.ones(1))
    b = torch.nn.Parameter(torch.ones(1))
    opt = LAMB([{"params": [a]}, {"params": [b]}], lr=0.0)
    a.grad, b.grad = torch.tensor([0.8]), torch.tensor([0.8])
    opt.step()
    clipped = 0.8 / math.hypot(0.8, 0.8)
    assert opt.state[a]["exp_avg"].item() == pytest.approx(0.1 * clipped, rel=1e-6)
    assert opt.state[b]["exp_avg"].item() == pytest.approx(0.1 * clipped, rel=1e-6)


def test_lamb_trust_ratio_only_with_weight_decay_unless_nvlamb():
    """First step's Adam part is sign(g); weight norm 5: without decay the step is lr * sign(g), with use_nvlamb
    it is scaled by 5 / ||[1, 1]|| = 5 / sqrt(2)."""
    for use_nvlamb, expected_step in ((False, 0.1), (True, 0.1 * 5 / math.sqrt(2))):
        w = torch.nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
        opt = LAMB([w], lr=0.1, weight_decay=0.0, use_nvlamb=use_nvlamb)
        w.grad = torch.tensor([0.5, -0.5], dtype=torch.float64)
        opt.step()
        torch.testing.assert_close(
            w.detach(), torch.tensor([3.0 - expected_step, 4.0 + expected_step], dtype=torch.float64), rtol=0, atol=1e-8
        )


def test_lamb_skips_params_without_grad_and_trains_a_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    frozen = torch.nn.Parameter(torch.ones(3))
    opt = LAMB([{"params": model.parameters()}, {"params": [frozen]}], lr=0.05)
    x = torch.randn(64, 4)
    y = x.sum(dim=1, keepdim=True)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        return loss

    first = opt.step(closure).item()
    for _ in range(60):
        last = opt.step(closure).item()
    assert last < 0.2 * first
    assert torch.equal(frozen.detach(), torch.ones(3))
    assert "step" not in opt.param_groups[1]


@pytest.mark.parametrize(
    "kwargs",
    [{"lr": -1.0}, {"betas": (0.9, 1.0)}, {"eps": -1e-9}, {"weight_decay": -0.1}, {"max_grad_norm": 0.0}],
)
def test_lamb_rejects_bad_arguments(kwargs):
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        LAMB([torch.nn.Parameter(torch.ones(1))], **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_cpu_update_equals_the_foreach_update(dtype, monkeypatch):
    """The fused CPU passes (lamb_cpu) and the torch._foreach_* form give the same weights and moments over a few
    steps: clipping, a group without weight decay, one without gradient averaging, tensors of several chunks."""
    def run(fused: bool):
        if not fused:
            monkeypatch.setattr("rnnt_plugin.optim.lamb._fused_cpu_ok", lambda t: False)
        gen = torch.Generator().manual_seed(0)
        params = [torch.randn(shape, generator=gen, dtype=dtype).requires_grad_()
                  for shape in [(300, 700), (513,), (64, 3), (5,)]]
        opt = LAMB([{"params": params[:2]}, {"params": params[2:3], "weight_decay": 0.0},
                    {"params": params[3:], "grad_averaging": False}], lr=0.01, max_grad_norm=5.0)
        for _ in range(3):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen, dtype=dtype)
            opt.step()
        monkeypatch.undo()
        return [p.detach() for p in params], [s[k] for s in opt.state.values() for k in ("exp_avg", "exp_avg_sq")]

    (fused_w, fused_m), (foreach_w, foreach_m) = run(True), run(False)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-13)
    for a, b in zip(fused_w + fused_m, foreach_w + foreach_m):
        torch.testing.assert_close(a, b, **tol)
    assert not torch.equal(fused_w[0], torch.randn((300, 700), generator=torch.Generator().manual_seed(0),
                                                   dtype=dtype))  # the weights moved
