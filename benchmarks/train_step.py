"""One training step of the full MLPerf-size RNN-T on CPU: forward + backward + LAMB step, 1 and 2 threads.

Usage:
    .venv/bin/python benchmarks/train_step.py              # 3 timed steps per setting (~6-10 min on 2 cores)
    .venv/bin/python benchmarks/train_step.py --steps 1    # quicker, noisier

The network is built from configs/baseline_v3-1023sp.yaml (featurizer, encoder, prediction net, joint: ~49M
parameters, 1023 pieces + blank, dropout as configured, train mode) without a tokenizer, as
tests/test_model_size.py does; the loss is the plugin's fused RNN-T loss and the optimiser the plugin's LAMB.
Batch: 4 utterances of 5 s of noise (16 kHz), 20 random pieces each: T' = 84 encoder frames, U + 1 = 21.

The step is timed in phases so that joint + loss is measured exactly: featurizer (no grad), encoder and
prediction-net forward; joint + loss forward and backward down to the joint's inputs (detached leaves); the
encoder and prediction-net backward from those gradients; optimiser step. `joint_loss_share` is the
joint + loss time over the whole step (the issue's goal: under 15%). Figures are medians over --steps steps after
one warm-up step (which also loads the Numba kernels); the machine is shared, so they are noisy.
Each thread count is measured twice: with the joint in fp32 (the config's default, as the reference's AMP=false) and
with `joint.training_dtype: bfloat16` (the joint's matrix products in bf16 under autocast, the CPU counterpart of
the reference's AMP=true; the rest of the model stays fp32).
There is no peer to race here: NeMo's own CPU loss takes ~53 s for an 8x150x41x1024 batch (see benchmarks/loss.py).
The last line is a JSON object: audio_s_per_s_1thread, audio_s_per_s_2threads, joint_loss_share (1 thread, fp32
joint), and the same with the suffix _bf16_joint.
"""

import argparse
import json
import statistics
import time
from pathlib import Path

import rnnt_plugin  # noqa: F401  (first: quiets NeMo's telemetry start-up noise, registers our targets)
import torch
from hydra import compose, initialize_config_dir

from rnnt_plugin.losses import RNNTLoss
from rnnt_plugin.models import build_modules
from rnnt_plugin.optim import LAMB

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
VOCAB = 1023  # sentencepiece pieces; blank is index 1023
BATCH, SECONDS, TOKENS, SAMPLE_RATE = 4, 5.0, 20, 16000


def mlperf_modules():
    """Featurizer, encoder, prediction net and joint of the MLPerf config, in train mode."""
    with initialize_config_dir(config_dir=str(CONFIGS), version_base=None):
        cfg = compose(config_name="baseline_v3-1023sp")
    modules = build_modules(cfg.model, VOCAB, ("preprocessor", "encoder", "decoder", "joint"))
    for m in modules.values():
        m.train()
    return modules, cfg.model.optim


def make_batch(gen: torch.Generator):
    samples = int(SECONDS * SAMPLE_RATE)
    audio = torch.randn(BATCH, samples, generator=gen) * 0.1  # (B, S)
    audio_len = torch.full((BATCH,), samples, dtype=torch.int64)
    targets = torch.randint(0, VOCAB, (BATCH, TOKENS), generator=gen)  # (B, U)
    target_len = torch.full((BATCH,), TOKENS, dtype=torch.int64)
    return audio, audio_len, targets, target_len


def train_step(m, loss_fn, optimizer, audio, audio_len, targets, target_len) -> dict:
    """One step; returns the seconds of each phase."""
    t = [time.perf_counter()]
    with torch.no_grad():
        feats, feat_len = m["preprocessor"](input_signal=audio, length=audio_len)  # (B, 80, T)
    enc, enc_len = m["encoder"](audio_signal=feats, length=feat_len)  # (B, 1024, T')
    pred, _, _ = m["decoder"](targets=targets, target_length=target_len)  # (B, 512, U + 1)
    t.append(time.perf_counter())
    enc_leaf = enc.detach().requires_grad_()
    pred_leaf = pred.detach().requires_grad_()
    logits = m["joint"](encoder_outputs=enc_leaf, decoder_outputs=pred_leaf)  # (B, T', U + 1, V)
    loss = loss_fn(log_probs=logits, targets=targets, input_lengths=enc_len, target_lengths=target_len)
    loss.backward()
    del logits
    t.append(time.perf_counter())
    torch.autograd.backward([enc, pred], [enc_leaf.grad, pred_leaf.grad])
    t.append(time.perf_counter())
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    t.append(time.perf_counter())
    assert torch.isfinite(loss), float(loss)
    names = ("forward_enc_pred", "joint_loss", "backward_enc_pred", "optimizer")
    return {n: b - a for n, a, b in zip(names, t[:-1], t[1:])}


def measure(threads: int, joint_dtype, steps: int, modules, optimizer, loss_fn, batch) -> dict:
    torch.set_num_threads(threads)
    modules["joint"].training_dtype = joint_dtype
    train_step(modules, loss_fn, optimizer, *batch)  # warm-up
    phases = [train_step(modules, loss_fn, optimizer, *batch) for _ in range(steps)]
    totals = [sum(p.values()) for p in phases]
    median = {n: statistics.median(p[n] for p in phases) for n in phases[0]}
    step_s = statistics.median(totals)
    share = statistics.median(p["joint_loss"] / sum(p.values()) for p in phases)
    row = {"threads": threads, "joint_dtype": joint_dtype or "float32", "step_s": round(step_s, 3), "audio_s_per_s": round(BATCH * SECONDS / step_s, 3),
           "joint_loss_share": round(share, 4), **{f"{n}_s": round(v, 3) for n, v in median.items()}}
    print(json.dumps(row), flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per thread count (after one warm-up)")
    args = parser.parse_args()
    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    torch.manual_seed(0)
    modules, optim_cfg = mlperf_modules()
    params = [p for m in modules.values() for p in m.parameters()]
    print(f"parameters: {sum(p.numel() for p in params):,}", flush=True)
    optimizer = LAMB(params, lr=optim_cfg.lr, betas=tuple(optim_cfg.betas), eps=optim_cfg.eps,
                     weight_decay=optim_cfg.weight_decay, max_grad_norm=optim_cfg.max_grad_norm)
    loss_fn = RNNTLoss(blank=VOCAB, reduction="mean_batch")
    batch = make_batch(torch.Generator().manual_seed(0))
    result = {}
    for joint_dtype, suffix in ((None, ""), ("bfloat16", "_bf16_joint")):
        one = measure(1, joint_dtype, args.steps, modules, optimizer, loss_fn, batch)
        two = measure(2, joint_dtype, args.steps, modules, optimizer, loss_fn, batch)
        result.update({
            f"audio_s_per_s_1thread{suffix}": one["audio_s_per_s"],
            f"audio_s_per_s_2threads{suffix}": two["audio_s_per_s"],
            f"joint_loss_share{suffix}": one["joint_loss_share"],
            f"joint_loss_share_2threads{suffix}": two["joint_loss_share"],
            f"step_s_1thread{suffix}": one["step_s"],
            f"step_s_2threads{suffix}": two["step_s"],
        })
    print(json.dumps(result))


if __name__ == "__main__":
    main()
