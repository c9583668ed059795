"""LRTimeBudget: lays the MLPerf LR policy over a wall-clock budget (``optim.sched.time_budget_epochs`` with
``trainer.max_time``); the policy's own maths is :mod:`rnnt_plugin.optim.lr_policy`."""

from typing import Optional

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Timer
from nemo.utils.exp_manager import StatelessTimer

from rnnt_plugin.optim.lr_policy import MLPerfLRPolicy


class LRTimeBudget(pl.Callback):
    """Before each training batch, tells every :class:`MLPerfLRPolicy` with ``time_budget_epochs`` the share of
    ``trainer.max_time`` spent (Lightning's timer: validation included, restored on resume), so that its schedule
    ends with the budget. NeMo's per-run budget (``exp_manager.max_time_per_run``) restarts its clock on resume,
    which would restart the schedule: refused."""

    def __init__(self):
        self._policies: list = []
        self._timer: Optional[Timer] = None

    def on_train_start(self, trainer, pl_module) -> None:
        self._policies = [c.scheduler for c in trainer.lr_scheduler_configs
                          if isinstance(c.scheduler, MLPerfLRPolicy) and c.scheduler.time_budget_epochs is not None]
        self._timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
        if not self._policies:
            return
        if self._timer is None or self._timer.time_remaining() is None or isinstance(self._timer, StatelessTimer):
            raise ValueError("optim.sched.time_budget_epochs needs trainer.max_time (and no "
                             "exp_manager.max_time_per_run, whose clock restarts on resume): the LR policy is laid "
                             "over that time budget")

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self._policies:
            return
        elapsed = self._timer.time_elapsed()
        fraction = elapsed / (elapsed + self._timer.time_remaining())  # remaining: the budget less elapsed
        for policy in self._policies:
            policy.set_budget_fraction(fraction)
