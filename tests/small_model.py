"""Small models for tests: configs/small_cpu.yaml built in-process without data (untrained), at a chosen width,
and a tiny one trained for a few seconds on part of the shared corpus plus words separated by known silences."""

import functools
import json
from pathlib import Path

import soundfile as sf
import torch
from hydra import compose, initialize_config_dir

from rnnt_plugin.data import synth
from rnnt_plugin.decoding.greedy import PLUGIN_GREEDY_STRATEGY
from rnnt_plugin.models import MLPerfRNNTModel

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def build_small_model(tokenizer_dir, *overrides: str, seed: int = 0) -> MLPerfRNNTModel:
    """small_cpu with the tokenizer in ``tokenizer_dir``, dither 0 (deterministic features), no CTC warm-up,
    Hydra ``overrides`` on top; weights drawn after ``torch.manual_seed(seed)``; in eval mode."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = compose(config_name="small_cpu", overrides=[
            f"model.tokenizer.dir={tokenizer_dir}",
            "model.train_ds.manifest_filepath=null",
            "model.validation_ds.manifest_filepath=null",
            "model.preprocessor.dither=0.0",
            "model.ctc_warmup.steps=0",
            *overrides,
        ])
    torch.manual_seed(seed)
    return MLPerfRNNTModel(cfg=cfg.model).eval()


SAMPLE_RATE = 16000
TRAIN_UTTERANCES = 6  # corpus utterances the tiny model learns
TRAIN_STEPS = 50
GAP_SECONDS = 0.25  # silence between the words of the timestamp utterances
SPACED_SENTENCES = ["set a timer", "turn the lights on", "play some music"]


def build_model(tokenizer_dir, strategy=PLUGIN_GREEDY_STRATEGY, hidden=(160, 128, 128)) -> MLPerfRNNTModel:
    """A small model of configs/small_cpu.yaml (dither 0), encoder/prediction/joint widths ``hidden``."""
    return build_small_model(tokenizer_dir, f"model.model_defaults.enc_hidden={hidden[0]}",
                             f"model.model_defaults.pred_hidden={hidden[1]}",
                             f"model.model_defaults.joint_hidden={hidden[2]}", f"model.decoding.strategy={strategy}")


@functools.lru_cache(maxsize=None)
def trained_model(tokenizer_dir: str, train_manifest: str):
    """(model, utterances): the tiny model after TRAIN_STEPS full-batch Adam steps; utterances are
    (audio (S,), text, word spans or None) of everything it learned. Cached: test_greedy and test_streaming share it."""
    rows = [json.loads(line) for line in open(train_manifest, encoding="utf-8")][:TRAIN_UTTERANCES]
    utterances = [(sf.read(r["audio_filepath"], dtype="float32")[0], r["text"], None) for r in rows]
    for sentence in SPACED_SENTENCES:
        audio, spans = synth.spaced_words(sentence, "espeak:en-us+m3", GAP_SECONDS)
        utterances += [(audio, sentence, spans)] * 2  # twice: the words-apart style is harder to learn
    model = build_model(tokenizer_dir)
    audio = torch.nn.utils.rnn.pad_sequence([torch.from_numpy(u[0]) for u in utterances], batch_first=True)
    audio_len = torch.tensor([len(u[0]) for u in utterances])
    targets = [torch.tensor(model.tokenizer.text_to_ids(u[1])) for u in utterances]
    target_len = torch.tensor([len(t) for t in targets])
    targets = torch.nn.utils.rnn.pad_sequence(targets, batch_first=True)
    with torch.no_grad():
        feats, feat_len = model.preprocessor(input_signal=audio, length=audio_len)  # (B, F, T)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(TRAIN_STEPS):
        encoded, encoded_len = model.encoder(audio_signal=feats, length=feat_len)
        predicted, _, _ = model.decoder(targets=targets, target_length=target_len)
        logits = model.joint(encoder_outputs=encoded, decoder_outputs=predicted)  # (B, T, U + 1, V)
        loss = model.loss(log_probs=logits, targets=targets, input_lengths=encoded_len, target_lengths=target_len)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return model.eval(), utterances
