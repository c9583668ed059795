"""Preparation of a LibriSpeech-layout directory: NeMo manifests, sentencepiece tokenizer, report.

Usage:
    python -m rnnt_plugin.data.librispeech prepare /data/LibriSpeech --subsets train-clean-100 dev-clean \
        --vocab-size 1023 --max-duration 16.7 --jobs 8
    python -m rnnt_plugin.data.librispeech prepare /tmp/synth --subsets train dev test-sentences --vocab-size 128
    python -m rnnt_plugin.data.librispeech check /data/LibriSpeech/manifests/dev-clean.json
    python -m rnnt_plugin.data.librispeech download /data --subsets dev-clean   (see rnnt_plugin.data.download)

Input: ``DATA_DIR/<subset>/<speaker>/<chapter>/`` (or ``DATA_DIR/LibriSpeech/<subset>/...``, as the archives
extract) holding ``<speaker>-<chapter>.trans.txt`` ("<utt id> <TRANSCRIPT>" lines) and ``<utt id>.flac``.
Output, each file written atomically:
    DATA_DIR/manifests/<subset>.json       NeMo JSON lines: audio_filepath (absolute), duration (s), text
    DATA_DIR/tokenizer_spe_unigram_v<V>/   tokenizer.model + vocab.txt, as NeMo's SentencePieceTokenizer reads
    DATA_DIR/manifests/report.json         utterances kept/dropped per subset, and every problem found
Bad input (missing/unreadable/corrupt audio, wrong sample rate, empty or non-ASCII transcript, bad or
duplicate utterance ids) is reported with its file and line and left out; ``--strict`` stops instead, before
anything is written. Training subsets (``--train-subsets``, default: names starting with "train") keep only
utterances of at most ``--max-duration`` seconds (16.7 in the MLPerf reference) and train the tokenizer.
"""

import argparse
import json
import os
import re
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rnnt_plugin.data import fileio
from rnnt_plugin.data.manifest import Issue, read_manifest

SAMPLE_RATE = 16000  # Hz
MAX_TRAIN_DURATION = 16.7  # s, the MLPerf reference's training filter
REFERENCE_VOCAB_SIZE = 1023
LIBRISPEECH_SUBSETS = ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "dev-other",
                       "test-clean", "test-other")
_UTT_ID = re.compile(r"^(\d+)-(\d+)-(\d+)$")


class PrepareError(ValueError):
    """Raised in strict mode: the input has problems (all of them listed)."""

    def __init__(self, issues: list[Issue]):
        self.issues = issues
        super().__init__(f"{len(issues)} problem(s) in the input:\n" + "\n".join(map(str, issues[:50])))


@dataclass
class Utterance:
    """A transcript line and its audio, before and after the audio check."""

    subset: str
    utt_id: str
    audio: Path
    text: str  # lower-case
    source: str  # "<trans.txt>:<line>"
    duration: float = 0.0


@dataclass
class Prepared:
    """What ``prepare`` wrote: manifest per subset, tokenizer directory, report, training shards."""

    data_dir: Path
    manifests: dict[str, Path]
    tokenizer_dir: Path | None
    report: Path
    shards: Path | None = None  # shards.json of the training shards, when asked for
    kept: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)


def subset_dir(data_dir: Path, subset: str) -> Path:
    """``DATA_DIR/<subset>`` or ``DATA_DIR/LibriSpeech/<subset>``; ValueError naming both when neither exists."""
    for candidate in (data_dir / subset, data_dir / "LibriSpeech" / subset):
        if candidate.is_dir():
            return candidate
    raise ValueError(f"subset {subset!r}: neither {data_dir / subset} nor {data_dir / 'LibriSpeech' / subset} "
                     "is a directory")


def scan_subset(root: Path, subset: str, seen: dict[str, str]) -> tuple[list[Utterance], list[Issue]]:
    """Read every ``*.trans.txt`` of a subset: the utterances it names, and the problems in it.

    ``seen`` maps utterance ids already met (in any subset) to where; duplicates are reported, not kept.
    """
    utts, issues = [], []
    for trans in sorted(root.glob("*/*/*.trans.txt")):
        speaker, chapter = trans.parent.parent.name, trans.parent.name
        try:
            lines = trans.read_bytes().decode("utf-8", errors="replace").splitlines()
        except OSError as e:
            issues.append(Issue(str(trans), None, f"unreadable transcript file: {e}"))
            continue
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            utt_id, _, raw = line.strip().partition(" ")
            where = f"{trans}:{n}"
            m = _UTT_ID.match(utt_id)
            if not m or (m.group(1), m.group(2)) != (speaker, chapter):
                issues.append(Issue(str(trans), n, f"bad utterance id {utt_id!r} (want {speaker}-{chapter}-N)"))
                continue
            if utt_id in seen:
                issues.append(Issue(str(trans), n, f"duplicate utterance id {utt_id} (first at {seen[utt_id]})"))
                continue
            seen[utt_id] = where
            text = " ".join(raw.lower().split())
            if not text:
                issues.append(Issue(str(trans), n, f"empty transcript for {utt_id}"))
                continue
            if not text.isascii() or "\ufffd" in text:
                issues.append(Issue(str(trans), n, f"non-ASCII transcript for {utt_id}: {raw!r}"))
                continue
            audio = next((trans.parent / f"{utt_id}{ext}" for ext in (".flac", ".wav")
                          if (trans.parent / f"{utt_id}{ext}").exists()), None)
            if audio is None:
                issues.append(Issue(str(trans), n, f"missing audio {trans.parent / (utt_id + '.flac')}"))
                continue
            utts.append(Utterance(subset, utt_id, audio.resolve(), text, where))
    if not utts and not issues:
        issues.append(Issue(str(root), None, "no *.trans.txt with utterances under <speaker>/<chapter>/"))
    return utts, issues


def check_audio(path: str, wav_out: str | None = None) -> tuple[float, str | None]:
    """Decode the whole file: (duration in s, None) or (0, what is wrong). With ``wav_out``, write 16-bit WAV."""
    import soundfile as sf

    try:
        with sf.SoundFile(path) as f:
            rate, channels = f.samplerate, f.channels
            samples = f.read(dtype="int16")
    except Exception as e:  # soundfile raises RuntimeError/LibsndfileError/OSError for unreadable/corrupt data
        return 0.0, f"unreadable or corrupt audio {path}: {e}"
    if rate != SAMPLE_RATE:
        return 0.0, f"sample rate {rate} Hz, expected {SAMPLE_RATE}: {path}"
    if channels != 1:
        return 0.0, f"{channels} channels, expected mono: {path}"
    if len(samples) == 0:
        return 0.0, f"no samples in {path}"
    if wav_out is not None:
        with fileio.atomic_path(wav_out) as tmp:
            sf.write(tmp, samples, rate, subtype="PCM_16", format="WAV")
    return len(samples) / rate, None


def _check_all(utts: list[Utterance], wav_dir: Path | None, jobs: int) -> list[Issue]:
    """Check (and optionally convert) every utterance's audio in parallel; set durations; return problems."""
    targets = []
    for u in utts:
        wav = None
        if wav_dir is not None:
            rel = Path(u.subset, *u.audio.parts[-3:-1], f"{u.utt_id}.wav")
            wav = str(wav_dir / rel)
        targets.append(wav)
    args = ([str(u.audio) for u in utts], targets)
    if jobs == 1:
        results = list(map(check_audio, *args))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(_progress(pool.map(check_audio, *args, chunksize=32), len(utts), "checking audio"))
    issues = []
    for u, wav, (duration, error) in zip(utts, targets, results):
        if error:
            file, line = u.source.rsplit(":", 1)
            issues.append(Issue(file, int(line), f"{u.utt_id}: {error}"))
        else:
            u.duration = duration
            if wav is not None:
                u.audio = Path(wav).resolve()
    return issues


def _progress(iterable, total: int, desc: str):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="file", file=sys.stderr, disable=total < 500)


def train_tokenizer(texts: list[str], out_dir: Path, vocab_size: int = REFERENCE_VOCAB_SIZE,
                    threads: int = 1) -> Path:
    """Train the reference sentencepiece model (unigram, character coverage 1.0, no BOS/EOS) on ``texts``.

    Writes ``out_dir/tokenizer.model`` and ``out_dir/vocab.txt`` (NeMo's format: pieces with the word-start
    mark removed, "##" before word-inner pieces), replacing ``out_dir`` only once both are complete.
    """
    import sentencepiece as spm

    if not texts:
        raise ValueError("texts: no training transcripts to train the tokenizer on")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir.parent, prefix=f".{out_dir.name}.") as tmp:
        tmp = Path(tmp)
        (tmp / "text.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
        (tmp / "new").mkdir()
        try:
            spm.SentencePieceTrainer.train(
                input=str(tmp / "text.txt"), model_prefix=str(tmp / "new" / "tokenizer"), vocab_size=vocab_size,
                model_type="unigram", character_coverage=1.0, bos_id=-1, eos_id=-1, num_threads=threads,
                minloglevel=2)
        except RuntimeError as e:
            raise ValueError(f"vocab_size={vocab_size}: sentencepiece could not train on {len(texts)} "
                             f"transcripts: {e}") from e
        vocab = []
        for line in (tmp / "new" / "tokenizer.vocab").read_text(encoding="utf-8").splitlines():
            piece = line.split("\t")[0]
            if piece in ("<unk>", "<s>", "</s>", "<pad>"):
                continue
            vocab.append(piece[1:] or piece if piece.startswith("\u2581") else f"##{piece}")
        (tmp / "new" / "vocab.txt").write_text("".join(v + "\n" for v in vocab), encoding="utf-8")
        (tmp / "new" / "tokenizer.vocab").unlink()
        old = tmp / "old"
        if out_dir.exists():
            os.replace(out_dir, old)
        os.replace(tmp / "new", out_dir)
    return out_dir


def prepare(data_dir: str | Path, subsets: list[str], train_subsets: list[str] | None = None,
            vocab_size: int = REFERENCE_VOCAB_SIZE, max_duration: float = MAX_TRAIN_DURATION,
            convert_wav: bool = False, strict: bool = False, shards: int = 0, jobs: int = 1,
            seed: int = 0) -> Prepared:
    """Manifests for ``subsets``, the tokenizer (trained on ``train_subsets``) and a report; see the module doc.

    ``vocab_size`` 0 skips the tokenizer. ``shards`` N > 0 also writes N webdataset shards of all training
    subsets together to ``DATA_DIR/shards/train/`` (``rnnt_plugin.data.shards``), shuffled with ``seed``.
    Raises PrepareError (a ValueError) in strict mode when the input has problems, before writing anything.
    """
    data_dir = Path(data_dir).resolve()
    if not subsets:
        raise ValueError("subsets: name at least one subset")
    if len(set(subsets)) != len(subsets):
        raise ValueError(f"subsets: each subset once, got {subsets}")
    train_subsets = [s for s in subsets if s.startswith("train")] if train_subsets is None else list(train_subsets)
    if any(s not in subsets for s in train_subsets):
        raise ValueError(f"train_subsets {train_subsets} must be among subsets {subsets}")
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    if (vocab_size or shards) and not train_subsets:
        raise ValueError(f"vocab_size={vocab_size}, shards={shards}: the tokenizer and the shards need training "
                         "subsets (train_subsets, or subset names starting with 'train'); pass 0 to skip them")

    seen: dict[str, str] = {}
    utts, issues = [], []
    bad_per_subset = {}  # transcript lines left out for bad input
    for subset in subsets:
        found, problems = scan_subset(subset_dir(data_dir, subset), subset, seen)
        utts += found
        issues += problems
        bad_per_subset[subset] = sum(i.line is not None for i in problems)
    issues += _check_all(utts, data_dir / "wav" if convert_wav else None, jobs)
    if strict and issues:
        raise PrepareError(issues)
    good = [u for u in utts if u.duration > 0]
    for u in utts:
        bad_per_subset[u.subset] += u.duration <= 0

    manifests, kept, dropped, too_long, hours = {}, {}, {}, {}, {}
    for subset in subsets:
        rows = [u for u in good if u.subset == subset]
        if subset in train_subsets:
            too_long[subset] = sum(u.duration > max_duration for u in rows)
            rows = [u for u in rows if u.duration <= max_duration]
        manifests[subset] = data_dir / "manifests" / f"{subset}.json"
        fileio.write_jsonl(manifests[subset], ({"audio_filepath": str(u.audio), "duration": round(u.duration, 4),
                                                "text": u.text} for u in rows))
        kept[subset] = len(rows)
        hours[subset] = round(sum(u.duration for u in rows) / 3600, 4)
        dropped[subset] = too_long.get(subset, 0) + bad_per_subset[subset]

    tokenizer_dir = None
    if vocab_size:
        texts = [u.text for u in good if u.subset in train_subsets]
        tokenizer_dir = train_tokenizer(texts, data_dir / f"tokenizer_spe_unigram_v{vocab_size}", vocab_size,
                                        threads=jobs)
    shards_json = None
    if shards:
        from rnnt_plugin.data import shards as shard_writer

        shards_json = shard_writer.write_shards([manifests[s] for s in train_subsets], data_dir / "shards" / "train",
                                                shards, seed=seed, jobs=jobs)
    report_path = data_dir / "manifests" / "report.json"
    report = {
        "subsets": {s: {"kept": kept[s], "dropped": dropped[s], "dropped_too_long": too_long.get(s, 0),
                        "dropped_bad_input": bad_per_subset[s], "hours_kept": hours[s]}
                    for s in subsets},
        "max_duration": max_duration, "train_subsets": train_subsets,
        "tokenizer_dir": str(tokenizer_dir) if tokenizer_dir else None,
        "shards": str(shards_json) if shards_json else None,
        "issues": [asdict(i) for i in issues],
    }
    fileio.write_json(report_path, report)
    return Prepared(data_dir, manifests, tokenizer_dir, report_path, shards_json, kept, dropped)


def check_manifest(path: str | Path, jobs: int = 1) -> tuple[list[dict], list[Issue]]:
    """``read_manifest`` plus the audio check of every row: the good rows and every problem."""
    rows, issues = read_manifest(path)
    paths = [r["audio_filepath"] for r in rows]
    if jobs == 1:
        results = list(map(check_audio, paths))
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            results = list(_progress(pool.map(check_audio, paths, chunksize=32), len(paths), "checking audio"))
    good = []
    for row, (_, error) in zip(rows, results):
        if error:
            issues.append(Issue(str(path), None, error))
        elif not row["text"].strip() or not row["text"].isascii():
            issues.append(Issue(str(path), None, f"empty or non-ASCII text for {row['audio_filepath']}"))
        else:
            good.append(row)
    return good, issues


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("prepare", help="manifests, tokenizer and report for a LibriSpeech-layout directory")
    p.add_argument("data_dir", type=Path)
    p.add_argument("--subsets", nargs="+", default=list(LIBRISPEECH_SUBSETS))
    p.add_argument("--train-subsets", nargs="*", default=None, help="default: subsets named train*")
    p.add_argument("--vocab-size", type=int, default=REFERENCE_VOCAB_SIZE, help="0: no tokenizer")
    p.add_argument("--max-duration", type=float, default=MAX_TRAIN_DURATION, help="training filter, seconds")
    p.add_argument("--convert-wav", action="store_true", help="also write 16-bit WAV under DATA_DIR/wav")
    p.add_argument("--strict", action="store_true", help="stop on the first bad input instead of skipping it")
    p.add_argument("--shards", type=int, default=0, help="webdataset shards of the training subsets together")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    c = commands.add_parser("check", help="validate a NeMo manifest and its audio")
    c.add_argument("manifest", type=Path)
    c.add_argument("--jobs", type=int, default=1)
    d = commands.add_parser("download", help="download and extract LibriSpeech (see rnnt_plugin.data.download)")
    d.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)

    if args.command == "download":
        from rnnt_plugin.data import download

        download.main(args.rest)
        return
    if args.command == "check":
        good, issues = check_manifest(args.manifest, args.jobs)
        for issue in issues:
            print(issue, file=sys.stderr)
        print(json.dumps({"manifest": str(args.manifest), "good": len(good), "problems": len(issues)}))
        sys.exit(1 if issues else 0)
    try:
        result = prepare(args.data_dir, args.subsets, args.train_subsets, args.vocab_size, args.max_duration,
                         args.convert_wav, args.strict, args.shards, args.jobs)
    except PrepareError as e:
        print(e, file=sys.stderr)
        sys.exit(2)
    report = json.loads(result.report.read_text())
    for issue in report["issues"]:
        print(Issue(**issue), file=sys.stderr)
    print(json.dumps({"manifests": {s: str(p) for s, p in result.manifests.items()},
                      "tokenizer_dir": str(result.tokenizer_dir) if result.tokenizer_dir else None,
                      "kept": result.kept, "dropped": result.dropped, "report": str(result.report)}))


if __name__ == "__main__":
    main()
