"""LAMB with the semantics of apex ``FusedLAMB`` (``multi_tensor_lamb``), as the MLPerf RNN-T reference uses it.

One ``step()``:

1. global gradient norm ``G = ||(g_1, ..., g_n)||_2`` over every parameter of every group;
   clip divisor ``c = G / max_grad_norm`` when ``G > max_grad_norm`` else 1; ``g <- g / c``.
2. per group, ``t <- t + 1`` (one step counter per group, as apex), then per tensor:
   ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``,
   ``u = (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + weight_decay * w`` (decoupled decay, added before
   the trust ratio),
   ``r = ||w|| / ||u||`` (1 when either norm is 0), ``w <- w - lr * r * u``.
   As in apex, the trust ratio is applied only to groups with ``weight_decay != 0`` unless ``use_nvlamb``.

On CPU the per-tensor update runs as two fused Numba passes (:mod:`rnnt_plugin.optim.lamb_cpu`), the same
arithmetic without the foreach path's parameter-sized temporaries.

Differences from apex, on purpose: gradients are left untouched (apex overwrites them with the update), a group
with no gradient at all does not advance its step counter, and any floating dtype is accepted (the arithmetic
runs in the parameter's dtype; keep fp32 master weights, as Lightning's mixed precision does).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import torch
from omegaconf import MISSING

from rnnt_plugin.cpu_threads import follow_torch_threads
from rnnt_plugin.optim import lamb_cpu

__all__ = ["LAMB", "LAMBParams"]


@dataclass
class LAMBParams:
    """NeMo ``optim`` parameters of :class:`LAMB` (mirrors NeMo's ``OptimizerParams``): the MLPerf reference's values,
    also :class:`LAMB`'s defaults."""

    lr: Optional[float] = MISSING
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-9
    weight_decay: float = 1e-3
    bias_correction: bool = True
    grad_averaging: bool = True
    max_grad_norm: Optional[float] = 1.0
    use_nvlamb: bool = False


class LAMB(torch.optim.Optimizer):
    """Layer-wise adaptive moments (LAMB) with global gradient-norm clipping inside ``step()``.

    Args:
        params: parameters or parameter-group dicts. Extra group keys (e.g. ``lr_factor``, ``name``) are kept.
        lr: learning rate.
        betas: ``(beta1, beta2)`` for the first and second moments.
        eps: added to ``sqrt(v_hat)``.
        weight_decay: decoupled weight decay added to the Adam update before the trust ratio.
        bias_correction: divide the moments by ``1 - beta^t``.
        grad_averaging: ``m <- b1 m + (1 - b1) g`` when True, ``m <- b1 m + g`` when False.
        max_grad_norm: clip the global gradient norm (all groups together) to this value; ``None`` disables.
        use_nvlamb: apply the trust ratio to groups with ``weight_decay == 0`` too.

    After each step ``last_grad_norm`` holds the global gradient norm before clipping (0-d tensor, for logging).
    """

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = LAMBParams.betas,
        eps: float = LAMBParams.eps,
        weight_decay: float = LAMBParams.weight_decay,
        bias_correction: bool = LAMBParams.bias_correction,
        grad_averaging: bool = LAMBParams.grad_averaging,
        max_grad_norm: Optional[float] = LAMBParams.max_grad_norm,
        use_nvlamb: bool = LAMBParams.use_nvlamb,
    ):
        if not lr >= 0.0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        if not eps >= 0.0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"betas must be two values in [0, 1), got {betas}")
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
        if max_grad_norm is not None and not max_grad_norm > 0.0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm}")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            bias_correction=bias_correction,
            grad_averaging=grad_averaging,
            use_nvlamb=use_nvlamb,
        )
        super().__init__(params, defaults)
        # One global threshold, as apex reads it from `defaults`: the norm it clips spans all groups.
        self.max_grad_norm = max_grad_norm
        self.last_grad_norm: Optional[torch.Tensor] = None

    def _grads_of(self, group: dict) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        params, grads = [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise TypeError(f"LAMB does not support sparse gradients (parameter of shape {tuple(p.shape)})")
            params.append(p)
            grads.append(p.grad)
        return params, grads

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None) -> Optional[torch.Tensor]:
        """One LAMB update of every parameter that has a gradient; returns the closure's loss, if any."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        per_group = [self._grads_of(group) for group in self.param_groups]
        all_grads = [g for _, grads in per_group for g in grads]
        if not all_grads:
            return loss
        # Global norm over every group, in fp32; kept as a tensor so that nothing waits for the device.
        norms = torch._foreach_norm([g.float() if g.dtype != torch.float32 else g for g in all_grads])
        global_norm = torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms]))
        self.last_grad_norm = global_norm
        if self.max_grad_norm is None:
            inv_clip = torch.ones_like(global_norm)
        else:
            inv_clip = torch.where(
                global_norm > self.max_grad_norm, self.max_grad_norm / global_norm, torch.ones_like(global_norm)
            )

        for group, (params, grads) in zip(self.param_groups, per_group):
            if params:
                self._update_group(group, params, grads, inv_clip)
        return loss

    def _update_group(
        self, group: dict, params: list[torch.Tensor], grads: list[torch.Tensor], inv_clip: torch.Tensor
    ) -> None:
        beta1, beta2 = group["betas"]
        group["step"] = group.get("step", 0) + 1
        step = group["step"]
        bc1 = 1.0 - beta1**step if group["bias_correction"] else 1.0
        bc2 = 1.0 - beta2**step if group["bias_correction"] else 1.0

        exp_avgs, exp_avg_sqs = [], []
        for p in params:
            state = self.state[p]
            if not state:
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
        if all(_fused_cpu_ok(t) for t in (*params, *grads, *exp_avgs, *exp_avg_sqs)):
            self._update_group_cpu(group, params, grads, exp_avgs, exp_avg_sqs, float(inv_clip), bc1, bc2)
            return

        scaled = torch._foreach_mul(grads, inv_clip.to(grads[0].device))
        torch._foreach_mul_(exp_avgs, beta1)
        torch._foreach_add_(exp_avgs, scaled, alpha=(1.0 - beta1) if group["grad_averaging"] else 1.0)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, scaled, scaled, value=1.0 - beta2)

        denom = torch._foreach_div(exp_avg_sqs, bc2)
        torch._foreach_sqrt_(denom)
        torch._foreach_add_(denom, group["eps"])
        update = torch._foreach_div(exp_avgs, bc1)
        torch._foreach_div_(update, denom)

        weight_decay = group["weight_decay"]
        if weight_decay != 0.0:
            torch._foreach_add_(update, params, alpha=weight_decay)
        if weight_decay != 0.0 or group["use_nvlamb"]:
            # Per-tensor trust ratio ||w|| / ||u|| from the weights before this update; 1 when either is 0.
            w_norms = torch._foreach_norm(params)
            u_norms = torch._foreach_norm(update)
            ratios = [
                torch.where((w > 0) & (u > 0), w / u, torch.ones_like(w)) for w, u in zip(w_norms, u_norms)
            ]
            torch._foreach_mul_(update, ratios)
        torch._foreach_add_(params, update, alpha=-group["lr"])

    @staticmethod
    def _update_group_cpu(group: dict, params, grads, exp_avgs, exp_avg_sqs, clip: float, bc1: float,
                          bc2: float) -> None:
        """The update above, per tensor in two fused passes over flat views (see :mod:`lamb_cpu`)."""
        beta1, beta2 = group["betas"]
        weight_decay = group["weight_decay"]
        trust = weight_decay != 0.0 or group["use_nvlamb"]
        follow_torch_threads()
        for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
            w, g, m, v = (t.view(-1).numpy() for t in (p.data, g, m, v))
            cast = w.dtype.type
            scalars = [cast(x) for x in (bc1, bc2, group["eps"], weight_decay)]
            w_sq, u_sq = lamb_cpu.moments(
                w, g, m, v, cast(clip), cast(beta1), cast(1.0 - beta1 if group["grad_averaging"] else 1.0),
                cast(beta2), cast(1.0 - beta2), *scalars)
            ratio = math.sqrt(w_sq) / math.sqrt(u_sq) if trust and w_sq > 0 and u_sq > 0 else 1.0
            lamb_cpu.apply(w, m, v, *scalars, cast(group["lr"] * ratio))


def _fused_cpu_ok(t: torch.Tensor) -> bool:
    """Whether :mod:`lamb_cpu` can update this tensor in place through a NumPy view."""
    return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64) and t.is_contiguous()
