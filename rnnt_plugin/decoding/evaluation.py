"""Word error rate of a model on a NeMo JSON-lines manifest, with a per-utterance record.

``examples/evaluate.py`` is the command-line entry; the demo and the tests call :func:`evaluate`.
"""

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import jiwer

from rnnt_plugin.models import MLPerfRNNTModel


@dataclass
class Utterance:
    audio_filepath: str
    text: str
    duration: float


@dataclass
class EvaluationResult:
    wer: float
    words: int
    utterances: int


def read_manifest(path: str) -> List[Utterance]:
    """Read a JSON-lines manifest; a malformed line raises ValueError naming the file and line."""
    utterances = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                utterances.append(Utterance(entry["audio_filepath"], entry["text"], float(entry.get("duration", 0))))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
                raise ValueError(f"{path}:{number}: not a manifest entry with audio_filepath and text ({e})") from e
    return utterances


def _hypotheses(model: MLPerfRNNTModel, audio: Sequence[str], batch_size: int, progress: bool = False,
                **transcribe_args) -> list:
    """NeMo hypotheses of audio files in the given order, batching similar lengths together for speed;
    ``progress``: NeMo's progress bar (stderr)."""
    if not audio:
        return []
    order = sorted(range(len(audio)), key=lambda i: os.path.getsize(audio[i]))
    hyps = model.transcribe([audio[i] for i in order], batch_size=batch_size, verbose=progress, **transcribe_args)
    result = [None] * len(audio)
    for position, index in enumerate(order):
        result[index] = hyps[position]
    return result


def transcribe_files(model: MLPerfRNNTModel, audio: Sequence[str], batch_size: int,
                     progress: bool = False) -> List[str]:
    """The text of each audio file, in the given order."""
    return [h.text if hasattr(h, "text") else h for h in _hypotheses(model, audio, batch_size, progress)]


def transcribe_with_timestamps(model: MLPerfRNNTModel, audio: Sequence[str], batch_size: int,
                               progress: bool = False) -> List[dict]:
    """{"pred_text", "words": [{"word", "start", "end"}]} of each audio file: seconds from the greedy alignment
    (NeMo's ``timestamps=True``: a word starts at the encoder frame of its first piece and ends one frame after
    its last piece's)."""
    return [{"pred_text": h.text,
             "words": [{"word": w["word"], "start": round(w["start"], 3), "end": round(w["end"], 3)}
                       for w in h.timestamp["word"]]}
            for h in _hypotheses(model, audio, batch_size, progress, timestamps=True)]


def evaluate(model: MLPerfRNNTModel, manifest: str, output: str, batch_size: int = 16) -> EvaluationResult:
    """Transcribe every utterance of ``manifest``; write one JSON line per utterance to ``output``.

    Each output line holds ``audio_filepath``, ``text`` (reference), ``pred_text`` and ``word_errors``.
    """
    utterances = read_manifest(manifest)
    if not utterances:
        raise ValueError(f"{manifest}: no utterances")
    hypotheses = transcribe_files(model, [u.audio_filepath for u in utterances], batch_size)
    references = [u.text for u in utterances]
    measures = jiwer.process_words(references, hypotheses)
    words = sum(len(r.split()) for r in references)
    out_dir = Path(output).resolve().parent
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=out_dir, delete=False, suffix=".tmp", encoding="utf-8") as f:
        for utt, hyp, alignment in zip(utterances, hypotheses, measures.alignments):
            errors = sum(max(c.ref_end_idx - c.ref_start_idx, c.hyp_end_idx - c.hyp_start_idx)
                         for c in alignment if c.type != "equal")
            f.write(json.dumps({"audio_filepath": utt.audio_filepath, "text": utt.text,
                                "pred_text": hyp, "word_errors": errors}) + "\n")
    os.replace(f.name, output)
    return EvaluationResult(wer=measures.wer, words=words, utterances=len(utterances))
