"""The MLPerf RNN-T learning-rate policy, stepped once per optimiser step.

The reference (mlcommons/training rnn_speech_recognition/pytorch, ``lr_policy`` with ``policy='exponential'``)
sets, before its optimiser step number ``s`` (1-based) of epoch ``e`` (1-based), for every group:

    W = warmup_epochs * steps_per_epoch,  H = hold_epochs * steps_per_epoch
    a = (s + 1) / (W + 1)                                   if s < W       (linear warm-up, per step)
    a = 1                                                   if s < W + H   (hold)
    a = lr_exp_gamma ** (e - warmup_epochs - hold_epochs)   otherwise      (decay once per whole epoch)
    lr_group = max(a * initial_lr_group, min_lr)

So the first step runs at ``2 / (W + 1)`` of the peak, the last warm-up step (``s = W``) at the peak, and the
decay is a staircase: fractional epochs do not enter, every step of epoch ``e`` uses the same power.

Here ``last_epoch`` (PyTorch's name) counts optimiser steps already taken, so the LR for the next step is that of
``s = last_epoch + 1`` and ``e = ceil(s / steps_per_epoch)``. ``initial_lr_group`` is the group's LR when the
scheduler was built times the group's optional ``lr_factor`` key (the model's per-module factors).

With a time budget (``time_budget_epochs``, for runs stopped by ``trainer.max_time``) the policy's position is
whichever is further on: the steps taken, or the share of the budget spent laid over that many epochs,
``s = max(steps, f * time_budget_epochs * steps_per_epoch)`` for the fraction ``f`` of the budget used, which
:class:`rnnt_plugin.optim.lr_time_budget.LRTimeBudget` sets before each step. A machine slower than the budget assumes
follows the clock, so its LR still decays as far as a faster one's by the end instead of being cut off at a
higher LR; a faster one follows its steps, so it never holds the peak LR for more steps than the schedule says
(on the demo, a machine 1.7x faster held it ~1.6x as many steps by the clock alone and its dev WER rose
0.29 -> 0.68), and its extra epochs decay further.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import torch

__all__ = ["MLPerfLRPolicy", "MLPerfLRPolicyParams", "mlperf_lr_scale"]


@dataclass
class MLPerfLRPolicyParams:
    """NeMo ``optim.sched`` parameters of :class:`MLPerfLRPolicy` (mirrors NeMo's ``SchedulerParams``): the MLPerf
    reference's values, also :class:`MLPerfLRPolicy`'s defaults."""

    warmup_epochs: int = 6
    hold_epochs: int = 40
    lr_exp_gamma: float = 0.935
    min_lr: float = 1e-5
    steps_per_epoch: Optional[int] = None
    num_epochs: Optional[int] = None
    max_steps: Optional[int] = None
    time_budget_epochs: Optional[float] = None
    last_epoch: int = -1


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def mlperf_lr_scale(
    step: float, steps_per_epoch: int, warmup_epochs: int, hold_epochs: int, lr_exp_gamma: float
) -> float:
    """Multiplier ``a`` of the peak LR for the reference's 1-based optimiser step ``step`` (formula above; a
    fractional ``step`` under a time budget)."""
    warmup_steps = warmup_epochs * steps_per_epoch
    hold_steps = hold_epochs * steps_per_epoch
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if step < warmup_steps + hold_steps:
        return 1.0
    epoch = math.ceil(step / steps_per_epoch)  # 1-based epoch that holds this step
    return lr_exp_gamma ** (epoch - warmup_epochs - hold_epochs)


class MLPerfLRPolicy(torch.optim.lr_scheduler.LRScheduler):
    """Warm-up, hold, per-epoch exponential decay floored at ``min_lr``; call ``step()`` after each optimiser step.

    Args:
        optimizer: the optimiser; a group may carry ``lr_factor`` (float > 0) scaling its peak LR.
        warmup_epochs: epochs of linear warm-up.
        hold_epochs: epochs at the peak LR after warm-up.
        lr_exp_gamma: decay factor per epoch after the hold.
        min_lr: floor of every group's LR.
        steps_per_epoch: optimiser steps per epoch (after gradient accumulation). When ``None`` it is derived as
            ``max_steps // num_epochs``, which must divide exactly (NeMo fills ``max_steps`` from the trainer).
        num_epochs: training epochs; only used to derive ``steps_per_epoch``.
        max_steps: total optimiser steps; only used to derive ``steps_per_epoch`` (the LR stays at its
            decayed value past it, as in the reference).
        time_budget_epochs: None (steps set the position) or the epochs the schedule is laid over when the run is
            stopped by a time budget: position ``budget_fraction * time_budget_epochs`` epochs, or the steps taken
            where they are further on (module docstring).
        last_epoch: index of the last step taken, -1 for a fresh start (PyTorch convention).
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        warmup_epochs: int = MLPerfLRPolicyParams.warmup_epochs,
        hold_epochs: int = MLPerfLRPolicyParams.hold_epochs,
        lr_exp_gamma: float = MLPerfLRPolicyParams.lr_exp_gamma,
        min_lr: float = MLPerfLRPolicyParams.min_lr,
        steps_per_epoch: Optional[int] = None,
        num_epochs: Optional[int] = None,
        max_steps: Optional[int] = None,
        time_budget_epochs: Optional[float] = None,
        last_epoch: int = -1,
    ):
        self.warmup_epochs = _check_int("warmup_epochs", warmup_epochs, 0)
        self.hold_epochs = _check_int("hold_epochs", hold_epochs, 0)
        if not 0.0 < lr_exp_gamma <= 1.0:
            raise ValueError(f"lr_exp_gamma must be in (0, 1], got {lr_exp_gamma}")
        if not min_lr >= 0.0:
            raise ValueError(f"min_lr must be >= 0, got {min_lr}")
        self.lr_exp_gamma = float(lr_exp_gamma)
        self.min_lr = float(min_lr)
        self.steps_per_epoch = self._resolve_steps_per_epoch(steps_per_epoch, num_epochs, max_steps)
        if time_budget_epochs is not None and not time_budget_epochs > 0:
            raise ValueError(f"time_budget_epochs must be null or > 0, got {time_budget_epochs}")
        self.time_budget_epochs = time_budget_epochs
        self.budget_fraction = 0.0
        for i, group in enumerate(optimizer.param_groups):
            factor = group.get("lr_factor", 1.0)
            if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
                raise ValueError(f"param group {i} ({group.get('name', 'unnamed')}): lr_factor must be > 0, "
                                 f"got {factor!r}")
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _resolve_steps_per_epoch(steps_per_epoch, num_epochs, max_steps) -> int:
        if steps_per_epoch is not None:
            return _check_int("steps_per_epoch", steps_per_epoch, 1)
        if num_epochs is None or max_steps is None:
            raise ValueError("steps_per_epoch is required (or both num_epochs and max_steps to derive it), "
                             f"got steps_per_epoch=None, num_epochs={num_epochs}, max_steps={max_steps}")
        num_epochs = _check_int("num_epochs", num_epochs, 1)
        max_steps = _check_int("max_steps", max_steps, 1)
        if max_steps % num_epochs:
            raise ValueError(f"max_steps ({max_steps}) is not a multiple of num_epochs ({num_epochs}); "
                             "pass steps_per_epoch explicitly")
        return max_steps // num_epochs

    def set_budget_fraction(self, fraction: float) -> None:
        """The share of the time budget spent, in [0, 1]; it places the next ``step()`` (``time_budget_epochs``)."""
        if self.time_budget_epochs is None:
            raise ValueError("set_budget_fraction needs time_budget_epochs")
        self.budget_fraction = min(max(float(fraction), 0.0), 1.0)

    def lr_at(self, steps_done: int) -> list[float]:
        """Every group's LR for the optimiser step after ``steps_done`` steps (pure; does not change state); under
        a time budget, at the current ``budget_fraction`` where that is further on than the steps."""
        step = steps_done + 1
        if self.time_budget_epochs is not None:
            step = max(step, self.budget_fraction * self.time_budget_epochs * self.steps_per_epoch)
        scale = mlperf_lr_scale(
            step, self.steps_per_epoch, self.warmup_epochs, self.hold_epochs, self.lr_exp_gamma
        )
        return [
            max(scale * base_lr * group.get("lr_factor", 1.0), self.min_lr)
            for base_lr, group in zip(self.base_lrs, self.optimizer.param_groups)
        ]

    def get_lr(self) -> list[float]:
        return self.lr_at(self.last_epoch)
