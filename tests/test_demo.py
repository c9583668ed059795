"""The CPU demo's own bookkeeping (scripts/demo.py); the demo itself runs as `make demo`."""

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo():
    spec = importlib.util.spec_from_file_location("demo", REPO / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_wer_by_voice_groups_espeak_and_keeps_each_natural_voice(demo, tmp_path):
    metadata = _jsonl(tmp_path / "metadata.jsonl", [
        {"utt_id": "1001-102-0000", "voice": "espeak:en-us+m3"},
        {"utt_id": "1002-102-0000", "voice": "espeak:en-gb+f2"},
        {"utt_id": "1105-102-0000", "voice": "flite:awb"},
        {"utt_id": "1105-100-0000", "voice": "flite:awb"},  # a training utterance: not in the predictions
    ])
    predictions = _jsonl(tmp_path / "test-sentences.predictions.json", [
        {"audio_filepath": "/c/test-sentences/1001/102/1001-102-0000.flac", "text": "turn on the light",
         "pred_text": "turn on a light", "word_errors": 1},
        {"audio_filepath": "/c/test-sentences/1002/102/1002-102-0000.flac", "text": "set a timer for ten minutes",
         "pred_text": "set a timer for ten minutes", "word_errors": 0},
        {"audio_filepath": "/c/test-sentences/1105/102/1105-102-0000.flac", "text": "play jazz",
         "pred_text": "play", "word_errors": 1},
    ])
    assert demo.wer_by_voice(predictions, metadata) == {"espeak": 0.1, "flite:awb": 0.5}


def test_wers_of_reads_evaluate_output_by_test_set(demo):
    output = "\n".join([
        "[NeMo I] restoring the model",
        json.dumps({"manifest": "/c/manifests/test-voice.json", "wer": 0.31234, "words": 10, "utterances": 2}),
        json.dumps({"manifest": "/c/manifests/test-sentences.json", "wer": 0.081, "words": 10, "utterances": 2}),
    ])
    assert demo.wers_of(output) == {"wer_heldout_voice": 0.3123, "wer_heldout_sentences": 0.081}
