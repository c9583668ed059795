"""CTC warm-up (``model.ctc_warmup.steps``, not in the reference): the first optimiser steps train the encoder and
joint with a frame-wise CTC loss, the joint's prediction input held at the start state.

A small transducer trained from scratch on a constrained domain can put a whole sentence on the first encoder
frame: its prediction net learns the grammar faster than the encoder learns the sounds, and the joint then ignores
the encoder. Trained first to read the labels from the sounds, frame by frame, the encoder and joint make the
acoustics the easier path once the transducer loss takes over.

Shape legend: B batch, S samples, T encoder frames, H encoder size, P prediction size, U labels, V vocabulary
without blank.
"""

import jiwer
import torch


def ctc_logits(model, encoded: torch.Tensor) -> torch.Tensor:
    """encoded (B, H, T) -> logits (B, T, V + 1) of the joint for each frame with the prediction net's output
    before any label (the transducer's state at u = 0), as a frame-wise CTC output layer."""
    start, _ = model.decoder.predict(None, state=None, add_sos=False, batch_size=encoded.shape[0])  # (B, 1, P)
    return model.joint.joint(encoded.transpose(1, 2), start)[:, :, 0]


def ctc_warmup_step(model, signal, signal_len, transcript, transcript_len) -> dict:
    """``{"loss": CTC loss}`` of a batch: signal (B, S), transcript (B, U); loss per target token, averaged over the
    batch. The loss goes straight to the logger (``self.log`` would repeat it until the epoch ends)."""
    encoded, encoded_len = model.forward(input_signal=signal, input_signal_length=signal_len)  # (B, H, T)
    log_probs = ctc_logits(model, encoded).float().log_softmax(-1)  # (B, T, V + 1); fp32 under a bf16 joint
    loss = torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), transcript, encoded_len, transcript_len,
                                        blank=model.joint.num_classes_with_blank - 1, zero_infinity=True)
    if model.logger is not None:
        model.logger.log_metrics({"train_ctc_warmup_loss": float(loss)}, step=model.global_step)
    return {"loss": loss}


def ctc_validation_pass(model, batch) -> dict:
    """Validation counts of the CTC greedy output (merge repeats, drop blanks), under NeMo's keys: during the
    warm-up the transducer is still untrained, and its greedy search would emit up to ``max_symbol_per_sample``
    pieces per utterance, slowly, for a meaningless WER."""
    signal, signal_len, transcript, transcript_len = batch[:4]
    encoded, encoded_len = model.forward(input_signal=signal, input_signal_length=signal_len)  # (B, H, T)
    best = ctc_logits(model, encoded).argmax(-1)  # (B, T)
    blank = model.joint.num_classes_with_blank - 1
    hypotheses, references = [], []
    for b in range(best.shape[0]):
        frames = best[b, : encoded_len[b]]
        keep = torch.ones_like(frames, dtype=torch.bool)
        keep[1:] = frames[1:] != frames[:-1]  # CTC: merge repeats, then drop blanks
        hypotheses.append(model.tokenizer.ids_to_text(frames[keep & (frames != blank)].tolist()))
        references.append(model.tokenizer.ids_to_text(transcript[b, : transcript_len[b]].tolist()))
    measures = jiwer.process_words(references, hypotheses)
    errors = measures.substitutions + measures.deletions + measures.insertions
    words = measures.hits + measures.substitutions + measures.deletions
    return {"val_wer_num": torch.tensor(errors), "val_wer_denom": torch.tensor(words),
            "val_wer": torch.tensor(errors / words), "val_utterances": torch.tensor(signal.shape[0])}
