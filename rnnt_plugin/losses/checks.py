"""Validation of the RNN-T loss inputs: bad public input raises ValueError/TypeError naming what is wrong.

Shape legend: B batch, T frames, U labels (the lattice has U+1 rows), V vocabulary incl. blank.
"""

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INT_DTYPES = (torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


def _first_bad(mask: torch.Tensor) -> int:
    """Index of the first True entry of a (B,) or (B, ...) mask, reduced over all but the first dim."""
    per_sample = mask.reshape(mask.shape[0], -1).any(dim=1)
    return int(per_sample.nonzero()[0, 0])


def _check_lengths(name: str, lengths, n_batch: int, low: int, high: int, high_name: str, values: bool) -> None:
    if not isinstance(lengths, torch.Tensor) or lengths.dtype not in _INT_DTYPES:
        raise TypeError(f"`{name}` must be an integer torch.Tensor of shape (B,), got {type(lengths).__name__} "
                        f"{getattr(lengths, 'dtype', '')}")
    if lengths.dim() != 1 or lengths.shape[0] != n_batch:
        raise ValueError(f"`{name}` must have shape ({n_batch},) to match logits, got {tuple(lengths.shape)}")
    if not values:
        return
    bad = (lengths < low) | (lengths > high)
    if bool(bad.any()):
        b = _first_bad(bad)
        raise ValueError(f"`{name}`[{b}] = {int(lengths[b])} is outside [{low}, {high}] ({high_name})")


def check_inputs(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int,
    check_values: bool = True,
) -> int:
    """Validate the loss inputs; returns the blank index resolved to [0, V).

    Types, shapes and devices are always checked (host metadata, no sync); with check_values also the values
    of the lengths and targets, which on CUDA costs three host syncs.

    Args:
        logits: (B, T, U+1, V) float, C-contiguous.
        targets: (B, U') integer, U' >= max(target_lengths); values in [0, V) and != blank within each length.
        logit_lengths: (B,) integer in [1, T].
        target_lengths: (B,) integer in [0, U]; 0 is an empty transcript (all-blank alignment).
        blank: blank index in [-V, V); negative counts from the end (-1: the last index, NeMo's convention).
    """
    if not isinstance(logits, torch.Tensor) or logits.dtype not in FLOAT_DTYPES:
        raise TypeError(f"`logits` must be a float16/bfloat16/float32/float64 torch.Tensor, got "
                        f"{type(logits).__name__} {getattr(logits, 'dtype', '')}")
    if logits.dim() != 4 or logits.numel() == 0:
        raise ValueError(f"`logits` must be a non-empty (B, T, U+1, V) tensor, got shape {tuple(logits.shape)}")
    if not logits.is_contiguous():
        raise ValueError("`logits` must be contiguous (call .contiguous() on the joint output)")
    n_batch, max_t, max_u1, vocab = logits.shape
    if isinstance(blank, bool) or not isinstance(blank, int) or not -vocab <= blank < vocab:
        raise ValueError(f"`blank` must be an int in [{-vocab}, {vocab}), got {blank!r}")
    blank = blank % vocab

    if not isinstance(targets, torch.Tensor) or targets.dtype not in _INT_DTYPES:
        raise TypeError(f"`targets` must be an integer torch.Tensor of shape (B, U), got {type(targets).__name__} "
                        f"{getattr(targets, 'dtype', '')}")
    if targets.dim() != 2 or targets.shape[0] != n_batch:
        raise ValueError(f"`targets` must have shape ({n_batch}, U) to match logits, got {tuple(targets.shape)}")
    for name, tensor in (("targets", targets), ("logit_lengths", logit_lengths), ("target_lengths", target_lengths)):
        if isinstance(tensor, torch.Tensor) and tensor.device != logits.device:
            raise ValueError(f"`{name}` is on {tensor.device} but `logits` is on {logits.device}")
    _check_lengths("logit_lengths", logit_lengths, n_batch, 1, max_t, "logits.shape[1]", check_values)
    _check_lengths("target_lengths", target_lengths, n_batch, 0, min(max_u1 - 1, targets.shape[1]),
                   "min(logits.shape[2] - 1, targets.shape[1])", check_values)
    if not check_values:
        return blank

    positions = torch.arange(targets.shape[1], device=targets.device)
    in_length = positions[None, :] < target_lengths[:, None]  # (B, U')
    bad = in_length & ((targets < 0) | (targets >= vocab) | (targets == blank))
    if bool(bad.any()):
        b = _first_bad(bad)
        u = int(bad[b].nonzero()[0, 0])
        raise ValueError(f"`targets`[{b}, {u}] = {int(targets[b, u])}: labels must be in [0, {vocab}) and differ "
                         f"from blank ({blank})")
    return blank
