"""Featurizer throughput: rnnt_plugin's MLPerfFilterbankFeatures vs NeMo's AudioToMelSpectrogramPreprocessor.

Both run the MLPerf settings (16 kHz, 20 ms Hann window, 10 ms hop, n_fft 512, 80 mel filters, pre-emphasis 0.97,
dither 1e-5, log guard 1e-20, per-feature normalisation) on the same batch, on one CPU thread, in the same process,
alternating so that both see the same machine load; each is scored by its fastest round, the figure least
disturbed by other processes. NeMo runs in training mode because it dithers only there.

Usage:
    .venv/bin/python benchmarks/features.py                 # 8 x 10 s, 15 rounds
    .venv/bin/python benchmarks/features.py --batch 4 --seconds 5 --rounds 5

The last line printed is a JSON object: ours_audio_s_per_s, nemo_audio_s_per_s, ratio_vs_nemo (ours / NeMo).
"""

import argparse
import json
import statistics
import time

import torch

SAMPLE_RATE = 16000
SETTINGS = dict(sample_rate=SAMPLE_RATE, window_size=0.02, window_stride=0.01, window="hann", n_fft=512,
                preemph=0.97, dither=1e-5, normalize="per_feature")


def build():
    """Our featurizer and NeMo's, with the same settings."""
    from nemo.collections.asr.modules import AudioToMelSpectrogramPreprocessor

    from rnnt_plugin.models.features import MLPerfFilterbankFeatures

    ours = MLPerfFilterbankFeatures(**SETTINGS, n_filt=80, log_zero_guard=1e-20).eval()
    nemo = AudioToMelSpectrogramPreprocessor(
        **SETTINGS, features=80, log_zero_guard_type="add", log_zero_guard_value=1e-20, pad_to=0
    ).train()
    return ours, nemo


def seconds_per_call(module, audio, lengths) -> float:
    start = time.perf_counter()
    module(input_signal=audio, length=lengths)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8, help="utterances per batch")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of audio per utterance")
    parser.add_argument("--rounds", type=int, default=15, help="timed calls of each featurizer")
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)
    ours, nemo = build()
    samples = int(args.seconds * SAMPLE_RATE)
    audio = 0.1 * torch.randn(args.batch, samples)
    lengths = torch.full((args.batch,), samples, dtype=torch.long)
    audio_seconds = args.batch * args.seconds

    for module in (ours, nemo):  # warm-up
        seconds_per_call(module, audio, lengths)
    times = {"ours": [], "nemo": []}
    for _ in range(args.rounds):
        times["ours"].append(seconds_per_call(ours, audio, lengths))
        times["nemo"].append(seconds_per_call(nemo, audio, lengths))
    for name, seconds in times.items():
        print(f"{name}: best {min(seconds) * 1e3:.1f} ms, median {statistics.median(seconds) * 1e3:.1f} ms per call")
    ours_rate = audio_seconds / min(times["ours"])
    nemo_rate = audio_seconds / min(times["nemo"])
    print(f"{args.batch} x {args.seconds} s, 1 thread, best of {args.rounds}: "
          f"ours {ours_rate:.0f} audio-s/s, NeMo {nemo_rate:.0f} audio-s/s")
    print(json.dumps({
        "ours_audio_s_per_s": round(ours_rate, 1),
        "nemo_audio_s_per_s": round(nemo_rate, 1),
        "ratio_vs_nemo": round(ours_rate / nemo_rate, 3),
    }))


if __name__ == "__main__":
    main()
