"""CUDA launch settings of the RNN-T loss kernels: a table keyed by GPU name and compute capability, and a tuner.

    python -m rnnt_plugin.losses.tune                            # measure candidates here, write this GPU's entry
    python -m rnnt_plugin.losses.tune --shape 4 100 31 1024 --table /tmp/table.json --repeats 3

Settings (see cuda.py): threads_per_cell (power of two; threads sharing one lattice cell's V loop),
cells_per_block (cells per block; threads_per_cell * cells_per_block <= 1024), diagonal_threads (block size of
the alpha/beta wavefront). The table is launch_table.json beside this file; a table named by the environment
variable RNNT_PLUGIN_LAUNCH_TABLE is consulted first. Lookup: the entry whose name is the longest
case-insensitive substring of the GPU's name and whose compute capability matches (or is "*"), else "default".
"""

import argparse
import datetime
import functools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

PACKAGE_TABLE = Path(__file__).with_name("launch_table.json")
TABLE_ENV = "RNNT_PLUGIN_LAUNCH_TABLE"
KEYS = ("threads_per_cell", "cells_per_block", "diagonal_threads")


def check_config(config: dict) -> dict:
    """Validate a launch setting dict; raises ValueError naming the bad key."""
    if not isinstance(config, dict) or set(config) != set(KEYS):
        raise ValueError(f"launch config must have exactly the keys {KEYS}, got {config!r}")
    for key in KEYS:
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1024:
            raise ValueError(f"launch config `{key}` must be an int in [1, 1024], got {value!r}")
    tpc = config["threads_per_cell"]
    if tpc & (tpc - 1):
        raise ValueError(f"launch config `threads_per_cell` must be a power of two, got {tpc}")
    if tpc * config["cells_per_block"] > 1024:
        raise ValueError(f"threads_per_cell * cells_per_block must be <= 1024, got {tpc * config['cells_per_block']}")
    return config


def load_table(path: Path = PACKAGE_TABLE) -> dict:
    with open(path, encoding="utf-8") as f:
        table = json.load(f)
    check_config(table["default"])
    for entry in table["entries"]:
        check_config(entry["config"])
    return table


def lookup(table: dict, name: str, compute_capability: str):
    """The config of the best-matching entry of `table`, or None."""
    matches = [e for e in table["entries"] if e["name"].lower() in name.lower()
               and e["compute_capability"] in ("*", compute_capability)]
    if not matches:
        return None
    return max(matches, key=lambda e: (len(e["name"]), e["compute_capability"] != "*"))["config"]


def current_device() -> tuple:
    """(name, "major.minor") of Numba's current CUDA device; ("unknown", "0.0") if it cannot tell (simulator)."""
    from numba import cuda

    try:
        device = cuda.current_context().device
        name = device.name.decode() if isinstance(device.name, bytes) else str(device.name)
        major, minor = device.compute_capability
        return name, f"{major}.{minor}"
    except (AttributeError, TypeError, ValueError):
        return "unknown", "0.0"


@functools.lru_cache(maxsize=None)
def _cached_config(name: str, compute_capability: str, user_table: str) -> tuple:
    for path in ([Path(user_table)] if user_table else []) + [PACKAGE_TABLE]:
        table = load_table(path)
        config = lookup(table, name, compute_capability)
        if config is not None:
            return tuple(config.items())
    return tuple(load_table(PACKAGE_TABLE)["default"].items())


def launch_config() -> dict:
    """Launch settings for the current CUDA device."""
    return dict(_cached_config(*current_device(), os.environ.get(TABLE_ENV, "")))


def write_entry(path: Path, name: str, compute_capability: str, config: dict, source: str) -> None:
    """Insert or replace the (name, compute_capability) entry of the table at path (atomic write)."""
    path = Path(path)
    table = load_table(path if path.exists() else PACKAGE_TABLE)
    table["entries"] = [e for e in table["entries"]
                        if (e["name"], e["compute_capability"]) != (name, compute_capability)]
    table["entries"].append({"name": name, "compute_capability": compute_capability,
                             "config": check_config(dict(config)), "source": source})
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(table, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    _cached_config.cache_clear()


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

    from rnnt_plugin.losses import cuda as kernels

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
