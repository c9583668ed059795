"""The GPU path of rnnt_plugin.losses under Numba's CUDA simulator: every logits dtype in and out, the in-place
gradient, launch settings checked against the kernels' limits, unknown GPUs, and the torch -> kernel bridge.

Shape legend: B batch, T frames, U labels (lattice rows U+1), V vocabulary incl. blank.

NUMBA_ENABLE_CUDASIM must be set before numba is imported, so ``tests/test_loss_gpu_sim.py`` runs this file in a
subprocess with it set (pytest does not collect it on its own: its name does not start with ``test_``). It imports
rnnt_plugin.losses without the package's NeMo registration (a stub parent module).
The simulator runs the kernels as Python (float64 scalars where the GPU has float32): these tests check the
kernels' logic, dtype handling and launch decisions; the PTX/ptxas tests check what a GPU would compile.
"""

import contextlib
import logging
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SIMULATED = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
if not SIMULATED:
    raise RuntimeError("tests/gpu_sim_cases.py runs under NUMBA_ENABLE_CUDASIM=1: pytest tests/test_loss_gpu_sim.py")
if "rnnt_plugin" not in sys.modules:
    _package = types.ModuleType("rnnt_plugin")
    _package.__path__ = [str(ROOT / "rnnt_plugin")]
    sys.modules["rnnt_plugin"] = _package  # skip rnnt_plugin/__init__ (NeMo registration): the loss needs no NeMo


def _case(seed, n_batch, max_t, max_u, vocab, blank):
    """float64 logits (B, T, U+1, V), labels (B, U) avoiding blank, lengths (B,); sample 0 is full size and the
    last one has an empty transcript."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n_batch, max_t, max_u + 1, vocab)) * 2
    labels = rng.integers(0, vocab - 1, (n_batch, max_u))
    labels[labels >= blank] += 1
    logit_lengths = rng.integers(1, max_t + 1, n_batch)
    target_lengths = rng.integers(0, max_u + 1, n_batch)
    logit_lengths[0], target_lengths[0] = max_t, max_u
    target_lengths[-1] = 0
    return logits, labels.astype(np.int64), logit_lengths.astype(np.int64), target_lengths.astype(np.int64)


def _storage(values, name):
    """float64 numpy values -> (array the kernels take, the values it holds as float64)."""
    import torch

    if name == "bfloat16":
        rounded = torch.from_numpy(values).to(torch.bfloat16)
        return rounded.view(torch.int16).numpy().copy(), rounded.double().numpy()
    stored = values.astype(name)
    return stored, stored.astype(np.float64)


def _decode(array, name):
    import torch

    if name == "bfloat16":
        return torch.from_numpy(array).view(torch.bfloat16).double().numpy()
    return array.astype(np.float64)


def _run(kernels, logits, labels, logit_lengths, target_lengths, blank, scale, fastemit, clamp, inplace,
         compute=np.float64, **config):
    shape = logits.shape[:3]
    cells = [np.full(shape, np.nan, compute) for _ in range(5)]
    ll = np.full(shape[0], np.nan, compute)
    x = logits.copy()
    if config:
        kernels.forward(x, labels, logit_lengths, target_lengths, blank, *cells, ll, **config)
    else:
        kernels.normaliser(x, labels, logit_lengths, target_lengths, blank, *cells[:3])
        kernels.alpha_beta(cells[1], cells[2], logit_lengths, target_lengths, cells[3], cells[4], ll)
    grad = x if inplace else np.full_like(x, 7)
    kernels.gradient(x, labels, logit_lengths, target_lengths, blank, *cells, ll, scale.astype(compute), fastemit,
                     clamp, grad, **config)
    return cells, ll, grad


@pytest.mark.parametrize("name", ["float32", "float64", "float16", "bfloat16"])
def test_kernels_read_and_write_each_dtype_in_place(name):
    """Lattice values and gradient of the CUDA kernels on logits stored in `name` agree with the CPU kernels on
    the same (rounded) values in float64; the gradient comes back in `name`, in place or not; impossible and
    empty-transcript samples, blank first and last, FastEmit and clamp included."""
    from rnnt_plugin.losses import cpu
    from rnnt_plugin.losses import cuda as gpu

    compute = np.float64 if name == "float64" else np.float32
    for seed, blank, fastemit, clamp, inplace, config in (
            (0, 0, 0.0, -1.0, False, dict(threads_per_cell=4, cells_per_block=2, diagonal_threads=2)),
            (1, 6, 0.5, 0.05, True, dict(threads_per_cell=2, cells_per_block=3, diagonal_threads=1))):
        values, labels, logit_lengths, target_lengths = _case(seed, 3, 4, 3, 7, blank)
        values[1, 0, 0, :] = -np.inf if seed == 1 else values[1, 0, 0, :]  # sample 1 impossible
        stored, exact = _storage(values, name)
        scale = np.array([0.5, -1.0, 2.0])
        args = (labels, logit_lengths, target_lengths, blank, scale, fastemit, clamp)
        want_cells, want_ll, want_grad = _run(cpu, exact, *args, inplace=False)
        got_cells, got_ll, got_grad = _run(gpu, stored, *args, inplace=inplace, compute=compute, config=config)
        assert got_grad.dtype == stored.dtype and (got_cells[0].dtype, got_ll.dtype) == (compute, compute)
        tol = 1e-12 if name == "float64" else 2e-5
        for what, want, got in zip(("lse", "lp_blank", "lp_label", "alphas", "betas", "ll"),
                                   want_cells + [want_ll], got_cells + [got_ll]):
            valid = ~np.isnan(want)  # cells outside the lattice are left unwritten by both
            assert np.array_equal(valid, ~np.isnan(got)), what
            assert np.array_equal(np.isinf(want[valid]), np.isinf(got[valid])), what
            finite = valid & np.isfinite(want)
            np.testing.assert_allclose(got[finite], want[finite], rtol=tol, atol=tol, err_msg=f"{name} {what}")
        assert np.isinf(got_ll[1]) == (seed == 1)
        # the gradient, rounded once to the storage dtype: within half an ulp of it (plus float32 arithmetic)
        grad = _decode(got_grad, name)
        ulp = {"float64": 1e-12, "float32": 2e-6, "float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}[name]
        np.testing.assert_allclose(grad, want_grad, rtol=ulp, atol=1e-6 if name != "float64" else 1e-12,
                                   err_msg=f"{name} grad")
        assert np.abs(grad).sum() > 0 and np.all(grad[1] == 0) == (seed == 1)


def test_bfloat16_conversions_match_torch():
    """The simulator's bfloat16 load/store (twins of the GPU's bit-level intrinsics) round as torch does."""
    import torch

    from rnnt_plugin.losses import cuda as gpu

    bits = np.arange(-32768, 32768, 97, dtype=np.int64).astype(np.int16)
    want = torch.from_numpy(bits).view(torch.bfloat16).float().numpy()
    got = np.array([gpu.py_load_bfloat16(b) for b in bits], dtype=np.float32)
    assert np.array_equal(np.isnan(got), np.isnan(want)) and np.array_equal(got[~np.isnan(got)], want[~np.isnan(want)])
    rng = np.random.default_rng(0)
    floats = np.concatenate([rng.standard_normal(2000).astype(np.float32) * 10.0 ** rng.integers(-40, 38, 2000),
                             np.array([0.0, -0.0, np.inf, -np.inf, 1.00390625, 1.01171875, 3.4e38, 1e-45],
                                      dtype=np.float32)]).astype(np.float32)  # two exact ties to even
    want = torch.from_numpy(floats).to(torch.bfloat16).view(torch.int16).numpy()
    got = np.array([gpu.py_store_bfloat16(f) for f in floats], dtype=np.int16)
    assert np.array_equal(got, want)
    assert np.isnan(gpu.py_load_bfloat16(gpu.py_store_bfloat16(np.float32(np.nan))))


H100 = dict(name="NVIDIA H100 80GB HBM3", capability="9.0")
OLD_H100_ENTRY = dict(threads_per_cell=256, cells_per_block=4, diagonal_threads=128)


def test_launch_settings_that_do_not_fit_are_never_launched(monkeypatch, caplog):
    """On an H100 (sm_90 ptxas figures), 1,024-thread blocks fit the float32 gradient kernel but not the float64
    one: it runs with launch.SAFE_CONFIG after one log line, and the block it gets is the safe one."""
    from rnnt_plugin.losses import cpu
    from rnnt_plugin.losses import cuda as gpu
    from rnnt_plugin.losses import launch

    monkeypatch.setattr(gpu, "_SETTINGS", {})
    device = launch.Device(**H100, limits=launch.arch_limits("9.0"))
    monkeypatch.setattr(launch, "device", lambda: device)
    launched = []
    real_launch = gpu._launch
    monkeypatch.setattr(gpu, "_launch", lambda kind, name, grid, config, stream, args: (
        launched.append((kind, name, config)), real_launch(kind, name, grid, config, stream, args)))
    figures = {kind: launch.recorded_resources(kind, "float64", "9.0") for kind in launch.KINDS}
    assert launch.problems("gradient", OLD_H100_ENTRY, 8, figures["gradient"], device.limits), figures
    assert not launch.problems("gradient", OLD_H100_ENTRY, 4, launch.recorded_resources("gradient", "float32", "9.0"),
                               device.limits)
    values, labels, logit_lengths, target_lengths = _case(3, 1, 2, 1, 4, 3)
    scale = np.ones(1)
    with caplog.at_level(logging.WARNING, logger="rnnt_plugin.losses.launch"):
        for _ in range(2):
            for name in ("float64", "float32"):
                got = _run(gpu, values.astype(name), labels, logit_lengths, target_lengths, 3, scale, 0.0, -1.0,
                           False, compute=np.dtype(name).type, config=OLD_H100_ENTRY)
                want = _run(cpu, values.astype(name), labels, logit_lengths, target_lengths, 3, scale, 0.0, -1.0,
                            False, compute=np.dtype(name).type)
                np.testing.assert_allclose(got[2], want[2], rtol=2e-5, atol=1e-7)
    assert ("gradient", "float64", launch.SAFE_CONFIG) in launched
    assert ("gradient", "float64", OLD_H100_ENTRY) not in launched  # never launched
    assert ("gradient", "float32", OLD_H100_ENTRY) in launched
    fallbacks = [r.getMessage() for r in caplog.records if "cannot run" in r.getMessage()]
    assert len(fallbacks) == 1 and "gradient kernel (float64" in fallbacks[0] and "> 65536" in fallbacks[0], fallbacks


def test_each_limit_is_checked():
    from rnnt_plugin.losses import launch

    limits = launch.Limits()
    small = launch.KernelResources(registers=32)
    config = dict(threads_per_cell=128, cells_per_block=8, diagonal_threads=128)
    assert not launch.problems("normaliser", config, 4, small, limits)
    assert "threads per block" in launch.problems("normaliser", config, 4, launch.KernelResources(32, 0, 512),
                                                  limits)[0]
    assert "registers" in launch.problems("gradient", config, 4, launch.KernelResources(65), limits)[0]
    assert "shared memory" in launch.problems("normaliser", config, 4, small, launch.Limits(shared_per_block=2048))[0]
    assert not launch.problems("alpha_beta", dict(config, diagonal_threads=1024), 8, launch.KernelResources(64),
                               limits)
    # registers are allocated per warp in units of 256: 70 registers take 72 per thread
    assert launch.registers_per_block(70, 1024, limits) == 73728
    assert launch.registers_per_block(64, 1024, limits) == 65536
    # the safe setting fits any kernel: the most registers a thread can have
    worst = launch.KernelResources(registers=launch.MAX_REGISTERS_PER_THREAD)
    for kind in launch.KINDS:
        assert not launch.problems(kind, launch.SAFE_CONFIG, 8, worst, limits), kind


def test_unknown_gpu_gets_the_default_with_one_log_line(monkeypatch, caplog):
    from rnnt_plugin.losses import launch

    monkeypatch.setattr(launch, "_LOGGED", set())  # "once" is per process: forget earlier tests' lines
    default = launch.load_table()["default"]
    with caplog.at_level(logging.WARNING, logger="rnnt_plugin.losses.launch"):
        for _ in range(3):
            dev = launch.device()  # the simulator's device has no name: the query fails
            assert (dev.name, dev.known, dev.limits) == ("unknown", False, launch.Limits())
            assert launch.launch_config() == default
        t4 = launch.Device("Tesla T4", "7.5", launch.arch_limits("7.5"))
        for _ in range(3):
            assert launch.launch_config(t4) == default
        h100 = launch.Device(**H100, limits=launch.Limits())
        assert launch.launch_config(h100) == launch.lookup(launch.load_table(), H100["name"], "9.0") != default
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages
    assert "could not query the CUDA device" in messages[0] and "no launch-table entry for Tesla T4" in messages[1]


class _FakeStream:
    cuda_stream = 12345


def _route_cpu_tensors_to_simulated_cuda(monkeypatch) -> list:
    """Send CPU tensors down the loss's CUDA path: torch's device guard and stream and Numba's stream and array
    views are replaced by recorders (the simulator takes numpy arrays); returns the list of recorded events."""
    import numba.cuda
    import torch

    from rnnt_plugin.losses import function

    events = []

    @contextlib.contextmanager
    def device_guard(device):
        events.append(("enter", device))
        yield
        events.append(("exit", device))

    def as_cuda_array(tensor, sync=True):
        events.append(("array", tensor.dtype, tensor.data_ptr(), sync))
        return tensor.numpy()

    monkeypatch.setattr(function, "_on_cuda", lambda x: True)
    monkeypatch.setattr(torch.cuda, "device", device_guard)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: events.append(("stream", device))
                        or _FakeStream())
    monkeypatch.setattr(numba.cuda, "external_stream", lambda ptr: ("numba stream", ptr), raising=False)
    monkeypatch.setattr(numba.cuda, "as_cuda_array", as_cuda_array, raising=False)

    class Gpus:
        def __getitem__(self, index):
            @contextlib.contextmanager
            def primary_context():
                events.append(("enter", f"numba device {index}"))
                yield
                events.append(("exit", f"numba device {index}"))

            return primary_context()

    monkeypatch.setattr(numba.cuda, "gpus", Gpus())
    return events


def test_torch_bridge_runs_the_kernels_on_the_tensors_device_and_stream(monkeypatch):
    """The torch side of the GPU path with CPU tensors routed to the (simulated) CUDA kernels: the device guard
    and stream come from the logits' device, the kernels get views of the tensors (no float32 copy of
    half-precision logits, bfloat16 as int16 bits) without host syncs, and the losses and gradients (in the
    logits' dtype, in place with grad_inplace) match the CPU path."""
    import torch

    from rnnt_plugin.losses import cuda as gpu
    from rnnt_plugin.losses import rnnt_loss

    events = _route_cpu_tensors_to_simulated_cuda(monkeypatch)
    for kind in ("forward", "gradient"):
        real = getattr(gpu, kind)
        monkeypatch.setattr(gpu, kind, lambda *a, _real=real, _kind=kind, **k: (
            events.append((_kind, k["stream"], [e[0] for e in events].count("enter") - [e[0] for e in events]
                           .count("exit"))), _real(*a, **k))[1])

    values, labels, logit_lengths, target_lengths = _case(5, 2, 3, 2, 6, 5)
    labels_t, t_len, u_len = (torch.from_numpy(a) for a in (labels, logit_lengths, target_lengths))
    for dtype, inplace in ((torch.float32, False), (torch.float16, True), (torch.bfloat16, False),
                           (torch.bfloat16, True), (torch.float64, False)):
        events.clear()
        base = torch.from_numpy(values).to(dtype)
        want_loss, want_grad = _cpu_loss_and_grad(base, labels_t, t_len, u_len)
        weight = torch.ones((), dtype=dtype, requires_grad=True)
        joint = base * weight  # a non-leaf, as the joint's output is
        joint.retain_grad()
        seen = []
        joint.register_hook(lambda g: seen.append(g.data_ptr()) or None)  # the gradient as autograd hands it on
        loss = rnnt_loss(joint, labels_t, t_len, u_len, blank=5, reduction="none", grad_inplace=inplace,
                         check_values=False)
        pointer = joint.data_ptr()
        loss.sum().backward()
        assert loss.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
        torch.testing.assert_close(loss.double(), want_loss, rtol=2e-5, atol=2e-5)
        assert joint.grad.dtype == dtype and (seen == [pointer]) == inplace, (seen, pointer)
        tol = {torch.float16: 2e-3, torch.bfloat16: 1e-2}.get(dtype, 2e-5)
        torch.testing.assert_close(joint.grad.double(), want_grad, rtol=tol, atol=tol)
        arrays = [e for e in events if e[0] == "array"]
        storage = torch.int16 if dtype == torch.bfloat16 else dtype
        assert arrays[0][1:3] == (storage, pointer)  # the logits themselves, no copy
        assert all(not e[3] for e in arrays)  # sync=False: no host wait
        device = torch.device("cpu")  # the tensors' device (a CUDA one on a GPU)
        assert ("stream", device) in events and ("enter", device) in events
        assert ("enter", "numba device None") in events  # device.index (None for the CPU)
        assert [e for e in events if e[0] in ("forward", "gradient")] == [
            ("forward", ("numba stream", 12345), 2), ("gradient", ("numba stream", 12345), 2)]  # inside both guards


def test_cuda_launch_guards_the_given_device_and_takes_its_stream(monkeypatch):
    """_cuda_launch(cuda:1): torch's guard and Numba's primary context of device 1, torch's current stream of
    cuda:1 (not of the current device) wrapped for Numba."""
    import torch

    from rnnt_plugin.losses import function

    events = _route_cpu_tensors_to_simulated_cuda(monkeypatch)
    device = torch.device("cuda", 1)
    with function._cuda_launch(device) as stream:
        inside = list(events)
    assert stream == ("numba stream", 12345)
    assert inside == [("enter", device), ("enter", "numba device 1"), ("stream", device)]
    assert events[len(inside):] == [("exit", "numba device 1"), ("exit", device)]


def _cpu_loss_and_grad(logits, labels, logit_lengths, target_lengths):
    from rnnt_plugin.losses import function, rnnt_loss

    x = logits.detach().double().clone().requires_grad_()
    real = function._on_cuda
    function._on_cuda = lambda t: False
    try:
        loss = rnnt_loss(x, labels, logit_lengths, target_lengths, blank=5, reduction="none")
        loss.sum().backward()
    finally:
        function._on_cuda = real
    return loss.detach(), x.grad


def test_no_host_sync_on_the_gpu_path_unless_checks_are_asked_for(monkeypatch):
    """On the (simulated) CUDA path the default is no value checks: no tensor is read back to the host (bool,
    int, item, tolist), zero_infinity included; with check_values=True the checks run and raise."""
    import torch

    from rnnt_plugin.losses import rnnt_loss

    _route_cpu_tensors_to_simulated_cuda(monkeypatch)
    values, labels, logit_lengths, target_lengths = _case(6, 2, 3, 2, 6, 5)
    logits = torch.from_numpy(values).float().requires_grad_()
    args = (torch.from_numpy(labels), torch.from_numpy(logit_lengths), torch.from_numpy(target_lengths))

    def refuse(*args, **kwargs):
        raise AssertionError("host sync")

    with monkeypatch.context() as patch:
        for method in ("__bool__", "__int__", "__float__", "item", "tolist"):
            patch.setattr(torch.Tensor, method, refuse)
        rnnt_loss(logits, *args, blank=5, zero_infinity=True).backward()
    bad_lengths = args[1].clone()
    bad_lengths[1] = 9
    with pytest.raises(ValueError, match=r"`logit_lengths`\[1\] = 9"):
        rnnt_loss(logits, args[0], bad_lengths, args[2], blank=5, check_values=True)
