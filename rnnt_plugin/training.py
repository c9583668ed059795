"""Training driver: a Hydra config -> Lightning trainer + NeMo exp_manager + MLPerfRNNTModel -> .nemo.

``examples/train.py`` parses the config and calls :func:`train`; tests call it directly with a composed config.
"""

from pathlib import Path
from typing import Optional

import lightning.pytorch as pl
from nemo.utils.exp_manager import exp_manager
from omegaconf import DictConfig, OmegaConf

from rnnt_plugin.models import MLPerfRNNTModel
from rnnt_plugin.optim.ema import EMA


def train(cfg: DictConfig) -> MLPerfRNNTModel:
    """Train the model that ``cfg.model`` describes with ``cfg.trainer``; return it with its final weights.

    ``cfg.ema.decay`` (optional) keeps an EMA of the weights for validation and the final ``.nemo``.
    ``cfg.nemo_path`` (optional) is where the final ``.nemo`` is written; by default
    ``<exp_manager log dir>/<name>.nemo``.
    """
    pl.seed_everything(cfg.get("seed", 1), workers=True)
    callbacks = []
    ema_decay = (cfg.get("ema") or {}).get("decay")
    if ema_decay is not None:
        callbacks.append(EMA(decay=ema_decay))
    trainer = pl.Trainer(**OmegaConf.to_container(cfg.trainer, resolve=True), callbacks=callbacks)
    log_dir: Optional[Path] = exp_manager(trainer, cfg.get("exp_manager", None))
    model = MLPerfRNNTModel(cfg=cfg.model, trainer=trainer)
    trainer.fit(model)
    nemo_path = cfg.get("nemo_path") or (Path(log_dir) / f"{cfg.name}.nemo" if log_dir else None)
    if nemo_path and trainer.is_global_zero:
        model.save_to(str(nemo_path))
    return model
