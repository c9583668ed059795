"""rnnt_plugin: the MLPerf RNN-T (LSTM transducer) recipe as a NeMo plugin.

Importing the package registers it with NeMo, once per process:
- ``rnnt_plugin.`` joins NeMo's allow-list of ``_target_`` prefixes, so YAML configs and ``.nemo`` archives
  can name our classes (NeMo 3.0 refuses any other prefix);
- our optimiser and LR policy join NeMo's registries by name (NeMo refuses ``_target_`` for those);
- NeMo's telemetry (OneLogger) start-up warnings are silenced; NeMo's own warnings still show.
"""

import logging

__version__ = "0.1.0"

TARGET_PREFIX = "rnnt_plugin."

# OneLogger, which NeMo imports, warns at every start that it is disabled and has no exporters.
logging.getLogger("nv_one_logger").setLevel(logging.ERROR)


def register() -> None:
    """Register the plugin with NeMo; safe to call any number of times."""
    from nemo.core.classes import common

    from rnnt_plugin.optim import register_with_nemo

    if TARGET_PREFIX not in common.ALLOWED_TARGET_PREFIXES:
        common.ALLOWED_TARGET_PREFIXES.append(TARGET_PREFIX)
    register_with_nemo()


register()
