"""The MLPerf LR policy at chosen steps, its checkpoint round trip, and selection through NeMo's `optim:` config."""

import pytest
import torch
from omegaconf import OmegaConf

from rnnt_plugin.optim import LAMB, MLPerfLRPolicy, mlperf_lr_scale, register_with_nemo

# 10 steps per epoch, warm-up 2 epochs (W = 20 steps), hold 3 epochs (H = 30 steps), gamma 0.5.
# Keys: optimiser steps already taken; the reference's step number is one more.
EXPECTED_SCALE = {
    0: 2 / 21,  # s = 1: (1 + 1) / (20 + 1)
    9: 11 / 21,  # s = 10
    18: 20 / 21,  # s = 19, the last step under W
    19: 1.0,  # s = 20 = W: hold starts
    48: 1.0,  # s = 49
    49: 1.0,  # s = 50 = W + H, in epoch 5 = warmup + hold: gamma ** 0
    50: 0.5,  # s = 51, epoch 6
    59: 0.5,  # s = 60, still epoch 6: the decay is per whole epoch
    60: 0.25,  # s = 61, epoch 7
    69: 0.25,  # s = 70
    70: 0.125,  # s = 71, epoch 8
}


def _sgd_two_groups():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    return torch.optim.SGD([{"params": [a]}, {"params": [b], "lr_factor": 0.5}], lr=1.0)


def test_scale_function_matches_reference_formula_at_chosen_steps():
    for done, scale in EXPECTED_SCALE.items():
        assert mlperf_lr_scale(done + 1, 10, 2, 3, 0.5) == pytest.approx(scale, rel=1e-12), done


def test_scheduler_sets_group_lrs_per_step_with_factors_and_floor():
    opt = _sgd_two_groups()
    sched = MLPerfLRPolicy(opt, warmup_epochs=2, hold_epochs=3, lr_exp_gamma=0.5, min_lr=0.1, steps_per_epoch=10)
    seen = []
    for _ in range(80):
        seen.append([g["lr"] for g in opt.param_groups])  # the LR the coming optimiser step uses
        opt.step()
        sched.step()
    for done, scale in EXPECTED_SCALE.items():
        assert seen[done] == pytest.approx([max(scale, 0.1), max(0.5 * scale, 0.1)], rel=1e-12), done
    assert seen[70] == pytest.approx([0.125, 0.1])  # the second group is floored at min_lr
    assert seen[79] == pytest.approx([0.125, 0.1])


def test_scheduler_resumes_from_state_dict():
    opt = _sgd_two_groups()
    sched = MLPerfLRPolicy(opt, warmup_epochs=2, hold_epochs=3, lr_exp_gamma=0.5, min_lr=0.0, steps_per_epoch=10)
    for _ in range(55):
        opt.step()
        sched.step()
    opt_state, sched_state = opt.state_dict(), sched.state_dict()

    opt2 = _sgd_two_groups()
    sched2 = MLPerfLRPolicy(opt2, warmup_epochs=2, hold_epochs=3, lr_exp_gamma=0.5, min_lr=0.0, steps_per_epoch=10)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(sched_state)
    for _ in range(10):
        opt.step(), opt2.step()
        sched.step(), sched2.step()
        assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)  # 65 steps taken: s = 66 lies in epoch 7


def test_steps_per_epoch_derived_from_max_steps_and_checked():
    opt = _sgd_two_groups()
    assert MLPerfLRPolicy(opt, num_epochs=4, max_steps=40).steps_per_epoch == 10
    with pytest.raises(ValueError, match="num_epochs"):
        MLPerfLRPolicy(_sgd_two_groups(), num_epochs=3, max_steps=40)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        MLPerfLRPolicy(_sgd_two_groups(), max_steps=40)
    with pytest.raises(TypeError, match="warmup_epochs"):
        MLPerfLRPolicy(_sgd_two_groups(), warmup_epochs=1.5, steps_per_epoch=10)
    bad = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr_factor": 0.0, "name": "joint"}], lr=1)
    with pytest.raises(ValueError, match="joint"):
        MLPerfLRPolicy(bad, steps_per_epoch=10)


def test_time_budget_places_the_policy_by_the_share_of_budget_spent_or_the_steps_taken():
    """4 epochs of 10 steps laid over the budget: spending f of it puts the next step at s = 40 f (a slow
    machine, few steps), unless the steps taken are further on (a fast one)."""
    opt = _sgd_two_groups()
    sched = MLPerfLRPolicy(opt, warmup_epochs=1, hold_epochs=1, lr_exp_gamma=0.5, min_lr=0.0, steps_per_epoch=10,
                           time_budget_epochs=4)
    expected = {0.25: 1.0, 0.5: 1.0, 0.55: 0.5, 0.76: 0.25, 1.0: 0.25, 1.5: 0.25}  # 1.5: clamped to 1
    for fraction, scale in expected.items():
        sched.set_budget_fraction(fraction)
        for _ in range(3):  # 3 steps at each share of the budget (21 in all): the clock is further on
            opt.step()
            sched.step()
            assert [g["lr"] for g in opt.param_groups] == pytest.approx([scale, 0.5 * scale]), fraction

    opt = _sgd_two_groups()
    sched = MLPerfLRPolicy(opt, warmup_epochs=1, hold_epochs=1, lr_exp_gamma=0.5, min_lr=0.0, steps_per_epoch=10,
                           time_budget_epochs=4)
    sched.set_budget_fraction(0.05)  # s = 2 by the clock
    lrs = []
    for _ in range(44):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    # after b steps the next is s = b + 1 (from b = 2 on, ahead of the clock): the schedule by steps, decaying
    # past the budget's 4 epochs
    assert lrs[1:] == pytest.approx([mlperf_lr_scale(b + 1, 10, 1, 1, 0.5) for b in range(2, 45)])
    assert lrs[0] == pytest.approx(3 / 11) and lrs[-1] == pytest.approx(0.125)
    with pytest.raises(ValueError, match="time_budget_epochs"):
        MLPerfLRPolicy(_sgd_two_groups(), steps_per_epoch=10).set_budget_fraction(0.5)
    with pytest.raises(ValueError, match="time_budget_epochs"):
        MLPerfLRPolicy(_sgd_two_groups(), steps_per_epoch=10, time_budget_epochs=0)


@pytest.mark.parametrize("args_style", ["flat", "auto"])
def test_nemo_optim_config_builds_lamb_and_policy(args_style):
    """A NeMo ModelPT's `setup_optimization` turns an `optim:` section into our LAMB and our policy."""
    from nemo.core.classes import ModelPT

    class TinyModel(ModelPT):
        def __init__(self):
            super().__init__(cfg=OmegaConf.create({}), trainer=None)
            self.encoder = torch.nn.Linear(3, 4)
            self.joint = torch.nn.Linear(4, 2)

        def setup_training_data(self, cfg):
            pass

        def setup_validation_data(self, cfg):
            pass

        @classmethod
        def list_available_models(cls):
            return []

        def setup_optimizer_param_groups(self):
            self._optimizer_param_groups = [
                {"params": list(self.encoder.parameters()), "name": "encoder"},
                {"params": list(self.joint.parameters()), "name": "joint", "lr_factor": 2.0},
            ]

    register_with_nemo()
    register_with_nemo()  # idempotent
    policy = {"warmup_epochs": 1, "hold_epochs": 1, "lr_exp_gamma": 0.9, "min_lr": 1e-5, "num_epochs": 5}
    sched = {"name": "MLPerfLRPolicy", "max_steps": 50, **policy}
    if args_style == "flat":
        optim = {"name": "mlperf_lamb", "lr": 0.004, "betas": [0.9, 0.98], "weight_decay": 1e-3, "sched": sched}
    else:
        optim = {"name": "mlperf_lamb", "lr": 0.004, "args": {"name": "auto", "params": {"betas": [0.9, 0.98]}},
                 "sched": sched}
    model = TinyModel()
    optimizer, scheduler = model.setup_optimization(OmegaConf.create(optim))
    assert isinstance(optimizer, LAMB)
    assert isinstance(scheduler["scheduler"], MLPerfLRPolicy)
    assert scheduler["interval"] == "step"
    assert optimizer.param_groups[0]["eps"] == 1e-9 and optimizer.max_grad_norm == 1.0
    assert tuple(optimizer.param_groups[0]["betas"]) == (0.9, 0.98)
    assert scheduler["scheduler"].steps_per_epoch == 10  # max_steps 50 / num_epochs 5
    # first step of a 10-step warm-up: 2 / 11 of the peak; the joint group's factor doubles it
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.004 * 2 / 11, 0.008 * 2 / 11])
