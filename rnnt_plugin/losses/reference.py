"""The RNN-T loss written the plain way, with torch autograd: the reference the kernels are checked against.

Shape legend: B batch, T frames, U labels (the lattice has U+1 rows), V vocabulary incl. blank.
"""

import torch


def reference_costs(logits, labels, logit_lengths, target_lengths, blank, fastemit_lambda=0.0):
    """Per-sample costs (B,) by a plain autograd alpha recursion over explicit log-probs: an independent check of the
    kernels (slow: one scalar op per lattice cell). logits (B, T, U+1, V), labels (B, U), lengths (B,). FastEmit as
    NeMo defines it: cost = (1 + lambda) * -ll, and the gradient w.r.t. label log-probs is scaled by (1 + lambda)."""
    log_probs = torch.log_softmax(logits, dim=-1)  # (B, T, U+1, V)
    costs = []
    for b in range(logits.shape[0]):
        n_t, n_u = int(logit_lengths[b]), int(target_lengths[b])
        blank_lp = log_probs[b, :n_t, : n_u + 1, blank]  # (T_b, U_b+1)
        label_lp = log_probs[b, :n_t, torch.arange(n_u), labels[b, :n_u]]  # (T_b, U_b)
        label_lp = label_lp * (1 + fastemit_lambda) - label_lp.detach() * fastemit_lambda  # same value
        alpha = [[None] * (n_u + 1) for _ in range(n_t)]
        for t in range(n_t):
            for u in range(n_u + 1):
                terms = []
                if t == 0 and u == 0:
                    terms.append(logits.new_zeros(()))
                if t > 0:
                    terms.append(alpha[t - 1][u] + blank_lp[t - 1, u])
                if u > 0:
                    terms.append(alpha[t][u - 1] + label_lp[t, u - 1])
                alpha[t][u] = torch.logsumexp(torch.stack(terms), 0)
        log_like = alpha[n_t - 1][n_u] + blank_lp[n_t - 1, n_u]
        costs.append(-fastemit_lambda * log_like.detach() - log_like)  # value -(1 + lambda) * ll
    return torch.stack(costs)
