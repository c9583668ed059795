"""benchmarks/loss.py's GPU mode, dry-run on the CPU (wall-clock timers, no allocator figures): the code that a
GPU check runs must not rot where there is no GPU."""

import importlib.util
from pathlib import Path

import torch

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "loss.py"


def test_gpu_mode_rows_run_on_the_cpu():
    spec = importlib.util.spec_from_file_location("loss_benchmark", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.gpu_rows(shape=(2, 3, 3, 8), repeats=1, device="cpu")
    assert [row["dtype"] for row in rows] == ["float32", "float16", "bfloat16"]
    for row in rows:
        assert row["device"] == "cpu" and row["shape"] == "2x3x3x8"
        assert row["ours_ms"] > 0 and row["lsm_fwd_ms"] > 0 and row["copy_ms"] > 0 and row["gb_per_s"] >= 0
        assert "peak_extra_x_logits" not in row  # torch.cuda's allocator figures exist only on CUDA
    assert module.LOSS_BYTES_PER_LOGIT[torch.bfloat16] == 6
