"""RNN-T loss on CPU, forward + backward: rnnt_plugin's fused Numba loss vs NeMo 3.0's losses and log_softmax.

Usage:
    .venv/bin/python benchmarks/loss.py --quick   # ours + log_softmax; NeMo warprnnt_numba on the small shape (~3 min)
    .venv/bin/python benchmarks/loss.py           # + NeMo warprnnt_numba on all shapes, NeMo pytorch on the small
                                                  #   one (~15 min: NeMo pytorch alone takes ~8 min there)
    .venv/bin/python benchmarks/loss.py --gpu     # on CUDA instead: fp32/fp16/bf16 at an MLPerf size (see below)

GPU mode (--gpu; --gpu-shape B T U1 V, default 64 240 80 1024): per logits dtype, CUDA-event medians of ours
forward + backward, one torch.log_softmax forward and a device-to-device copy of the logits; `gb_per_s` is the
bytes the loss must move (docs/gpu-loss.md: 12 per float32 logit, 6 per float16/bfloat16 one) over its time;
`peak_extra_x_logits` is the peak of torch's allocator during forward + backward over the logits' bytes
(`inplace_...`: with grad_inplace); NeMo's warprnnt_numba (float32) is timed too where NeMo imports.
`gpu_rows(device="cpu")` runs the same code on the CPU with wall-clock timers (the tests' dry run).

Shapes are B x T x (U+1) x V float32 logits: 4x100x31x1024, 8x150x41x1024, 2x250x81x1024, full lengths.
Timing: one process, 1 thread (torch and Numba) unless stated; medians over --repeats runs of forward +
backward (the gradient buffer's allocation included), ours and log_softmax interleaved; NeMo's losses (fed the
same raw logits; they apply log_softmax themselves) run once on the large shapes (~1 minute each).
`lsm_fwd_ms` is one torch.log_softmax forward over the logits, `lsm_passes` = ours_ms / lsm_fwd_ms.
Memory: each case runs in a fresh subprocess; the logits are made as the output of an op (like the joint's),
numba kernels are compiled/loaded on a tiny input first, then the peak-RSS mark is reset (write "5" to
/proc/self/clear_refs) and the extra memory is VmHWM after forward + backward minus VmRSS before, divided by the
logits' bytes. log_softmax's own 1.0x checks the method.
2-thread scaling: ours at 1 thread / ours at 2 threads (torch.set_num_threads, which our loss follows), wall
clock; on a shared, loaded machine that reflects the load, so `two_thread_cpu_scaling` is also given: CPU time of
all threads at 1 thread / CPU time of the busiest thread at 2 threads (its critical path; per-thread utime +
stime from /proc/self/task/*/stat, 10 ms ticks), which is what the wall-clock ratio would be on idle cores.
`lsm_two_thread_scaling` is the same ratio for torch.log_softmax: a pass over the logits bound by memory
bandwidth, so it shows how far any streaming kernel can scale on this machine's memory (compare with ours).
The last line is one JSON object for the 8x150x41x1024 case.
"""

import argparse
import glob
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from rnnt_plugin.device_timing import median_ms

SHAPES = ((4, 100, 31, 1024), (8, 150, 41, 1024), (2, 250, 81, 1024))
MAIN_SHAPE = (8, 150, 41, 1024)


def make_inputs(shape, seed=0):
    """Logits (B, T, U+1, V) float32, labels (B, U), full lengths (B,)."""
    n_batch, max_t, max_u1, vocab = shape
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(shape, generator=gen)
    labels = torch.randint(0, vocab - 1, (n_batch, max_u1 - 1), generator=gen)
    return logits, labels, torch.full((n_batch,), max_t), torch.full((n_batch,), max_u1 - 1)


def loss_fn(impl: str, blank: int, inplace: bool = False):
    """fn(logits, labels, logit_lengths, target_lengths) -> scalar mean loss, for impl in ours/numba/pytorch."""
    if impl == "ours":
        from rnnt_plugin.losses import rnnt_loss

        return lambda x, y, tl, ul: rnnt_loss(x, y, tl, ul, blank=blank, grad_inplace=inplace)
    from nemo.collections.asr.losses.rnnt import resolve_rnnt_loss

    nemo = resolve_rnnt_loss({"numba": "warprnnt_numba", "pytorch": "pytorch"}[impl], blank_idx=blank)
    return lambda x, y, tl, ul: nemo(acts=x, labels=y, act_lens=tl, label_lens=ul).mean()


def step(fn, logits, labels, logit_lengths, target_lengths) -> float:
    """Seconds for one forward + backward."""
    x = logits.detach().requires_grad_()
    start = time.perf_counter()
    fn(x, labels, logit_lengths, target_lengths).backward()
    elapsed = time.perf_counter() - start
    del x
    return elapsed


def lsm_forward(logits) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        out = torch.log_softmax(logits, dim=-1)
    elapsed = time.perf_counter() - start
    del out
    return elapsed


def _thread_ticks() -> dict:
    """{thread id: utime + stime clock ticks} for the threads of this process."""
    ticks = {}
    for path in glob.glob("/proc/self/task/*/stat"):
        with open(path, encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # fields from the 3rd on (after the command name)
        ticks[path.split("/")[4]] = int(fields[11]) + int(fields[12])
    return ticks


def thread_profile(fn, inputs, repeats: int, threads: int):
    """(median wall seconds, CPU ticks of all threads, CPU ticks of the busiest thread) over repeats steps."""
    torch.set_num_threads(threads)
    step(fn, *inputs)  # start the thread pools
    before = _thread_ticks()
    walls = [step(fn, *inputs) for _ in range(repeats)]
    spent = [ticks - before.get(tid, 0) for tid, ticks in _thread_ticks().items()]
    torch.set_num_threads(1)
    return statistics.median(walls), sum(spent), max(spent)


def _proc_status(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def memory_child(impl: str, shape, inplace: bool) -> None:
    """Print the peak extra RSS of one forward + backward as a multiple of the logits' bytes (see docstring)."""
    torch.set_num_threads(1)
    blank = shape[-1] - 1
    small = make_inputs((2, 3, 3, shape[-1]))
    if impl != "log_softmax":
        fn = loss_fn(impl, blank, inplace)
        fn(small[0].clone().requires_grad_(), *small[1:]).backward()  # compile / load kernels
    data, labels, logit_lengths, target_lengths = make_inputs(shape)
    offset = torch.zeros((), requires_grad=True)
    logits = data + offset  # an op's output, as the joint's is; its backward needs no copy of the logits
    del data
    with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
        f.write("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
    before = _proc_status("VmRSS")
    if impl == "log_softmax":
        lsm_forward(logits.detach())
    else:
        fn(logits, labels, logit_lengths, target_lengths).backward()
    peak = _proc_status("VmHWM")
    print(json.dumps({"extra_x_logits": (peak - before) / logits.numel() / logits.element_size()}))


def measure_memory(impl: str, shape, inplace: bool = False) -> float:
    cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", impl, *map(str, shape)]
    if inplace:
        cmd.append("--inplace")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"memory case {impl} {shape} failed:\n{proc.stderr[-3000:]}")
    return round(json.loads(proc.stdout.strip().splitlines()[-1])["extra_x_logits"], 3)


def bench_shape(shape, repeats: int, run_nemo_numba: bool, run_nemo_pytorch: bool, threads: int) -> dict:
    torch.set_num_threads(1)
    inputs = make_inputs(shape)
    blank = shape[-1] - 1
    ours = loss_fn("ours", blank)
    step(ours, *make_inputs((2, 3, 3, shape[-1])))  # compile / load the kernels
    ours_s, lsm_s = [], []
    for _ in range(repeats):
        ours_s.append(step(ours, *inputs))
        lsm_s.append(lsm_forward(inputs[0]))
    ours_ms, lsm_ms = 1e3 * statistics.median(ours_s), 1e3 * statistics.median(lsm_s)
    row = {"shape": "x".join(map(str, shape)), "ours_ms": round(ours_ms, 1), "lsm_fwd_ms": round(lsm_ms, 1),
           "lsm_passes": round(ours_ms / lsm_ms, 2)}
    for impl, enabled in (("numba", run_nemo_numba), ("pytorch", run_nemo_pytorch)):
        if enabled:
            nemo_ms = 1e3 * step(loss_fn(impl, blank), *inputs)  # one run: ~1 minute on the large shapes
            row[f"nemo_{impl}_ms"] = round(nemo_ms, 1)
            row[f"speedup_vs_nemo_{impl}"] = round(nemo_ms / ours_ms, 1)
    _, single_ticks, _ = thread_profile(ours, inputs, repeats, 1)
    multi_s, _, busiest_ticks = thread_profile(ours, inputs, repeats, threads)
    row[f"ours_{threads}t_ms"] = round(1e3 * multi_s, 1)
    row[f"{threads}_thread_scaling"] = round(ours_ms / row[f"ours_{threads}t_ms"], 2)
    row[f"{threads}_thread_cpu_scaling"] = round(single_ticks / busiest_ticks, 2)
    torch.set_num_threads(threads)
    lsm_multi_ms = 1e3 * statistics.median([lsm_forward(inputs[0]) for _ in range(repeats)])
    torch.set_num_threads(1)
    row[f"lsm_{threads}_thread_scaling"] = round(lsm_ms / lsm_multi_ms, 2)
    row["peak_extra_x_logits"] = measure_memory("ours", shape)
    row["inplace_peak_extra_x_logits"] = measure_memory("ours", shape, inplace=True)
    row["lsm_peak_extra_x_logits"] = measure_memory("log_softmax", shape)
    if run_nemo_numba and shape == MAIN_SHAPE:
        row["nemo_numba_peak_extra_x_logits"] = measure_memory("numba", shape)
    return row


GPU_SHAPE = (64, 240, 80, 1024)
LOSS_BYTES_PER_LOGIT = {torch.float32: 12, torch.float16: 6, torch.bfloat16: 6, torch.float64: 24}


def _peak_extra(fn, logits: torch.Tensor) -> float:
    """Peak allocator bytes above the current ones during fn(), over the logits' bytes (CUDA only)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return round((torch.cuda.max_memory_allocated() - before) / (logits.numel() * logits.element_size()), 3)


def gpu_rows(shape=GPU_SHAPE, dtypes=(torch.float32, torch.float16, torch.bfloat16), repeats: int = 5,
             device: str = "cuda") -> list:
    """One row per dtype: ours vs log_softmax and a copy (see the module docstring)."""
    device = torch.device(device)
    from rnnt_plugin.losses import rnnt_loss

    n_batch, max_t, max_u1, vocab = shape
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, vocab - 1, (n_batch, max_u1 - 1), generator=gen).to(device)
    logit_lengths = torch.full((n_batch,), max_t, device=device)
    target_lengths = torch.full((n_batch,), max_u1 - 1, device=device)
    rows = []
    for dtype in dtypes:
        logits = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)

        def ours(source=logits, inplace=False):
            x = source.detach().requires_grad_()
            rnnt_loss(x, labels, logit_lengths, target_lengths, blank=vocab - 1, grad_inplace=inplace).backward()

        copy = torch.empty_like(logits)
        ours_ms = median_ms(ours, repeats, device)
        lsm_ms = median_ms(lambda: torch.log_softmax(logits, -1), repeats, device)
        copy_ms = median_ms(lambda: copy.copy_(logits), repeats, device)
        row = {"device": str(device), "shape": "x".join(map(str, shape)), "dtype": str(dtype).split(".")[1],
               "ours_ms": round(ours_ms, 3), "lsm_fwd_ms": round(lsm_ms, 3), "copy_ms": round(copy_ms, 3),
               "lsm_passes": round(ours_ms / lsm_ms, 2),
               "gb_per_s": round(logits.numel() * LOSS_BYTES_PER_LOGIT[dtype] / ours_ms / 1e6, 1),
               "copy_gb_per_s": round(2 * logits.numel() * logits.element_size() / copy_ms / 1e6, 1)}
        del copy
        if device.type == "cuda":
            row["peak_extra_x_logits"] = _peak_extra(ours, logits)
            scratch = logits.clone()
            row["inplace_peak_extra_x_logits"] = _peak_extra(lambda: ours(scratch, inplace=True), logits)
            del scratch
        if dtype == torch.float32 and importlib.util.find_spec("nemo") is not None:
            nemo = loss_fn("numba", vocab - 1)
            nemo_ms = median_ms(lambda: nemo(logits.detach().requires_grad_(), labels, logit_lengths,
                                              target_lengths).backward(), repeats, device)
            row.update(nemo_numba_ms=round(nemo_ms, 3), speedup_vs_nemo_numba=round(nemo_ms / ours_ms, 2))
        rows.append(row)
        del logits
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="skip NeMo's slow CPU losses: numba on the large shapes, pytorch everywhere")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="thread count of the scaling run")
    parser.add_argument("--memory-child", nargs=5, metavar=("IMPL", "B", "T", "U1", "V"), help=argparse.SUPPRESS)
    parser.add_argument("--inplace", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--gpu", action="store_true", help="benchmark on CUDA (fp32, fp16, bf16) instead of the CPU")
    parser.add_argument("--gpu-shape", type=int, nargs=4, default=GPU_SHAPE, metavar=("B", "T", "U1", "V"))
    args = parser.parse_args(argv)
    if args.gpu:
        rows = gpu_rows(tuple(args.gpu_shape), repeats=args.repeats)
        for row in rows:
            print(json.dumps(row), flush=True)
        print(json.dumps({"gpu": torch.cuda.get_device_name(), "rows": rows}))
        return
    if args.memory_child:
        memory_child(args.memory_child[0], tuple(map(int, args.memory_child[1:])), args.inplace)
        return
    rows = []
    for shape in SHAPES:
        small = shape == SHAPES[0]
        row = bench_shape(shape, args.repeats, run_nemo_numba=small or not args.quick,
                          run_nemo_pytorch=small and not args.quick,
                          threads=args.threads)
        print(json.dumps(row), flush=True)
        rows.append(row)
    main_row = next(r for r in rows if r["shape"] == "x".join(map(str, MAIN_SHAPE)))
    print(json.dumps({
        "shape": main_row["shape"],
        "ours_ms": main_row["ours_ms"],
        "lsm_fwd_ms": main_row["lsm_fwd_ms"],
        "lsm_passes": main_row["lsm_passes"],
        "nemo_ms": main_row.get("nemo_numba_ms"),  # None with --quick: NeMo is not run on this shape
        "speedup_vs_nemo": main_row.get("speedup_vs_nemo_numba"),
        "peak_extra_x_logits": main_row["peak_extra_x_logits"],
        "inplace_peak_extra_x_logits": main_row["inplace_peak_extra_x_logits"],
        "nemo_peak_extra_x_logits": main_row.get("nemo_numba_peak_extra_x_logits"),
        "two_thread_scaling": main_row[f"{args.threads}_thread_scaling"],
        "two_thread_cpu_scaling": main_row[f"{args.threads}_thread_cpu_scaling"],
        "lsm_two_thread_scaling": main_row[f"lsm_{args.threads}_thread_scaling"],
        "load_average_1min": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
