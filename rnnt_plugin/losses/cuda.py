"""Numba CUDA kernels of the RNN-T loss, log-softmax fused in; same arrays and results as cpu.py.

Shape legend and array layout: see cpu.py (logits (B, T, U+1, V); lse, lp_blank, lp_label, alphas, betas
(B, T, U+1); ll, scale (B,); labels (B, U') int64; lengths (B,) int64).

Logits are read in place in their storage dtype and the gradient is written in it: float32, float64, float16,
or bfloat16 handed over as an int16 view of its bits (a bfloat16 is the top half of a float32: widened by a
16-bit shift and a bit-cast, narrowed with round-to-nearest-even). The arithmetic is in the compute dtype,
float64 for float64 logits and float32 for the others, with typed constants (no float64 in the float32 path);
the lattice arrays, ll and scale are in the compute dtype.

Arrays may be Numba device arrays (the torch wrapper passes `cuda.as_cuda_array` views on torch's current
stream of the logits' device) or, under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1), plain numpy arrays, which
is how the tests run.

Kernels (launch settings from launch.py's table: threads_per_cell, cells_per_block, diagonal_threads; the
kernels take them from the block shape, so one compiled kernel per dtype serves every setting):
- normaliser: a block of (threads_per_cell, cells_per_block) threads holds cells_per_block lattice cells; the
  threads of a cell stride over V (coalesced) and reduce max and sum-exp in dynamic shared memory (one compute
  dtype value per thread); writes lse and the blank/label log-probs.
- alpha_beta: grid (B, 2), one block per utterance and direction; a wavefront over the anti-diagonals t + u,
  the block's threads striding over u, so U is not limited by the block size.
- gradient: same layout as normaliser; one pass writing d cost / d logits, zeros outside the lattice.
Before a launch, the setting is checked against the compiled kernel's limits on the device (launch.py); one
that cannot run is replaced by launch.SAFE_CONFIG with one log line.
"""

import math

import numba
import numpy as np
from llvmlite import ir
from numba import config as numba_config
from numba import cuda, types
from numba.extending import intrinsic

from rnnt_plugin.losses import launch

SIMULATOR = bool(numba_config.ENABLE_CUDASIM)
# storage dtype of the logits array -> (logits dtype name, compute dtype)
STORAGE = {
    "float32": ("float32", numba.float32),
    "float64": ("float64", numba.float64),
    "float16": ("float16", numba.float32),
    "int16": ("bfloat16", numba.float32),  # bfloat16 bits
}
_KERNELS = {}  # (kind, logits dtype name) -> kernel
_SETTINGS = {}  # (kind, logits dtype name, device, requested setting) -> setting launched
_RESOURCES = {}  # (kind, logits dtype name, device) -> launch.KernelResources


# Loads (storage -> compute dtype) and stores (compute -> storage dtype) of logits and gradient elements, as LLVM
# intrinsics: Numba functions called from a kernel would be compiled as device functions, which needs a driver.
# The simulator runs kernels as Python and calls their Python twins (py_load_bfloat16, ...) instead.


def py_load_bfloat16(bits):
    """int16 bits of a bfloat16 -> the float32 it is (the bits become the top half)."""
    return (np.int32(bits) << np.int32(16)).view(np.float32)


def py_store_bfloat16(value):
    """float32 -> int16 bits of the nearest bfloat16 (ties to even; a NaN stays a quiet NaN)."""
    if value != value:
        return np.int16(0x7FC0)
    bits = np.float32(value).view(np.uint32)
    bits = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return np.uint16(bits).view(np.int16)


def _same_type(typingctx, value):
    def codegen(context, builder, signature, args):
        return args[0]

    return value(value), codegen


def _float16_to_float32(typingctx, value):
    def codegen(context, builder, signature, args):
        return context.cast(builder, args[0], types.float16, types.float32)  # Numba's cvt.f32.f16

    return types.float32(types.float16), codegen


def _float32_to_float16(typingctx, value):
    def codegen(context, builder, signature, args):
        return context.cast(builder, args[0], types.float32, types.float16)  # cvt.rn.f16.f32: ties to even

    return types.float16(types.float32), codegen


def _bfloat16_to_float32(typingctx, bits):
    def codegen(context, builder, signature, args):
        wide = builder.shl(builder.zext(args[0], ir.IntType(32)), ir.Constant(ir.IntType(32), 16))
        return builder.bitcast(wide, ir.FloatType())

    return types.float32(types.int16), codegen


def _float32_to_bfloat16(typingctx, value):
    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.bitcast(args[0], i32)
        odd = builder.and_(builder.lshr(bits, ir.Constant(i32, 16)), ir.Constant(i32, 1))
        rounded = builder.add(builder.add(bits, ir.Constant(i32, 0x7FFF)), odd)
        top = builder.trunc(builder.lshr(rounded, ir.Constant(i32, 16)), ir.IntType(16))
        is_nan = builder.fcmp_unordered("uno", args[0], args[0])
        return builder.select(is_nan, ir.Constant(ir.IntType(16), 0x7FC0), top)

    return types.int16(types.float32), codegen


if SIMULATOR:
    _ACCESS = {  # logits dtype name -> (load as compute dtype, store from compute dtype)
        "float32": (lambda value: value, lambda value: value),
        "float64": (lambda value: value, lambda value: value),
        "float16": (np.float32, np.float16),
        "bfloat16": (py_load_bfloat16, py_store_bfloat16),
    }
else:
    _same = intrinsic(_same_type)
    _ACCESS = {
        "float32": (_same, _same),
        "float64": (_same, _same),
        "float16": (intrinsic(_float16_to_float32), intrinsic(_float32_to_float16)),
        "bfloat16": (intrinsic(_bfloat16_to_float32), intrinsic(_float32_to_bfloat16)),
    }


def _make_normaliser(name: str):
    compute = STORAGE[_storage_of(name)][1]
    load = _ACCESS[name][0]
    zero, neg_inf = compute(0.0), compute(-math.inf)

    @cuda.jit
    def normaliser(logits, labels, logit_lengths, target_lengths, blank, lse, lp_blank, lp_label):
        _, max_t, max_u1, vocab = logits.shape
        lane = cuda.threadIdx.x
        width = cuda.blockDim.x  # threads per cell, a power of two
        slot = cuda.threadIdx.y
        cell = numba.int64(cuda.blockIdx.x) * cuda.blockDim.y + slot  # flat (b, t, u)
        u = cell % max_u1
        b = cell // (max_u1 * max_t)
        t = (cell // max_u1) % max_t
        scratch = cuda.shared.array(0, compute)  # (cells_per_block * threads_per_cell,)
        mine = slot * width + lane
        live = b < logits.shape[0]
        if live:
            live = t < logit_lengths[b] and u <= target_lengths[b]
        top = neg_inf
        if live:
            for v in range(lane, vocab, width):
                value = load(logits[b, t, u, v])
                if value > top:  # comparisons, not max(): CUDA's max() cannot compile ahead of time (no driver)
                    top = value
        scratch[mine] = top
        cuda.syncthreads()
        step = width // 2
        while step > 0:
            if lane < step:
                if scratch[mine + step] > scratch[mine]:
                    scratch[mine] = scratch[mine + step]
            cuda.syncthreads()
            step //= 2
        top = scratch[slot * width]
        cuda.syncthreads()
        total = zero
        if live and top != neg_inf:
            for v in range(lane, vocab, width):
                total += math.exp(load(logits[b, t, u, v]) - top)
        scratch[mine] = total
        cuda.syncthreads()
        step = width // 2
        while step > 0:
            if lane < step:
                scratch[mine] += scratch[mine + step]
            cuda.syncthreads()
            step //= 2
        if live and lane == 0:
            norm = -neg_inf if top == neg_inf else top + math.log(scratch[slot * width])
            lse[b, t, u] = norm
            lp_blank[b, t, u] = load(logits[b, t, u, blank]) - norm
            if u < target_lengths[b]:
                lp_label[b, t, u] = load(logits[b, t, u, labels[b, u]]) - norm
            else:
                lp_label[b, t, u] = neg_inf

    return normaliser


def _make_alpha_beta(name: str):
    compute = STORAGE[_storage_of(name)][1]
    zero, neg_inf = compute(0.0), compute(-math.inf)

    @cuda.jit
    def alpha_beta(lp_blank, lp_label, logit_lengths, target_lengths, alphas, betas, ll):
        b = cuda.blockIdx.x
        backward = cuda.blockIdx.y == 1
        n_t = logit_lengths[b]
        n_u = target_lengths[b]
        for step in range(n_t + n_u):  # anti-diagonals, t + u = step (alphas) or n_t - 1 + n_u - step (betas)
            diagonal = n_t - 1 + n_u - step if backward else step
            for u in range(cuda.threadIdx.x, n_u + 1, cuda.blockDim.x):
                t = diagonal - u
                if t < 0 or t >= n_t:
                    continue
                # the two incoming (alphas) or outgoing (betas) paths: via blank (x) and via a label (y)
                if backward:
                    x = lp_blank[b, t, u] + (betas[b, t + 1, u] if t < n_t - 1 else zero if u == n_u else neg_inf)
                    y = betas[b, t, u + 1] + lp_label[b, t, u] if u < n_u else neg_inf
                else:
                    x = alphas[b, t - 1, u] + lp_blank[b, t - 1, u] if t > 0 else zero if u == 0 else neg_inf
                    y = alphas[b, t, u - 1] + lp_label[b, t, u - 1] if u > 0 else neg_inf
                if x < y:
                    x, y = y, x
                if y != neg_inf:  # log(exp(x) + exp(y)), inlined: device functions need a driver to compile
                    x += math.log1p(math.exp(y - x))
                if backward:
                    betas[b, t, u] = x
                else:
                    alphas[b, t, u] = x
            cuda.syncthreads()  # the next diagonal reads this one (global memory, same block)
        if not backward and cuda.threadIdx.x == 0:
            ll[b] = alphas[b, n_t - 1, n_u] + lp_blank[b, n_t - 1, n_u]

    return alpha_beta


def _make_gradient(name: str):
    compute = STORAGE[_storage_of(name)][1]
    load, store = _ACCESS[name]
    zero, one, neg_inf = compute(0.0), compute(1.0), compute(-math.inf)

    @cuda.jit
    def gradient(logits, labels, logit_lengths, target_lengths, blank, lse, lp_blank, lp_label, alphas, betas, ll,
                 scale, fastemit_lambda, clamp, grad):
        n_batch, max_t, max_u1, vocab = logits.shape
        lane = cuda.threadIdx.x
        width = cuda.blockDim.x
        cell = numba.int64(cuda.blockIdx.x) * cuda.blockDim.y + cuda.threadIdx.y  # flat (b, t, u)
        u = cell % max_u1
        b = cell // (max_u1 * max_t)
        t = (cell // max_u1) % max_t
        if b >= n_batch:
            return
        n_t = logit_lengths[b]
        n_u = target_lengths[b]
        log_like = ll[b]
        sample_scale = scale[b]
        if t >= n_t or u > n_u or log_like == neg_inf or sample_scale == zero:
            for v in range(lane, vocab, width):
                grad[b, t, u, v] = store(zero)
            return
        alpha = alphas[b, t, u]
        blank_occ = zero
        if t < n_t - 1:
            blank_occ = math.exp(alpha + lp_blank[b, t, u] + betas[b, t + 1, u] - log_like)
        elif u == n_u:
            blank_occ = math.exp(alpha + lp_blank[b, t, u] - log_like)
        emit_occ = zero
        label = -1
        if u < n_u:
            label = labels[b, u]
            emit_occ = (one + fastemit_lambda) * math.exp(alpha + lp_label[b, t, u] + betas[b, t, u + 1] - log_like)
        cell_weight = (blank_occ + emit_occ) * sample_scale
        blank_term = blank_occ * sample_scale
        label_term = emit_occ * sample_scale
        norm = lse[b, t, u]
        bound = clamp * abs(sample_scale)
        for v in range(lane, vocab, width):
            g = math.exp(load(logits[b, t, u, v]) - norm) * cell_weight
            if v == blank:
                g -= blank_term
            if v == label:
                g -= label_term
            if clamp > zero:
                if g > bound:
                    g = bound
                elif g < -bound:
                    g = -bound
            grad[b, t, u, v] = store(g)

    return gradient


_MAKERS = {"normaliser": _make_normaliser, "alpha_beta": _make_alpha_beta, "gradient": _make_gradient}


def _storage_of(name: str) -> str:
    """Storage dtype name of logits dtype `name` ("bfloat16" -> "int16")."""
    return next(storage for storage, (logits_name, _) in STORAGE.items() if logits_name == name)


def logits_dtype(array) -> str:
    """Logits dtype name of a logits array ("int16" arrays hold bfloat16 bits); ValueError for others."""
    storage = np.dtype(array.dtype).name
    if storage not in STORAGE:
        raise ValueError(f"logits must be float32, float64, float16 or bfloat16 (as int16 bits), got {storage}")
    return STORAGE[storage][0]


def compute_dtype(name: str) -> np.dtype:
    """numpy compute dtype for logits dtype `name`: float64 for float64, else float32."""
    return np.dtype(STORAGE[_storage_of(name)][1].name)


def kernel(kind: str, name: str):
    """The compiled-on-first-use kernel `kind` for logits dtype `name`."""
    if (kind, name) not in _KERNELS:
        _KERNELS[kind, name] = _MAKERS[kind](name)
    return _KERNELS[kind, name]


def signature(kind: str, name: str) -> tuple:
    """Numba argument types of kernel `kind` for C-contiguous arrays of logits dtype `name`."""
    compute = STORAGE[_storage_of(name)][1]
    logits = types.Array(numba.from_dtype(np.dtype(_storage_of(name))), 4, "C")
    cells, per_sample = types.Array(compute, 3, "C"), types.Array(compute, 1, "C")
    labels, lengths = types.Array(types.int64, 2, "C"), types.Array(types.int64, 1, "C")
    if kind == "normaliser":
        return (logits, labels, lengths, lengths, types.int64, cells, cells, cells)
    if kind == "alpha_beta":
        return (cells, cells, lengths, lengths, cells, cells, per_sample)
    return (logits, labels, lengths, lengths, types.int64, *[cells] * 5, per_sample, per_sample, compute, compute,
            logits)


def _resources(kind: str, name: str, args, dev: launch.Device) -> launch.KernelResources:
    """What kernel `kind` compiled for `args` needs: the driver's figures; under the simulator, or when the
    device is unknown, the recorded ptxas figures (launch.recorded_resources)."""
    key = (kind, name, dev)
    if key not in _RESOURCES:
        if SIMULATOR or not dev.known:
            _RESOURCES[key] = launch.recorded_resources(kind, name, dev.capability)
        else:
            dispatcher = kernel(kind, name)
            compiled = dispatcher.compile(tuple(dispatcher.typeof_pyval(a) for a in args))
            _RESOURCES[key] = launch.KernelResources(registers=compiled.regs_per_thread,
                                                     static_shared=compiled.shared_mem_per_block,
                                                     max_threads_per_block=compiled.max_threads_per_block)
    return _RESOURCES[key]


def setting_problems(kind: str, name: str, args, config: dict, dev: launch.Device = None) -> list:
    """Why `config` cannot launch kernel `kind` for logits dtype `name` (compiled for `args`) on `dev`."""
    dev = launch.device() if dev is None else dev
    return launch.problems(kind, config, compute_dtype(name).itemsize, _resources(kind, name, args, dev),
                           dev.limits)


def launch_setting(kind: str, name: str, args, config=None, dev: launch.Device = None) -> dict:
    """The setting to launch kernel `kind` with: `config` (default: the launch table's for the device) if the
    compiled kernel fits it on the device, else launch.SAFE_CONFIG with one log line; decided once per
    (kind, dtype, device, setting)."""
    dev = launch.device() if dev is None else dev
    requested = launch.launch_config(dev) if config is None else launch.check_config(dict(config))
    key = (kind, name, dev, tuple(requested.items()))
    if key not in _SETTINGS:
        found = setting_problems(kind, name, args, requested, dev)
        chosen = requested
        if found:
            chosen = dict(launch.SAFE_CONFIG)
            unsafe = setting_problems(kind, name, args, chosen, dev)
            if unsafe:
                raise RuntimeError(f"RNN-T loss: the {kind} kernel ({name}) cannot launch on {dev.name} even with "
                                   f"{chosen}: {'; '.join(unsafe)}")
            launch.log.warning("RNN-T loss: launch setting %s cannot run the %s kernel (%s logits) on %s (%s): %s; "
                               "using %s", requested, kind, name, dev.name, dev.capability, "; ".join(found), chosen)
        _SETTINGS[key] = chosen
    return _SETTINGS[key]


def _launch(kind: str, name: str, grid, config: dict, stream, args) -> None:
    threads, shared = launch.block_shape(kind, config, compute_dtype(name).itemsize)
    block = threads if kind == "alpha_beta" else (config["threads_per_cell"], config["cells_per_block"])
    kernel(kind, name)[grid, block, stream, shared](*args)


def _cell_blocks(logits, config) -> int:
    n_batch, max_t, max_u1, _ = logits.shape
    return -(-n_batch * max_t * max_u1 // config["cells_per_block"])


def forward(logits, labels, logit_lengths, target_lengths, blank, lse, lp_blank, lp_label, alphas, betas, ll,
            stream=0, config=None):
    """Fill lse, lp_blank, lp_label, alphas, betas (B, T, U+1) and ll (B,) from logits (B, T, U+1, V)."""
    name = logits_dtype(logits)
    args = (logits, labels, logit_lengths, target_lengths, blank, lse, lp_blank, lp_label)
    setting = launch_setting("normaliser", name, args, config)
    _launch("normaliser", name, _cell_blocks(logits, setting), setting, stream, args)
    args = (lp_blank, lp_label, logit_lengths, target_lengths, alphas, betas, ll)
    setting = launch_setting("alpha_beta", name, args, config)
    _launch("alpha_beta", name, (logits.shape[0], 2), setting, stream, args)


def gradient(logits, labels, logit_lengths, target_lengths, blank, lse, lp_blank, lp_label, alphas, betas, ll,
             scale, fastemit_lambda, clamp, grad, stream=0, config=None):
    """Write d(sum_b scale[b] * cost_b) / d logits into grad (B, T, U+1, V), in the logits' dtype; see
    cpu.gradient (grad may be the logits array itself)."""
    name = logits_dtype(logits)
    compute = compute_dtype(name).type
    args = (logits, labels, logit_lengths, target_lengths, blank, lse, lp_blank, lp_label, alphas, betas, ll, scale,
            compute(fastemit_lambda), compute(clamp), grad)
    setting = launch_setting("gradient", name, args, config)
    _launch("gradient", name, _cell_blocks(logits, setting), setting, stream, args)
