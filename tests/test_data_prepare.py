"""Preparation of a LibriSpeech-layout directory: manifests, tokenizer, report, and every kind of bad input."""

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from rnnt_plugin.data import librispeech
from rnnt_plugin.data.librispeech import PrepareError, prepare


def _copy(synth_corpus, dest, splits=("train", "dev")):
    for split in splits:
        shutil.copytree(synth_corpus.data_dir / split, dest / split)
    return dest


def _trans_lines(root, split):
    """{utt id: (trans file, 1-based line)} over a split."""
    where = {}
    for trans in sorted((root / split).glob("*/*/*.trans.txt")):
        for n, line in enumerate(trans.read_text().splitlines(), start=1):
            where[line.split(" ")[0]] = (trans, n)
    return where


def test_manifests_match_the_corpus(synth_corpus):
    from tests.conftest import SYNTH_SPLITS

    assert set(synth_corpus.manifests) == set(SYNTH_SPLITS)
    truth = {}
    for trans in synth_corpus.data_dir.glob("*/*/*/*.trans.txt"):
        for line in trans.read_text().splitlines():
            utt_id, words = line.split(" ", 1)
            truth[utt_id] = words.lower()
    for split, path in synth_corpus.manifests.items():
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(rows) == SYNTH_SPLITS[split] == synth_corpus.kept[split]
        for row in rows:
            audio = row["audio_filepath"]
            assert audio.startswith("/") and f"/{split}/" in audio
            assert row["text"] == truth[audio.rsplit("/", 1)[1][:-5]]
            assert row["duration"] == pytest.approx(sf.info(audio).duration, abs=1e-4)
    report = json.loads(synth_corpus.report.read_text())
    assert report["issues"] == [] and report["subsets"]["train"]["kept"] == SYNTH_SPLITS["train"]


def test_tokenizer_is_the_reference_kind_and_nemo_loads_it(synth_corpus):
    import sentencepiece as spm
    from nemo.collections.common.tokenizers import SentencePieceTokenizer

    from tests.conftest import SYNTH_VOCAB

    model_path = synth_corpus.tokenizer_dir / "tokenizer.model"
    sp = spm.SentencePieceProcessor(model_file=str(model_path))
    assert sp.get_piece_size() == SYNTH_VOCAB and sp.bos_id() == -1 and sp.eos_id() == -1
    vocab = (synth_corpus.tokenizer_dir / "vocab.txt").read_text().splitlines()
    assert len(vocab) == SYNTH_VOCAB - 1  # <unk> is not listed, as NeMo writes it
    dev_text = json.loads(synth_corpus.manifests["dev"].read_text().splitlines()[0])["text"]
    nemo_tok = SentencePieceTokenizer(str(model_path))
    assert nemo_tok.vocab_size == SYNTH_VOCAB
    assert nemo_tok.ids_to_text(nemo_tok.text_to_ids(dev_text)) == dev_text


def test_bad_input_is_reported_with_file_and_line_and_skipped(synth_corpus, tmp_path):
    root = _copy(synth_corpus, tmp_path / "data")
    where = _trans_lines(root, "train")
    ids = sorted(where)
    trans, _ = where[ids[0]]
    chapter = trans.parent
    lines = trans.read_text().splitlines()
    victims = [line.split(" ")[0] for line in lines[:6]]
    (chapter / f"{victims[0]}.flac").unlink()  # missing audio
    data = (chapter / f"{victims[1]}.flac").read_bytes()
    (chapter / f"{victims[1]}.flac").write_bytes(data[: len(data) // 2])  # corrupt (truncated) FLAC
    sf.write(chapter / f"{victims[2]}.flac", np.zeros(8000, dtype=np.int16), 8000)  # wrong sample rate
    lines[3] = victims[3]  # empty transcript
    lines[4] = f"{victims[4]} CAF\u00c9 AU LAIT"  # non-ASCII transcript
    lines[5] = f"99-{victims[5]}"  # malformed id
    lines.append(lines[6])  # duplicate id
    trans.write_text("\n".join(lines) + "\n")
    n_train = len(where)

    (root / "manifests").mkdir()
    (root / "manifests" / "train.json").write_text("old\n")
    with pytest.raises(PrepareError) as err:
        prepare(root, ["train", "dev"], vocab_size=32, strict=True)
    assert len(err.value.issues) == 7
    assert (root / "manifests" / "train.json").read_text() == "old\n"  # strict: nothing written
    assert not list(root.glob("tokenizer*"))

    result = prepare(root, ["train", "dev"], vocab_size=32)
    issues = json.loads(result.report.read_text())["issues"]
    got = {(i["line"], i["reason"].split(" ")[0] + " " + i["reason"].split(" ")[1]) for i in issues}
    assert all(i["file"] == str(trans) for i in issues)
    assert got == {(1, "missing audio"), (2, f"{victims[1]}: unreadable"), (3, f"{victims[2]}: sample"),
                   (4, "empty transcript"), (5, "non-ASCII transcript"), (6, "bad utterance"),
                   (len(lines), "duplicate utterance")}
    train_rows = result.manifests["train"].read_text().splitlines()
    assert len(train_rows) == result.kept["train"] == n_train - 6
    assert result.dropped == {"train": 7, "dev": 0}  # 7 transcript lines, one of them the duplicate
    assert not any(victims[k] in row for row in train_rows for k in range(6))


def test_duration_filter_applies_to_training_subsets_only(synth_corpus, tmp_path):
    root = _copy(synth_corpus, tmp_path / "data")
    durations = {s: [json.loads(r)["duration"] for r in synth_corpus.manifests[s].read_text().splitlines()]
                 for s in ("train", "dev")}
    limit = float(np.median(durations["train"]))
    result = prepare(root, ["train", "dev"], vocab_size=0, max_duration=limit)
    assert result.kept == {"train": sum(d <= limit for d in durations["train"]), "dev": len(durations["dev"])}
    assert result.tokenizer_dir is None
    report = json.loads(result.report.read_text())
    assert report["subsets"]["train"]["dropped_too_long"] == sum(d > limit for d in durations["train"])


def test_convert_wav_nested_layout_and_parallel_jobs(synth_corpus, tmp_path):
    root = _copy(synth_corpus, tmp_path / "data" / "LibriSpeech", splits=("dev",))
    result = prepare(tmp_path / "data", ["dev"], convert_wav=True, vocab_size=0, jobs=2)
    rows = [json.loads(r) for r in result.manifests["dev"].read_text().splitlines()]
    assert len(rows) == 10
    for row in rows:
        assert row["audio_filepath"].endswith(".wav") and "/wav/dev/" in row["audio_filepath"]
        wav, rate = sf.read(row["audio_filepath"], dtype="int16")
        flac, _ = sf.read(next(root.glob(f"dev/*/*/{row['audio_filepath'].rsplit('/', 1)[1][:-4]}.flac")),
                          dtype="int16")
        assert rate == 16000 and np.array_equal(wav, flac)


def test_argument_errors(synth_corpus, tmp_path):
    with pytest.raises(ValueError, match="subset 'train-clean-100'"):
        prepare(tmp_path, ["train-clean-100"])
    with pytest.raises(ValueError, match="train_subsets"):
        prepare(synth_corpus.data_dir, ["dev"], train_subsets=["train"])
    with pytest.raises(ValueError, match="need training subsets"):
        prepare(synth_corpus.data_dir, ["dev"], vocab_size=16)
    with pytest.raises(ValueError, match="texts"):
        librispeech.train_tokenizer([], tmp_path / "tok")


def test_manifest_check_reports_bad_lines(synth_corpus, tmp_path, capsys):
    good = synth_corpus.manifests["dev"].read_text().splitlines()
    bad = tmp_path / "m.json"
    bad.write_text("\n".join([good[0], "{not json", '["a"]', '{"audio_filepath": "x.flac", "text": "a"}',
                              json.dumps({"audio_filepath": str(tmp_path / "gone.flac"), "duration": 1.0,
                                          "text": "hi"}), good[1]]) + "\n")
    rows, issues = librispeech.read_manifest(bad)
    assert len(rows) == 3 and [i.line for i in issues] == [2, 3, 4]
    assert "not JSON" in issues[0].reason and "duration" in issues[2].reason
    with pytest.raises(SystemExit) as exit_code:
        librispeech.main(["check", str(bad)])
    assert exit_code.value.code == 1
    out = capsys.readouterr()
    assert json.loads(out.out.splitlines()[-1]) == {"manifest": str(bad), "good": 2, "problems": 4}
    assert f"{bad}:2: not JSON" in out.err and "gone.flac" in out.err
