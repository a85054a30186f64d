"""vBoN scores (arXiv 2407.06057; docs/maths.md §5), hand-computed: the l1 log-CDF, the tie-safe exact log-ratio and
the authors' code scaling."""

import math

import pytest
import torch

from trl_bon.core import bon_probs, reward_quantiles
from trl_bon.core.vbon import binomial_log_ratio, cache_statistics, exact_log_ratio, vbon_scores


REF = torch.tensor([[1.0, 2.0, 2.0, 3.0]])  # M = 4 cached reference rewards, with a tie at 2


def _scores(r, objective="l1", ref_logp=None, n=2, code=False, ref=REF):
    return vbon_scores(
        torch.tensor([r]),
        ref,
        n,
        objective,
        ref_logps=None if ref_logp is None else torch.tensor([ref_logp]),
        reproduce_code_scaling=code,
    )


@pytest.mark.parametrize(
    "r, expected",
    [
        (2.0, math.log(2 / 5)),  # strict: the two tied 2's are not below; F̂ = (1 + 1)/(4 + 1)
        (2.5, math.log(4 / 5)),
        (0.0, math.log(1 / 5)),  # below all: the floor −log(M + 1)
        (1.0, math.log(1 / 5)),  # tied with the minimum: also at the floor
        (9.0, 0.0),  # above all: F̂ = 1
    ],
)
def test_l1_score_is_log_cdf(r, expected):
    out = _scores(r)
    assert out["score"].item() == pytest.approx(expected, abs=1e-6)
    assert out["log_cdf"].item() == pytest.approx(expected, abs=1e-6)
    assert out["at_floor"].item() == (r <= 1.0)


def test_unequal_m_padding():
    ref = torch.tensor([[1.0, 2.0, float("nan")], [0.0, 1.0, 2.0]])
    out = vbon_scores(torch.tensor([1.5, 1.5]), ref, 2)
    assert out["score"].tolist() == pytest.approx([math.log(2 / 3), math.log(3 / 4)])


@pytest.mark.parametrize(
    "r, ref_logp, n, expected",
    [
        # tie: q = max(q̂ = 2/4, π_ref = 0.1) = 0.5, p< = F̂ = 0.4, p≤ = 0.9: log((0.9² − 0.4²)/0.5)/(N−1)
        (2.0, math.log(0.1), 2, math.log((0.81 - 0.16) / 0.5)),
        # no tie: q = π_ref = 0.05, p< = 0.8, p≤ = 0.85, N = 3
        (2.5, math.log(0.05), 3, math.log((0.85**3 - 0.8**3) / 0.05) / 2),
        # tie, π_ref above q̂: q = 0.6
        (2.0, math.log(0.6), 2, math.log((1.0**2 - 0.4**2) / 0.6)),
        # above all: F̂ = 1 is capped at 1 − q, so p≤ = 1: log((1 − 0.9²)/0.1)
        (9.0, math.log(0.1), 2, math.log((1 - 0.81) / 0.1)),
        # below all: p< = F̂ = 1/5, q = π_ref = 0.2
        (0.0, math.log(0.2), 2, math.log((0.4**2 - 0.2**2) / 0.2)),
    ],
)
def test_exact_score_hand_computed(r, ref_logp, n, expected):
    assert _scores(r, "exact", ref_logp, n)["score"].item() == pytest.approx(expected, rel=1e-5)


def test_code_scaling_hand_computed():
    # binomial form with F = 0.4, π = 0.1, N = 2: (2·0.1·0.4 + 0.1²)/0.1 = 0.9, divided by N
    assert _scores(2.0, "exact", math.log(0.1), 2, code=True)["score"].item() == pytest.approx(math.log(0.9) / 2)


@pytest.mark.parametrize("rewards", [[2, 5, 0, 4, 1, 3], [1, 2, 0, 2, 0, 1]])
def test_exact_log_ratio_matches_bon_law_with_ties(rewards):
    """With the true p< and q, exp(log-ratio)·π_ref is the exact tie-safe Best-of-N law (BOND eq. 4)."""
    ref = torch.tensor([0.30, 0.25, 0.20, 0.12, 0.08, 0.05], dtype=torch.float64)
    r = torch.tensor(rewards, dtype=torch.float64)
    p_lt, p_le = reward_quantiles(ref, r)
    law = ref * exact_log_ratio(p_lt.log(), (p_le - p_lt).log(), 4).exp()
    torch.testing.assert_close(law, bon_probs(ref, r, 4))


def test_exact_log_ratio_text_regime():
    """q = π_ref(y) ≪ p<: log π_BoN − log π_ref → log N + (N−1)·log p<, without underflow at q = e^-2000."""
    out = exact_log_ratio(torch.tensor([math.log(0.3), 0.0]), torch.tensor([-2000.0, -2000.0]), 4)
    assert out.tolist() == pytest.approx([math.log(4) + 3 * math.log(0.3), math.log(4)])
    assert binomial_log_ratio(torch.tensor([math.log(0.3)]), torch.tensor([-2000.0]), 4).item() == pytest.approx(
        math.log(4) + 3 * math.log(0.3)
    )


def test_cache_statistics_ties():
    log_cdf, log_q, floor = cache_statistics(torch.tensor([2.0, 2.5]), REF.expand(2, -1))
    assert log_q.tolist() == pytest.approx([math.log(0.5), -math.inf])
    assert floor.tolist() == [False, False]
