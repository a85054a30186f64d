"""The exact Best-of-N law on a finite outcome space (BOND Theorem 1, eq. 4; vBoN eq. 3)."""

import torch


def reward_quantiles(ref_probs: torch.Tensor, rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact reference quantiles p<(y) = P[r(y') < r(y)] and p≤(y) = P[r(y') ≤ r(y)] with y' ~ π_ref.

    Args:
        ref_probs: `(..., V)` reference probabilities of the V outcomes (each row sums to 1).
        rewards: `(..., V)` reward of each outcome; ties allowed.

    Returns:
        `(p_lt, p_le)`, both `(..., V)`.
    """
    below = rewards.unsqueeze(-2) < rewards.unsqueeze(-1)  # [..., i, j] = r_j < r_i
    at_or_below = rewards.unsqueeze(-2) <= rewards.unsqueeze(-1)
    p = ref_probs.unsqueeze(-2)
    return (p * below).sum(-1), (p * at_or_below).sum(-1)


def bon_probs(ref_probs: torch.Tensor, rewards: torch.Tensor, n: int) -> torch.Tensor:
    """Tie-safe Best-of-N law: π_BoN(y) = π_ref(y) / q(y) · (p≤(y)^N − p<(y)^N), with q = p≤ − p<.

    BOND Theorem 1 (arXiv v1 eq. 4, App. A.1). Ties are broken uniformly at random among the maximal draws, so each
    reward level receives mass p≤^N − p<^N, split among its outcomes in proportion to π_ref. Outcomes with
    π_ref(y) = 0 get 0.

    Args:
        ref_probs: `(..., V)` reference probabilities.
        rewards: `(..., V)` rewards (ties allowed).
        n: number of candidates N ≥ 1.

    Returns:
        `(..., V)` Best-of-N probabilities; each row sums to 1.
    """
    if n < 1:
        raise ValueError(f"Best-of-N needs n >= 1 candidates, got n={n}.")
    p_lt, p_le = reward_quantiles(ref_probs, rewards)
    level_mass = p_le.pow(n) - p_lt.pow(n)
    q = p_le - p_lt
    return torch.where(q > 0, ref_probs * level_mass / q.clamp_min(torch.finfo(q.dtype).tiny), torch.zeros_like(q))


def tie_correction(p_lt: torch.Tensor, p_le: torch.Tensor, n: int) -> torch.Tensor:
    """Tie correction B(y) = Σ_{i=1..N} (p< / p≤)^(i−1) ∈ [1, N] (BOND eq. 4).

    With it, log π_BoN = log π_ref + (N−1)·log p≤ + log B (BOND eqs. 7–8). B → N for a continuous reward and B = 1 at
    the worst reward level. Defined as N where p≤ = 0 (the limit q → 0).
    """
    ratio = torch.where(p_le > 0, p_lt / p_le.clamp_min(torch.finfo(p_le.dtype).tiny), torch.ones_like(p_le))
    powers = torch.arange(n, dtype=ratio.dtype, device=ratio.device)
    return ratio.unsqueeze(-1).pow(powers).sum(-1)


def bon_probs_binomial(ref_probs: torch.Tensor, rewards: torch.Tensor, n: int) -> torch.Tensor:
    """vBoN's binomial form Σ_{i=1..N} C(N, i)·π_ref(y)^i·F(r(y))^(N−i), with F = p< (vBoN eq. 3).

    Exact only when distinct outcomes never share a reward; with ties it loses mass (the rows no longer sum to 1),
    because draws of a *different* outcome with the same reward are dropped. Kept as a cross-check of `bon_probs`
    and to reproduce the official vBoN code; use `bon_probs` for anything else.
    """
    p_lt, _ = reward_quantiles(ref_probs, rewards)
    # (F + π)^N − F^N expanded; written as the binomial sum so the i-counting of the paper is visible.
    i = torch.arange(1, n + 1, dtype=ref_probs.dtype, device=ref_probs.device)
    log_binom = torch.lgamma(torch.tensor(n + 1.0, dtype=i.dtype)) - torch.lgamma(i + 1) - torch.lgamma(n - i + 1)
    terms = torch.exp(log_binom) * ref_probs.unsqueeze(-1).pow(i) * p_lt.unsqueeze(-1).pow(n - i)
    return terms.sum(-1)
