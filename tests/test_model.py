"""MLPerfRNNTModel through NeMo's machinery: stage shapes, .nemo round trip, export, transcribe(), decoding.

Shape legend: B batch, S audio samples, F mel features, T feature frames, T' encoder frames (T / 6),
H encoder width, P prediction width, U labels, V vocabulary incl. blank.

One small model (configs/small_cpu.yaml, dither 0 so that features are deterministic, untrained weights) is
built once for the module from the shared ``synth_corpus`` tokenizer. Its ``.nemo`` is restored in one
subprocess that starts as the module starts and runs beside the other tests (one NeMo import costs 15-35 s):
the subprocess first tries to restore while ``rnnt_plugin`` cannot be imported (as if not installed), then
imports ``rnnt_plugin`` and restores the archive for real.
"""

import copy
import inspect
import json
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf
import torch
from omegaconf import open_dict

from small_model import build_small_model


HOP = 160  # samples per 10 ms feature frame at 16 kHz
SUBSAMPLING = 6  # feature frames per encoder frame: splice x3, stack-time x2
CUT = (0, 1001, 4321)  # samples cut from the end of each utterance: odd lengths, different batch padding
TOKENIZER_PROBE = "turn the lights on"
MAX_SYMBOLS = 2  # pieces per frame: the untrained model emits as many as allowed, and decoding time grows with them
DECODED_FRAMES = 6  # encoder frames per utterance given to the searches: beam cost grows with frames x beam


def stage_outputs(model, audio, audio_len, targets, target_len) -> dict:
    """Every stage of the model on one batch; also run, from its source, in the restoring subprocess.

    audio (B, S) float, audio_len (B,) int64, targets (B, U) int64, target_len (B,) int64.
    """
    with torch.no_grad():
        feats, feat_len = model.preprocessor(input_signal=audio, length=audio_len)  # (B, F, T), (B,)
        enc, enc_len = model.encoder(audio_signal=feats, length=feat_len)  # (B, H, T'), (B,)
        pred, pred_len, _ = model.decoder(targets=targets, target_length=target_len)  # (B, P, U + 1), (B,)
        logits = model.joint(encoder_outputs=enc, decoder_outputs=pred)  # (B, T', U + 1, V)
        hyps = model.decoding.rnnt_decoder_predictions_tensor(encoder_output=enc, encoded_lengths=enc_len)
    tensors = dict(feats=feats, feat_len=feat_len, enc=enc, enc_len=enc_len, pred=pred, pred_len=pred_len,
                   logits=logits)
    # clone(): NeMo's typecheck tags its tensors with a NeuralType, which torch.load(weights_only=True) refuses.
    return {**{k: v.clone() for k, v in tensors.items()}, "texts": [h.text for h in hyps]}


RESTORE_SCRIPT = """
import sys
import torch

nemo_path, batch_path, out_path = sys.argv[1:4]
sys.modules["rnnt_plugin"] = None  # as if the plugin were not installed: importing it fails
from nemo.collections.asr.models import ASRModel

TOKENIZER_PROBE = {probe!r}
try:
    ASRModel.restore_from(nemo_path, map_location="cpu")
    print("RESTORED WITHOUT PLUGIN")
except Exception as e:
    print("ERROR WITHOUT PLUGIN:", type(e).__name__, e)

del sys.modules["rnnt_plugin"]
import rnnt_plugin  # noqa: E402,F401

model = ASRModel.restore_from(nemo_path, map_location="cpu").eval()
print("CLASS", type(model).__module__, type(model).__qualname__)
{stage_outputs}
outputs = stage_outputs(model, **torch.load(batch_path, weights_only=True))
outputs["tokenizer_ids"] = model.tokenizer.text_to_ids(TOKENIZER_PROBE)
torch.save(outputs, out_path)
"""


def odd_length_batch(manifest, tokenizer) -> dict:
    """Three dev utterances cut to odd lengths: audio (B, S), lengths (B,), targets (B, U), target lengths (B,)."""
    entries = [json.loads(line) for line in open(manifest, encoding="utf-8")][:3]
    waves = [sf.read(e["audio_filepath"], dtype="float32")[0] for e in entries]
    waves = [w[: len(w) - cut - (len(w) - cut + 1) % 2] for w, cut in zip(waves, CUT)]
    assert all(len(w) % 2 == 1 for w in waves)
    audio = torch.zeros(len(waves), max(map(len, waves)))
    for i, w in enumerate(waves):
        audio[i, : len(w)] = torch.from_numpy(w)
    ids = [tokenizer.encode(e["text"]) for e in entries]
    targets = torch.full((len(ids), max(map(len, ids))), 0, dtype=torch.int64)
    for i, seq in enumerate(ids):
        targets[i, : len(seq)] = torch.tensor(seq)
    lengths = torch.tensor([len(w) for w in waves])
    return dict(audio=audio, audio_len=lengths, targets=targets, target_len=torch.tensor([len(s) for s in ids]))


@pytest.fixture(scope="module")
def tokenizer_dir(synth_corpus, tmp_path_factory):
    """A copy of the corpus tokenizer, which the round trip deletes after ``save_to``."""
    path = tmp_path_factory.mktemp("model") / "tokenizer"
    shutil.copytree(synth_corpus.tokenizer_dir, path)
    return path


@pytest.fixture(scope="module")
def batch(synth_corpus):
    import sentencepiece as spm

    tokenizer = spm.SentencePieceProcessor(model_file=str(synth_corpus.tokenizer_dir / "tokenizer.model"))
    return odd_length_batch(synth_corpus.manifests["dev"], tokenizer)


@pytest.fixture(scope="module")
def model(tokenizer_dir):
    return build_small_model(tokenizer_dir, f"model.decoding.greedy.max_symbols={MAX_SYMBOLS}")


@pytest.fixture(scope="module")
def expected(model, batch):
    """Stage outputs of the model as built, before any test changes its decoding or exports it."""
    return stage_outputs(model, **batch)


@pytest.fixture(scope="module", autouse=True)
def restore_job(model, tokenizer_dir, batch, expected, tmp_path_factory):
    """Save the ``.nemo``, delete the tokenizer files, and start the restoring subprocess in the background."""
    work = tmp_path_factory.mktemp("roundtrip")
    model.save_to(str(work / "model.nemo"))
    shutil.rmtree(tokenizer_dir)  # the restored model can only use the archive's copy
    torch.save({k: v.clone() for k, v in batch.items()}, work / "batch.pt")
    script = RESTORE_SCRIPT.replace("{stage_outputs}", inspect.getsource(stage_outputs)).replace(
        "{probe!r}", repr(TOKENIZER_PROBE))
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(work / "model.nemo"), str(work / "batch.pt"), str(work / "out.pt")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    yield proc, work / "out.pt"
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


def test_stage_shapes_and_lengths_for_odd_lengths(model, batch, expected):
    lengths = batch["audio_len"]
    frames = (lengths + HOP - 1) // HOP  # ceil(S / hop)
    enc_frames = (((frames + 2) // 3) + 1) // 2  # ceil(ceil(T / 3) / 2)
    vocab = model.tokenizer.vocab_size + 1
    batch_size, max_u = batch["targets"].shape
    assert torch.equal(expected["feat_len"], frames)
    assert expected["feats"].shape == (batch_size, 80, batch["audio"].shape[1] // HOP + 1)
    for i, n in enumerate(frames):
        assert expected["feats"][i, :, n:].abs().sum() == 0  # padding frames are zero
    assert torch.equal(expected["enc_len"], enc_frames)
    assert expected["enc"].shape == (batch_size, 320, -(-expected["feats"].shape[2] // SUBSAMPLING))
    assert model.encoder.subsampling_factor == SUBSAMPLING
    assert expected["pred"].shape == (batch_size, 256, max_u + 1)  # start-of-sequence (blank) first
    assert torch.equal(expected["pred_len"], batch["target_len"])
    assert expected["logits"].shape == (batch_size, expected["enc"].shape[2], max_u + 1, vocab)
    assert torch.isfinite(expected["logits"]).all()
    # The model's own forward() gives the same encoder output as the stages one by one.
    with torch.no_grad():
        enc, enc_len = model(input_signal=batch["audio"], input_signal_length=batch["audio_len"])
    assert torch.equal(enc, expected["enc"]) and torch.equal(enc_len, expected["enc_len"])


def test_transcribe_wav_files(model, batch, expected, tmp_path):
    """transcribe() on wav files returns one text each: the greedy decoding of the same audio."""
    paths = []
    for i, n in enumerate(batch["audio_len"].tolist()):
        paths.append(str(tmp_path / f"utt{i}.wav"))
        sf.write(paths[-1], batch["audio"][i, :n].numpy(), 16000, subtype="FLOAT")  # float32: the same samples
    hyps = model.transcribe(paths, batch_size=2, verbose=False)
    texts = [h.text for h in hyps]
    assert all(isinstance(t, str) for t in texts)
    assert texts == expected["texts"]
    assert any(texts)  # the untrained model emits some pieces


BEAM1_MAX_SYMBOLS = 5  # NeMo's beam search of size 1 runs its greedy search, which emits <= 5 pieces a frame
DECODING = {
    "greedy": dict(strategy="greedy"),
    "greedy_batch": dict(strategy="greedy_batch"),
    "rnnt_plugin_greedy": dict(strategy="rnnt_plugin_greedy"),
    "beam1": dict(strategy="beam", beam_size=1),
    "beam4": dict(strategy="beam", beam_size=4),
    "maes": dict(strategy="maes", beam_size=4),
    "alsd": dict(strategy="alsd", beam_size=4),
}


def test_decoding_strategies(model, expected):
    """Each strategy decodes the first DECODED_FRAMES encoder frames; beam size 1 gives the greedy result.

    The untrained model emits the most pieces a frame allows (BEAM1_MAX_SYMBOLS), so the texts are not empty.
    """
    enc = expected["enc"][:, :, :DECODED_FRAMES]  # (B, H, 6)
    enc_len = expected["enc_len"].clamp(max=DECODED_FRAMES)  # (B,)
    original = copy.deepcopy(model.cfg.decoding)
    results = {}
    try:
        for name, spec in DECODING.items():
            cfg = copy.deepcopy(original)
            with open_dict(cfg):
                cfg.strategy = spec["strategy"]
                cfg.greedy.max_symbols = BEAM1_MAX_SYMBOLS
                cfg.beam = dict(beam_size=spec.get("beam_size", 1), return_best_hypothesis=True,
                                maes_num_steps=2, maes_expansion_gamma=2.3, alsd_max_target_len=1.0)
            model.change_decoding_strategy(cfg, verbose=False)
            with torch.no_grad():
                hyps = model.decoding.rnnt_decoder_predictions_tensor(encoder_output=enc, encoded_lengths=enc_len)
            assert len(hyps) == 3, name
            assert all(isinstance(h.text, str) for h in hyps), name
            results[name] = [(h.text, h.y_sequence.tolist()) for h in hyps]
    finally:
        model.change_decoding_strategy(original, verbose=False)
    assert results["greedy"] == results["greedy_batch"] == results["rnnt_plugin_greedy"]
    assert results["beam1"] == results["greedy"]
    assert all(seq for _, seq in results["greedy"])
    for name in ("beam4", "maes", "alsd"):
        assert any(seq for _, seq in results[name]), name  # the beams emit pieces too


def export_inputs(model):
    """Encoder and decoder+joint inputs at a batch size and length other than NeMo's export examples."""
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(3, 80, 101, generator=gen)  # (B, F, T): T = 101, not a multiple of 6
    feat_len = torch.tensor([101, 77, 50])
    targets = torch.randint(0, model.tokenizer.vocab_size, (3, 5), generator=gen, dtype=torch.int32)  # (B, U)
    target_len = torch.tensor([5, 3, 1], dtype=torch.int32)
    layers, width = model.decoder.pred_rnn_layers, model.decoder.pred_hidden
    state = torch.randn(2, layers, 3, width, generator=gen)  # h and c, each (layers, B, P)
    return feats, feat_len, targets, target_len, state


def torch_reference(model, feats, feat_len, targets, target_len, state):
    """PyTorch outputs of the exported graphs: encoder (B, H, T'), logits (B, T', U, V), states (layers, B, P)."""
    with torch.no_grad():
        enc, enc_len = model.encoder.forward_chunk(feats, feat_len, None)[:2]
        g, (h, c) = model.decoder.predict(targets.long(), state=[state[0], state[1]], add_sos=False)  # (B, U, P)
        logits = model.joint.joint(enc.transpose(1, 2), g)  # (B, T', U, V)
    return enc, enc_len, logits, h, c


def test_export_onnx_and_torchscript_match_pytorch(model, batch, expected, tmp_path):
    params_before = {n: p.detach().clone() for n, p in model.named_parameters()}
    inputs = export_inputs(model)
    enc, enc_len, logits, h, c = torch_reference(model, *inputs)
    feats, feat_len, targets, target_len, state = inputs
    model.export(str(tmp_path / "model.onnx"))
    model.export(str(tmp_path / "model.ts"))

    encoder = ort.InferenceSession(str(tmp_path / "encoder-model.onnx"), providers=["CPUExecutionProvider"])
    out, out_len = encoder.run(None, {"audio_signal": feats.numpy(), "length": feat_len.numpy()})
    np.testing.assert_allclose(out, enc.numpy(), atol=1e-5, rtol=1e-4)
    np.testing.assert_array_equal(out_len, enc_len.numpy())
    dec_joint = ort.InferenceSession(str(tmp_path / "decoder_joint-model.onnx"), providers=["CPUExecutionProvider"])
    names = [i.name for i in dec_joint.get_inputs()]
    assert names == ["encoder_outputs", "targets", "target_length", "input_states_1", "input_states_2"]
    onnx_logits, onnx_len, onnx_h, onnx_c = dec_joint.run(None, dict(zip(names, [
        enc.numpy(), targets.numpy(), target_len.numpy(), state[0].numpy(), state[1].numpy()])))
    np.testing.assert_allclose(onnx_logits, logits.numpy(), atol=1e-5, rtol=1e-4)
    np.testing.assert_array_equal(onnx_len, target_len.numpy())
    np.testing.assert_allclose(onnx_h, h.numpy(), atol=1e-5)
    np.testing.assert_allclose(onnx_c, c.numpy(), atol=1e-5)

    ts_encoder = torch.jit.load(str(tmp_path / "encoder-model.ts"))
    ts_dec_joint = torch.jit.load(str(tmp_path / "decoder_joint-model.ts"))
    with torch.no_grad():
        ts_out, ts_len = ts_encoder(feats, feat_len)
        ts_logits, ts_pred_len, ts_h, ts_c = ts_dec_joint(enc, targets, target_len, state[0], state[1])
    torch.testing.assert_close(ts_out, enc, atol=1e-5, rtol=1e-4)
    assert torch.equal(ts_len, enc_len)
    torch.testing.assert_close(ts_logits, logits, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close((ts_h, ts_c), (h, c), atol=1e-5, rtol=1e-4)

    # Export leaves the model as it was: same weights, trainable, decoder prepends the start symbol again.
    for name, p in model.named_parameters():
        assert p.requires_grad, name
        assert torch.equal(p, params_before[name]), name
    after = stage_outputs(model, **batch)
    assert torch.equal(after["pred"], expected["pred"]) and torch.equal(after["logits"], expected["logits"])


def test_nemo_roundtrip_in_fresh_process(model, restore_job, expected):
    """Restored in a new process after ``import rnnt_plugin``: same class, same outputs, tokenizer from the archive.

    Without the plugin NeMo refuses the archive's target before anything of ours can run, so the message is
    NeMo's UnsafeTargetError naming ``rnnt_plugin.models.rnnt.MLPerfRNNTModel``.
    """
    proc, out_path = restore_job
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
    assert ("ERROR WITHOUT PLUGIN: UnsafeTargetError Instantiation of unsafe target "
            "'rnnt_plugin.models.rnnt.MLPerfRNNTModel' is blocked") in stdout, stdout[-3000:]
    assert "CLASS rnnt_plugin.models.rnnt MLPerfRNNTModel" in stdout, stdout[-3000:]
    restored = torch.load(out_path, weights_only=True)
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(restored[key], value), key
        else:
            assert restored[key] == value, key
    assert restored["tokenizer_ids"] == model.tokenizer.text_to_ids(TOKENIZER_PROBE)
