"""Training throughput (audio seconds per second) of the small CPU config with 1 and 2 data-parallel processes.

Usage:
    .venv/bin/python benchmarks/train_throughput.py --steps 12 --batch 8
    .venv/bin/python benchmarks/train_throughput.py --data-dir DATA   # a prepared corpus (manifests/train.json ...)

Both runs go through scripts/train_rnnt_1x1.sh (torchrun; gloo DDP for 2 processes) with the same per-process
batch, so 2 processes train twice the audio per step (data-parallel scaling). Each process gets
``--threads`` torch threads. The figure is the median over steps (after ``--warmup`` steps) of the
``train_audio_s_per_s`` the training logs: audio seconds of the global batch over the time between the ends
of consecutive optimiser steps, data loading included. Without ``--data-dir`` a synthetic corpus is made.
The last line printed is JSON: audio_s_per_s_1proc, audio_s_per_s_2proc, scaling (2proc / 1proc).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]


def _corpus(root: Path):
    from rnnt_plugin.data import librispeech, synth

    splits = {"train": 96, "dev": 4}
    synth.generate_corpus(root, sum(splits.values()), domain="commands", seed=0, jobs=2, splits=splits,
                          voices=["espeak:en-us+m3", "flite:kal"], progress=False)
    prepared = librispeech.prepare(root, list(splits), vocab_size=64, jobs=1)
    return prepared.manifests["train"], prepared.manifests["dev"], prepared.tokenizer_dir


def run(procs: int, args, train, dev, tokenizer, out: Path) -> float:
    """Median global audio-s/s of one training run with ``procs`` processes."""
    env = dict(os.environ, NUM_GPUS=str(procs), GRAD_ACCUMULATION_STEPS="1", GLOBAL_BATCH_SIZE=str(args.batch * procs),
               CONFIG="small_cpu", NUM_BUCKETS="1", NUM_WORKERS="0", EPOCHS="1000", ACCELERATOR="cpu",
               MASTER_PORT=str(29700 + procs), TRAIN_MANIFESTS=str(train), VAL_MANIFEST=str(dev),
               TOKENIZER_DIR=str(tokenizer), OMP_NUM_THREADS=str(args.threads),
               EXTRA_ARGS=f"trainer.max_steps={args.steps} trainer.log_every_n_steps=1 "
                          "trainer.check_val_every_n_epoch=1000 mlperf.log_file=false "
                          "model.decoding.greedy.max_symbols=1 "
                          f"exp_manager.checkpoint_callback_params.always_save_nemo=false nemo_path={out / 'm.nemo'}")
    proc = subprocess.run([str(REPO / "scripts" / "train_rnnt_1x1.sh"), str(out), str(out)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{procs}-process run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    (events,) = out.rglob("events.out.tfevents.*")
    acc = EventAccumulator(str(events))
    acc.Reload()
    values = [e.value for e in acc.Scalars("train_audio_s_per_s")][args.warmup:]
    if not values:
        sys.exit(f"no steps after the {args.warmup} warm-up steps; raise --steps")
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="optimiser steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="first steps left out of the median")
    parser.add_argument("--batch", type=int, default=8, help="utterances per process per step")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--data-dir", type=Path, help="prepared corpus with manifests/train.json, manifests/dev.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.data_dir:
            train, dev = args.data_dir / "manifests" / "train.json", args.data_dir / "manifests" / "dev.json"
            (tokenizer,) = args.data_dir.glob("tokenizer_spe_*")
        else:
            train, dev, tokenizer = _corpus(tmp / "corpus")
        one = run(1, args, train, dev, tokenizer, tmp / "p1")
        print(f"1 process : {one:8.2f} audio-s/s", flush=True)
        two = run(2, args, train, dev, tokenizer, tmp / "p2")
        print(f"2 processes: {two:8.2f} audio-s/s  scaling {two / one:.2f}x", flush=True)
    print(json.dumps({"audio_s_per_s_1proc": round(one, 3), "audio_s_per_s_2proc": round(two, 3),
                      "scaling": round(two / one, 3), "steps": args.steps, "batch_per_process": args.batch,
                      "threads_per_process": args.threads}))


if __name__ == "__main__":
    main()
