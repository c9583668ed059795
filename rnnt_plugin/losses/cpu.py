"""Numba CPU kernels of the RNN-T loss, log-softmax fused in (no (B, T, U+1, V) log-prob tensor is ever made).

Shape legend: B batch, T frames (padded), U labels (padded; the lattice has U+1 rows), V vocabulary incl. blank.
Every array is C-contiguous; float arrays share the logits' dtype (float32 or float64):

    logits          (B, T, U+1, V)  raw joint outputs
    labels          (B, U') int64   U' >= max(target_lengths); entries past a sample's length are ignored
    logit_lengths   (B,) int64      1 <= T_b <= T
    target_lengths  (B,) int64      0 <= U_b <= U
    lse             (B, T, U+1)     log-normaliser of each lattice cell (log-sum-exp over V)
    lp_blank        (B, T, U+1)     log P(blank | t, u)
    lp_label        (B, T, U+1)     log P(labels[u] | t, u); -inf at u = U_b
    alphas, betas   (B, T, U+1)     forward / backward log-variables; betas include the final blank
    ll              (B,)            log-likelihood log P(labels | logits)

Work split: the two passes over the logits (normaliser, gradient) run in parallel over the B*T lattice rows, so a
long utterance is spread over all threads as well as the batch; the alpha and beta recursions (O(T*U) scalar work,
under 1% of the time at V = 1024) run in parallel over (sample, direction). The thread count is Numba's, which
the caller sets from torch.get_num_threads().

Throughput comes from `_exp`: a float32 exp made only of arithmetic, a float->int conversion and a bit-cast, so
LLVM vectorises the V loops (Numba has no vector libm here); float64 uses math.exp (for gradcheck).
"""

import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

# reassoc lets LLVM vectorise the sum/max reductions; no nnan/ninf: -inf is meaningful here.
_FASTMATH = {"reassoc", "contract", "nsz", "arcp", "afn"}

_LOG2E = np.float32(1.4426950408889634)
_LN2_HI = np.float32(0.693359375)  # ln 2 split so that n * _LN2_HI is exact for |n| < 2**9
_LN2_LO = np.float32(-2.12194440e-4)
_EXP_MIN = np.float32(-87.0)  # exp(-87) = 1.6e-38 is still a normal float32; below it the bit trick breaks
_EXP_MAX = np.float32(88.0)


@intrinsic
def _f32_from_bits(typingctx, bits):
    """Reinterpret an int32 as the float32 with the same bits."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


def _exp(x):
    """exp(x): vectorisable float32 version (relative error < 3e-7, inputs below -87 give 1.6e-38), else math.exp."""
    return math.exp(x)


@overload(_exp, inline="always")
def _exp_overload(x):
    if x != types.float32:
        return lambda x: math.exp(x)

    def exp_f32(x):
        x = min(max(x, _EXP_MIN), _EXP_MAX)
        n = np.floor(x * _LOG2E + np.float32(0.5))  # exp(x) = 2**n * exp(r), |r| <= ln(2)/2
        r = x - n * _LN2_HI
        r = r - n * _LN2_LO
        # Taylor series of exp(r) to degree 6, Horner form; truncation error < 2e-7 on |r| <= 0.347
        p = np.float32(1.0 / 720.0)
        p = p * r + np.float32(1.0 / 120.0)
        p = p * r + np.float32(1.0 / 24.0)
        p = p * r + np.float32(1.0 / 6.0)
        p = p * r + np.float32(0.5)
        p = p * r + np.float32(1.0)
        p = p * r + np.float32(1.0)
        return p * _f32_from_bits((np.int32(n) + np.int32(127)) << np.int32(23))

    return exp_f32


@njit(cache=True, inline="always")
def _logaddexp(a, b):
    """log(exp(a) + exp(b)) for scalars, exact when either is -inf."""
    if a == -np.inf:
        return b
    if b == -np.inf:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def normaliser(logits, labels, logit_lengths, target_lengths, blank, lse, lp_blank, lp_label):
    """Fill lse, lp_blank, lp_label for the valid cells (t < T_b, u <= U_b); one read of the logits."""
    n_batch, max_t, _, vocab = logits.shape
    zero = logits.dtype.type(0.0)
    neg_inf = logits.dtype.type(-np.inf)
    for row in prange(n_batch * max_t):
        b = row // max_t
        t = row - b * max_t
        if t >= logit_lengths[b]:
            continue
        n_labels = target_lengths[b]
        for u in range(n_labels + 1):
            x = logits[b, t, u]  # (V,)
            top = neg_inf
            for v in range(vocab):
                top = max(top, x[v])
            if top == neg_inf:  # all logits -inf: every token has probability 0
                norm = -neg_inf
            else:
                total = zero
                for v in range(vocab):
                    total += _exp(x[v] - top)
                norm = top + math.log(total)
            lse[b, t, u] = norm
            lp_blank[b, t, u] = x[blank] - norm
            lp_label[b, t, u] = x[labels[b, u]] - norm if u < n_labels else neg_inf


@njit(parallel=True, cache=True)
def alpha_beta(lp_blank, lp_label, logit_lengths, target_lengths, alphas, betas, ll):
    """Fill alphas, betas over the valid cells and ll; tasks 0..B-1 run alphas, B..2B-1 betas."""
    n_batch = lp_blank.shape[0]
    for task in prange(2 * n_batch):
        b = task % n_batch
        n_t = logit_lengths[b]
        n_u = target_lengths[b]
        blank_lp = lp_blank[b]  # (T, U+1)
        label_lp = lp_label[b]  # (T, U+1)
        if task < n_batch:
            alpha = alphas[b]  # (T, U+1)
            alpha[0, 0] = 0.0
            for u in range(1, n_u + 1):
                alpha[0, u] = alpha[0, u - 1] + label_lp[0, u - 1]
            for t in range(1, n_t):
                alpha[t, 0] = alpha[t - 1, 0] + blank_lp[t - 1, 0]
                for u in range(1, n_u + 1):
                    alpha[t, u] = _logaddexp(alpha[t - 1, u] + blank_lp[t - 1, u], alpha[t, u - 1] + label_lp[t, u - 1])
            ll[b] = alpha[n_t - 1, n_u] + blank_lp[n_t - 1, n_u]
        else:
            beta = betas[b]  # (T, U+1)
            beta[n_t - 1, n_u] = blank_lp[n_t - 1, n_u]
            for u in range(n_u - 1, -1, -1):
                beta[n_t - 1, u] = beta[n_t - 1, u + 1] + label_lp[n_t - 1, u]
            for t in range(n_t - 2, -1, -1):
                beta[t, n_u] = beta[t + 1, n_u] + blank_lp[t, n_u]
                for u in range(n_u - 1, -1, -1):
                    beta[t, u] = _logaddexp(beta[t + 1, u] + blank_lp[t, u], beta[t, u + 1] + label_lp[t, u])


@njit(parallel=True, cache=True, fastmath=_FASTMATH)
def gradient(
    logits, labels, logit_lengths, target_lengths, blank, lse, lp_blank, lp_label, alphas, betas, ll, scale,
    fastemit_lambda, clamp, grad,
):
    """Write d(scale[b] * cost_b)/d logits into grad (B, T, U+1, V), zeros outside the lattice; one pass.

    cost_b = -(1 + fastemit_lambda) * ll[b]; the FastEmit gradient is NeMo's: the label-emission terms of the
    gradient w.r.t. the log-probs are scaled by (1 + fastemit_lambda). With clamp > 0 each element of the
    per-sample gradient is clamped to [-clamp, clamp] before the scale. Samples with ll = -inf get zeros.
    grad may be logits itself (each element is read before it is overwritten).
    """
    n_batch, max_t, max_u1, vocab = logits.shape
    zero = logits.dtype.type(0.0)
    emit_weight = logits.dtype.type(1.0 + fastemit_lambda)
    for row in prange(n_batch * max_t):
        b = row // max_t
        t = row - b * max_t
        n_t = logit_lengths[b]
        n_u = target_lengths[b]
        log_like = ll[b]
        sample_scale = logits.dtype.type(scale[b])
        live = t < n_t and log_like != -np.inf and sample_scale != 0.0
        bound = logits.dtype.type(clamp * abs(scale[b]))
        for u in range(max_u1):
            g = grad[b, t, u]  # (V,)
            if not live or u > n_u:
                for v in range(vocab):
                    g[v] = zero
                continue
            alpha = alphas[b, t, u]
            # occupancies of the two transitions out of (t, u): blank to (t+1, u), label to (t, u+1)
            if t < n_t - 1:
                blank_occ = math.exp(alpha + lp_blank[b, t, u] + betas[b, t + 1, u] - log_like)
            elif u == n_u:
                blank_occ = math.exp(alpha + lp_blank[b, t, u] - log_like)
            else:
                blank_occ = zero
            if u < n_u:
                emit_occ = emit_weight * math.exp(alpha + lp_label[b, t, u] + betas[b, t, u + 1] - log_like)
            else:
                emit_occ = zero
            # d cost / d logit_v = P(v) * (blank_occ + emit_occ) - [v = blank] blank_occ - [v = label] emit_occ
            cell_weight = logits.dtype.type((blank_occ + emit_occ) * sample_scale)
            x = logits[b, t, u]  # (V,); may be the same memory as g
            norm = lse[b, t, u]
            for v in range(vocab):
                g[v] = _exp(x[v] - norm) * cell_weight
            g[blank] -= blank_occ * sample_scale
            if u < n_u:
                g[labels[b, u]] -= emit_occ * sample_scale
            if clamp > 0.0:
                for v in range(vocab):
                    g[v] = min(max(g[v], -bound), bound)
