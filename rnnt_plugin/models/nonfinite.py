"""Non-finite losses: the step is skipped on every rank, and the utterances of the batch are logged."""

import logging

import torch

_log = logging.getLogger(__name__)


def finite_on_every_rank(model, loss: torch.Tensor) -> bool:
    """Whether ``loss`` is finite here and on every other rank (one boolean all-reduce under DDP)."""
    finite = bool(torch.isfinite(loss).all())
    if model._trainer is not None and model.trainer.world_size > 1:
        finite = model.trainer.strategy.reduce_boolean_decision(finite, all=True)
    return finite


def log_skipped_batch(model, loss: torch.Tensor, sample_ids) -> None:
    """Log a skipped step with the batch's audio files (``sample_ids`` (B,) dataset indices, or None when the
    loader does not return them: ``train_ds.return_sample_id: true``)."""
    processor = getattr(model._train_dl.dataset, "manifest_processor", None)
    if sample_ids is None:
        files = "unknown (set train_ds.return_sample_id: true)"
    elif processor is None:
        files = f"dataset indices {sample_ids.tolist()}"
    else:
        files = [processor.collection[int(i)].audio_file for i in sample_ids]
    _log.warning("non-finite loss %s at step %d (rank %d): step skipped; utterances: %s",
                 loss.detach().cpu().tolist(), model.trainer.global_step, model.global_rank, files)
