"""Monte-Carlo reward quantiles and the estimators built on them.

BOND's quantile p̂≤ (arXiv 2407.14622 v1, eq. 10), its quantile reward and log-ratio estimator (eqs. 4, 7, 8), and
vBoN's smoothed CDF F̂ (arXiv 2407.06057, §4 and the authors' code). docs/maths.md §2 derives them.
"""

import torch

from .bon_law import tie_correction


SMOOTHINGS = ("clamp", "add_one", "none")


def _counts(rewards: torch.Tensor, ref_rewards: torch.Tensor, ref_mask: torch.Tensor | None, strict: bool):
    """Per row: how many valid ref rewards lie below (strict) or at or below `rewards`, and how many are valid."""
    ref_mask = torch.ones_like(ref_rewards, dtype=torch.bool) if ref_mask is None else ref_mask.bool()
    r = rewards.unsqueeze(-1)  # (B, 1) or (B, S, 1)
    ref = ref_rewards if rewards.dim() == 1 else ref_rewards.unsqueeze(1)
    mask = ref_mask if rewards.dim() == 1 else ref_mask.unsqueeze(1)
    hits = (ref < r) if strict else (ref <= r)
    count = (hits & mask).sum(-1).to(rewards.dtype)
    total = mask.sum(-1).to(rewards.dtype)
    if rewards.dim() == 2:
        total = total.expand_as(count)  # mask is (B, 1, K), so total is already (B, 1)
    if (total == 0).any():
        raise ValueError("A prompt has no valid reference rewards (its mask is all False); at least one is needed.")
    return count, total


def empirical_quantile(
    rewards: torch.Tensor,
    ref_rewards: torch.Tensor,
    ref_mask: torch.Tensor | None = None,
    smoothing: str = "clamp",
) -> torch.Tensor:
    """BOND's Monte-Carlo quantile p̂≤(y) = (1/k)·Σ_i 1{r(y'_i) ≤ r(y)} (arXiv v1 eq. 10), ties favouring y.

    `rewards` is `(B,)`, or `(B, S)` for S samples per prompt; `ref_rewards` `(B, K)`, padded with `ref_mask` False
    when groups differ in size. `smoothing` handles y below every reference sample (p̂≤ = 0; the paper is silent):
    `"clamp"` → max(p̂≤, 1/(2k)), `"add_one"` → (c + 1)/(k + 1), `"none"` → raw p̂≤.
    """
    if smoothing not in SMOOTHINGS:
        raise ValueError(f"Unknown quantile smoothing {smoothing!r}; choose one of {SMOOTHINGS}.")
    count, k = _counts(rewards, ref_rewards, ref_mask, strict=False)
    if smoothing == "add_one":
        return (count + 1) / (k + 1)
    p_hat = count / k
    if smoothing == "clamp":
        return torch.maximum(p_hat, 1 / (2 * k))
    return p_hat


def vbon_log_cdf(rewards: torch.Tensor, ref_rewards: torch.Tensor, ref_mask: torch.Tensor | None = None):
    """vBoN's smoothed log-CDF log F̂(r) with F̂(r) = (1 + #{m : r_m < r}) / (M + 1).

    Strict (F = p<), and the "+1" counts the policy sample as one of M + 1 draws, so log F̂ ∈ [−log(M+1), 0] is
    always finite (official rycolab/vbon code; docs/maths.md §2, §5). Shapes as in [`empirical_quantile`].
    """
    count, m = _counts(rewards, ref_rewards, ref_mask, strict=True)
    return torch.log((count + 1) / (m + 1))


def bond_reward(p_le_hat: torch.Tensor, n: int, log_tie_correction: torch.Tensor | None = None) -> torch.Tensor:
    """BOND's quantile reward (N−1)·log p̂≤(y) [+ log B̂(y)] (arXiv v1 eqs. 8 and 15), before the caller's KL term.

    v1's text writes r = p̂≤, a typo: eq. 8 and the concavity argument use the log.
    """
    reward = (n - 1) * torch.log(p_le_hat)
    if log_tie_correction is not None:
        reward = reward + log_tie_correction
    return reward


def log_bon_ratio(
    rewards: torch.Tensor,
    ref_rewards: torch.Tensor,
    n: int,
    smoothing: str = "clamp",
    include_tie_correction: bool = True,
) -> torch.Tensor:
    """BOND's estimate of log π_BoN(y) − log π_ref(y) = (N−1)·log p̂≤(y) + log B̂(y) (arXiv v1 eqs. 4, 7, 10).

    BOND's training reward (eq. 15, the anchor as π_ref) and the evaluation's KL-to-π_BoN estimates, from `(B, K)`
    reference rewards independent of the samples. p̂≤ is smoothed ([`empirical_quantile`]); the tie correction B̂
    uses the unsmoothed counts, and without it the estimate is BOND's reward (N−1)·log p̂≤ (eq. 8).
    """
    p_le = empirical_quantile(rewards, ref_rewards, smoothing=smoothing)
    if not include_tie_correction:
        return bond_reward(p_le, n)
    raw_lt, k = _counts(rewards, ref_rewards, None, strict=True)
    raw_le, _ = _counts(rewards, ref_rewards, None, strict=False)
    return bond_reward(p_le, n, torch.log(tie_correction(raw_lt / k, raw_le / k, n)))
