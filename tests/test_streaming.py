"""Streaming transcription: chunked features equal the offline featurizer's; with the utterance's own
normalisation statistics the streamed text equals the offline text; running statistics cost some WER (printed).

Shape legend: S audio samples, F mel features, T feature frames.
"""

import json

import jiwer
import numpy as np
import pytest
import soundfile as sf
import torch

from rnnt_plugin.decoding.streaming import StreamingFeatures, transcribe_stream

from small_model import build_model, trained_model

CHUNKS = (0.5, 1.0)  # seconds: 0.5 s is not a whole number of 60 ms encoder frames


def read_split(manifest) -> list:
    rows = [json.loads(line) for line in open(manifest, encoding="utf-8")]
    return [(sf.read(r["audio_filepath"], dtype="float32")[0], r["text"]) for r in rows]


def offline_log_mel(featurizer, x: np.ndarray) -> torch.Tensor:
    """The offline featurizer's (F, T) log-mel before normalisation."""
    normalize, featurizer.normalize = featurizer.normalize, None
    try:
        with torch.no_grad():
            feats, _ = featurizer(torch.from_numpy(x)[None], torch.tensor([len(x)]))
    finally:
        featurizer.normalize = normalize
    return feats[0]


def utterance_stats(featurizer, x):
    """The per-feature mean (F,) and unbiased std (F,) the offline featurizer normalises ``x`` with."""
    feats = offline_log_mel(featurizer, x)
    return feats.mean(dim=1), feats.std(dim=1)


@pytest.mark.parametrize("piece", [1, 161, 960, 4321])
def test_chunked_features_equal_offline(synth_corpus, piece):
    featurizer = build_model(synth_corpus.tokenizer_dir, hidden=(64, 64, 64)).preprocessor.log_mel
    x = read_split(synth_corpus.manifests["dev"])[0][0][: 16000 + 37]  # odd length: a partial last hop
    stream = StreamingFeatures(featurizer)
    parts = [stream.push(x[i : i + piece]) for i in range(0, len(x), piece)] + [stream.finish()]
    streamed = torch.cat(parts, dim=1)  # (F, T)
    offline = offline_log_mel(featurizer, x)
    assert streamed.shape == offline.shape == (80, -(-len(x) // 160))
    torch.testing.assert_close(streamed, offline, atol=1e-4, rtol=1e-5)


def test_streaming_text_equals_offline_with_matched_normalisation(synth_corpus):
    model, _ = trained_model(str(synth_corpus.tokenizer_dir), str(synth_corpus.manifests["train"]))
    test = read_split(synth_corpus.manifests["train"])[:4] + read_split(synth_corpus.manifests["test-sentences"])
    offline = [h.text for h in model.transcribe([x for x, _ in test], batch_size=len(test), return_hypotheses=True,
                                                verbose=False)]
    assert sum(bool(t) for t in offline) >= len(test) // 2
    references = [text for _, text in test]
    running = {}
    for chunk in CHUNKS:
        for (x, _), text in zip(test, offline):
            partials = list(transcribe_stream(model, x, chunk, stats=utterance_stats(model.preprocessor.log_mel, x)))
            assert len(partials) == -(-len(x) // round(chunk * 16000)) + 1
            assert partials[-1] == text
            assert all(partials[-1].startswith(p.strip()) for p in partials)  # partial results only grow
        running[chunk] = [list(transcribe_stream(model, x, chunk))[-1] for x, _ in test]
    wer_offline = jiwer.wer(references, offline)
    for chunk, texts in running.items():
        wer = jiwer.wer(references, texts)
        print(f"\nchunk {chunk} s: WER offline {wer_offline:.3f}, streaming with running statistics {wer:.3f} "
              f"(+{wer - wer_offline:.3f})")
        assert wer < 1.5  # running statistics hurt, but the stream still decodes speech


def test_bad_input_names_the_argument(synth_corpus):
    model = build_model(synth_corpus.tokenizer_dir, hidden=(64, 64, 64))
    with pytest.raises(ValueError, match="chunk_seconds"):
        next(transcribe_stream(model, np.zeros(16000, dtype=np.float32), chunk_seconds=0.01))
    with pytest.raises(ValueError, match="audio"):
        next(transcribe_stream(model, np.zeros((2, 16000), dtype=np.float32)))
    with pytest.raises(ValueError, match="too short"):
        list(transcribe_stream(model, np.zeros(100, dtype=np.float32)))
