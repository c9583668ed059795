"""rnnt_plugin.losses against NeMo 3.0's own RNN-T losses (`pytorch` and `warprnnt_numba`) on CPU.

Shape legend: B batch, T frames, U labels (lattice rows U+1), V vocabulary incl. blank. NeMo's losses need the
largest lengths to equal the tensor sizes; both apply log_softmax themselves, so they get the raw logits too.
"""

import pytest
import torch

from rnnt_plugin.losses import resolve_rnnt_loss, rnnt_loss

nemo_rnnt = pytest.importorskip("nemo.collections.asr.losses.rnnt")


def _random_case(seed):
    """Logits (B, T, U+1, V) float32, labels (B, U), lengths (B,) with max lengths equal to T and U."""
    gen = torch.Generator().manual_seed(seed)
    n_batch = 3
    max_t, max_u, vocab = (int(torch.randint(low, high, (), generator=gen)) for low, high in ((2, 9), (1, 6), (3, 12)))
    logits = torch.randn(n_batch, max_t, max_u + 1, vocab, generator=gen) * 3
    labels = torch.randint(0, vocab - 1, (n_batch, max_u), generator=gen)  # blank is the last index
    logit_lengths = torch.randint(1, max_t + 1, (n_batch,), generator=gen)
    target_lengths = torch.randint(0, max_u + 1, (n_batch,), generator=gen)
    logit_lengths[0], target_lengths[0] = max_t, max_u
    return logits, labels, logit_lengths, target_lengths


def _loss_and_grad(loss_fn, logits, labels, logit_lengths, target_lengths):
    """(per-sample losses (B,), d sum(losses) / d logits)."""
    x = logits.clone().requires_grad_()
    losses = loss_fn(x, labels, logit_lengths, target_lengths)
    losses.sum().backward()
    return losses.detach().float(), x.grad


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("nemo_name,kwargs", [
    ("pytorch", {}),
    ("warprnnt_numba", {}),
    ("warprnnt_numba", {"fastemit_lambda": 0.25}),
    ("warprnnt_numba", {"clamp": 0.2}),
])
def test_matches_nemo_losses_values_and_gradients(seed, nemo_name, kwargs):
    logits, labels, logit_lengths, target_lengths = _random_case(seed)
    blank = logits.shape[-1] - 1
    nemo_loss = nemo_rnnt.resolve_rnnt_loss(nemo_name, blank_idx=blank, loss_kwargs=dict(kwargs))

    def nemo_fn(x, *args):
        return nemo_loss(acts=x, labels=args[0], act_lens=args[1], label_lens=args[2])

    def ours_fn(x, *args):
        return rnnt_loss(x, *args, blank=-1, reduction="none", **kwargs)

    expected = _loss_and_grad(nemo_fn, logits, labels, logit_lengths, target_lengths)
    got = _loss_and_grad(ours_fn, logits, labels, logit_lengths, target_lengths)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(got[1], expected[1], rtol=1e-4, atol=1e-5)


def test_registry_returns_nemo_wrapper_that_agrees_with_ours():
    logits, labels, logit_lengths, target_lengths = _random_case(7)
    blank = logits.shape[-1] - 1
    nemo_wrapper = resolve_rnnt_loss("pytorch", blank=blank, reduction="mean_batch")
    assert isinstance(nemo_wrapper, nemo_rnnt.RNNTLoss)
    ours = resolve_rnnt_loss("rnnt_plugin", blank=blank, reduction="mean_batch")
    call = dict(log_probs=logits, targets=labels, input_lengths=logit_lengths, target_lengths=target_lengths)
    torch.testing.assert_close(ours(**call), nemo_wrapper(**call), rtol=1e-5, atol=1e-5)
