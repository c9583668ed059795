"""The prepared GPU check: one section at a time, each writing ``<out>/<section>.json`` as it finishes.

Usage (scripts/gpu_check.sh runs every section with its own timeout):
    python benchmarks/gpu_check.py env --out $OUT
    python benchmarks/gpu_check.py loss_correctness --out $OUT
    python benchmarks/gpu_check.py train_step --out $OUT
    python benchmarks/gpu_check.py greedy --out $OUT
    python benchmarks/gpu_check.py train_step --out /tmp/check --dry-run     # CPU, tiny shapes (what CI runs)

Sections (torch-only: the core model and the loss; NeMo is used only where it is importable, for comparison):
- ``env``: versions, the GPU and its memory.
- ``loss_correctness``: the loss on the device against the CPU kernel (float64) and against the autograd
  reference (:mod:`rnnt_plugin.losses.reference`), loss and gradient, for fp32 / fp16 / bf16 logits, padded lengths,
  blank first and last, FastEmit, clamp, the in-place gradient, an impossible sample, an empty transcript, and
  logits produced on a side stream.
- ``train_step``: MLPerf-size training steps of ``rnnt_plugin.core.mlperf_rnnt`` (10 s utterances, 80 pieces each)
  at batch 64 and 128 in fp32, TF32 and bf16 (encoder and joint under autocast): utterances per second, the loss's
  share of the step, peak memory; a batch that does not fit is reported, not fatal.
- ``greedy``: batched greedy decoding of the MLPerf-size model: real-time factor at batch 32.
CUDA events time the device; ``--dry-run`` runs the same code on the CPU with tiny shapes and wall-clock timing.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from rnnt_plugin.core import mlperf_rnnt
from rnnt_plugin.device_timing import median_ms
from rnnt_plugin.losses import rnnt_loss
from rnnt_plugin.losses.reference import reference_costs
from rnnt_plugin.optim import LAMB

SAMPLE_RATE = 16000
SECTIONS = ("env", "loss_correctness", "train_step", "greedy")


def section_env(device: torch.device, dry_run: bool) -> dict:
    import numba

    info = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "numba": numba.__version__, "device": str(device), "dry_run": dry_run}
    try:
        import nemo

        info["nemo"] = nemo.__version__
    except ImportError:
        info["nemo"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                    memory_gib=round(props.total_memory / 2**30, 1), multiprocessors=props.multi_processor_count)
    return info


def _case(seed: int, batch: int, frames: int, labels: int, vocab: int, blank: int):
    """float64 logits (B, T, U+1, V), labels (B, U) without blank, lengths (B,): sample 0 full size, the last one an
    empty transcript, the others padded."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, frames, labels + 1, vocab, generator=gen, dtype=torch.float64) * 2
    non_blank = torch.tensor([v for v in range(vocab) if v != blank % vocab])
    targets = non_blank[torch.randint(0, len(non_blank), (batch, labels), generator=gen)]
    logit_lengths = torch.randint(1, frames + 1, (batch,), generator=gen)
    target_lengths = torch.randint(0, labels + 1, (batch,), generator=gen)
    logit_lengths[0], target_lengths[0], target_lengths[-1] = frames, labels, 0
    return logits, targets, logit_lengths, target_lengths


def _loss_and_grad(logits, *args, **kwargs):
    x = logits.detach().clone().requires_grad_()
    losses = rnnt_loss(x, *args, reduction="none", **kwargs)
    losses.sum().backward()
    return losses.detach().double().cpu(), x.grad.double().cpu()


def section_loss_correctness(device: torch.device, dry_run: bool) -> dict:
    """Every case's largest loss and gradient differences from the CPU kernel and from the reference."""
    shape = (3, 6, 4, 7) if dry_run else (4, 12, 6, 33)  # B, T, U, V
    # (relative loss, absolute gradient) differences allowed: the references see the same rounded logits, so the
    # loss differs only by fp32 accumulation, the gradient also by its rounding to the logits' dtype (eps 2^-11, 2^-8).
    tolerance = {torch.float32: (1e-5, 1e-5), torch.float16: (1e-5, 2e-3), torch.bfloat16: (1e-5, 1.6e-2)}
    cases = []
    for dtype in tolerance:
        for blank in (0, -1):
            for options in ({}, {"fastemit_lambda": 0.01}, {"clamp": 0.5}, {"grad_inplace": True}):
                cases.append((dtype, blank, options, False))
        cases.append((dtype, -1, {}, True))  # logits made on a side stream
    rows, worst_ok = [], True
    for i, (dtype, blank, options, side_stream) in enumerate(cases):
        logits, targets, logit_lengths, target_lengths = _case(i, *shape, blank=blank)
        rounded = logits.to(dtype).double()  # what the device sees, in float64 for the references
        cpu_loss, cpu_grad = _loss_and_grad(rounded, targets, logit_lengths, target_lengths, blank=blank,
                                            **{k: v for k, v in options.items() if k != "grad_inplace"})
        on_device = [t.to(device) for t in (targets, logit_lengths, target_lengths)]
        if side_stream and device.type == "cuda":
            stream = torch.cuda.Stream(device)
            with torch.cuda.stream(stream):
                x = logits.to(device=device, dtype=dtype)
                loss, grad = _loss_and_grad(x, *on_device, blank=blank, **options)
            torch.cuda.synchronize(device)
        else:
            loss, grad = _loss_and_grad(logits.to(device=device, dtype=dtype), *on_device, blank=blank, **options)
        row = {"dtype": str(dtype).split(".")[1], "blank": blank, "options": options, "side_stream": side_stream,
               "loss_vs_cpu": float((loss - cpu_loss).abs().max()),
               "grad_vs_cpu": float((grad - cpu_grad).abs().max())}
        if not options:  # the reference has no clamp and no in-place gradient
            ref = reference_costs(rounded.clone().requires_grad_(), targets, logit_lengths, target_lengths,
                                  blank % shape[3])
            row["loss_vs_reference"] = float((loss - ref.detach()).abs().max())
        loss_rel, grad_abs = tolerance[dtype]
        row["ok"] = (row["loss_vs_cpu"] <= loss_rel * float(cpu_loss.abs().max()) and row["grad_vs_cpu"] <= grad_abs
                     and row.get("loss_vs_reference", 0.0) <= loss_rel * float(cpu_loss.abs().max()))
        worst_ok &= row["ok"]
        rows.append(row)
    impossible = _case(99, *shape, blank=-1)
    impossible[0][1, :, 0, impossible[1][1, 0]] = float("-inf")  # sample 1 can never emit its first label
    losses, grad = _loss_and_grad(impossible[0].float().to(device), *[t.to(device) for t in impossible[1:]], blank=-1)
    impossible_ok = bool(torch.isinf(losses[1]) and torch.isfinite(grad).all() and (grad[1] == 0).all())
    return {"shape_BTUV": shape, "cases": rows, "impossible_sample_ok": impossible_ok,
            "all_ok": worst_ok and impossible_ok}


def _batch(batch: int, seconds: float, pieces: int, vocab: int, device: torch.device):
    gen = torch.Generator().manual_seed(0)
    samples = int(seconds * SAMPLE_RATE)
    audio = (torch.randn(batch, samples, generator=gen) * 0.1).to(device)  # (B, S)
    audio_len = torch.full((batch,), samples, dtype=torch.int64, device=device)
    labels = torch.randint(0, vocab, (batch, pieces), generator=gen).to(device)  # (B, U)
    label_len = torch.full((batch,), pieces, dtype=torch.int64, device=device)
    return audio, audio_len, labels, label_len


def _step_figures(model, optimizer, batch, device: torch.device, repeats: int) -> dict:
    """Step time (forward, backward, LAMB), the loss's forward + backward alone, and the logits' size."""
    audio, audio_len, labels, label_len = batch

    def step():
        optimizer.zero_grad(set_to_none=True)
        model(audio, audio_len, labels, label_len).backward()
        optimizer.step()

    step_ms = median_ms(step, repeats, device)
    with torch.no_grad():
        encoded, encoded_len = model.encode(audio, audio_len)  # (B, T', D)
        logits = model.join(encoded, model.predict(labels)[0])  # (B, T', U + 1, V)

    def loss_only():
        x = logits.detach().requires_grad_()
        model.loss(x, labels, encoded_len, label_len).backward()

    loss_ms = median_ms(loss_only, repeats, device)
    return {"step_ms": round(step_ms, 2), "utterances_per_s": round(1000 * audio.shape[0] / step_ms, 1),
            "loss_ms": round(loss_ms, 2), "loss_share": round(loss_ms / step_ms, 3),
            "logits_gib": round(logits.numel() * logits.element_size() / 2**30, 2)}


def section_train_step(device: torch.device, dry_run: bool) -> dict:
    """Utterances per second, loss share and peak memory of MLPerf-size training steps."""
    vocab = 1023
    model = mlperf_rnnt(vocab).to(device).train()
    optimizer = LAMB(model.parameters(), lr=4e-3)
    batches = (2,) if dry_run else (64, 128)
    seconds, pieces = (1.0, 8) if dry_run else (10.0, 80)
    rows = []
    for batch in batches:
        for mode in ("fp32", "tf32", "bf16"):
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = mode == "tf32"
            model.encoder.training_dtype = model.joint.training_dtype = "bfloat16" if mode == "bf16" else None
            row = {"batch": batch, "mode": mode, "seconds": seconds, "pieces": pieces}
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            try:
                row.update(_step_figures(model, optimizer, _batch(batch, seconds, pieces, vocab, device), device,
                                         1 if dry_run else 5))
            except torch.cuda.OutOfMemoryError as e:
                row["out_of_memory"] = str(e).splitlines()[0]
            if device.type == "cuda":
                row["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
                torch.cuda.empty_cache()
            rows.append(row)
    return {"model_parameters": sum(p.numel() for p in model.parameters()), "rows": rows}


def section_greedy(device: torch.device, dry_run: bool) -> dict:
    """Real-time factor of featurizer + encoder + batched greedy search, MLPerf-size model (random weights)."""
    model = mlperf_rnnt(1023).to(device).eval()
    batch, seconds = (2, 1.0) if dry_run else (32, 10.0)
    audio, audio_len, _, _ = _batch(batch, seconds, 1, 1023, device)
    ms = median_ms(lambda: model.greedy_search(audio, audio_len), 1 if dry_run else 3, device)
    return {"batch": batch, "seconds": seconds, "ms": round(ms, 2), "rtfx": round(batch * seconds * 1000 / ms, 1)}


def run(section: str, out: Path, dry_run: bool, device: Optional[str] = None) -> dict:
    """Run one section on ``device`` (default: cuda, or the CPU with ``dry_run``) and write ``out/<section>.json``."""
    device = torch.device(device or ("cpu" if dry_run else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --dry-run on a machine without a GPU")
    started = time.perf_counter()
    result = globals()[f"section_{section}"](device, dry_run)
    result["section_seconds"] = round(time.perf_counter() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{section}.json.tmp"
    tmp.write_text(json.dumps(result, indent=1) + "\n")
    os.replace(tmp, out / f"{section}.json")
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("section", choices=SECTIONS)
    parser.add_argument("--out", type=Path, required=True, help="directory for <section>.json")
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes (no GPU needed)")
    args = parser.parse_args(argv)
    result = run(args.section, args.out, args.dry_run)
    print(json.dumps({"section": args.section, **result})[:2000])
    if result.get("all_ok") is False:
        sys.exit(1)


if __name__ == "__main__":
    main()
