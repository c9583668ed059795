"""RNN-T loss (rnnt_plugin.losses) on CPU: exactness, gradients, options, robustness.

Shape legend: B batch, T frames, U labels (lattice rows U+1), V vocabulary incl. blank.
"""

import itertools
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rnnt_plugin.losses import RNNTLoss, resolve_rnnt_loss, rnnt_loss
from rnnt_plugin.losses.reference import reference_costs


def _batch(n_batch, max_t, max_u, vocab, blank, seed, dtype=torch.float64, full=False):
    """Random logits (B, T, U+1, V), labels (B, U) avoiding blank, lengths (B,) (the first sample is full size)."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(n_batch, max_t, max_u + 1, vocab, generator=gen, dtype=dtype) * 2
    non_blank = [v for v in range(vocab) if v != blank % vocab]
    labels = torch.tensor(non_blank)[torch.randint(0, len(non_blank), (n_batch, max_u), generator=gen)]
    logit_lengths = torch.randint(1, max_t + 1, (n_batch,), generator=gen)
    target_lengths = torch.randint(0, max_u + 1, (n_batch,), generator=gen)
    logit_lengths[0], target_lengths[0] = max_t, max_u
    if full:
        logit_lengths[:], target_lengths[:] = max_t, max_u
    return logits, labels, logit_lengths, target_lengths


def _brute_force(log_probs, labels, n_t, n_u, blank):
    """-log of the sum over every alignment, enumerated: choose which of the T-1+U moves before the final blank
    emit a label. log_probs: (T, U+1, V) float64."""
    scores = []
    for emits in itertools.combinations(range(n_t - 1 + n_u), n_u):
        t = u = 0
        score = 0.0
        for move in range(n_t - 1 + n_u):
            if move in emits:
                score += float(log_probs[t, u, labels[u]])
                u += 1
            else:
                score += float(log_probs[t, u, blank])
                t += 1
        scores.append(score + float(log_probs[n_t - 1, n_u, blank]))
    top = max(scores)
    return -(top + math.log(sum(math.exp(s - top) for s in scores)))


def _loss_and_grad(fn, logits, *args, **kwargs):
    """(loss, d loss.sum() / d logits) for a loss function fn(logits, *args, **kwargs)."""
    x = logits.detach().clone().requires_grad_()
    loss = fn(x, *args, **kwargs)
    loss.sum().backward()
    return loss.detach(), x.grad


@pytest.mark.parametrize("n_t,n_u,vocab,blank",
                         [(1, 0, 2, 0), (1, 3, 4, -1), (4, 1, 3, 1), (3, 3, 5, 0), (5, 2, 6, -1)])
def test_matches_brute_force_enumeration(n_t, n_u, vocab, blank):
    logits, labels, _, _ = _batch(2, n_t, n_u, vocab, blank, seed=n_t * 10 + n_u, full=True)
    lengths_t, lengths_u = torch.full((2,), n_t), torch.full((2,), n_u)
    losses = rnnt_loss(logits, labels, lengths_t, lengths_u, blank=blank, reduction="none")
    log_probs = torch.log_softmax(logits, -1)
    expected = [_brute_force(log_probs[b], labels[b], n_t, n_u, blank % vocab) for b in range(2)]
    torch.testing.assert_close(losses, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)


def test_float64_gradcheck_with_padding_and_options():
    logits, labels, logit_lengths, target_lengths = _batch(3, 4, 3, 5, -1, seed=1)
    # FastEmit is left out: its gradient is by design not the derivative of the loss value
    for kwargs in ({}, {"reduction": "mean"}, {"blank": 2, "reduction": "sum", "clamp": 10.0}):
        blank = kwargs.pop("blank", -1)
        labels_b = torch.where(labels == blank % 5, (labels + 1) % 5, labels)
        fn = lambda x: rnnt_loss(x, labels_b, logit_lengths, target_lengths, blank=blank, **kwargs)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (logits.clone().requires_grad_(),), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("fastemit_lambda", [0.0, 0.3])
def test_matches_autograd_reference_values_and_gradients(fastemit_lambda):
    logits, labels, logit_lengths, target_lengths = _batch(4, 6, 4, 7, -1, seed=2)
    ours = _loss_and_grad(rnnt_loss, logits, labels, logit_lengths, target_lengths, reduction="none",
                          fastemit_lambda=fastemit_lambda)
    ref = _loss_and_grad(reference_costs, logits, labels, logit_lengths, target_lengths, 6, fastemit_lambda)
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours[1], ref[1], rtol=1e-9, atol=1e-10)


def test_float32_close_to_float64_and_half_inputs_accumulate_in_float32():
    logits, labels, logit_lengths, target_lengths = _batch(3, 20, 6, 64, -1, seed=3)
    exact = _loss_and_grad(rnnt_loss, logits, labels, logit_lengths, target_lengths, reduction="none")
    single = _loss_and_grad(rnnt_loss, logits.float(), labels, logit_lengths, target_lengths, reduction="none")
    torch.testing.assert_close(single[0].double(), exact[0], rtol=2e-6, atol=1e-5)
    torch.testing.assert_close(single[1].double(), exact[1], rtol=1e-4, atol=2e-6)
    for dtype in (torch.float16, torch.bfloat16):
        rounded = logits.to(dtype)
        half = _loss_and_grad(rnnt_loss, rounded, labels, logit_lengths, target_lengths, reduction="none")
        ref = _loss_and_grad(rnnt_loss, rounded.double(), labels, logit_lengths, target_lengths, reduction="none")
        assert half[0].dtype == torch.float32 and half[1].dtype == dtype
        torch.testing.assert_close(half[0].double(), ref[0], rtol=2e-6, atol=1e-5)
        torch.testing.assert_close(half[1].double(), ref[1], rtol=1e-2, atol=1e-3)


def test_invariant_to_a_constant_added_to_each_cell():
    logits, labels, logit_lengths, target_lengths = _batch(3, 5, 3, 6, 0, seed=4)
    shift = torch.randn(3, 5, 4, 1, dtype=torch.float64) * 50  # one constant per (b, t, u) cell
    base = _loss_and_grad(rnnt_loss, logits, labels, logit_lengths, target_lengths, blank=0, reduction="none")
    shifted = _loss_and_grad(rnnt_loss, logits + shift, labels, logit_lengths, target_lengths, blank=0,
                             reduction="none")
    torch.testing.assert_close(shifted[0], base[0], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(shifted[1], base[1], rtol=1e-9, atol=1e-12)


def test_padding_is_ignored_and_gets_zero_gradient():
    logits, labels, logit_lengths, target_lengths = _batch(4, 7, 5, 6, -1, seed=5, dtype=torch.float32)
    logit_lengths[1:] = torch.tensor([3, 7, 1])
    target_lengths[1:] = torch.tensor([5, 0, 2])
    valid = torch.zeros(logits.shape[:3], dtype=torch.bool)
    for b in range(4):
        valid[b, : logit_lengths[b], : target_lengths[b] + 1] = True
    garbage = logits.masked_fill(~valid[..., None], float("nan"))  # padded cells hold NaN
    padded_labels = torch.where(torch.arange(5) < target_lengths[:, None], labels, -7)  # padding: invalid ids
    losses, grad = _loss_and_grad(rnnt_loss, garbage, padded_labels, logit_lengths, target_lengths,
                                  reduction="none")
    assert torch.all(grad[~valid] == 0)
    for b in range(4):
        n_t, n_u = int(logit_lengths[b]), int(target_lengths[b])
        trimmed = logits[b : b + 1, :n_t, : n_u + 1].contiguous()
        one, one_grad = _loss_and_grad(rnnt_loss, trimmed, labels[b : b + 1, :n_u], torch.tensor([n_t]),
                                       torch.tensor([n_u]), reduction="none")
        torch.testing.assert_close(losses[b : b + 1], one)
        torch.testing.assert_close(grad[b, :n_t, : n_u + 1], one_grad[0])


def test_reductions_match_nemo_definitions():
    logits, labels, logit_lengths, target_lengths = _batch(4, 5, 3, 6, -1, seed=6)
    target_lengths[1] = 0
    per_sample = rnnt_loss(logits, labels, logit_lengths, target_lengths, reduction="none")
    assert per_sample.shape == (4,)
    lengths = target_lengths.double().clamp(min=1)
    expected = {"sum": per_sample.sum(), "mean_batch": per_sample.mean(), "mean": (per_sample / lengths).mean(),
                "mean_volume": per_sample.sum() / lengths.sum()}
    for reduction, value in expected.items():
        module = RNNTLoss(blank=5, reduction=reduction)
        got = module(log_probs=logits, targets=labels, input_lengths=logit_lengths, target_lengths=target_lengths)
        torch.testing.assert_close(got, value, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="reduction"):
        RNNTLoss(blank=5, reduction="avg")


def test_module_supports_nemo_fused_joint_protocol():
    """NeMo's joint (fuse_loss_wer) sets reduction to None per sub-batch, then calls loss.reduce on the lists."""
    logits, labels, logit_lengths, target_lengths = _batch(4, 5, 3, 6, -1, seed=12)
    module = RNNTLoss(blank=5, reduction="mean")
    whole = module(log_probs=logits, targets=labels, input_lengths=logit_lengths, target_lengths=target_lengths)
    module.reduction = None
    parts = [module(log_probs=logits[i : i + 2], targets=labels[i : i + 2], input_lengths=logit_lengths[i : i + 2],
                    target_lengths=target_lengths[i : i + 2]) for i in (0, 2)]
    assert parts[0].shape == (2,)
    module.reduction = "mean"
    reduced = module.reduce(parts, [target_lengths[:2], target_lengths[2:]])
    torch.testing.assert_close(reduced, whole, rtol=1e-12, atol=1e-12)


def test_clamp_bounds_each_per_sample_gradient_before_the_reduction_scale():
    logits, labels, logit_lengths, target_lengths = _batch(3, 6, 4, 5, -1, seed=7)
    logits = logits * 4  # sharp distributions: large gradients
    _, raw = _loss_and_grad(rnnt_loss, logits, labels, logit_lengths, target_lengths, reduction="sum")
    assert raw.abs().max() > 0.5
    _, clamped = _loss_and_grad(rnnt_loss, logits, labels, logit_lengths, target_lengths, reduction="sum",
                                clamp=0.25)
    torch.testing.assert_close(clamped, raw.clamp(-0.25, 0.25), rtol=1e-12, atol=1e-12)
    _, mean_clamped = _loss_and_grad(rnnt_loss, logits, labels, logit_lengths, target_lengths,
                                     reduction="mean_batch", clamp=0.25)
    torch.testing.assert_close(mean_clamped, raw.clamp(-0.25, 0.25) / 3, rtol=1e-12, atol=1e-12)


def test_impossible_alignment_gives_inf_or_zero_and_finite_gradients():
    logits, labels, logit_lengths, target_lengths = _batch(3, 4, 2, 5, -1, seed=8, full=True)
    logits[1, :, 0, labels[1, 0]] = float("-inf")  # the first label can never be emitted
    logits[2, 0, 0, :] = float("-inf")  # a whole cell at -inf: every path starts there
    losses, grad = _loss_and_grad(rnnt_loss, logits, labels, logit_lengths, target_lengths, reduction="none")
    assert torch.isfinite(losses[0]) and torch.isinf(losses[1:]).all() and (losses[1:] > 0).all()
    assert torch.isfinite(grad).all() and torch.all(grad[1:] == 0) and grad[0].abs().sum() > 0
    with pytest.warns(RuntimeWarning, match=r"samples \[1, 2\]"):
        zeroed, zgrad = _loss_and_grad(rnnt_loss, logits, labels, logit_lengths, target_lengths,
                                       reduction="none", zero_infinity=True)
    torch.testing.assert_close(zeroed, torch.stack([losses[0], torch.zeros(()), torch.zeros(())]).double())
    torch.testing.assert_close(zgrad, grad)


def test_grad_inplace_writes_into_the_logits_buffer():
    logits, labels, logit_lengths, target_lengths = _batch(2, 5, 3, 6, -1, seed=9, dtype=torch.float32)
    expected = _loss_and_grad(rnnt_loss, logits, labels, logit_lengths, target_lengths)[1]
    weight = torch.ones((), requires_grad=True)
    joint = logits * weight  # a non-leaf, as the joint's output is
    seen = []
    joint.register_hook(lambda g: seen.append(g.data_ptr()) or None)
    RNNTLoss(blank=-1, grad_inplace=True)(joint, labels, logit_lengths, target_lengths).backward()
    assert seen == [joint.data_ptr()]
    torch.testing.assert_close(joint.detach(), expected)  # the logits now hold their gradient
    torch.testing.assert_close(weight.grad, (expected * logits).sum())
    # an op whose backward needs the logits (here log_softmax) must not silently see them overwritten
    raw = logits.clone().requires_grad_()
    loss = RNNTLoss(blank=-1, grad_inplace=True)(torch.log_softmax(raw, -1), labels, logit_lengths, target_lengths)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_follows_and_keeps_torch_thread_count():
    """In a fresh process (Numba's OpenMP pool starts once per process, and starting it resets the OpenMP thread
    count torch uses), the loss runs on torch's thread count and leaves torch's setting as it was."""
    script = """
import sys, types
package = types.ModuleType("rnnt_plugin")
package.__path__ = [sys.argv[1] + "/rnnt_plugin"]
sys.modules["rnnt_plugin"] = package  # skip the package's NeMo registration
import numba, torch
torch.set_num_threads(1)
from rnnt_plugin.losses import rnnt_loss
rnnt_loss(torch.randn(2, 3, 3, 5), torch.ones(2, 2, dtype=torch.long), torch.tensor([3, 2]), torch.tensor([2, 1]))
print(torch.get_num_threads(), numba.get_num_threads())
"""
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", script, str(root)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["1", "1"]


@pytest.mark.parametrize(
    "change,error,match",
    [
        (lambda a: a.update(logits=a["logits"].long()), TypeError, "`logits`"),
        (lambda a: a.update(logits=a["logits"][0]), ValueError, "`logits`"),
        (lambda a: a.update(logits=a["logits"].transpose(1, 2)), ValueError, "contiguous"),
        (lambda a: a.update(targets=a["targets"].float()), TypeError, "`targets`"),
        (lambda a: a.update(targets=a["targets"][:2]), ValueError, "`targets`"),
        (lambda a: a["targets"].__setitem__((1, 0), 5), ValueError, r"`targets`\[1, 0\] = 5"),
        (lambda a: a["targets"].__setitem__((2, 1), 9), ValueError, r"`targets`\[2, 1\] = 9"),
        (lambda a: a["targets"].__setitem__((0, 2), -1), ValueError, r"`targets`\[0, 2\] = -1"),
        (lambda a: a["logit_lengths"].__setitem__(2, 0), ValueError, r"`logit_lengths`\[2\] = 0"),
        (lambda a: a["logit_lengths"].__setitem__(1, 7), ValueError, r"`logit_lengths`\[1\] = 7"),
        (lambda a: a["target_lengths"].__setitem__(0, -1), ValueError, r"`target_lengths`\[0\] = -1"),
        (lambda a: a["target_lengths"].__setitem__(1, 4), ValueError, r"`target_lengths`\[1\] = 4"),
        (lambda a: a.update(target_lengths=a["target_lengths"][:2]), ValueError, "`target_lengths`"),
        (lambda a: a.update(logit_lengths=a["logit_lengths"].float()), TypeError, "`logit_lengths`"),
        (lambda a: a.update(blank=6), ValueError, "`blank`"),
        (lambda a: a.update(reduction="avg"), ValueError, "`reduction`"),
        (lambda a: a.update(fastemit_lambda=-1.0), ValueError, "`fastemit_lambda`"),
    ],
)
def test_bad_inputs_raise_naming_the_argument_and_sample(change, error, match):
    logits, labels, logit_lengths, target_lengths = _batch(3, 6, 3, 6, -1, seed=11, full=True)
    args = dict(logits=logits, targets=labels, logit_lengths=logit_lengths, target_lengths=target_lengths)
    change(args)
    with pytest.raises(error, match=match):
        rnnt_loss(**args)


def test_registry_builds_ours_with_kwargs_and_rejects_unknown_names_and_kwargs():
    loss = resolve_rnnt_loss("rnnt_plugin", blank=5, reduction="sum", loss_kwargs={"clamp": 0.5})
    assert isinstance(loss, RNNTLoss) and loss.clamp == 0.5 and loss.reduction == "sum" and loss.blank == 5
    with pytest.raises(ValueError, match="unknown keys"):
        resolve_rnnt_loss("rnnt_plugin", blank=5, loss_kwargs={"clmap": 0.5})
    with pytest.raises(ValueError, match="loss_name"):
        resolve_rnnt_loss("warp-rnnt", blank=5)


def test_check_values_gates_the_value_checks_and_the_zero_infinity_warning():
    """check_values=False (the CUDA default: each value check is a host sync there) skips the checks of values,
    never those of shapes and types; on CPU the default is to check."""
    import warnings

    logits, labels, logit_lengths, target_lengths = _batch(2, 4, 2, 5, -1, seed=12, full=True)
    labels[1, 0] = 4  # the blank: a bad label, harmless to the kernels
    with pytest.raises(ValueError, match=r"`targets`\[1, 0\] = 4"):
        rnnt_loss(logits, labels, logit_lengths, target_lengths)
    rnnt_loss(logits, labels, logit_lengths, target_lengths, check_values=False)
    with pytest.raises(ValueError, match="`target_lengths`"):
        rnnt_loss(logits, labels, logit_lengths, target_lengths[:1], check_values=False)
    impossible = logits.clone()
    impossible[0, 0, 0, :] = -math.inf
    with pytest.warns(RuntimeWarning, match=r"samples \[0\]"):
        rnnt_loss(impossible, labels.clamp(max=3), logit_lengths, target_lengths, zero_infinity=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        losses = rnnt_loss(impossible, labels.clamp(max=3), logit_lengths, target_lengths, zero_infinity=True,
                           check_values=False, reduction="none")
    assert losses[0] == 0 and torch.isfinite(losses).all()
    module = resolve_rnnt_loss("rnnt_plugin", blank=4, loss_kwargs={"check_values": False})
    assert module.check_values is False
    module(logits, labels, logit_lengths, target_lengths)  # unchecked: no ValueError
