"""MLPerf training log for RNN-T: ``:::MLLOG {...}`` lines, written by rank 0, as a Lightning callback.

The line format is the one of MLCommons' ``mlperf-logging`` package (``mllog``), written here without it::

    :::MLLOG {"namespace": "", "time_ms": 1700000000000, "event_type": "POINT_IN_TIME", "key": "seed",
              "value": 1, "metadata": {"file": "rnnt_plugin/training/trainer.py", "lineno": 42}}

``event_type`` is ``INTERVAL_START`` / ``INTERVAL_END`` for ``*_start`` / ``*_stop`` keys and ``POINT_IN_TIME``
otherwise; epoch-scoped events carry ``epoch_num`` (1-based, as the reference) in their metadata, ``block_*``
carry ``first_epoch_num`` and ``epoch_count``, ``run_stop`` carries ``status`` (``success`` once the dev WER
reaches the target, else ``aborted``). The keys are those the MLPerf reference logs for RNN-T
(mlcommons/training rnn_speech_recognition/pytorch/train.py) and its compliance checker requires.

Usage (``rnnt_plugin.training`` does this)::

    mllog = MLPerfLogger("run/mlperf.log", target_wer=0.058, submission={"org": "me", ...})  # init_start
    trainer = pl.Trainer(callbacks=[mllog, ...]); mllog.log_run_config(cfg); trainer.fit(model)
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

import lightning.pytorch as pl
from omegaconf import DictConfig

BENCHMARK = "rnnt"


def format_line(key: str, value: Any = None, metadata: Optional[dict] = None, event_type: Optional[str] = None,
                *, time_ms: Optional[int] = None, file: str = "", lineno: int = 0) -> str:
    """One ``:::MLLOG`` line (no newline); ``event_type`` defaults from the key's ``_start`` / ``_stop`` suffix."""
    if event_type is None:
        event_type = ("INTERVAL_START" if key.endswith("_start") else
                      "INTERVAL_END" if key.endswith("_stop") else "POINT_IN_TIME")
    record = {
        "namespace": "",
        "time_ms": int(time.time() * 1000) if time_ms is None else time_ms,
        "event_type": event_type,
        "key": key,
        "value": value,
        "metadata": {"file": file, "lineno": lineno, **(metadata or {})},
    }
    return ":::MLLOG " + json.dumps(record, allow_nan=False)


def parse_log(text: str) -> list[dict]:
    """The records of the ``:::MLLOG`` lines of ``text`` (other lines are skipped)."""
    return [json.loads(line.split(":::MLLOG ", 1)[1]) for line in text.splitlines() if ":::MLLOG " in line]


def run_constants(cfg: DictConfig, world_size: int) -> dict[str, Any]:
    """The hyperparameter keys of an RNN-T run from the training config (``cfg``: the whole Hydra config)."""
    model, optim, sched = cfg.model, cfg.model.optim, cfg.model.optim.sched
    accumulate = int(cfg.trainer.get("accumulate_grad_batches", 1))
    augmentor = model.train_ds.get("augmentor") or {}
    speed = augmentor.get("polyphase_speed") or augmentor.get("speed") or {}
    spec = model.get("spec_augment") or {}
    ema_decay = (cfg.get("ema") or {}).get("decay")
    mlperf = cfg.get("mlperf") or {}
    return {
        "seed": cfg.get("seed"),
        "global_batch_size": int(model.train_ds.batch_size) * world_size * accumulate,
        "gradient_accumulation_steps": accumulate,
        "data_train_max_duration": model.train_ds.get("max_duration"),
        "data_speed_perturbaton_max": speed.get("max_speed_rate", 1.0),  # sic: the MLPerf key's spelling
        "data_speed_perturbaton_min": speed.get("min_speed_rate", 1.0),
        "data_spec_augment_freq_n": spec.get("freq_masks", 0),
        "data_spec_augment_freq_min": spec.get("min_freq", 0),
        "data_spec_augment_freq_max": spec.get("max_freq", 0),
        "data_spec_augment_time_n": spec.get("time_masks", 0),
        "data_spec_augment_time_min": spec.get("min_time", 0),
        "data_spec_augment_time_max": spec.get("max_time", 0),
        "data_train_num_buckets": model.train_ds.get("num_buckets"),
        "model_weights_initialization_scale": mlperf.get("weights_init_scale"),
        "eval_max_prediction_symbols": mlperf.get("max_symbol_per_sample"),
        "opt_name": "lamb",
        "opt_base_learning_rate": optim.lr,
        "opt_lamb_epsilon": optim.get("eps"),
        "opt_lamb_learning_rate_decay_poly_power": sched.get("lr_exp_gamma"),  # as the reference logs it
        "opt_learning_rate_warmup_epochs": sched.get("warmup_epochs"),
        "opt_lamb_learning_rate_hold_epochs": sched.get("hold_epochs"),
        "opt_lamb_beta_1": optim.betas[0],
        "opt_lamb_beta_2": optim.betas[1],
        "opt_gradient_clip_norm": optim.get("max_grad_norm"),
        "opt_learning_rate_alt_decay_func": True,
        "opt_learning_rate_alt_warmup_func": True,
        "opt_lamb_learning_rate_min": sched.get("min_lr"),
        "opt_weight_decay": optim.get("weight_decay"),
        "model_eval_ema_factor": ema_decay if ema_decay is not None else 0.0,
    }


class MLPerfLogger(pl.Callback):
    """Writes the MLPerf RNN-T events of a run to ``path`` (appending; rank 0 only) and stops training with
    ``run_stop`` status ``success`` at the first validation whose WER is <= ``target_wer``.

    Args:
        path: the log file (also echoed to stdout when ``echo``).
        target_wer: the quality target on the validation set (MLPerf RNN-T: 0.058 on dev-clean).
        submission: ``org``, ``platform``, ``division``, ``status`` of the ``submission_*`` keys.
        is_rank_zero: whether this process writes (the training driver passes ``trainer.is_global_zero``).
    """

    def __init__(self, path: str | os.PathLike, target_wer: float, submission: dict[str, str],
                 is_rank_zero: bool = True, echo: bool = False):
        if not 0.0 < float(target_wer) < 1.0:
            raise ValueError(f"target_wer must be in (0, 1), got {target_wer!r}")
        self.path = Path(path)
        self.target_wer = float(target_wer)
        self.enabled = is_rank_zero
        self.echo = echo
        self._run_stopped = False
        self._epoch_open: Optional[int] = None
        if self.enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.event("init_start")
        self.event("submission_benchmark", BENCHMARK)
        for field in ("org", "platform", "division", "status"):
            self.event(f"submission_{field}", submission[field])
        self.event("cache_clear", True)

    def event(self, key: str, value: Any = None, metadata: Optional[dict] = None) -> None:
        """Append one line; ``file``/``lineno`` name where the event was raised (the caller of this method)."""
        if not self.enabled:
            return
        frame = sys._getframe(1)
        line = format_line(key, value, metadata, file=frame.f_code.co_filename, lineno=frame.f_lineno)
        with open(self.path, "a", encoding="utf-8") as f:  # one short append per event: a killed run keeps its lines
            f.write(line + "\n")
        if self.echo:
            print(line, flush=True)

    def log_run_config(self, constants: dict[str, Any]) -> None:
        """The run's hyperparameters (see :func:`run_constants`), logged in the init phase."""
        for key, value in constants.items():
            self.event(key, value)

    # Lightning hooks -------------------------------------------------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        train_dl, val_dl = getattr(pl_module, "_train_dl", None), getattr(pl_module, "_validation_dl", None)
        self.event("train_samples", len(train_dl.dataset) if train_dl is not None else 0)
        self.event("eval_samples", len(val_dl.dataset) if val_dl is not None else 0)
        self.event("init_stop")
        self.event("run_start")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        self.event("block_start", metadata={"first_epoch_num": epoch, "epoch_count": 1})
        self.event("epoch_start", metadata={"epoch_num": epoch})
        self._epoch_open = epoch

    def _close_epoch(self) -> None:
        if self._epoch_open is not None:
            self.event("epoch_stop", metadata={"epoch_num": self._epoch_open})

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self._epoch_open is None:
            return
        self._close_epoch()
        self.event("eval_start", metadata={"epoch_num": self._epoch_open})

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self._epoch_open is None:
            return
        epoch, self._epoch_open = self._epoch_open, None
        wer = trainer.callback_metrics.get("val_wer")
        wer = float(wer) if wer is not None else None
        self.event("eval_accuracy", wer, metadata={"epoch_num": epoch})
        self.event("eval_stop", metadata={"epoch_num": epoch})
        self.event("block_stop", metadata={"first_epoch_num": epoch})
        ctc_warmup = getattr(pl_module, "in_ctc_warmup", False)  # val_wer is then the CTC output's
        if wer is not None and wer <= self.target_wer and not ctc_warmup:
            self._stop_run("success", epoch)
            trainer.should_stop = True

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._epoch_open is not None:  # no validation this epoch
            self._close_epoch()
            self.event("block_stop", metadata={"first_epoch_num": self._epoch_open})
            self._epoch_open = None

    def _stop_run(self, status: str, epoch: Optional[int] = None) -> None:
        if not self._run_stopped:
            self._run_stopped = True
            self.event("run_stop", metadata={"status": status, **({"epoch_num": epoch} if epoch else {})})

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_run("aborted", trainer.current_epoch)  # the target was not reached

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._stop_run("aborted", trainer.current_epoch + 1)
