"""rnnt_plugin: the MLPerf RNN-T (LSTM transducer) recipe as a NeMo plugin.

Importing the package registers it with NeMo, once per process (see :mod:`rnnt_plugin.registration`):
- ``rnnt_plugin.`` joins NeMo's allow-list of ``_target_`` prefixes, so YAML configs and ``.nemo`` archives
  can name our classes (NeMo 3.0 refuses any other prefix);
- our optimiser and LR policy join NeMo's registries by name (NeMo refuses ``_target_`` for those);
- NeMo's telemetry (OneLogger) start-up warnings are silenced; NeMo's own warnings still show.
The registration happens as NeMo's registries load, so tools that never touch NeMo do not pay its import.
"""

import logging

from rnnt_plugin.registration import TARGET_PREFIX, install

__version__ = "0.1.0"
__all__ = ["TARGET_PREFIX", "register"]

# OneLogger, which NeMo imports, warns at every start that it is disabled and has no exporters.
logging.getLogger("nv_one_logger").setLevel(logging.ERROR)


def register() -> None:
    """Register the plugin with NeMo; safe to call any number of times (importing the package calls it)."""
    install()


register()
