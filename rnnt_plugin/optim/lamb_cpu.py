"""LAMB's per-tensor update as two fused Numba passes, for CPU parameters (no temporary tensors).

The ``torch._foreach_*`` form of :class:`rnnt_plugin.optim.LAMB` makes three parameter-sized temporaries a step;
on CPU each is a fresh allocation whose pages the kernel zeroes on first touch, which made the step of the
49M-parameter MLPerf model take 0.6 s on one core, longer than the whole joint and loss. Here:

1. ``moments``: m, v updated in place, and the squared norms of the weights and of the update
   ``u = (m / bc1) / (sqrt(v / bc2) + eps) + weight_decay * w`` accumulated without storing u;
2. ``apply``: u recomputed from m, v and w, and ``w <- w - step * u`` (step = lr x trust ratio).

Arrays are flat and C-contiguous views of one parameter and its state (N,), float32 or float64, and the scalars
come in the arrays' dtype, so the arithmetic is the foreach path's, term by term: the two agree to rounding.
"""

import numpy as np
from numba import njit, prange

CHUNK = 1 << 16  # elements per parallel task


@njit(parallel=True, cache=True)
def moments(w, g, m, v, clip, beta1, grad_weight, beta2, sq_weight, bc1, bc2, eps, weight_decay):
    """Update m, v (N,) in place from the gradient g * clip (m weighs it by grad_weight, v its square by
    sq_weight); return (||w||^2, ||u||^2), accumulated in float64."""
    n = w.shape[0]
    tasks = (n + CHUNK - 1) // CHUNK
    w_sq = np.zeros(tasks)
    u_sq = np.zeros(tasks)
    for task in prange(tasks):
        w_acc = 0.0
        u_acc = 0.0
        for i in range(task * CHUNK, min(n, (task + 1) * CHUNK)):
            gi = g[i] * clip
            m[i] = beta1 * m[i] + grad_weight * gi
            v[i] = beta2 * v[i] + sq_weight * gi * gi
            u = (m[i] / bc1) / (np.sqrt(v[i] / bc2) + eps) + weight_decay * w[i]
            w_acc += w[i] * w[i]
            u_acc += u * u
        w_sq[task] = w_acc
        u_sq[task] = u_acc
    return w_sq.sum(), u_sq.sum()


@njit(parallel=True, cache=True)
def apply(w, m, v, bc1, bc2, eps, weight_decay, step):
    """w (N,) <- w - step * u, with u as in ``moments`` (from the updated m, v and the weights before this)."""
    n = w.shape[0]
    tasks = (n + CHUNK - 1) // CHUNK
    for task in prange(tasks):
        for i in range(task * CHUNK, min(n, (task + 1) * CHUNK)):
            u = (m[i] / bc1) / (np.sqrt(v[i] / bc2) + eps) + weight_decay * w[i]
            w[i] -= step * u
