"""Loading a trained model from a ``.nemo`` archive or a Lightning ``.ckpt``, without unpickling arbitrary objects."""

import collections
import typing
from pathlib import Path

import torch
from nemo.collections.asr.parts.utils.batched_beam_decoding_utils import BlankLMScoreMode, PruningMode
from omegaconf import DictConfig, ListConfig
from omegaconf.base import ContainerMetadata, Metadata
from omegaconf.nodes import AnyNode

from rnnt_plugin.models.rnnt import MLPerfRNNTModel
from rnnt_plugin.optim.ema import EMA, ema_state_dict_from_checkpoint

# What a Lightning checkpoint of this model holds besides tensors and plain types: the OmegaConf config, in which
# NeMo's decoding setup leaves two enums of its beam search.
_CHECKPOINT_SAFE_GLOBALS = [
    DictConfig, ListConfig, ContainerMetadata, Metadata, AnyNode, collections.defaultdict, dict, list, int, typing.Any,
    BlankLMScoreMode, PruningMode,
]


def load_model(path: str, map_location: str = "cpu") -> MLPerfRNNTModel:
    """Load a ``.nemo`` archive or a Lightning ``.ckpt`` training checkpoint, in eval mode.

    Checkpoints are read with ``torch.load(weights_only=True)``, allowing only OmegaConf's config classes; a
    checkpoint of a run with an EMA gives the EMA weights, as validation saw them.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.endswith(".nemo"):
        model = MLPerfRNNTModel.restore_from(path, map_location=torch.device(map_location))
    elif path.endswith(".ckpt"):
        with torch.serialization.safe_globals(_CHECKPOINT_SAFE_GLOBALS):
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
        model = MLPerfRNNTModel(cfg=checkpoint["hyper_parameters"]["cfg"])
        has_ema = EMA.__qualname__ in checkpoint.get("callbacks", {})
        model.load_state_dict(ema_state_dict_from_checkpoint(checkpoint) if has_ema else checkpoint["state_dict"])
    else:
        raise ValueError(f"{path}: expected a .nemo archive or a .ckpt checkpoint")
    return model.eval()
