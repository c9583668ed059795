"""MLPerfRNNTModel: the MLPerf RNN-T as a NeMo subword RNN-T model.

NeMo's ``EncDecRNNTBPEModel`` supplies the tokenizer, datasets, prediction network, joint, decoding, WER,
``transcribe()``, ``.nemo`` save/restore and export. This class adds what the MLPerf recipe needs on top:
the plugin's fused RNN-T loss (``loss.loss_name: rnnt_plugin``; NeMo 3.0 has no hook to register a loss, so the
model builds it), ``.nemo`` archives that hold the EMA weights when training keeps an EMA, loading of
Lightning checkpoints without unpickling arbitrary objects, and an optional CTC warm-up of encoder and joint.
"""

import collections
import copy
import logging
import typing
from pathlib import Path
from typing import Optional

import jiwer
import torch
from lightning.pytorch import Trainer
from nemo.collections.asr.metrics.wer import WER
from nemo.collections.asr.models import EncDecRNNTBPEModel
from nemo.collections.asr.parts.utils.batched_beam_decoding_utils import BlankLMScoreMode, PruningMode
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.base import ContainerMetadata, Metadata
from omegaconf.nodes import AnyNode

from rnnt_plugin.data.bucketing import BucketingBatchSampler, bucketed_loader
from rnnt_plugin.data.sharding import sharded_loader
from rnnt_plugin.decoding.greedy import PLUGIN_GREEDY_STRATEGY, use_plugin_greedy
from rnnt_plugin.losses import PLUGIN_LOSS_NAME, resolve_rnnt_loss
from rnnt_plugin.optim.ema import EMA, ema_state_dict_from_checkpoint, ema_weights_applied
from rnnt_plugin.vtln import encode_with_vtln

_log = logging.getLogger(__name__)


class MLPerfRNNTModel(EncDecRNNTBPEModel):
    """NeMo RNN-T BPE model whose loss comes from :func:`rnnt_plugin.losses.resolve_rnnt_loss`."""

    def __init__(self, cfg: DictConfig, trainer: Optional[Trainer] = None):
        cfg = cfg if isinstance(cfg, DictConfig) else OmegaConf.create(cfg)
        decoding_cfg = cfg.get("decoding", None)
        super().__init__(cfg=_nemo_decoding_cfg(cfg, within_model=True), trainer=trainer)
        self._replace_loss()
        self._use_per_rank_wer()
        self.nonfinite_steps = 0  # training steps skipped for a non-finite loss
        self.ctc_warmup_steps = int((cfg.get("ctc_warmup", None) or {}).get("steps", 0))
        if decoding_cfg is not None and decoding_cfg.get("strategy") == PLUGIN_GREEDY_STRATEGY:
            self.change_decoding_strategy(decoding_cfg, verbose=False)

    def change_decoding_strategy(self, decoding_cfg: Optional[DictConfig] = None, verbose: bool = True):
        """NeMo's, plus ``strategy: rnnt_plugin_greedy`` (NeMo 3.0 has no registry of strategies): NeMo builds its
        ``greedy`` decoding and the plugin's batched greedy search replaces the search inside it."""
        decoding_cfg = self.cfg.decoding if decoding_cfg is None else decoding_cfg
        super().change_decoding_strategy(_nemo_decoding_cfg(decoding_cfg), verbose=verbose)
        self._use_per_rank_wer()
        if decoding_cfg.get("strategy") == PLUGIN_GREEDY_STRATEGY:
            use_plugin_greedy(self.decoding, self.decoder, self.joint, decoding_cfg.get("greedy", None))
            with open_dict(self.cfg.decoding):
                self.cfg.decoding.strategy = PLUGIN_GREEDY_STRATEGY

    def extract_rnnt_loss_cfg(self, cfg: Optional[DictConfig]):
        """NeMo's constructor builds its own loss from this; the plugin's name is not one NeMo knows.

        For ``rnnt_plugin`` NeMo is handed its ``pytorch`` loss, which :meth:`_replace_loss` swaps for ours
        as soon as NeMo's constructor returns.
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

    def transcribe_stream(self, audio, chunk_seconds: float = 0.96, stats=None):
        """Transcribe one utterance chunk by chunk, yielding the text so far; see
        :func:`rnnt_plugin.decoding.streaming.transcribe_stream` (normalisation choices and their cost)."""
        from rnnt_plugin.decoding.streaming import transcribe_stream

        greedy = self.cfg.decoding.get("greedy", None) or {}
        yield from transcribe_stream(self, audio, chunk_seconds, stats, greedy.get("max_symbols", 30),
                                     greedy.get("max_symbol_per_sample", 300))

    def _transcribe_forward(self, batch, trcfg):
        """NeMo's; with ``vtln_warps`` in the config, each utterance is encoded at the frequency warp of its most
        likely transcript (:mod:`rnnt_plugin.vtln`)."""
        warps = self.cfg.get("vtln_warps")
        if not warps:
            return super()._transcribe_forward(batch, trcfg)
        encoded, encoded_len, _ = encode_with_vtln(self, batch[0], batch[1], warps)
        return dict(encoded=encoded, encoded_len=encoded_len)

    def change_vocabulary(self, new_tokenizer_dir, new_tokenizer_type: str, decoding_cfg: Optional[DictConfig] = None):
        """NeMo's vocabulary change rebuilds its own loss and decoding; put ours back afterwards."""
        decoding_cfg = self.cfg.decoding if decoding_cfg is None else decoding_cfg
        super().change_vocabulary(new_tokenizer_dir, new_tokenizer_type, _nemo_decoding_cfg(decoding_cfg))
        self._replace_loss()
        self._use_per_rank_wer()
        if decoding_cfg.get("strategy") == PLUGIN_GREEDY_STRATEGY:
            self.change_decoding_strategy(decoding_cfg, verbose=False)

    # Validation under DDP: each rank its own share of the utterances, the counts summed once at the end -------

    def _use_per_rank_wer(self) -> None:
        """NeMo's WER metric, without its all-gather on every ``compute()``: that collective needs the same number
        of validation batches on every rank, and validation shares may differ by one utterance. Validation counts
        are summed over the ranks in :meth:`multi_validation_epoch_end`; the training-batch WER is rank 0's."""
        self.wer = WER(decoding=self.decoding, batch_dim_index=0, use_cer=self.cfg.get("use_cer", False),
                       log_prediction=self.cfg.get("log_prediction", True), sync_on_compute=False)
        if self.joint.fuse_loss_wer:
            self.joint.set_wer(self.wer)

    def setup_validation_data(self, val_data_config):
        """NeMo's; under DDP each rank reads only its share (:mod:`rnnt_plugin.data.sharding`)."""
        super().setup_validation_data(val_data_config)
        if self.world_size > 1 and self._validation_dl is not None:
            self._validation_dl = sharded_loader(self._validation_dl, self.world_size, self._trainer.global_rank)

    def multi_validation_epoch_end(self, outputs, dataloader_idx: int = 0):
        """``val_wer`` of the whole validation set: word errors and words summed over batches and ranks, with
        ``val_utterances``, how many utterances they came from (each counted once); ``val_loss`` the mean over
        all ranks' batches."""
        totals = torch.tensor([[float(sum(x["val_wer_num"] for x in outputs)),
                                float(sum(x["val_wer_denom"] for x in outputs)),
                                float(sum(x["val_utterances"] for x in outputs)),
                                float(sum(x["val_loss"] for x in outputs)) if self.compute_eval_loss else 0.0,
                                float(len(outputs))]], dtype=torch.float64, device=self.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
        errors, words, utterances, loss_sum, batches = totals[0].tolist()
        logs = {"val_wer": torch.tensor(errors / words if words else float("nan")),  # nan: no reference words
                "val_utterances": torch.tensor(utterances)}
        if self.compute_eval_loss:
            logs["val_loss"] = torch.tensor(loss_sum / max(batches, 1.0))
            return {"val_loss": logs["val_loss"], "log": logs}
        return {"log": logs}

    # Training recipe: duration bucketing, steps per epoch for the LR policy, non-finite loss skip -------------

    def _setup_dataloader_from_config(self, config: Optional[dict]):
        """NeMo's loader; with ``num_buckets`` set (training), its batches come from duration buckets."""
        loader = super()._setup_dataloader_from_config(config)
        if loader is None or config.get("num_buckets") is None:
            return loader
        if config.get("is_tarred"):
            _log.warning("train_ds.num_buckets=%s ignored: tarred shards stream in shard order (no bucketing)",
                         config["num_buckets"])
            return loader
        trainer = self._trainer
        return bucketed_loader(loader, config["batch_size"], config["num_buckets"], self.world_size,
                               trainer.global_rank if trainer is not None else 0, config.get("seed", 0),
                               trainer.accumulate_grad_batches if trainer is not None else 1)

    @property
    def bucketing_sampler(self) -> Optional[BucketingBatchSampler]:
        """The training loader's bucketing sampler, or None."""
        keyed = getattr(getattr(self, "_train_dl", None), "batch_sampler", None)  # EpochKeyedBatches
        sampler = getattr(keyed, "sampler", None)
        return sampler if isinstance(sampler, BucketingBatchSampler) else None

    def setup_optimization(self, optim_config=None, optim_kwargs=None):
        """NeMo's, with the scheduler's ``steps_per_epoch`` (and ``max_steps``) taken from the bucketing sampler
        when there is one (NeMo would derive them from the dataset size, which dropped remainders make wrong)."""
        sampler = self.bucketing_sampler
        if optim_config is None and sampler is not None and self._trainer is not None and self.cfg.optim.get("sched"):
            optim_config = OmegaConf.create(OmegaConf.to_container(self.cfg.optim, resolve=True))
            steps_per_epoch = sampler.steps_per_epoch
            optim_config.sched.steps_per_epoch = steps_per_epoch
            max_steps = self._trainer.max_steps
            optim_config.sched.max_steps = max_steps if max_steps >= 0 else steps_per_epoch * self._trainer.max_epochs
        return super().setup_optimization(optim_config, optim_kwargs)

    def training_step(self, batch, batch_nb):
        """NeMo's step (after the CTC warm-up, if any); a non-finite loss (on any rank) skips the optimiser step and
        logs the batch's audio files.

        With ``train_ds.return_sample_id: true`` the batch carries its dataset indices, ``(B,)``, last. With
        gradient accumulation, a skipped micro-batch adds no gradient to its optimiser step.
        """
        sample_ids = batch[4] if len(batch) == 5 else None
        if self.in_ctc_warmup:
            output = self._ctc_warmup_step(*batch[:4])
        else:
            output = super().training_step(tuple(batch[:4]), batch_nb)
        finite = bool(torch.isfinite(output["loss"]).all())
        if self._trainer is not None and self.trainer.world_size > 1:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if finite:
            return output
        self.nonfinite_steps += 1
        processor = getattr(self._train_dl.dataset, "manifest_processor", None)
        if sample_ids is None:
            files = "unknown (set train_ds.return_sample_id: true)"
        elif processor is None:
            files = f"dataset indices {sample_ids.tolist()}"
        else:
            files = [processor.collection[int(i)].audio_file for i in sample_ids]
        _log.warning("non-finite loss %s at step %d (rank %d): step skipped; utterances: %s",
                     output["loss"].detach().cpu().tolist(), self.trainer.global_step, self.global_rank, files)
        return None  # Lightning runs no backward and no optimiser step for this batch

    @property
    def in_ctc_warmup(self) -> bool:
        """Whether the next optimiser step is one of the CTC warm-up's (``ctc_warmup.steps``)."""
        return self.global_step < self.ctc_warmup_steps

    def _ctc_warmup_step(self, signal, signal_len, transcript, transcript_len) -> dict:
        """CTC loss of the encoder and joint, the joint's prediction input held at the start state (``ctc_warmup``).

        A small transducer trained from scratch on a constrained domain can put a whole sentence on the first
        encoder frame: its prediction net learns the grammar faster than the encoder learns the sounds, and the
        joint then ignores the encoder. Trained first to read the labels from the sounds, frame by frame, the
        encoder and joint make the acoustics the easier path once the transducer loss takes over.
        signal (B, S), transcript (B, U); loss per target token, averaged over the batch.
        """
        encoded, encoded_len = self.forward(input_signal=signal, input_signal_length=signal_len)  # (B, H, T)
        log_probs = self._ctc_logits(encoded).float().log_softmax(-1)  # (B, T, V + 1); fp32 under a bf16 joint
        loss = torch.nn.functional.ctc_loss(log_probs.transpose(0, 1), transcript, encoded_len, transcript_len,
                                            blank=self.joint.num_classes_with_blank - 1, zero_infinity=True)
        if self.logger is not None:  # straight to the logger: self.log would repeat it until the epoch ends
            self.logger.log_metrics({"train_ctc_warmup_loss": float(loss)}, step=self.global_step)
        return {"loss": loss}

    def _ctc_logits(self, encoded: torch.Tensor) -> torch.Tensor:
        """encoded (B, H, T) -> logits (B, T, V + 1) of the joint for each frame with the prediction net's output
        before any label (the transducer's state at u = 0), as a frame-wise CTC output layer."""
        start, _ = self.decoder.predict(None, state=None, add_sos=False, batch_size=encoded.shape[0])  # (B, 1, P)
        return self.joint.joint(encoded.transpose(1, 2), start)[:, :, 0]

    def validation_pass(self, batch, batch_idx, dataloader_idx=0):
        """NeMo's; during the CTC warm-up, the WER of the CTC greedy output instead (as ``val_wer``): the
        transducer is still untrained then, and its greedy search would emit up to ``max_symbol_per_sample``
        pieces per utterance, slowly, for a meaningless WER."""
        signal, signal_len, transcript, transcript_len = batch[:4]
        if not self.in_ctc_warmup:
            return {**super().validation_pass(batch, batch_idx, dataloader_idx),
                    "val_utterances": torch.tensor(signal.shape[0])}
        encoded, encoded_len = self.forward(input_signal=signal, input_signal_length=signal_len)  # (B, H, T)
        best = self._ctc_logits(encoded).argmax(-1)  # (B, T)
        blank = self.joint.num_classes_with_blank - 1
        hypotheses, references = [], []
        for b in range(best.shape[0]):
            frames = best[b, : encoded_len[b]]
            keep = torch.ones_like(frames, dtype=torch.bool)
            keep[1:] = frames[1:] != frames[:-1]  # CTC: merge repeats, then drop blanks
            hypotheses.append(self.tokenizer.ids_to_text(frames[keep & (frames != blank)].tolist()))
            references.append(self.tokenizer.ids_to_text(transcript[b, : transcript_len[b]].tolist()))
        measures = jiwer.process_words(references, hypotheses)
        errors = measures.substitutions + measures.deletions + measures.insertions
        words = measures.hits + measures.substitutions + measures.deletions
        wer = torch.tensor(errors / words)
        return {"val_wer_num": torch.tensor(errors), "val_wer_denom": torch.tensor(words), "val_wer": wer,
                "val_utterances": torch.tensor(signal.shape[0])}


def build_modules(model_cfg: DictConfig, vocab_size: int,
                  names: typing.Sequence[str] = ("encoder", "decoder", "joint")) -> dict[str, torch.nn.Module]:
    """The named modules of a model config (e.g. ``cfg.model`` of baseline_v3-1023sp) for a vocabulary of
    ``vocab_size`` pieces plus blank, without a tokenizer or data: for parameter counts and benchmarks."""
    from nemo.core.classes.common import Serialization

    model_cfg = copy.deepcopy(model_cfg)
    with open_dict(model_cfg):
        model_cfg.decoder.vocab_size = vocab_size
        model_cfg.joint.num_classes = vocab_size
        model_cfg.joint.vocabulary = [str(i) for i in range(vocab_size)]
        model_cfg.joint.jointnet.encoder_hidden = model_cfg.model_defaults.enc_hidden
        model_cfg.joint.jointnet.pred_hidden = model_cfg.model_defaults.pred_hidden
    return {name: Serialization.from_config_dict(model_cfg[name]) for name in names}


def _nemo_decoding_cfg(cfg: DictConfig, within_model: bool = False) -> DictConfig:
    """A copy of a decoding config (or of a model config, ``within_model``) that NeMo accepts: the plugin's
    greedy strategy becomes NeMo's ``greedy`` (same search, same hypotheses); other configs pass unchanged."""
    decoding = cfg.get("decoding", None) if within_model else cfg
    if decoding is None or decoding.get("strategy") != PLUGIN_GREEDY_STRATEGY:
        return cfg
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        (cfg.decoding if within_model else cfg).strategy = "greedy"
    return cfg


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
