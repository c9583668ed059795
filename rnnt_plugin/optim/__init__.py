"""Optimisation for the MLPerf RNN-T recipe: LAMB, the reference LR policy, and an EMA-of-weights callback.

Importing this package is cheap (no NeMo, no Lightning; the EMA callback lives in ``rnnt_plugin.optim.ema``);
``register_with_nemo()`` imports NeMo and makes the optimiser and the scheduler selectable by name in an ``optim:``
config::

    optim:
      name: mlperf_lamb        # LAMB (apex FusedLAMB semantics); its other keys are LAMB's arguments
      lr: 0.004
      sched:
        name: MLPerfLRPolicy
        warmup_epochs: 6
        hold_epochs: 40
        lr_exp_gamma: 0.935
        min_lr: 1.0e-5
        num_epochs: ${trainer.max_epochs}   # with NeMo's max_steps: steps_per_epoch = max_steps // num_epochs
"""

from rnnt_plugin.optim.lamb import LAMB, LAMBParams
from rnnt_plugin.optim.lr_policy import MLPerfLRPolicy, MLPerfLRPolicyParams, mlperf_lr_scale

__all__ = [
    "LAMB",
    "LAMBParams",
    "MLPerfLRPolicy",
    "MLPerfLRPolicyParams",
    "mlperf_lr_scale",
    "register_with_nemo",
    "OPTIMIZER_NAME",
    "SCHEDULER_NAME",
]

# NeMo already maps "lamb" to apex's FusedLAMB when apex is installed, so ours gets its own name.
OPTIMIZER_NAME = "mlperf_lamb"
SCHEDULER_NAME = "MLPerfLRPolicy"


def register_with_nemo() -> None:
    """Register LAMB as ``mlperf_lamb`` and the policy as ``MLPerfLRPolicy`` with NeMo; safe to call again.

    LAMB's parameter dataclass is also registered as ``mlperf_lamb_params``, the name NeMo's optimiser
    ``args: {name: auto}`` lookup uses. Give the scheduler's arguments flat in ``sched:``: NeMo 3.0 drops the
    overrides under ``sched.args.params`` (its config upgrade flattens ``params`` before reading it).
    """
    from nemo.core.config.optimizers import AVAILABLE_OPTIMIZER_PARAMS, register_optimizer_params
    from nemo.core.optim.lr_scheduler import AVAILABLE_SCHEDULERS, register_scheduler
    from nemo.core.optim.optimizers import AVAILABLE_OPTIMIZERS, register_optimizer

    if OPTIMIZER_NAME not in AVAILABLE_OPTIMIZERS:
        register_optimizer(OPTIMIZER_NAME, LAMB, LAMBParams)
    if f"{OPTIMIZER_NAME}_params" not in AVAILABLE_OPTIMIZER_PARAMS:
        register_optimizer_params(f"{OPTIMIZER_NAME}_params", LAMBParams)
    if SCHEDULER_NAME not in AVAILABLE_SCHEDULERS:
        register_scheduler(SCHEDULER_NAME, MLPerfLRPolicy, MLPerfLRPolicyParams)
