"""The effective-N meters (`core.effective_n`): exact inverses of Best-of-N's win-rate and KL laws, checked against
the exact Best-of-N law of the one-token task (`core.bon_probs`)."""

import math

import pytest
import torch

from trl_bon.core import (
    bon_kl_bound,
    bon_probs,
    bon_win_rate,
    effective_n_from_kl,
    effective_n_from_win_rate,
    reward_quantiles,
)
from trl_bon.toy import EXAMPLE_REF_PROBS, EXAMPLE_REWARDS


NS = (1, 2, 4, 8, 16, 100)


def _f64(value):
    return torch.tensor(value, dtype=torch.float64)


@pytest.mark.parametrize("n", NS)
def test_n_kl_inverts_the_kl_law(n):
    assert float(effective_n_from_kl(_f64(bon_kl_bound(n)))) == pytest.approx(n, rel=1e-12)


@pytest.mark.parametrize("n", NS)
def test_n_win_inverts_the_win_rate_law(n):
    assert float(effective_n_from_win_rate(_f64(bon_win_rate(n)))) == pytest.approx(n, rel=1e-12)


def test_meters_keep_shape_and_work_batched():
    kls = _f64([[bon_kl_bound(n) for n in NS]] * 2)
    assert effective_n_from_kl(kls).shape == (2, len(NS))
    torch.testing.assert_close(effective_n_from_kl(kls)[1], _f64(NS), rtol=1e-12, atol=0)
    assert effective_n_from_win_rate(_f64([0.5, 0.75])).tolist() == [1.0, 3.0]


def test_n_kl_edge_cases():
    values = effective_n_from_kl(_f64([0.0, -0.3, 1e-300, 700.0, 709.0, math.inf, math.nan]))
    assert values[:3].tolist() == [1.0, 1.0, 1.0]  # π_ref itself; a negative k1 batch estimate is noise
    assert values[3] == pytest.approx(math.exp(701.0 - 1e-304), rel=1e-12)  # log N − 1 + 1/N = KL with 1/N ≈ 0
    assert values[4] == math.inf and values[5] == math.inf  # beyond float64's largest N
    assert math.isnan(values[6])


def test_n_win_edge_cases():
    values = effective_n_from_win_rate(_f64([0.0, 0.25, 0.5, 1.0, math.nan]))
    assert values[:4].tolist() == [0.0, 1 / 3, 1.0, math.inf]  # below ½: the policy loses to π_ref
    assert math.isnan(values[4])
    with pytest.raises(ValueError, match=r"win rate lies in \[0, 1\]"):
        effective_n_from_win_rate(_f64([0.5, 1.2]))


def _exact_meters(ref_probs, rewards, n):
    """N_win and N_KL of the exact Best-of-N law: win rate with ties counted ½, and KL(π_BoN‖π_ref)."""
    bon = bon_probs(ref_probs, rewards, n)
    p_lt, _ = reward_quantiles(ref_probs, rewards)
    win = (bon * (p_lt + 0.5 * ref_probs)).sum()  # P[r(y) > r(y')] + ½·P[r(y) = r(y')], y ~ π_BoN, y' ~ π_ref
    kl = (bon * (bon / ref_probs).log()).sum()
    return float(effective_n_from_win_rate(win)), float(effective_n_from_kl(kl))


def _continuous_like(k):
    """The one-token task with each outcome split into k equally likely sub-outcomes of distinct, order-keeping
    rewards: as k grows the reward becomes continuous (no outcome has mass above 0.3/k)."""
    ref_probs = (_f64(EXAMPLE_REF_PROBS) / k).repeat_interleave(k)
    rewards = (_f64(EXAMPLE_REWARDS).unsqueeze(1) + torch.arange(k, dtype=torch.float64) / (2 * k)).flatten()
    return ref_probs, rewards


@pytest.mark.parametrize("n", (2, 4, 8, 16))
def test_meters_recover_n_on_the_one_token_task_as_the_reward_becomes_continuous(n):
    errors = []
    for k in (100, 200):
        n_win, n_kl = _exact_meters(*_continuous_like(k), n)
        errors.append((n - n_win, n - n_kl))
        assert n_win == pytest.approx(n, rel=3e-3) and n_kl == pytest.approx(n, rel=3e-3)
    for coarse, fine in zip(errors[0], errors[1], strict=True):
        # Both laws hold in the continuous limit; the gap is the mass of ties between identical draws, O(1/k²).
        assert 0 < fine < coarse / 3.5


def test_meters_under_read_n_on_the_discrete_one_token_task():
    """The documented caveat, with the task's exact numbers: 6 outcomes, so two draws tie with probability
    Σ π_ref² ≈ 0.2; Best-of-16 almost always returns the best outcome, and both meters read far below 16."""
    ref_probs, rewards = _f64(EXAMPLE_REF_PROBS), _f64(EXAMPLE_REWARDS)
    assert _exact_meters(ref_probs, rewards, 1) == pytest.approx((1.0, 1.0), abs=1e-7)  # N = 1 is still exact
    n_win, n_kl = _exact_meters(ref_probs, rewards, 16)
    assert n_win == pytest.approx(6.878034, abs=1e-6)
    assert n_kl == pytest.approx(9.274791, abs=1e-6)
