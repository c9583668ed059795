"""Train the MLPerf RNN-T with a config from configs/ (Hydra overrides as key=value).

Usage:
    python examples/train.py --config-name baseline_v3-1023sp \
        model.tokenizer.dir=DATA/tokenizer model.train_ds.manifest_filepath=DATA/manifests/train.json \
        model.validation_ds.manifest_filepath=DATA/manifests/dev.json trainer.devices=8
"""

import rnnt_plugin  # noqa: F401  (registers the plugin with NeMo)
from nemo.core.config import hydra_runner

from rnnt_plugin.training.trainer import train


@hydra_runner(config_path="../configs", config_name="baseline_v3-1023sp")
def main(cfg):
    train(cfg)


if __name__ == "__main__":
    main()
