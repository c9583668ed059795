"""The plugin's greedy search as a NeMo decoding strategy (``model.decoding.strategy: rnnt_plugin_greedy``).

NeMo 3.0 has no registry of strategies: ``MLPerfRNNTModel`` asks NeMo for its ``greedy`` decoding and
:func:`use_plugin_greedy` puts :class:`PluginGreedyRNNTInfer`, a NeMo greedy-infer over the core's
:func:`~rnnt_plugin.core.greedy.greedy_search`, in place of NeMo's search; the limits are under
``model.decoding.greedy``.
"""

import copy
from typing import Optional

import torch
from nemo.collections.asr.parts.submodules.rnnt_greedy_decoding import _GreedyRNNTInfer
from nemo.collections.asr.parts.utils.rnnt_utils import Hypothesis
from nemo.core.classes import typecheck
from omegaconf import DictConfig, open_dict

from rnnt_plugin.core.greedy import MAX_SYMBOL_PER_SAMPLE, MAX_SYMBOLS_PER_STEP, GreedyNet, greedy_search

PLUGIN_GREEDY_STRATEGY = "rnnt_plugin_greedy"


class PluginGreedyRNNTInfer(_GreedyRNNTInfer):
    """NeMo greedy-infer interface (``RNNTDecoding.decoding``) over :func:`greedy_search`.

    Returns NeMo ``Hypothesis`` objects as NeMo's ``greedy`` does: ``y_sequence`` labels, ``timestamp`` the encoder
    frame of each label (what NeMo's ``timestamps=True`` turns into word offsets), ``score`` the sum of the labels'
    log-probabilities. The joint's weights are re-read when any parameter changes (training between calls).

    Args:
        decoder_model, joint_model, blank_index: as NeMo's greedy classes.
        max_symbols_per_step: most labels at one frame (30 in the reference; None: no limit).
        max_symbol_per_sample: see :func:`greedy_search` (300 in the reference; None: no limit).
    """

    def __init__(
        self,
        decoder_model,
        joint_model,
        blank_index: int,
        max_symbols_per_step: Optional[int] = MAX_SYMBOLS_PER_STEP,
        max_symbol_per_sample: Optional[int] = MAX_SYMBOL_PER_SAMPLE,
    ):
        super().__init__(decoder_model, joint_model, blank_index, max_symbols_per_step)
        if max_symbol_per_sample is not None and max_symbol_per_sample < 0:
            raise ValueError(f"max_symbol_per_sample must be >= 0 or None, got {max_symbol_per_sample}")
        if blank_index != joint_model.num_classes_with_blank - 1:
            raise ValueError(f"blank_index must be the joint's last output {joint_model.num_classes_with_blank - 1}, "
                             f"got {blank_index}")
        self.max_symbol_per_sample = max_symbol_per_sample
        self._net: Optional[GreedyNet] = None
        self._net_key = None

    def net(self) -> GreedyNet:
        """The flattened weights, rebuilt when a parameter was replaced or updated in place."""
        params = list(self.decoder.parameters()) + list(self.joint.parameters())
        key = tuple((p.data_ptr(), p._version) for p in params)
        if key != self._net_key:
            self._net, self._net_key = GreedyNet(self.decoder, self.joint), key
        return self._net

    @typecheck()
    def forward(self, encoder_output: torch.Tensor, encoded_lengths: torch.Tensor, partial_hypotheses=None):
        """(B, D, T) encoder output + (B,) lengths -> ([Hypothesis] * B,)."""
        if partial_hypotheses is not None:
            raise ValueError("partial_hypotheses: not supported by rnnt_plugin_greedy; stream with "
                             "rnnt_plugin.decoding.streaming instead")
        training = self.decoder.training, self.joint.training
        self.decoder.eval()
        self.joint.eval()
        try:
            result = greedy_search(self.net(), encoder_output, encoded_lengths, None, self.max_symbols,
                                   self.max_symbol_per_sample, self._blank_index)
        finally:
            self.decoder.train(training[0])
            self.joint.train(training[1])
        lengths = encoded_lengths.cpu()
        hypotheses = [
            Hypothesis(score=float(score), y_sequence=labels, timestamp=frames.tolist(), length=lengths[b])
            for b, (labels, frames, score) in enumerate(zip(result.labels, result.frames, result.scores))
        ]
        return (hypotheses,)


def use_plugin_greedy(rnnt_decoding, decoder, joint, greedy_cfg) -> None:
    """Replace the search of a NeMo ``RNNTDecoding`` (built for strategy ``greedy``) with ours.

    Args:
        rnnt_decoding: NeMo ``RNNTDecoding``/``RNNTBPEDecoding``.
        decoder, joint: the model's prediction net and joint.
        greedy_cfg: the ``decoding.greedy`` section: ``max_symbols`` (or ``max_symbols_per_step``) and
            ``max_symbol_per_sample``; missing keys take the reference's 30 and 300.
    """
    greedy_cfg = greedy_cfg or {}
    if greedy_cfg.get("preserve_alignments") or greedy_cfg.get("preserve_frame_confidence"):
        raise ValueError(f"decoding.greedy: {PLUGIN_GREEDY_STRATEGY} keeps no alignments or frame confidences")
    per_step = greedy_cfg.get("max_symbols", greedy_cfg.get("max_symbols_per_step", MAX_SYMBOLS_PER_STEP))
    rnnt_decoding.decoding = PluginGreedyRNNTInfer(
        decoder,
        joint,
        blank_index=rnnt_decoding.blank_id,
        max_symbols_per_step=per_step,
        max_symbol_per_sample=greedy_cfg.get("max_symbol_per_sample", MAX_SYMBOL_PER_SAMPLE),
    )


def nemo_decoding_cfg(cfg: DictConfig, within_model: bool = False) -> DictConfig:
    """A copy of a decoding config (or of a model config, ``within_model``) that NeMo accepts: the plugin's
    greedy strategy becomes NeMo's ``greedy`` (same search, same hypotheses); other configs pass unchanged."""
    decoding = cfg.get("decoding", None) if within_model else cfg
    if decoding is None or decoding.get("strategy") != PLUGIN_GREEDY_STRATEGY:
        return cfg
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        (cfg.decoding if within_model else cfg).strategy = "greedy"
    return cfg
