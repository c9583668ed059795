"""A tiny training run for the training tests: the small_cpu config at width 32 on the shared corpus (batch 8, one
bucket: 5 steps an epoch), no augmentation, dither 0 and no dropout, so two runs with the same seed compute the same
losses; and a callback that records each step."""

import collections
from pathlib import Path

import lightning.pytorch as pl
import torch
from hydra import compose, initialize_config_dir

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
STEPS_PER_EPOCH = 5


def tiny_cfg(corpus, tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        return compose(config_name="small_cpu", overrides=[
            f"model.tokenizer.dir={corpus.tokenizer_dir}",
            f"model.train_ds.manifest_filepath={corpus.manifests['train']}",
            f"model.validation_ds.manifest_filepath={corpus.manifests['dev']}",
            "model.model_defaults.enc_hidden=32", "model.model_defaults.pred_hidden=32",
            "model.model_defaults.joint_hidden=32",
            "model.train_ds.batch_size=8", "model.train_ds.augmentor=null", "model.spec_augment=null",
            "model.preprocessor.dither=0.0", "model.decoding.greedy.max_symbols=1",  # cheap training-batch WER
            "model.ctc_warmup.steps=0",
            "model.optim.sched.warmup_epochs=1", "model.optim.sched.hold_epochs=1",
            "trainer.log_every_n_steps=1", "trainer.max_epochs=2", "trainer.check_val_every_n_epoch=100",
            "+trainer.enable_progress_bar=false", "+trainer.enable_model_summary=false",
            "exp_manager.checkpoint_callback_params.always_save_nemo=false",
            f"exp_manager.exp_dir={tmp_path / 'exp'}", f"nemo_path={tmp_path / 'model.nemo'}",
            *overrides,
        ])


class StepRecorder(pl.Callback):
    """Loss of each training batch by global step, the batch's transcripts (which utterances it holds) by epoch,
    and the weights after each batch; optionally dies at a step."""

    def __init__(self, die_at_step=None):
        self.losses, self.weights, self.die_at_step = {}, [], die_at_step
        self.batches = collections.defaultdict(list)  # epoch -> [padded token ids (B, U) of each batch]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.batches[trainer.current_epoch].append(batch[2].tolist())  # (signal, signal_len, transcript, ...)
        step = trainer.global_step
        if outputs:  # {} for a skipped step
            self.losses[step] = float(outputs["loss"])
        self.weights.append(torch.cat([p.detach().flatten() for p in pl_module.parameters()]).clone())
        if step == self.die_at_step:
            raise RuntimeError("killed")  # no checkpoint is written on the way out, as with SIGKILL
