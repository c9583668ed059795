"""MLPerfRNNTModel: the MLPerf RNN-T as a NeMo subword RNN-T model, an adapter over :mod:`rnnt_plugin.core`.

NeMo's ``EncDecRNNTBPEModel`` supplies the tokenizer, datasets, decoding strategies, WER, ``transcribe()``, ``.nemo``
save/restore, export and the Lightning steps; the components in the config are the core's parts with NeMo's types
(:mod:`rnnt_plugin.models.features`, ``encoder``, ``joint``) and NeMo's own prediction network (the core's
:class:`~rnnt_plugin.core.prediction.PredictionNetwork` has its layout and maths). This class adds what the recipe
needs on top, each in a module of its own: the plugin's loss and greedy search, ``.nemo`` archives that hold the
EMA weights, validation counts summed over DDP ranks (:mod:`~rnnt_plugin.models.validation`), duration-bucketed
batches (:mod:`~rnnt_plugin.models.batches`), the non-finite-loss skip (:mod:`~rnnt_plugin.models.nonfinite`),
the CTC warm-up (:mod:`~rnnt_plugin.models.ctc_warmup`), streaming and VTLN. :meth:`MLPerfRNNTModel.to_core`
gives the same model without NeMo.
"""

from typing import Optional

import torch
from lightning.pytorch import Trainer
from nemo.collections.asr.models import EncDecRNNTBPEModel
from omegaconf import DictConfig, OmegaConf, open_dict

import rnnt_plugin.core as core
from rnnt_plugin.decoding.greedy import PLUGIN_GREEDY_STRATEGY, nemo_decoding_cfg, use_plugin_greedy
from rnnt_plugin.decoding.vtln import encode_with_vtln
from rnnt_plugin.losses import PLUGIN_LOSS_NAME, RNNTLoss, resolve_rnnt_loss
import rnnt_plugin.models.batches as batches
import rnnt_plugin.models.ctc_warmup as ctc_warmup
import rnnt_plugin.models.nonfinite as nonfinite
import rnnt_plugin.models.validation as validation
from rnnt_plugin.models.targets import current_targets
from rnnt_plugin.optim.ema import ema_weights_applied


class MLPerfRNNTModel(EncDecRNNTBPEModel):
    """NeMo RNN-T BPE model with the plugin's loss (``loss.loss_name: rnnt_plugin``) and greedy search
    (``decoding.strategy: rnnt_plugin_greedy``)."""

    def __init__(self, cfg: DictConfig, trainer: Optional[Trainer] = None):
        cfg = current_targets(cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg))
        decoding_cfg = cfg.get("decoding", None)
        super().__init__(cfg=nemo_decoding_cfg(cfg, within_model=True), trainer=trainer)
        self._replace_loss()
        self._use_per_rank_wer()
        self.nonfinite_steps = 0  # training steps skipped for a non-finite loss
        self.ctc_warmup_steps = int((cfg.get("ctc_warmup", None) or {}).get("steps", 0))
        if decoding_cfg is not None and decoding_cfg.get("strategy") == PLUGIN_GREEDY_STRATEGY:
            self.change_decoding_strategy(decoding_cfg, verbose=False)

    # The plugin's loss and greedy search ---------------------------------------------------------------------

    def extract_rnnt_loss_cfg(self, cfg: Optional[DictConfig]):
        """NeMo's constructor builds its own loss from this; the plugin's name is not one NeMo knows.

        For ``rnnt_plugin`` NeMo is handed its ``pytorch`` loss, which :meth:`_replace_loss` swaps for ours
        as soon as NeMo's constructor returns (NeMo 3.0 has no hook to register a loss).
        """
        if cfg is not None and cfg.get("loss_name") == PLUGIN_LOSS_NAME:
            return "pytorch", None
        return super().extract_rnnt_loss_cfg(cfg)

    def _replace_loss(self) -> None:
        loss_cfg = self.cfg.get("loss", None) or {}
        loss_name = loss_cfg.get("loss_name", "default")
        if loss_name != PLUGIN_LOSS_NAME:
            return
        self.loss = resolve_rnnt_loss(
            loss_name,
            blank=self.joint.num_classes_with_blank - 1,
            reduction=self.cfg.get("rnnt_reduction", "mean_batch"),
            loss_kwargs=loss_cfg.get(f"{loss_name}_kwargs", None),
        )
        if self.joint.fuse_loss_wer:
            self.joint.set_loss(self.loss)

    def change_decoding_strategy(self, decoding_cfg: Optional[DictConfig] = None, verbose: bool = True):
        """NeMo's, plus ``strategy: rnnt_plugin_greedy`` (NeMo 3.0 has no registry of strategies): NeMo builds its
        ``greedy`` decoding and the plugin's batched greedy search replaces the search inside it."""
        decoding_cfg = self.cfg.decoding if decoding_cfg is None else decoding_cfg
        super().change_decoding_strategy(nemo_decoding_cfg(decoding_cfg), verbose=verbose)
        self._use_per_rank_wer()
        if decoding_cfg.get("strategy") == PLUGIN_GREEDY_STRATEGY:
            use_plugin_greedy(self.decoding, self.decoder, self.joint, decoding_cfg.get("greedy", None))
            with open_dict(self.cfg.decoding):
                self.cfg.decoding.strategy = PLUGIN_GREEDY_STRATEGY

    def change_vocabulary(self, new_tokenizer_dir, new_tokenizer_type: str, decoding_cfg: Optional[DictConfig] = None):
        """NeMo's vocabulary change rebuilds its own loss and decoding; put ours back afterwards."""
        decoding_cfg = self.cfg.decoding if decoding_cfg is None else decoding_cfg
        super().change_vocabulary(new_tokenizer_dir, new_tokenizer_type, nemo_decoding_cfg(decoding_cfg))
        self._replace_loss()
        self._use_per_rank_wer()
        if decoding_cfg.get("strategy") == PLUGIN_GREEDY_STRATEGY:
            self.change_decoding_strategy(decoding_cfg, verbose=False)

    def _use_per_rank_wer(self) -> None:
        """NeMo's WER metric without its all-gather (:func:`rnnt_plugin.models.validation.per_rank_wer`)."""
        self.wer = validation.per_rank_wer(self)
        if self.joint.fuse_loss_wer:
            self.joint.set_wer(self.wer)

    # Saving, export and the model without NeMo -------------------------------------------------------------

    def save_to(self, save_path: str):
        """Write the ``.nemo`` with the EMA weights when the trainer keeps an EMA, else the weights as they are."""
        with ema_weights_applied(self):
            super().save_to(save_path)

    def export(self, output: str, *args, **kwargs):
        """NeMo's export (``encoder-<name>`` and ``decoder_joint-<name>`` files), leaving the model as it was.

        NeMo's export freezes every parameter, switches to eval mode and leaves the prediction network in export
        mode (no start symbol), which would break training and decoding after an export; all three are undone.
        """
        trainable = {name: p.requires_grad for name, p in self.named_parameters()}
        training = self.training
        try:
            return super().export(output, *args, **kwargs)
        finally:
            self.decoder._rnnt_export = False
            for name, p in self.named_parameters():
                p.requires_grad_(trainable[name])
            self.train(training)

    def to_core(self) -> core.RNNT:
        """This model as a :class:`rnnt_plugin.core.RNNT` (torch only), built from the config, with a copy of the
        weights; in the same train/eval mode."""
        cfg = OmegaConf.to_container(self.cfg, resolve=True)
        args = {name: {k: v for k, v in (cfg.get(name) or {}).items() if k != "_target_"}
                for name in ("preprocessor", "spec_augment", "encoder")}
        prednet, jointnet = cfg["decoder"]["prednet"], cfg["joint"]["jointnet"]
        vocab = self.tokenizer.vocab_size
        decoder = core.prediction.PredictionNetwork(
            vocab, prednet["pred_hidden"], prednet["pred_rnn_layers"], prednet.get("dropout", 0.0),
            prednet.get("forget_gate_bias", 1.0), prednet.get("weights_init_scale", 1.0),
            prednet.get("hidden_hidden_bias_scale", 0.0))
        joint = core.joint.Joint(args["encoder"]["hidden_size"], prednet["pred_hidden"], jointnet["joint_hidden"],
                                 vocab + 1, jointnet.get("dropout", 0.0), cfg["joint"].get("training_dtype"))
        loss = self.loss if isinstance(self.loss, RNNTLoss) else None
        model = core.RNNT(core.features.LogMelFeatures(**args["preprocessor"]),
                          core.encoder.StackTimeEncoder(**args["encoder"]), decoder, joint,
                          core.spec_augment.SpecAugment(**args["spec_augment"]) if args["spec_augment"] else None,
                          loss)
        model.load_state_dict(self.state_dict())
        return model.train(self.training)

    # Inference: streaming and VTLN ---------------------------------------------------------------------------

    def transcribe_stream(self, audio, chunk_seconds: Optional[float] = None, stats=None):
        """Transcribe one utterance chunk by chunk, yielding the text so far; see
        :func:`rnnt_plugin.decoding.streaming.transcribe_stream` (normalisation choices and their cost)."""
        from rnnt_plugin.decoding.streaming import DEFAULT_CHUNK_SECONDS, transcribe_stream

        greedy = self.cfg.decoding.get("greedy", None) or {}
        yield from transcribe_stream(self, audio, chunk_seconds or DEFAULT_CHUNK_SECONDS, stats,
                                     greedy.get("max_symbols", core.greedy.MAX_SYMBOLS_PER_STEP),
                                     greedy.get("max_symbol_per_sample", core.greedy.MAX_SYMBOL_PER_SAMPLE))

    def _transcribe_forward(self, batch, trcfg):
        """NeMo's; with ``vtln_warps`` in the config, each utterance is encoded at the frequency warp of its most
        likely transcript (:mod:`rnnt_plugin.decoding.vtln`)."""
        warps = self.cfg.get("vtln_warps")
        if not warps:
            return super()._transcribe_forward(batch, trcfg)
        encoded, encoded_len, _ = encode_with_vtln(self, batch[0], batch[1], warps)
        return dict(encoded=encoded, encoded_len=encoded_len)

    # Training: buckets, step counts, CTC warm-up, non-finite skip ----------------------------------------------

    def _setup_dataloader_from_config(self, config: Optional[dict]):
        """NeMo's loader; for training with ``num_buckets`` set, batches from duration buckets."""
        return batches.bucketed_training_loader(self, super()._setup_dataloader_from_config(config), config)

    def setup_optimization(self, optim_config=None, optim_kwargs=None):
        """NeMo's, with the scheduler's step counts from the bucketing sampler when there is one."""
        if optim_config is None:
            optim_config = batches.optim_config_with_sampler_steps(self)
        return super().setup_optimization(optim_config, optim_kwargs)

    @property
    def in_ctc_warmup(self) -> bool:
        """Whether the next optimiser step is one of the CTC warm-up's (``ctc_warmup.steps``)."""
        return self.global_step < self.ctc_warmup_steps

    def training_step(self, batch, batch_nb):
        """NeMo's step (after the CTC warm-up, if any); a non-finite loss (on any rank) skips the optimiser step and
        logs the batch's audio files.

        With ``train_ds.return_sample_id: true`` the batch carries its dataset indices, ``(B,)``, last. With
        gradient accumulation, a skipped micro-batch adds no gradient to its optimiser step.
        """
        sample_ids = batch[4] if len(batch) == 5 else None
        if self.in_ctc_warmup:
            output = ctc_warmup.ctc_warmup_step(self, *batch[:4])
        else:
            output = super().training_step(tuple(batch[:4]), batch_nb)
        if nonfinite.finite_on_every_rank(self, output["loss"]):
            return output
        self.nonfinite_steps += 1
        nonfinite.log_skipped_batch(self, output["loss"], sample_ids)
        return None  # Lightning runs no backward and no optimiser step for this batch

    # Validation: per-rank shares, counts summed over ranks -----------------------------------------------------

    def setup_validation_data(self, val_data_config):
        """NeMo's; under DDP each rank reads only its share (:mod:`rnnt_plugin.data.rank_split`)."""
        from rnnt_plugin.data.rank_split import sharded_loader

        super().setup_validation_data(val_data_config)
        if self.world_size > 1 and self._validation_dl is not None:
            self._validation_dl = sharded_loader(self._validation_dl, self.world_size, self._trainer.global_rank)

    def validation_pass(self, batch, batch_idx, dataloader_idx=0):
        """NeMo's, with the utterance count; during the CTC warm-up the counts of the CTC greedy output."""
        if self.in_ctc_warmup:
            return ctc_warmup.ctc_validation_pass(self, batch)
        return {**super().validation_pass(batch, batch_idx, dataloader_idx),
                "val_utterances": torch.tensor(batch[0].shape[0])}

    def multi_validation_epoch_end(self, outputs, dataloader_idx: int = 0):
        """``val_wer`` of the whole validation set over all ranks, ``val_utterances``, and ``val_loss`` when the
        config computes it (:func:`rnnt_plugin.models.validation.epoch_totals`)."""
        logs = validation.epoch_totals(outputs, self.compute_eval_loss, self.device)
        if self.compute_eval_loss:
            return {"val_loss": logs["val_loss"], "log": logs}
        return {"log": logs}
