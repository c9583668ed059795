"""CUDA launch settings of the RNN-T loss kernels: the launch table, keyed by GPU name and compute capability.

Settings (see cuda.py): threads_per_cell (power of two; threads sharing one lattice cell's V loop),
cells_per_block (cells per block; threads_per_cell * cells_per_block <= 1024), diagonal_threads (block size of
the alpha/beta wavefront). The table is launch_table.json beside this file; a table named by the environment
variable RNNT_PLUGIN_LAUNCH_TABLE is consulted first. Lookup: the entry whose name is the longest
case-insensitive substring of the GPU's name and whose compute capability matches (or is "*"), else "default".

This module imports nothing of the kernels (cuda.py imports it; tune.py, the tuner, imports both).
"""

import functools
import json
import os
import tempfile
from pathlib import Path

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
