"""scripts/train_rnnt_1x1.sh with 2 gloo CPU processes (DDP) reaches the same weights as 1 process that
accumulates 2 micro-batches: the same global batch of 8 (2 x 4 and 1 x 4 x 2), 3 optimiser steps, the first 2 of
them CTC warm-up steps (which leave the prediction net's embedding without gradients).
"""

import io
import os
import subprocess
import tarfile
from pathlib import Path

import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REPO = Path(__file__).resolve().parents[1]
TINY = " ".join([
    "model.model_defaults.enc_hidden=32", "model.model_defaults.pred_hidden=32", "model.model_defaults.joint_hidden=32",
    "model.train_ds.augmentor=null", "model.spec_augment=null", "model.preprocessor.dither=0.0",
    "model.decoding.greedy.max_symbols=1", "model.ctc_warmup.steps=2",
    "model.optim.sched.warmup_epochs=1", "model.optim.sched.hold_epochs=1",
    "trainer.max_steps=3", "trainer.check_val_every_n_epoch=100", "trainer.log_every_n_steps=1",
    "mlperf.log_file=false", "exp_manager.checkpoint_callback_params.always_save_nemo=false",
])


def _weights(nemo_path: Path) -> dict[str, torch.Tensor]:
    with tarfile.open(nemo_path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("model_weights.ckpt"))
        return torch.load(io.BytesIO(tar.extractfile(member).read()), weights_only=True)


def _run(corpus, out: Path, num_gpus: int, accumulate: int, port: int) -> dict[str, torch.Tensor]:
    env = dict(os.environ, NUM_GPUS=str(num_gpus), GRAD_ACCUMULATION_STEPS=str(accumulate), GLOBAL_BATCH_SIZE="8",
               CONFIG="small_cpu", NUM_BUCKETS="1", NUM_WORKERS="0", EPOCHS="1", ACCELERATOR="cpu",
               MASTER_PORT=str(port), TRAIN_MANIFESTS=str(corpus.manifests["train"]),
               VAL_MANIFEST=str(corpus.manifests["dev"]), TOKENIZER_DIR=str(corpus.tokenizer_dir),
               OMP_NUM_THREADS="1", EXTRA_ARGS=f"{TINY} nemo_path={out / 'model.nemo'}")
    run = subprocess.run([str(REPO / "scripts" / "train_rnnt_1x1.sh"), str(out), str(corpus.data_dir)],
                         env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"NUM_GPUS {num_gpus} x GRAD_ACCUMULATION_STEPS {accumulate} x batch 4 (cpu)" in run.stdout
    return _weights(out / "model.nemo")


def test_two_gloo_processes_match_one_accumulating_process(synth_corpus, tmp_path):
    two = _run(synth_corpus, tmp_path / "ddp2", num_gpus=2, accumulate=1, port=29631)
    one = _run(synth_corpus, tmp_path / "ddp1", num_gpus=1, accumulate=2, port=29632)
    assert two.keys() == one.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-6, msg=name)
    for run in ("ddp2", "ddp1"):  # both took 3 optimiser steps with finite gradients
        (events,) = (tmp_path / run).rglob("events.out.tfevents.*")
        acc = EventAccumulator(str(events))
        acc.Reload()
        grad_norms = [e.value for e in acc.Scalars("grad_norm")]
        assert len(grad_norms) == 3 and all(0 < g < float("inf") for g in grad_norms), (run, grad_norms)
