"""EMA callback: validation on EMA weights, EMA left in the model at the end, checkpoints resume exactly."""

import copy

import lightning.pytorch as pl
import pytest
import torch

from rnnt_plugin.optim import LAMB, MLPerfLRPolicy
from rnnt_plugin.optim.ema import EMA, ema_state_dict_from_checkpoint, ema_weights_applied

DECAY = 0.9
EPOCHS = 4
STEPS_PER_EPOCH = 2  # 8 samples, batches of 4


def _flat(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()]).clone()


class TinyModule(pl.LightningModule):
    """Linear regression trained with our LAMB and LR policy; records the weights each validation sees."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(3, 2)
        with torch.no_grad():
            self.net.weight.copy_(torch.tensor([[0.5, -0.2, 0.1], [0.3, 0.8, -0.6]]))
            self.net.bias.copy_(torch.tensor([0.1, -0.1]))
        self.val_weights = []

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        self.val_weights.append(_flat(self))

    def configure_optimizers(self):
        opt = LAMB(self.parameters(), lr=0.05)
        sched = MLPerfLRPolicy(opt, warmup_epochs=1, hold_epochs=1, lr_exp_gamma=0.5, steps_per_epoch=STEPS_PER_EPOCH)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class RecordRawWeights(pl.Callback):
    """Weights after every optimiser step (runs after EMA's hook: callbacks keep their order)."""

    def __init__(self):
        self.after_step = []

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.after_step.append(_flat(pl_module))


class KillAt(pl.Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("killed")


def _loaders():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, generator=gen)
    y = x @ torch.tensor([[1.0, -1.0], [2.0, 0.5], [-0.5, 1.5]]) + 0.3
    data = torch.utils.data.TensorDataset(x, y)
    return torch.utils.data.DataLoader(data, batch_size=4), torch.utils.data.DataLoader(data, batch_size=8)


def _trainer(callbacks, **kwargs):
    return pl.Trainer(
        accelerator="cpu", devices=1, max_epochs=EPOCHS, callbacks=callbacks, logger=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0, **kwargs,
    )


def _fit(callbacks, ckpt_path=None, **kwargs):
    model = TinyModule()
    trainer = _trainer(callbacks, **kwargs)
    trainer.fit(model, *_loaders(), ckpt_path=ckpt_path)
    return model, trainer


def _expected_ema(initial, raw_after_steps):
    ema, out = initial.clone(), []
    for w in raw_after_steps:
        ema = DECAY * ema + (1 - DECAY) * w
        out.append(ema)
    return out


def test_ema_follows_the_weights_until_start_step(tmp_path):
    start = 3
    ema, record = EMA(decay=DECAY, start_step=start), RecordRawWeights()
    model, _ = _fit([ema, record], enable_checkpointing=False)
    expected = _expected_ema(record.after_step[start - 1], record.after_step[start:])
    torch.testing.assert_close(model.val_weights[0], record.after_step[STEPS_PER_EPOCH - 1], rtol=0, atol=0)
    torch.testing.assert_close(model.val_weights[1], expected[2 * STEPS_PER_EPOCH - start - 1], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(_flat(model), expected[-1], rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="start_step"):
        EMA(decay=DECAY, start_step=-1)


def test_ema_validates_on_ema_and_leaves_ema_in_model(tmp_path):
    ema, record = EMA(decay=DECAY), RecordRawWeights()
    initial = _flat(TinyModule())
    model, trainer = _fit([ema, record], enable_checkpointing=False)

    assert len(record.after_step) == EPOCHS * STEPS_PER_EPOCH and ema.num_updates == EPOCHS * STEPS_PER_EPOCH
    expected = _expected_ema(initial, record.after_step)
    # one validation per epoch, each on the EMA after that epoch's steps, never on the raw weights
    assert len(model.val_weights) == EPOCHS
    for epoch, seen in enumerate(model.val_weights, start=1):
        torch.testing.assert_close(seen, expected[epoch * STEPS_PER_EPOCH - 1], rtol=1e-6, atol=1e-7)
        assert not torch.allclose(seen, record.after_step[epoch * STEPS_PER_EPOCH - 1], rtol=0, atol=1e-4)
    torch.testing.assert_close(_flat(model), expected[-1], rtol=1e-6, atol=1e-7)
    assert ema.ema_in_model

    # a checkpoint written now holds the raw weights to resume from, and the EMA in the callback state
    path = tmp_path / "end.ckpt"
    trainer.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    raw = torch.cat([ckpt["state_dict"]["net.weight"].flatten(), ckpt["state_dict"]["net.bias"].flatten()])
    assert torch.equal(raw, record.after_step[-1])
    ema_sd = ema_state_dict_from_checkpoint(ckpt)
    torch.testing.assert_close(torch.cat([ema_sd["net.weight"].flatten(), ema_sd["net.bias"].flatten()]), expected[-1])


def test_ema_resumes_exactly_after_a_kill(tmp_path):
    ref_model, _ = _fit([EMA(decay=DECAY), ref_record := RecordRawWeights()], enable_checkpointing=False)

    kill_step = 2 * STEPS_PER_EPOCH
    # an epoch-end checkpoint (after that epoch's validation ran on swapped-in EMA weights), killed right after;
    # resuming inside an epoch is the data sampler's business, not the EMA's
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, save_on_train_epoch_end=True)
    with pytest.raises(RuntimeError, match="killed"):
        _fit([EMA(decay=DECAY), KillAt(kill_step), saver])
    ckpt_path = tmp_path / "epoch=1-step=4.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=True)  # only tensors and plain types
    assert ckpt["global_step"] == kill_step and ckpt["callbacks"]["EMA"]["num_updates"] == kill_step

    resumed_ema, resumed_record = EMA(decay=DECAY), RecordRawWeights()
    resumed_model, _ = _fit([resumed_ema, resumed_record], ckpt_path=str(ckpt_path), enable_checkpointing=False)

    assert len(resumed_record.after_step) == EPOCHS * STEPS_PER_EPOCH - kill_step
    assert torch.equal(resumed_record.after_step[-1], ref_record.after_step[-1])  # raw weights
    assert torch.equal(_flat(resumed_model), _flat(ref_model))  # EMA weights, left in the model
    assert resumed_ema.num_updates == EPOCHS * STEPS_PER_EPOCH


def test_reloading_a_checkpoint_after_training_then_saving_with_ema(tmp_path):
    """NeMo's checkpoint callback with save_best_model reloads the best checkpoint at train end before writing the
    .nemo: the model then holds that checkpoint's raw weights, and `ema_weights_applied` puts its EMA in."""
    saver = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, save_on_train_epoch_end=True)
    ema = EMA(decay=DECAY)
    model, trainer = _fit([ema, saver])
    ckpt_path = tmp_path / "epoch=1-step=4.ckpt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    trainer._checkpoint_connector.restore(str(ckpt_path))
    assert not ema.ema_in_model
    assert torch.equal(_flat(model), torch.cat([ckpt["state_dict"][k].flatten() for k in ("net.weight", "net.bias")]))
    with ema_weights_applied(model) as applied:
        saved = _flat(model)
    shadow = ckpt["callbacks"]["EMA"]["shadow"]
    assert applied and torch.equal(saved, torch.cat([shadow[k].flatten() for k in ("net.weight", "net.bias")]))


def test_ema_weights_applied_context_restores_raw_weights():
    model = TinyModule()
    with ema_weights_applied(model) as applied:  # no trainer, no EMA: nothing changes
        assert applied is False
    ema = EMA(decay=DECAY, apply_at_train_end=False)
    model, _ = _fit([ema], enable_checkpointing=False)
    raw = _flat(model)
    shadow = torch.cat([t.flatten() for t in ema.ema_weights.values()])
    with ema_weights_applied(model) as applied:
        assert applied and torch.equal(_flat(model), shadow)
    assert torch.equal(_flat(model), raw) and not torch.equal(raw, shadow)


def test_ema_rejects_bad_decay_and_mismatched_state():
    with pytest.raises(ValueError, match="decay"):
        EMA(decay=1.0)
    ema = EMA()
    ema.load_state_dict({"num_updates": 1, "last_step": 1, "shadow": {"other.weight": torch.zeros(1)}})
    with pytest.raises(ValueError, match="other.weight"):
        with ema.applied(TinyModule()):
            pass
    with pytest.raises(ValueError, match="no EMA"):
        ema_state_dict_from_checkpoint(copy.deepcopy({"state_dict": {}, "callbacks": {}}))
