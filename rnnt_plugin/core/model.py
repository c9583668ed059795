"""The MLPerf RNN-T as one module: audio -> features -> encoder -> joint <- prediction network <- labels -> loss.

Shape legend: B batch, S audio samples, F mel features, T feature frames, T' encoder frames (T / 6), D encoder
size, H prediction size, U labels, V vocabulary including blank (blank last, index V - 1).

:class:`RNNT` composes the parts (torchaudio's ``RNNT`` and icefall's ``Transducer`` are the models): ``encode``,
``predict`` and ``join`` are the three networks, ``forward`` returns the loss and ``greedy_search`` the labels.
The builders give the reference model (:func:`mlperf_rnnt`, ~49M parameters at 1023 pieces) and the model that
trains on a 2-core CPU (:func:`small_cpu_rnnt`). Its children are named as NeMo names them (``encoder``,
``decoder`` for the prediction network, ``joint``), so a NeMo ``MLPerfRNNTModel``'s ``state_dict`` loads as it is.

    import torch
    from rnnt_plugin.core import small_cpu_rnnt

    model = small_cpu_rnnt(vocab_size=63)                         # 63 pieces + blank
    audio, audio_len = torch.randn(2, 16000) * 0.1, torch.tensor([16000, 12000])
    labels, label_len = torch.randint(0, 63, (2, 5)), torch.tensor([5, 3])
    loss = model(audio, audio_len, labels, label_len)             # mean over the batch of -log P(labels | audio)
    loss.backward()
    hypotheses = model.eval().greedy_search(audio, audio_len)     # [labels (U_b,) int64] * B
"""

from typing import List, Optional, Tuple

import torch

from rnnt_plugin.core.encoder import StackTimeEncoder
from rnnt_plugin.core.features import LogMelFeatures
from rnnt_plugin.core.greedy import MAX_SYMBOL_PER_SAMPLE, MAX_SYMBOLS_PER_STEP, GreedyNet, greedy_search
from rnnt_plugin.core.joint import Joint
from rnnt_plugin.core.lstm import LSTMState
from rnnt_plugin.core.prediction import PredictionNetwork
from rnnt_plugin.core.spec_augment import SpecAugment
from rnnt_plugin.losses.function import RNNTLoss


class RNNT(torch.nn.Module):
    """A recurrent neural network transducer over raw audio.

    Args:
        featurizer: audio -> features (B, F, T).
        encoder: features -> encoder frames (B, D, T').
        decoder: the prediction network, labels -> (B, U + 1, H).
        joint: (B, T', D) and (B, U + 1, H) -> logits (B, T', U + 1, V).
        spec_augment: masks features in training (None: none).
        loss: the transducer loss on raw logits (default: the plugin's fused loss, mean over the batch).
    """

    def __init__(self, featurizer: LogMelFeatures, encoder: StackTimeEncoder, decoder: PredictionNetwork,
                 joint: Joint, spec_augment: Optional[SpecAugment] = None, loss: Optional[torch.nn.Module] = None):
        super().__init__()
        if decoder.blank != joint.num_classes - 1:
            raise ValueError(f"decoder's blank {decoder.blank} must be the joint's last output {joint.num_classes - 1}")
        self.featurizer = featurizer
        self.spec_augment = spec_augment
        self.encoder = encoder
        self.decoder = decoder
        self.joint = joint
        self.loss = loss if loss is not None else RNNTLoss(blank=self.blank, reduction="mean_batch")

    @property
    def blank(self) -> int:
        """The blank label, V - 1."""
        return self.joint.num_classes - 1

    def encode(self, audio: torch.Tensor, audio_lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Audio (B, S) float + sample counts (B,) -> encoder frames (B, T', D) + valid frames (B,)."""
        features, lengths = self.featurizer(audio, audio_lengths)  # (B, F, T), (B,)
        if self.spec_augment is not None and self.training:
            features = self.spec_augment(features, lengths)
        encoded, encoded_lengths = self.encoder(features, lengths)  # (B, D, T')
        return encoded.transpose(1, 2), encoded_lengths

    def predict(self, labels: torch.Tensor, state: Optional[LSTMState] = None) -> Tuple[torch.Tensor, LSTMState]:
        """Labels (B, U) int64 -> prediction features (B, U + 1, H), the start first, and the LSTM state."""
        return self.decoder(labels, state)

    def join(self, encoded: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
        """Encoder frames (B, T', D) and prediction features (B, U + 1, H) -> raw logits (B, T', U + 1, V)."""
        return self.joint(encoded, predicted)

    def forward(self, audio: torch.Tensor, audio_lengths: torch.Tensor, labels: torch.Tensor,
                label_lengths: torch.Tensor) -> torch.Tensor:
        """The transducer loss of a batch: audio (B, S), audio_lengths (B,), labels (B, U), label_lengths (B,)
        -> the scalar the loss module reduces to (default: mean over the batch of -log P(labels | audio))."""
        encoded, encoded_lengths = self.encode(audio, audio_lengths)  # (B, T', D)
        predicted, _ = self.predict(labels)  # (B, U + 1, H)
        logits = self.join(encoded, predicted)  # (B, T', U + 1, V)
        return self.loss(logits, labels, encoded_lengths, label_lengths)

    @torch.no_grad()
    def greedy_search(self, audio: torch.Tensor, audio_lengths: torch.Tensor,
                      max_symbols_per_step: Optional[int] = MAX_SYMBOLS_PER_STEP,
                      max_symbol_per_sample: Optional[int] = MAX_SYMBOL_PER_SAMPLE) -> List[torch.Tensor]:
        """Audio (B, S) + sample counts (B,) -> B label tensors (U_b,) int64, blank excluded: the batched greedy
        search of :func:`~rnnt_plugin.core.greedy.greedy_search` with the reference's limits."""
        encoded, encoded_lengths = self.encode(audio, audio_lengths)  # (B, T', D)
        result = greedy_search(GreedyNet(self.decoder, self.joint), encoded.transpose(1, 2), encoded_lengths,
                               None, max_symbols_per_step, max_symbol_per_sample, self.blank)
        return result.labels


def build_rnnt(vocab_size: int, *, enc_hidden: int, pred_hidden: int, joint_hidden: int, pre_lstm_layers: int,
               post_lstm_layers: int, pred_rnn_layers: int, enc_dropout: float, pred_dropout: float,
               joint_dropout: float, freq_masks: int, dither: float = 1e-5) -> RNNT:
    """An :class:`RNNT` with the MLPerf reference's featurizer, SpecAugment ranges, splicing x3, stack-time x2 and
    LSTM initialisation, and the given sizes; ``vocab_size`` labels plus blank (index ``vocab_size``)."""
    featurizer = LogMelFeatures(sample_rate=16000, window_size=0.02, window_stride=0.01, window="hann", n_fft=512,
                                n_filt=80, normalize="per_feature", preemph=0.97, log_zero_guard=1e-20,
                                dither=dither, normalize_eps=1e-5)
    spec_augment = SpecAugment(freq_masks=freq_masks, min_freq=0, max_freq=20, time_masks=10, min_time=0,
                               max_time=0.03)
    lstm_init = dict(forget_gate_bias=1.0, weights_init_scale=0.5, hidden_hidden_bias_scale=0.0)
    encoder = StackTimeEncoder(feat_in=80, frame_splicing=3, pre_lstm_layers=pre_lstm_layers, stack_time_factor=2,
                               post_lstm_layers=post_lstm_layers, hidden_size=enc_hidden, dropout=enc_dropout,
                               **lstm_init)
    decoder = PredictionNetwork(vocab_size, pred_hidden, pred_rnn_layers, pred_dropout, **lstm_init)
    joint = Joint(enc_hidden, pred_hidden, joint_hidden, vocab_size + 1, joint_dropout)
    return RNNT(featurizer, encoder, decoder, joint, spec_augment)


def mlperf_rnnt(vocab_size: int = 1023) -> RNNT:
    """The MLPerf reference model (configs/baseline_v3-1023sp.yaml): encoder 2 + 3 LSTM layers of 1024, prediction
    network 2 of 512, joint 512; dropout 0.1 / 0.3 / 0.3; ~49M parameters at 1023 pieces."""
    return build_rnnt(vocab_size, enc_hidden=1024, pred_hidden=512, joint_hidden=512, pre_lstm_layers=2,
                      post_lstm_layers=3, pred_rnn_layers=2, enc_dropout=0.1, pred_dropout=0.3, joint_dropout=0.3,
                      freq_masks=2)


def small_cpu_rnnt(vocab_size: int) -> RNNT:
    """The 2-core CPU model of the demo and the tests (configs/small_cpu.yaml): encoder 1 + 1 LSTM layers of 320,
    prediction network 1 of 256, joint 256, no dropout, one frequency mask."""
    return build_rnnt(vocab_size, enc_hidden=320, pred_hidden=256, joint_hidden=256, pre_lstm_layers=1,
                      post_lstm_layers=1, pred_rnn_layers=1, enc_dropout=0.0, pred_dropout=0.0, joint_dropout=0.0,
                      freq_masks=1)
