"""CUDA launch-setting tuner of the RNN-T loss kernels: times candidates on the current GPU, writes a table entry.

    python -m rnnt_plugin.losses.tune                         # MLPerf sizes, fp32/fp16/bf16 -> the user table
    python -m rnnt_plugin.losses.tune --shape 64 240 80 1024 --dtypes bfloat16 --table /tmp/table.json
    python -m rnnt_plugin.losses.tune --package-table         # maintainers: update launch_table.json itself

Each candidate setting is timed with CUDA events (forward + gradient, median of --repeats after a warm-up) on
random logits of each shape and dtype, with utterance lengths drawn from 60-100% of the padded T and U, as in
duration-bucketed MLPerf batches; the setting with the least total time over all problems becomes this GPU's
entry. Candidates that do not fit a compiled kernel on this GPU (launch.py's checks) are skipped, never
launched. The entry goes to launch.USER_TABLE (consulted before the package's table) unless --table or
--package-table says otherwise. The table and its lookup live in launch.py; this module imports both.
"""

import argparse
import datetime
import json
import statistics
from pathlib import Path

import numpy as np

from rnnt_plugin.losses import cuda as kernels
from rnnt_plugin.losses import launch
from rnnt_plugin.losses.launch import PACKAGE_TABLE, USER_TABLE, load_table, write_entry

MLPERF_SHAPES = ((64, 240, 80, 1024), (128, 320, 131, 1024))  # (B, T, U+1, V): bucket sizes at 64 and 128 per GPU
DTYPES = ("float32", "float16", "bfloat16")


def candidates(warp_size: int = 32) -> list:
    """Cell-kernel settings to try: warp-multiple groups of 32..512 threads, blocks of at most 1024 threads."""
    found = []
    for tpc in (32, 64, 128, 256, 512):
        for cells in (1, 2, 4, 8):
            if tpc % warp_size == 0 and tpc * cells <= 1024:
                found.append({"threads_per_cell": tpc, "cells_per_block": cells})
    return found


def problem(shape, name: str, seed: int = 0) -> tuple:
    """Device arrays of a loss problem: (forward args, gradient args) for kernels.forward / kernels.gradient."""
    from numba import cuda

    n_batch, max_t, max_u1, vocab = shape
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(shape, dtype=np.float32)
    if name == "bfloat16":
        stored = (values.view(np.uint32) >> np.uint32(16)).astype(np.uint16).view(np.int16)  # truncated: random
    else:
        stored = values.astype(name)
    del values
    compute = kernels.compute_dtype(name)
    logits = cuda.to_device(stored)
    labels = cuda.to_device(rng.integers(0, vocab - 1, (n_batch, max(max_u1 - 1, 1)), dtype=np.int64))
    logit_lengths = cuda.to_device(np.maximum(1, (max_t * rng.uniform(0.6, 1.0, n_batch)).astype(np.int64)))
    target_lengths = cuda.to_device(((max_u1 - 1) * rng.uniform(0.6, 1.0, n_batch)).astype(np.int64))
    cells = [cuda.device_array((n_batch, max_t, max_u1), dtype=compute) for _ in range(5)]
    ll = cuda.device_array(n_batch, dtype=compute)
    scale = cuda.to_device(np.ones(n_batch, dtype=compute))
    grad = cuda.device_array(stored.shape, dtype=stored.dtype)
    common = (logits, labels, logit_lengths, target_lengths, vocab - 1, *cells, ll)
    return common, (*common, scale, compute.type(0.0), compute.type(-1.0), grad)  # fastemit, clamp as launched


def _event_ms(run, repeats: int) -> float:
    """Median milliseconds of run() between two CUDA events on the default stream, after a warm-up run."""
    from numba import cuda

    run()  # compile and warm up
    times = []
    for _ in range(repeats):
        start, end = cuda.event(), cuda.event()
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _unfit(config: dict, name: str, forward_args, gradient_args, dev) -> list:
    """The launch checks' objections to `config` for every kernel, as "<kind>: <reason>"."""
    args = {"normaliser": forward_args[:8], "alpha_beta": (*forward_args[6:8], *forward_args[2:4],
                                                          *forward_args[8:11]), "gradient": gradient_args}
    return [f"{kind}: {reason}" for kind in launch.KINDS
            for reason in kernels.setting_problems(kind, name, args[kind], config, dev)]


def tune(shapes=MLPERF_SHAPES, dtypes=DTYPES, repeats: int = 5, cell_candidates=None,
         diagonal_candidates=(32, 64, 128, 256), table_path=None, seed: int = 0) -> dict:
    """Time forward + gradient for each candidate on the current GPU; write the fastest as its table entry.

    shapes: (B, T, U+1, V) problems; dtypes: logits dtype names. table_path: default launch.USER_TABLE.
    Returns {"config", "ms" (total over the problems), "device", "table", "timings", "skipped"}.
    """
    from numba import cuda

    dev = launch.device()
    free = cuda.current_context().get_memory_info()[0]
    problems = []
    for shape in shapes:
        for name in dtypes:
            need = 2 * int(np.prod(shape)) * (2 if name in ("float16", "bfloat16") else 4)  # logits + gradient
            if need < 0.8 * free:
                problems.append((tuple(shape), name))
    if not problems:
        raise ValueError(f"no shape of {shapes} fits in {free / 2**30:.1f} GiB of free GPU memory")
    timings, skipped = [], []

    def total_ms(configs) -> dict:
        """{index of config: total ms over the problems} for the configs that fit every kernel everywhere."""
        totals = {i: 0.0 for i in range(len(configs))}
        for shape, name in problems:
            forward_args, gradient_args = problem(shape, name, seed)
            for i, config in enumerate(configs):
                if i not in totals:
                    continue
                unfit = _unfit(config, name, forward_args, gradient_args, dev)
                if unfit:
                    skipped.append({"config": config, "dtype": name, "problems": unfit})
                    del totals[i]
                    continue

                def run(config=config):
                    kernels.forward(*forward_args, config=config)
                    kernels.gradient(*gradient_args, config=config)

                ms = _event_ms(run, repeats)
                timings.append({"config": config, "shape": list(shape), "dtype": name, "ms": round(ms, 4)})
                totals[i] += ms
            del forward_args, gradient_args
        return totals

    default_diagonal = load_table()["default"]["diagonal_threads"]
    cells = [{**c, "diagonal_threads": default_diagonal} for c in (cell_candidates or candidates(dev.limits.warp_size))]
    totals = total_ms(cells)
    if not totals:
        raise RuntimeError(f"no candidate setting fits the kernels on {dev.name}: {skipped}")
    best_cells = cells[min(totals, key=totals.get)]
    diagonals = [{**best_cells, "diagonal_threads": d} for d in diagonal_candidates]
    totals = total_ms(diagonals)
    best = min(totals, key=totals.get)
    config, best_ms = diagonals[best], totals[best]
    path = Path(table_path) if table_path else USER_TABLE
    source = (f"tuned {datetime.date.today().isoformat()} with CUDA events on {[list(s) for s in shapes]} x "
              f"{list(dtypes)}: {best_ms:.3f} ms forward+gradient in all (median of {repeats})")
    write_entry(path, dev.name, dev.capability, config, source)
    return {"config": config, "ms": best_ms, "device": f"{dev.name} ({dev.capability})", "table": str(path),
            "timings": timings, "skipped": skipped}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=4, action="append", metavar=("B", "T", "U1", "V"),
                        help=f"a problem shape (repeatable; default {MLPERF_SHAPES})")
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=("float32", "float64", "float16",
                                                                              "bfloat16"))
    parser.add_argument("--repeats", type=int, default=5)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--table", type=Path, default=None, help=f"table to update (default: {USER_TABLE})")
    where.add_argument("--package-table", action="store_true", help=f"update the package's own {PACKAGE_TABLE.name}")
    args = parser.parse_args(argv)
    table = PACKAGE_TABLE if args.package_table else args.table
    print(json.dumps(tune(tuple(map(tuple, args.shape or MLPERF_SHAPES)), tuple(args.dtypes), args.repeats,
                          table_path=table)))


if __name__ == "__main__":
    main()
