"""The model of configs/small_cpu.yaml built in-process without data, for tests that need one untrained."""

from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from rnnt_plugin.models import MLPerfRNNTModel

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def build_small_model(tokenizer_dir, *overrides: str, seed: int = 0) -> MLPerfRNNTModel:
    """small_cpu with the tokenizer in ``tokenizer_dir``, dither 0 (deterministic features), no CTC warm-up,
    Hydra ``overrides`` on top; weights drawn after ``torch.manual_seed(seed)``; in eval mode."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = compose(config_name="small_cpu", overrides=[
            f"model.tokenizer.dir={tokenizer_dir}",
            "model.train_ds.manifest_filepath=null",
            "model.validation_ds.manifest_filepath=null",
            "model.preprocessor.dither=0.0",
            "model.ctc_warmup.steps=0",
            *overrides,
        ])
    torch.manual_seed(seed)
    return MLPerfRNNTModel(cfg=cfg.model).eval()
