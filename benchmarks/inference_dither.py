"""Inference dither choices on a trained model's test sets: the fixed noise sequence (the default) against the MLPerf
reference's fresh draws (three runs) and no dither, on the test audio as it is and with digital silence inserted.

Usage:
    python benchmarks/inference_dither.py --model demo_output/model.nemo --corpus demo_output/corpus

Greedy WER of each choice on each test set (the demo's test-sentences, test-voice and test-accent by default), the
fixed path's distance to the mean of three independent dither draws (goal: within 0.3 points), whether the fixed path's text is
identical across runs and batch sizes, and the WER added by 0.2-1 s of exact zeros inserted into the middle of every
utterance (goal: at most 1 point). The last line is a JSON object.
"""

import argparse
import json
import tempfile
from pathlib import Path

import jiwer
import numpy as np
import soundfile
import torch

import rnnt_plugin  # noqa: F401  (registers the plugin with NeMo)
from rnnt_plugin.decoding.evaluation import read_manifest, transcribe_files
from rnnt_plugin.models import load_model

TEST_SETS = ("test-sentences", "test-voice", "test-accent")
SILENCE_SECONDS = (0.2, 1.0)  # the inserted stretch of exact zeros, uniform in this range per utterance
RANDOM_RUNS = 3


def with_silence(paths, out_dir: Path, seed: int) -> list:
    """Float WAV copies of ``paths`` with exact zeros inserted at the middle sample."""
    rng = np.random.default_rng(seed)
    copies = []
    for path in paths:
        audio, rate = soundfile.read(path, dtype="float32")
        gap = np.zeros(int(rate * rng.uniform(*SILENCE_SECONDS)), np.float32)
        copy = out_dir / f"{len(copies):04d}.wav"
        soundfile.write(copy, np.concatenate([audio[: len(audio) // 2], gap, audio[len(audio) // 2:]]), rate,
                        subtype="FLOAT")
        copies.append(str(copy))
    return copies


def transcribe(model, paths, choice: str, batch_size: int, seed: int = 0) -> list:
    """Texts of ``paths`` with the featurizer's dither set to ``choice``: ``fixed`` (the default sequence), ``draw``
    (another standard-normal sequence, from ``seed``: one independent dither draw, as the reference makes at each
    evaluation; NeMo's transcribe() reseeds torch, so ``inference_dither: random`` would repeat one draw) or
    ``none``."""
    log_mel = model.preprocessor.log_mel
    dither, noise = log_mel.dither, log_mel.fixed_noise
    log_mel.dither = 0.0 if choice == "none" else dither
    if choice == "draw":
        log_mel.fixed_noise = torch.from_numpy(np.random.default_rng(seed).standard_normal(len(noise)))
    try:
        return transcribe_files(model, paths, batch_size)
    finally:
        log_mel.dither, log_mel.fixed_noise = dither, noise


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help=".nemo model trained with dither")
    parser.add_argument("--corpus", required=True, help="directory holding manifests/<test set>.json")
    parser.add_argument("--test-sets", nargs="+", default=list(TEST_SETS))
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0, help="where the silence goes and how long it is")
    args = parser.parse_args()

    model = load_model(args.model)
    if model.preprocessor.dither <= 0:
        parser.error(f"{args.model}: its featurizer has no dither; the choices compared here need one")
    results, summary = {}, {"model": args.model, "dither": model.preprocessor.dither}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.test_sets:
            utterances = read_manifest(str(Path(args.corpus) / "manifests" / f"{name}.json"))
            paths, references = [u.audio_filepath for u in utterances], [u.text for u in utterances]
            silent_dir = Path(tmp) / name
            silent_dir.mkdir()
            silenced = with_silence(paths, silent_dir, args.seed)
            runs = {"fixed": transcribe(model, paths, "fixed", args.batch_size),
                    "fixed_again": transcribe(model, paths, "fixed", max(1, args.batch_size // 2 - 1)),
                    "none": transcribe(model, paths, "none", args.batch_size),
                    **{f"random_{k}": transcribe(model, paths, "draw", args.batch_size, seed=k)
                       for k in range(RANDOM_RUNS)},
                    "fixed_silence": transcribe(model, silenced, "fixed", args.batch_size),
                    "none_silence": transcribe(model, silenced, "none", args.batch_size)}
            wers = {run: round(100 * jiwer.wer(references, texts), 2) for run, texts in runs.items()}
            random_mean = float(np.mean([wers[f"random_{k}"] for k in range(RANDOM_RUNS)]))
            results[name] = {
                "wer": wers,
                "random_mean": round(random_mean, 2),
                "fixed_minus_random_mean": round(wers["fixed"] - random_mean, 2),
                "fixed_identical_across_runs": runs["fixed"] == runs["fixed_again"],
                "silence_added_wer": {"fixed": round(wers["fixed_silence"] - wers["fixed"], 2),
                                      "none": round(wers["none_silence"] - wers["none"], 2)},
                "utterances": len(paths),
            }
            print(json.dumps({"test_set": name, **results[name]}), flush=True)
    summary["test_sets"] = results
    summary["goals_met"] = all(abs(r["fixed_minus_random_mean"]) <= 0.3 and r["fixed_identical_across_runs"]
                               and r["silence_added_wer"]["fixed"] <= 1.0 for r in results.values())
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
