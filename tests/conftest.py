"""Shared session fixtures: a tiny synthetic corpus, synthesised and prepared once per test session.

``synth_corpus`` -> ``rnnt_plugin.data.librispeech.Prepared``:
    .data_dir       Path, the corpus root (LibriSpeech layout: <split>/<speaker>/<chapter>/...)
    .manifests      {"train": Path, "dev": Path, "test-sentences": Path}, NeMo JSON-lines manifests
    .tokenizer_dir  Path holding tokenizer.model + vocab.txt (unigram, 64 pieces)
    .report         Path of manifests/report.json
60 utterances (40 train, 10 dev, 10 test-sentences) of the commands domain, voices espeak en-us+m3,
espeak en-gb+f2 and flite kal, seed 0. Treat it as read-only: copy what a test needs to modify.

``test_sentence_files`` -> its 10 test-sentences audio paths, in manifest order.
"""

import json

import pytest

SYNTH_VOICES = ["espeak:en-us+m3", "espeak:en-gb+f2", "flite:kal"]
SYNTH_SPLITS = {"train": 40, "dev": 10, "test-sentences": 10}
SYNTH_VOCAB = 64


@pytest.fixture(scope="session")
def synth_corpus(tmp_path_factory):
    from rnnt_plugin.data import librispeech, synth

    root = tmp_path_factory.mktemp("synth_corpus")
    synth.generate_corpus(root, sum(SYNTH_SPLITS.values()), domain="commands", seed=0, jobs=2,
                          splits=SYNTH_SPLITS, voices=SYNTH_VOICES, progress=False)
    return librispeech.prepare(root, list(SYNTH_SPLITS), vocab_size=SYNTH_VOCAB, jobs=1)


@pytest.fixture(scope="session")
def test_sentence_files(synth_corpus):
    with open(synth_corpus.manifests["test-sentences"]) as f:
        return [json.loads(line)["audio_filepath"] for line in f]
