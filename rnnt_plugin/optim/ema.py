"""Exponential moving average (EMA) of the weights as a Lightning callback, as the MLPerf RNN-T reference uses it.

After every optimiser step, ``ema <- decay * ema + (1 - decay) * w`` for each trainable floating parameter, in
fp32 shadow copies that start from the initial weights (the reference's ``apply_ema``; constant decay, no
warm-up), or from the weights after ``start_step`` optimiser steps. Validation and test run on the EMA weights,
swapped in at their start and back at their end; at train end the EMA weights are left in the model, so a
``.nemo`` written after ``fit`` holds them.

Checkpoints: the callback's state (plain ints and a dict of tensors, readable by ``torch.load(weights_only=True)``)
rides in the Lightning checkpoint, and whenever the EMA weights sit in the model (during evaluation, after train
end) ``on_save_checkpoint`` writes the raw weights into ``state_dict`` instead, so resuming always continues from
the raw weights and the saved EMA.

Each process keeps a full shadow, which suits DDP (replicated weights), not sharded strategies (FSDP).
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Optional

import lightning.pytorch as pl
import torch

__all__ = ["EMA", "ema_weights_applied", "ema_state_dict_from_checkpoint"]


class EMA(pl.Callback):
    """EMA of the LightningModule's trainable floating parameters.

    Args:
        decay: EMA decay per optimiser step, in [0, 1) (the reference: 0.999).
        validate_with_ema: run validation and test on the EMA weights.
        apply_at_train_end: leave the EMA weights in the model when ``fit`` ends (the raw ones are kept aside
            for checkpoints and are put back if training starts again).
        start_step: the EMA equals the weights until this many optimiser steps are done, and averages from
            there on (e.g. from the end of a CTC warm-up, whose weights would only blur the transducer's).
    """

    def __init__(self, decay: float = 0.999, validate_with_ema: bool = True, apply_at_train_end: bool = True,
                 start_step: int = 0):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be in [0, 1), got {decay}")
        if start_step < 0:
            raise ValueError(f"start_step must be >= 0, got {start_step}")
        self.decay = float(decay)
        self.start_step = int(start_step)
        self.validate_with_ema = validate_with_ema
        self.apply_at_train_end = apply_at_train_end
        self.num_updates = 0
        self._last_step = 0  # trainer.global_step at the last update: one update per optimiser step
        self._shadow: Optional[dict[str, torch.Tensor]] = None  # name -> fp32 EMA, on the parameter's device
        self._pending: Optional[dict[str, torch.Tensor]] = None  # loaded from a checkpoint, not yet placed
        self._raw: Optional[dict[str, torch.Tensor]] = None  # raw weights while the EMA weights are in the model
        self._swapped_for_eval = False

    @property
    def ema_weights(self) -> Optional[dict[str, torch.Tensor]]:
        """Parameter name -> fp32 EMA tensor, or None before the first use."""
        return self._shadow if self._shadow is not None else self._pending

    @property
    def ema_in_model(self) -> bool:
        """Whether the model currently holds the EMA weights."""
        return self._raw is not None

    @staticmethod
    def _tracked(pl_module: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in pl_module.named_parameters() if p.requires_grad and p.is_floating_point()}

    def _ensure_shadow(self, pl_module: torch.nn.Module, init_from_model: bool) -> bool:
        """Place loaded EMA weights on the parameters' devices, or start from the weights; True if there is one."""
        if self._pending is not None:
            params = self._tracked(pl_module)
            if set(params) != set(self._pending):
                missing, unexpected = sorted(set(params) - set(self._pending)), sorted(set(self._pending) - set(params))
                raise ValueError(f"EMA state does not match the model: missing {missing}, unexpected {unexpected}")
            self._shadow = {n: t.to(device=params[n].device, dtype=torch.float32) for n, t in self._pending.items()}
            self._pending = None
        elif self._shadow is None and init_from_model:
            self._shadow = {n: p.detach().to(torch.float32, copy=True) for n, p in self._tracked(pl_module).items()}
        return self._shadow is not None

    @torch.no_grad()
    def _copy_into_model(self, pl_module: torch.nn.Module, source: dict[str, torch.Tensor]) -> None:
        params = dict(pl_module.named_parameters())
        for name, value in source.items():
            params[name].copy_(value)

    def _swap_in(self, pl_module: torch.nn.Module) -> bool:
        """Put the EMA weights in the model, keeping the raw ones aside; False if there is nothing to do."""
        if self._raw is not None or self._shadow is None:
            return False
        params = dict(pl_module.named_parameters())
        self._raw = {n: params[n].detach().clone() for n in self._shadow}
        self._copy_into_model(pl_module, self._shadow)
        return True

    def _swap_out(self, pl_module: torch.nn.Module) -> None:
        if self._raw is not None:
            self._copy_into_model(pl_module, self._raw)
            self._raw = None

    @contextlib.contextmanager
    def applied(self, pl_module: torch.nn.Module) -> Iterator[bool]:
        """Context with the EMA weights in ``pl_module`` (yields whether any EMA exists); restores on exit."""
        self._ensure_shadow(pl_module, init_from_model=False)
        swapped = self._swap_in(pl_module)
        try:
            yield self.ema_in_model
        finally:
            if swapped:
                self._swap_out(pl_module)

    # Lightning hooks -------------------------------------------------------------------------------------------

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._swap_out(pl_module)  # training goes on from the raw weights if the EMA ones were left in
        self._ensure_shadow(pl_module, init_from_model=True)

    @torch.no_grad()
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if trainer.global_step <= self._last_step:
            return  # gradient accumulation, or a skipped step: no optimiser step since the last update
        self._ensure_shadow(pl_module, init_from_model=True)
        params = dict(pl_module.named_parameters())  # the names fixed when the shadow was made
        names = list(self._shadow)
        weights = [params[n].detach() for n in names]
        weights = [w if w.dtype == torch.float32 else w.float() for w in weights]
        decay = self.decay if trainer.global_step > self.start_step else 0.0
        torch._foreach_lerp_([self._shadow[n] for n in names], weights, 1.0 - decay)
        self.num_updates += 1
        self._last_step = trainer.global_step

    def _eval_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fitting = trainer.state.fn == "fit"
        if self.validate_with_ema and self._ensure_shadow(pl_module, init_from_model=fitting):
            self._swapped_for_eval = self._swap_in(pl_module)

    def _eval_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._swapped_for_eval:
            self._swap_out(pl_module)
            self._swapped_for_eval = False

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_start(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_end(trainer, pl_module)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_start(trainer, pl_module)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._eval_end(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.apply_at_train_end and self._ensure_shadow(pl_module, init_from_model=False):
            self._swap_in(pl_module)
            self._swapped_for_eval = False  # stays in: a later validation must not swap it out

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        if self._raw is not None:  # the model holds the EMA weights: save the raw ones to resume from
            state_dict = checkpoint["state_dict"]
            for name, value in self._raw.items():
                assert name in state_dict, name
                state_dict[name] = value.clone()

    def state_dict(self) -> dict[str, Any]:
        shadow = self.ema_weights
        return {
            "num_updates": self.num_updates,
            "last_step": self._last_step,
            "shadow": {n: t.detach().clone() for n, t in shadow.items()} if shadow is not None else {},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.num_updates = int(state_dict["num_updates"])
        self._last_step = int(state_dict["last_step"])
        self._pending = dict(state_dict["shadow"]) or None
        self._shadow = None
        # Lightning restores the model before its callbacks: the model now holds the checkpoint's raw weights
        # (e.g. NeMo's checkpoint callback reloading the best checkpoint at train end), so nothing is swapped in.
        self._raw = None
        self._swapped_for_eval = False


def _ema_callback(model: pl.LightningModule) -> Optional[EMA]:
    trainer = getattr(model, "_trainer", None)  # `model.trainer` raises when detached
    callbacks = trainer.callbacks if trainer is not None else []
    found = [cb for cb in callbacks if isinstance(cb, EMA)]
    if len(found) > 1:
        raise ValueError(f"model's trainer has {len(found)} EMA callbacks; expected at most one")
    return found[0] if found else None


@contextlib.contextmanager
def ema_weights_applied(model: pl.LightningModule) -> Iterator[bool]:
    """Context in which ``model`` holds its trainer's EMA weights (e.g. to save a ``.nemo``); yields whether it
    does (False: no EMA callback or no EMA yet, the model is left as is). Restores the previous weights on exit.
    """
    callback = _ema_callback(model)
    if callback is None:
        yield False
        return
    with callback.applied(model) as in_model:
        yield in_model


def ema_state_dict_from_checkpoint(checkpoint: dict) -> dict[str, torch.Tensor]:
    """The model ``state_dict`` of a Lightning checkpoint (as from ``torch.load``) with the EMA weights in place of
    the raw ones, e.g. to evaluate a checkpoint on its EMA. Raises ValueError when the checkpoint has no EMA."""
    ema_state = checkpoint.get("callbacks", {}).get(EMA.__qualname__)
    if not ema_state or not ema_state.get("shadow"):
        raise ValueError("checkpoint holds no EMA state (was it trained with the EMA callback?)")
    state_dict = dict(checkpoint["state_dict"])
    for name, value in ema_state["shadow"].items():
        if name not in state_dict:
            raise ValueError(f"checkpoint's EMA names parameter {name!r}, absent from its state_dict")
        state_dict[name] = value.to(state_dict[name].dtype)
    return state_dict
