"""Synthetic corpus: grammar, text, plan (reproducibility, held-out splits) and synthesis into the layout."""

import json
import os
import random
import sys

import numpy as np
import pytest
import soundfile as sf

from rnnt_plugin.data import grammar, synth, text


def test_number_words():
    assert [grammar.number_words(n) for n in (1, 13, 20, 42, 99)] == [
        "one", "thirteen", "twenty", "forty two", "ninety nine"]
    with pytest.raises(ValueError, match="n must be"):
        grammar.number_words(100)


def test_grammar_sentences_are_clean_and_within_the_vocabulary():
    rng, vocab = random.Random(0), grammar.vocabulary()
    sentences = [grammar.sentence(rng) for _ in range(2000)]
    assert 200 <= len(vocab) <= 600
    assert len(set(sentences)) > 1000
    for s in sentences:
        assert text.is_clean_transcript(s), s
        assert grammar.MIN_WORDS <= len(s.split()) <= grammar.MAX_WORDS, s
        assert set(s.split()) <= vocab, s


def test_split_kjv_keeps_clean_clauses_only():
    verses = ["And God said, Let there be light: and there was light.",
              "The LORD is my shepherd; I shall not want.",
              "These are the 12 tribes.", "Give ear, O ye heavens", "Jesus wept.", "well-known words here"]
    assert text.split_kjv(verses) == [
        ("And God said, Let there be light", "and god said let there be light"),
        ("and there was light", "and there was light"),
        ("The lord is my shepherd", "the lord is my shepherd"),
        ("I shall not want", "i shall not want"),
        ("Give ear, O ye heavens", "give ear o ye heavens"),
    ]


def test_split_counts():
    assert synth.split_counts(100, synth.DEFAULT_FRACTIONS) == {
        "train": 80, "dev": 5, "test-sentences": 5, "test-voice": 5, "test-accent": 5}
    assert synth.split_counts(7, {"train": 40, "dev": 10, "test-sentences": 10}) == {
        "train": 5, "dev": 1, "test-sentences": 1}
    with pytest.raises(ValueError, match="splits"):
        synth.split_counts(10, {"valid": 1.0})
    with pytest.raises(ValueError, match="utterances"):
        synth.split_counts(2, synth.DEFAULT_FRACTIONS)


def _check_plan(plan, domain):
    by_split = {s: [u for u in plan if u.split == s] for s in synth.SPLITS}
    train_texts = {u.transcript for u in by_split["train"]}
    train_words = {w for t in train_texts for w in t.split()}
    for split in ("dev", "test-sentences", "test-voice", "test-accent"):
        for u in by_split[split]:
            assert u.transcript not in train_texts, (split, u.transcript)
            if domain == "commands":
                assert set(u.transcript.split()) <= train_words, (split, u.transcript)
    assert not {u.transcript for u in by_split["dev"]} & {u.transcript for u in by_split["test-sentences"]}
    assert all(u.voice == "flite:slt" for u in by_split["test-voice"])
    assert all(u.voice.startswith("espeak:en-029+") for u in by_split["test-accent"])
    for split in ("train", "dev", "test-sentences"):
        assert all(u.voice in synth.TRAIN_VOICES for u in by_split[split])
    assert len({u.utt_id for u in plan}) == len(plan)
    assert {u.voice.split(":")[0] for u in by_split["train"]} == {"espeak", "flite", "pico"}


def test_commands_plan_is_reproducible_and_holds_out_sentences_voices_and_accent():
    plan = synth.plan_corpus(400, "commands", seed=3, speed_warp=0.1)
    assert plan == synth.plan_corpus(400, "commands", seed=3, speed_warp=0.1)
    assert [u.transcript for u in plan] != [u.transcript for u in synth.plan_corpus(400, "commands", seed=4)]
    _check_plan(plan, "commands")
    warps = [u.warp for u in plan]
    assert min(warps) >= 0.9 and max(warps) <= 1.1 and len(set(warps)) > 10
    speeds = [u.speed for u in plan if u.voice.startswith("espeak:")]
    assert min(speeds) >= 140 and max(speeds) <= 200 and len(set(speeds)) > 10
    pico = [u for u in plan if u.voice.startswith("pico:")]
    assert {u.voice for u in pico} == {"pico:en-US", "pico:en-GB"}
    assert all(80 <= u.speed <= 120 and 85 <= u.pitch <= 125 for u in pico) and len({u.pitch for u in pico}) > 10
    train = [u.voice.split(":")[0] for u in plan if u.split == "train"]
    for engine, share in synth.ENGINE_SHARES.items():  # 320 draws: within ~3 standard deviations of the share
        assert abs(train.count(engine) / len(train) - share) < 0.09, (engine, train.count(engine))


def test_bible_plan():
    plan = synth.plan_corpus(200, "bible", seed=1)
    _check_plan(plan, "bible")
    for u in plan:
        assert text.is_clean_transcript(u.transcript) and 3 <= len(u.transcript.split()) <= 20, u.transcript


def test_plan_rejects_bad_arguments():
    with pytest.raises(ValueError, match="domain"):
        synth.plan_corpus(10, "news")
    with pytest.raises(ValueError, match="voices"):
        synth.plan_corpus(10, voices=["flite:slt"])  # the held-out voice cannot train
    with pytest.raises(ValueError, match="speed_warp"):
        synth.plan_corpus(10, speed_warp=0.7)


def test_missing_engine_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="'sox'.*install"):
        synth.generate_corpus(tmp_path / "c", 5, splits={"train": 1.0}, voices=["flite:kal"], progress=False)


def test_generated_corpus_layout_and_reuse(synth_corpus, monkeypatch):
    from tests.conftest import SYNTH_SPLITS, SYNTH_VOICES

    root = synth_corpus.data_dir
    trans_files = sorted(root.glob("*/*/*/*.trans.txt"))
    assert {p.relative_to(root).parts[0] for p in trans_files} == set(SYNTH_SPLITS)
    n_lines = 0
    for trans in trans_files:
        speaker, chapter = trans.parent.parent.name, trans.parent.name
        assert trans.name == f"{speaker}-{chapter}.trans.txt"
        for line in trans.read_text().splitlines():
            utt_id, words = line.split(" ", 1)
            assert utt_id.startswith(f"{speaker}-{chapter}-") and words == words.upper(), line
            info = sf.info(trans.parent / f"{utt_id}.flac")
            assert (info.samplerate, info.channels, info.format) == (16000, 1, "FLAC")
            assert 0.5 < info.duration < 8.0
            n_lines += 1
    assert n_lines == sum(SYNTH_SPLITS.values())
    assert not [p for p in root.rglob("*") if ".tmp" in p.name]
    # Same arguments: nothing to synthesise again; other arguments on the same directory: refused.
    again = synth.generate_corpus(root, n_lines, seed=0, jobs=1, splits=SYNTH_SPLITS, voices=SYNTH_VOICES,
                                  progress=False)
    assert (again.synthesized, again.reused, again.counts) == (0, n_lines, SYNTH_SPLITS)
    with pytest.raises(ValueError, match="other arguments"):
        synth.generate_corpus(root, n_lines, seed=1, splits=SYNTH_SPLITS, voices=SYNTH_VOICES, progress=False)
    monkeypatch.setattr(synth, "ESPEAK_SPEED_WPM", (150, 210))  # a generator of other ranges, the same arguments
    with pytest.raises(ValueError, match="another version of the generator"):
        synth.generate_corpus(root, n_lines, seed=0, splits=SYNTH_SPLITS, voices=SYNTH_VOICES, progress=False)


def test_synthesis_is_deterministic(tmp_path):
    plan = synth.plan_corpus(12, seed=5, splits={"train": 1.0},
                             voices=["espeak:en-gb-x-rp+f3", "flite:awb", "pico:en-GB"], speed_warp=0.1)
    programs = {"sox": "sox", "espeak-ng": "espeak-ng", "flite": "flite"}
    assert {u.voice.split(":")[0] for u in plan} == {"espeak", "flite", "pico"}
    for u in plan:
        synth.synthesize(u, tmp_path / "a.flac", programs)
        synth.synthesize(u, tmp_path / "b.flac", programs)
        a, rate = sf.read(tmp_path / "a.flac")
        b, _ = sf.read(tmp_path / "b.flac")
        assert rate == 16000 and len(a) > 8000 and (a == b).all(), u
    assert sorted(os.listdir(tmp_path)) == ["a.flac", "b.flac"]


def test_flite_speaker_variation_plan():
    plan = synth.plan_corpus(400, "commands", seed=3, vary_flite_speakers=True)
    assert plan == synth.plan_corpus(400, "commands", seed=3, vary_flite_speakers=True)
    _check_plan(plan, "commands")
    varied = [u for u in plan if u.voice.startswith("flite:") and u.split in ("train", "dev")]
    assert len({u.formant for u in varied}) > 10 and len({u.f0 for u in varied}) > 10
    for u in varied:
        assert synth.FLITE_FORMANT[0] <= u.formant <= synth.FLITE_FORMANT[1], u
        assert synth.FLITE_F0_HZ[0] <= u.f0 <= synth.FLITE_F0_HZ[1], u
        assert synth.FLITE_TILT_DB[0] <= u.tilt_db <= synth.FLITE_TILT_DB[1], u
    unvaried = [u for u in plan if u not in varied]  # espeak, and every test split: the voices as they are
    assert unvaried and all((u.formant, u.f0, u.tilt_db) == (1.0, 0, 0.0) for u in unvaried)


def _median_f0(samples: np.ndarray, rate: int = 16000) -> float:
    """Median pitch in Hz of the voiced 40 ms frames (autocorrelation peak between 60 and 400 Hz)."""
    frame, found = int(0.04 * rate), []
    for start in range(0, len(samples) - frame, frame // 4):
        x = samples[start:start + frame] * np.hanning(frame)
        if np.sqrt(np.mean(x ** 2)) < 0.02 * np.abs(samples).max():
            continue
        ac = np.correlate(x, x, "full")[frame - 1:]
        lag = rate // 400 + int(np.argmax(ac[rate // 400: rate // 60]))
        if ac[lag] > 0.4 * ac[0]:
            found.append(rate / lag)
    return float(np.median(found))


def test_flite_speaker_variation_keeps_the_duration_and_moves_the_pitch(tmp_path):
    programs = {"sox": "sox", "flite": "flite"}
    sentence = "set a timer for twenty minutes"
    as_is = synth.Utterance("1-2-3", "train", "flite:awb", sentence, sentence)
    other = synth.Utterance("1-2-3", "train", "flite:awb", sentence, sentence, formant=1.25, f0=220, tilt_db=-4.0)
    synth.synthesize(as_is, tmp_path / "as_is.flac", programs)
    synth.synthesize(other, tmp_path / "other.flac", programs)
    a, _ = sf.read(tmp_path / "as_is.flac")
    b, _ = sf.read(tmp_path / "other.flac")
    assert abs(len(b) / len(a) - 1) < 0.05
    assert _median_f0(a) < 150 and abs(_median_f0(b) - 220) < 25


def test_pico_rate_and_pitch_take_effect_without_clipping(tmp_path):
    sentence = "remind me to call the dentist tomorrow morning"
    audio = {}
    for speed, pitch in ((80, 85), (120, 125)):
        utt = synth.Utterance("1-2-3", "train", "pico:en-US", sentence, sentence, speed=speed, pitch=pitch)
        synth.synthesize(utt, tmp_path / f"{speed}.flac", {"sox": "sox"})
        audio[speed], _ = sf.read(tmp_path / f"{speed}.flac")
    slow, fast = audio[80], audio[120]
    assert 1.3 < len(slow) / len(fast) < 1.7  # 120% against 80% of the voice's rate
    assert 1.3 < _median_f0(fast) / _median_f0(slow) < 1.7 and 140 < _median_f0(slow) < 260  # a female voice
    assert max(np.abs(slow).max(), np.abs(fast).max()) < 0.99


def test_missing_pico_is_named(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ttspico", None)  # as if not installed
    with pytest.raises(RuntimeError, match="ttspico"):
        synth.generate_corpus(tmp_path / "c", 5, splits={"train": 1.0}, voices=["pico:en-US"], progress=False)


def test_command_lines_synth_then_prepare(tmp_path, capsys):
    from rnnt_plugin.data import librispeech

    root = tmp_path / "corpus"
    synth.main([str(root), "--utterances", "3", "--splits", "train=1", "--voices", "flite:kal,espeak:en-us+m1",
                "--jobs", "1", "--seed", "2"])
    made = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert made["counts"] == {"train": 3} and made["synthesized"] == 3
    librispeech.main(["prepare", str(root), "--subsets", "train", "--vocab-size", "0", "--jobs", "1"])
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["kept"] == {"train": 3}
    next(root.glob("train/*/*/*.flac")).write_bytes(b"broken")
    with pytest.raises(SystemExit) as exit_code:
        librispeech.main(["prepare", str(root), "--subsets", "train", "--vocab-size", "0", "--strict"])
    assert exit_code.value.code == 2 and "unreadable or corrupt audio" in capsys.readouterr().err


def test_plan_ignores_the_order_of_splits_and_voices():
    a = synth.plan_corpus(23, seed=1, splits={"train": 3, "dev": 1, "test-voice": 1},
                          voices=["flite:kal", "espeak:en-us+m1", "flite:awb"])
    b = synth.plan_corpus(23, seed=1, splits={"test-voice": 1, "dev": 1, "train": 3},
                          voices=["espeak:en-us+m1", "flite:awb", "flite:kal"])
    assert a == b


def test_spaced_words_mark_where_each_word_is_spoken():
    audio, spans = synth.spaced_words("turn the lights on", "flite:kal", gap_seconds=0.2)
    assert audio.dtype == np.float32 and len(spans) == 4
    rate = synth.SAMPLE_RATE
    assert spans[0][0] == pytest.approx(0.2) and len(audio) / rate == pytest.approx(spans[-1][1] + 0.2, abs=1e-4)
    for (start, end), (next_start, _) in zip(spans, spans[1:] + [(len(audio) / rate, None)]):
        assert 0.05 < end - start < 1.0 and next_start - end == pytest.approx(0.2, abs=1e-4)
        word = audio[round(start * rate): round(end * rate)]
        assert np.abs(word[:10]).max() > 0 and np.abs(word[-10:]).max() > 0  # trimmed to the sound
        assert not audio[round(end * rate) + 1: round((end + 0.2) * rate) - 1].any()  # silence between
    with pytest.raises(ValueError, match="voice"):
        synth.spaced_words("hello", "festival:kal")


def test_timed_sentence_places_each_word_where_flite_says():
    audio, spans = synth.timed_sentence("turn off the fan in the bedroom", "flite:awb")
    assert audio.dtype == np.float32 and len(spans) == 7
    assert all(a < b for a, b in spans) and all(b == c for (_, b), (c, _) in zip(spans, spans[1:]))
    assert 0.1 < spans[0][0] and spans[-1][1] < len(audio) / synth.SAMPLE_RATE  # pauses before and after
    rate = synth.SAMPLE_RATE
    loud = np.nonzero(np.abs(audio) > 0.05 * np.abs(audio).max())[0] / rate
    assert abs(loud[0] - spans[0][0]) < 0.05 and abs(loud[-1] - spans[-1][1]) < 0.1  # times match the audio
    with pytest.raises(ValueError, match="voice"):
        synth.timed_sentence("turn off the fan", "flite:kal")  # diphone voice: times do not match its audio
