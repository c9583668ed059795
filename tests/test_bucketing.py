"""Duration bucketing: batches within a bucket, rank shards of one global batch, seeded order, resume."""

import numpy as np
import pytest

from rnnt_plugin.data.bucketing import BucketingBatchSampler

DURATIONS = np.random.default_rng(0).uniform(1.0, 16.0, size=103)


def test_batches_stay_within_a_duration_bucket():
    sampler = BucketingBatchSampler(DURATIONS, batch_size=4, num_buckets=6, seed=3)
    order = np.argsort(DURATIONS, kind="stable")
    bucket_of = {int(i): b for b, bucket in enumerate(np.array_split(order, 6)) for i in bucket}
    batches = list(sampler)
    assert len(batches) == len(sampler) == sum(len(b) // 4 for b in np.array_split(order, 6))
    for batch in batches:
        assert len(batch) == 4 and len({bucket_of[i] for i in batch}) == 1, batch
    assert len({i for b in batches for i in b}) == 4 * len(batches)  # no repeats


def test_ranks_split_the_single_process_global_batches():
    whole = BucketingBatchSampler(DURATIONS, batch_size=6, num_buckets=6, seed=1)
    ranks = [BucketingBatchSampler(DURATIONS, batch_size=3, num_buckets=6, world_size=2, rank=r, seed=1)
             for r in range(2)]
    for epoch in (0, 1):
        for s in (whole, *ranks):
            s.set_epoch(epoch)
        expected = list(whole)
        assert [a + b for a, b in zip(*map(list, ranks))] == expected
    assert len(ranks[0]) == len(ranks[1]) == len(whole)


def test_order_depends_on_seed_and_epoch_only():
    a = BucketingBatchSampler(DURATIONS, batch_size=4, seed=5)
    b = BucketingBatchSampler(DURATIONS, batch_size=4, seed=5)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    assert list(BucketingBatchSampler(DURATIONS, batch_size=4, seed=6)) != list(b)


def test_resume_mid_epoch_continues_where_the_loop_stopped():
    sampler = BucketingBatchSampler(DURATIONS, batch_size=4, seed=2)
    sampler.set_epoch(2)
    full = list(sampler)
    for _ in range(5):
        sampler.advance()
    state = sampler.state_dict()
    resumed = BucketingBatchSampler(DURATIONS, batch_size=4, seed=2)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)
    assert list(resumed) == full[5:]
    assert list(resumed) == full  # the next pass over the epoch is whole again
    with pytest.raises(ValueError, match="seed"):
        BucketingBatchSampler(DURATIONS, batch_size=4, seed=9).load_state_dict(state)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="rank"):
        BucketingBatchSampler(DURATIONS, batch_size=4, world_size=2, rank=2)
    with pytest.raises(TypeError, match="batch_size"):
        BucketingBatchSampler(DURATIONS, batch_size=4.0)
    with pytest.raises(ValueError, match="global batch"):
        BucketingBatchSampler(DURATIONS[:10], batch_size=4, num_buckets=6)


def test_accumulation_and_ranks_give_the_same_optimiser_steps():
    accumulated = BucketingBatchSampler(DURATIONS, batch_size=3, num_buckets=6, seed=4, accumulate=2)
    ranks = [BucketingBatchSampler(DURATIONS, batch_size=3, num_buckets=6, world_size=2, rank=r, seed=4)
             for r in range(2)]
    micro = list(accumulated)
    assert len(micro) == 2 * accumulated.steps_per_epoch == 2 * ranks[0].steps_per_epoch
    steps = [micro[i] + micro[i + 1] for i in range(0, len(micro), 2)]
    assert steps == [a + b for a, b in zip(*map(list, ranks))]
