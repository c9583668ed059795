"""An LSTM stack with the MLPerf reference's initialisation and dropout on its output.

Shape legend: T steps, B batch, I input size, H hidden size, L layers.

The reference initialises every LSTM the same way: torch's default draw, the forget-gate part of the input-hidden
biases set to ``forget_gate_bias``, that of the hidden-hidden biases scaled by ``hidden_hidden_bias_scale``, then
every weight and bias multiplied by ``weights_init_scale``. The parameters live in ``self.lstm`` (a
``torch.nn.LSTM``), so the state-dict keys are ``lstm.weight_ih_l0``, ... as in NeMo's ``LSTMDropout``: weights
move between the two unchanged.
"""

from typing import Optional, Tuple

import torch

LSTMState = Tuple[torch.Tensor, torch.Tensor]  # h, c: (L, B, H) each


class LSTMStack(torch.nn.Module):
    """``num_layers`` unidirectional LSTM layers (dropout between them) and dropout on the last layer's output.

    Args:
        input_size: I, features per step.
        hidden_size: H.
        num_layers: L.
        dropout: dropout probability between layers and on the output (0: none).
        forget_gate_bias: value of the forget-gate input-hidden biases (None: torch's draw).
        weights_init_scale: every weight and bias is multiplied by this after initialisation.
        hidden_hidden_bias_scale: scale of the forget-gate hidden-hidden biases.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int,
        dropout: float = 0.0,
        forget_gate_bias: Optional[float] = 1.0,
        weights_init_scale: float = 1.0,
        hidden_hidden_bias_scale: float = 0.0,
    ):
        super().__init__()
        self.lstm = torch.nn.LSTM(input_size, hidden_size, num_layers, dropout=dropout if num_layers > 1 else 0.0)
        forget = slice(hidden_size, 2 * hidden_size)  # torch's gate order: input, forget, cell, output
        with torch.no_grad():
            for name, p in self.lstm.named_parameters():
                if forget_gate_bias is not None and name.startswith("bias_ih"):
                    p[forget].fill_(forget_gate_bias)
                if forget_gate_bias is not None and name.startswith("bias_hh"):
                    p[forget].mul_(float(hidden_hidden_bias_scale))
                p.mul_(float(weights_init_scale))
        self.dropout = torch.nn.Dropout(dropout) if dropout else None

    def forward(self, x: torch.Tensor, state: Optional[LSTMState] = None) -> Tuple[torch.Tensor, LSTMState]:
        """x (T, B, I), state (h, c) or None (zeros) -> output (T, B, H) and the state after the last step."""
        x, state = self.lstm(x, state)
        if self.dropout is not None:
            x = self.dropout(x)
        return x, state
