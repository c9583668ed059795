"""Batched greedy RNN-T search (torch only): NeMo's per-utterance ``greedy`` hypotheses, for the whole batch at once.

Shape legend: B batch, T encoder frames, D encoder features, H prediction-net hidden size, L prediction-net
layers, J joint hidden size, V vocabulary including blank, N utterances active at a step.

The search is frame-synchronous like NeMo's ``GreedyRNNTInfer`` (emit labels at a frame until blank or
``max_symbols_per_step``, then move to the next frame), but each step runs every still-active utterance at once:

- the encoder output goes through the joint's encoder Linear once per call; the prediction-net output through
  the joint's prediction Linear once per emitted label;
- the embedding and the first LSTM layer's input weights are folded into a (V + 1, 4H) table of input gates,
  so a label costs a row lookup instead of an embedding and a matrix product;
- the LSTM cells run as plain ``addmm`` on the emitting utterances only (no ``torch.nn.LSTM`` call per step);
- utterances whose frames are done drop out of the step; there is one host read per step (how many active
  utterances are left), which costs nothing on CPU.

``max_symbol_per_sample`` is the MLPerf reference's limit: an utterance stops at the start of a frame once it
holds more than that many labels (so it may end with up to ``max_symbol_per_sample + max_symbols_per_step``).
NeMo's searches have no such limit; with None, or a limit no utterance reaches, the hypotheses are NeMo's.

The ONNX runner (:mod:`rnnt_plugin.deploy.onnx_greedy`, numpy only) applies the same two limits by the same
rule; ``tests/test_onnx.py`` checks that a model and its export give the same labels where both limits bind.
"""

from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch

MAX_SYMBOLS_PER_STEP = 30  # the MLPerf reference's max_symbols_per_step
MAX_SYMBOL_PER_SAMPLE = 300  # the MLPerf reference's max_symbol_per_sample


@dataclass
class DecoderState:
    """Prediction-net state after the labels emitted so far (SOS included): what streaming carries between chunks.

    h, c: (L, B, H) LSTM states; emitted: (B,) int64 labels emitted so far (for ``max_symbol_per_sample``).
    """

    h: torch.Tensor
    c: torch.Tensor
    emitted: torch.Tensor


@dataclass
class GreedyResult:
    """Labels found by one call, per utterance: ``labels[b]`` (U_b,) int64, ``frames[b]`` (U_b,) int64 encoder frame
    of each label (counted from the start of this call's frames), ``scores`` (B,) float64 sum of the labels'
    log-probabilities, and the state after the call."""

    labels: List[torch.Tensor]
    frames: List[torch.Tensor]
    scores: torch.Tensor
    state: DecoderState


class GreedyNet:
    """The prediction net and joint, as flat tensors for the search.

    Args:
        decoder: a :class:`~rnnt_plugin.core.prediction.PredictionNetwork` or a NeMo ``RNNTDecoder`` with an LSTM
            prediction net (both have ``prediction["embed"]``, ``prediction["dec_rnn"].lstm``).
        joint: a :class:`~rnnt_plugin.core.joint.Joint` or a NeMo ``RNNTJoint`` (both have ``enc``, ``pred``,
            ``joint_net`` = activation, [dropout], Linear).
    """

    def __init__(self, decoder: torch.nn.Module, joint: torch.nn.Module):
        prediction = getattr(decoder, "prediction", None)
        lstm = getattr(prediction["dec_rnn"], "lstm", None) if "dec_rnn" in (prediction or {}) else None
        if not isinstance(lstm, torch.nn.LSTM) or lstm.bidirectional or lstm.proj_size or not lstm.bias:
            raise TypeError(
                f"decoder: expected a prediction network whose prediction['dec_rnn'].lstm is a unidirectional "
                f"torch.nn.LSTM with biases and no projection, got {type(decoder).__name__}"
            )
        if getattr(decoder, "normalization_mode", None) is not None:
            raise ValueError(f"decoder: normalization_mode {decoder.normalization_mode!r} is not supported (need None)")
        if not isinstance(joint.joint_net[-1], torch.nn.Linear):
            raise TypeError(f"joint: expected joint_net to end with a Linear, got {type(joint.joint_net[-1]).__name__}")
        with torch.no_grad():
            embed = decoder.prediction["embed"].weight  # (V, E): V = vocabulary + blank (blank as pad)
            sos = embed.new_zeros(1, embed.shape[1])  # NeMo's start of sequence is a zero input, not the blank row
            w_ih = [getattr(lstm, f"weight_ih_l{i}") for i in range(lstm.num_layers)]
            w_hh = [getattr(lstm, f"weight_hh_l{i}") for i in range(lstm.num_layers)]
            bias = [getattr(lstm, f"bias_ih_l{i}") + getattr(lstm, f"bias_hh_l{i}") for i in range(lstm.num_layers)]
            # Layer 0's input gates for every label, plus the SOS row: (V + 1, 4H).
            self.input_gates = torch.addmm(bias[0], torch.cat([embed, sos]), w_ih[0].t())
            self.sos = embed.shape[0]
            self.w_ih = [None] + [w.t() for w in w_ih[1:]]  # (H, 4H) views: addmm reads them transposed
            self.w_hh = [w.t() for w in w_hh]  # (H, 4H)
            self.bias = bias  # (4H,)
        self.layers = lstm.num_layers
        self.hidden = lstm.hidden_size
        self.enc_proj = joint.enc  # Linear D -> J
        self.pred_proj = joint.pred  # Linear H -> J
        self.activation = joint.joint_net[0]
        self.out = joint.joint_net[-1]  # Linear J -> V

    def lstm_step(self, labels: torch.Tensor, h: torch.Tensor, c: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """One prediction-net step: labels (N,) int64 (``self.sos`` for start), h, c (L, N, H) -> new (L, N, H) h, c."""
        hs, cs = [], []
        x = None
        for layer in range(self.layers):
            if layer == 0:
                gates = torch.addmm(self.input_gates[labels], h[0], self.w_hh[0])  # (N, 4H)
            else:
                gates = torch.addmm(self.bias[layer], x, self.w_ih[layer]).addmm_(h[layer], self.w_hh[layer])
            i, f, g, o = gates.chunk(4, dim=1)  # torch.nn.LSTM's gate order
            c_new = torch.sigmoid(f).mul_(c[layer]).add_(torch.sigmoid(i).mul_(torch.tanh(g)))
            x = torch.sigmoid(o).mul_(torch.tanh(c_new))  # (N, H)
            hs.append(x)
            cs.append(c_new)
        return torch.stack(hs), torch.stack(cs)

    def initial_state(self, batch: int, like: torch.Tensor) -> DecoderState:
        """The state after the SOS step from zero states, for ``batch`` new utterances."""
        zeros = like.new_zeros(self.layers, batch, self.hidden)
        sos = torch.full((batch,), self.sos, dtype=torch.long, device=like.device)
        h, c = self.lstm_step(sos, zeros, zeros)
        return DecoderState(h, c, torch.zeros(batch, dtype=torch.long, device=like.device))


@torch.inference_mode()
def greedy_search(
    net: GreedyNet,
    encoder_output: torch.Tensor,
    lengths: torch.Tensor,
    state: Optional[DecoderState] = None,
    max_symbols_per_step: Optional[int] = MAX_SYMBOLS_PER_STEP,
    max_symbol_per_sample: Optional[int] = MAX_SYMBOL_PER_SAMPLE,
    blank: Optional[int] = None,
) -> GreedyResult:
    """Greedy search over a batch of encoder outputs, continuing from ``state`` (None: new utterances).

    Args:
        net: the prediction net and joint.
        encoder_output: (B, D, T) encoder frames.
        lengths: (B,) valid frames per utterance.
        state: the state returned for the previous chunk of these utterances, or None.
        max_symbols_per_step: most labels emitted at one frame (None: no limit).
        max_symbol_per_sample: an utterance stops at a frame start once it holds more labels than this (None: never).
        blank: blank index (default: the last output of the joint).

    Returns:
        :class:`GreedyResult`.
    """
    if encoder_output.dim() != 3 or lengths.shape != encoder_output.shape[:1]:
        raise ValueError(
            f"encoder_output must be (B, D, T) with lengths (B,), got {tuple(encoder_output.shape)} and "
            f"{tuple(lengths.shape)}"
        )
    if max_symbols_per_step is not None and max_symbols_per_step <= 0:
        raise ValueError(f"max_symbols_per_step must be positive or None, got {max_symbols_per_step}")
    batch, _, frames = encoder_output.shape
    blank = net.out.out_features - 1 if blank is None else blank
    device = encoder_output.device
    lengths = lengths.to(device=device, dtype=torch.long).clamp(max=frames)
    state = net.initial_state(batch, encoder_output) if state is None else state
    h, c, emitted = state.h.clone(), state.c.clone(), state.emitted.clone()

    f = net.enc_proj(encoder_output.transpose(1, 2)).reshape(batch * frames, -1)  # (B * T, J), once
    g = net.pred_proj(h[-1])  # (B, J), recomputed only for utterances that emit
    t = torch.zeros(batch, dtype=torch.long, device=device)  # current frame of each utterance
    if max_symbol_per_sample is not None:
        t = torch.where(emitted > max_symbol_per_sample, lengths, t)
    at_frame = torch.zeros(batch, dtype=torch.long, device=device)  # labels tried at the current frame
    found_b, found_k, found_t, found_score = [], [], [], []
    active = (t < lengths).nonzero().squeeze(1)  # (N,)
    while active.numel():
        tt = t[active]
        hidden = net.activation(f[active * frames + tt] + g[active])  # (N, J)
        logits = torch.addmm(net.out.bias, hidden, net.out.weight.t())  # (N, V)
        best, k = logits.max(dim=1)
        emit = k != blank
        tried = at_frame[active] + 1
        advance = ~emit if max_symbols_per_step is None else ~emit | (tried >= max_symbols_per_step)
        emitters = active[emit]
        if emitters.numel():
            labels = k[emit]
            found_b.append(emitters)
            found_k.append(labels)
            found_t.append(tt[emit])
            found_score.append(best[emit] - torch.logsumexp(logits[emit], dim=1))
            h_new, c_new = net.lstm_step(labels, h[:, emitters], c[:, emitters])
            h.index_copy_(1, emitters, h_new)
            c.index_copy_(1, emitters, c_new)
            g.index_copy_(0, emitters, net.pred_proj(h_new[-1]))
            emitted.index_add_(0, emitters, torch.ones_like(emitters))
        t_next = tt + advance
        if max_symbol_per_sample is not None:  # the reference checks at the start of each frame
            t_next = torch.where(advance & (emitted[active] > max_symbol_per_sample), lengths[active], t_next)
        t.index_copy_(0, active, t_next)
        at_frame.index_copy_(0, active, torch.where(advance, 0, tried))
        active = active[t_next < lengths[active]]

    return _collect(batch, found_b, found_k, found_t, found_score, DecoderState(h, c, emitted), device)


def _collect(batch, found_b, found_k, found_t, found_score, state, device) -> GreedyResult:
    """Per-step emissions (in time order) -> per-utterance label and frame tensors."""
    if not found_b:
        empty = torch.zeros(0, dtype=torch.long)
        return GreedyResult([empty] * batch, [empty] * batch, torch.zeros(batch, dtype=torch.float64), state)
    b = torch.cat(found_b)
    order = torch.sort(b, stable=True).indices  # by utterance, time order kept
    counts = torch.bincount(b, minlength=batch).tolist()
    labels = torch.cat(found_k)[order].cpu().split(counts)
    frames = torch.cat(found_t)[order].cpu().split(counts)
    scores = torch.zeros(batch, dtype=torch.float64, device=device).index_add_(0, b, torch.cat(found_score).double())
    return GreedyResult(list(labels), list(frames), scores.cpu(), state)
