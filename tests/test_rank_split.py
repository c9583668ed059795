"""ShardSampler: the ranks' shares of an evaluation set cover it once, in order, without padding."""

import pytest
import torch

from rnnt_plugin.data.rank_split import ShardSampler, sharded_loader


@pytest.mark.parametrize("size,world_size", [(10, 2), (11, 4), (8, 8), (1, 1)])
def test_shares_cover_every_index_once(size, world_size):
    shares = [list(ShardSampler(size, world_size, rank)) for rank in range(world_size)]
    assert sorted(i for share in shares for i in share) == list(range(size))
    assert [len(share) for share in shares] == [len(ShardSampler(size, world_size, r)) for r in range(world_size)]
    assert max(map(len, shares)) - min(map(len, shares)) <= 1 and min(map(len, shares)) >= 1
    assert all(share == sorted(share) for share in shares)


def test_sharded_loader_keeps_the_loader_settings():
    dataset = torch.utils.data.TensorDataset(torch.arange(7))
    collate = lambda items: torch.stack([x for (x,) in items])  # noqa: E731
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, collate_fn=collate)
    shares = [[b.tolist() for b in sharded_loader(loader, 3, rank)] for rank in range(3)]
    assert shares == [[[0, 3], [6]], [[1, 4]], [[2, 5]]]
    stream = torch.utils.data.DataLoader(torch.utils.data.ChainDataset([]))
    assert sharded_loader(stream, 2, 1) is stream  # tarred (iterable) datasets shard themselves


def test_bad_shards_name_the_problem():
    with pytest.raises(ValueError, match="rank must be in"):
        ShardSampler(10, 2, 2)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(3)))
    with pytest.raises(ValueError, match="model.validation_ds: 3 utterances cannot give each of 4 ranks one"):
        sharded_loader(loader, 4, 0)
