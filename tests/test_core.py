"""The torch-only core (rnnt_plugin.core): it runs where NeMo cannot be imported, its builders are the YAML
configs' models, and on the same weights it gives the NeMo model's loss and greedy text.

Shape legend: B batch, S audio samples, U labels, V vocabulary incl. blank.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm
import soundfile as sf
import torch
from hydra import compose, initialize_config_dir

from rnnt_plugin.core import RNNT, mlperf_rnnt, small_cpu_rnnt
from rnnt_plugin.models import build_modules
from small_model import build_small_model

REPO = Path(__file__).resolve().parents[1]
REFUSE_NEMO = r"""
import sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("nemo", "lightning", "hydra", "omegaconf"):
            raise ImportError(f"{name} is not installed here")

sys.meta_path.insert(0, Refuse())
import torch
torch.manual_seed(0)
"""
CHECKS = r"""
grads = [p.grad for p in model.parameters() if p.requires_grad]
assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads), "missing or non-finite gradients"
assert len(hypotheses) == 2 and all(h.dtype == torch.int64 and h.dim() == 1 for h in hypotheses)
assert all(int(h.max()) < 63 for h in hypotheses if len(h)), "blank or out-of-range labels"
print("LOSS", float(loss))
print("IMPORTED", sorted(m for m in sys.modules if m.split(".")[0] in ("nemo", "lightning", "hydra", "omegaconf")))
"""


def _readme_example() -> str:
    """The README's torch-only example: its python block that imports rnnt_plugin.core."""
    blocks = [b.split("```", 1)[0] for b in (REPO / "README.md").read_text().split("```python\n")[1:]]
    return next(b for b in blocks if "from rnnt_plugin.core import" in b)


def test_readme_example_trains_and_decodes_where_nemo_cannot_be_imported():
    """features -> encoder -> joint -> loss -> backward, an optimiser step and greedy search, in a fresh
    interpreter in which NeMo, Lightning, Hydra and OmegaConf cannot be imported."""
    script = REFUSE_NEMO + _readme_example() + CHECKS
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines())
    assert lines["IMPORTED"] == "[]" and float(lines["LOSS"]) > 0


def _config(name: str):
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base=None):
        return compose(config_name=name)


def _dropouts(module: torch.nn.Module) -> list:
    return [m.p for m in module.modules() if hasattr(m, "p")] + \
        [m.dropout for m in module.modules() if isinstance(m, torch.nn.LSTM)]


@pytest.mark.parametrize("config, builder", [("baseline_v3-1023sp", mlperf_rnnt), ("small_cpu", small_cpu_rnnt)])
def test_builders_are_the_configs_models(config, builder):
    """Same parameters (names and shapes), dropouts, featurizer and SpecAugment settings as the YAML builds."""
    cfg = _config(config)
    vocab = 1023 if builder is mlperf_rnnt else 63
    core = builder(vocab)
    nemo = build_modules(cfg.model, vocab, names=("preprocessor", "spec_augment", "encoder", "decoder", "joint"))
    for name in ("encoder", "decoder", "joint"):
        ours = {k: v.shape for k, v in getattr(core, name).state_dict().items()}
        assert ours == {k: v.shape for k, v in nemo[name].state_dict().items()}, name
        assert _dropouts(getattr(core, name)) == _dropouts(nemo[name]), name
    settings = ("sample_rate", "win_length", "hop_length", "n_fft", "n_filt", "normalize", "preemph", "log",
                "log_zero_guard", "dither", "normalize_eps", "vtlp")
    fz = nemo["preprocessor"].log_mel
    assert {k: getattr(core.featurizer, k) for k in settings} == {k: getattr(fz, k) for k in settings}
    torch.testing.assert_close(core.featurizer.fb, fz.fb, rtol=0, atol=0)
    masks = ("freq_masks", "min_freq", "max_freq", "time_masks", "min_time", "max_time", "mask_value")
    assert {k: getattr(core.spec_augment, k) for k in masks} == {k: getattr(nemo["spec_augment"], k) for k in masks}


@pytest.fixture(scope="module")
def models(synth_corpus):
    """The NeMo small model (untrained, dither 0) and a core model loaded with its state_dict."""
    nemo = build_small_model(synth_corpus.tokenizer_dir)
    core = small_cpu_rnnt(nemo.tokenizer.vocab_size)
    core.featurizer.dither = 0.0
    core.load_state_dict(nemo.state_dict())  # strict: the same keys
    return nemo, core.eval()


def _batch(synth_corpus, tokenizer_dir):
    """Four held-out utterances: audio (B, S), lengths (B,), labels (B, U), label lengths (B,)."""
    import json

    entries = [json.loads(line) for line in open(synth_corpus.manifests["test-sentences"])][:4]
    waves = [torch.from_numpy(sf.read(e["audio_filepath"], dtype="float32")[0]) for e in entries]
    tokenizer = spm.SentencePieceProcessor(model_file=str(tokenizer_dir / "tokenizer.model"))
    ids = [torch.tensor(tokenizer.encode(e["text"])) for e in entries]
    pad = torch.nn.utils.rnn.pad_sequence
    return (pad(waves, batch_first=True), torch.tensor([len(w) for w in waves]), pad(ids, batch_first=True),
            torch.tensor([len(i) for i in ids]))


def test_same_loss_and_greedy_text_as_the_nemo_model(models, synth_corpus):
    nemo, core = models
    audio, audio_len, labels, label_len = _batch(synth_corpus, synth_corpus.tokenizer_dir)
    with torch.no_grad():
        encoded, encoded_len = nemo(input_signal=audio, input_signal_length=audio_len)  # (B, D, T')
        predicted, _, _ = nemo.decoder(targets=labels, target_length=label_len)  # (B, H, U + 1)
        logits = nemo.joint(encoder_outputs=encoded, decoder_outputs=predicted)  # (B, T', U + 1, V)
        nemo_loss = nemo.loss(log_probs=logits, targets=labels, input_lengths=encoded_len,
                              target_lengths=label_len)
        core_loss = core(audio, audio_len, labels, label_len)
        hypotheses = nemo.decoding.rnnt_decoder_predictions_tensor(encoder_output=encoded,
                                                                    encoded_lengths=encoded_len)
    assert float(core_loss) > 0
    torch.testing.assert_close(core_loss, nemo_loss, rtol=1e-6, atol=0)
    greedy = nemo.cfg.decoding.greedy
    ours = core.greedy_search(audio, audio_len, greedy.max_symbols, greedy.max_symbol_per_sample)
    assert [nemo.tokenizer.ids_to_text(h.tolist()) for h in ours] == [h.text for h in hypotheses]
    assert any(len(h) for h in ours)


def test_same_initial_weights_as_the_nemo_model_for_a_seed(models):
    nemo, _ = models  # built after torch.manual_seed(0)
    torch.manual_seed(0)
    core = small_cpu_rnnt(nemo.tokenizer.vocab_size)
    theirs = nemo.state_dict()
    for key, value in core.state_dict().items():
        torch.testing.assert_close(value, theirs[key], rtol=0, atol=0, msg=key)


def test_rnnt_refuses_a_prediction_network_of_another_vocabulary():
    model = small_cpu_rnnt(10)
    other = small_cpu_rnnt(11)
    with pytest.raises(ValueError, match="blank 11 must be the joint's last output 10"):
        RNNT(model.featurizer, model.encoder, other.decoder, model.joint)
