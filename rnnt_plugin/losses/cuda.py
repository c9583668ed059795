"""Numba CUDA kernels of the RNN-T loss, log-softmax fused in; same arrays and results as cpu.py.

Shape legend and array layout: see cpu.py (logits (B, T, U+1, V); lse, lp_blank, lp_label, alphas, betas
(B, T, U+1); ll (B,); labels (B, U') int64; lengths (B,) int64).

Arrays may be Numba device arrays (the torch wrapper passes `cuda.as_cuda_array` views on torch's current
stream) or, under the CUDA simulator (NUMBA_ENABLE_CUDASIM=1), plain numpy arrays, which is how the tests run.

Kernels (launch settings from launch.py's table: threads_per_cell, cells_per_block, diagonal_threads):
- normaliser: a block holds cells_per_block lattice cells, threads_per_cell threads per cell stride over V
  (coalesced) and reduce max and sum-exp in shared memory; writes lse and the blank/label log-probs.
- alpha_beta: grid (B, 2), one block per utterance and direction; a wavefront over the anti-diagonals t + u,
  the block's threads striding over u, so U is not limited by the block size.
- gradient: same layout as normaliser; one pass writing d cost / d logits, zeros outside the lattice.
"""

import math

import numba
import numpy as np
from numba import cuda

from rnnt_plugin.losses import launch

_KERNELS = {}  # (kind, dtype name, threads_per_cell, cells_per_block) -> compiled kernel


def _make_normaliser(dtype, threads_per_cell: int, cells_per_block: int):
    neg_inf = -math.inf

    @cuda.jit
    def normaliser(logits, labels, logit_lengths, target_lengths, blank, lse, lp_blank, lp_label):
        _, max_t, max_u1, vocab = logits.shape
        lane = cuda.threadIdx.x
        slot = cuda.threadIdx.y
        cell = cuda.blockIdx.x * cells_per_block + slot  # flat (b, t, u)
        u = cell % max_u1
        b = cell // (max_u1 * max_t)
        t = (cell // max_u1) % max_t
        scratch = cuda.shared.array((cells_per_block, threads_per_cell), dtype)
        live = b < logits.shape[0]
        if live:
            live = t < logit_lengths[b] and u <= target_lengths[b]
        top = dtype(neg_inf)
        if live:
            for v in range(lane, vocab, threads_per_cell):
                value = logits[b, t, u, v]
                if value > top:  # comparisons, not max(): CUDA's max() cannot compile ahead of time (no driver)
                    top = value
        scratch[slot, lane] = top
        cuda.syncthreads()
        step = threads_per_cell // 2
        while step > 0:
            if lane < step:
                if scratch[slot, lane + step] > scratch[slot, lane]:
                    scratch[slot, lane] = scratch[slot, lane + step]
            cuda.syncthreads()
            step //= 2
        top = scratch[slot, 0]
        cuda.syncthreads()
        total = dtype(0.0)
        if live and top != neg_inf:
            for v in range(lane, vocab, threads_per_cell):
                total += math.exp(logits[b, t, u, v] - top)
        scratch[slot, lane] = total
        cuda.syncthreads()
        step = threads_per_cell // 2
        while step > 0:
            if lane < step:
                scratch[slot, lane] += scratch[slot, lane + step]
            cuda.syncthreads()
            step //= 2
        if live and lane == 0:
            norm = -neg_inf if top == neg_inf else top + math.log(scratch[slot, 0])
            lse[b, t, u] = norm
            lp_blank[b, t, u] = logits[b, t, u, blank] - norm
            if u < target_lengths[b]:
                lp_label[b, t, u] = logits[b, t, u, labels[b, u]] - norm
            else:
                lp_label[b, t, u] = neg_inf

    return normaliser


@cuda.jit
def _alpha_beta(lp_blank, lp_label, logit_lengths, target_lengths, alphas, betas, ll):
    b = cuda.blockIdx.x
    backward = cuda.blockIdx.y == 1
    n_t = logit_lengths[b]
    n_u = target_lengths[b]
    neg_inf = -math.inf
    for step in range(n_t + n_u):  # anti-diagonals, t + u = step (alphas) or n_t - 1 + n_u - step (betas)
        diagonal = n_t - 1 + n_u - step if backward else step
        for u in range(cuda.threadIdx.x, n_u + 1, cuda.blockDim.x):
            t = diagonal - u
            if t < 0 or t >= n_t:
                continue
            # the two incoming (alphas) or outgoing (betas) paths: via blank (x) and via a label (y)
            if backward:
                x = lp_blank[b, t, u] + (betas[b, t + 1, u] if t < n_t - 1 else 0.0 if u == n_u else neg_inf)
                y = betas[b, t, u + 1] + lp_label[b, t, u] if u < n_u else neg_inf
            else:
                x = alphas[b, t - 1, u] + lp_blank[b, t - 1, u] if t > 0 else 0.0 if u == 0 else neg_inf
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


def _make_gradient(dtype, threads_per_cell: int, cells_per_block: int):
    @cuda.jit
    def gradient(logits, labels, logit_lengths, target_lengths, blank, lse, lp_blank, lp_label, alphas, betas, ll,
                 scale, fastemit_lambda, clamp, grad):
        n_batch, max_t, max_u1, vocab = logits.shape
        lane = cuda.threadIdx.x
        cell = cuda.blockIdx.x * cells_per_block + cuda.threadIdx.y  # flat (b, t, u)
        u = cell % max_u1
        b = cell // (max_u1 * max_t)
        t = (cell // max_u1) % max_t
        if b >= n_batch:
            return
        n_t = logit_lengths[b]
        n_u = target_lengths[b]
        log_like = ll[b]
        sample_scale = scale[b]
        if t >= n_t or u > n_u or log_like == -math.inf or sample_scale == 0.0:
            for v in range(lane, vocab, threads_per_cell):
                grad[b, t, u, v] = 0.0
            return
        alpha = alphas[b, t, u]
        blank_occ = 0.0
        if t < n_t - 1:
            blank_occ = math.exp(alpha + lp_blank[b, t, u] + betas[b, t + 1, u] - log_like)
        elif u == n_u:
            blank_occ = math.exp(alpha + lp_blank[b, t, u] - log_like)
        emit_occ = 0.0
        label = -1
        if u < n_u:
            label = labels[b, u]
            emit_occ = (1.0 + fastemit_lambda) * math.exp(alpha + lp_label[b, t, u] + betas[b, t, u + 1] - log_like)
        # scalars in the logits' dtype, so that the V loop has no float64 work for float32 logits
        cell_weight = dtype((blank_occ + emit_occ) * sample_scale)
        blank_term = dtype(blank_occ * sample_scale)
        label_term = dtype(emit_occ * sample_scale)
        norm = lse[b, t, u]
        bound = dtype(clamp * abs(sample_scale))
        for v in range(lane, vocab, threads_per_cell):
            g = math.exp(logits[b, t, u, v] - norm) * cell_weight
            if v == blank:
                g -= blank_term
            if v == label:
                g -= label_term
            if clamp > 0.0:
                if g > bound:
                    g = bound
                elif g < -bound:
                    g = -bound
            grad[b, t, u, v] = g

    return gradient


def _kernel(kind: str, dtype, config: dict):
    key = (kind, np.dtype(dtype).name, config["threads_per_cell"], config["cells_per_block"])
    if key not in _KERNELS:
        make = _make_normaliser if kind == "normaliser" else _make_gradient
        _KERNELS[key] = make(numba.from_dtype(np.dtype(dtype)), *key[2:])
    return _KERNELS[key]


def _cell_launch(logits, config):
    n_batch, max_t, max_u1, _ = logits.shape
    cells_per_block = config["cells_per_block"]
    blocks = (n_batch * max_t * max_u1 + cells_per_block - 1) // cells_per_block
    return blocks, (config["threads_per_cell"], cells_per_block)


def forward(logits, labels, logit_lengths, target_lengths, blank, lse, lp_blank, lp_label, alphas, betas, ll,
            stream=0, config=None):
    """Fill lse, lp_blank, lp_label, alphas, betas (B, T, U+1) and ll (B,) from logits (B, T, U+1, V)."""
    config = launch.launch_config() if config is None else launch.check_config(config)
    blocks, threads = _cell_launch(logits, config)
    _kernel("normaliser", logits.dtype, config)[blocks, threads, stream](
        logits, labels, logit_lengths, target_lengths, blank, lse, lp_blank, lp_label)
    _alpha_beta[(logits.shape[0], 2), config["diagonal_threads"], stream](
        lp_blank, lp_label, logit_lengths, target_lengths, alphas, betas, ll)


def gradient(logits, labels, logit_lengths, target_lengths, blank, lse, lp_blank, lp_label, alphas, betas, ll,
             scale, fastemit_lambda, clamp, grad, stream=0, config=None):
    """Write d(sum_b scale[b] * cost_b) / d logits into grad (B, T, U+1, V); see cpu.gradient (grad may alias)."""
    config = launch.launch_config() if config is None else launch.check_config(config)
    blocks, threads = _cell_launch(logits, config)
    _kernel("gradient", logits.dtype, config)[blocks, threads, stream](
        logits, labels, logit_lengths, target_lengths, blank, lse, lp_blank, lp_label, alphas, betas, ll, scale,
        float(fastemit_lambda), float(clamp), grad)
