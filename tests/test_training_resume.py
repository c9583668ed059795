"""Kill and resume: a run killed mid-epoch and restarted with the same config continues from its last checkpoint
(model, LAMB, LR policy, EMA, bucketing sampler position, RNG: speed perturbation on, drawn in 2 DataLoader worker
processes) and computes the same losses and final weights as an uninterrupted run. (tests/test_ddp.py starts a run
from a checkpoint at an epoch's end.)
"""

import pytest
import torch

from rnnt_plugin.models import load_model
from rnnt_plugin.training.trainer import train
from tiny_training import STEPS_PER_EPOCH, StepRecorder, tiny_cfg

TOTAL_STEPS = 2 * STEPS_PER_EPOCH
CHECKPOINT_EVERY = 3  # checkpoints at steps 3 and 6; killed at step 8, mid-epoch 2 (steps 6-10)
KILL_AT = 8


SPEED = "{polyphase_speed: {prob: 1.0, sr: 16000, min_speed_rate: 0.85, max_speed_rate: 1.15, rate_step_hz: 20}}"


def _cfg(corpus, tmp_path, run: str):
    """The tiny run with speed perturbation on, in worker processes: its random rates must resume too."""
    return tiny_cfg(corpus, tmp_path / run, "mlperf.log_file=false", f"model.train_ds.augmentor={SPEED}",
                    "model.train_ds.num_workers=2",
                    f"+exp_manager.checkpoint_callback_params.every_n_train_steps={CHECKPOINT_EVERY}",
                    "+exp_manager.checkpoint_callback_params.every_n_epochs=0",
                    "exp_manager.checkpoint_callback_params.save_top_k=-1")


def _flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_killed_run_resumes_to_the_same_losses(synth_corpus, tmp_path):
    reference = StepRecorder()
    ref_model = train(_cfg(synth_corpus, tmp_path, "whole"), [reference])
    assert sorted(reference.losses) == list(range(1, TOTAL_STEPS + 1))  # by global step after the batch
    first, second = reference.batches[0], reference.batches[1]  # each epoch has its own draw from the buckets
    assert len(first) == len(second) == STEPS_PER_EPOCH and first != second

    with pytest.raises(RuntimeError, match="killed"):
        train(_cfg(synth_corpus, tmp_path, "killed"), [StepRecorder(die_at_step=KILL_AT)])
    resumed = StepRecorder()
    resumed_model = train(_cfg(synth_corpus, tmp_path, "killed"), [resumed])  # the same command again

    last_checkpoint = KILL_AT // CHECKPOINT_EVERY * CHECKPOINT_EVERY
    assert sorted(resumed.losses) == list(range(last_checkpoint + 1, TOTAL_STEPS + 1))
    for step, loss in resumed.losses.items():
        assert loss == pytest.approx(reference.losses[step], rel=1e-5, abs=1e-6), step
    torch.testing.assert_close(_flat(resumed_model), _flat(ref_model), rtol=1e-5, atol=1e-6)  # EMA weights

    # examples/evaluate.py and transcribe.py read a training checkpoint (safe unpickling) as its EMA weights
    (last,) = (tmp_path / "whole").rglob("*last.ckpt")
    assert torch.load(last, weights_only=False)["global_step"] == TOTAL_STEPS
    torch.testing.assert_close(_flat(load_model(str(last))), _flat(ref_model), rtol=0, atol=0)
