"""The training loader's batches from duration buckets (``train_ds.num_buckets``), and the step counts that the
LR policy takes from them (NeMo would derive them from the dataset size, which dropped remainders make wrong).
The sampler itself is :mod:`rnnt_plugin.data.bucketing`."""

import logging
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from rnnt_plugin.data.bucketing import BucketingBatchSampler, bucketed_loader

_log = logging.getLogger(__name__)


def bucketed_training_loader(model, loader, config: dict):
    """NeMo's loader built from ``config``; with ``num_buckets`` set, its batches come from duration buckets
    (per rank, keyed by the epoch, in whole optimiser steps under gradient accumulation)."""
    if loader is None or config.get("num_buckets") is None:
        return loader
    if config.get("is_tarred"):
        _log.warning("train_ds.num_buckets=%s ignored: tarred shards stream in shard order (no bucketing)",
                     config["num_buckets"])
        return loader
    trainer = model._trainer
    return bucketed_loader(loader, config["batch_size"], config["num_buckets"], model.world_size,
                           trainer.global_rank if trainer is not None else 0, config.get("seed", 0),
                           trainer.accumulate_grad_batches if trainer is not None else 1)


def bucketing_sampler(model) -> Optional[BucketingBatchSampler]:
    """The training loader's bucketing sampler, or None."""
    keyed = getattr(getattr(model, "_train_dl", None), "batch_sampler", None)  # EpochKeyedBatches
    sampler = getattr(keyed, "sampler", None)
    return sampler if isinstance(sampler, BucketingBatchSampler) else None


def optim_config_with_sampler_steps(model) -> Optional[DictConfig]:
    """``cfg.optim`` with the scheduler's ``steps_per_epoch`` (and ``max_steps``) taken from the bucketing sampler,
    or None (NeMo's own derivation) when there is no sampler, trainer or scheduler."""
    sampler = bucketing_sampler(model)
    if sampler is None or model._trainer is None or not model.cfg.optim.get("sched"):
        return None
    optim_config = OmegaConf.create(OmegaConf.to_container(model.cfg.optim, resolve=True))
    steps_per_epoch = sampler.steps_per_epoch
    optim_config.sched.steps_per_epoch = steps_per_epoch
    max_steps = model._trainer.max_steps
    optim_config.sched.max_steps = max_steps if max_steps >= 0 else steps_per_epoch * model._trainer.max_epochs
    return optim_config
