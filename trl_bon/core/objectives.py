"""Estimates of the objective each trainer optimises, logged beside TRL's `loss`, a surrogate that does not move when
the policy learns (docs/metrics.md)."""

import torch


def jeffreys_estimate(target_logps: torch.Tensor, returns: torch.Tensor, jeffreys_beta: float) -> torch.Tensor:
    """J-BOND/BOND's Jeffreys objective (BOND arXiv v1 eq. 11), up to the entropy of the Best-of-N target law:

        J_β(π) = (1 − β)·KL(π_BoN‖π) + β·KL(π‖π_BoN)
               ≈ (1 − β)·mean[−log π(y_target)] + β·mean[−R] − (1 − β)·H(π_BoN),

    with y_target the Best-of-N targets (draws of π_BoN) and R = r − Δ the returns of the policy samples (eq. 15). The
    entropy term does not depend on π, so the estimate falls as π approaches π_BoN; it is not 0 at the optimum.
    """
    return (1.0 - jeffreys_beta) * (-target_logps.mean()) + jeffreys_beta * (-returns.mean())


def vbon_objective_estimate(scores: torch.Tensor, seq_kl: torch.Tensor, beta: float) -> torch.Tensor:
    """vBoN's objective, the mean reward RLOO maximises before its baseline (docs/maths.md §5):

        mean[score(y)] − β·mean[Σ_t log π(y_t) − log π_ref(y_t)],   y ~ π,

    with the sequence k1 KL of RLOO's penalty. With β = 1/(N − 1), −(N − 1)·objective = KL(π‖π̂_BoN) for the `"exact"`
    score and log N − (N − 1)·objective ≥ KL(π‖π_BoN) for `"l1"` (vBoN eq. 3); it rises as π approaches π_BoN.
    `seq_kl` holds zeros when β = 0.
    """
    return scores.mean() - beta * seq_kl.mean()
