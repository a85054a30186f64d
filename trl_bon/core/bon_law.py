"""The exact Best-of-N law on a finite outcome space (BOND Theorem 1, eq. 4; vBoN eq. 3)."""

import torch


def reward_quantiles(ref_probs: torch.Tensor, rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact reference quantiles `(p<, p≤)`, p<(y) = P[r(y') < r(y)] and p≤(y) = P[r(y') ≤ r(y)] with y' ~ π_ref.

    `ref_probs` and `rewards` are `(..., V)` over the V outcomes (ties allowed); both results are `(..., V)`.
    """
    below = rewards.unsqueeze(-2) < rewards.unsqueeze(-1)  # [..., i, j] = r_j < r_i
    at_or_below = rewards.unsqueeze(-2) <= rewards.unsqueeze(-1)
    p = ref_probs.unsqueeze(-2)
    return (p * below).sum(-1), (p * at_or_below).sum(-1)


def bon_probs(ref_probs: torch.Tensor, rewards: torch.Tensor, n: int) -> torch.Tensor:
    """Tie-safe Best-of-N law: π_BoN(y) = π_ref(y) / q(y) · (p≤(y)^N − p<(y)^N), with q = p≤ − p<.

    BOND Theorem 1 (arXiv v1 eq. 4, App. A.1): ties are broken uniformly at random, so each reward level receives
    mass p≤^N − p<^N, split among its outcomes in proportion to π_ref. `(..., V)` in and out; rows sum to 1.
    """
    if n < 1:
        raise ValueError(f"Best-of-N needs n >= 1 candidates, got n={n}.")
    p_lt, p_le = reward_quantiles(ref_probs, rewards)
    level_mass = p_le.pow(n) - p_lt.pow(n)
    q = p_le - p_lt
    return torch.where(q > 0, ref_probs * level_mass / q.clamp_min(torch.finfo(q.dtype).tiny), torch.zeros_like(q))


def tie_correction(p_lt: torch.Tensor, p_le: torch.Tensor, n: int) -> torch.Tensor:
    """Tie correction B(y) = Σ_{i=1..N} (p< / p≤)^(i−1) ∈ [1, N] (BOND eq. 4), N where p≤ = 0.

    log π_BoN = log π_ref + (N−1)·log p≤ + log B (BOND eqs. 7–8); B = N for a continuous reward.
    """
    ratio = torch.where(p_le > 0, p_lt / p_le.clamp_min(torch.finfo(p_le.dtype).tiny), torch.ones_like(p_le))
    powers = torch.arange(n, dtype=ratio.dtype, device=ratio.device)
    return ratio.unsqueeze(-1).pow(powers).sum(-1)


def bon_probs_binomial(ref_probs: torch.Tensor, rewards: torch.Tensor, n: int) -> torch.Tensor:
    """vBoN's binomial form Σ_{i=1..N} C(N, i)·π_ref(y)^i·F(r(y))^(N−i), with F = p< (vBoN eq. 3).

    Exact only when distinct outcomes never share a reward (with ties rows lose mass); kept as a cross-check of
    `bon_probs` and to reproduce the official vBoN code.
    """
    p_lt, _ = reward_quantiles(ref_probs, rewards)
    i = torch.arange(1, n + 1, dtype=ref_probs.dtype, device=ref_probs.device)
    log_binom = torch.lgamma(torch.tensor(n + 1.0, dtype=i.dtype)) - torch.lgamma(i + 1) - torch.lgamma(n - i + 1)
    terms = torch.exp(log_binom) * ref_probs.unsqueeze(-1).pow(i) * p_lt.unsqueeze(-1).pow(n - i)
    return terms.sum(-1)
