"""The MLPerf-size network built from configs/baseline_v3-1023sp.yaml has the reference's parameter count."""

from pathlib import Path

from hydra import compose, initialize_config_dir

from rnnt_plugin.models import build_modules

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
VOCAB = 1023  # sentencepiece pieces; blank makes 1024 outputs


def lstm_params(inputs: int, hidden: int) -> int:
    """Weights (4H x I, 4H x H) and two biases (4H each) of one LSTM layer."""
    return 4 * hidden * (inputs + hidden) + 2 * 4 * hidden


def linear_params(inputs: int, outputs: int) -> int:
    return inputs * outputs + outputs


def test_mlperf_parameter_count():
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = compose(config_name="baseline_v3-1023sp")
    modules = build_modules(cfg.model, VOCAB)
    counts = {name: sum(p.numel() for p in m.parameters()) for name, m in modules.items()}

    # Encoder: 240 spliced features -> 2 LSTM(1024) -> stack x2 (2048) -> 3 LSTM(1024).
    encoder = lstm_params(240, 1024) + lstm_params(1024, 1024) + lstm_params(2048, 1024) + 2 * lstm_params(1024, 1024)
    # Prediction: embedding of 1023 pieces + blank (a zero pad row) x 512, 2 LSTM(512).
    decoder = (VOCAB + 1) * 512 + 2 * lstm_params(512, 512)
    # Joint: encoder 1024->512, prediction 512->512, output 512->1024.
    joint = linear_params(1024, 512) + linear_params(512, 512) + linear_params(512, VOCAB + 1)
    assert counts == {"encoder": encoder, "decoder": decoder, "joint": joint}
    assert encoder == 42_967_040 and decoder == 4_726_784 and joint == 1_312_768
    assert sum(counts.values()) == 49_006_592  # the reference: 512 fewer, its embedding has no blank row
