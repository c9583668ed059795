"""scripts/train_rnnt_1x1.sh with 2 gloo CPU processes (DDP) reaches the same weights and the same dev WER as
1 process that accumulates 2 micro-batches: the same global batch of 8 (2 x 4 and 1 x 4 x 2), one epoch of 5
optimiser steps, the first 2 of them CTC warm-up steps (which leave the prediction net's embedding without
gradients), then validation, which the 2 processes share (each its own 5 of the 10 dev utterances). The script's
CHECKPOINT argument starts a run in a new directory from another run's checkpoint.
"""

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import torch
from tensorboard_logs import scalars

REPO = Path(__file__).resolve().parents[1]
TINY = " ".join([
    "model.model_defaults.enc_hidden=32", "model.model_defaults.pred_hidden=32", "model.model_defaults.joint_hidden=32",
    "model.train_ds.augmentor=null", "model.spec_augment=null", "model.preprocessor.dither=0.0",
    "model.decoding.greedy.max_symbols=1", "model.ctc_warmup.steps=2",
    "model.optim.sched.warmup_epochs=1", "model.optim.sched.hold_epochs=1",
    "model.validation_ds.batch_size=2", "trainer.log_every_n_steps=1",
    "mlperf.log_file=false", "exp_manager.checkpoint_callback_params.always_save_nemo=false",
])


def _weights(nemo_path: Path) -> dict[str, torch.Tensor]:
    with tarfile.open(nemo_path) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("model_weights.ckpt"))
        return torch.load(io.BytesIO(tar.extractfile(member).read()), weights_only=True)


def _run(corpus, out: Path, num_gpus: int, accumulate: int, port: int, epochs: int = 1,
         checkpoint: Path | None = None) -> dict[str, torch.Tensor]:
    env = dict(os.environ, NUM_GPUS=str(num_gpus), GRAD_ACCUMULATION_STEPS=str(accumulate), GLOBAL_BATCH_SIZE="8",
               CONFIG="small_cpu", NUM_BUCKETS="1", NUM_WORKERS="0", EPOCHS=str(epochs), ACCELERATOR="cpu",
               MASTER_PORT=str(port), TRAIN_MANIFESTS=str(corpus.manifests["train"]),
               VAL_MANIFEST=str(corpus.manifests["dev"]), TOKENIZER_DIR=str(corpus.tokenizer_dir),
               OMP_NUM_THREADS="1", EXTRA_ARGS=f"{TINY} nemo_path={out / 'model.nemo'}")
    command = [str(REPO / "scripts" / "train_rnnt_1x1.sh"), str(out), str(corpus.data_dir)]
    run = subprocess.run(command + ([str(checkpoint)] if checkpoint else []), env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert f"NUM_GPUS {num_gpus} x GRAD_ACCUMULATION_STEPS {accumulate} x batch 4 (cpu)" in run.stdout
    return _weights(out / "model.nemo")


def test_two_gloo_processes_match_one_accumulating_process(synth_corpus, tmp_path):
    two = _run(synth_corpus, tmp_path / "ddp2", num_gpus=2, accumulate=1, port=29631)
    one = _run(synth_corpus, tmp_path / "ddp1", num_gpus=1, accumulate=2, port=29632)
    assert two.keys() == one.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-6, msg=name)
    logs = {run: scalars(tmp_path / run) for run in ("ddp2", "ddp1")}
    for run, log in logs.items():  # 5 optimiser steps with finite gradients, then validation of all 10
        grad_norms = [value for _, value in log["grad_norm"]]
        assert len(grad_norms) == 5 and all(0 < g < float("inf") for g in grad_norms), (run, grad_norms)
        assert [value for _, value in log["val_utterances"]] == [10], run
    (wer_two,), (wer_one,) = logs["ddp2"]["val_wer"], logs["ddp1"]["val_wer"]
    assert wer_two == pytest.approx(wer_one, abs=1e-6) and wer_one[1] > 0

    # CHECKPOINT: a second epoch in a new directory, starting from the 1-process run's last checkpoint
    (last,) = (tmp_path / "ddp1").rglob("*last.ckpt")
    _run(synth_corpus, tmp_path / "from_checkpoint", num_gpus=1, accumulate=2, port=29633, epochs=2,
         checkpoint=last)
    steps = [step for step, _ in scalars(tmp_path / "from_checkpoint")["grad_norm"]]
    assert steps == [5, 6, 7, 8, 9]  # the global steps of epoch 2 only
