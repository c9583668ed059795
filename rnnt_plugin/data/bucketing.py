"""Duration bucketing for training, as the MLPerf RNN-T reference's ``BucketingSampler``; resumable mid-epoch.

Each epoch, with a generator seeded by ``(seed, epoch)`` and so the same on every rank:
  1. utterances sorted by duration are cut into ``num_buckets`` buckets of (nearly) equal count;
  2. each bucket is shuffled and cut into global batches of ``batch_size * world_size * accumulate``
     utterances (the remainder of a bucket is dropped, as the reference does);
  3. the global batches of all buckets are shuffled together;
  4. each global batch is cut into ``accumulate`` micro-steps of ``batch_size * world_size``, and rank ``r``
     takes the ``r``-th slice of ``batch_size`` of each micro-step.

So every step's utterances have similar durations (little padding), every rank takes the same number of
batches, and an optimiser step sees the same utterances whatever the split between ranks and accumulation
(e.g. 2 ranks x batch 4 and 1 rank x batch 4 x 2 accumulated micro-batches).

The position in the epoch is kept for checkpoints: :meth:`state_dict` / :meth:`load_state_dict` hold the epoch
and the number of batches the training loop consumed, and the next :meth:`__iter__` of that epoch skips them.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

from rnnt_plugin.data.seeded import EpochKeyedBatches, SeededSamples


def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


class BucketingBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of dataset indices drawn within duration buckets; pass as a DataLoader's ``batch_sampler``.

    Args:
        durations: duration in seconds of each dataset item, ``(N,)``.
        batch_size: utterances per batch on this rank (the micro-batch).
        accumulate: micro-batches accumulated per optimiser step.
        num_buckets: duration buckets (the reference: 6).
        world_size: number of data-parallel ranks.
        rank: this rank, in ``[0, world_size)``.
        seed: the run's seed; the order of epoch ``e`` depends on ``(seed, e)`` only.
    """

    def __init__(self, durations: Sequence[float], batch_size: int, num_buckets: int = 6,
                 world_size: int = 1, rank: int = 0, seed: int = 0, accumulate: int = 1):
        self.batch_size = _check_int("batch_size", batch_size, 1)
        self.num_buckets = _check_int("num_buckets", num_buckets, 1)
        self.world_size = _check_int("world_size", world_size, 1)
        self.rank = _check_int("rank", rank, 0)
        if self.rank >= self.world_size:
            raise ValueError(f"rank must be < world_size ({self.world_size}), got {rank}")
        self.seed = _check_int("seed", seed, 0)
        self.accumulate = _check_int("accumulate", accumulate, 1)
        durations = np.asarray(durations, dtype=np.float64)
        if durations.ndim != 1 or not np.all(np.isfinite(durations)):
            raise ValueError(f"durations must be a 1-D sequence of finite seconds, got shape {durations.shape}")
        order = np.argsort(durations, kind="stable")
        self._buckets = [b for b in np.array_split(order, self.num_buckets) if len(b)]
        self.global_batch = self.batch_size * self.world_size * self.accumulate
        self.steps_per_epoch = sum(len(b) // self.global_batch for b in self._buckets)
        if self.steps_per_epoch == 0:
            raise ValueError(f"no full global batch ({self.global_batch} = batch_size {self.batch_size} x "
                             f"world_size {self.world_size} x accumulate {self.accumulate}) fits in any of "
                             f"{self.num_buckets} buckets of {len(durations)} utterances; use fewer buckets or a "
                             "smaller batch")
        self._num_batches = self.steps_per_epoch * self.accumulate
        self.epoch = 0
        self._skip = 0  # batches of `self.epoch` already consumed (set by load_state_dict)
        self.consumed = 0  # batches of the current epoch the training loop has taken (see `advance`)

    def __len__(self) -> int:
        """Batches per epoch on this rank (the same on every rank)."""
        return self._num_batches

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this before each epoch; a new epoch starts from its first batch."""
        epoch = _check_int("epoch", epoch, 0)
        if epoch != self.epoch:
            self._skip = 0
        self.epoch = epoch

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """This rank's batches of ``epoch``, in order: a list of ``batch_size`` dataset indices each."""
        rng = np.random.default_rng([self.seed, epoch])
        global_batches = []
        for bucket in self._buckets:
            shuffled = rng.permutation(bucket)
            usable = len(shuffled) // self.global_batch * self.global_batch
            global_batches.extend(shuffled[:usable].reshape(-1, self.global_batch))  # (n, global_batch)
        micro = self.batch_size * self.world_size
        start = self.rank * self.batch_size
        return [global_batches[i][j * micro + start:j * micro + start + self.batch_size].tolist()
                for i in rng.permutation(len(global_batches)) for j in range(self.accumulate)]

    def __iter__(self) -> Iterator[list[int]]:
        skip, self._skip = self._skip, 0
        self.consumed = skip
        yield from self.epoch_batches(self.epoch)[skip:]

    def advance(self) -> None:
        """Count one batch consumed by the training loop (the DataLoader may have prefetched more)."""
        self.consumed += 1

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "consumed": self.consumed, "seed": self.seed,
                "global_batch": self.global_batch, "num_batches": self._num_batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume: the next iteration over ``state['epoch']`` skips the batches it had consumed."""
        now = self.state_dict()
        for key in ("seed", "global_batch", "num_batches"):
            if state[key] != now[key]:
                raise ValueError(f"sampler state from a different setup: {key} is {state[key]} in the checkpoint, "
                                 f"{now[key]} now")
        self.epoch = int(state["epoch"])
        self._skip = self.consumed = int(state["consumed"])


def bucketed_loader(loader: torch.utils.data.DataLoader, batch_size: int, num_buckets: int, world_size: int,
                    rank: int, seed: int, accumulate: int = 1) -> torch.utils.data.DataLoader:
    """``loader`` (NeMo's manifest DataLoader) rebuilt to draw its batches from a :class:`BucketingBatchSampler`
    over the manifest's durations, with augmentation seeded per utterance and epoch (:mod:`.seeded`); its
    workers, collation and pinning are kept."""
    dataset = loader.dataset
    if isinstance(dataset, torch.utils.data.IterableDataset) or not hasattr(dataset, "manifest_processor"):
        raise ValueError(f"model.train_ds.num_buckets needs a manifest (non-tarred) dataset, got "
                         f"{type(dataset).__name__}; set num_buckets: null for tarred shards")
    durations = [entry.duration for entry in dataset.manifest_processor.collection]
    sampler = BucketingBatchSampler(durations, batch_size, num_buckets, world_size, rank, seed, accumulate)
    return torch.utils.data.DataLoader(
        SeededSamples(dataset, seed), batch_sampler=EpochKeyedBatches(sampler), collate_fn=loader.collate_fn,
        num_workers=loader.num_workers,
        pin_memory=loader.pin_memory, persistent_workers=loader.persistent_workers,
    )
