"""J-BOND's crude reward, batch baseline and per-sequence loss weights (BOND arXiv 2407.14622 v1 §5, eq. 17, Alg. 2).

[`jbond_weights`] is the whole J-BOND/BOND objective of one generation batch as one pure function: rewards, the
policy's log-ratio to the anchor and the completion lengths in; per-row loss weights and the logged statistics out.
`JBondTrainer` and `examples/minimal_jbond.py` both call it. docs/maths.md §3–§4 derive it.
"""

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from .metrics import win_rate
from .quantiles import empirical_quantile, log_bon_ratio


TIES = ("half", "strict")


@dataclass(frozen=True)
class JBondOptions:
    """The options of the J-BOND/BOND objective (BOND arXiv v1 eqs. 11, 15, 17, 19), checked once, here.
    `JBondConfig` builds one (`args.objective`) from its fields of the same names, whose help describes them. In J-BOND
    mode `num_candidates` is 2 (unset becomes 2)."""

    mode: str = "jbond"
    jbond_penalty: float = math.log(16.0)
    jbond_ties: str = "strict"
    num_candidates: int | None = None
    quantile_smoothing: str = "clamp"
    include_tie_correction: bool = False
    baseline: str = "batch_loo"
    jeffreys_beta: float = 0.5
    anchor_kl_coef: float = 0.0
    loss_normalization: str = "sequence_sum"

    def __post_init__(self):
        for name, allowed in (
            ("mode", ("jbond", "bond")),
            ("jbond_ties", TIES),
            ("baseline", ("batch_loo", "none")),
            ("loss_normalization", ("sequence_sum", "token_mean")),
            ("quantile_smoothing", ("clamp", "add_one")),  # not "none": p̂≤ = 0 would make the reward log 0 = −inf
        ):
            if getattr(self, name) not in allowed:
                raise ValueError(f"Unknown `{name}={getattr(self, name)!r}`; set `{name}` to one of {allowed}.")
        if self.mode == "jbond":
            if self.num_candidates not in (None, 2):
                raise ValueError(
                    f"J-BOND distils Best-of-2 of the anchor, so `num_candidates` must be 2 or unset (got "
                    f"{self.num_candidates}). For Best-of-N with N > 2 set `mode='bond'`."
                )
            object.__setattr__(self, "num_candidates", 2)
        elif self.num_candidates is None or self.num_candidates < 2:
            raise ValueError(
                f"BOND needs `num_candidates` N >= 2 (got {self.num_candidates}); set e.g. `num_candidates=4`."
            )
        if not 0.0 <= self.jeffreys_beta <= 1.0:
            raise ValueError(f"`jeffreys_beta` must lie in [0, 1], got {self.jeffreys_beta}; the paper uses 0.5.")
        if self.anchor_kl_coef < 0.0:
            raise ValueError(
                f"`anchor_kl_coef` (γ) must be >= 0, got {self.anchor_kl_coef}: a negative γ pushes the policy away "
                "from the anchor. Set 0 to disable the term."
            )
        if self.jbond_penalty <= 0.0:
            raise ValueError(f"`jbond_penalty` must be > 0, got {self.jbond_penalty}; the paper uses log(16).")


def jbond_reward(
    policy_rewards: torch.Tensor,
    anchor_rewards: torch.Tensor,
    penalty: float = math.log(16.0),
    ties: str = "strict",
) -> torch.Tensor:
    """r_J(y) = −penalty if r(y) < min(r(y'_1), r(y'_2)) else 0 (arXiv v1 eq. 17), with a choice for ties.

    `policy_rewards` is `(B,)`, `anchor_rewards` `(B, n)` (n = 2 in J-BOND). `ties="strict"` (eq. 17 as printed): a
    tie with an anchor sample earns 0. `ties="half"`: r_J = −penalty·Π_i ℓ_i with ℓ_i = 1, ½, 0 for y below, tied
    with, above y'_i; docs/maths.md §3 derives both and says why a 0/1 verifier needs `"half"`.
    """
    if ties not in TIES:  # a public function: [`jbond_weights`] passes a checked `JBondOptions.jbond_ties`
        raise ValueError(f"Unknown J-BOND tie rule {ties!r}; choose one of {TIES}.")
    if ties == "half":
        below = (policy_rewards.unsqueeze(-1) < anchor_rewards).to(policy_rewards.dtype)
        tied = (policy_rewards.unsqueeze(-1) == anchor_rewards).to(policy_rewards.dtype)
        return -penalty * (below + 0.5 * tied).prod(dim=-1)
    loses_to_all = policy_rewards < anchor_rewards.min(dim=-1).values
    # built in the rewards' dtype: a Python-scalar `torch.where` would round the penalty to float32 first
    return torch.zeros_like(policy_rewards).masked_fill(loses_to_all, -penalty)


def best_anchor_index(anchor_rewards: torch.Tensor) -> torch.Tensor:
    """Index of the best anchor sample per prompt, the Best-of-n target y_bo2 (Alg. 2); ties take the first, which is
    deterministic and unbiased, as the anchor samples are exchangeable."""
    return anchor_rewards.argmax(dim=-1)  # torch.argmax returns the first maximal index


def batch_loo_baseline(returns: torch.Tensor) -> torch.Tensor:
    """Batch leave-one-out baseline b_i = mean_{j ≠ i} R_j over the `(B,)` returns, B ≥ 2 (BOND §4.2 / Alg. 2)."""
    count = returns.numel()
    if count < 2:
        raise ValueError("The batch leave-one-out baseline needs at least 2 returns in the batch.")
    return (returns.sum() - returns) / (count - 1)


def jbond_sequence_weights(
    returns: torch.Tensor,
    log_ratio: torch.Tensor,
    baseline: torch.Tensor,
    jeffreys_beta: float,
    anchor_kl_coef: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence loss weights that realise the J-BOND/BOND objective as a weighted log-likelihood (Alg. 2, eqs.
    11, 15, 19): w_policy = β·(R − b) − γ·Δ on the policy sample, w_target = 1 − β on the Best-of-n target. The γ term
    **lowers** KL(π‖π_a); Alg. 2 in arXiv v1 prints it with the opposite sign (docs/maths.md §3). All inputs are
    detached `(P,)` tensors (Δ = log π(y) − log π_a(y)); the weights are "advantages": maximise w·log π.
    """
    w_policy = jeffreys_beta * (returns - baseline) - anchor_kl_coef * log_ratio
    w_target = torch.full_like(w_policy, 1.0 - jeffreys_beta)
    return w_policy, w_target


class JBondWeights(NamedTuple):
    """Output of [`jbond_weights`]."""

    weights: torch.Tensor
    """`(P, 1 + k)` per-row loss weights ("advantages"): slot 0 the policy sample, slots 1..k the anchor samples."""
    target: torch.Tensor
    """`(P,)` slot (1..k) of the Best-of-N target of each prompt, the row that gets the SFT weight."""
    stats: dict[str, torch.Tensor]
    """0-d statistics of the batch, keyed by the trainer's metric names without the `jbond/` prefix."""


def jbond_weights(
    policy_rewards: torch.Tensor,
    anchor_rewards: torch.Tensor,
    log_ratio: torch.Tensor,
    lengths: torch.Tensor,
    options: JBondOptions = JBondOptions(),
) -> JBondWeights:
    """Per-row loss weights of one J-BOND/BOND batch (BOND arXiv v1 Alg. 2; eqs. 11, 15, 17, 19).

    Each prompt has one policy sample y (slot 0) and k anchor samples (slots 1..k): `policy_rewards` `(P,)`,
    `anchor_rewards` `(P, k)`, `log_ratio` `(P,)` the detached sequence Δ = log π(y) − log π_a(y), `lengths`
    `(P, 1 + k)` the completion lengths (for `"token_mean"`). The return R = r(y) − Δ (eq. 15) uses J-BOND's crude
    reward ([`jbond_reward`]) or, with `mode="bond"`, BOND's quantile reward ([`~trl_bon.core.log_bon_ratio`]);
    docs/maths.md §3–§4 derive the weights. A single-prompt batch gets no `"batch_loo"` baseline.
    """
    o = options
    num_prompts, k = anchor_rewards.shape
    if lengths.shape != (num_prompts, 1 + k):
        raise ValueError(f"`lengths` must have shape (P, 1 + k) = {(num_prompts, 1 + k)}, got {tuple(lengths.shape)}.")
    stats = {}
    if o.mode == "jbond":
        reward = jbond_reward(policy_rewards, anchor_rewards, o.jbond_penalty, o.jbond_ties)
        target = best_anchor_index(anchor_rewards) + 1
        stats["frac_rJ_nonzero"] = (reward != 0).float().mean()
    else:
        n = o.num_candidates
        if n > k:
            raise ValueError(f"BOND needs 2 <= num_candidates <= k = {k} anchor samples, got {n}.")
        reward = log_bon_ratio(policy_rewards, anchor_rewards, n, o.quantile_smoothing, o.include_tie_correction)
        target = best_anchor_index(anchor_rewards[:, :n]) + 1
        p_le = empirical_quantile(policy_rewards, anchor_rewards, smoothing=o.quantile_smoothing)
        stats["frac_quantile_clamped"] = (policy_rewards < anchor_rewards.min(dim=-1).values).float().mean()
        stats["log_quantile"] = p_le.log().mean()

    returns = reward - log_ratio
    if o.baseline == "batch_loo" and returns.numel() >= 2:
        loo = batch_loo_baseline(returns)
    else:  # "none", or a single-prompt (evaluation) batch
        loo = torch.zeros_like(returns)
    w_policy, w_target = jbond_sequence_weights(returns, log_ratio, loo, o.jeffreys_beta, o.anchor_kl_coef)
    weights = torch.zeros(num_prompts, 1 + k, dtype=policy_rewards.dtype, device=policy_rewards.device)
    weights[:, 0] = w_policy
    weights.scatter_(1, target[:, None], w_target[:, None])
    weights = weights * (1 + k)  # RLOO averages over the 1 + k rows of a group; the objective over prompts
    if o.loss_normalization == "token_mean":
        weights = weights / lengths.clamp(min=1.0)

    stats["reward/policy"] = policy_rewards.mean()
    stats["reward/anchor"] = anchor_rewards.mean()
    stats["win_rate_vs_anchor"] = win_rate(policy_rewards, anchor_rewards).mean()
    stats["kl_anchor"] = log_ratio.mean()
    stats["return"] = returns.mean()
    return JBondWeights(weights, target, stats)
