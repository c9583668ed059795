"""The MLPerf RNN-T encoder: frame splicing, pre-LSTM, stack-time, post-LSTM.

Shapes: B batch, F input features per 10 ms frame, T input frames, H hidden size, T' output frames.

    features (B, F, T) --splice x3--> (B, 3F, ceil(T/3))           30 ms per frame
                       --pre LSTM---> (ceil(T/3), B, H)
                       --stack x2---> (ceil(T/6), B, 2H)            60 ms per frame
                       --post LSTM--> (B, H, T')   with T' = ceil(ceil(T/3)/2)

Frame splicing and stack-time are the same operation (concatenate each frame with the next k-1 frames, keep
every k-th, zero-pad the tail), so both use :func:`stack_frames`. Frames past an utterance's length are zeroed
before each stacking, so an utterance encodes the same alone, in a padded batch, or in streaming chunks (the
reference stacks whatever the padding holds).

``training_dtype: bfloat16`` runs the LSTMs under ``torch.autocast`` while training (the reference's ``AMP=true``
runs them in fp16): on a CPU with AVX512-BF16 oneDNN's bf16 LSTM took the small_cpu encoder's forward and backward
of a (16, 80, 260) batch from 71 to 55 ms. Weights, gradients and the returned encoding stay fp32; evaluation,
streaming and export run in fp32.
"""

from typing import Optional, Tuple

import torch

from rnnt_plugin.core.lstm import LSTMStack, LSTMState
from rnnt_plugin.core.precision import check_training_dtype, training_autocast

EncoderState = Tuple[LSTMState, LSTMState]  # (pre, post) LSTM states, each (h, c) of (layers, B, H)


def stack_frames(x: torch.Tensor, lengths: torch.Tensor, factor: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Concatenate each frame with the next ``factor - 1`` frames and keep every ``factor``-th frame.

    Args:
        x: (B, T, F) batch-major frames.
        lengths: (B,) valid frames per utterance.
        factor: frames stacked per output frame.

    Returns:
        (B, ceil(T / factor), F * factor) stacked frames, frames past each length zeroed; (B,) lengths
        ceil(lengths / factor).
    """
    if factor == 1:
        return x, lengths
    batch, frames, feats = x.shape
    valid = torch.arange(frames, device=x.device)[None, :] < lengths[:, None]  # (B, T)
    x = x * valid.unsqueeze(-1).to(x.dtype)
    # Pad by a constant and slice, with no branch on T, so that export traces a graph valid for every T.
    out_frames = (frames + factor - 1) // factor
    x = torch.nn.functional.pad(x, (0, 0, 0, factor - 1))[:, : out_frames * factor]  # (B, ceil(T/k)*k, F)
    x = x.reshape(batch, out_frames, feats * factor)  # (B, T/k, F*k)
    return x, torch.div(lengths + factor - 1, factor, rounding_mode="floor")


class StackTimeEncoder(torch.nn.Module):
    """Frame splicing, ``pre_lstm_layers`` LSTM layers, stack-time, ``post_lstm_layers`` LSTM layers.

    The LSTMs are unidirectional, so the encoder is causal: :meth:`forward_chunk` carries the LSTM states
    between chunks of audio for streaming.

    Args:
        feat_in: F, features per 10 ms input frame (80 mel bands).
        frame_splicing: frames spliced before the first LSTM (3: 30 ms per frame).
        pre_lstm_layers: LSTM layers before stack-time.
        stack_time_factor: frames stacked between the pre and post LSTMs (2: 60 ms per frame).
        post_lstm_layers: LSTM layers after stack-time.
        hidden_size: H, LSTM width; also the encoder's output size.
        dropout: dropout between LSTM layers and on each LSTM stack's output.
        forget_gate_bias, weights_init_scale, hidden_hidden_bias_scale: the reference's LSTM initialisation
            (:class:`~rnnt_plugin.core.lstm.LSTMStack`).
        training_dtype: null (fp32) or "bfloat16" / "float16": in train mode the LSTMs run under ``torch.autocast``
            of that dtype.
    """

    def __init__(
        self,
        feat_in: int,
        frame_splicing: int,
        pre_lstm_layers: int,
        stack_time_factor: int,
        post_lstm_layers: int,
        hidden_size: int,
        dropout: float,
        forget_gate_bias: float,
        weights_init_scale: float,
        hidden_hidden_bias_scale: float,
        training_dtype: Optional[str] = None,
    ):
        super().__init__()
        self.training_dtype = check_training_dtype("encoder", training_dtype)
        self.feat_in = feat_in
        self.frame_splicing = frame_splicing
        self.stack_time_factor = stack_time_factor
        self.hidden_size = hidden_size
        lstm_init = dict(dropout=dropout, forget_gate_bias=forget_gate_bias, weights_init_scale=weights_init_scale,
                         hidden_hidden_bias_scale=hidden_hidden_bias_scale)
        self.pre_lstm = LSTMStack(feat_in * frame_splicing, hidden_size, pre_lstm_layers, **lstm_init)
        self.post_lstm = LSTMStack(hidden_size * stack_time_factor, hidden_size, post_lstm_layers, **lstm_init)

    @property
    def subsampling_factor(self) -> int:
        """Input frames per output frame (6: one output per 60 ms)."""
        return self.frame_splicing * self.stack_time_factor

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encode a batch of feature sequences: features (B, F, T), lengths (B,) -> (B, H, T') fp32 encoded
        frames and (B,) valid output frames."""
        with training_autocast(features.device.type, self.training_dtype, self.training):
            encoded, encoded_len, _ = self.forward_chunk(features, lengths, None)
        return encoded.float(), encoded_len

    def forward_chunk(
        self, features: torch.Tensor, lengths: torch.Tensor, state: Optional[EncoderState]
    ) -> Tuple[torch.Tensor, torch.Tensor, EncoderState]:
        """Encode one chunk, starting from the LSTM states of the previous chunk.

        Chunks after the first must start on a multiple of :attr:`subsampling_factor` input frames, so that
        splicing and stack-time group the same frames as for the whole utterance.

        Args:
            features: (B, F, T) features of this chunk.
            lengths: (B,) valid frames of this chunk.
            state: the (pre, post) LSTM states returned for the previous chunk, or None at the start.

        Returns:
            (B, H, T') encoded frames, (B,) valid output frames, and the (pre, post) LSTM states after the chunk,
            each a pair of (layers, B, H) tensors.
        """
        pre_state, post_state = state if state is not None else (None, None)
        x, lengths = stack_frames(features.transpose(1, 2), lengths, self.frame_splicing)  # (B, T/3, 3F)
        x, pre_state = self.pre_lstm(x.transpose(0, 1), pre_state)  # (T/3, B, H)
        x, lengths = stack_frames(x.transpose(0, 1), lengths, self.stack_time_factor)  # (B, T/6, 2H)
        x, post_state = self.post_lstm(x.transpose(0, 1), post_state)  # (T/6, B, H)
        return x.permute(1, 2, 0), lengths, (pre_state, post_state)  # (B, H, T/6)
