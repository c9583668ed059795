"""The CUDA loss kernels as a GPU would get them, without a GPU: PTX from Numba (libnvvm) for sm_80 and sm_90 in
every logits dtype, assembled by ptxas; registers and shared memory checked against every launch-table entry;
the float32 path free of float64; the bfloat16 bit-level loads and stores (LLVM IR shared with the GPU kernels)
run on the CPU against torch's conversions.

Needs the CUDA toolkit's libnvvm and ptxas (this machine image has CUDA 13.0); skips without them.
"""

import json
import re

import numpy as np
import pytest
import torch

from rnnt_plugin.losses import launch

ENTRY_ARCHS = {"8.0": ["sm_80"], "9.0": ["sm_90"], "*": ["sm_80", "sm_90"]}
ITEMSIZE = {"float32": 4, "float64": 8, "float16": 4, "bfloat16": 4}  # compute dtype bytes (shared memory)


@pytest.fixture(scope="module")
def compiled():
    """{"sm_XY": {"<kind>/<dtype>": {"registers", "shared", "spill_bytes", "ptx"}}} compiled here and now."""
    from rnnt_plugin.losses import resources

    ptxas = resources.ptxas_path()
    if ptxas is None:
        pytest.skip("ptxas (CUDA toolkit) not found")
    from numba.cuda.cudadrv.error import NvvmSupportError

    figures = {}
    try:
        for major, minor in resources.ARCHS:
            arch = f"sm_{major}{minor}"
            figures[arch] = {}
            for kind in launch.KINDS:
                for name in resources.DTYPES:
                    ptx = resources.ptx(kind, name, (major, minor))
                    figures[arch][f"{kind}/{name}"] = {**resources.assemble(ptx, (major, minor), ptxas), "ptx": ptx}
    except NvvmSupportError as error:
        pytest.skip(f"libnvvm (CUDA toolkit) not available: {error}")
    return figures


def _resources(row) -> launch.KernelResources:
    return launch.KernelResources(registers=row["registers"], static_shared=row["shared"])


def test_every_launch_table_entry_fits_every_kernel_in_every_dtype(compiled):
    table = launch.load_table()
    entries = [{"name": "default", "compute_capability": "*", "config": table["default"]}, *table["entries"]]
    checked = 0
    for entry in entries:
        for arch in ENTRY_ARCHS.get(entry["compute_capability"], ["sm_80", "sm_90"]):
            limits = launch.arch_limits(f"{arch[3]}.{arch[4]}")
            for key, row in compiled[arch].items():
                kind, name = key.split("/")
                found = launch.problems(kind, entry["config"], ITEMSIZE[name], _resources(row), limits)
                assert not found, (entry["name"], arch, key, found)
                checked += 1
    assert checked == 12 * (2 + 1 + 1 + 2)  # default and Iluvatar ("*") on both archs, A100, H100
    # the check would have caught the former H100 entry: 1,024-thread blocks of the float64 gradient kernel
    former_h100 = dict(threads_per_cell=256, cells_per_block=4, diagonal_threads=128)
    found = launch.problems("gradient", former_h100, 8, _resources(compiled["sm_90"]["gradient/float64"]),
                            launch.arch_limits("9.0"))
    assert found and "registers per block > 65536" in found[0], found


def test_kernels_use_no_spills_and_the_float32_path_no_float64(compiled):
    for arch, rows in compiled.items():
        for key, row in rows.items():
            assert row["spill_bytes"] == 0, (arch, key)
            assert row["shared"] == 0, (arch, key)  # the reduction scratch is dynamic shared memory
            assert ".entry" in row["ptx"] and f".target {arch}" in row["ptx"]
            if not key.endswith("float64"):
                float64_lines = [line.strip() for line in row["ptx"].splitlines() if ".f64" in line]
                assert not float64_lines, (arch, key, float64_lines[:5])


def test_recorded_figures_are_the_compiled_ones(compiled):
    """kernel_resources.json (what the simulator tests and the unknown-device path check against) matches."""
    recorded = json.loads(launch.RESOURCES_FILE.read_text())["figures"]
    fresh = {arch: {key: {k: v for k, v in row.items() if k != "ptx"} for key, row in rows.items()}
             for arch, rows in compiled.items()}
    assert recorded == fresh, "stale: regenerate with `python -m rnnt_plugin.losses.resources`"


def test_half_precision_kernels_convert_without_float32_loads_of_the_logits(compiled):
    """float16 logits are loaded as 16-bit values and widened (cvt.f32.f16); bfloat16 ones as 16-bit integers
    widened by a shift; both store 16-bit gradients."""
    for arch in compiled:
        grad16 = compiled[arch]["gradient/float16"]["ptx"]
        assert re.search(r"ld\.global\.(u16|b16|s16)", grad16) and "cvt.f32.f16" in grad16
        assert re.search(r"st\.global\.(u16|b16)", grad16) and "cvt.rn.f16.f32" in grad16
        bf16 = compiled[arch]["gradient/bfloat16"]["ptx"]
        assert re.search(r"ld\.global\.(u16|b16|s16)", bf16) and re.search(r"shl\.b32", bf16)
        assert re.search(r"st\.global\.(u16|b16)", bf16)


def test_bfloat16_intrinsics_round_as_torch_does():
    """The LLVM IR of the GPU kernels' bfloat16 load and store, compiled for the CPU, against torch."""
    from numba import njit

    from rnnt_plugin.losses import cuda as gpu

    if gpu.SIMULATOR:
        pytest.skip("the simulator uses the Python twins (tested in test_loss_gpu_sim.py)")
    load, store = gpu._ACCESS["bfloat16"]

    @njit
    def widen(bits, out):
        for i in range(bits.shape[0]):
            out[i] = load(bits[i])

    @njit
    def narrow(values, out):
        for i in range(values.shape[0]):
            out[i] = store(values[i])

    bits = np.arange(-32768, 32768, dtype=np.int64).astype(np.int16)  # every bfloat16
    got = np.empty(bits.shape, np.float32)
    widen(bits, got)
    want = torch.from_numpy(bits).view(torch.bfloat16).float().numpy()
    assert np.array_equal(got.view(np.int32), want.view(np.int32))  # bit for bit, NaN payloads included
    rng = np.random.default_rng(0)
    values = np.concatenate([
        rng.integers(0, 2 ** 32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32),  # any bit pattern
        (rng.integers(-32768, 32768, 4096).astype(np.int32) << 16 | 0x8000).view(np.float32),  # exact ties
        np.array([0.0, -0.0, np.inf, -np.inf, 3.4e38, -3.4e38, 1e-45], dtype=np.float32)])
    got = np.empty(values.shape, np.int16)
    narrow(values, got)
    want = torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy()
    nan = np.isnan(values)
    assert np.array_equal(got[~nan], want[~nan])
    assert np.isnan(torch.from_numpy(got[nan]).view(torch.bfloat16).float().numpy()).all()
