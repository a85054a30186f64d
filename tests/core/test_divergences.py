"""Divergences between finite distributions (BOND eqs. 11–14)."""

import math

import pytest
import torch

from trl_bon.core import jeffreys, kl_divergence, reverse_kl, total_variation


DT = torch.float64
P = torch.tensor([0.5, 0.5], dtype=DT)
Q = torch.tensor([0.25, 0.75], dtype=DT)


def _random_dists(seed, shape=(7, 5)):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen, dtype=DT) + 1e-3
    return x / x.sum(-1, keepdim=True)


def test_kl_hand_values():
    assert kl_divergence(P, Q).item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(2 / 3), abs=1e-15)
    assert kl_divergence(Q, P).item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), abs=1e-15)
    assert kl_divergence(P, P).item() == 0.0
    # 0·log 0 = 0
    assert kl_divergence(torch.tensor([1.0, 0.0], dtype=DT), P).item() == pytest.approx(math.log(2), abs=1e-15)
    # p > 0 = q → +∞
    assert kl_divergence(P, torch.tensor([1.0, 0.0], dtype=DT)).item() == math.inf


def test_kl_nonnegative_and_batched():
    p, q = _random_dists(0), _random_dists(1)
    kl = kl_divergence(p, q)
    assert kl.shape == (7,)
    assert (kl > 0).all()
    for i in range(7):
        manual = sum(p[i, j] * math.log(p[i, j] / q[i, j]) for j in range(5))
        assert kl[i].item() == pytest.approx(float(manual), abs=1e-14)
    assert kl_divergence(p, p).abs().max().item() < 1e-15


def test_reverse_kl_swaps_arguments():
    p, q = _random_dists(2), _random_dists(3)
    torch.testing.assert_close(reverse_kl(p, q), kl_divergence(q, p), atol=0, rtol=0)
    assert not torch.allclose(reverse_kl(p, q), kl_divergence(p, q))


def test_jeffreys_endpoints_and_midpoint():
    policy, target = _random_dists(4), _random_dists(5)
    forward, backward = kl_divergence(target, policy), kl_divergence(policy, target)
    torch.testing.assert_close(jeffreys(policy, target, 0.0), forward, atol=0, rtol=0)  # BoN-SFT
    torch.testing.assert_close(jeffreys(policy, target, 1.0), backward, atol=0, rtol=0)  # vBoN
    torch.testing.assert_close(jeffreys(policy, target), 0.5 * (forward + backward))  # BOND default β = 0.5
    torch.testing.assert_close(jeffreys(policy, target, 0.3), 0.7 * forward + 0.3 * backward)
    assert jeffreys(P, Q, 0.0).item() == pytest.approx(kl_divergence(Q, P).item(), abs=1e-15)


def test_total_variation():
    assert total_variation(P, Q).item() == pytest.approx(0.25, abs=1e-15)
    assert total_variation(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])).item() == 1.0
    p, q = _random_dists(6), _random_dists(7)
    tv = total_variation(p, q)
    assert tv.shape == (7,)
    torch.testing.assert_close(tv, total_variation(q, p), atol=0, rtol=0)
    assert ((tv > 0) & (tv <= 1)).all()
    # Pinsker: TV ≤ sqrt(KL/2)
    assert (tv <= (kl_divergence(p, q) / 2).sqrt() + 1e-12).all()
