"""Effective N: which Best-of-N a policy matches, read from its win rate or its KL to π_ref.

Each meter inverts a closed-form law of Best-of-N from π_ref, exact for a continuous reward: the win rate N/(N+1)
([`bon_win_rate`]) and KL(π_BoN‖π_ref) = log N − (N−1)/N (Beirami et al., arXiv 2401.01879; `core.bon_kl_bound`).
With ties both meters under-read N (docs/metrics.md, "Effective N").
"""

import torch


# Bisection on t = log N ∈ [KL, KL + 1] (see `effective_n_from_kl`): the bracket has width 1, so 64 halvings reach
# 2⁻⁶⁴ ≈ 5e-20 in t, i.e. a relative error in N = e^t below float64's resolution.
_BISECTION_STEPS = 64


def _kl_of_log_n(t: torch.Tensor) -> torch.Tensor:
    """g(t) = t − 1 + e^(−t), the Best-of-N KL at N = e^t, accurate to float64 for every t ≥ 0: below 1e-5 the
    direct form cancels to nothing, so its Taylor series t²/2 − t³/6 + t⁴/24 is used (next term t⁵/120)."""
    series = t * t * (0.5 - t / 6 + t * t / 24)
    return torch.where(t < 1e-5, series, t + torch.expm1(-t))


def bon_win_rate(n: torch.Tensor | float) -> torch.Tensor | float:
    """P[r(y) > r(y')] = N/(N+1) for y ~ BoN_N(π_ref), y' ~ π_ref and a continuous reward: of the N + 1 i.i.d. draws
    each is the best with probability 1/(N+1), and Best-of-N wins unless y' is the best."""
    return n / (n + 1)


def effective_n_from_win_rate(win_rate: torch.Tensor) -> torch.Tensor:
    """N_win = w / (1 − w): the N whose Best-of-N has the policy's win rate w against π_ref (inverse of
    [`bon_win_rate`]). w = ½ (π_ref against itself) gives 1, w → 1 gives +inf, w < ½ gives N < 1; NaN stays NaN.

    Args:
        win_rate: win rates in [0, 1], any shape.

    Returns:
        N_win, same shape, float64.

    Raises:
        ValueError: a win rate outside [0, 1].
    """
    w = torch.as_tensor(win_rate, dtype=torch.float64)
    if ((w < 0) | (w > 1)).any():
        raise ValueError(f"A win rate lies in [0, 1]; got values in [{float(w.min())}, {float(w.max())}].")
    return w / (1 - w)  # 1 / 0 = inf at w = 1


def effective_n_from_kl(kl: torch.Tensor) -> torch.Tensor:
    """N_KL: the N ≥ 1 with log N − (N−1)/N = KL, the KL(π_BoN‖π_ref) of Best-of-N (inverse of `bon_kl_bound`).

    With t = log N the law is g(t) = t − 1 + e^(−t), increasing on t ≥ 0 with t − 1 ≤ g(t) ≤ t, so the root lies in
    [KL, KL + 1] and is found by bisection in float64. KL ≤ 0 (k1 batch noise) gives 1, KL above ≈ 708.8 gives +inf
    (beyond float64), NaN stays NaN; near N = 1 an error δ in the KL moves N by about √(2δ).

    Args:
        kl: KL(π‖π_ref) in nats (per sequence), any shape.

    Returns:
        N_KL, same shape, float64.
    """
    kl = torch.as_tensor(kl, dtype=torch.float64)
    target = kl.clamp_min(0)
    low, high = target.clone(), target + 1
    for _ in range(_BISECTION_STEPS):
        mid = (low + high) / 2
        above = _kl_of_log_n(mid) > target
        high = torch.where(above, mid, high)
        low = torch.where(above, low, mid)
    log_n = torch.where(target == 0, 0.0, (low + high) / 2)  # the bracket never closes on 0 itself
    return torch.exp(log_n)
