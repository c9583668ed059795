"""TrainingMonitor: what a run logs at each optimiser step besides the loss."""

import time
from typing import Optional

import lightning.pytorch as pl


class TrainingMonitor(pl.Callback):
    """Per optimiser step: logs each param group's LR (``lr_<i>``), LAMB's gradient norm before clipping
    (``grad_norm``) and the global throughput (``train_utts_per_s``, the reference's FPS, and
    ``train_audio_s_per_s``; this rank's count times the world size, over the time since the previous step
    ended, data loading included).
    """

    def __init__(self):
        self._step_start: Optional[float] = None
        self._utts = 0
        self._audio_s = 0.0
        self._last_step = -1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._step_start is None:
            self._step_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
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
