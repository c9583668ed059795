"""Training driver: a Hydra config -> Lightning trainer + NeMo exp_manager + MLPerfRNNTModel -> .nemo.

``examples/train.py`` parses the config and calls :func:`train`; tests call it directly with a composed config.
Rerunning the same command resumes from ``<log dir>/checkpoints/*last.ckpt`` (``exp_manager.resume_if_exists``):
model, optimiser, LR policy, EMA, the bucketing sampler's position in the epoch and the RNG states.
"""

from pathlib import Path
from typing import Optional, Sequence

import lightning.pytorch as pl
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_only
from nemo.utils.exp_manager import exp_manager
from omegaconf import DictConfig, OmegaConf

from rnnt_plugin.data.fileio import atomic_path
from rnnt_plugin.models import MLPerfRNNTModel
from rnnt_plugin.optim.ema import EMA
from rnnt_plugin.optim.lr_time_budget import LRTimeBudget
from rnnt_plugin.training.mlperf_logging import MLPerfLogger, run_constants
from rnnt_plugin.training.monitor import TrainingMonitor
from rnnt_plugin.training.resume import ResumeState


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
    all_callbacks = [TrainingMonitor(), ResumeState(), LRTimeBudget(), *callbacks]
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
        save_nemo(model, nemo_path)
    return model


def save_nemo(model: MLPerfRNNTModel, path) -> None:
    """``model.save_to(path)`` atomically: a crash or Ctrl-C while writing leaves the previous archive (or none)."""
    with atomic_path(path) as tmp:  # <name>.tmp.nemo beside it: NeMo wants the suffix
        model.save_to(str(tmp))
