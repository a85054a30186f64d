"""vBoN scores (Amini et al., arXiv 2407.06057): the l1 log-CDF score and the exact log-ratio log π_BoN − log π_ref,
from a per-prompt cache of M reference rewards (docs/maths.md §2) and, for the exact score, the reference sequence
log-probability of the policy sample."""

import math

import torch

from .quantiles import vbon_log_cdf


def cache_statistics(rewards: torch.Tensor, ref_rewards: torch.Tensor):
    """`(log_cdf, log_q_hat, at_floor)` of `(B,)` policy rewards against `(B, M)` NaN-padded cached reference rewards.

    `log_cdf` = log F̂(r) ([`~trl_bon.core.vbon_log_cdf`]); `log_q_hat` = log(#{r_m = r}/M), the estimated mass of the
    sample's reward level (−inf without a tie); `at_floor`: no cached reward below r (log F̂ = −log(M + 1)).
    """
    valid = ~torch.isnan(ref_rewards)
    ref = torch.where(valid, ref_rewards, torch.zeros_like(ref_rewards))
    log_cdf = vbon_log_cdf(rewards, ref, valid)
    r = rewards.unsqueeze(-1)
    m = valid.sum(-1).to(torch.float64)
    ties = ((ref == r) & valid).sum(-1).to(torch.float64)
    below = ((ref < r) & valid).sum(-1)
    return log_cdf, torch.log(ties / m).to(rewards.dtype), below == 0


def exact_log_ratio(log_p_lt: torch.Tensor, log_q: torch.Tensor, n: int) -> torch.Tensor:
    """Tie-safe log π_BoN(y) − log π_ref(y) = log(p≤^N − p<^N) − log q (BOND Theorem 1, eq. 4).

    With p≤ = p< + q. The inputs are estimates: p< is capped at 1 − q so that p≤ ≤ 1 (vBoN's F̂ carries a +1 and
    reaches 1 for a sample above every cached reward). Stable for q ≪ p< (long texts, where q = π_ref(y) can be
    e^{−1000}): there log(p≤^N − p<^N) − log q → log N + (N−1)·log p<, the injective form (vBoN eq. 3) to first order.
    `log_p_lt` may be −inf, `log_q` may not; the float64 result equals (N−1)·log p≤ + log B (BOND eq. 7).
    """
    a, b = log_p_lt.double(), log_q.double()
    a = torch.minimum(a, torch.log(-torch.expm1(b)))  # p< ≤ 1 − q
    t = b - a  # log(q / p<)
    # δ = log p≤ − log p< = softplus(t) > 0; log δ ≈ t when q ≪ p< (softplus underflows to 0 there).
    log_delta = torch.where(t < -30, t, torch.log(torch.nn.functional.softplus(t)))
    log_p_le = torch.logaddexp(a, b).clamp(max=0.0)
    # log(p≤^N − p<^N) = N·log p≤ + log(1 − e^{−x}), x = N·δ; log(1 − e^{−x}) ≈ log x when x underflows.
    log_x = math.log(n) + log_delta
    return n * log_p_le + torch.where(log_x < -30, log_x, torch.log(-torch.expm1(-torch.exp(log_x)))) - b


def binomial_log_ratio(log_cdf: torch.Tensor, log_ref: torch.Tensor, n: int) -> torch.Tensor:
    """vBoN's injective form log Σ_{i=1..N} C(N, i)·π_ref(y)^i·F^(N−i) − log π_ref(y) (vBoN eq. 3), as the official
    code computes it (logsumexp over i). Exact only without ties; kept to reproduce the code.
    """
    f, p = log_cdf.double(), log_ref.double()
    i = torch.arange(1, n + 1, dtype=torch.float64, device=f.device)
    log_binom = math.lgamma(n + 1) - torch.lgamma(i + 1) - torch.lgamma(n - i + 1)
    terms = log_binom + (n - i) * f.unsqueeze(-1) + i * p.unsqueeze(-1)
    return torch.logsumexp(terms, dim=-1) - p


def vbon_scores(
    rewards: torch.Tensor,
    ref_rewards: torch.Tensor,
    n: int,
    objective: str = "l1",
    ref_logps: torch.Tensor | None = None,
    reproduce_code_scaling: bool = False,
) -> dict[str, torch.Tensor]:
    """The vBoN score of each policy sample, the RL reward with KL coefficient 1/(N−1) (docs/maths.md §5).

    - `"l1"` (vBoN's l1 bound): score = log F̂(r).
    - `"exact"` (tie-safe): score = (log π_BoN − log π_ref)/(N−1) by the tie-safe law (`exact_log_ratio`)
      with p< = F̂ and q = max(q̂, π_ref(y)), q̂ = #{r_m = r}/M (q ≥ π_ref(y) always holds, and the cache cannot see
      levels lighter than 1/M).
    - `"exact"` with `reproduce_code_scaling=True` (official rycolab/vbon code): score =
      binomial_log_ratio(log F̂, log π_ref)/N, whose fixed point is not π_BoN.

    `ref_logps` are the `(B,)` reference sequence log-probabilities of the samples (`"exact"` only). Returns `score`
    and the [`cache_statistics`] `log_cdf` and `at_floor`.
    """
    log_cdf, log_q_hat, at_floor = cache_statistics(rewards, ref_rewards)
    if objective == "l1":
        score = log_cdf
    elif reproduce_code_scaling:
        score = binomial_log_ratio(log_cdf, ref_logps, n) / n
    else:
        log_q = torch.maximum(log_q_hat.double(), ref_logps.double())
        score = exact_log_ratio(log_cdf, log_q, n) / (n - 1)
    return {"score": score.to(rewards.dtype), "log_cdf": log_cdf, "at_floor": at_floor}
