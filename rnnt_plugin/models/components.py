"""The NeMo components of a model config, built alone (no tokenizer, no data): for parameter counts, benchmarks
and the core builders' agreement with the YAML configs."""

import copy
import typing

import torch
from omegaconf import DictConfig, open_dict


def build_modules(model_cfg: DictConfig, vocab_size: int,
                  names: typing.Sequence[str] = ("encoder", "decoder", "joint")) -> dict[str, torch.nn.Module]:
    """The named modules of a model config (e.g. ``cfg.model`` of baseline_v3-1023sp) for a vocabulary of
    ``vocab_size`` pieces plus blank."""
    from nemo.core.classes.common import Serialization

    model_cfg = copy.deepcopy(model_cfg)
    with open_dict(model_cfg):
        model_cfg.decoder.vocab_size = vocab_size
        model_cfg.joint.num_classes = vocab_size
        model_cfg.joint.vocabulary = [str(i) for i in range(vocab_size)]
        model_cfg.joint.jointnet.encoder_hidden = model_cfg.model_defaults.enc_hidden
        model_cfg.joint.jointnet.pred_hidden = model_cfg.model_defaults.pred_hidden
    return {name: Serialization.from_config_dict(model_cfg[name]) for name in names}
