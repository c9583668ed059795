"""ResumeState: what a checkpoint must hold besides the model, optimiser, LR policy and EMA for a resumed run to
continue exactly: the bucketing sampler's position in the epoch and the torch, Python and NumPy RNG states."""

import random
from typing import Any, Optional

import lightning.pytorch as pl
import numpy as np
import torch

from rnnt_plugin.models.batches import bucketing_sampler


class ResumeState(pl.Callback):
    """Advances the bucketing sampler after each batch, and saves and restores its position and the RNG states."""

    # Checkpoints of earlier versions hold this state under the name of the callback that kept it then.
    state_key = "TrainingMonitor"

    def __init__(self):
        self._sampler = None
        self._pending: Optional[dict] = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._sampler = bucketing_sampler(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._sampler is not None:
            self._sampler.advance()

    def on_train_start(self, trainer, pl_module) -> None:
        if self._pending is None:
            return
        state, self._pending = self._pending, None
        torch.set_rng_state(state["torch_rng"])
        random.setstate(state["python_rng"])
        np.random.set_state(("MT19937", state["numpy_rng"]["key"].numpy(), *state["numpy_rng"]["rest"]))

    def state_dict(self) -> dict[str, Any]:
        _, key, *rest = np.random.get_state()
        return {
            "sampler": self._sampler.state_dict() if self._sampler is not None else None,
            "torch_rng": torch.get_rng_state(),
            "python_rng": random.getstate(),
            "numpy_rng": {"key": torch.from_numpy(key.astype(np.int64)), "rest": [int(rest[0]), int(rest[1]),
                                                                                   float(rest[2])]},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """The sampler's position at once (before any loader iterator exists: with worker processes Lightning
        starts one before ``on_train_start``), the RNG states when training starts."""
        if state_dict.get("sampler") is not None and self._sampler is not None:
            self._sampler.load_state_dict(state_dict["sampler"])
        self._pending = state_dict
