"""CUDA launch-setting tuner of the RNN-T loss kernels: times candidates on the current GPU, writes a table entry.

    python -m rnnt_plugin.losses.tune                            # measure candidates here, write this GPU's entry
    python -m rnnt_plugin.losses.tune --shape 4 100 31 1024 --table /tmp/table.json --repeats 3

The table and its lookup live in launch.py (which cuda.py uses at launch time); this module imports both.
"""

import argparse
import datetime
import json
import statistics
import time
from pathlib import Path

import numpy as np

from rnnt_plugin.losses import cuda as kernels
from rnnt_plugin.losses.launch import PACKAGE_TABLE, current_device, load_table, write_entry


def candidates(warp_size: int = 32) -> list:
    """Cell-kernel settings to try: warp-multiple groups of 32..512 threads, blocks of at most 1024 threads."""
    found = []
    for tpc in (32, 64, 128, 256, 512):
        for cells in (1, 2, 4, 8):
            if tpc % warp_size == 0 and tpc * cells <= 1024:
                found.append({"threads_per_cell": tpc, "cells_per_block": cells})
    return found


def _time_ms(run, repeats: int) -> float:
    from numba import cuda

    run()  # compile and warm up
    cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def tune(shape=(8, 150, 41, 1024), repeats: int = 5, cell_candidates=None, diagonal_candidates=(32, 64, 128, 256),
         table_path=None, seed: int = 0) -> dict:
    """Time forward + gradient for each candidate on the current GPU; write the fastest as its table entry.

    shape is (B, T, U+1, V) of a float32 problem with full lengths. Returns {"config", "ms", "device", "table"}.
    """
    from numba import cuda

    n_batch, max_t, max_u1, vocab = shape
    rng = np.random.default_rng(seed)
    logits = cuda.to_device(rng.standard_normal(shape, dtype=np.float32))
    labels = cuda.to_device(rng.integers(0, vocab - 1, (n_batch, max(max_u1 - 1, 1)), dtype=np.int64))
    logit_lengths = cuda.to_device(np.full(n_batch, max_t, dtype=np.int64))
    target_lengths = cuda.to_device(np.full(n_batch, max_u1 - 1, dtype=np.int64))
    cells = [cuda.device_array((n_batch, max_t, max_u1), dtype=np.float32) for _ in range(5)]
    ll = cuda.device_array(n_batch, dtype=np.float32)
    scale = cuda.to_device(np.ones(n_batch, dtype=np.float32))
    grad = cuda.device_array(shape, dtype=np.float32)
    name, capability = current_device()
    warp_size = getattr(cuda.current_context().device, "WARP_SIZE", 32)

    def measure(config):
        def run():
            kernels.forward(logits, labels, logit_lengths, target_lengths, vocab - 1, *cells, ll, config=config)
            kernels.gradient(logits, labels, logit_lengths, target_lengths, vocab - 1, *cells, ll, scale, 0.0,
                             -1.0, grad, config=config)
        return _time_ms(run, repeats)

    default_diagonal = load_table()["default"]["diagonal_threads"]
    timed = [(measure({**c, "diagonal_threads": default_diagonal}), c)
             for c in (cell_candidates or candidates(warp_size))]
    best_cells = min(timed, key=lambda pair: pair[0])[1]
    timed = [(measure({**best_cells, "diagonal_threads": d}), d) for d in diagonal_candidates]
    best_ms, best_diagonal = min(timed, key=lambda pair: pair[0])
    config = {**best_cells, "diagonal_threads": best_diagonal}
    path = Path(table_path) if table_path else PACKAGE_TABLE
    source = (f"tuned {datetime.date.today().isoformat()} on shape {list(shape)}: "
              f"{best_ms:.3f} ms forward+gradient (median of {repeats})")
    write_entry(path, name, capability, config, source)
    return {"config": config, "ms": best_ms, "device": f"{name} ({capability})", "table": str(path)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=4, default=(8, 150, 41, 1024), metavar=("B", "T", "U1", "V"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--table", type=Path, default=None, help="table to update (default: the package's)")
    args = parser.parse_args(argv)
    print(json.dumps(tune(tuple(args.shape), args.repeats, table_path=args.table)))


if __name__ == "__main__":
    main()
