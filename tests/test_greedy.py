"""The plugin's batched greedy search: NeMo's per-utterance ``greedy`` hypotheses, limits, strategy name, timestamps.

Shape legend: B batch, D encoder features, T encoder frames, V vocabulary incl. blank.

Two models: a tiny one trained for a few seconds on part of ``synth_corpus`` plus utterances of words separated
by known silences (for timestamps), so that its outputs are real words; and an untrained one whose blank logit
is lowered until it emits 1-3 labels per frame.
"""

import json

import jiwer
import pytest
import soundfile as sf
import torch
from omegaconf import open_dict

from rnnt_plugin.core.greedy import GreedyNet, greedy_search
from rnnt_plugin.decoding.greedy import PLUGIN_GREEDY_STRATEGY, PluginGreedyRNNTInfer
from rnnt_plugin.models import MLPerfRNNTModel
from small_model import GAP_SECONDS, build_model, trained_model

FRAME_SECONDS = 0.06


def encode(model, signals):
    """Encoder output (B, D, T) and lengths (B,) of a list of (S,) signals."""
    audio = torch.nn.utils.rnn.pad_sequence([torch.as_tensor(s) for s in signals], batch_first=True)
    with torch.no_grad():
        return model(input_signal=audio, input_signal_length=torch.tensor([len(s) for s in signals]))


def nemo_greedy(model, encoded, encoded_len, max_symbols=30):
    """NeMo's per-utterance greedy hypotheses on the same model (whose decoding is then restored)."""
    saved = model.cfg.decoding.copy()
    cfg = model.cfg.decoding.copy()
    with open_dict(cfg):
        cfg.strategy = "greedy"
        cfg.greedy.max_symbols = max_symbols
    model.change_decoding_strategy(cfg, verbose=False)
    try:
        return model.decoding.rnnt_decoder_predictions_tensor(encoded, encoded_len, return_hypotheses=True)
    finally:
        model.change_decoding_strategy(saved, verbose=False)


def ours(model, encoded, encoded_len, max_symbols=30, max_symbol_per_sample=300):
    infer = PluginGreedyRNNTInfer(model.decoder, model.joint, model.decoding.blank_id, max_symbols,
                                  max_symbol_per_sample)
    return infer(encoder_output=encoded, encoded_lengths=encoded_len)[0]


def assert_same_hypotheses(mine, theirs):
    assert len(mine) == len(theirs)
    for b, (a, n) in enumerate(zip(mine, theirs)):
        assert a.y_sequence.tolist() == n.y_sequence.tolist(), b
        assert list(a.timestamp) == list(n.timestamp), b
        assert a.score == pytest.approx(n.score, rel=1e-4, abs=1e-3), b


@pytest.fixture(scope="module")
def trained(synth_corpus):
    return trained_model(str(synth_corpus.tokenizer_dir), str(synth_corpus.manifests["train"]))


def test_trained_model_same_hypotheses_as_nemo_greedy(trained, synth_corpus):
    model, utterances = trained
    dev = [sf.read(json.loads(line)["audio_filepath"], dtype="float32")[0]
           for line in open(synth_corpus.manifests["dev"], encoding="utf-8")]
    encoded, encoded_len = encode(model, [u[0] for u in utterances] + dev)
    mine = ours(model, encoded, encoded_len)
    assert_same_hypotheses(mine, nemo_greedy(model, encoded, encoded_len))
    texts = [model.tokenizer.ids_to_text(h.y_sequence.tolist()) for h in mine[: len(utterances)]]
    wer = jiwer.wer([u[1] for u in utterances], texts)
    assert wer < 0.5, list(zip(texts, [u[1] for u in utterances]))  # it learned real words


def biased_random_model(tokenizer_dir, encoded, lengths, emit_per_frame=(1.0, 3.0)):
    """Untrained model whose blank logit is lowered until greedy emits 1-3 labels per frame on ``encoded``."""
    model = build_model(tokenizer_dir, hidden=(64, 64, 64))
    bias = model.joint.joint_net[-1].bias
    step, direction = 0.5, 0
    with torch.no_grad():
        for _ in range(60):
            hyps = ours(model, encoded, lengths, max_symbol_per_sample=None)
            rate = sum(len(h.y_sequence) for h in hyps) / int(lengths.sum())
            if emit_per_frame[0] <= rate <= emit_per_frame[1]:
                return model
            new_direction = 1 if rate > emit_per_frame[1] else -1
            step = step / 2 if direction and new_direction != direction else step  # bisect once bracketed
            direction = new_direction
            bias[-1] += direction * step
    raise AssertionError(f"could not bias the blank logit to {emit_per_frame} labels per frame (last {rate})")


@pytest.mark.parametrize("max_symbols", [30, 2])
def test_random_weights_biased_to_emit_same_as_nemo(synth_corpus, max_symbols):
    torch.manual_seed(2)
    encoded = torch.randn(6, 64, 30)  # (B, D, T)
    lengths = torch.tensor([30, 29, 12, 1, 0, 25])
    model = biased_random_model(synth_corpus.tokenizer_dir, encoded, lengths)
    mine = ours(model, encoded, lengths, max_symbols, None)
    assert_same_hypotheses(mine, nemo_greedy(model, encoded, lengths, max_symbols))
    if max_symbols == 30:
        assert sum(len(h.y_sequence) for h in mine) >= int(lengths.sum())  # at least 1 label per frame
    else:
        most = [int(torch.bincount(torch.tensor(h.timestamp)).max()) for h in mine if h.timestamp]
        assert max(most) == 2  # the limit is reached and never passed


def test_max_symbol_per_sample_stops_at_a_frame_start(synth_corpus):
    """The reference's rule: an utterance stops at the first frame start where it holds more than the limit."""
    torch.manual_seed(3)
    encoded, lengths = torch.randn(3, 64, 30), torch.tensor([30, 20, 10])
    model = biased_random_model(synth_corpus.tokenizer_dir, encoded, lengths)
    limit = 7
    full, limited = ours(model, encoded, lengths, 30, None), ours(model, encoded, lengths, 30, limit)
    for f, lim in zip(full, limited):
        frames = torch.tensor(f.timestamp)
        if len(frames) <= limit:
            assert lim.y_sequence.tolist() == f.y_sequence.tolist()
            continue
        last_frame = int(frames[limit])  # the frame where the count passes the limit: finished, then stop
        keep = int((frames <= last_frame).sum())
        assert lim.y_sequence.tolist() == f.y_sequence[:keep].tolist()


def test_strategy_name_selects_plugin_search_and_round_trips(synth_corpus, tmp_path):
    model = build_model(synth_corpus.tokenizer_dir, hidden=(64, 64, 64))
    assert isinstance(model.decoding.decoding, PluginGreedyRNNTInfer)
    assert model.cfg.decoding.strategy == PLUGIN_GREEDY_STRATEGY
    cfg = model.cfg.decoding.copy()
    with open_dict(cfg):
        cfg.strategy = "greedy_batch"
    model.change_decoding_strategy(cfg, verbose=False)
    assert model.cfg.decoding.strategy == "greedy_batch"
    assert not isinstance(model.decoding.decoding, PluginGreedyRNNTInfer)
    with open_dict(cfg):
        cfg.strategy = PLUGIN_GREEDY_STRATEGY
        cfg.greedy.max_symbols = 4
        cfg.greedy.max_symbol_per_sample = 50
    model.change_decoding_strategy(cfg, verbose=False)
    assert model.decoding.decoding.max_symbols == 4 and model.decoding.decoding.max_symbol_per_sample == 50
    model.save_to(str(tmp_path / "m.nemo"))
    restored = MLPerfRNNTModel.restore_from(str(tmp_path / "m.nemo"), map_location="cpu")
    assert isinstance(restored.decoding.decoding, PluginGreedyRNNTInfer)
    assert restored.decoding.decoding.max_symbol_per_sample == 50


def test_bad_input_names_the_argument(synth_corpus):
    model = build_model(synth_corpus.tokenizer_dir, hidden=(64, 64, 64))
    net = GreedyNet(model.decoder, model.joint)
    with pytest.raises(ValueError, match="encoder_output"):
        greedy_search(net, torch.randn(2, 64), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="max_symbols_per_step"):
        greedy_search(net, torch.randn(1, 64, 2), torch.tensor([2]), max_symbols_per_step=0)
    with pytest.raises(TypeError, match="decoder"):
        GreedyNet(model.joint, model.joint)


def test_word_timestamps_follow_the_spoken_words(trained):
    """transcribe(timestamps=True) through the plugin's search, on words separated by known silences: NeMo's word
    offsets (first label's frame, last label's frame + 1) in seconds, in order, each word emitted before the
    silence after it ends. The tiny model is overfit and normalises over the whole utterance, so it may emit a
    word early (the statistics leak the future): only the late side is bounded; the offsets are printed."""
    model, utterances = trained
    spaced = [u for u in utterances if u[2] is not None][::2]
    hyps = model.transcribe([u[0] for u in spaced], batch_size=len(spaced), timestamps=True, verbose=False)
    checked = []
    for hyp, (audio, text, spans) in zip(hyps, spaced):
        words = hyp.timestamp["word"]
        assert [w["word"] for w in words] == hyp.text.split()
        frames = list(hyp.timestamp["timestep"])
        assert frames == sorted(frames) and (not frames or frames[-1] < len(audio) / 16000 / FRAME_SECONDS + 1)
        for w in words:
            assert w["start_offset"] in frames and w["end_offset"] - 1 in frames  # from the greedy alignment
            assert w["start"] == pytest.approx(w["start_offset"] * FRAME_SECONDS)
            assert w["end"] == pytest.approx(w["end_offset"] * FRAME_SECONDS)
            assert w["start_offset"] < w["end_offset"]
        assert [w["start"] for w in words] == sorted(w["start"] for w in words)
        if hyp.text != text:
            continue
        for w, (start, end) in zip(words, spans):
            assert w["start"] < end + GAP_SECONDS, (text, w, spans)
            checked.append((w["word"], round(w["start"] - start, 2), round(w["end"] - end, 2)))
    assert len(checked) >= 3, [h.text for h in hyps]
    print(f"\n(word, start - spoken start, end - spoken end) in seconds: {checked}")
