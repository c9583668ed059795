"""ONNX deployment: exported networks match PyTorch, the onnxruntime greedy loop gives the model's text, and the
command-line round trip (export.py, then transcribe.py on the export directory) prints the .nemo's text.

The model is the small CPU config at toy width: random weights give no text or a symbol on every step, so its
prediction net and joint are fitted for a few seconds to the (random) encoder's outputs on the shortest training
utterances, which gives varied, non-empty text on the test sentences. Model and export are built once.
"""

import json
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnxruntime
import pytest
import soundfile
import torch

from rnnt_plugin.deploy import onnx_greedy
from rnnt_plugin.deploy.export import export_for_deployment
from rnnt_plugin.decoding.evaluation import read_manifest, transcribe_files
from rnnt_plugin.models import MLPerfRNNTModel
from small_model import build_small_model

REPO = Path(__file__).resolve().parents[1]
TRAIN_UTTERANCES = 20  # the shortest of the corpus' 40 training utterances
TRAIN_STEPS = 160  # full-batch Adam steps (~10 s)


def _trained_model(tokenizer_dir: Path, train: list) -> MLPerfRNNTModel:
    """Small CPU config at toy width; random encoder, prediction net and joint fitted to its outputs for a few s."""
    model = build_small_model(tokenizer_dir, "model.model_defaults.enc_hidden=64",
                              "model.model_defaults.pred_hidden=32", "model.model_defaults.joint_hidden=32")
    train = sorted(train, key=lambda u: u.duration)[:TRAIN_UTTERANCES]
    with torch.no_grad():
        audio, lengths = _load_batch([u.audio_filepath for u in train])
        encoded, encoded_len = model(input_signal=audio, input_signal_length=lengths)  # (B, D, T'), (B,)
    tokens = [torch.tensor(model.tokenizer.text_to_ids(u.text)) for u in train]
    targets = torch.nn.utils.rnn.pad_sequence(tokens, batch_first=True)  # (B, U)
    target_len = torch.tensor([len(t) for t in tokens])  # (B,)
    optimizer = torch.optim.Adam([*model.decoder.parameters(), *model.joint.parameters()], lr=0.02)
    for _ in range(TRAIN_STEPS):
        predicted, _, _ = model.decoder(targets=targets, target_length=target_len)  # (B, H, U + 1)
        logits = model.joint(encoder_outputs=encoded, decoder_outputs=predicted)  # (B, T', U + 1, V)
        loss = model.loss(log_probs=logits, targets=targets, input_lengths=encoded_len,
                          target_lengths=target_len).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _load_batch(paths):
    """(B, S) float32 zero-padded audio and (B,) int64 sample counts."""
    audio = [torch.from_numpy(soundfile.read(p, dtype="float32")[0]) for p in paths]
    return torch.nn.utils.rnn.pad_sequence(audio, batch_first=True), torch.tensor([len(a) for a in audio])


@pytest.fixture(scope="module")
def deployed(synth_corpus, tmp_path_factory):
    """The model, its .nemo, its ONNX export directory, the corpus' test audio and the model's text for it."""
    root = tmp_path_factory.mktemp("onnx")
    test_audio = [u.audio_filepath for u in read_manifest(synth_corpus.manifests["test-sentences"])]
    model = _trained_model(synth_corpus.tokenizer_dir, read_manifest(synth_corpus.manifests["train"]))
    nemo_path = root / "model.nemo"
    model.save_to(str(nemo_path))
    export_dir = root / "export"
    export_for_deployment(model, str(export_dir))
    texts = transcribe_files(model, test_audio, batch_size=4)  # NeMo's transcribe(), the config's rnnt_plugin_greedy
    return SimpleNamespace(model=model, nemo_path=nemo_path, export_dir=export_dir, test_audio=test_audio,
                           texts=texts)


def _session(path: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_export_directory_contents(deployed):
    files = sorted(p.name for p in deployed.export_dir.iterdir())
    assert files == sorted([onnx_greedy.PREPROCESSOR, onnx_greedy.ENCODER, onnx_greedy.DECODER_JOINT,
                            onnx_greedy.TOKENIZER, onnx_greedy.DEPLOYMENT_CONFIG, "onnx_greedy.py"])
    config = json.loads((deployed.export_dir / onnx_greedy.DEPLOYMENT_CONFIG).read_text())
    assert config == {
        "model_name": "MLPerfRNNTModel", "sample_rate": 16000, "min_samples": 257, "subsampling_factor": 6,
        "blank_id": deployed.model.tokenizer.vocab_size, "max_symbols_per_step": 30, "max_symbol_per_sample": 300,
        "dither": 0.0, "format": "onnx", "window_stride": 0.01,
    }
    assert deployed.model.preprocessor.log_mel.inference_dither == "fixed" and not deployed.model.training


def test_exported_networks_match_pytorch(deployed):
    """Another batch size and other lengths than the export examples: 3 utterances, padded to the longest."""
    model, root = deployed.model, deployed.export_dir
    audio, lengths = _load_batch(deployed.test_audio[3:6])
    with torch.no_grad():
        features, frames = model.preprocessor(input_signal=audio, length=lengths)  # (3, 80, T), (3,)
        encoded, encoded_len = model.encoder(audio_signal=features, length=frames)  # (3, D, T'), (3,)
    onnx_features, onnx_frames = _session(root / onnx_greedy.PREPROCESSOR).run(
        None, {"input_signal": audio.numpy(), "length": lengths.numpy()})
    np.testing.assert_array_equal(onnx_frames, frames.numpy())
    np.testing.assert_allclose(onnx_features, features.numpy(), atol=1e-4, rtol=1e-4)
    onnx_encoded, onnx_encoded_len = onnx_greedy.OnnxTranscriber(str(root)).encode(features.numpy(), frames.numpy())
    np.testing.assert_array_equal(onnx_encoded_len, encoded_len.numpy())
    np.testing.assert_allclose(onnx_encoded, encoded.numpy(), atol=1e-5, rtol=1e-4)

    # decoder+joint: 5 utterances, 4 encoder frames, one previous symbol each (blank included), random states
    gen = torch.Generator().manual_seed(1)
    batch, layers, hidden = 5, 1, model.decoder.pred_hidden
    enc = encoded[:, :, :4].repeat(2, 1, 1)[:batch]  # (5, D, 4)
    targets = torch.tensor([[3], [model.decoder.blank_idx], [0], [17], [63]], dtype=torch.int32)  # (5, 1)
    h, c = (torch.randn(layers, batch, hidden, generator=gen) for _ in range(2))  # (L, 5, H)
    with torch.no_grad():
        g, (h_new, c_new) = model.decoder.predict(targets.long(), state=[h, c], add_sos=False)  # (5, 1, H)
        logits = model.joint.joint(enc.transpose(1, 2), g)  # (5, 4, 1, V)
    onnx_logits, _, onnx_h, onnx_c = _session(root / onnx_greedy.DECODER_JOINT).run(None, {
        "encoder_outputs": enc.numpy(), "targets": targets.numpy(),
        "target_length": np.ones(batch, np.int32), "input_states_1": h.numpy(), "input_states_2": c.numpy(),
    })
    np.testing.assert_allclose(onnx_logits, logits.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(onnx_h, h_new.numpy(), atol=1e-5)
    np.testing.assert_allclose(onnx_c, c_new.numpy(), atol=1e-5)


def test_onnx_greedy_text_equals_model_transcribe(deployed):
    expected = deployed.texts
    assert all(expected) and len(set(expected)) >= 3, expected  # non-trivial text
    transcriber = onnx_greedy.OnnxTranscriber(str(deployed.export_dir), threads=1)
    assert transcriber.transcribe(deployed.test_audio, batch_size=3) == expected
    assert transcriber.transcribe(deployed.test_audio[::-1], batch_size=10) == expected[::-1]


def test_decoding_limits(deployed):
    """max_symbols_per_step acts as NeMo's max_symbols."""
    model, export_dir = deployed.model, str(deployed.export_dir)
    audio, lengths = _load_batch(deployed.test_audio[:4])
    with torch.no_grad():
        encoded, encoded_len = model(input_signal=audio, input_signal_length=lengths)  # (4, D, T'), (4,)
    encoded, encoded_len = encoded.numpy(), encoded_len.numpy()

    model.change_decoding_strategy(decoding_cfg=_greedy_cfg(model, max_symbols=1), verbose=False)
    try:
        with torch.no_grad():
            hyps = model.decoding.rnnt_decoder_predictions_tensor(torch.from_numpy(encoded),
                                                                  torch.from_numpy(encoded_len))
    finally:
        model.change_decoding_strategy(decoding_cfg=_greedy_cfg(model, max_symbols=30), verbose=False)
    one_per_frame = onnx_greedy.OnnxTranscriber(export_dir, max_symbols_per_step=1).decoder(encoded, encoded_len)
    assert one_per_frame == [h.y_sequence.tolist() for h in hyps]
    unlimited = onnx_greedy.OnnxTranscriber(export_dir).decoder(encoded, encoded_len)
    assert one_per_frame != unlimited  # the per-frame limit binds on this model


def test_nemo_and_export_agree_where_the_per_utterance_limit_binds(deployed):
    """Both searches stop an utterance at the start of a frame once it holds more than max_symbol_per_sample
    labels (the MLPerf reference's rule): the .nemo and its export print the same text where the limit binds."""
    model, limit = deployed.model, 3
    cfg = model.cfg.decoding.copy()
    cfg.greedy.max_symbol_per_sample = limit
    model.change_decoding_strategy(decoding_cfg=cfg, verbose=False)
    try:
        capped = transcribe_files(model, deployed.test_audio, batch_size=4)
    finally:
        model.change_decoding_strategy(decoding_cfg=model.cfg.decoding.copy(), verbose=False)
    exported = onnx_greedy.OnnxTranscriber(str(deployed.export_dir), max_symbol_per_sample=limit)
    assert exported.transcribe(deployed.test_audio) == capped
    audio = [soundfile.read(p, dtype="float32")[0] for p in deployed.test_audio]
    full, _ = onnx_greedy.OnnxTranscriber(str(deployed.export_dir)).align_audio(audio)
    ids, frames = exported.align_audio(audio)
    assert sum(len(f) > limit + 1 for f in full) >= 3, [len(f) for f in full]  # the limit binds on several
    for labels, at, unlimited in zip(ids, frames, full):
        assert labels == unlimited[: len(labels)]
        # stopped at the start of a frame, after passing the limit (not on reaching it), or not stopped early
        assert len(labels) == len(unlimited) or (len(labels) > limit and sum(t < at[-1] for t in at) <= limit)



def _greedy_cfg(model, max_symbols: int):
    """The model's decoding config (rnnt_plugin_greedy) with another max_symbols."""
    cfg = model.cfg.decoding.copy()
    cfg.greedy.max_symbols = max_symbols
    return cfg


def test_bad_inputs(deployed, tmp_path):
    transcriber = onnx_greedy.OnnxTranscriber(str(deployed.export_dir))
    soundfile.write(tmp_path / "8k.wav", np.zeros(8000, np.float32), 8000)
    soundfile.write(tmp_path / "short.wav", np.zeros(100, np.float32), 16000)
    (tmp_path / "text.wav").write_text("not audio")
    for name, message in [("8k.wav", "sample rate 8000"), ("short.wav", "100 samples"), ("text.wav", "not a readable")]:
        with pytest.raises(ValueError, match=message) as error:
            transcriber.transcribe([str(tmp_path / name)])
        assert name in str(error.value)
    with pytest.raises(ValueError, match="batch_size"):
        transcriber.transcribe(deployed.test_audio, batch_size=0)
    with pytest.raises(FileNotFoundError, match="export directory"):
        onnx_greedy.OnnxTranscriber(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="fmt"):
        export_for_deployment(deployed.model, str(tmp_path / "x"), fmt="tflite")


def _run_script(script: str, argv: list, monkeypatch, capsys) -> str:
    monkeypatch.setattr(sys, "argv", [script, *argv])
    runpy.run_path(str(REPO / "examples" / script), run_name="__main__")
    return capsys.readouterr().out


def test_cli_round_trip(deployed, tmp_path, monkeypatch, capsys):
    """export.py on the .nemo, then transcribe.py with the .nemo and with the export directory: same lines; and
    the export directory's own onnx_greedy.py, in a process that never imports torch or NeMo, prints them too."""
    export_dir = tmp_path / "exported"
    _run_script("export.py", [str(deployed.nemo_path), str(export_dir)], monkeypatch, capsys)
    assert json.loads((export_dir / onnx_greedy.DEPLOYMENT_CONFIG).read_text())["model_name"] == "model"
    paths = deployed.test_audio[:3]

    def lines(model_arg, *options):
        out = _run_script("transcribe.py", ["--model", model_arg, *options, *paths], monkeypatch, capsys).splitlines()
        assert out[-1].startswith("3 files") and "RTFx" in out[-1]
        return out[:-1]

    with_nemo = lines(str(deployed.nemo_path))
    assert with_nemo == lines(str(export_dir)) == lines(str(deployed.nemo_path))  # the same text every run
    assert with_nemo == [f"{path}\t{text}" for path, text in zip(paths, deployed.texts)]

    check = ("import runpy, sys; sys.argv = sys.argv[1:]; runpy.run_path(sys.argv[0], run_name='__main__'); "
             "assert not {'torch', 'nemo'} & set(sys.modules), 'torch or NeMo imported'")
    run = subprocess.run([sys.executable, "-c", check, str(export_dir / "onnx_greedy.py"), str(export_dir), *paths],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.splitlines() == with_nemo


def test_same_features_and_text_every_run_on_audio_with_digital_silence(deployed, tmp_path):
    """Exact zeros (0.2-0.6 s) in the middle of the test utterances, the recipe's dither (1e-5): the .nemo's features
    are the same in every run and batch, and so are the export's (to float rounding); its text is the same every
    run. (Text equality with the export is checked on the demo's trained model: this toy model's logits hold
    near-ties that float rounding can tip.)"""
    paths = []
    for i, path in enumerate(deployed.test_audio[:6]):
        audio, rate = soundfile.read(path, dtype="float32")
        middle, gap = len(audio) // 2, int(rate * (0.2 + 0.08 * i))
        silenced = np.concatenate([audio[:middle], np.zeros(gap, np.float32), audio[middle:]])
        paths.append(str(tmp_path / f"silenced{i}.wav"))
        soundfile.write(paths[-1], silenced, rate, subtype="FLOAT")
    model, export_dir = deployed.model, tmp_path / "export"
    model.preprocessor.dither = 1e-5
    try:
        first = transcribe_files(model, paths, batch_size=4)
        assert transcribe_files(model, paths, batch_size=4) == first
        export_for_deployment(model, str(export_dir))
        audio, lengths = _load_batch(paths)
        with torch.no_grad():
            features, frames = model.preprocessor(input_signal=audio, length=lengths)  # (6, 80, T), (6,)
            again, _ = model.preprocessor(input_signal=audio[2:], length=lengths[2:])  # another batch
    finally:
        model.preprocessor.dither = 0.0
    assert torch.equal(again[0, :, : frames[2]], features[2, :, : frames[2]])
    exported = onnx_greedy.OnnxTranscriber(str(export_dir))
    assert exported.config.dither == 1e-5
    onnx_features, onnx_frames = exported.features(audio.numpy(), lengths.numpy())
    assert np.array_equal(onnx_frames, frames.numpy())
    np.testing.assert_allclose(onnx_features, features.numpy(), rtol=0, atol=1e-4)


def test_transcribe_timestamps_output(deployed, tmp_path, monkeypatch, capsys):
    """--timestamps: the same text, each line followed by word[start-end], and the words in the JSON output match
    the text with increasing, 60 ms-frame times; the export directory (through transcribe.py and through its own
    onnx_greedy.py) gives the very same words and times as the .nemo (NeMo's timestamps=True)."""
    paths = deployed.test_audio[:3]

    def run(model_arg: str, output: Path):
        printed = _run_script("transcribe.py", ["--model", model_arg, "--timestamps", *paths,
                                                "--output", str(output)], monkeypatch, capsys).splitlines()
        return printed[:-1], [json.loads(line) for line in open(output)]

    printed, records = run(str(deployed.nemo_path), tmp_path / "nemo.json")
    assert printed[0::2] == [f"{path}\t{text}" for path, text in zip(paths, deployed.texts)]
    assert [r["pred_text"] for r in records] == deployed.texts[:3]
    for record, line in zip(records, printed[1::2]):
        words = record["words"]
        assert [w["word"] for w in words] == record["pred_text"].split()
        assert line == "\t" + " ".join(f"{w['word']}[{w['start']:.2f}-{w['end']:.2f}]" for w in words)
        for w in words:
            assert 0 <= w["start"] < w["end"] and abs(w["start"] / 0.06 - round(w["start"] / 0.06)) < 1e-6
        assert [w["start"] for w in words] == sorted(w["start"] for w in words)
    assert sum(len(r["words"]) for r in records) > 6 and any(w["end"] - w["start"] > 0.06
                                                             for r in records for w in r["words"])

    onnx_printed, onnx_records = run(str(deployed.export_dir), tmp_path / "onnx.json")
    assert onnx_printed == printed
    assert [r["words"] for r in onnx_records] == [r["words"] for r in records]
    onnx_greedy.main(["--timestamps", str(deployed.export_dir), *paths])
    assert capsys.readouterr().out.splitlines() == printed


def test_onnx_timestamps_need_window_stride(deployed, tmp_path):
    """An export directory written before deployment.json recorded window_stride still transcribes, and asks
    for a new export when word times are wanted."""
    old = tmp_path / "old"
    shutil.copytree(deployed.export_dir, old)
    config = json.loads((old / onnx_greedy.DEPLOYMENT_CONFIG).read_text())
    del config["window_stride"]
    (old / onnx_greedy.DEPLOYMENT_CONFIG).write_text(json.dumps(config))
    transcriber = onnx_greedy.OnnxTranscriber(str(old))
    assert transcriber.transcribe(deployed.test_audio[:2]) == deployed.texts[:2]
    with pytest.raises(ValueError, match="window_stride in deployment.json: export the model again"):
        transcriber.transcribe_with_timestamps(deployed.test_audio[:2])


def test_torchscript_export(deployed, tmp_path):
    """--format torchscript: the same three networks as TorchScript, matching the model; no decoding loop."""
    model = deployed.model
    config = export_for_deployment(model, str(tmp_path), fmt="torchscript")
    assert config.format == "torchscript"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([
        "preprocessor.ts", "encoder-model.ts", "decoder_joint-model.ts", onnx_greedy.TOKENIZER,
        onnx_greedy.DEPLOYMENT_CONFIG])
    audio, lengths = _load_batch(deployed.test_audio[:2])
    with torch.no_grad():
        features, frames = model.preprocessor(input_signal=audio, length=lengths)  # (2, 80, T), (2,)
        encoded, encoded_len = model.encoder(audio_signal=features, length=frames)  # (2, D, T'), (2,)
        ts_features, ts_frames = torch.jit.load(str(tmp_path / "preprocessor.ts"))(audio, lengths)
        pad = -features.shape[2] % model.encoder.subsampling_factor
        ts_encoded, ts_encoded_len = torch.jit.load(str(tmp_path / "encoder-model.ts"))(
            torch.nn.functional.pad(features, (0, pad)), frames)
    assert torch.equal(ts_frames, frames) and torch.equal(ts_encoded_len, encoded_len)
    torch.testing.assert_close(ts_features, features, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ts_encoded, encoded, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="format 'torchscript'"):
        onnx_greedy.OnnxTranscriber(str(tmp_path))
