"""The GPU path of rnnt_plugin.losses under Numba's CUDA simulator: ``tests/gpu_sim_cases.py`` in a subprocess with
NUMBA_ENABLE_CUDASIM=1 (it must be set before numba is imported), every case passing."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ROOT / "tests" / "gpu_sim_cases.py"
N_CASES = 11  # tests in gpu_sim_cases.py, parametrised cases counted


def test_simulator_suite_passes(tmp_path):
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1", "XDG_CACHE_HOME": str(tmp_path)}  # no user launch table
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CASES)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    passed = re.search(r"(\d+) passed", proc.stdout)
    assert passed and int(passed.group(1)) == N_CASES, proc.stdout[-2000:]
