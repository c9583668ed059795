"""Training driver: a Hydra config -> Lightning trainer + NeMo exp_manager + MLPerfRNNTModel -> .nemo.

``examples/train.py`` parses the config and calls :func:`train`; tests call it directly with a composed config.
Rerunning the same command resumes from ``<log dir>/checkpoints/*last.ckpt`` (``exp_manager.resume_if_exists``):
model, optimiser, LR policy, EMA, the bucketing sampler's position in the epoch and the RNG states.
"""

import random
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only
from nemo.utils.exp_manager import StatelessTimer, exp_manager
from omegaconf import DictConfig, OmegaConf

from rnnt_plugin.mlperf_logging import MLPerfLogger, run_constants
from rnnt_plugin.models import MLPerfRNNTModel
from rnnt_plugin.optim.ema import EMA
from rnnt_plugin.optim.lr_policy import MLPerfLRPolicy


class TrainingMonitor(pl.Callback):
    """Per optimiser step: logs each param group's LR (``lr_<i>``), LAMB's gradient norm before clipping
    (``grad_norm``) and the global throughput (``train_utts_per_s``, the reference's FPS, and
    ``train_audio_s_per_s``; this rank's count times the world size, over the time since the previous step
    ended, data loading included). Keeps the bucketing sampler's position and the RNG states in checkpoints.
    """

    def __init__(self):
        self._step_start: Optional[float] = None
        self._utts = 0
        self._audio_s = 0.0
        self._last_step = -1
        self._pending: Optional[dict] = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._step_start is None:
            self._step_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        sampler = getattr(pl_module, "bucketing_sampler", None)
        if sampler is not None:
            sampler.advance()
        self._utts += int(batch[1].numel())  # batch: (signal (B, T), signal_len (B,), ...)
        self._audio_s += float(batch[1].sum()) / pl_module.cfg.sample_rate
        if trainer.global_step == self._last_step:
            return  # gradient accumulation: no optimiser step yet
        self._last_step = trainer.global_step
        elapsed = time.perf_counter() - self._step_start
        optimizer = trainer.optimizers[0]
        metrics = {f"lr_{i}": group["lr"] for i, group in enumerate(optimizer.param_groups)}
        grad_norm = getattr(optimizer, "last_grad_norm", None)
        if grad_norm is not None:
            metrics["grad_norm"] = float(grad_norm)
        metrics["train_utts_per_s"] = self._utts * trainer.world_size / elapsed
        metrics["train_audio_s_per_s"] = self._audio_s * trainer.world_size / elapsed
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, batch_size=1)
        pl_module.log("utts_per_s", metrics["train_utts_per_s"], prog_bar=True, logger=False, batch_size=1)
        self._step_start, self._utts, self._audio_s = time.perf_counter(), 0, 0.0  # the next step loads data too

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._step_start = None  # not counting validation and the loader's start

    def on_train_start(self, trainer, pl_module) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        np.random.set_state(("MT19937", state["numpy_rng"]["key"].numpy(), *state["numpy_rng"]["rest"]))

    def state_dict(self) -> dict[str, Any]:
        sampler_state = self._sampler.state_dict() if getattr(self, "_sampler", None) is not None else None
        _, key, *rest = np.random.get_state()
        return {
            "sampler": sampler_state,
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "numpy_rng": {"key": torch.from_numpy(key.astype(np.int64)), "rest": [int(rest[0]), int(rest[1]),
                                                                                   float(rest[2])]},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The sampler's position at once (before any loader iterator exists: with worker processes Lightning
        starts one before ``on_train_start``), the RNG states when training starts."""
        if state_dict.get("sampler") is not None and getattr(self, "_sampler", None) is not None:
            self._sampler.load_state_dict(state_dict["sampler"])
        self._pending = state_dict

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._sampler = getattr(pl_module, "bucketing_sampler", None)


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


def _mlperf_logger(cfg: DictConfig, log_dir: Optional[Path]) -> Optional[MLPerfLogger]:
    mlperf = cfg.get("mlperf")
    if not mlperf or mlperf.get("log_file") is False:
        return None
    path = mlperf.get("log_file") or (Path(log_dir or ".") / "mlperf.log")
    submission = {f: mlperf.get(f"submission_{f}") for f in ("org", "platform", "division", "status")}
    return MLPerfLogger(path, mlperf.target_wer, submission, is_rank_zero=rank_zero_only.rank == 0)


def train(cfg: DictConfig, callbacks: Sequence[pl.Callback] = ()) -> MLPerfRNNTModel:
    """Train the model that ``cfg.model`` describes with ``cfg.trainer``; return it with its final weights.

    ``cfg.ema.decay`` (optional) keeps an EMA of the weights for validation and the final ``.nemo``, from
    optimiser step ``cfg.ema.start_step`` (default 0) on.
    ``cfg.mlperf`` (optional) writes the MLPerf log and stops at ``mlperf.target_wer``.
    ``cfg.nemo_path`` (optional) is where the final ``.nemo`` is written; by default
    ``<exp_manager log dir>/<name>.nemo``. ``callbacks`` are added to the trainer's (e.g. by tests).
    """
    pl.seed_everything(cfg.get("seed", 1), workers=True)
    all_callbacks = [TrainingMonitor(), LRTimeBudget(), *callbacks]
    ema_cfg = cfg.get("ema") or {}
    if ema_cfg.get("decay") is not None:
        all_callbacks.append(EMA(decay=ema_cfg.decay, start_step=ema_cfg.get("start_step", 0)))
    trainer = pl.Trainer(**OmegaConf.to_container(cfg.trainer, resolve=True), callbacks=all_callbacks)
    if (cfg.model.get("ctc_warmup") or {}).get("steps", 0) > 0 and isinstance(trainer.strategy, DDPStrategy):
        # The CTC warm-up leaves the prediction net's embedding without gradients: DDP must not wait for them.
        trainer.strategy._ddp_kwargs["find_unused_parameters"] = True
    log_dir: Optional[Path] = exp_manager(trainer, cfg.get("exp_manager", None))
    mllog = _mlperf_logger(cfg, log_dir)
    model = MLPerfRNNTModel(cfg=cfg.model, trainer=trainer)
    if mllog is not None:
        mllog.log_run_config(run_constants(cfg, trainer.world_size))
        trainer.callbacks.append(mllog)
    trainer.fit(model)
    nemo_path = cfg.get("nemo_path") or (Path(log_dir) / f"{cfg.name}.nemo" if log_dir else None)
    if nemo_path and trainer.is_global_zero:
        model.save_to(str(nemo_path))
    return model
