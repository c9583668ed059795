"""CUDA launch settings of the RNN-T loss kernels: the launch table, keyed by GPU name and compute capability.

Settings (see cuda.py): threads_per_cell (power of two; threads sharing one lattice cell's V loop),
cells_per_block (cells per block; threads_per_cell * cells_per_block <= 1024), diagonal_threads (block size of
the alpha/beta wavefront). Tables are consulted in this order: the one named by the environment variable
RNNT_PLUGIN_LAUNCH_TABLE, the user's (USER_TABLE, where `python -m rnnt_plugin.losses.tune` writes), the
package's launch_table.json beside this file. Lookup: the entry whose name is the longest
case-insensitive substring of the GPU's name and whose compute capability matches (or is "*"), else "default".

A setting is checked against what the compiled kernel may use on the device before it is launched (cuda.py):
threads per block (the device's and the kernel's own maximum), registers per thread x threads (the register
file of one block, allocated per warp in units of 256), shared memory (static + dynamic). On a GPU the figures
are the driver's; under the simulator they come from ARCH_LIMITS and the ptxas figures recorded in
kernel_resources.json (`python -m rnnt_plugin.losses.resources` rewrites them). A setting that does not fit
falls back to SAFE_CONFIG with one log line; a device that cannot be queried, or has no table entry, gets the
table's default with one log line.

This module imports nothing of the kernels (cuda.py imports it; tune.py, the tuner, imports both).
"""

import functools
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

PACKAGE_TABLE = Path(__file__).with_name("launch_table.json")
TABLE_ENV = "RNNT_PLUGIN_LAUNCH_TABLE"
USER_TABLE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rnnt_plugin" / "launch_table.json"
KEYS = ("threads_per_cell", "cells_per_block", "diagonal_threads")
RESOURCES_FILE = Path(__file__).with_name("kernel_resources.json")
KINDS = ("normaliser", "alpha_beta", "gradient")
MAX_REGISTERS_PER_THREAD = 255  # every architecture since Kepler (sm_35)
# 256-thread blocks (128 for alpha_beta) x 255 registers = 65,280 <= 65,536 registers per block, 256 x 8 B = 2 KiB
# shared: fits any kernel on any CUDA GPU since Kepler, whatever ptxas allocates.
SAFE_CONFIG = {"threads_per_cell": 128, "cells_per_block": 2, "diagonal_threads": 128}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """What one block may use on a device."""

    max_threads_per_block: int = 1024
    registers_per_block: int = 65536
    shared_per_block: int = 48 * 1024  # bytes, static + dynamic, without the per-kernel opt-in
    warp_size: int = 32
    register_unit: int = 256  # registers are allocated per warp, in units of this many


# Per-architecture facts (CUDA C++ Programming Guide, "Technical Specifications per Compute Capability"): the
# per-block limits are the same on every architecture from 5.0 to 12.0; what differs per SM (resident threads,
# shared memory) changes occupancy, not whether a block can launch. Unknown capabilities get Limits().
ARCH_LIMITS = {
    "7.0": ("V100", Limits()),
    "7.5": ("T4, RTX 20", Limits()),
    "8.0": ("A100", Limits()),
    "8.6": ("A10, A40, RTX 30", Limits()),
    "8.7": ("Jetson Orin", Limits()),
    "8.9": ("L4, L40, RTX 40", Limits()),
    "9.0": ("H100, H200, GH200", Limits()),
    "10.0": ("B200, GB200", Limits()),
    "12.0": ("RTX 50, RTX PRO 6000", Limits()),
}


@dataclass(frozen=True)
class KernelResources:
    """What a compiled kernel needs: registers per thread, static shared memory (bytes per block) and the most
    threads per block it can launch with (the driver's figure; from ptxas figures, the device's maximum)."""

    registers: int
    static_shared: int = 0
    max_threads_per_block: int = 1024


@dataclass(frozen=True)
class Device:
    """A CUDA device as the launch code sees it; known is False when the query failed (then limits are Limits())."""

    name: str
    capability: str
    limits: Limits
    known: bool = True


_LOGGED = set()


def _log_once(message: str) -> None:
    if message not in _LOGGED:
        _LOGGED.add(message)
        log.warning(message)


def registers_per_block(registers: int, threads: int, limits: Limits) -> int:
    """Registers a block of `threads` threads takes from the register file (per-warp allocation units)."""
    per_warp = -(-registers * limits.warp_size // limits.register_unit) * limits.register_unit
    return per_warp * -(-threads // limits.warp_size)


def block_shape(kind: str, config: dict, itemsize: int) -> tuple:
    """(threads per block, dynamic shared bytes) of a launch of kernel `kind` with `config`."""
    if kind == "alpha_beta":
        return config["diagonal_threads"], 0
    threads = config["threads_per_cell"] * config["cells_per_block"]
    return threads, threads * itemsize  # one partial max / sum per thread


def problems(kind: str, config: dict, itemsize: int, resources: KernelResources, limits: Limits) -> list:
    """Why `config` cannot launch kernel `kind` (compute dtype of `itemsize` bytes) on a device; [] if it can."""
    threads, dynamic_shared = block_shape(kind, config, itemsize)
    found = []
    most = min(limits.max_threads_per_block, resources.max_threads_per_block)
    if threads > most:
        found.append(f"{threads} threads per block > {most} (the kernel's and the device's maximum)")
    needed = registers_per_block(resources.registers, threads, limits)
    if needed > limits.registers_per_block:
        found.append(f"{threads} threads x {resources.registers} registers = {needed} registers per block "
                     f"> {limits.registers_per_block}")
    shared = resources.static_shared + dynamic_shared
    if shared > limits.shared_per_block:
        found.append(f"{shared} bytes of shared memory per block > {limits.shared_per_block}")
    return found


def arch_limits(capability: str) -> Limits:
    return ARCH_LIMITS.get(capability, ("", Limits()))[1]


@functools.lru_cache(maxsize=None)
def _recorded(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def recorded_resources(kind: str, name: str, capability: str, path: Path = RESOURCES_FILE) -> KernelResources:
    """ptxas figures of kernel `kind` for logits dtype `name` on the architecture of `capability` (the most over
    the recorded architectures if that one is not recorded); for use without a GPU."""
    figures = _recorded(str(path))["figures"]
    arch = "sm_" + capability.replace(".", "")
    rows = [table[f"{kind}/{name}"] for found, table in figures.items() if found == arch or arch not in figures]
    return KernelResources(registers=max(r["registers"] for r in rows), static_shared=max(r["shared"] for r in rows))


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


def device() -> Device:
    """Numba's current CUDA device with the driver's per-block limits; if the query fails (no driver, the
    simulator), Device("unknown", "0.0", Limits(), known=False) and one log line saying so."""
    from numba import cuda

    try:
        dev = cuda.current_context().device
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        major, minor = dev.compute_capability
        limits = Limits(max_threads_per_block=int(dev.MAX_THREADS_PER_BLOCK),
                        registers_per_block=int(dev.MAX_REGISTERS_PER_BLOCK),
                        shared_per_block=int(dev.MAX_SHARED_MEMORY_PER_BLOCK), warp_size=int(dev.WARP_SIZE))
        return Device(name, f"{major}.{minor}", limits)
    except Exception as error:  # any failure of the query (driver errors, simulator stubs): the safe default
        _log_once(f"RNN-T loss: could not query the CUDA device ({type(error).__name__}: {error}); using the "
                  f"launch table's default setting and per-block limits {Limits()}")
        return Device("unknown", "0.0", Limits(), known=False)


def current_device() -> tuple:
    """(name, "major.minor") of Numba's current CUDA device; ("unknown", "0.0") and one log line if unknown."""
    dev = device()
    return dev.name, dev.capability


@functools.lru_cache(maxsize=None)
def _cached_config(name: str, compute_capability: str, env_table: str, user_table: str) -> tuple:
    """(config items, whether a table entry matched)."""
    for path in [Path(p) for p in (env_table, user_table) if p and Path(p).exists()] + [PACKAGE_TABLE]:
        table = load_table(path)
        config = lookup(table, name, compute_capability)
        if config is not None:
            return tuple(config.items()), True
    return tuple(load_table(PACKAGE_TABLE)["default"].items()), False


def launch_config(dev: Device = None) -> dict:
    """Launch settings for `dev` (default: the current CUDA device); the table's default, with one log line,
    for a device without an entry."""
    dev = device() if dev is None else dev
    items, matched = _cached_config(dev.name, dev.capability, os.environ.get(TABLE_ENV, ""), str(USER_TABLE))
    if not matched and dev.known:
        _log_once(f"RNN-T loss: no launch-table entry for {dev.name} (compute capability {dev.capability}); "
                  f"using the default {dict(items)} (tune one with `python -m rnnt_plugin.losses.tune`)")
    return dict(items)


def write_entry(path: Path, name: str, compute_capability: str, config: dict, source: str) -> None:
    """Insert or replace the (name, compute_capability) entry of the table at path (atomic write); a new table
    holds only its own entries (lookups fall through to the package's table for the others)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        table = load_table(path)
    else:
        table = {"comment": f"user launch table of rnnt_plugin.losses (consulted before {PACKAGE_TABLE.name})",
                 "default": load_table()["default"], "entries": []}
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
