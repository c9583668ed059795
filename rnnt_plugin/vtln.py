"""Test-time vocal-tract length normalisation (VTLN): each utterance is transcribed at the frequency warp under
which the model finds its own transcript most likely.

For every factor of a grid the featurizer warps the spectrum (the warp of its VTLP), the encoder encodes it and
greedy search transcribes it; the model's RNN-T log-likelihood of that transcript, log P(y_a | x_a), picks the
factor per utterance: the maximum-likelihood warp of classic VTLN (Lee and Rose, 1996) with the first-pass
transcript in place of a reference. No reference text is used. It helps most on voices far from the training
voices (a female voice for a model trained mostly on male ones); it costs one featurizer, encoder, greedy and
loss pass per factor.

Shape legend: B batch, S samples, D encoder features, T encoder frames, U labels, V vocabulary + blank.
"""

import argparse
from typing import Optional, Sequence, Tuple

import torch
from omegaconf import open_dict

from rnnt_plugin.decoding.greedy import GreedyNet, greedy_search
from rnnt_plugin.losses.function import rnnt_loss

__all__ = ["check_warps", "encode_with_vtln", "use_vtln", "warps_argument"]


def check_warps(warps: Sequence[float]) -> Tuple[float, ...]:
    """The grid as floats; a ValueError names what is wrong with it."""
    warps = tuple(float(a) for a in warps)
    if not warps or any(not 0.5 <= a <= 2.0 for a in warps):
        raise ValueError(f"vtln_warps must be a non-empty list of factors in [0.5, 2], got {list(warps)}")
    return warps


def warps_argument(text: str) -> Tuple[float, ...]:
    """A command line's "0.8,0.9,1.0" -> (0.8, 0.9, 1.0) (an argparse ``type``)."""
    try:
        return check_warps(a for a in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {e}") from None


def use_vtln(model, warps: Optional[Sequence[float]]) -> None:
    """Make the model's ``transcribe()`` (and so ``examples/evaluate.py``) use VTLN over ``warps`` (None: off),
    by setting its config's ``vtln_warps``, which a saved ``.nemo`` keeps."""
    with open_dict(model.cfg):
        model.cfg.vtln_warps = None if warps is None else list(check_warps(warps))


def _transcript_nll(model, net: GreedyNet, encoded: torch.Tensor, encoded_len: torch.Tensor) -> torch.Tensor:
    """-log P(greedy transcript | encoded) (B,) of encoder output (B, D, T) with lengths (B,)."""
    blank = model.joint.num_classes_with_blank - 1
    labels = greedy_search(net, encoded, encoded_len, blank=blank).labels  # B tensors (U_b,)
    label_len = torch.tensor([len(y) for y in labels], device=encoded.device)
    # (B, U), zero-padded; at least one column, as the loss needs even when every transcript is empty
    targets = torch.nn.utils.rnn.pad_sequence([*labels, torch.zeros(1, dtype=torch.long)], batch_first=True)[:-1]
    targets = targets.to(encoded.device)
    pred, _ = model.decoder.predict(targets, state=None, add_sos=True, batch_size=len(labels))  # (B, U + 1, P)
    logits = model.joint.joint(encoded.transpose(1, 2), pred[:, : int(label_len.max()) + 1])  # (B, T, U_max + 1, V)
    return rnnt_loss(logits.float().contiguous(), targets, encoded_len, label_len, blank=blank, reduction="none")


@torch.inference_mode()
def encode_with_vtln(model, signal: torch.Tensor, length: torch.Tensor, warps: Sequence[float]):
    """Encoder output of each utterance at its maximum-likelihood warp.

    Args:
        model: an :class:`rnnt_plugin.models.MLPerfRNNTModel` in eval mode.
        signal: (B, S) audio; length: (B,) valid samples.
        warps: the grid of warp factors (1.0: no warp; > 1 moves formants up).

    Returns:
        encoded (B, D, T), encoded_len (B,) and the chosen factor of each utterance (B,) float64 on the CPU.
    """
    warps = check_warps(warps)
    net = GreedyNet(model.decoder, model.joint)
    best = best_nll = best_warp = encoded_len = None
    for a in warps:
        features, frames = model.preprocessor.get_features(signal, length, warp=a)  # (B, F, T'), (B,)
        encoded, encoded_len = model.encoder(audio_signal=features, length=frames)  # (B, D, T), (B,)
        nll = _transcript_nll(model, net, encoded, encoded_len)  # (B,)
        if best is None:
            best, best_nll = encoded.clone(), nll
            best_warp = torch.full(nll.shape, a, dtype=torch.float64)
            continue
        better = nll < best_nll  # (B,)
        best[better] = encoded[better]
        best_nll = torch.where(better, nll, best_nll)
        best_warp = torch.where(better.cpu(), a, best_warp)
    return best, encoded_len, best_warp
