"""Evaluation maths (docs/maths.md §7): k1/k3 KL, win rates with ties counted ½, the KL-to-Best-of-N estimators."""

import math

import pytest
import torch

from trl_bon.core import kl_k1, kl_k3, log_bon_ratio, win_rate
from trl_bon.core.metrics import backward_kl_to_bon, bon_kl_bound, forward_kl_to_bon, mean_and_sem


class TestMetrics:
    def test_k1_and_k3_exact(self):
        policy = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -0.5, -9.0]])
        ref = torch.tensor([[-1.5, -1.0, 0.0], [-0.5, -1.5, -9.0]])
        mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])  # last column is padding
        assert kl_k1(policy, ref, mask).tolist() == pytest.approx([0.5 - 1.0, 0.0 + 1.0])
        u = ref - policy
        expected = [(math.exp(-0.5) - 1 + 0.5) + (math.exp(1.0) - 1 - 1.0), 0.0 + (math.exp(-1.0) - 1 + 1.0)]
        assert kl_k3(policy, ref, mask).tolist() == pytest.approx(expected)
        assert (kl_k3(policy, ref, mask) >= 0).all() and u[0, 2] == 0

    def test_k1_and_k3_are_unbiased_for_the_exact_kl(self):
        p, q = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64), torch.tensor([0.3, 0.3, 0.4], dtype=torch.float64)
        exact = float((p * (p / q).log()).sum())
        ones = torch.ones(3, 1, dtype=torch.float64)
        k1 = kl_k1(p.log().unsqueeze(1), q.log().unsqueeze(1), ones)
        k3 = kl_k3(p.log().unsqueeze(1), q.log().unsqueeze(1), ones)
        assert float((p * k1).sum()) == pytest.approx(exact)  # expectation under y ~ p
        assert float((p * k3).sum()) == pytest.approx(exact)

    def test_win_rate_counts_ties_half(self):
        rewards = torch.tensor([1.0, 2.0, 3.0])
        assert win_rate(rewards, torch.tensor([1.0, 1.0, 4.0])).tolist() == [0.5, 1.0, 0.0]
        refs = torch.tensor([[0.0, 1.0, 2.0, 1.0], [2.0, 2.0, 2.0, 2.0], [float("nan"), 3.0, 1.0, 5.0]])
        assert win_rate(rewards, refs).tolist() == pytest.approx([(1 + 0.5 + 0 + 0.5) / 4, 0.5, (0.5 + 1 + 0) / 3])

    def test_log_bon_ratio_continuous_and_ties(self):
        refs = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
        # continuous case: p≤ = 3/4, no ties so B = N
        assert float(log_bon_ratio(torch.tensor([0.35]), refs, 4)) == pytest.approx(3 * math.log(0.75) + math.log(4))
        # a tie: p< = 1/4, p≤ = 1/2, B = Σ_{i<4} (1/2)^i = 1.875
        assert float(log_bon_ratio(torch.tensor([0.2]), refs, 4)) == pytest.approx(3 * math.log(0.5) + math.log(1.875))
        # below every reference sample: clamp p≤ to 1/(2k), B = N (no tie)
        assert float(log_bon_ratio(torch.tensor([0.0]), refs, 2)) == pytest.approx(math.log(1 / 8) + math.log(2))

    def test_bon_kl_estimators(self):
        refs = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
        r = torch.tensor([0.35])
        assert float(backward_kl_to_bon(torch.tensor([0.2]), r, refs, 2)) == pytest.approx(
            0.2 - math.log(0.75) - math.log(2)
        )
        assert float(forward_kl_to_bon(torch.tensor([-1.0]), torch.tensor([-0.5]), r, refs, 2)) == pytest.approx(
            -1.0 + math.log(0.75) + math.log(2) + 0.5
        )
        assert bon_kl_bound(4) == pytest.approx(0.636294, abs=1e-6)  # log 4 − 3/4
        assert mean_and_sem(torch.tensor([1.0, 3.0])) == pytest.approx((2.0, 1.0))
        assert math.isnan(mean_and_sem(torch.tensor([float("nan")]))[0])
