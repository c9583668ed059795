"""RNN-T loss on raw joint logits: autograd function, functional form and nn.Module.

Shape legend: B batch, T frames, U labels (the lattice has U+1 rows), V vocabulary incl. blank.

Memory: the forward pass keeps only (B, T, U+1)-sized tensors besides the logits (log-normaliser, blank and
label log-probs, alphas, betas); backward writes the gradient in one pass over the logits, with the incoming
per-sample gradient folded in, into a new tensor (1x the logits) or, with grad_inplace=True, into the logits'
own buffer (the logits are destroyed: nothing else may read them after backward). The arithmetic and the
lattice tensors are float32 (float64 for float64 logits); the losses are float32 for float16/bfloat16 logits.
On CUDA the kernels read float16/bfloat16 logits in place and write the gradient in their dtype (bytes moved:
docs/gpu-loss.md); on CPU, whose kernels are float32/float64 only, they run on a float32 copy, which receives
the gradient, cast back at the end.

On CUDA the kernels run on torch's current stream of the logits' device, under a device guard, and the loss
makes no host sync unless value checks are asked for (`check_values`, see `rnnt_loss`).
"""

import contextlib
import warnings
from typing import Optional

import numba
import torch

from rnnt_plugin.cpu_threads import follow_torch_threads
from rnnt_plugin.losses import cpu
from rnnt_plugin.losses.checks import check_inputs

REDUCTIONS = ("mean_batch", "mean", "mean_volume", "sum", "none")


HALF_DTYPES = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the loss arithmetic and lattice tensors for logits of `dtype`: float64 or float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _lattice_buffers(x: torch.Tensor):
    """Empty (B, T, U+1) lse, lp_blank, lp_label, alphas, betas and (B,) ll in x's compute dtype, on x's device."""
    n_batch, max_t, max_u1, _ = x.shape
    dtype = compute_dtype(x.dtype)
    cells = [torch.empty((n_batch, max_t, max_u1), dtype=dtype, device=x.device) for _ in range(5)]
    return (*cells, torch.empty(n_batch, dtype=dtype, device=x.device))


def _on_cuda(x: torch.Tensor) -> bool:
    """Whether x goes to the CUDA kernels (a function, so that the simulator tests can route CPU tensors there)."""
    return x.is_cuda


@contextlib.contextmanager
def _cuda_launch(device: torch.device):
    """Make `device` current for torch and for Numba (its primary context pushed, as torch's guard alone leaves
    the driver's current context to the runtime) and yield a Numba handle of torch's current stream on it: the
    kernels run where the tensors are, ordered after the ops that produced them."""
    from numba import cuda

    with torch.cuda.device(device), cuda.gpus[device.index]:
        yield cuda.external_stream(torch.cuda.current_stream(device).cuda_stream)


def _cuda_args(tensors):
    """Torch CUDA tensors -> Numba device arrays, no copies; bfloat16 as an int16 view of its bits (Numba has no
    bfloat16). sync=False: no host wait on the exporting stream, the launch is ordered on torch's stream."""
    from numba import cuda

    return [cuda.as_cuda_array(t.detach().view(torch.int16) if t.dtype == torch.bfloat16 else t.detach(),
                               sync=False) for t in tensors]


# Lattice rows handed to a CPU thread at a time: rows past a sample's length are cheap, so static halves of the
# batch would leave threads idle on variable-length batches; 4 rows are still >= 4 x U x V elements of work.
_ROWS_PER_CHUNK = 4


def _forward_kernels(x, labels, logit_lengths, target_lengths, blank, buffers) -> None:
    """Fill buffers = (lse, lp_blank, lp_label, alphas, betas, ll) from x (B, T, U+1, V)."""
    lse, lp_blank, lp_label, alphas, betas, ll = buffers
    if _on_cuda(x):
        from rnnt_plugin.losses import cuda as cuda_kernels

        with _cuda_launch(x.device) as stream:
            arrays = _cuda_args((x, labels, logit_lengths, target_lengths, *buffers))
            cuda_kernels.forward(*arrays[:4], blank, *arrays[4:], stream=stream)
        return
    follow_torch_threads()
    with numba.parallel_chunksize(_ROWS_PER_CHUNK):
        cpu.normaliser(x.numpy(), labels.numpy(), logit_lengths.numpy(), target_lengths.numpy(), blank,
                       lse.numpy(), lp_blank.numpy(), lp_label.numpy())
    cpu.alpha_beta(lp_blank.numpy(), lp_label.numpy(), logit_lengths.numpy(), target_lengths.numpy(),
                   alphas.numpy(), betas.numpy(), ll.numpy())


def _gradient_kernel(x, labels, logit_lengths, target_lengths, blank, buffers, scale, fastemit_lambda, clamp,
                     grad) -> None:
    """Write the gradient (B, T, U+1, V) of sum_b scale[b] * cost_b into grad (x's dtype; may be x itself)."""
    if _on_cuda(x):
        from rnnt_plugin.losses import cuda as cuda_kernels

        with _cuda_launch(x.device) as stream:
            arrays = _cuda_args((x, labels, logit_lengths, target_lengths, *buffers, scale, grad))
            cuda_kernels.gradient(*arrays[:4], blank, *arrays[4:11], fastemit_lambda, clamp, arrays[11],
                                  stream=stream)
        return
    follow_torch_threads()
    with numba.parallel_chunksize(_ROWS_PER_CHUNK):
        cpu.gradient(x.numpy(), labels.numpy(), logit_lengths.numpy(), target_lengths.numpy(), blank,
                     *(t.numpy() for t in buffers), scale.numpy(), fastemit_lambda, clamp, grad.numpy())


class RNNTFunction(torch.autograd.Function):
    """Per-sample RNN-T costs (B,) = -(1 + fastemit_lambda) * log P(targets | logits); see module docstring."""

    @staticmethod
    def forward(ctx, logits, targets, logit_lengths, target_lengths, blank, fastemit_lambda, clamp, grad_inplace):
        x = logits.detach()
        upcast = x.dtype in HALF_DTYPES and not _on_cuda(x)  # the CPU kernels are float32/float64 only
        if upcast:
            x = x.float()
        labels = targets.detach().to(torch.int64).contiguous()
        logit_lengths = logit_lengths.detach().to(torch.int64).contiguous()
        target_lengths = target_lengths.detach().to(torch.int64).contiguous()
        buffers = _lattice_buffers(x)
        _forward_kernels(x, labels, logit_lengths, target_lengths, blank, buffers)
        costs = buffers[-1] * -(1.0 + fastemit_lambda)
        if ctx.needs_input_grad[0]:
            ctx.save_for_backward(x, labels, logit_lengths, target_lengths, *buffers)
            ctx.settings = (blank, fastemit_lambda, clamp, grad_inplace or upcast, logits.dtype)
        return costs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_costs):
        x, labels, logit_lengths, target_lengths, *buffers = ctx.saved_tensors
        blank, fastemit_lambda, clamp, inplace, dtype = ctx.settings
        scale = grad_costs.detach().to(compute_dtype(x.dtype)).contiguous()  # (B,)
        grad = x if inplace else torch.empty_like(x)
        _gradient_kernel(x, labels, logit_lengths, target_lengths, blank, buffers, scale, fastemit_lambda, clamp,
                         grad)
        if grad is x:
            # the kernels write behind autograd's back: mark the logits modified, so that a backward that saved
            # them (e.g. a log_softmax in front of the loss) raises instead of using the overwritten values
            torch.autograd.graph.increment_version(x)
        return grad.to(dtype), None, None, None, None, None, None, None


def reduce_losses(losses: torch.Tensor, target_lengths: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce per-sample losses (B,) as NeMo's RNNTLoss does; empty transcripts count as length 1."""
    if reduction == "none":
        return losses
    if reduction == "sum":
        return losses.sum()
    if reduction == "mean_batch":
        return losses.mean()
    lengths = target_lengths.to(losses.dtype).clamp(min=1)
    if reduction == "mean":
        return (losses / lengths).mean()
    return losses.sum() / lengths.sum()  # mean_volume


def rnnt_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    logit_lengths: torch.Tensor,
    target_lengths: torch.Tensor,
    blank: int = -1,
    reduction: str = "mean_batch",
    fastemit_lambda: float = 0.0,
    clamp: float = -1.0,
    zero_infinity: bool = False,
    grad_inplace: bool = False,
    check_values: Optional[bool] = None,
) -> torch.Tensor:
    """RNN-T loss of raw joint logits, log-softmax fused in.

    Args:
        logits: (B, T, U+1, V) raw joint outputs (not log-probs), contiguous; CPU or CUDA.
        targets: (B, U') integer labels, U' >= max(target_lengths).
        logit_lengths: (B,) frames per sample, 1 <= T_b <= T.
        target_lengths: (B,) labels per sample, 0 <= U_b <= U.
        blank: blank index; -1 (default) is the last vocabulary entry.
        reduction: "mean_batch" (mean over samples), "mean" (mean of loss / target length), "mean_volume"
            (sum of losses / sum of target lengths), "sum" or "none" ((B,) per-sample losses).
        fastemit_lambda: FastEmit regularisation weight (NeMo's definition; the loss is scaled by 1 + lambda).
        clamp: if > 0, each element of a sample's gradient is clamped to [-clamp, clamp].
        zero_infinity: impossible alignments (loss +inf) give loss 0 instead of +inf (with a warning naming the
            samples when check_values); their gradient is zero either way.
        grad_inplace: write the gradient into the logits' buffer (destroys the logits, saves 1x their memory).
        check_values: check the values of the lengths and targets (ValueError naming the sample) and warn about
            zeroed samples; each costs a host sync on CUDA. None (default): on CPU yes, on CUDA no. Shapes,
            dtypes and devices are always checked (no sync).

    Returns:
        Scalar loss, or (B,) per-sample losses for reduction "none".
    """
    if reduction is None:
        reduction = "none"
    if reduction not in REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {REDUCTIONS}, got {reduction!r}")
    if not isinstance(fastemit_lambda, (int, float)) or fastemit_lambda < 0:
        raise ValueError(f"`fastemit_lambda` must be a float >= 0, got {fastemit_lambda!r}")
    if not isinstance(clamp, (int, float)):
        raise TypeError(f"`clamp` must be a float (<= 0 disables clamping), got {clamp!r}")
    if check_values is None:
        check_values = not (isinstance(logits, torch.Tensor) and _on_cuda(logits))
    blank = check_inputs(logits, targets, logit_lengths, target_lengths, blank, check_values=bool(check_values))
    losses = RNNTFunction.apply(logits, targets, logit_lengths, target_lengths, blank, float(fastemit_lambda),
                                float(clamp), bool(grad_inplace))
    if zero_infinity:
        infinite = torch.isinf(losses)
        if check_values and bool(infinite.any()):
            warnings.warn(f"RNN-T loss: impossible alignments zeroed for samples "
                          f"{infinite.nonzero().flatten().tolist()}", RuntimeWarning, stacklevel=2)
        losses = losses.masked_fill(infinite, 0.0)
    return reduce_losses(losses, target_lengths, reduction)


class RNNTLoss(torch.nn.Module):
    """RNN-T loss module with NeMo's call signature; `log_probs` are RAW joint logits (B, T, U+1, V).

    See `rnnt_loss` for the arguments; `blank` is required (NeMo passes the vocabulary size, i.e. the last index).
    Like NeMo's RNNTLoss, `reduction` may be set to None between calls (per-sample losses) and `reduce` reduces
    per-sample losses afterwards: NeMo's joint does both when it fuses loss and WER over sub-batches.
    """

    def __init__(
        self,
        blank: int,
        reduction: str = "mean_batch",
        fastemit_lambda: float = 0.0,
        clamp: float = -1.0,
        zero_infinity: bool = False,
        grad_inplace: bool = False,
        check_values: Optional[bool] = None,
    ):
        super().__init__()
        if reduction is not None and reduction not in REDUCTIONS:
            raise ValueError(f"`reduction` must be one of {REDUCTIONS} or None, got {reduction!r}")
        self.blank = blank
        self.reduction = reduction
        self.fastemit_lambda = fastemit_lambda
        self.clamp = clamp
        self.zero_infinity = zero_infinity
        self.grad_inplace = grad_inplace
        self.check_values = check_values

    def forward(self, log_probs, targets, input_lengths, target_lengths):
        """log_probs: (B, T, U+1, V) raw logits; targets (B, U); input_lengths, target_lengths (B,)."""
        return rnnt_loss(log_probs, targets, input_lengths, target_lengths, blank=self.blank,
                         reduction=self.reduction, fastemit_lambda=self.fastemit_lambda, clamp=self.clamp,
                         zero_infinity=self.zero_infinity, grad_inplace=self.grad_inplace,
                         check_values=self.check_values)

    def reduce(self, losses, target_lengths) -> torch.Tensor:
        """Reduce per-sample losses (B,) (or lists of them, one per sub-batch) with `self.reduction`."""
        if isinstance(losses, (list, tuple)):
            losses, target_lengths = torch.cat(list(losses)), torch.cat(list(target_lengths))
        return reduce_losses(losses, target_lengths, self.reduction or "none")
