"""Reduced-precision training passes: a module's matrix products under ``torch.autocast`` while it trains (fp32
weights, gradients and optimiser state), fp32 in evaluation, decoding and export. The joint and the encoder each
take a ``training_dtype`` (null, "bfloat16" or "float16")."""

import contextlib
from typing import Optional

import torch

TRAINING_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def check_training_dtype(module: str, training_dtype: Optional[str]) -> Optional[str]:
    """Return ``training_dtype`` if it is null or a name in :data:`TRAINING_DTYPES`; otherwise raise a ValueError
    naming the config field ``<module>.training_dtype``."""
    if training_dtype is not None and training_dtype not in TRAINING_DTYPES:
        raise ValueError(f"{module}.training_dtype must be null or one of {sorted(TRAINING_DTYPES)}, "
                         f"got {training_dtype!r}")
    return training_dtype


def training_autocast(device_type: str, training_dtype: Optional[str], training: bool):
    """``torch.autocast(device_type, TRAINING_DTYPES[training_dtype])`` in train mode with a dtype set, else a
    context that changes nothing."""
    if not training or training_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=TRAINING_DTYPES[training_dtype])
