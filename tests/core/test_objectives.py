"""`trl_bon.core.objectives`: the objective estimates logged beside TRL's surrogate `loss`."""

import math

import pytest
import torch

from trl_bon.core import bon_probs, jeffreys, jeffreys_estimate, kl_divergence, vbon_objective_estimate


def test_jeffreys_estimate_is_the_weighted_sum():
    target_logps = torch.tensor([-2.0, -4.0])
    returns = torch.tensor([-1.0, 0.0])
    assert jeffreys_estimate(target_logps, returns, 0.5).item() == pytest.approx(0.5 * 3.0 + 0.5 * 0.5)
    assert jeffreys_estimate(target_logps, returns, 0.0).item() == pytest.approx(3.0)  # BoN-SFT: forward term only
    assert jeffreys_estimate(target_logps, returns.mean(), 1.0).item() == pytest.approx(0.5)  # a mean return works


def test_jeffreys_estimate_in_expectation_on_a_discrete_law():
    """On a 4-outcome law with exact expectations (R = log π_BoN/π − no J-BOND crudeness, `mode="bond"`):
    the estimate equals J_β(π) + (1 − β)·H(π_BoN), and is smaller at π = π_BoN than at π_ref."""
    ref = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    target = bon_probs(ref, torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64), 4)
    entropy = -(target * target.log()).sum()
    beta = 0.5
    for policy in (ref, target, (ref + target) / 2):
        # E_BoN[log π] and E_π[R] with R = log π_BoN − log π (the anchor is π_ref, no anchor KL left over)
        target_logps = (target * policy.log()).sum().reshape(1)
        returns = (policy * (target.log() - policy.log())).sum().reshape(1)
        estimate = jeffreys_estimate(target_logps, returns, beta)
        assert estimate.item() == pytest.approx((jeffreys(policy, target, beta) + (1 - beta) * entropy).item())
    at_target = jeffreys_estimate((target * target.log()).sum().reshape(1), torch.zeros(1), beta)
    at_ref = jeffreys_estimate(
        (target * ref.log()).sum().reshape(1), (ref * (target.log() - ref.log())).sum().reshape(1), beta
    )
    assert at_target < at_ref


def test_vbon_objective_estimate_gives_kl_to_bon_for_the_exact_score():
    """exact score = log(π_BoN/π_ref)/(N − 1), β = 1/(N − 1): −(N − 1)·objective = KL(π‖π_BoN) exactly."""
    n = 4
    ref = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    target = bon_probs(ref, torch.tensor([0.0, 1.0, 2.0, 3.0], dtype=torch.float64), n)
    policy = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    # expectations under π written as weighted samples: each outcome once, weighted by π (mean → Σ π·x over 4 rows)
    scores = 4 * policy * (target.log() - ref.log()) / (n - 1)
    seq_kl = 4 * policy * (policy.log() - ref.log())
    objective = vbon_objective_estimate(scores, seq_kl, 1 / (n - 1))
    assert (-(n - 1) * objective).item() == pytest.approx(kl_divergence(policy, target).item())
    assert vbon_objective_estimate(scores, torch.zeros(4), 0.0).item() == pytest.approx(scores.mean().item())
    assert math.isfinite(objective.item())
