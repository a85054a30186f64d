"""Monte-Carlo reward quantiles: BOND's p̂≤ (eq. 10) and vBoN's F̂ (docs/maths.md §2)."""

import math

import pytest
import torch

from trl_bon.core import bond_reward, empirical_quantile, reward_quantiles, vbon_log_cdf


DT = torch.float64
REF = torch.tensor([0.30, 0.25, 0.20, 0.12, 0.08, 0.05], dtype=DT)
DISTINCT = torch.tensor([2.0, 5.0, 0.0, 4.0, 1.0, 3.0], dtype=DT)
TIED = torch.tensor([1.0, 2.0, 0.0, 2.0, 0.0, 1.0], dtype=DT)


def _reference_rewards(rewards, repeats, k, seed):
    gen = torch.Generator().manual_seed(seed)
    idx = torch.multinomial(REF, repeats * k, replacement=True, generator=gen).view(repeats, k)
    return rewards[idx]


# ---------------------------------------------------------------------------------------------------------------------
# p̂≤: hand values, smoothing, ties
# ---------------------------------------------------------------------------------------------------------------------


def test_hand_values_and_smoothing():
    ref = torch.tensor([[1.0, 2.0, 3.0, 4.0]] * 4, dtype=DT)
    rewards = torch.tensor([0.0, 2.0, 5.0, 2.5], dtype=DT)  # counts at-or-below: 0, 2 (tie counts), 4, 2
    none = empirical_quantile(rewards, ref, smoothing="none")
    clamp = empirical_quantile(rewards, ref, smoothing="clamp")
    add_one = empirical_quantile(rewards, ref, smoothing="add_one")
    torch.testing.assert_close(none, torch.tensor([0.0, 0.5, 1.0, 0.5], dtype=DT), atol=0, rtol=0)
    torch.testing.assert_close(clamp, torch.tensor([1 / 8, 0.5, 1.0, 0.5], dtype=DT), atol=0, rtol=0)
    torch.testing.assert_close(add_one, torch.tensor([1 / 5, 3 / 5, 1.0, 3 / 5], dtype=DT), atol=1e-15, rtol=0)
    # clamp is the default, and is max(p̂, 1/(2k)) everywhere
    torch.testing.assert_close(empirical_quantile(rewards, ref), clamp, atol=0, rtol=0)
    torch.testing.assert_close(clamp, torch.maximum(none, torch.full_like(none, 1 / 8)), atol=0, rtol=0)
    # logs are finite with smoothing, −∞ without
    assert torch.isfinite(clamp.log()).all() and torch.isfinite(add_one.log()).all()
    assert none.log()[0].item() == -math.inf


def test_ties_favour_the_sample():
    ref = torch.tensor([[1.0, 1.0, 1.0, 2.0]], dtype=DT)
    assert empirical_quantile(torch.tensor([1.0], dtype=DT), ref, smoothing="none").item() == 0.75
    assert empirical_quantile(torch.tensor([0.999], dtype=DT), ref, smoothing="none").item() == 0.0


def test_add_one_range():
    k = 7
    gen = torch.Generator().manual_seed(0)
    ref = torch.randn(50, k, generator=gen, dtype=DT)
    rewards = torch.randn(50, generator=gen, dtype=DT) * 3
    q = empirical_quantile(rewards, ref, smoothing="add_one")
    assert (q >= 1 / (k + 1)).all() and (q <= 1).all()
    counts = (ref <= rewards[:, None]).sum(-1).to(DT)
    torch.testing.assert_close(q, (counts + 1) / (k + 1), atol=1e-15, rtol=0)


def test_unknown_smoothing_raises():
    with pytest.raises(ValueError, match="smoothing"):
        empirical_quantile(torch.zeros(1), torch.zeros(1, 2), smoothing="laplace")


# ---------------------------------------------------------------------------------------------------------------------
# Unbiasedness of p̂≤ and the downward bias of log p̂≤ (BOND eq. 10)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rewards", [DISTINCT, TIED], ids=["distinct", "tied"])
def test_p_le_hat_is_unbiased(rewards):
    repeats, k = 4000, 16
    ref_rewards = _reference_rewards(rewards, repeats, k, seed=0)
    # (B, S): every outcome scored against the same reference group
    p_hat = empirical_quantile(rewards.expand(repeats, -1), ref_rewards, smoothing="none")
    assert p_hat.shape == (repeats, 6)
    _, p_le = reward_quantiles(REF, rewards)
    se = (p_le * (1 - p_le) / (k * repeats)).sqrt()
    assert ((p_hat.mean(0) - p_le).abs() <= 3 * se + 1e-12).all()


def _exact_mean_of_log_p_hat(p: float, k: int, smoothing: str) -> float:
    """E[log p̂≤] by summing over the Binomial(k, p) count, each count fed through `empirical_quantile`."""
    counts = torch.arange(k + 1)
    # row c: c reference rewards at or below 0 (−1.0) and k − c above it (+1.0)
    ref = torch.where(torch.arange(k)[None, :] < counts[:, None], -1.0, 1.0).to(DT)
    log_q = empirical_quantile(torch.zeros(k + 1, dtype=DT), ref, smoothing=smoothing).log()
    pmf = torch.tensor([math.comb(k, c) * p**c * (1 - p) ** (k - c) for c in range(k + 1)], dtype=DT)
    return (pmf * log_q).sum().item()


def _is_shrinking(biases):
    return all(abs(later) < abs(earlier) for earlier, later in zip(biases, biases[1:], strict=False))


def test_log_p_le_hat_biased_down_shrinking_in_k():
    """Jensen: E[log p̂≤] < log p≤, with a bias of order (1 − p)/(2kp) that shrinks as k grows (default clamp)."""
    _, p_le = reward_quantiles(REF, DISTINCT)
    for p in sorted(p_le.tolist())[:-1]:  # 0.2 … 0.75
        # for small k and small p the clamp at 1/(2k) dominates, so start at k = 16 (4 when p > ½)
        ks = (4, 8, 16, 32, 64, 128) if p > 0.5 else (16, 32, 64, 128)
        biases = [_exact_mean_of_log_p_hat(p, k, "clamp") - math.log(p) for k in ks]
        assert all(b < 0 for b in biases), (p, biases)
        assert _is_shrinking(biases), (p, biases)
    # p = 1: every reference sample is at or below, p̂ = 1 exactly.
    assert _exact_mean_of_log_p_hat(1.0, 16, "clamp") == pytest.approx(0.0, abs=1e-15)
    # and p̂≤ itself is exactly unbiased without smoothing: Σ_c Binom(k, p)(c)·c/k = p
    k, p = 16, 0.58
    pmf = [math.comb(k, c) * p**c * (1 - p) ** (k - c) for c in range(k + 1)]
    counts = torch.arange(k + 1)
    ref = torch.where(torch.arange(k)[None, :] < counts[:, None], -1.0, 1.0).to(DT)
    q = empirical_quantile(torch.zeros(k + 1, dtype=DT), ref, smoothing="none")
    assert (torch.tensor(pmf, dtype=DT) * q).sum().item() == pytest.approx(p, abs=1e-12)


def test_log_p_le_hat_add_one_biased_up_shrinking_in_k():
    """add_one shrinks p̂ toward 1 (E = (kp + 1)/(k + 1) > p), which outweighs Jensen here: biased *up*, shrinking."""
    for p in (0.2, 0.28, 0.58, 0.63, 0.75):
        biases = [_exact_mean_of_log_p_hat(p, k, "add_one") - math.log(p) for k in (4, 8, 16, 32, 64, 128)]
        assert all(b > 0 for b in biases), (p, biases)
        assert _is_shrinking(biases), (p, biases)


def test_log_p_le_hat_bias_monte_carlo():
    # The same downward bias seen by direct simulation, for the outcome with p≤ = 0.58.
    repeats = 4000
    biases = []
    for k in (4, 32):
        ref_rewards = _reference_rewards(DISTINCT, repeats, k, seed=k)
        log_q = empirical_quantile(torch.full((repeats,), 2.0, dtype=DT), ref_rewards).log()
        se = log_q.std().item() / math.sqrt(repeats)
        bias = log_q.mean().item() - math.log(0.58)
        assert bias < -3 * se
        biases.append(bias)
    assert abs(biases[1]) < abs(biases[0])


# ---------------------------------------------------------------------------------------------------------------------
# Padding, masks and shapes
# ---------------------------------------------------------------------------------------------------------------------


GROUPS = [[0.5, 1.0, 2.0], [3.0, -1.0, 0.0, 2.0, 2.0], [1.0]]


def _padded(pad_value):
    k = max(map(len, GROUPS))
    ref = torch.full((len(GROUPS), k), pad_value, dtype=DT)
    mask = torch.zeros(len(GROUPS), k, dtype=torch.bool)
    for i, group in enumerate(GROUPS):
        ref[i, : len(group)] = torch.tensor(group, dtype=DT)
        mask[i, : len(group)] = True
    return ref, mask


@pytest.mark.parametrize("pad_value", [-1e9, 0.0, 1e9])
@pytest.mark.parametrize("smoothing", ["clamp", "add_one", "none"])
def test_padding_with_mask_matches_unpadded_rows(pad_value, smoothing):
    ref, mask = _padded(pad_value)
    rewards = torch.tensor([1.0, 2.0, 0.5], dtype=DT)
    rewards_2d = torch.tensor([[1.0, -5.0, 0.5, 9.0], [2.0, 0.0, -1.0, 3.0], [0.5, 1.0, 1.5, 2.0]], dtype=DT)
    batched = empirical_quantile(rewards, ref, mask, smoothing)
    batched_2d = empirical_quantile(rewards_2d, ref, mask, smoothing)
    log_cdf = vbon_log_cdf(rewards, ref, mask)
    log_cdf_2d = vbon_log_cdf(rewards_2d, ref, mask)
    assert batched_2d.shape == log_cdf_2d.shape == (3, 4)
    for i, group in enumerate(GROUPS):
        row = torch.tensor([group], dtype=DT)
        torch.testing.assert_close(batched[i], empirical_quantile(rewards[i : i + 1], row, smoothing=smoothing)[0])
        torch.testing.assert_close(log_cdf[i], vbon_log_cdf(rewards[i : i + 1], row)[0])
        unpadded_2d = empirical_quantile(rewards_2d[i : i + 1], row, smoothing=smoothing)[0]
        torch.testing.assert_close(batched_2d[i], unpadded_2d)
        torch.testing.assert_close(log_cdf_2d[i], vbon_log_cdf(rewards_2d[i : i + 1], row)[0])
    # Without the mask the padding changes the answer (through the counts or through k).
    unmasked = empirical_quantile(rewards_2d, ref, smoothing="none")
    assert not torch.equal(unmasked, empirical_quantile(rewards_2d, ref, mask, smoothing="none"))


def test_clamp_uses_each_rows_own_k():
    ref, mask = _padded(0.0)
    # every sample below every valid reference: clamp gives 1/(2k) with the row's own k = 3, 5, 1
    q = empirical_quantile(torch.full((3,), -10.0, dtype=DT), ref, mask, smoothing="clamp")
    torch.testing.assert_close(q, torch.tensor([1 / 6, 1 / 10, 1 / 2], dtype=DT), atol=1e-15, rtol=0)
    q = empirical_quantile(torch.full((3,), -10.0, dtype=DT), ref, mask, smoothing="add_one")
    torch.testing.assert_close(q, torch.tensor([1 / 4, 1 / 6, 1 / 2], dtype=DT), atol=1e-15, rtol=0)


def test_two_dimensional_rewards_match_columns():
    gen = torch.Generator().manual_seed(2)
    ref = torch.randint(0, 5, (4, 9), generator=gen).to(DT)  # ties
    rewards = torch.randint(0, 5, (4, 3), generator=gen).to(DT)
    for smoothing in ("clamp", "add_one", "none"):
        both = empirical_quantile(rewards, ref, smoothing=smoothing)
        for s in range(3):
            torch.testing.assert_close(both[:, s], empirical_quantile(rewards[:, s], ref, smoothing=smoothing))
    both = vbon_log_cdf(rewards, ref)
    for s in range(3):
        torch.testing.assert_close(both[:, s], vbon_log_cdf(rewards[:, s], ref))


@pytest.mark.parametrize("two_d", [False, True])
def test_all_false_mask_row_raises(two_d):
    ref = torch.zeros(2, 3, dtype=DT)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    rewards = torch.zeros(2, 4, dtype=DT) if two_d else torch.zeros(2, dtype=DT)
    with pytest.raises(ValueError, match="no valid reference"):
        empirical_quantile(rewards, ref, mask)
    with pytest.raises(ValueError, match="no valid reference"):
        vbon_log_cdf(rewards, ref, mask)


# ---------------------------------------------------------------------------------------------------------------------
# vBoN's F̂ (docs/maths.md §2)
# ---------------------------------------------------------------------------------------------------------------------


def test_vbon_log_cdf_hand_values():
    ref = torch.tensor([[1.0, 2.0, 2.0, 3.0]] * 5, dtype=DT)
    rewards = torch.tensor([2.0, 0.0, 10.0, 2.5, 3.0], dtype=DT)
    # strictly below: 1 (ties not below), 0, 4, 3, 3  → F̂ = (1 + c)/(M + 1), M = 4
    expected = torch.tensor([2 / 5, 1 / 5, 1.0, 4 / 5, 4 / 5], dtype=DT).log()
    torch.testing.assert_close(vbon_log_cdf(rewards, ref), expected, atol=1e-15, rtol=0)
    out = vbon_log_cdf(torch.linspace(-5, 5, 41, dtype=DT), torch.tensor([[1.0, 2.0, 2.0, 3.0]] * 41, dtype=DT))
    assert (out >= -math.log(5) - 1e-15).all() and (out <= 0).all()


@pytest.mark.parametrize("rewards", [DISTINCT, TIED], ids=["distinct", "tied"])
def test_vbon_cdf_monte_carlo_mean(rewards):
    repeats, m = 4000, 20
    ref_rewards = _reference_rewards(rewards, repeats, m, seed=5)
    f_hat = vbon_log_cdf(rewards.expand(repeats, -1), ref_rewards).exp()
    p_lt, _ = reward_quantiles(REF, rewards)
    expected = (1 + m * p_lt) / (m + 1)
    se = (m * p_lt * (1 - p_lt)).sqrt() / (m + 1) / math.sqrt(repeats)
    assert ((f_hat.mean(0) - expected).abs() <= 3 * se + 1e-12).all()


# ---------------------------------------------------------------------------------------------------------------------
# BOND's quantile reward
# ---------------------------------------------------------------------------------------------------------------------


def test_bond_reward_values():
    p = torch.tensor([0.5, 0.25, 1.0], dtype=DT)
    torch.testing.assert_close(bond_reward(p, 4), 3 * p.log(), atol=0, rtol=0)
    torch.testing.assert_close(bond_reward(p, 2), p.log(), atol=0, rtol=0)  # J-BOND's n = 2: log p̂≤
    assert bond_reward(p, 1).abs().max().item() == 0.0  # N = 1: no pull
    log_b = torch.tensor([0.1, 0.2, 0.3], dtype=DT)
    torch.testing.assert_close(bond_reward(p, 4, log_b), 3 * p.log() + log_b, atol=0, rtol=0)
    torch.testing.assert_close(bond_reward(p, 4), torch.tensor([-3 * math.log(2), -6 * math.log(2), 0.0], dtype=DT))
    # it is the log of p̂≤, not p̂≤ itself (the v1 typo)
    assert bond_reward(torch.tensor([0.5]), 2).item() == pytest.approx(-math.log(2))
