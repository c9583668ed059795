"""Evaluation under DDP: each rank takes its own share of the utterances, none twice.

Lightning's ``DistributedSampler`` pads the shares to equal length by repeating utterances, which an evaluation
would count twice; without any sampler every rank evaluates the whole set. ``ShardSampler`` gives rank r of N the
utterances r, r + N, r + 2N, ...; the model sums the word-error counts over the ranks once, at the end of the
evaluation (``MLPerfRNNTModel.multi_validation_epoch_end``), so no collective runs per batch and the shares may
differ by one utterance.
"""

from typing import Iterator

import torch


class ShardSampler(torch.utils.data.Sampler[int]):
    """Indices ``rank, rank + world_size, ...`` of a dataset of ``size`` items, in order."""

    def __init__(self, size: int, world_size: int, rank: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size={world_size}), got {rank}")
        if size < world_size:
            raise ValueError(f"{size} utterances cannot give each of {world_size} ranks one to evaluate")
        self.size, self.world_size, self.rank = size, world_size, rank

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.size, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.size, self.world_size))


def sharded_loader(loader: torch.utils.data.DataLoader, world_size: int, rank: int,
                   name: str = "validation_ds") -> torch.utils.data.DataLoader:
    """``loader`` (NeMo's evaluation DataLoader, in manifest order) rebuilt to read rank ``rank``'s share only; its
    batch size, workers, collation and pinning are kept. Iterable (tarred) datasets shard themselves: unchanged."""
    dataset = loader.dataset
    if isinstance(dataset, torch.utils.data.IterableDataset):
        return loader
    try:
        sampler = ShardSampler(len(dataset), world_size, rank)
    except ValueError as e:
        raise ValueError(f"model.{name}: {e}") from None
    return torch.utils.data.DataLoader(
        dataset, batch_size=loader.batch_size, sampler=sampler, collate_fn=loader.collate_fn,
        num_workers=loader.num_workers, pin_memory=loader.pin_memory, persistent_workers=loader.persistent_workers,
    )
