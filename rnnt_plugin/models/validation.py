"""Validation under DDP: each rank decodes its own share of the utterances, and the counts are summed once at the
end of the epoch (NeMo's WER metric all-gathers on every ``compute()``, which needs the same number of validation
batches on every rank, and validation shares may differ by one utterance)."""

import torch
from nemo.collections.asr.metrics.wer import WER


def per_rank_wer(model) -> WER:
    """NeMo's WER metric for ``model``'s decoding, without its all-gather (the training-batch WER is rank 0's)."""
    return WER(decoding=model.decoding, batch_dim_index=0, use_cer=model.cfg.get("use_cer", False),
               log_prediction=model.cfg.get("log_prediction", True), sync_on_compute=False)


def epoch_totals(outputs: list, compute_eval_loss: bool, device: torch.device) -> dict:
    """The logs of a validation epoch from its batches' outputs, summed over the batches and all ranks:
    ``val_wer`` (word errors / words; nan without reference words), ``val_utterances`` (each counted once) and,
    with ``compute_eval_loss``, ``val_loss`` (the mean over all ranks' batches)."""
    totals = torch.tensor([[float(sum(x["val_wer_num"] for x in outputs)),
                            float(sum(x["val_wer_denom"] for x in outputs)),
                            float(sum(x["val_utterances"] for x in outputs)),
                            float(sum(x["val_loss"] for x in outputs)) if compute_eval_loss else 0.0,
                            float(len(outputs))]], dtype=torch.float64, device=device)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(totals)
    errors, words, utterances, loss_sum, batches = totals[0].tolist()
    logs = {"val_wer": torch.tensor(errors / words if words else float("nan")),
            "val_utterances": torch.tensor(utterances)}
    if compute_eval_loss:
        logs["val_loss"] = torch.tensor(loss_sum / max(batches, 1.0))
    return logs
