"""J-BOND's crude reward under massive ties (0/1 verifiers): the `"half"` tie rule against the paper's strict rule.

The measure is the Jeffreys fixed point of one J-BOND phase against a fixed anchor (= π_ref), β = 0.5, in law space:
the policy π solves (1 − β)·(π_Bo2 − π) + β·π⊙(A − E_π[A]) = 0 with A(y) = E[r_J(y)] − log(π(y)/π_ref(y)), the
expected logit gradient of the trainer's loss (forward KL on the best anchor sample plus REINFORCE on r_J − Δ).
"""

import math

import pytest
import torch

from trl_bon.core import JBondOptions, bon_probs, jbond_reward, jbond_weights, kl_divergence, reward_quantiles


DT = torch.float64
LOG16 = math.log(16.0)


def _expected_crude_reward(ref, rewards, ties):
    """E_{y'_1, y'_2 ~ π_ref}[r_J(y)] for every outcome y, by enumerating the anchor pairs."""
    v = len(ref)
    pairs = torch.cartesian_prod(torch.arange(v), torch.arange(v))
    weights = ref[pairs[:, 0]] * ref[pairs[:, 1]]
    anchors = rewards[pairs]
    return torch.stack(
        [(weights * jbond_reward(rewards[y].expand(len(pairs)), anchors, ties=ties)).sum() for y in range(v)]
    )


def _jeffreys_fixed_point(ref, rewards, ties, beta=0.5):
    target, crude = bon_probs(ref, rewards, 2), _expected_crude_reward(ref, rewards, ties)
    logits = ref.log().clone()
    for _ in range(5000):
        policy = torch.softmax(logits, -1)
        advantage = crude - (policy.log() - ref.log())
        logits += (1 - beta) * (target - policy) + beta * policy * (advantage - (policy * advantage).sum())
    return torch.softmax(logits, -1)


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_half_ties_bring_the_fixed_point_to_best_of_2_with_a_verifier(p):
    """0/1 reward, a minority p correct: strict ties stop 0.008 (p = 0.1) / 0.012 (p = 0.3) nats short of Bo2
    (the wrong policy sample is penalised only when both anchor samples are correct); half ties land within 0.002."""
    ref, rewards = torch.tensor([1 - p, p], dtype=DT), torch.tensor([0.0, 1.0], dtype=DT)
    target = bon_probs(ref, rewards, 2)
    strict = kl_divergence(_jeffreys_fixed_point(ref, rewards, "strict"), target).item()
    half = kl_divergence(_jeffreys_fixed_point(ref, rewards, "half"), target).item()
    assert strict > 0.007, strict
    assert half < 0.002, half


def test_half_ties_are_closer_on_the_six_outcome_example_too():
    """Distinct rewards still tie when the same outcome is drawn twice: 0.0019 (strict) → 0.0007 (half)."""
    ref = torch.tensor([0.30, 0.25, 0.20, 0.12, 0.08, 0.05], dtype=DT)
    rewards = torch.tensor([2.0, 5.0, 0.0, 4.0, 1.0, 3.0], dtype=DT)
    target = bon_probs(ref, rewards, 2)
    strict = kl_divergence(_jeffreys_fixed_point(ref, rewards, "strict"), target).item()
    half = kl_divergence(_jeffreys_fixed_point(ref, rewards, "half"), target).item()
    assert strict == pytest.approx(0.0019, abs=1e-4) and half == pytest.approx(0.0007, abs=1e-4)


def test_half_ties_values_and_calibration():
    policy = torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0], dtype=DT)
    anchors = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [2.0, 3.0]], dtype=DT)
    expected = torch.tensor([-LOG16 / 4, -LOG16 / 2, -LOG16, -LOG16 / 4, 0.0, -LOG16], dtype=DT)
    torch.testing.assert_close(jbond_reward(policy, anchors, ties="half"), expected, atol=1e-15, rtol=0)
    # E[r_J] = −log 16·(1 − p̄)², p̄ = (p< + p≤)/2, on the six-outcome example with tied levels (exact enumeration).
    ref = torch.tensor([0.30, 0.25, 0.20, 0.12, 0.08, 0.05], dtype=DT)
    tied = torch.tensor([1.0, 2.0, 0.0, 2.0, 0.0, 1.0], dtype=DT)
    p_lt, p_le = reward_quantiles(ref, tied)
    mid = (p_lt + p_le) / 2
    torch.testing.assert_close(_expected_crude_reward(ref, tied, "half"), -LOG16 * (1 - mid) ** 2, atol=1e-12, rtol=0)


def test_tie_rules_agree_without_ties_and_reject_unknown():
    gen = torch.Generator().manual_seed(0)
    policy, anchors = torch.randn(50, generator=gen, dtype=DT), torch.randn(50, 2, generator=gen, dtype=DT)
    assert torch.equal(jbond_reward(policy, anchors, ties="half"), jbond_reward(policy, anchors, ties="strict"))
    with pytest.raises(ValueError, match="tie rule"):
        jbond_reward(policy, anchors, ties="coin")


def test_jbond_weights_route_the_tie_rule():
    policy, anchors = torch.zeros(3, dtype=DT), torch.zeros(3, 2, dtype=DT)
    lengths, log_ratio = torch.ones(3, 3, dtype=DT), torch.zeros(3, dtype=DT)
    half = jbond_weights(policy, anchors, log_ratio, lengths, JBondOptions(jbond_ties="half", baseline="none"))
    strict = jbond_weights(policy, anchors, log_ratio, lengths, JBondOptions(jbond_ties="strict", baseline="none"))
    assert half.weights[:, 0].tolist() == [3 * 0.5 * -LOG16 / 4] * 3  # (1 + k)·β·r_J
    assert strict.weights[:, 0].tolist() == [0.0] * 3
