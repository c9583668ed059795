"""The prediction network: label embedding and an LSTM stack, started from a zero "start of sequence" input.

Shape legend: B batch, U labels, H hidden size (embedding and LSTM width), L LSTM layers, V vocabulary
including blank (blank last).

Blank is the embedding's padding row (zeros, never trained); the start of each label sequence is a zero input
as well. The layout is NeMo ``RNNTDecoder``'s (``prediction.embed``, ``prediction.dec_rnn.lstm``), so weights
move between the two unchanged.
"""

from typing import Optional, Tuple

import torch

from rnnt_plugin.core.lstm import LSTMStack, LSTMState


class PredictionNetwork(torch.nn.Module):
    """Labels (B, U) -> prediction features (B, U + 1, H): one per prefix of the labels, the empty one first.

    Args:
        vocab_size: labels without blank; blank is index ``vocab_size``.
        hidden_size: H.
        num_layers: L.
        dropout: dropout between LSTM layers and on the output.
        forget_gate_bias, weights_init_scale, hidden_hidden_bias_scale: the reference's LSTM initialisation
            (:class:`~rnnt_plugin.core.lstm.LSTMStack`).
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        num_layers: int,
        dropout: float = 0.0,
        forget_gate_bias: float = 1.0,
        weights_init_scale: float = 1.0,
        hidden_hidden_bias_scale: float = 0.0,
    ):
        super().__init__()
        self.blank = vocab_size
        self.hidden_size = hidden_size
        self.prediction = torch.nn.ModuleDict({
            "embed": torch.nn.Embedding(vocab_size + 1, hidden_size, padding_idx=self.blank),
            "dec_rnn": LSTMStack(hidden_size, hidden_size, num_layers, dropout, forget_gate_bias,
                                 weights_init_scale, hidden_hidden_bias_scale),
        })

    def forward(
        self, labels: torch.Tensor, state: Optional[LSTMState] = None, add_sos: bool = True
    ) -> Tuple[torch.Tensor, LSTMState]:
        """labels (B, U) int64 -> features (B, U + 1, H) (U without ``add_sos``) and the LSTM state after them.

        Args:
            labels: (B, U) labels; padding past a sequence's length may hold any valid label.
            state: (h, c) of (L, B, H) to continue from, or None (zeros).
            add_sos: prepend the start-of-sequence input (a new sequence); False continues one.
        """
        x = self.prediction["embed"](labels)  # (B, U, H)
        if add_sos:
            x = torch.nn.functional.pad(x, (0, 0, 1, 0))  # (B, U + 1, H), zeros first
        g, state = self.prediction["dec_rnn"](x.transpose(0, 1), state)  # (U + 1, B, H)
        return g.transpose(0, 1), state  # (B, U + 1, H)
