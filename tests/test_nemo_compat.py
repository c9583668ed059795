"""Archives written by earlier versions still restore and transcribe the same text.

``data/nemo_v0``: a ``.nemo`` written by commit c1533f4 (before the torch-only core; small_cpu at width 16 with a
32-piece tokenizer, random weights sharpened so that the text follows the audio), two utterances and the text that
version transcribed them to (``expected.json``).
"""

import json
from pathlib import Path

import soundfile as sf
import torch

from rnnt_plugin.core import build_rnnt
from rnnt_plugin.decoding.evaluation import transcribe_files
from rnnt_plugin.models import load_model

V0 = Path(__file__).parent / "data" / "nemo_v0"


def test_v0_archive_restores_and_transcribes_as_that_version_did():
    expected = json.loads((V0 / "expected.json").read_text())
    model = load_model(str(V0 / "model.nemo"))
    paths = [str(V0 / f"utterance{i}.wav") for i in range(len(expected["texts"]))]
    texts = transcribe_files(model, paths, batch_size=2)
    assert texts == expected["texts"] and all(texts)

    # The core model built from the archive's config (to_core), and one built by hand, print the same text.
    by_hand = build_rnnt(model.tokenizer.vocab_size, enc_hidden=16, pred_hidden=16, joint_hidden=16,
                         pre_lstm_layers=1, post_lstm_layers=1, pred_rnn_layers=1, enc_dropout=0.0, pred_dropout=0.0,
                         joint_dropout=0.0, freq_masks=1, dither=0.0)
    by_hand.load_state_dict(model.state_dict())
    waves = [torch.from_numpy(sf.read(p, dtype="float32")[0]) for p in paths]
    audio = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)  # (B, S)
    for core in (model.to_core(), by_hand.eval()):
        assert not core.training
        labels = core.greedy_search(audio, torch.tensor([len(w) for w in waves]), max_symbols_per_step=2)
        assert [model.tokenizer.ids_to_text(y.tolist()) for y in labels] == expected["texts"]
