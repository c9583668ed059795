"""rnnt_plugin.models.convert: checkpoints laid out as the MLPerf reference's train.py saves them -> our .nemo.

Shape legend: B batch, S samples, T' encoder frames, U labels, V vocabulary incl. blank.

The reference layout is written here from the reference's ``rnnt/model.py`` (module names ``encoder.pre_rnn``,
``encoder.post_rnn``, ``prediction.embed`` with V - 1 rows, ``prediction.dec_rnn``, ``joint_enc``,
``joint_pred``, ``joint_net`` = ReLU, Dropout, Linear) and its ``Checkpointer.save`` dictionary.
"""

import argparse

import pytest
import torch

from rnnt_plugin.models.convert import ConversionError, convert_state_dict, main
from rnnt_plugin.models import MLPerfRNNTModel
from small_model import CONFIGS, build_small_model

# Our module prefix -> the reference's (small_cpu has joint dropout 0, so NeMo's joint_net is ReLU, Linear).
TO_REFERENCE = {
    "encoder.pre_lstm.lstm.": "encoder.pre_rnn.lstm.",
    "encoder.post_lstm.lstm.": "encoder.post_rnn.lstm.",
    "decoder.prediction.embed.": "prediction.embed.",
    "decoder.prediction.dec_rnn.lstm.": "prediction.dec_rnn.lstm.",
    "joint.enc.": "joint_enc.",
    "joint.pred.": "joint_pred.",
    "joint.joint_net.1.": "joint_net.2.",
}


def reference_layout(state: dict) -> dict:
    """Our state dict as the reference names and shapes it: no blank row in the embedding."""
    out = {}
    for name, value in state.items():
        (prefix,) = [p for p in TO_REFERENCE if name.startswith(p)]
        out[TO_REFERENCE[prefix] + name[len(prefix):]] = value.clone()
    embed = out["prediction.embed.weight"]
    assert embed[-1].abs().sum() == 0  # NeMo's blank row is the zero padding row
    out["prediction.embed.weight"] = embed[:-1]
    return out


def build(tokenizer_dir, seed: int) -> MLPerfRNNTModel:
    return build_small_model(tokenizer_dir, seed=seed)


def outputs(model, audio, audio_len, targets, target_len) -> torch.Tensor:
    """Logits (B, T', U + 1, V) of the whole model on one batch."""
    with torch.no_grad():
        enc, _ = model(input_signal=audio, input_signal_length=audio_len)
        pred, _, _ = model.decoder(targets=targets, target_length=target_len)
        return model.joint(encoder_outputs=enc, decoder_outputs=pred).clone()


@pytest.fixture(scope="module")
def models(synth_corpus):
    """Two models of different weights: the reference run's trained weights and its EMA weights."""
    return build(synth_corpus.tokenizer_dir, seed=1), build(synth_corpus.tokenizer_dir, seed=2)


@pytest.fixture(scope="module")
def checkpoint(models, tmp_path_factory):
    """A checkpoint as the reference's Checkpointer.save writes it."""
    raw, ema = models
    path = tmp_path_factory.mktemp("reference") / "RNN-T_epoch3_checkpoint.pt"
    torch.save({
        "epoch": 3, "step": 120, "best_wer": 0.5,
        "state_dict": reference_layout(raw.state_dict()),
        "ema_state_dict": reference_layout(ema.state_dict()),
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.004, "params": [0, 1]}]},
        "amp": None,
    }, path)
    return path


@pytest.fixture(scope="module")
def batch():
    gen = torch.Generator().manual_seed(0)
    audio = torch.randn(2, 12345, generator=gen) * 0.1  # (B, S)
    targets = torch.randint(0, 64, (2, 4), generator=gen)  # (B, U)
    return dict(audio=audio, audio_len=torch.tensor([12345, 9001]), targets=targets,
                target_len=torch.tensor([4, 2]))


def run_cli(checkpoint, tokenizer_dir, out, *extra) -> int:
    return main([str(checkpoint), "--config", str(CONFIGS / "small_cpu.yaml"), "--tokenizer-dir",
                 str(tokenizer_dir), "--out", str(out), *extra, "model.preprocessor.dither=0.0"])


@pytest.mark.parametrize("weights, source", [("auto", 1), ("raw", 0)])
def test_cli_converts_to_equal_outputs(models, checkpoint, batch, synth_corpus, tmp_path, weights, source):
    """auto takes the EMA weights when present; raw the trained ones. The .nemo gives the source's outputs."""
    out = tmp_path / "converted.nemo"
    assert run_cli(checkpoint, synth_corpus.tokenizer_dir, out, "--weights", weights) == 0
    converted = MLPerfRNNTModel.restore_from(str(out), map_location="cpu").eval()
    expected = models[source]
    for name, value in expected.state_dict().items():
        assert torch.equal(converted.state_dict()[name], value), name
    assert torch.equal(outputs(converted, **batch), outputs(expected, **batch))
    assert not torch.equal(outputs(converted, **batch), outputs(models[1 - source], **batch))


def test_ema_requested_but_absent(checkpoint, synth_corpus, tmp_path, capsys):
    no_ema = torch.load(checkpoint, weights_only=True)
    no_ema["ema_state_dict"] = None
    torch.save(no_ema, tmp_path / "no_ema.pt")
    assert run_cli(tmp_path / "no_ema.pt", synth_corpus.tokenizer_dir, tmp_path / "x.nemo", "--weights", "ema") == 1
    assert "'ema_state_dict' is missing or None" in capsys.readouterr().err
    assert not (tmp_path / "x.nemo").exists()


def test_checkpoint_with_pickled_objects_is_refused(checkpoint, synth_corpus, tmp_path, capsys):
    unsafe = torch.load(checkpoint, weights_only=True)
    unsafe["args"] = argparse.Namespace(lr=0.004)  # arbitrary objects need full unpickling
    torch.save(unsafe, tmp_path / "unsafe.pt")
    assert run_cli(tmp_path / "unsafe.pt", synth_corpus.tokenizer_dir, tmp_path / "x.nemo") == 1
    assert "not a torch checkpoint readable with weights_only=True" in capsys.readouterr().err


def test_errors_name_missing_unexpected_and_mismatched_keys(models):
    raw = models[0]
    target = raw.state_dict()
    reference = reference_layout(target)
    assert set(convert_state_dict(reference, target)) == set(target)

    bad = dict(reference)
    del bad["encoder.post_rnn.lstm.bias_hh_l0"]
    bad["encoder.extra_rnn.lstm.weight_ih_l0"] = torch.zeros(3)
    bad["joint_net.2.weight"] = bad["joint_net.2.weight"][:, :-1]
    with pytest.raises(ConversionError) as err:
        convert_state_dict(bad, target)
    message = str(err.value)
    assert "unexpected reference keys: encoder.extra_rnn.lstm.weight_ih_l0" in message
    assert "model keys with no reference value: encoder.post_lstm.lstm.bias_hh_l0 " in message
    assert "joint_net.2.weight (65, 255) -> joint.joint_net.1.weight (65, 256)" in message
