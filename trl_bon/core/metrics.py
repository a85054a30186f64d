"""Per-sample evaluation maths (docs/maths.md §7): KL estimators on completion tokens, win rates with ties counted ½,
and Monte-Carlo estimates of the KL divergences to π_BoN, used by `trl_bon.evaluation`."""

import math

import torch

from .quantiles import log_bon_ratio


def kl_k1(policy_logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """k1 estimate of KL(π‖π_ref) per sequence: Σ_t (log π(y_t) − log π_ref(y_t)) over completion tokens.

    `(B, T)` per-token log-probs of the policy's samples (at the sampling temperature) and completion `mask` (EOS
    included) in, `(B,)` out. Unbiased for the sequence KL when y ~ π; a single sample may be negative.
    """
    return ((policy_logps - ref_logps) * mask).sum(-1)


def kl_k3(policy_logps: torch.Tensor, ref_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """k3 estimate of KL(π‖π_ref) per sequence: Σ_t (e^u − 1 − u), u = log π_ref(y_t) − log π(y_t).

    Each term is ≥ 0 with expectation KL(π(·|y_<t)‖π_ref(·|y_<t)) under y_t ~ π: unbiased, with lower variance than
    k1 near π = π_ref (docs/maths.md §7; vBoN's evaluation uses it). Same arguments and shape as [`kl_k1`].
    """
    u = (ref_logps - policy_logps) * mask
    return ((torch.expm1(u) - u) * mask).sum(-1)


def win_rate(rewards: torch.Tensor, opponent_rewards: torch.Tensor) -> torch.Tensor:
    """Per-sample win rate P[r > r'] + ½·P[r = r'] of `(B,)` rewards against `(B,)` or `(B, K)` opponents, NaN
    opponents ignored (docs/maths.md §7)."""
    if opponent_rewards.dim() == 1:
        opponent_rewards = opponent_rewards.unsqueeze(-1)
    r = rewards.unsqueeze(-1)
    valid = ~torch.isnan(opponent_rewards)
    score = (r > opponent_rewards).to(rewards.dtype) + 0.5 * (r == opponent_rewards).to(rewards.dtype)
    return (score * valid).sum(-1) / valid.sum(-1).clamp_min(1)


def backward_kl_to_bon(
    seq_log_ratio: torch.Tensor, rewards: torch.Tensor, ref_rewards: torch.Tensor, n: int, smoothing: str = "clamp"
) -> torch.Tensor:
    """Per-sample estimate of KL(π‖π_BoN): log π(y) − log π_ref(y) − (N−1)·log p̂≤(y) − log B̂(y), y ~ π (BOND eq.
    14, docs/maths.md §7), from the sequence log-ratio (the k1 terms), the rewards and `(B, K)` reference rewards."""
    return seq_log_ratio - log_bon_ratio(rewards, ref_rewards, n, smoothing)


def forward_kl_to_bon(
    bon_ref_logps: torch.Tensor,
    bon_policy_logps: torch.Tensor,
    bon_rewards: torch.Tensor,
    ref_rewards: torch.Tensor,
    n: int,
    smoothing: str = "clamp",
) -> torch.Tensor:
    """Per-sample estimate of KL(π_BoN‖π): log π_BoN(y) − log π(y) with y ~ π_BoN (BOND eqs. 12–13, docs/maths.md §7).

    log π_BoN(y) = log π_ref(y) + (N−1)·log p̂≤(y) + log B̂(y) (BOND eqs. 4, 7), with `ref_rewards` `(B, K)`
    independent of the Best-of-N draw (not its N candidates).
    """
    return bon_ref_logps + log_bon_ratio(bon_rewards, ref_rewards, n, smoothing) - bon_policy_logps


def bon_kl_bound(n: int) -> float:
    """KL(π_BoN‖π_ref) ≤ log N − (N−1)/N, tight for continuous rewards (docs/maths.md §1)."""
    return math.log(n) - (n - 1) / n


def mean_and_sem(values: torch.Tensor) -> tuple[float, float]:
    """Mean and its standard error (0 for a single value), ignoring NaNs."""
    values = values[~torch.isnan(values)].double()
    if values.numel() == 0:
        return math.nan, math.nan
    if values.numel() == 1:
        return float(values), 0.0
    return float(values.mean()), float(values.std() / math.sqrt(values.numel()))
