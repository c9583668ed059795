"""Random augmentation that depends on the utterance, not on the worker process that loads it.

NeMo's augmentations (speed perturbation, noise, ...) draw from Python's and NumPy's global generators inside
the dataset's ``__getitem__``, in the DataLoader's worker processes. Their draws then depend on which worker
loaded what before, so a run resumed mid-epoch (whose workers start at the resumed batch) would augment
differently from the uninterrupted run. Here each utterance is loaded under keys ``(epoch, index)`` and both
generators are seeded from ``(seed, epoch, index)`` first: every epoch augments each utterance anew, the same way
in any worker, with or without a resume.
"""

from __future__ import annotations

import random
from typing import Iterator

import numpy as np
import torch


class EpochKeyedBatches(torch.utils.data.Sampler[list]):
    """A batch sampler's batches of dataset indices as batches of ``(epoch, index)`` keys; ``sampler.epoch`` is the
    epoch being drawn. Lightning finds ``sampler`` (and calls its ``set_epoch``) through this attribute."""

    def __init__(self, sampler):
        self.sampler = sampler

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch = self.sampler.epoch
        for batch in self.sampler:
            yield [(epoch, index) for index in batch]


class SeededSamples(torch.utils.data.Dataset):
    """``dataset`` read with ``(epoch, index)`` keys, Python's and NumPy's generators seeded from ``(seed, epoch,
    index)`` before each item. ``manifest_processor`` is the wrapped dataset's (NeMo's manifest datasets)."""

    def __init__(self, dataset: torch.utils.data.Dataset, seed: int):
        self.dataset = dataset
        self.seed = seed
        self.manifest_processor = getattr(dataset, "manifest_processor", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        random.seed(f"{self.seed}:{epoch}:{index}")  # str seeds hash the same in every process
        np.random.seed(random.getrandbits(32))
        return self.dataset[index]
