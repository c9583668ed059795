"""Writes that a crash or Ctrl-C could cut short leave the previous file (or none), never half of one: the final
.nemo of a training run, transcribe.py --output, and the demo's summary and training curve. Each write is
interrupted half-way (a KeyboardInterrupt after half the bytes) and the old file must be there, whole, and no
temporary file left beside it."""

import importlib.util
import runpy
import sys
from pathlib import Path

import pytest
import torch

from rnnt_plugin.models import MLPerfRNNTModel, load_model
from rnnt_plugin.training.trainer import save_nemo

REPO = Path(__file__).resolve().parents[1]
V0 = Path(__file__).parent / "data" / "nemo_v0"
OLD = b"the previous file, whole\n"


def _cut_short(path) -> None:
    """Truncate what a writer just wrote to its first half and stop, as a crash or Ctrl-C would."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2])
    raise KeyboardInterrupt


def _write_text_cut_short(original):
    def write_text(self, *args, **kwargs):
        original(self, *args, **kwargs)
        _cut_short(self)
    return write_text


def _only_the_old_file(path: Path):
    assert path.read_bytes() == OLD
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


@pytest.fixture(scope="module")
def model():
    return load_model(str(V0 / "model.nemo"))


def test_final_nemo(model, tmp_path, monkeypatch):
    path = tmp_path / "model.nemo"
    save_nemo(model, path)  # complete: it restores to the same weights
    restored = load_model(str(path))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), restored.state_dict().values()))
    path.write_bytes(OLD)
    original = MLPerfRNNTModel.save_to
    monkeypatch.setattr(MLPerfRNNTModel, "save_to", lambda self, target: (original(self, target), _cut_short(target)))
    with pytest.raises(KeyboardInterrupt):
        save_nemo(model, path)
    _only_the_old_file(path)


def test_transcribe_output(tmp_path, monkeypatch):
    output = tmp_path / "hyps.json"
    output.write_bytes(OLD)
    monkeypatch.setattr(Path, "write_text", _write_text_cut_short(Path.write_text))
    monkeypatch.setattr(sys, "argv", ["transcribe.py", "--model", str(V0 / "model.nemo"), str(V0 / "utterance0.wav"),
                                      "--output", str(output)])
    with pytest.raises(KeyboardInterrupt):
        runpy.run_path(str(REPO / "examples" / "transcribe.py"), run_name="__main__")
    _only_the_old_file(output)


def test_demo_training_curve_and_summary(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("demo", REPO / "scripts" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    import matplotlib.figure

    png = tmp_path / "training_curve.png"
    curves = {"train_loss": [(1, 3.0), (2, 2.0)], "train_ctc_warmup_loss": [], "val_wer": [(2, 0.5)]}
    demo.plot_curve(curves, png)
    assert png.read_bytes().startswith(b"\x89PNG")
    png.write_bytes(OLD)
    savefig = matplotlib.figure.Figure.savefig
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig",
                        lambda self, target, **kwargs: (savefig(self, target, **kwargs), _cut_short(target)))
    with pytest.raises(KeyboardInterrupt):
        demo.plot_curve(curves, png)
    _only_the_old_file(png)

    summary = tmp_path / "summary" / "summary.json"
    summary.parent.mkdir()
    summary.write_bytes(OLD)
    monkeypatch.setattr(Path, "write_text", _write_text_cut_short(Path.write_text))
    with pytest.raises(KeyboardInterrupt):
        demo.fileio.write_text(summary, '{"wer_heldout_sentences": 0.1}\n')
    _only_the_old_file(summary)
