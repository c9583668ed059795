"""Synthetic multi-speaker English speech in the LibriSpeech layout, from Debian's TTS engines and SVOX Pico.

Usage:
    python -m rnnt_plugin.data.synth /tmp/synth --utterances 3000 --domain commands --seed 0 --jobs 2
    python -m rnnt_plugin.data.synth /tmp/kjv --utterances 500 --domain bible --speed-warp 0.1

Voices: espeak-ng accents x variants (formant synthesis, random speed 140-200 wpm and pitch 30-70 per
utterance) and the flite voices kal, kal16, awb, rms (random duration stretch 0.85-1.15; optionally each
utterance another speaker of its voice: vocal-tract length, pitch, spectral tilt), and SVOX Pico's two female
voices en-US and en-GB (the ``ttspico`` package; random rate 80-120% and pitch 85-125%). Every utterance can also
get a sox ``speed`` warp (formants, pitch and tempo together). Output is 16 kHz mono 16-bit FLAC:

    OUT_DIR/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac
    OUT_DIR/<split>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt    ("<utt id> <UPPER-CASE TEXT>" lines)
    OUT_DIR/metadata.jsonl      one line per utterance: split, voice, engine parameters, transcript
    OUT_DIR/synth_config.json   the arguments and the plan's digest; a re-run with the same reuses the finished audio

Splits: ``train``; ``dev`` and ``test-sentences`` (held-out sentences, training voices); ``test-voice``
(the same held-out test sentences, natural voice flite ``slt`` never used in training); ``test-accent`` (the
same, espeak accent ``en-029`` never used in training). No held-out sentence occurs in train; in the
``commands`` domain every held-out word also occurs in train. Everything (texts, voices, parameters) is
drawn up front from ``seed``; synthesis then runs the engines in parallel (one thread per job drives the
engine and sox processes, which do the work; Pico runs in that thread, outside the GIL).
"""

import argparse
import hashlib
import json
import random
import subprocess
import sys
import tempfile
import time
import wave
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from io import BytesIO
from pathlib import Path

import numpy as np

from rnnt_plugin.data import fileio, grammar, text

SAMPLE_RATE = 16000  # Hz, as LibriSpeech
SPLITS = ("train", "dev", "test-sentences", "test-voice", "test-accent")
DEFAULT_FRACTIONS = {"train": 0.8, "dev": 0.05, "test-sentences": 0.05, "test-voice": 0.05, "test-accent": 0.05}
DOMAINS = ("commands", "bible")

ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-us-nyc", "en-gb-x-gbclan",
                  "en-gb-x-gbcwmd")
ESPEAK_VARIANTS = tuple(f"m{i}" for i in range(1, 9)) + tuple(f"f{i}" for i in range(1, 6))
HELDOUT_ACCENT = "en-029"  # Caribbean English: only in test-accent
FLITE_VOICES = ("kal", "kal16", "awb", "rms")
HELDOUT_FLITE_VOICE = "slt"  # the only natural female voice: only in test-voice
TIMED_FLITE_VOICES = ("flite:awb", "flite:rms", "flite:slt")  # whose printed segment times match their audio
PICO_VOICES = ("en-US", "en-GB")  # SVOX Pico: natural female voices (slt, held out, is female too)
# share of training utterances spoken by each engine (over the engines of the training voices). Before Pico, on
# the demo (seed 1, WER % held-out sentences / slt / accent) a flite share of 0.4 (the rest espeak) gave
# 9.6 / 40.2 / 13.2, 0.25 gave 12.2 / 48.8 / 15.4 and 0.6 gave 14.4 / 45.4 / 20.5. Flite first and flite : espeak
# at 2 : 3, so that a corpus of espeak and flite voices alone is drawn as before Pico.
ENGINE_SHARES = {"flite": 0.32, "espeak": 0.48, "pico": 0.2}

ESPEAK_SPEED_WPM = (140, 200)
ESPEAK_PITCH = (30, 70)
FLITE_STRETCH = (0.85, 1.15)
# Speaker variation of the (male) flite voices, when asked for: see plan_corpus
FLITE_FORMANT = (1.0, 1.45)  # formant (vocal-tract length) factor: up to female lengths (slt, held out, is female)
FLITE_F0_HZ = (90, 250)  # mean pitch; rms ignores it
FLITE_TILT_DB = (-6.0, 6.0)  # treble shelf gain above 3 kHz: brighter or duller voice quality
PICO_RATE = (80, 120)  # percent of the voice's own speaking rate
PICO_PITCH = (85, 125)  # percent of the voice's own pitch
PICO_VOLUME = 50  # percent: at its own 100 (and at 70) Pico clips its loudest samples
CHAPTER_OF_SPLIT = {split: 100 + i for i, split in enumerate(SPLITS)}  # keeps utterance ids unique


def _voice_table() -> dict[str, int]:
    """Every voice name ("espeak:<accent>+<variant>", "flite:<voice>", "pico:<language>") -> its fixed speaker id."""
    names = [f"espeak:{a}+{v}" for a in ESPEAK_ACCENTS + (HELDOUT_ACCENT,) for v in ESPEAK_VARIANTS]
    names += [f"flite:{v}" for v in FLITE_VOICES + (HELDOUT_FLITE_VOICE,)]
    names += [f"pico:{v}" for v in PICO_VOICES]
    return {name: 1000 + i for i, name in enumerate(names)}


VOICES = _voice_table()
TRAIN_VOICES = tuple(n for n in VOICES if HELDOUT_ACCENT not in n and n != f"flite:{HELDOUT_FLITE_VOICE}")


@dataclass(frozen=True)
class Utterance:
    """One planned utterance: where it goes, what is said, and how."""

    utt_id: str
    split: str
    voice: str  # key of VOICES
    spoken: str  # text given to the engine (may keep commas for prosody)
    transcript: str  # lower-case words
    speed: int = 0  # espeak words per minute; Pico rate in percent
    pitch: int = 0  # espeak pitch 0-99; Pico pitch in percent
    stretch: float = 1.0  # flite duration_stretch
    warp: float = 1.0  # sox speed factor
    formant: float = 1.0  # flite only: formants and pitch scaled by this, duration kept (see plan_corpus)
    f0: int = 0  # flite only: mean pitch in Hz after the formant shift; 0 keeps the voice's own
    tilt_db: float = 0.0  # sox treble gain in dB

    @property
    def relpath(self) -> Path:
        speaker, chapter, _ = self.utt_id.split("-")
        return Path(self.split, speaker, chapter, f"{self.utt_id}.flac")


@dataclass
class CorpusResult:
    """What ``generate_corpus`` made: the root, utterances per split, and how many were synthesised anew."""

    root: Path
    counts: dict[str, int]
    synthesized: int
    reused: int
    seconds: float


def split_counts(utterances: int, fractions: dict[str, float]) -> dict[str, int]:
    """Split ``utterances`` over the splits in proportion to ``fractions`` (largest remainder, each >= 1).

    ``fractions`` are relative weights: {"train": 0.8, "dev": 0.2} and {"train": 40, "dev": 10} both work.
    """
    if not fractions or any(s not in SPLITS for s in fractions):
        raise ValueError(f"splits must be a non-empty subset of {SPLITS}, got {list(fractions)}")
    if any(f <= 0 for f in fractions.values()):
        raise ValueError(f"split fractions must be > 0, got {fractions}")
    if utterances < len(fractions):
        raise ValueError(f"utterances must be >= the number of splits ({len(fractions)}), got {utterances}")
    fractions = {s: fractions[s] for s in SPLITS if s in fractions}  # fixed order: ties break the same way
    total = sum(fractions.values())
    exact = {s: utterances * f / total for s, f in fractions.items()}
    counts = {s: max(1, int(x)) for s, x in exact.items()}
    by_remainder = sorted(fractions, key=lambda s: exact[s] - int(exact[s]), reverse=True)
    i = 0
    while sum(counts.values()) != utterances:
        s = by_remainder[i % len(by_remainder)]
        if sum(counts.values()) < utterances:
            counts[s] += 1
        elif counts[s] > 1:
            counts[s] -= 1
        i += 1
    return counts


def _draw_commands(rng: random.Random, n_train: int, n_dev: int, n_test: int) -> tuple[list, list, list]:
    """Distinct grammar sentences: train, then held-out dev/test whose every word occurs in train."""
    def distinct(n: int, accept, taken: set) -> list[str]:
        out, tries = [], 0
        while len(out) < n:
            tries += 1
            if tries > 200 * n + 20000:
                raise ValueError(f"the commands grammar gave only {len(out)} of {n} distinct sentences; "
                                 "ask for fewer utterances")
            s = grammar.sentence(rng)
            if s not in taken and accept(s):
                taken.add(s)
                out.append(s)
        return out

    taken: set[str] = set()
    train = distinct(n_train, lambda s: True, taken)
    vocab = {w for s in train for w in s.split()}
    seen = lambda s: all(w in vocab for w in s.split())  # noqa: E731
    dev = distinct(n_dev, seen, taken)
    test = distinct(n_test, seen, taken)
    return [(s, s) for s in train], [(s, s) for s in dev], [(s, s) for s in test]


def _draw_bible(rng: random.Random, n_train: int, n_dev: int, n_test: int) -> tuple[list, list, list]:
    """Disjoint random KJV clauses for train, dev and test."""
    pool = list(text.kjv_sentences())
    if n_train + n_dev + n_test > len(pool):
        raise ValueError(f"the bible domain has {len(pool)} sentences; asked for {n_train + n_dev + n_test}")
    picked = rng.sample(pool, n_train + n_dev + n_test)
    return picked[:n_train], picked[n_train:n_train + n_dev], picked[n_train + n_dev:]


def plan_corpus(utterances: int, domain: str = "commands", seed: int = 0, splits: dict | None = None,
                voices: list[str] | None = None, speed_warp: float = 0.0,
                vary_flite_speakers: bool = False) -> list[Utterance]:
    """Every utterance of the corpus, drawn from ``seed`` alone (same arguments -> same plan).

    ``splits`` maps split names to relative weights (default 0.8 train, 0.05 each other split);
    ``voices`` restricts the training voices (names from ``VOICES``, e.g. "espeak:en-us+m3", "flite:kal",
    "pico:en-GB"); each training utterance's engine is drawn by ``ENGINE_SHARES``, then its voice uniformly;
    ``speed_warp`` w gives each utterance a sox speed factor drawn from [1 - w, 1 + w].
    ``vary_flite_speakers`` makes each flite training or dev utterance another speaker of the same voice: a
    vocal tract of another length (formants scaled by a factor from ``FLITE_FORMANT``, the duration kept: flite
    speaks slower by the factor and sox speeds it up), a mean pitch from ``FLITE_F0_HZ`` and a spectral tilt from
    ``FLITE_TILT_DB``. Debian's flite has only four natural voices (all male); the held-out test voice is female.
    """
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")
    if not 0.0 <= speed_warp < 0.5:
        raise ValueError(f"speed_warp must be in [0, 0.5), got {speed_warp}")
    train_voices = sorted(set(voices)) if voices else list(TRAIN_VOICES)  # order-free, as the saved config
    bad = [v for v in train_voices if v not in TRAIN_VOICES]
    if bad:
        raise ValueError(f"voices must be training voices such as {TRAIN_VOICES[0]!r} or 'flite:kal', got {bad}")
    counts = split_counts(utterances, dict(splits or DEFAULT_FRACTIONS))
    n_test = max(counts.get(s, 0) for s in ("test-sentences", "test-voice", "test-accent"))
    draw = _draw_commands if domain == "commands" else _draw_bible
    train, dev, test = draw(random.Random(f"{seed}:text"), counts.get("train", 0), counts.get("dev", 0), n_test)
    texts = {"train": train, "dev": dev, "test-sentences": test, "test-voice": test, "test-accent": test}

    rng = random.Random(f"{seed}:voices")
    by_engine = {e: [v for v in train_voices if v.startswith(f"{e}:")] for e in ENGINE_SHARES}
    engines = [e for e in ENGINE_SHARES if by_engine[e]]
    shares = [ENGINE_SHARES[e] for e in engines]
    plan, next_index = [], defaultdict(int)
    for split in SPLITS:
        for spoken, transcript in texts[split][:counts.get(split, 0)]:
            if split == "test-voice":
                voice = f"flite:{HELDOUT_FLITE_VOICE}"
            elif split == "test-accent":
                voice = f"espeak:{HELDOUT_ACCENT}+{rng.choice(ESPEAK_VARIANTS)}"
            else:
                voice = rng.choice(by_engine[rng.choices(engines, shares)[0]])
            speaker, chapter = VOICES[voice], CHAPTER_OF_SPLIT[split]
            index = next_index[speaker, chapter]
            next_index[speaker, chapter] += 1
            engine = voice.split(":")[0]
            if engine == "espeak":
                params = dict(speed=rng.randint(*ESPEAK_SPEED_WPM), pitch=rng.randint(*ESPEAK_PITCH))
            elif engine == "pico":
                params = dict(speed=rng.randint(*PICO_RATE), pitch=rng.randint(*PICO_PITCH))
            else:
                params = dict(stretch=round(rng.uniform(*FLITE_STRETCH), 3))
            warp = round(rng.uniform(1 - speed_warp, 1 + speed_warp), 3) if speed_warp else 1.0
            if vary_flite_speakers and engine == "flite" and split in ("train", "dev"):
                params.update(formant=round(rng.uniform(*FLITE_FORMANT), 3), f0=rng.randint(*FLITE_F0_HZ),
                              tilt_db=round(rng.uniform(*FLITE_TILT_DB), 1))
            plan.append(Utterance(f"{speaker}-{chapter}-{index:04d}", split, voice, spoken, transcript,
                                  warp=warp, **params))
    return plan


def _pico_wav(utt: Utterance) -> bytes:
    """The utterance spoken by Pico (16 kHz mono 16-bit) as WAV bytes.

    Each utterance gets a new engine (~10 ms): an engine's noise source runs on from one utterance to the next,
    so only a fresh one gives the same samples every time."""
    import ttspico

    engine = ttspico.TtsEngine(utt.voice.split(":")[1])
    engine.volume, engine.rate, engine.pitch = PICO_VOLUME, utt.speed, utt.pitch
    pcm = engine.speak(utt.spoken) or b""
    out = BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm)
    return out.getvalue()


def _engine_command(utt: Utterance, programs: dict[str, str]) -> list[str]:
    """The espeak or flite command that writes the utterance as WAV to stdout (espeak reads the text on stdin)."""
    engine, name = utt.voice.split(":")
    if engine == "espeak":
        return [programs["espeak-ng"], "-v", name, "-s", str(utt.speed), "-p", str(utt.pitch), "--stdout",
                "--stdin"]
    pitch = ["--setf", f"int_f0_target_mean={utt.f0 / utt.formant:.1f}"] if utt.f0 else []  # before the shift
    return [programs["flite"], "-voice", name, "--setf", f"duration_stretch={utt.stretch * utt.formant:.4f}",
            *pitch, "-t", utt.spoken, "-o", "/dev/stdout"]  # flite hangs on text from a stdin pipe


def _engine_wav(utt: Utterance, programs: dict[str, str]) -> bytes:
    """The utterance spoken by its engine, as WAV bytes; RuntimeError naming it when the engine fails."""
    if utt.voice.startswith("pico:"):
        wav, error = _pico_wav(utt), b""
    else:
        spoken = subprocess.run(_engine_command(utt, programs), input=utt.spoken.encode(), capture_output=True)
        wav, error = (spoken.stdout if spoken.returncode == 0 else b""), spoken.stderr
    if len(wav) <= 44:  # 44 bytes: a WAV header without samples
        raise RuntimeError(f"{utt.voice} failed on {utt.utt_id} ({utt.spoken!r}): {error.decode()[-500:]}")
    return wav


def synthesize(utt: Utterance, path: Path, programs: dict[str, str]) -> None:
    """Speak ``utt`` with its engine, then sox -> 16 kHz mono 16-bit FLAC at ``path`` (atomic).

    sox runs without dither (-D), so the same utterance gives the same samples every time. Its speed effect
    applies the warp and the formant shift (the engine spoke ``formant`` times slower to keep the duration), its
    treble effect the tilt.
    """
    wav = _engine_wav(utt, programs)
    with fileio.atomic_path(path) as tmp:
        sox = [programs["sox"], "-q", "-D", "-t", "wav", "-", "-r", str(SAMPLE_RATE), "-c", "1", "-b", "16",
               "-t", "flac", str(tmp)]
        speed = utt.warp * utt.formant
        sox += ["speed", f"{speed:.4f}"] if speed != 1.0 else []
        sox += ["treble", str(utt.tilt_db)] if utt.tilt_db else []
        converted = subprocess.run(sox, input=wav, capture_output=True)
        if converted.returncode != 0:
            raise RuntimeError(f"sox failed on {utt.utt_id}: {converted.stderr.decode()[-500:]}")


def _samples(wav: bytes, programs: dict[str, str]) -> np.ndarray:
    """An engine's WAV output -> 16 kHz mono float32 samples (S,), through sox without dither."""
    raw = subprocess.run([programs["sox"], "-q", "-D", "-t", "wav", "-", "-t", "f32", "-r", str(SAMPLE_RATE),
                          "-c", "1", "-"], input=wav, capture_output=True, check=True).stdout
    return np.frombuffer(raw, dtype=np.float32).copy()


def spaced_words(sentence: str, voice: str = "espeak:en-us+m3", gap_seconds: float = 0.25,
                 programs: dict[str, str] | None = None) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """``sentence`` with each word spoken alone by ``voice`` (a name of ``VOICES``), trimmed to where it is
    louder than 2% of its peak, between ``gap_seconds`` of silence: speech whose word boundaries are known.

    Returns 16 kHz audio (S,) float32 and each word's (start, end) in seconds."""
    if voice not in VOICES:
        raise ValueError(f"voice must be one of synth.VOICES such as 'espeak:en-us+m3', got {voice!r}")
    speed, pitch = (100, 100) if voice.startswith("pico:") else (175, 50)
    plan = [Utterance("0-0-0", "train", voice, word, word, speed=speed, pitch=pitch) for word in sentence.split()]
    programs = programs or _programs(plan)
    gap = np.zeros(round(gap_seconds * SAMPLE_RATE), dtype=np.float32)
    pieces, spans, at = [gap], [], len(gap)
    for utt in plan:
        word = _samples(_engine_wav(utt, programs), programs)
        loud = np.nonzero(np.abs(word) > 0.02 * np.abs(word).max())[0]
        word = word[loud[0]: loud[-1] + 1]
        spans.append((at / SAMPLE_RATE, (at + len(word)) / SAMPLE_RATE))
        pieces += [word, gap]
        at += len(word) + len(gap)
    return np.concatenate(pieces), spans


def timed_sentence(sentence: str, voice: str = "flite:awb",
                   programs: dict[str, str] | None = None) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """``sentence`` spoken as one utterance by a flite ``voice``, with where each word is: flite prints the end
    time of every segment (``-psdur``); each word's segments are counted by speaking it alone (``-ps``). Only
    the statistical voices (``TIMED_FLITE_VOICES``): the diphone voices' waveforms run ~15% shorter than the times.

    Returns 16 kHz audio (S,) float32 and each word's (start, end) in seconds; ValueError if the sentence's
    segments do not add up to its words' (a pronunciation that changes in context)."""
    if voice not in TIMED_FLITE_VOICES:
        raise ValueError(f"voice must be one of {TIMED_FLITE_VOICES}, got {voice!r}")
    programs = programs or _programs([Utterance("0-0-0", "train", voice, sentence, sentence)])
    name = voice.split(":")[1]

    def segments(text: str, option: str, wav_path: str = "/dev/null") -> list[str]:
        printed = subprocess.run([programs["flite"], "-voice", name, option, "-t", text, "-o", wav_path],
                                 capture_output=True, text=True, check=True).stdout
        return printed.split()

    with tempfile.TemporaryDirectory() as tmp:  # one synthesis: the audio to a file, the times to stdout
        wav_path = Path(tmp, "sentence.wav")
        timed = [seg.rsplit(":", 1) for seg in segments(sentence, "-psdur", str(wav_path))]  # ["t", "0.328"]
        audio = _samples(wav_path.read_bytes(), programs)
    spoken = [i for i, (seg, _) in enumerate(timed) if seg != "pau"]
    counts = [sum(seg != "pau" for seg in segments(word, "-ps")) for word in sentence.split()]
    if not spoken or 0 in counts or sum(counts) != len(spoken) or spoken[0] == 0:
        raise ValueError(f"flite {name} speaks {sentence!r} with {len(spoken)} segments but its words alone with "
                         f"{counts}: the word times are unknown")
    spans, first = [], 0
    for count in counts:
        begin, last = spoken[first], spoken[first + count - 1]  # a word starts where the segment before it ends
        spans.append((float(timed[begin - 1][1]), float(timed[last][1])))
        first += count
    return audio, spans


def _programs(plan: list[Utterance]) -> dict[str, str]:
    """Paths of the programs the plan needs; RuntimeError naming the first one missing."""
    needed = {"sox": "sox"}
    if any(u.voice.startswith("espeak:") for u in plan):
        needed["espeak-ng"] = "espeak-ng"
    if any(u.voice.startswith("flite:") for u in plan):
        needed["flite"] = "flite"
    if any(u.voice.startswith("pico:") for u in plan):
        try:
            import ttspico  # noqa: F401
        except ImportError as e:
            raise RuntimeError(f"the Pico voices need the ttspico package (pip install ttspico): {e}") from None
    return {name: text.require_program(name, package) for name, package in needed.items()}


def generate_corpus(out_dir: str | Path, utterances: int, domain: str = "commands", seed: int = 0,
                    jobs: int = 2, splits: dict | None = None, voices: list[str] | None = None,
                    speed_warp: float = 0.0, vary_flite_speakers: bool = False,
                    progress: bool = True) -> CorpusResult:
    """Synthesise the corpus planned by ``plan_corpus`` into ``out_dir`` (LibriSpeech layout).

    Re-running with the same arguments reuses the FLAC files already there; other arguments on the same
    directory raise ValueError (a new corpus needs a new directory). ``jobs`` engines run at once.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    start = time.perf_counter()
    root = Path(out_dir)
    plan = plan_corpus(utterances, domain, seed, splits, voices, speed_warp, vary_flite_speakers)
    # the plan's digest as well: a generator whose voices or ranges changed plans other audio for the same paths
    digest = hashlib.sha256(json.dumps([asdict(u) for u in plan]).encode()).hexdigest()[:16]
    config = dict(utterances=utterances, domain=domain, seed=seed, splits=dict(splits or DEFAULT_FRACTIONS),
                  voices=sorted(voices) if voices else None, speed_warp=speed_warp,
                  vary_flite_speakers=vary_flite_speakers, plan_digest=digest)
    config_path = root / "synth_config.json"
    if config_path.exists() and json.loads(config_path.read_text()) != config:
        raise ValueError(f"out_dir {root} holds a corpus made with other arguments or by another version of the "
                         f"generator ({config_path}); use a new one")
    programs = _programs(plan)
    fileio.write_json(config_path, config)

    todo = [u for u in plan if not (root / u.relpath).exists()]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        work = pool.map(lambda u: synthesize(u, root / u.relpath, programs), todo)
        if progress:
            from tqdm import tqdm

            work = tqdm(work, total=len(todo), desc="synthesising", unit="utt", file=sys.stderr)
        for _ in work:
            pass

    chapters = defaultdict(list)
    for u in plan:
        chapters[u.relpath.parent].append(f"{u.utt_id} {u.transcript.upper()}\n")
    for chapter_dir, lines in chapters.items():
        fileio.write_text(root / chapter_dir / f"{chapter_dir.parent.name}-{chapter_dir.name}.trans.txt",
                          "".join(lines))
    fileio.write_jsonl(root / "metadata.jsonl", (asdict(u) for u in plan))
    counts = defaultdict(int)
    for u in plan:
        counts[u.split] += 1
    return CorpusResult(root, dict(counts), len(todo), len(plan) - len(todo), time.perf_counter() - start)


def _parse_splits(arg: str) -> dict[str, float]:
    """"train=0.8,dev=0.1" -> {"train": 0.8, "dev": 0.1}."""
    try:
        return {k: float(v) for k, v in (item.split("=") for item in arg.split(","))}
    except ValueError:
        raise argparse.ArgumentTypeError(f"--splits wants NAME=FRACTION,..., got {arg!r}") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--utterances", type=int, required=True, help="total over all splits")
    parser.add_argument("--domain", choices=DOMAINS, default="commands")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, help="engines running at once")
    parser.add_argument("--splits", type=_parse_splits, default=None,
                        help=f"NAME=FRACTION,... over {', '.join(SPLITS)} (default: 0.8 train, 0.05 each other)")
    parser.add_argument("--voices", default=None,
                        help="comma-separated training voices, e.g. espeak:en-us+m3,flite:kal,pico:en-GB")
    parser.add_argument("--speed-warp", type=float, default=0.0, help="sox speed factor drawn from [1-w, 1+w]")
    parser.add_argument("--vary-flite-speakers", action="store_true",
                        help="each flite training utterance with its own vocal-tract length, pitch and spectral tilt")
    args = parser.parse_args(argv)
    result = generate_corpus(args.out_dir, args.utterances, args.domain, args.seed, args.jobs, args.splits,
                             args.voices.split(",") if args.voices else None, args.speed_warp,
                             args.vary_flite_speakers)
    print(json.dumps({"root": str(result.root), "counts": result.counts, "synthesized": result.synthesized,
                      "reused": result.reused, "seconds": round(result.seconds, 1)}))


if __name__ == "__main__":
    main()
