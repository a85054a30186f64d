"""Effective N: which Best-of-N a policy matches, read from its win rate or its KL to π_ref (docs/metrics.md).

Each meter inverts a closed-form law of Best-of-N sampling from π_ref that is exact for a continuous reward: the win
rate N/(N+1) ([`bon_win_rate`]) and KL(π_BoN‖π_ref) = log N − (N−1)/N (Beirami et al., arXiv 2401.01879; quoted by
BOND, arXiv 2407.14622 v1; `core.metrics.bon_kl_bound`). With ties (discrete rewards, a saturating reward) Best-of-N
has a lower KL and a lower win rate (ties counted ½), so both meters under-read N.
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
    """P[r(y) > r(y')] = N/(N+1) for y ~ BoN_N(π_ref), y' ~ π_ref and a continuous reward.

    Of N + 1 i.i.d. draws from π_ref (the N candidates and y'), each is the best with probability 1/(N+1) by
    exchangeability, and Best-of-N wins exactly when y' is not the best. With ties the win rate with ties counted ½
    is lower (all rewards equal gives ½ for every N).
    """
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

    With t = log N the law is g(t) = t − 1 + e^(−t), increasing on t ≥ 0 with g(0) = 0 and t − 1 ≤ g(t) ≤ t, so the
    root lies in [KL, KL + 1] and is found by bisection in float64. Near N = 1 the law is flat (KL ≈ (log N)²/2), so
    an error δ in the KL moves N by about √(2δ).

    Edge cases: KL ≤ 0 gives 1 (only π_ref itself has KL 0; a negative value is the noise of a k1 batch estimate);
    every finite KL has a finite N, but KL above ≈ 708.8 (N beyond float64's largest number) gives +inf; NaN stays
    NaN.

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
