"""Test-time vocal-tract length normalisation (VTLN): each utterance is transcribed at the frequency warp whose
transcript the model finds most likely over a grid of warps.

For every factor of a grid the featurizer warps the spectrum (the warp of its VTLP), the encoder encodes it and
greedy search transcribes it. Each of these transcripts is scored by the model's RNN-T likelihood summed over the
grid's encodings, sum_a P(y_c | x_a) (the warp as a hidden variable with a uniform prior), and the best one is
transcribed at its own factor: maximum-likelihood VTLN (Lee and Rose, 1996) with first-pass transcripts in place
of a reference. No reference text is used. It helps most on voices far from the training voices (a female voice
for a model trained mostly on male ones). It costs one STFT, per factor one filterbank, encoder and greedy pass,
and one loss pass per pair of factors.

Shape legend: B batch, S samples, D encoder features, T encoder frames, U labels, V vocabulary + blank.
"""

import argparse
from typing import Optional, Sequence, Tuple

import torch
from omegaconf import open_dict

from rnnt_plugin.core.greedy import GreedyNet, greedy_search
from rnnt_plugin.losses.function import rnnt_loss

__all__ = ["check_warps", "encode_with_vtln", "most_likely_transcripts", "use_vtln", "warps_argument"]


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


def _log_likelihoods(model, labels: Sequence[torch.Tensor], utterance: torch.Tensor,
                     encodings: Sequence[torch.Tensor], encoded_len: torch.Tensor) -> torch.Tensor:
    """log P(labels_n | encoded[utterance_n]) (A, N) of N transcripts (tensors (U_n,)) of the utterances
    ``utterance`` (N,) under each of the encoder outputs ``encodings`` (A tensors (B, D, T)), lengths (B,)."""
    blank = model.joint.num_classes_with_blank - 1
    device = encoded_len.device
    label_len = torch.tensor([len(y) for y in labels], device=device)
    # (N, U), zero-padded; at least one column, as the loss needs even when every transcript is empty
    targets = torch.nn.utils.rnn.pad_sequence([*labels, torch.zeros(1, dtype=torch.long)], batch_first=True)[:-1]
    targets = targets.to(device)
    pred, _ = model.decoder.predict(targets, state=None, add_sos=True, batch_size=len(labels))  # (N, U + 1, P)
    pred = pred[:, : int(label_len.max()) + 1]
    utterance = utterance.to(device)
    log_lik = []
    for encoded in encodings:
        logits = model.joint.joint(encoded[utterance].transpose(1, 2), pred)  # (N, T, U_max + 1, V)
        log_lik.append(-rnnt_loss(logits.float().contiguous(), targets, encoded_len[utterance], label_len,
                                  blank=blank, reduction="none"))
    return torch.stack(log_lik).cpu()


def most_likely_transcripts(log_lik: torch.Tensor, candidate: torch.Tensor) -> torch.Tensor:
    """Per utterance, the factor whose transcript is most likely summed over the grid's encodings.

    Args:
        log_lik: (A, N) log P(y_n | x_a) of N distinct (utterance, transcript) pairs under the encoding at each
            factor a of the grid.
        candidate: (C, B) int64, the pair (0..N-1) of each utterance b's greedy transcript at each factor c of the
            grid (C = A).

    Returns:
        (B,) int64: for each utterance, of the factors whose transcript is the best-scoring pair of that utterance,
        the one under whose encoding it is most likely.
    """
    marginal = torch.logsumexp(log_lik, dim=0)  # (N,)
    score = marginal[candidate]  # (C, B)
    best = candidate.gather(0, score.argmax(0, keepdim=True))  # (1, B): the winning pair of each utterance
    own = log_lik.gather(1, candidate)  # (C, B): log P(y_c | x_c)
    return own.masked_fill(candidate != best, float("-inf")).argmax(0)


@torch.inference_mode()
def encode_with_vtln(model, signal: torch.Tensor, length: torch.Tensor, warps: Sequence[float]):
    """Encoder output of each utterance at the warp whose transcript is most likely over the whole grid.

    Every factor a gives an encoding x_a and its greedy transcript y_a. The warp is treated as unknown with a
    uniform prior: each candidate y_c is scored by its likelihood summed over the grid, sum_a P(y_c | x_a), and
    the best candidate's own factor c is chosen (where greedy search gives y_c again). When several factors gave
    that same transcript, the one under which it is most likely is chosen.

    Args:
        model: an :class:`rnnt_plugin.models.MLPerfRNNTModel` in eval mode.
        signal: (B, S) audio; length: (B,) valid samples.
        warps: the grid of warp factors (1.0: no warp; > 1 moves formants up).

    Returns:
        encoded (B, D, T), encoded_len (B,) and the chosen factor of each utterance (B,) float64 on the CPU.
    """
    warps = check_warps(warps)
    net = GreedyNet(model.decoder, model.joint)
    blank = model.joint.num_classes_with_blank - 1
    encodings, transcripts = [], []  # per factor: (B, D, T); B tensors (U_b,)
    for features, frames in model.preprocessor.get_warped_features(signal, length, warps):
        encoded, encoded_len = model.encoder(audio_signal=features, length=frames)  # (B, D, T), (B,)
        encodings.append(encoded)
        transcripts.append(greedy_search(net, encoded, encoded_len, blank=blank).labels)
    # the distinct (utterance, transcript) pairs among the factors' transcripts
    pairs = {}
    candidate = torch.tensor([[pairs.setdefault((b, tuple(y.tolist())), len(pairs)) for b, y in enumerate(labels)]
                              for labels in transcripts])  # (C, B)
    utterance = torch.tensor([b for b, _ in pairs])  # (N,)
    labels = [torch.tensor(y, dtype=torch.long) for _, y in pairs]
    chunks = range(0, len(labels), len(signal))  # B pairs at a time: the joint's memory of a plain batch
    log_lik = torch.cat([_log_likelihoods(model, labels[i:i + len(signal)], utterance[i:i + len(signal)],
                                          encodings, encoded_len) for i in chunks], dim=1)  # (A, N)
    chosen = most_likely_transcripts(log_lik, candidate)  # (B,)
    batch = torch.arange(len(chosen), device=encoded_len.device)
    encoded = torch.stack(encodings)[chosen.to(encoded_len.device), batch]  # (B, D, T)
    return encoded, encoded_len, torch.tensor(warps, dtype=torch.float64)[chosen]
