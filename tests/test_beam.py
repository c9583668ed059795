"""Beam search switched on for evaluation and transcription (rnnt_plugin/decoding/beam.py), on a small untrained
model; tests/test_learnability.py checks what it transcribes with a trained one."""

import argparse

import pytest
from nemo.collections.asr.parts.submodules.rnnt_beam_decoding import BeamRNNTInfer

from rnnt_plugin.decoding.beam import beam_size_argument, use_beam_search
from rnnt_plugin.decoding.greedy import PLUGIN_GREEDY_STRATEGY
from small_model import build_small_model


@pytest.fixture(scope="module")
def model(synth_corpus):
    return build_small_model(synth_corpus.tokenizer_dir)


def test_beam_search_replaces_greedy_search_and_the_config_records_it(model, test_sentence_files):
    files = test_sentence_files[:2]
    assert model.cfg.decoding.strategy == PLUGIN_GREEDY_STRATEGY
    use_beam_search(model, 3)
    assert model.cfg.decoding.strategy == "beam" and model.cfg.decoding.beam.beam_size == 3
    search = model.decoding.decoding
    assert isinstance(search, BeamRNNTInfer) and search.beam_size == 3 and search.search_type == "default"
    hypotheses = model.transcribe(files, batch_size=2, verbose=False)
    assert len(hypotheses) == len(files) and all(isinstance(h.text, str) for h in hypotheses)


def test_beam_size_must_be_at_least_two(model):
    with pytest.raises(ValueError, match="beam_size"):
        use_beam_search(model, 1)
    assert beam_size_argument("8") == 8
    for text in ("1", "four"):
        with pytest.raises(argparse.ArgumentTypeError):
            beam_size_argument(text)
