"""J-BOND's crude reward, batch baseline and per-sequence loss weights (BOND arXiv v1 §5, eq. 17, Alg. 2)."""

import math

import torch


def jbond_reward(
    policy_rewards: torch.Tensor, anchor_rewards: torch.Tensor, penalty: float = math.log(16.0)
) -> torch.Tensor:
    """r_J(y) = −penalty if r(y) < min(r(y'_1), r(y'_2)) else 0 (arXiv v1 eq. 17).

    Strict "<": a tie with an anchor sample earns 0 (this matches the calibration E[r_J] = −log 16·(1 − p≤_a)², which
    equals log p≤ = −log 2 at the anchor median).

    Args:
        policy_rewards: `(B,)` rewards of the policy samples.
        anchor_rewards: `(B, n)` rewards of the anchor samples drawn for the same prompts (n = 2 in J-BOND).
        penalty: positive penalty, log 16 by default.

    Returns:
        `(B,)` crude rewards, 0 or −penalty.
    """
    loses_to_all = policy_rewards < anchor_rewards.min(dim=-1).values
    # built in the rewards' dtype: a Python-scalar `torch.where` would round the penalty to float32 first
    return torch.zeros_like(policy_rewards).masked_fill(loses_to_all, -penalty)


def best_anchor_index(anchor_rewards: torch.Tensor) -> torch.Tensor:
    """Index of the best anchor sample per prompt, the Best-of-n target y_bo2; ties take the first (algorithms §2.3).
    """
    return anchor_rewards.argmax(dim=-1)  # torch.argmax returns the first maximal index


def batch_loo_baseline(returns: torch.Tensor) -> torch.Tensor:
    """Batch leave-one-out baseline b_i = mean_{j ≠ i} R_j over the whole batch (BOND §4.2 / Alg. 2, "optional").

    Args:
        returns: `(B,)` detached returns, B ≥ 2.

    Returns:
        `(B,)` baselines.
    """
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
    """Per-sequence loss weights that realise the J-BOND/BOND objective as a weighted log-likelihood.

    With loss L = −mean_prompts[w_policy·log π(y) + w_target·log π(y_target)] the gradient is (Alg. 2, eqs. 11, 15, 19)

        ∇L = −(1−β)·∇log π(y_target) − β·(R − b)·∇log π(y) + γ·Δ·∇log π(y),

    i.e. SFT on the Best-of-n target (forward KL), REINFORCE with return R = r − Δ and baseline b (backward KL), and
    the anchor-KL term. Δ = log π(y) − log π_a(y) (detached). The γ term enters as +γ·Δ·log π in the loss, which
    **lowers** KL(π‖π_a) (its gradient is E[∇log π·Δ]); Alg. 2 in arXiv v1 prints it with the opposite sign.

    Args:
        returns: `(P,)` detached returns R (e.g. r_J − Δ), one per prompt.
        log_ratio: `(P,)` detached Δ.
        baseline: `(P,)` detached baselines b (zeros for no baseline).
        jeffreys_beta: β ∈ [0, 1].
        anchor_kl_coef: γ ≥ 0.

    Returns:
        `(w_policy, w_target)`, both `(P,)`; maximise w·log π, i.e. they are "advantages".
    """
    w_policy = jeffreys_beta * (returns - baseline) - anchor_kl_coef * log_ratio
    w_target = torch.full_like(w_policy, 1.0 - jeffreys_beta)
    return w_policy, w_target
