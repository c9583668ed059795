"""CUDA kernels of rnnt_plugin.losses under Numba's CUDA simulator, against the CPU kernels; and the tuner.

One subprocess runs every simulator check (NUMBA_ENABLE_CUDASIM must be set before numba is imported, and
importing is slow). It imports rnnt_plugin.losses without the package's NeMo registration (a stub parent
module), runs both kernel sets on small numpy inputs with launch settings smaller than V and U (so the strided
loops and the shared-memory tree run more than one step), asserts agreement and prints a JSON summary.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SIM_SCRIPT = r"""
import json, sys, types
import numpy as np

package = types.ModuleType("rnnt_plugin")
package.__path__ = [sys.argv[1] + "/rnnt_plugin"]
sys.modules["rnnt_plugin"] = package  # skip rnnt_plugin/__init__ (NeMo registration): the kernels need no NeMo
from rnnt_plugin.losses import cpu, cuda as gpu, tune

def case(seed, n_batch, max_t, max_u, vocab, blank, dtype):
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal((n_batch, max_t, max_u + 1, vocab)) * 2).astype(dtype)
    labels = rng.integers(0, vocab - 1, (n_batch, max_u))
    labels[labels >= blank] += 1  # never the blank
    logit_lengths = rng.integers(1, max_t + 1, n_batch)
    target_lengths = rng.integers(0, max_u + 1, n_batch)
    logit_lengths[0], target_lengths[0] = max_t, max_u
    return logits, labels.astype(np.int64), logit_lengths.astype(np.int64), target_lengths.astype(np.int64)

def run(kernels, logits, labels, logit_lengths, target_lengths, blank, scale, fastemit, clamp, inplace, **config):
    shape = logits.shape[:3]
    cells = [np.full(shape, np.nan, logits.dtype) for _ in range(5)]
    ll = np.full(shape[0], np.nan, logits.dtype)
    x = logits.copy()
    kernels.forward(x, labels, logit_lengths, target_lengths, blank, *cells, ll, **config) if config else \
        (kernels.normaliser(x, labels, logit_lengths, target_lengths, blank, *cells[:3]),
         kernels.alpha_beta(cells[1], cells[2], logit_lengths, target_lengths, cells[3], cells[4], ll))
    grad = x if inplace else np.full_like(x, np.nan)
    kernels.gradient(x, labels, logit_lengths, target_lengths, blank, *cells, ll, scale, fastemit, clamp, grad,
                     **config)
    return cells, ll, grad

results = []
settings = [
    dict(seed=0, n_batch=2, max_t=3, max_u=2, vocab=5, blank=4, dtype=np.float64, fastemit=0.0, clamp=-1.0,
         inplace=False, config=dict(threads_per_cell=4, cells_per_block=2, diagonal_threads=2)),
    dict(seed=1, n_batch=3, max_t=4, max_u=3, vocab=6, blank=0, dtype=np.float32, fastemit=0.5, clamp=0.3,
         inplace=True, config=dict(threads_per_cell=2, cells_per_block=3, diagonal_threads=1)),
    dict(seed=2, n_batch=2, max_t=2, max_u=4, vocab=3, blank=1, dtype=np.float32, fastemit=0.0, clamp=-1.0,
         inplace=False, config=dict(threads_per_cell=8, cells_per_block=1, diagonal_threads=8)),
]
for s in settings:
    logits, labels, logit_lengths, target_lengths = case(s["seed"], s["n_batch"], s["max_t"], s["max_u"],
                                                         s["vocab"], s["blank"], s["dtype"])
    logits[-1, 0, 0, :] = -np.inf if s["seed"] == 1 else logits[-1, 0, 0, :]  # an impossible sample
    scale = np.linspace(0.5, -1.5, s["n_batch"]).astype(s["dtype"])
    args = (logits, labels, logit_lengths, target_lengths, s["blank"], scale, s["fastemit"], s["clamp"], s["inplace"])
    want_cells, want_ll, want_grad = run(cpu, *args)
    got_cells, got_ll, got_grad = run(gpu, *args, config=s["config"])
    tol = 1e-12 if s["dtype"] == np.float64 else 2e-5
    errors = {}
    for name, want, got in zip(("lse", "lp_blank", "lp_label", "alphas", "betas", "ll"),
                               want_cells + [want_ll], got_cells + [got_ll]):
        valid = ~np.isnan(want)  # cells outside the lattice are left unwritten by both
        assert np.array_equal(valid, ~np.isnan(got)), name
        assert np.array_equal(np.isinf(want[valid]), np.isinf(got[valid])), name
        finite = valid & np.isfinite(want)
        errors[name] = float(np.max(np.abs(want[finite] - got[finite]), initial=0.0))
        np.testing.assert_allclose(got[finite], want[finite], rtol=tol, atol=tol, err_msg=name)
    assert np.isfinite(got_grad).all() and np.abs(got_grad).sum() > 0
    np.testing.assert_allclose(got_grad, want_grad, rtol=tol, atol=tol, err_msg="grad")
    errors["grad"] = float(np.max(np.abs(got_grad - want_grad)))
    results.append({"dtype": np.dtype(s["dtype"]).name, "impossible": bool(np.isinf(want_ll).any()), **errors})

table = sys.argv[2]
tuned = tune.tune(shapes=[(1, 2, 2, 4)], dtypes=("float32", "float64", "bfloat16"), repeats=1,
                  cell_candidates=[dict(threads_per_cell=2, cells_per_block=1),
                                   dict(threads_per_cell=4, cells_per_block=2),
                                   dict(threads_per_cell=256, cells_per_block=4)],
                  diagonal_candidates=(1, 2), table_path=table)
print(json.dumps({"cases": results, "tuned": tuned, "table": json.load(open(table))}))
"""


def test_cuda_simulator_kernels_match_cpu_kernels_and_tuner_writes_an_entry(tmp_path):
    table = tmp_path / "table.json"
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "XDG_CACHE_HOME": str(tmp_path)}  # no user launch table
    proc = subprocess.run([sys.executable, "-c", SIM_SCRIPT, str(ROOT), str(table)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(summary["cases"]) == 3 and summary["cases"][1]["impossible"]
    tuned = summary["tuned"]
    assert tuned["config"]["threads_per_cell"] in (2, 4) and tuned["config"]["diagonal_threads"] in (1, 2)
    entries = summary["table"]["entries"]
    assert len(entries) == 1 and entries[0]["name"] == "unknown" and entries[0]["config"] == tuned["config"]
    assert "tuned" in entries[0]["source"] and "CUDA events" in entries[0]["source"]
    # 1,024-thread blocks do not fit the float64 gradient kernel (78 registers on sm_90): skipped, never timed
    assert [s["dtype"] for s in tuned["skipped"]] == ["float64"], tuned["skipped"]
    assert any("gradient: 1024 threads x 78 registers" in p for p in tuned["skipped"][0]["problems"])
    assert not [t for t in tuned["timings"] if t["config"]["threads_per_cell"] == 256 and t["dtype"] != "float32"]
    assert {t["dtype"] for t in tuned["timings"]} == {"float32", "float64", "bfloat16"}


def test_tuner_writes_the_user_table_and_lookups_read_it_first(tmp_path, monkeypatch):
    from rnnt_plugin.losses import launch

    user = tmp_path / "user" / "launch_table.json"
    monkeypatch.setattr(launch, "USER_TABLE", user)
    monkeypatch.delenv(launch.TABLE_ENV, raising=False)
    before = launch.PACKAGE_TABLE.read_text()
    mine = dict(threads_per_cell=64, cells_per_block=4, diagonal_threads=64)
    launch.write_entry(user, "NVIDIA H100", "9.0", mine, "test")
    launch.write_entry(user, "Tesla T4", "7.5", dict(mine, cells_per_block=2), "test")
    assert launch.PACKAGE_TABLE.read_text() == before
    assert [e["name"] for e in launch.load_table(user)["entries"]] == ["NVIDIA H100", "Tesla T4"]
    h100 = launch.Device("NVIDIA H100 80GB HBM3", "9.0", launch.Limits())
    assert launch.launch_config(h100) == mine
    a100 = launch.Device("NVIDIA A100-SXM4-40GB", "8.0", launch.Limits())  # not in the user table: the package's
    assert launch.launch_config(a100) == launch.lookup(launch.load_table(), a100.name, "8.0")


def test_launch_table_lookup_and_config_checks():
    import pytest

    from rnnt_plugin.losses import launch

    table = launch.load_table()
    assert launch.lookup(table, "NVIDIA H100 80GB HBM3", "9.0")["threads_per_cell"] == 256
    assert launch.lookup(table, "NVIDIA A100-SXM4-40GB", "8.0")["cells_per_block"] == 4
    assert launch.lookup(table, "Iluvatar BI-V100", "7.1")["threads_per_cell"] % 64 == 0  # 64-wide warps
    assert launch.lookup(table, "NVIDIA A100-SXM4-40GB", "9.0") is None  # the capability must match too
    assert launch.lookup(table, "Tesla T4", "7.5") is None
    good = dict(threads_per_cell=128, cells_per_block=2, diagonal_threads=64)
    assert launch.check_config(good) == good
    for bad, key in ((dict(good, threads_per_cell=96), "threads_per_cell"),
                     (dict(good, cells_per_block=16), "cells_per_block"),
                     (dict(good, diagonal_threads=0), "diagonal_threads"),
                     ({"threads_per_cell": 32}, "keys")):
        with pytest.raises(ValueError, match=key):
            launch.check_config(bad)


def test_losses_modules_import_no_cycle():
    """cuda.py (kernels) and launch.py (table) must not import tune.py (the tuner, which imports both)."""
    import ast

    package = ROOT / "rnnt_plugin" / "losses"
    graph = {}
    for path in package.glob("*.py"):
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module == "rnnt_plugin.losses":
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rnnt_plugin.losses."):
                imported.add(node.module.rsplit(".", 1)[1])
        graph[path.stem] = imported & {p.stem for p in package.glob("*.py")}

    def reaches(start, goal, seen=()):
        return any(n == goal or (n not in seen and reaches(n, goal, (*seen, n))) for n in graph.get(start, ()))

    assert not [m for m in graph if m != "__init__" and reaches(m, m)], graph
    assert "tune" not in graph["cuda"] and "cuda" not in graph["launch"], graph
