"""Speed perturbation cost: rnnt_plugin's polyphase_speed vs NeMo's speed (resampy kaiser_fast), per utterance.

Both resample the same utterances to the same drawn rates (0.85-1.15, on polyphase_speed's 20 Hz grid, so the
outputs have the same length), in the same process, alternating rounds; each is scored by its fastest round.
The audio is a list of files from a manifest (the demo's corpus, say) or, without one, band-limited noise.

Usage:
    .venv/bin/python benchmarks/speed_perturbation.py --manifest demo_output/corpus/manifests/train.json
    .venv/bin/python benchmarks/speed_perturbation.py --utterances 50 --seconds 10

The last line printed is a JSON object: ours_ms_per_utt, nemo_ms_per_utt, speedup_vs_nemo, rel_diff_vs_kaiser_best
(median relative RMS difference from resampy's kaiser_best, for ours and for NeMo's kaiser_fast).
"""

import argparse
import json
import random
import statistics
import time

import librosa
import numpy as np
import scipy.signal
import soundfile

from rnnt_plugin.data.speed import PolyphaseSpeedPerturbation

SAMPLE_RATE = 16000


def load_audio(manifest: str | None, utterances: int, seconds: float) -> list[np.ndarray]:
    if manifest:
        with open(manifest) as f:
            paths = [json.loads(line)["audio_filepath"] for line in f][:utterances]
        return [soundfile.read(p, dtype="float32")[0] for p in paths]
    rng = np.random.default_rng(0)
    lowpass = scipy.signal.butter(8, 6000, fs=SAMPLE_RATE, output="sos")
    return [scipy.signal.sosfilt(lowpass, rng.standard_normal(int(seconds * SAMPLE_RATE))).astype(np.float32)
            for _ in range(utterances)]


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    n = min(len(a), len(b))  # librosa rounds the output length through a float ratio: may be one longer
    return float(np.linalg.norm(a[:n] - b[:n]) / np.linalg.norm(b[:n]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", default=None, help="NeMo manifest whose first utterances are resampled")
    parser.add_argument("--utterances", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of the noise utterances")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    audio = load_audio(args.manifest, args.utterances, args.seconds)
    ours = PolyphaseSpeedPerturbation(SAMPLE_RATE, 0.85, 1.15, rate_step_hz=20)
    draw = random.Random(0)
    targets = [ours.target_rate(draw.uniform(0.85, 1.15)) for _ in audio]
    rates = [t / SAMPLE_RATE for t in targets]

    def run_ours():
        return [ours.resample(x, r) for x, r in zip(audio, rates)]

    def run_nemo():  # what NeMo's SpeedPerturbation calls
        return [librosa.resample(x, orig_sr=SAMPLE_RATE, target_sr=t, res_type="kaiser_fast")
                for x, t in zip(audio, targets)]

    run_ours(), run_nemo()  # filter designs, Numba compilation
    times = {"ours": [], "nemo": []}
    for _ in range(args.rounds):
        for name, fn in (("ours", run_ours), ("nemo", run_nemo)):
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) / len(audio) * 1000)
    best = [librosa.resample(x, orig_sr=SAMPLE_RATE, target_sr=t, res_type="kaiser_best")
            for x, t in zip(audio, targets)]
    diff = {name: statistics.median(relative_difference(y, b) for y, b in zip(fn(), best))
            for name, fn in (("ours", run_ours), ("nemo_kaiser_fast", run_nemo))}
    ours_ms, nemo_ms = min(times["ours"]), min(times["nemo"])
    seconds = sum(len(x) for x in audio) / SAMPLE_RATE / len(audio)
    print(f"{len(audio)} utterances of {seconds:.1f} s on average")
    print(f"polyphase_speed (ours)      {ours_ms:7.2f} ms per utterance")
    print(f"NeMo speed (kaiser_fast)    {nemo_ms:7.2f} ms per utterance")
    print(f"speed-up                    {nemo_ms / ours_ms:7.1f}x")
    print(json.dumps({"ours_ms_per_utt": round(ours_ms, 3), "nemo_ms_per_utt": round(nemo_ms, 3),
                      "speedup_vs_nemo": round(nemo_ms / ours_ms, 2),
                      "rel_diff_vs_kaiser_best": {k: round(v, 4) for k, v in diff.items()}}))


if __name__ == "__main__":
    main()
