"""Effective N: which Best-of-N a policy matches, read from its win rate or its KL to π_ref.

Each meter inverts a closed-form law of Best-of-N from π_ref, exact for a continuous reward: the win rate N/(N+1)
([`bon_win_rate`]) and KL(π_BoN‖π_ref) = log N − (N−1)/N (Beirami et al., arXiv 2401.01879; `core.bon_kl_bound`).
With ties both meters under-read N (docs/metrics.md, "Effective N").
"""

import torch


def bon_win_rate(n: torch.Tensor | float) -> torch.Tensor | float:
    """P[r(y) > r(y')] = N/(N+1) for y ~ BoN_N(π_ref), y' ~ π_ref and a continuous reward: of the N + 1 i.i.d. draws
    each is the best with probability 1/(N+1), and Best-of-N wins unless y' is the best."""
    return n / (n + 1)


def effective_n_from_win_rate(win_rate: torch.Tensor) -> torch.Tensor:
    """N_win = w / (1 − w) in float64: the N whose Best-of-N has the policy's win rate w ∈ [0, 1] against π_ref
    (inverse of [`bon_win_rate`]). w = ½ gives 1, w → 1 gives +inf, w < ½ gives N < 1; NaN stays NaN."""
    w = torch.as_tensor(win_rate, dtype=torch.float64)
    if ((w < 0) | (w > 1)).any():
        raise ValueError(f"A win rate lies in [0, 1]; got values in [{float(w.min())}, {float(w.max())}].")
    return w / (1 - w)  # 1 / 0 = inf at w = 1


def effective_n_from_kl(kl: torch.Tensor) -> torch.Tensor:
    """N_KL in float64: the N ≥ 1 with log N − (N−1)/N = KL (nats per sequence), the inverse of `bon_kl_bound`.

    With t = log N the law is g(t) = t − 1 + e^(−t), increasing with t − 1 ≤ g(t) ≤ t, so the root lies in
    [KL, KL + 1] and is found by bisection. KL ≤ 0 (k1 batch noise) gives 1, KL above ≈ 708.8 gives +inf, NaN stays
    NaN; near N = 1 an error δ in the KL moves N by about √(2δ).
    """
    kl = torch.as_tensor(kl, dtype=torch.float64)
    target = kl.clamp_min(0)
    low, high = target.clone(), target + 1
    # The bracket has width 1, so 64 halvings reach 2⁻⁶⁴ in t: a relative error in N below float64's resolution.
    for _ in range(64):
        mid = (low + high) / 2
        # g(mid); below t = 1e-5 the direct form cancels to nothing, so its Taylor series is used (next term t⁵/120)
        g = torch.where(mid < 1e-5, mid * mid * (0.5 - mid / 6 + mid * mid / 24), mid + torch.expm1(-mid))
        above = g > target
        high = torch.where(above, mid, high)
        low = torch.where(above, low, mid)
    log_n = torch.where(target == 0, 0.0, (low + high) / 2)  # the bracket never closes on 0 itself
    return torch.exp(log_n)
