"""The plugin registers itself with NeMo on import, once."""

import subprocess
import sys

import pytest
from nemo.core.classes import common
from omegaconf import OmegaConf

import rnnt_plugin
from rnnt_plugin.models.encoder import StackTimeLSTMEncoder

ENCODER_YAML = """
_target_: rnnt_plugin.models.encoder.StackTimeLSTMEncoder
feat_in: 8
frame_splicing: 3
pre_lstm_layers: 1
stack_time_factor: 2
post_lstm_layers: 1
hidden_size: 16
dropout: 0.0
forget_gate_bias: 1.0
weights_init_scale: 0.5
hidden_hidden_bias_scale: 0.0
"""


def test_target_prefix_registered_once():
    rnnt_plugin.register()
    rnnt_plugin.register()
    assert common.ALLOWED_TARGET_PREFIXES.count(rnnt_plugin.TARGET_PREFIX) == 1


def test_module_from_yaml_target():
    module = StackTimeLSTMEncoder.from_config_dict(OmegaConf.create(ENCODER_YAML))
    assert isinstance(module, StackTimeLSTMEncoder)
    assert module.subsampling_factor == 6


def test_unregistered_prefix_is_refused():
    """Without the plugin NeMo refuses our targets: the registration is what makes them work."""
    code = (
        "from omegaconf import OmegaConf\n"
        "from nemo.core.classes.common import Serialization, UnsafeTargetError\n"
        f"cfg = OmegaConf.create('''{ENCODER_YAML}''')\n"
        "try:\n"
        "    Serialization.from_config_dict(cfg)\n"
        "except UnsafeTargetError as e:\n"
        "    print('refused:', e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "refused: Instantiation of unsafe target 'rnnt_plugin.models.encoder" in out.stdout, out.stderr[-2000:]


def test_registration_waits_for_nemo_and_quiets_its_startup():
    """``import rnnt_plugin`` alone does not import NeMo; importing NeMo afterwards finds the plugin registered."""
    code = (
        "import sys\n"
        "import rnnt_plugin\n"
        "print('nemo before:', any(m == 'nemo' or m.startswith('nemo.') for m in sys.modules))\n"
        "from nemo.core.classes import common\n"
        "from nemo.core.optim.lr_scheduler import AVAILABLE_SCHEDULERS\n"
        "from nemo.core.optim.optimizers import AVAILABLE_OPTIMIZERS\n"
        "from nemo.collections.asr.parts.preprocessing.perturb import perturbation_types\n"
        "print('registered:', 'rnnt_plugin.' in common.ALLOWED_TARGET_PREFIXES,\n"
        "      'mlperf_lamb' in AVAILABLE_OPTIMIZERS, 'MLPerfLRPolicy' in AVAILABLE_SCHEDULERS,\n"
        "      'polyphase_speed' in perturbation_types)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "nemo before: False" in out.stdout
    assert "registered: True True True True" in out.stdout
    assert "OneLogger" not in out.stderr + out.stdout
    assert "No exporters were provided" not in out.stderr + out.stdout


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
