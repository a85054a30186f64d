"""Pure, batched tensor functions for Best-of-N distillation.

Nothing here imports TRL or transformers: every function takes tensors and returns tensors, so the maths can be unit
tested in milliseconds and shared by the trainers, the evaluation code and the examples. Equation numbers refer to
BOND (Sessa et al., arXiv 2407.14622 v1) and vBoN (Amini et al., arXiv 2407.06057) unless stated otherwise.
"""

from .bon_law import bon_probs, bon_probs_binomial, reward_quantiles, tie_correction
from .divergences import jeffreys, kl_divergence, reverse_kl, total_variation
from .effective_n import bon_win_rate, effective_n_from_kl, effective_n_from_win_rate
from .ema import AnchorSchedule, ema_update_
from .jbond import (
    JBondOptions,
    JBondWeights,
    batch_loo_baseline,
    best_anchor_index,
    jbond_reward,
    jbond_sequence_weights,
    jbond_weights,
)
from .metrics import bon_kl_bound, kl_k1, kl_k3, win_rate
from .objectives import jeffreys_estimate, vbon_objective_estimate
from .quantiles import bond_reward, empirical_quantile, log_bon_ratio, vbon_log_cdf
from .verifiable import bon_kl_from_reference, bon_success_rate


__all__ = [
    "AnchorSchedule",
    "JBondOptions",
    "JBondWeights",
    "batch_loo_baseline",
    "best_anchor_index",
    "bon_kl_bound",
    "bon_kl_from_reference",
    "bon_probs",
    "bon_probs_binomial",
    "bon_success_rate",
    "bon_win_rate",
    "bond_reward",
    "effective_n_from_kl",
    "effective_n_from_win_rate",
    "ema_update_",
    "empirical_quantile",
    "jbond_reward",
    "jbond_sequence_weights",
    "jbond_weights",
    "jeffreys",
    "jeffreys_estimate",
    "kl_divergence",
    "kl_k1",
    "kl_k3",
    "log_bon_ratio",
    "reverse_kl",
    "reward_quantiles",
    "tie_correction",
    "total_variation",
    "vbon_log_cdf",
    "vbon_objective_estimate",
    "win_rate",
]
