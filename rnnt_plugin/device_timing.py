"""Median milliseconds of a function on a device: CUDA events on a GPU, the wall clock on the CPU (benchmarks)."""

import statistics
import time

import torch


def median_ms(fn, repeats: int, device: torch.device) -> float:
    """Median milliseconds of ``repeats`` calls of ``fn()`` after one warm-up call (kernel compilation, allocator);
    on CUDA, timed with events on the current stream."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            fn()
            times.append(1e3 * (time.perf_counter() - begin))
    return statistics.median(times)
