"""BOND with a 0/1 verifier: the tie correction log B̂ is what makes its fixed point Best-of-N (BOND eq. 4).

Law-space fixed point of one BOND phase (fixed anchor = π_ref, β = 0.5, k = 16 anchor samples, N = 4, clamp
smoothing): the logit-space expected gradient (1 − β)·(s_N − π) + β·π(1 − π)·(ΔR − (θ − θ_ref)) = 0, with
ΔR = E[reward | correct] − E[reward | wrong] averaged exactly over the Binomial(k, p) anchor draws.
"""

import math

import pytest
import torch

from trl_bon.core import bon_success_rate, log_bon_ratio


K, N, BETA = 16, 4, 0.5


def _expected_reward_gap(p, include_tie_correction):
    gap = 0.0
    for correct_anchors in range(K + 1):
        weight = math.comb(K, correct_anchors) * p**correct_anchors * (1 - p) ** (K - correct_anchors)
        anchors = torch.tensor([[1.0] * correct_anchors + [0.0] * (K - correct_anchors)] * 2, dtype=torch.float64)
        reward = log_bon_ratio(
            torch.tensor([1.0, 0.0], dtype=torch.float64), anchors, N, "clamp", include_tie_correction
        )
        gap += weight * (reward[0] - reward[1]).item()
    return gap


def _fixed_point(p, include_tie_correction):
    target, gap, ref_logit = 1 - (1 - p) ** N, _expected_reward_gap(p, include_tie_correction), math.log(p / (1 - p))
    low, high = -30.0, 30.0
    for _ in range(100):  # the expected gradient decreases in the logit θ: bisection
        theta = (low + high) / 2
        pi = 1 / (1 + math.exp(-theta))
        grad = (1 - BETA) * (target - pi) + BETA * pi * (1 - pi) * (gap - (theta - ref_logit))
        low, high = (theta, high) if grad > 0 else (low, theta)
    return 1 / (1 + math.exp(-low))


def _binary_kl(a, b):
    return a * math.log(a / b) + (1 - a) * math.log((1 - a) / (1 - b))


@pytest.mark.parametrize("p", [0.05, 0.1, 0.3])
def test_tie_correction_makes_bond_exact_for_0_1_rewards(p):
    target = bon_success_rate(torch.tensor(p, dtype=torch.float64), N).item()
    with_b = _binary_kl(_fixed_point(p, True), target)
    without_b = _binary_kl(_fixed_point(p, False), target)
    assert with_b < 1e-4, with_b  # 0.00000 / 0.00000 / 0.00004 measured
    assert without_b > 0.015, without_b  # 0.020 / 0.032 / 0.023: the success rate falls short of s_4


def test_tie_correction_is_a_constant_without_ties():
    """With distinct rewards B̂ = N for every sample, so the correction only shifts the return by log N."""
    gen = torch.Generator().manual_seed(0)
    rewards, anchors = (
        torch.randn(20, generator=gen, dtype=torch.float64),
        torch.randn(20, 16, generator=gen, dtype=torch.float64),
    )
    shift = log_bon_ratio(rewards, anchors, N, include_tie_correction=True) - log_bon_ratio(
        rewards, anchors, N, include_tie_correction=False
    )
    torch.testing.assert_close(shift, torch.full_like(shift, math.log(N)), atol=1e-12, rtol=0)
