"""J-BOND's crude reward, baseline, target index and loss weights (BOND eqs. 17–19, Alg. 2)."""

import math

import pytest
import torch

from trl_bon.core import (
    batch_loo_baseline,
    best_anchor_index,
    jbond_reward,
    jbond_sequence_weights,
    kl_divergence,
    reward_quantiles,
)


DT = torch.float64
LOG16 = math.log(16.0)
REF = torch.tensor([0.30, 0.25, 0.20, 0.12, 0.08, 0.05], dtype=DT)
DISTINCT = torch.tensor([2.0, 5.0, 0.0, 4.0, 1.0, 3.0], dtype=DT)
TIED = torch.tensor([1.0, 2.0, 0.0, 2.0, 0.0, 1.0], dtype=DT)


def test_jbond_reward_strictly_below_both():
    policy = torch.tensor([0.0, 1.0, 1.5, 2.0, 3.0, 0.5], dtype=DT)
    anchors = torch.tensor([[1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [1.0, 2.0], [2.0, 1.0]], dtype=DT)
    out = jbond_reward(policy, anchors)
    # below both → −log 16; a tie with the worse anchor sample → 0 (strict "<"); between / above → 0
    torch.testing.assert_close(out, torch.tensor([-LOG16, 0.0, 0.0, 0.0, 0.0, -LOG16], dtype=DT), atol=0, rtol=0)
    assert out.dtype == DT and out.shape == (6,)
    assert jbond_reward(torch.tensor([0.0]), torch.tensor([[1.0, 2.0]])).dtype == torch.float32


def test_jbond_reward_tie_with_both_anchor_samples():
    out = jbond_reward(torch.tensor([1.0, 1.0]), torch.tensor([[1.0, 1.0], [1.0, 1.0 + 1e-6]]))
    assert out.tolist() == [0.0, 0.0]


def test_jbond_reward_penalty_and_more_anchor_samples():
    policy = torch.tensor([0.0, 2.5], dtype=DT)
    anchors = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], dtype=DT)
    torch.testing.assert_close(jbond_reward(policy, anchors, penalty=1.5), torch.tensor([-1.5, 0.0], dtype=DT))
    torch.testing.assert_close(jbond_reward(policy, anchors), torch.tensor([-LOG16, 0.0], dtype=DT))
    assert jbond_reward(policy, anchors).min().item() == pytest.approx(-2.7725887, abs=1e-7)


@pytest.mark.parametrize("rewards", [DISTINCT, TIED], ids=["distinct", "tied"])
def test_jbond_reward_calibration_monte_carlo(rewards):
    """E_{y'_1, y'_2 ~ π_a}[r_J(y)] = −log 16·(1 − p≤_a(y))² (2·10^5 anchor pairs, tolerance 0.01)."""
    draws = 200_000
    gen = torch.Generator().manual_seed(0)
    anchors = rewards[torch.multinomial(REF, 2 * draws, replacement=True, generator=gen).view(draws, 2)]
    _, p_le = reward_quantiles(REF, rewards)
    for y in range(len(REF)):
        mean = jbond_reward(rewards[y].expand(draws), anchors).mean().item()
        assert mean == pytest.approx(-LOG16 * (1 - p_le[y].item()) ** 2, abs=0.01)
    # At the anchor median it equals log p≤ = −log 2.
    assert -LOG16 * (1 - 0.5) ** 2 == pytest.approx(math.log(0.5), abs=1e-12)


def test_batch_loo_baseline_values():
    returns = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=DT)
    torch.testing.assert_close(batch_loo_baseline(returns), torch.tensor([11 / 3, 10 / 3, 3.0, 2.0], dtype=DT))
    torch.testing.assert_close(batch_loo_baseline(torch.tensor([1.0, -1.0])), torch.tensor([-1.0, 1.0]))
    # constant returns → zero advantages
    const = torch.full((5,), 0.7, dtype=DT)
    torch.testing.assert_close(const - batch_loo_baseline(const), torch.zeros(5, dtype=DT), atol=1e-15, rtol=0)


@pytest.mark.parametrize("size", [0, 1])
def test_batch_loo_baseline_needs_two(size):
    with pytest.raises(ValueError, match="at least 2"):
        batch_loo_baseline(torch.zeros(size))


def test_best_anchor_index_first_on_ties():
    rewards = torch.tensor([[1.0, 1.0], [2.0, 1.0], [1.0, 2.0], [-1.0, -1.0]])
    assert best_anchor_index(rewards).tolist() == [0, 0, 1, 0]
    assert best_anchor_index(torch.tensor([[0.0, 5.0, 5.0, 1.0]])).tolist() == [1]


def test_jbond_sequence_weights_values():
    returns = torch.tensor([1.0, 2.0], dtype=DT)
    log_ratio = torch.tensor([0.5, -1.0], dtype=DT)
    baseline = torch.tensor([0.5, 0.5], dtype=DT)
    w_policy, w_target = jbond_sequence_weights(returns, log_ratio, baseline, jeffreys_beta=0.5, anchor_kl_coef=0.1)
    # w_policy = β·(R − b) − γ·Δ ; w_target = 1 − β
    torch.testing.assert_close(w_policy, torch.tensor([0.2, 0.85], dtype=DT), atol=1e-15, rtol=0)
    torch.testing.assert_close(w_target, torch.tensor([0.5, 0.5], dtype=DT), atol=0, rtol=0)
    # endpoints: β = 0 is pure SFT on the target, β = 1 pure REINFORCE
    w_policy, w_target = jbond_sequence_weights(returns, log_ratio, baseline, 0.0, 0.0)
    assert w_policy.abs().max().item() == 0.0 and w_target.tolist() == [1.0, 1.0]
    w_policy, w_target = jbond_sequence_weights(returns, log_ratio, baseline, 1.0, 0.0)
    torch.testing.assert_close(w_policy, returns - baseline, atol=0, rtol=0)
    assert w_target.abs().max().item() == 0.0


def _gamma_step(logits, anchor, gamma, lr, flip_sign=False):
    """One exact-expectation gradient step of the γ term alone on a tabular softmax policy.

    The loss is −E_{y~π}[w_policy(y)·log π(y)] with sampling probabilities detached (the score-function form the
    trainers use), w_policy from `jbond_sequence_weights` with zero returns and baselines.
    """
    theta = logits.clone().requires_grad_(True)
    log_pi = torch.log_softmax(theta, -1)
    delta = (log_pi - anchor.log()).detach()
    w_policy, _ = jbond_sequence_weights(torch.zeros_like(delta), delta, torch.zeros_like(delta), 0.5, gamma)
    if flip_sign:  # Alg. 2 of arXiv v1 read literally
        w_policy = -w_policy
    loss = -(log_pi.exp().detach() * w_policy * log_pi).sum()
    loss.backward()
    return theta.grad, (theta - lr * theta.grad).detach()


def test_gamma_term_lowers_anchor_kl():
    anchor = REF
    logits = torch.tensor([0.3, 2.0, -1.0, 0.5, -0.5, 1.0], dtype=DT)
    kl_before = kl_divergence(torch.softmax(logits, -1), anchor).item()
    assert kl_before > 0.1

    grad, stepped = _gamma_step(logits, anchor, gamma=1.0, lr=0.1)
    assert kl_divergence(torch.softmax(stepped, -1), anchor).item() < kl_before
    # Its gradient is exactly γ·∇KL(π‖π_a).
    theta = logits.clone().requires_grad_(True)
    kl_divergence(torch.softmax(theta, -1), anchor).backward()
    torch.testing.assert_close(grad, theta.grad, atol=1e-12, rtol=0)

    # γ = 0 does not move the policy; the flipped sign (Alg. 2 printed literally) raises the KL.
    _, unchanged = _gamma_step(logits, anchor, gamma=0.0, lr=0.1)
    torch.testing.assert_close(unchanged, logits, atol=0, rtol=0)
    _, flipped = _gamma_step(logits, anchor, gamma=1.0, lr=0.1, flip_sign=True)
    assert kl_divergence(torch.softmax(flipped, -1), anchor).item() > kl_before
