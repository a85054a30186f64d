"""The exact Best-of-N law (BOND Theorem 1, eq. 4; vBoN eq. 3): regression values, brute force, Monte Carlo."""

import itertools
import math

import numpy as np
import pytest
import torch

from trl_bon.core import bon_probs, bon_probs_binomial, kl_divergence, reward_quantiles, tie_correction


DT = torch.float64
REF = torch.tensor([0.30, 0.25, 0.20, 0.12, 0.08, 0.05], dtype=DT)
DISTINCT = torch.tensor([2.0, 5.0, 0.0, 4.0, 1.0, 3.0], dtype=DT)
TIED = torch.tensor([1.0, 2.0, 0.0, 2.0, 0.0, 1.0], dtype=DT)

# docs/maths.md §1 example, distinct rewards: N -> (π_BoN, KL(π_BoN‖π_ref), log N − (N−1)/N, E_BoN[r], win rate vs ref)
DISTINCT_TABLE = {
    2: ([0.258000, 0.437500, 0.040000, 0.165600, 0.038400, 0.060500], 0.178227, 0.193147, 3.585800, 0.657835),
    4: ([0.107018, 0.683594, 0.001600, 0.158877, 0.004547, 0.044365], 0.595834, 0.636294, 4.405153, 0.781879),
    8: ([0.012769, 0.899887, 0.0000026, 0.075297, 0.0000352, 0.012009], 1.059753, 1.204442, 4.862225, 0.852121),
}

# Two-token example: V = {0, 1, 2}, r(y1, y2) = y1 + y2, N = 3, lexicographic order 00, 01, …, 22.
P1 = torch.tensor([0.5, 0.3, 0.2], dtype=DT)
P2 = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.1, 0.2, 0.7]], dtype=DT)
TWO_REF = (P1[:, None] * P2).reshape(-1)
TWO_REWARDS = torch.tensor([a + b for a in range(3) for b in range(3)], dtype=DT)


def win_rate(bon: torch.Tensor, ref: torch.Tensor, rewards: torch.Tensor) -> torch.Tensor:
    """P[r(BoN sample) > r(ref sample)] + ½·P[tie] = E_BoN[(p< + p≤)/2] (docs/maths.md §7)."""
    p_lt, p_le = reward_quantiles(ref, rewards)
    return (bon * (p_lt + p_le) / 2).sum(-1)


def brute_force_bon(ref, rewards, n: int, tie_break: str) -> np.ndarray:
    """Enumerate all V^N tuples weighted by Π π_ref; the mass goes to the argmax (uniform among ties, or the first)."""
    ref, rewards = np.asarray(ref, dtype=np.float64), np.asarray(rewards, dtype=np.float64)
    out = np.zeros_like(ref)
    for draw in itertools.product(range(len(ref)), repeat=n):
        weight = np.prod(ref[list(draw)])
        best = max(rewards[i] for i in draw)
        winners = [i for i in draw if rewards[i] == best]
        if tie_break == "first":
            out[winners[0]] += weight
        else:  # each maximal *position* equally likely; a sequence occupying several positions gets each share
            for i in winners:
                out[i] += weight / len(winners)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Regression values (the example of docs/maths.md §1)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 4, 8])
def test_regression_distinct_rewards(n):
    probs, kl, bound, expected_reward, wins = DISTINCT_TABLE[n]
    bon = bon_probs(REF, DISTINCT, n)
    torch.testing.assert_close(bon, torch.tensor(probs, dtype=DT), atol=1e-6, rtol=0)
    assert kl_divergence(bon, REF).item() == pytest.approx(kl, abs=1e-6)
    assert math.log(n) - (n - 1) / n == pytest.approx(bound, abs=1e-6)
    assert (bon * DISTINCT).sum().item() == pytest.approx(expected_reward, abs=1e-6)
    assert win_rate(bon, REF, DISTINCT).item() == pytest.approx(wins, abs=1e-6)
    assert bon.sum().item() == pytest.approx(1.0, abs=1e-12)


def test_reference_expected_reward():
    assert (REF * DISTINCT).sum().item() == pytest.approx(2.56, abs=1e-12)
    # N = 1 is the reference itself, and its win rate against itself is ½.
    torch.testing.assert_close(bon_probs(REF, DISTINCT, 1), REF, atol=1e-15, rtol=0)
    assert win_rate(REF, REF, TIED).item() == pytest.approx(0.5, abs=1e-12)


def test_regression_tie_correction_n4():
    p_lt, p_le = reward_quantiles(REF, DISTINCT)
    b = tie_correction(p_lt, p_le, 4)
    torch.testing.assert_close(
        b, torch.tensor([1.8283, 2.7344, 1.0, 3.1383, 2.5889, 3.5485], dtype=DT), atol=5e-5, rtol=0
    )
    # log π_BoN = log π_ref + (N−1)·log p≤ + log B (BOND eq. 7), B ∈ [1, N], B = 1 at the unique worst outcome.
    bon = bon_probs(REF, DISTINCT, 4)
    torch.testing.assert_close(bon.log(), REF.log() + 3 * p_le.log() + b.log(), atol=1e-12, rtol=0)
    assert b[2].item() == 1.0 and bool((b >= 1).all()) and bool((b <= 4).all())


def test_tie_correction_limits():
    # B → N as q → 0 (continuous case) and B = N where p≤ = 0 by definition.
    p_le = torch.tensor([0.5, 0.0], dtype=DT)
    p_lt = torch.tensor([0.5 - 1e-12, 0.0], dtype=DT)
    torch.testing.assert_close(tie_correction(p_lt, p_le, 5), torch.tensor([5.0, 5.0], dtype=DT), atol=1e-9, rtol=0)


def test_regression_tied_rewards_n4():
    bon = bon_probs(REF, TIED, 4)
    expected = torch.tensor([0.129757, 0.569237, 0.004390, 0.273234, 0.001756, 0.021626], dtype=DT)
    torch.testing.assert_close(bon, expected, atol=1e-6, rtol=0)
    assert kl_divergence(bon, REF).item() == pytest.approx(0.542864, abs=1e-6)
    assert bon.sum().item() == pytest.approx(1.0, abs=1e-12)
    # Each reward level gets p≤^N − p<^N, split in proportion to π_ref.
    assert (bon[1] / bon[3]).item() == pytest.approx((REF[1] / REF[3]).item(), rel=1e-12)


def test_regression_two_token_sequences():
    torch.testing.assert_close(
        TWO_REF, torch.tensor([0.30, 0.15, 0.05, 0.06, 0.15, 0.09, 0.02, 0.04, 0.14], dtype=DT), atol=1e-15, rtol=0
    )
    bon = bon_probs(TWO_REF, TWO_REWARDS, 3)
    # The law is a polynomial in the (2-decimal) probabilities, so these 6-decimal values are exact ...
    exact = [0.027, 0.075465, 0.058265, 0.030186, 0.174795, 0.171027, 0.023306, 0.076012, 0.363944]
    torch.testing.assert_close(bon, torch.tensor(exact, dtype=DT), atol=1e-12, rtol=0)
    # ... and round to the 5-decimal regression values.
    printed = [0.02700, 0.07546, 0.05826, 0.03019, 0.17479, 0.17103, 0.02331, 0.07601, 0.36394]
    torch.testing.assert_close(bon, torch.tensor(printed, dtype=DT), atol=5.01e-6, rtol=0)
    marginal = bon.reshape(3, 3).sum(-1)
    torch.testing.assert_close(marginal, torch.tensor([0.1607, 0.3760, 0.4633], dtype=DT), atol=5e-5, rtol=0)
    assert kl_divergence(bon, TWO_REF).item() == pytest.approx(0.40792, abs=5e-6)
    assert math.log(3) - 2 / 3 == pytest.approx(0.43195, abs=5e-6)
    assert (TWO_REF * TWO_REWARDS).sum().item() == pytest.approx(1.6, abs=1e-12)
    assert (bon * TWO_REWARDS).sum().item() == pytest.approx(2.8153, abs=5e-5)
    assert win_rate(bon, TWO_REF, TWO_REWARDS).item() == pytest.approx(0.74065, abs=5e-6)


def test_two_token_marginal_is_not_per_token_bon():
    # The first-token marginal of the sequence-level BoN differs from a per-token BoN on the first token.
    marginal = bon_probs(TWO_REF, TWO_REWARDS, 3).reshape(3, 3).sum(-1)
    per_token = bon_probs(P1, torch.arange(3, dtype=DT), 3)
    assert (marginal - per_token).abs().max().item() > 0.03


# ---------------------------------------------------------------------------------------------------------------------
# Brute force and the binomial form (vBoN eq. 3)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tie_break", ["uniform", "first"])
@pytest.mark.parametrize("rewards", [DISTINCT, TIED], ids=["distinct", "tied"])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_brute_force_six_outcomes(n, rewards, tie_break):
    expected = brute_force_bon(REF.numpy(), rewards.numpy(), n, tie_break)
    got = bon_probs(REF, rewards, n).numpy()
    assert np.abs(got - expected).max() < 1e-12


@pytest.mark.parametrize("tie_break", ["uniform", "first"])
def test_brute_force_two_token_sequences(tie_break):
    expected = brute_force_bon(TWO_REF.numpy(), TWO_REWARDS.numpy(), 3, tie_break)
    assert np.abs(bon_probs(TWO_REF, TWO_REWARDS, 3).numpy() - expected).max() < 1e-12


def test_brute_force_random_instance_with_zero_mass_outcome():
    gen = torch.Generator().manual_seed(3)
    ref = torch.rand(5, generator=gen, dtype=DT)
    ref[2] = 0.0  # an impossible outcome gets 0, even though it ties with another one
    ref = ref / ref.sum()
    rewards = torch.tensor([0.0, 1.0, 1.0, 2.0, 1.0], dtype=DT)
    got = bon_probs(ref, rewards, 5)
    assert got[2].item() == 0.0
    assert np.abs(got.numpy() - brute_force_bon(ref.numpy(), rewards.numpy(), 5, "uniform")).max() < 1e-12


@pytest.mark.parametrize("n", range(1, 9))
def test_binomial_form_agrees_with_distinct_rewards(n):
    torch.testing.assert_close(bon_probs_binomial(REF, DISTINCT, n), bon_probs(REF, DISTINCT, n), atol=1e-12, rtol=0)


def test_binomial_form_loses_mass_with_ties():
    binomial = bon_probs_binomial(REF, TIED, 4)
    assert binomial.sum().item() == pytest.approx(0.7154, abs=5e-5)  # not a distribution: it fails with ties
    assert bon_probs(REF, TIED, 4).sum().item() == pytest.approx(1.0, abs=1e-12)
    # It matches the brute force only where a reward level holds a single outcome (here: none is unique).
    brute = brute_force_bon(REF.numpy(), TIED.numpy(), 4, "uniform")
    assert np.abs(binomial.numpy() - brute).max() > 0.05


def test_invalid_n():
    with pytest.raises(ValueError):
        bon_probs(REF, DISTINCT, 0)


# ---------------------------------------------------------------------------------------------------------------------
# Monte Carlo
# ---------------------------------------------------------------------------------------------------------------------

# 0.999 quantile of χ² with 5 degrees of freedom (scipy.stats.chi2.ppf(0.999, 5)); used when scipy is absent.
CHI2_5DF_999 = 20.515


def _chi2_statistic(counts: torch.Tensor, probs: torch.Tensor) -> tuple[float, float]:
    expected = probs * counts.sum()
    stat = (((counts - expected) ** 2) / expected).sum().item()
    dof = len(probs) - 1
    try:
        from scipy.stats import chi2

        return stat, float(chi2.ppf(0.999, dof))
    except ImportError:
        assert dof == 5
        return stat, CHI2_5DF_999


def _monte_carlo_bon_counts(ref, rewards, n, draws, seed):
    gen = torch.Generator().manual_seed(seed)
    idx = torch.multinomial(ref, draws * n, replacement=True, generator=gen).view(draws, n)
    r = rewards[idx]
    # uniform tie-breaking among maximal draws: random priority, only compared within the maximal reward
    priority = torch.rand(draws, n, generator=gen, dtype=DT)
    is_max = r == r.max(dim=1, keepdim=True).values
    pick = torch.where(is_max, priority, -1.0).argmax(dim=1)
    winners = idx.gather(1, pick[:, None]).squeeze(1)
    return torch.bincount(winners, minlength=len(ref)).to(DT)


@pytest.mark.parametrize("rewards", [DISTINCT, TIED], ids=["distinct", "tied"])
def test_monte_carlo_goodness_of_fit(rewards):
    draws = 200_000
    counts = _monte_carlo_bon_counts(REF, rewards, 4, draws, seed=0)
    law = bon_probs(REF, rewards, 4)
    stat, critical = _chi2_statistic(counts, law)
    assert stat < critical
    # Per-outcome check: within 5 standard errors.
    se = (law * (1 - law) / draws).sqrt()
    assert ((counts / draws - law).abs() <= 5 * se).all()
    # The test has power: a wrong N, or the reference itself, is rejected.
    assert _chi2_statistic(counts, bon_probs(REF, rewards, 3))[0] > critical
    assert _chi2_statistic(counts, REF)[0] > critical


# ---------------------------------------------------------------------------------------------------------------------
# Batching and the KL bound (docs/maths.md §1)
# ---------------------------------------------------------------------------------------------------------------------


def test_leading_batch_dims_match_a_loop():
    gen = torch.Generator().manual_seed(1)
    ref = torch.rand(2, 3, 6, generator=gen, dtype=DT)
    ref = ref / ref.sum(-1, keepdim=True)
    rewards = torch.randint(0, 3, (2, 3, 6), generator=gen).to(DT)  # many ties
    ref[0, 0], rewards[0, 0] = REF, DISTINCT
    ref[1, 2], rewards[1, 2] = REF, TIED
    for n in (1, 2, 5):
        batched = bon_probs(ref, rewards, n)
        binomial = bon_probs_binomial(ref, rewards, n)
        p_lt, p_le = reward_quantiles(ref, rewards)
        b = tie_correction(p_lt, p_le, n)
        assert batched.shape == binomial.shape == p_lt.shape == b.shape == (2, 3, 6)
        for i in range(2):
            for j in range(3):
                torch.testing.assert_close(batched[i, j], bon_probs(ref[i, j], rewards[i, j], n), atol=0, rtol=0)
                torch.testing.assert_close(binomial[i, j], bon_probs_binomial(ref[i, j], rewards[i, j], n))
                lt, le = reward_quantiles(ref[i, j], rewards[i, j])
                torch.testing.assert_close(p_lt[i, j], lt, atol=0, rtol=0)
                torch.testing.assert_close(p_le[i, j], le, atol=0, rtol=0)
                torch.testing.assert_close(b[i, j], tie_correction(lt, le, n))
        torch.testing.assert_close(batched.sum(-1), torch.ones(2, 3, dtype=DT), atol=1e-12, rtol=0)
    torch.testing.assert_close(
        bon_probs(ref, rewards, 4)[0, 0], torch.tensor(DISTINCT_TABLE[4][0], dtype=DT), atol=1e-6, rtol=0
    )


def test_float32_input_keeps_dtype():
    out = bon_probs(REF.float(), DISTINCT.float(), 4)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), bon_probs(REF, DISTINCT, 4), atol=1e-6, rtol=0)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 8, 16, 64])
def test_kl_bound(n):
    gen = torch.Generator().manual_seed(n)
    ref = torch.rand(20, 6, generator=gen, dtype=DT)
    ref = ref / ref.sum(-1, keepdim=True)
    rewards = torch.randint(0, 4, (20, 6), generator=gen).to(DT)
    ref, rewards = torch.cat([ref, REF[None], REF[None]]), torch.cat([rewards, DISTINCT[None], TIED[None]])
    kl = torch.cat(
        [
            kl_divergence(bon_probs(ref, rewards, n), ref),
            kl_divergence(bon_probs(TWO_REF, TWO_REWARDS, n), TWO_REF)[None],
        ]
    )
    bound = math.log(n) - (n - 1) / n
    assert (kl <= bound + 1e-12).all()
    assert (kl >= -1e-12).all()


def test_kl_bound_is_tight_for_many_distinct_outcomes():
    # Near-continuous reward (uniform over 2000 distinct outcomes): KL approaches log N − (N−1)/N from below.
    v, n = 2000, 4
    ref = torch.full((v,), 1.0 / v, dtype=DT)
    kl = kl_divergence(bon_probs(ref, torch.arange(v, dtype=DT), n), ref).item()
    bound = math.log(n) - (n - 1) / n
    assert bound - 0.01 < kl <= bound
    # With atoms the bound is strict (toy, N = 4: 0.596 vs 0.636).
    assert kl_divergence(bon_probs(REF, DISTINCT, 4), REF).item() < bound - 0.03
