"""scripts/gpu_check.sh --dry-run: the prepared GPU check runs end to end on the CPU (tiny shapes), so that it
cannot rot while no GPU is at hand."""

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_dry_run_writes_every_section(tmp_path):
    out = tmp_path / "check"
    run = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry-run"], cwd=REPO,
                         env={**os.environ, "OUT": str(out)}, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(summary) == ["env", "greedy", "loss_correctness", "train_step"]
    assert all(s["exit"] == 0 for s in summary.values()), summary

    env = json.loads((out / "env.json").read_text())
    assert env["dry_run"] and env["device"] == "cpu" and env["torch"] == __import__("torch").__version__
    loss = json.loads((out / "loss_correctness.json").read_text())
    assert loss["all_ok"] and loss["impossible_sample_ok"] and len(loss["cases"]) == 27
    assert {c["dtype"] for c in loss["cases"]} == {"float32", "float16", "bfloat16"}
    assert any(c["side_stream"] for c in loss["cases"]) and any("loss_vs_reference" in c for c in loss["cases"])
    steps = json.loads((out / "train_step.json").read_text())
    assert steps["model_parameters"] == 49_006_592
    assert [r["mode"] for r in steps["rows"]] == ["fp32", "tf32", "bf16"]
    assert all(r["utterances_per_s"] > 0 and 0 < r["loss_share"] < 1 for r in steps["rows"])
    assert json.loads((out / "greedy.json").read_text())["rtfx"] > 0
