"""The CPU demo: synthetic corpus -> preparation -> training -> evaluation -> .nemo -> transcription -> word times
-> ONNX.

Each test set is evaluated three times: with greedy search (the MLPerf reference's decoding, and the ONNX
export's), with beam search (rnnt_plugin/decoding/beam.py), and with beam search after test-time VTLN
(rnnt_plugin/decoding/vtln.py). The corpus, the beam width and the warps are the ``demo:`` section of
configs/demo_cpu.yaml, whose training section is the demo's training run.
Evaluation dithers the audio (1e-5) as the MLPerf reference does, with the featurizer's fixed noise sequence:
the synthetic audio has digitally silent stretches, whose log-mel features only the dither keeps alike between
training and inference, and a fixed sequence gives the same text every run. The ONNX export carries the same
sequence, so it must print the .nemo's text on every test utterance of the three test sets.

Usage:
    python scripts/demo.py                       # the full demo, about 20 minutes of training on 2 cores
    python scripts/demo.py --out /tmp/demo --utterances 200 --train-minutes 1   # a quick look

Every stage runs the project's own tools (the synthetic corpus generator, the LibriSpeech preparation,
examples/train.py, examples/evaluate.py, examples/transcribe.py, examples/export.py) and is skipped when its
output already exists, so a re-run reuses what is there. The summary is printed and written to
<out>/summary.json; the training curve is drawn to <out>/training_curve.png.
"""

import argparse
import glob
import json
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from rnnt_plugin.data import fileio, librispeech, synth  # noqa: E402

TEST_SPLITS = {"test-sentences": "wer_heldout_sentences", "test-voice": "wer_heldout_voice",
               "test-accent": "wer_heldout_accent"}
SPLITS = ["train", "dev", *TEST_SPLITS]
CONFIG = REPO / "configs" / "demo_cpu.yaml"


def wers_of(evaluate_output: str) -> dict:
    """examples/evaluate.py's JSON lines -> {summary key: WER} of the test sets."""
    results = [json.loads(line) for line in evaluate_output.splitlines() if line.startswith("{")]
    return {TEST_SPLITS[Path(r["manifest"]).stem]: round(r["wer"], 4) for r in results}


def run(cmd, log_path: Path) -> str:
    """Run a project tool, its output teed to ``log_path``; stop the demo with the log's tail if it fails."""
    print("  $", " ".join(str(c) for c in cmd), flush=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                cwd=REPO)
        lines = []
        for line in proc.stdout:
            log.write(line)
            lines.append(line)
            if "it/s" in line or "s/it" in line or line.startswith("{"):
                print("   ", line.rstrip()[-160:], flush=True)
        if proc.wait() != 0:
            sys.exit(f"stage failed: {' '.join(map(str, cmd))}\n{''.join(lines[-40:])}\n(full log: {log_path})")
    return "".join(lines)


def joint_training_dtype(choice: str) -> str:
    """The joint's training dtype for examples/train.py: "auto" is bfloat16 where the CPU multiplies bf16 natively
    (AVX512-BF16 or AMX: the joint's products ~4x faster than fp32) and fp32 ("null") where bf16 is emulated. The
    encoder stays fp32: its LSTMs in bf16 gave 12-20% more steps but no better WER (README)."""
    if choice == "auto":
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
        choice = "bfloat16" if native else "float32"
    return "null" if choice == "float32" else choice


def train_curve(exp_dir: Path) -> dict:
    """Scalars of the training run's TensorBoard log: {tag: [(step, value), ...]} for the transducer loss
    (``train_loss``), the CTC warm-up loss (``train_ctc_warmup_loss``) and the dev WER (``val_wer``)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves = {"train_loss": [], "train_ctc_warmup_loss": [], "val_wer": []}
    for path in sorted(glob.glob(str(exp_dir / "**" / "events.out.tfevents.*"), recursive=True)):
        acc = EventAccumulator(path)
        acc.Reload()
        for tag in set(curves) & set(acc.Tags()["scalars"]):
            curves[tag] += [(e.step, e.value) for e in acc.Scalars(tag)]
    return {tag: sorted(points) for tag, points in curves.items()}


def plot_curve(curves: dict, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax_loss = plt.subplots(figsize=(8, 4.5))
    for tag, colour, label in (("train_ctc_warmup_loss", "tab:green", "CTC warm-up loss per token"),
                               ("train_loss", "tab:blue", "RNN-T loss per utterance")):
        points = curves[tag]
        ax_loss.plot([s for s, _ in points], [v for _, v in points], color=colour, linewidth=0.8, label=label)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("optimiser step")
    ax_loss.set_ylabel("training loss")
    ax_loss.legend(loc="upper center")
    if curves["train_ctc_warmup_loss"] and curves["train_loss"]:
        ax_loss.axvline(curves["train_loss"][0][0], color="grey", linestyle=":", linewidth=1)
    ax_wer = ax_loss.twinx()
    wer = curves["val_wer"]
    ax_wer.plot([s for s, _ in wer], [100 * v for _, v in wer], "o-", color="tab:red",
                label="dev WER (EMA; of the CTC output during the warm-up)")
    ax_wer.set_ylabel("dev WER % (CTC greedy during the warm-up)", color="tab:red")
    ax_wer.set_ylim(0, 100)
    fig.suptitle("rnnt_plugin CPU demo: training curve")
    fig.tight_layout()
    with fileio.atomic_path(png) as tmp:  # .png kept: matplotlib picks the format from it
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def wer_by_voice(predictions: Path, metadata: Path) -> dict:
    """WER per voice of one test split: {"espeak": wer, "flite:awb": wer, ...} (espeak's accents and variants
    together), from examples/evaluate.py's per-utterance word errors and the corpus's metadata.jsonl."""
    voice_of = {}
    for line in open(metadata):
        row = json.loads(line)
        voice_of[row["utt_id"]] = "espeak" if row["voice"].startswith("espeak:") else row["voice"]
    errors, words = defaultdict(int), defaultdict(int)
    for line in open(predictions):
        row = json.loads(line)
        voice = voice_of[Path(row["audio_filepath"]).stem]
        errors[voice] += row["word_errors"]
        words[voice] += len(row["text"].split())
    return {voice: round(errors[voice] / words[voice], 4) for voice in sorted(words)}


def timed_test_sentences(manifest: Path, out_dir: Path, count: int = 20) -> list:
    """The first ``count`` held-out test sentences spoken by the training voice flite awb, with the time of each
    word from flite's own segment times, as float WAVs in ``out_dir``: [(path, text, [(start, end) per word])]."""
    import soundfile

    out_dir.mkdir(parents=True, exist_ok=True)
    texts = [json.loads(line)["text"] for line in open(manifest)][:count]
    made = []
    for i, text in enumerate(texts):
        try:
            audio, spans = synth.timed_sentence(text, "flite:awb")
        except ValueError:  # a word pronounced differently in context: its time is unknown
            continue
        path = out_dir / f"timed-{i:02d}.wav"
        soundfile.write(path, audio, synth.SAMPLE_RATE, subtype="FLOAT")
        made.append((path, text, spans))
    return made


def timestamp_errors(timed: list, transcribed: Path) -> dict:
    """How far the model's word times (transcribe.py --timestamps) are from where the words were spoken, on the
    utterances it transcribed right: median of (model - spoken) and 90th percentile of |model - spoken| for the
    starts and the ends, in seconds (positive: the model is late)."""
    import numpy as np

    starts, ends, right = [], [], 0
    for (_, text, spans), line in zip(timed, open(transcribed)):
        words = json.loads(line)["words"]
        if [w["word"] for w in words] != text.split():
            continue
        right += 1
        starts += [w["start"] - s for w, (s, _) in zip(words, spans)]
        ends += [w["end"] - e for w, (_, e) in zip(words, spans)]
    summary = {"utterances": len(timed), "transcribed_right": right, "words": len(starts)}
    for name, offsets in (("start", starts), ("end", ends)):
        if offsets:
            summary[f"{name}_offset_s_median"] = round(float(np.median(offsets)), 3)
            summary[f"{name}_abs_offset_s_p90"] = round(float(np.percentile(np.abs(offsets), 90)), 3)
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "demo_output"), help="output directory (reused on re-runs)")
    settings = OmegaConf.to_container(OmegaConf.load(CONFIG).demo)
    parser.add_argument("--utterances", type=int, default=settings["utterances"],
                        help="synthetic corpus size, all splits")
    parser.add_argument("--train-minutes", type=float, help="training time budget (configs/demo_cpu.yaml: 18)")
    parser.add_argument("--epochs", type=int, help="epochs, if the time budget allows them (demo_cpu.yaml: 40)")
    parser.add_argument("--seed", type=int, default=settings["seed"], help="the corpus' draw")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--joint-dtype", choices=("auto", "float32", "bfloat16"), default="auto",
                        help="the joint's matrix products while training (auto: bfloat16 if the CPU has it natively)")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    py = sys.executable
    times = {}

    def stage(name):
        print(f"\n== {name}", flush=True)
        times[name] = time.perf_counter()

    def done(name):
        times[name] = round((time.perf_counter() - times[name]) / 60, 2)

    start = time.perf_counter()
    corpus = out / "corpus"
    stage("corpus")
    try:
        synth.generate_corpus(corpus, args.utterances, seed=args.seed, jobs=args.jobs, **settings["corpus"])
    except ValueError as e:  # a corpus of other settings (an older demo, other --utterances) is there
        sys.exit(f"{e}\nremove {out} (or give another --out) to start the demo afresh")
    done("corpus")

    stage("prepare")
    manifests = {s: corpus / "manifests" / f"{s}.json" for s in SPLITS}
    tokenizer_dir = corpus / f"tokenizer_spe_unigram_v{settings['vocab_size']}"
    if not all(m.exists() for m in manifests.values()) or not (tokenizer_dir / "tokenizer.model").exists():
        prepared = librispeech.prepare(corpus, SPLITS, train_subsets=["train"], vocab_size=settings["vocab_size"],
                                       jobs=args.jobs)
        manifests, tokenizer_dir = prepared.manifests, prepared.tokenizer_dir
    done("prepare")

    model = out / "model.nemo"
    exp_dir = out / "exp"
    stage("train")
    joint_dtype = joint_training_dtype(args.joint_dtype)
    if not model.exists():
        budget = []
        if args.train_minutes is not None:
            minutes = int(args.train_minutes)
            budget.append(f"trainer.max_time=00:00:{minutes:02d}:{round((args.train_minutes - minutes) * 60):02d}")
        if args.epochs is not None:
            budget.append(f"trainer.max_epochs={args.epochs}")
        run([py, "examples/train.py", "--config-name", "demo_cpu",
             f"model.tokenizer.dir={tokenizer_dir}",
             f"model.train_ds.manifest_filepath={manifests['train']}",
             f"model.validation_ds.manifest_filepath={manifests['dev']}",
             f"model.joint.training_dtype={joint_dtype}",
             *budget, f"exp_manager.exp_dir={exp_dir}", f"nemo_path={model}"], out / "train.log")
        fileio.write_text(out / "train_minutes.txt", f"{(time.perf_counter() - times['train']) / 60:.2f}\n")
        fileio.write_text(out / "joint_training_dtype.txt", joint_dtype.replace("null", "float32") + "\n")
    done("train")
    curves = train_curve(exp_dir)
    if curves["train_loss"] or curves["train_ctc_warmup_loss"]:
        plot_curve(curves, out / "training_curve.png")

    stage("evaluate")
    test_manifests = [arg for s in TEST_SPLITS for arg in ("--manifest", manifests[s])]
    wers = wers_of(run([py, "examples/evaluate.py", "--model", model, "--output-dir", out / "predictions",
                        *test_manifests], out / "evaluate.log"))
    beam = ["--beam-size", str(settings["beam_size"])]
    beam_wers = wers_of(run([py, "examples/evaluate.py", "--model", model, "--output-dir", out / "predictions_beam",
                             *beam, *test_manifests], out / "evaluate_beam.log"))
    vtln_wers = wers_of(run([py, "examples/evaluate.py", "--model", model, "--output-dir",
                             out / "predictions_beam_vtln", *beam,
                             "--vtln-warps", ",".join(map(str, settings["vtln_warps"])),
                             *test_manifests], out / "evaluate_beam_vtln.log"))
    sentences_by_voice = wer_by_voice(out / "predictions" / "test-sentences.predictions.json",
                                      corpus / "metadata.jsonl")
    done("evaluate")

    stage("transcribe")
    samples = [json.loads(line)["audio_filepath"] for line in open(manifests["test-voice"])][:3]
    run([py, "examples/transcribe.py", "--model", model, *samples, "--output", out / "transcribed.json"],
        out / "transcribe.log")
    done("transcribe")

    stage("timestamps")
    timed = timed_test_sentences(manifests["test-sentences"], out / "timed")
    run([py, "examples/transcribe.py", "--model", model, "--timestamps", *[p for p, _, _ in timed], "--output",
         out / "timestamps.json"], out / "timestamps.log")
    timestamps = timestamp_errors(timed, out / "timestamps.json")
    done("timestamps")

    stage("export")
    onnx_dir = out / "onnx"
    if not (onnx_dir / "deployment.json").exists():
        run([py, "examples/export.py", model, onnx_dir], out / "export.log")
    greedy = {}  # audio path -> the .nemo's greedy text, from evaluate.py's predictions
    for split in TEST_SPLITS:
        for line in open(out / "predictions" / f"{split}.predictions.json"):
            row = json.loads(line)
            greedy[row["audio_filepath"]] = row["pred_text"]
    run([py, "examples/transcribe.py", "--model", onnx_dir, *greedy, "--output", out / "transcribed_onnx.json"],
        out / "transcribe_onnx.log")
    onnx_texts = {row["audio_filepath"]: row["pred_text"]
                  for row in map(json.loads, open(out / "transcribed_onnx.json"))}
    onnx_differs = sorted(path for path, text in greedy.items() if onnx_texts.get(path) != text)
    done("export")

    trained_dtype = out / "joint_training_dtype.txt"  # the run that trained the model (older demos: fp32 only)
    summary = {
        **wers,
        "wer_beam_search": beam_wers,
        "wer_beam_search_with_vtln": vtln_wers,
        "beam_size": settings["beam_size"],
        "vtln_warps": settings["vtln_warps"],
        "wer_heldout_sentences_by_voice": sentences_by_voice,
        "train_minutes": float((out / "train_minutes.txt").read_text()),
        "total_minutes": round((time.perf_counter() - start) / 60, 2),
        "stage_minutes": {k: v for k, v in times.items()},
        "onnx_text_equal": not onnx_differs,  # on every utterance of the three test sets
        "onnx_text_differs": onnx_differs,
        "word_timestamps": timestamps,
        "utterances": args.utterances,
        "joint_training_dtype": trained_dtype.read_text().strip() if trained_dtype.exists() else "float32",
        "model": str(model),
        "training_curve": str(out / "training_curve.png"),
    }
    fileio.write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print("\n== summary")
    beam_column = f"beam {settings['beam_size']}"
    print(f"{'WER % by decoding':<38}{'greedy':>8}{beam_column:>8}{'beam + VTLN':>13}")
    for split, key in TEST_SPLITS.items():
        print(f"{split + ' (' + key + ')':<38}{100 * wers[key]:>8.1f}{100 * beam_wers[key]:>8.1f}"
              f"{100 * vtln_wers[key]:>13.1f}")
    print("held-out sentences by training voice, WER %: "
          + ", ".join(f"{voice} {100 * wer:.1f}" for voice, wer in sentences_by_voice.items()))
    print("minutes per stage: " + ", ".join(f"{k} {v}" for k, v in times.items()))
    if timestamps.get("words"):
        print(f"word times on {timestamps['transcribed_right']}/{timestamps['utterances']} timed test sentences "
              f"transcribed right: median offset start {timestamps['start_offset_s_median']} s, "
              f"end {timestamps['end_offset_s_median']} s (model - spoken)")
    print(f"ONNX (onnxruntime) text equals the .nemo's on {len(greedy) - len(onnx_differs)} of {len(greedy)} test "
          f"utterances")
    print(f"files: {out} (summary.json, model.nemo, onnx/, training_curve.png, predictions/, *.log)")


if __name__ == "__main__":
    main()
