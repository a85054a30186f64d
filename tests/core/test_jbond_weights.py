"""`core.jbond_weights` reproduces, bit for bit, the weights `JBondTrainer._generate_and_score_completions` computed
inline before it called core (the reference below is that code, with `self.args` turned into arguments)."""

import itertools
import math

import pytest
import torch

from trl_bon import core
from trl_bon.core import JBondOptions, jbond_weights


def _trainer_reference(rewards, policy_log_ratio, lengths, args):
    """The trainer's inline computation (commit b6d33a1), returning weights, target and its metrics."""
    num_generations = rewards.size(1)
    policy_rewards, anchor_rewards = rewards[:, 0], rewards[:, 1:]
    metrics = {}
    if args["mode"] == "jbond":
        reward = core.jbond_reward(policy_rewards, anchor_rewards, args["jbond_penalty"])
        target = core.best_anchor_index(anchor_rewards) + 1
        metrics["frac_rJ_nonzero"] = (reward != 0).float().mean().item()
    else:
        n = args["num_candidates"]
        p_le = core.empirical_quantile(policy_rewards, anchor_rewards, smoothing=args["quantile_smoothing"])
        raw_p_le = (anchor_rewards <= policy_rewards[:, None]).float().mean(1)
        log_tie = None
        if args["include_tie_correction"]:
            raw_p_lt = (anchor_rewards < policy_rewards[:, None]).float().mean(1)
            log_tie = core.tie_correction(raw_p_lt, raw_p_le, n).log()
        reward = core.bond_reward(p_le, n, log_tie)
        target = core.best_anchor_index(anchor_rewards[:, :n]) + 1
        metrics["frac_quantile_clamped"] = (raw_p_le == 0).float().mean().item()
        metrics["log_quantile"] = p_le.log().mean().item()
    returns = reward - policy_log_ratio
    if args["baseline"] == "batch_loo" and returns.numel() >= 2:
        baseline = core.batch_loo_baseline(returns)
    else:
        baseline = torch.zeros_like(returns)
    w_policy, w_target = core.jbond_sequence_weights(
        returns, policy_log_ratio, baseline, args["jeffreys_beta"], args["anchor_kl_coef"]
    )
    weights = torch.zeros_like(rewards)
    weights[:, 0] = w_policy
    weights.scatter_(1, target[:, None], w_target[:, None])
    weights = weights * num_generations
    if args["loss_normalization"] == "token_mean":
        weights = weights / lengths.clamp(min=1.0)
    metrics["reward/policy"] = policy_rewards.mean().item()
    metrics["reward/anchor"] = anchor_rewards.mean().item()
    win = (policy_rewards[:, None] > anchor_rewards).float() + 0.5 * (policy_rewards[:, None] == anchor_rewards)
    metrics["win_rate_vs_anchor"] = win.mean().item()
    metrics["kl_anchor"] = policy_log_ratio.mean().item()
    metrics["return"] = returns.mean().item()
    return weights, target, metrics


def _batch(seed, num_prompts, k, tied):
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.randn(num_prompts, 1 + k, generator=gen)
    if tied:  # few reward levels: ties between policy and anchor samples and between anchor samples
        rewards = torch.randint(0, 3, (num_prompts, 1 + k), generator=gen).float()
    log_ratio = 0.3 * torch.randn(num_prompts, generator=gen)
    lengths = torch.randint(0, 9, (num_prompts, 1 + k), generator=gen).float()  # 0: an empty completion
    return rewards, log_ratio, lengths


OPTIONS = {
    "baseline": ["batch_loo", "none"],
    "loss_normalization": ["sequence_sum", "token_mean"],
    "jeffreys_beta": [0.0, 0.5, 1.0],
    "anchor_kl_coef": [0.0, 0.1],
}
GRID = [dict(zip(OPTIONS, values, strict=True)) for values in itertools.product(*OPTIONS.values())]
BOND_MODES = [
    {"num_candidates": n, "k": k, "quantile_smoothing": smoothing, "include_tie_correction": tie}
    for (n, k) in [(2, 2), (2, 5), (4, 4), (4, 7)]
    for smoothing in ("clamp", "add_one")  # the config refuses "none" (log 0 = −inf)
    for tie in (False, True)
]


def _compare(rewards, log_ratio, lengths, args):
    expected_weights, expected_target, expected_metrics = _trainer_reference(rewards, log_ratio, lengths, args)
    options = {key: value for key, value in args.items() if key != "k"}
    out = jbond_weights(rewards[:, 0], rewards[:, 1:], log_ratio, lengths, JBondOptions(**options))
    assert torch.equal(out.weights, expected_weights), (out.weights - expected_weights).abs().max()
    assert out.weights.dtype == expected_weights.dtype
    assert torch.equal(out.target, expected_target)
    assert set(out.stats) == set(expected_metrics)
    for name, value in expected_metrics.items():
        assert out.stats[name].dim() == 0
        assert out.stats[name].item() == pytest.approx(value, rel=1e-6, abs=1e-6), name


@pytest.mark.parametrize("tied", [False, True], ids=["continuous", "tied"])
@pytest.mark.parametrize("penalty", [math.log(16.0), 1.5])
def test_jbond_mode_equals_the_trainer_computation(tied, penalty):
    for seed, options in enumerate(GRID):
        rewards, log_ratio, lengths = _batch(seed, num_prompts=6, k=2, tied=tied)
        _compare(rewards, log_ratio, lengths, {"mode": "jbond", "jbond_penalty": penalty, **options})


@pytest.mark.parametrize("tied", [False, True], ids=["continuous", "tied"])
def test_bond_mode_equals_the_trainer_computation(tied):
    for seed, (bond, options) in enumerate(itertools.product(BOND_MODES, GRID[::3])):
        rewards, log_ratio, lengths = _batch(seed, num_prompts=5, k=bond["k"], tied=tied)
        _compare(rewards, log_ratio, lengths, {"mode": "bond", **bond, **options})


def test_single_prompt_has_no_baseline():
    rewards, log_ratio, lengths = _batch(0, num_prompts=1, k=2, tied=False)
    _compare(
        rewards,
        log_ratio,
        lengths,
        {
            "mode": "jbond",
            "jbond_penalty": 1.0,
            "baseline": "batch_loo",
            "loss_normalization": "sequence_sum",
            "jeffreys_beta": 0.5,
            "anchor_kl_coef": 0.0,
        },
    )


def test_weights_by_hand():
    """Two prompts, J-BOND defaults: the policy loses to both anchor samples in prompt 0 only."""
    policy = torch.tensor([0.0, 2.0], dtype=torch.float64)
    anchor = torch.tensor([[1.0, 3.0], [3.0, 1.0]], dtype=torch.float64)
    delta = torch.tensor([0.2, -0.4], dtype=torch.float64)
    out = jbond_weights(policy, anchor, delta, torch.ones(2, 3, dtype=torch.float64))
    # R = r_J − Δ = (−log 16 − 0.2, 0.4); leave-one-out baselines swap them; w = 3·(β·(R − b), target 1 − β)
    r0, r1 = -math.log(16.0) - 0.2, 0.4
    expected = torch.tensor([[3 * 0.5 * (r0 - r1), 0.0, 1.5], [3 * 0.5 * (r1 - r0), 1.5, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(out.weights, expected, atol=1e-15, rtol=0)
    assert out.target.tolist() == [2, 1]
    assert out.stats["win_rate_vs_anchor"].item() == 0.25
    assert out.stats["frac_rJ_nonzero"].item() == 0.5


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "rloo"}, "Unknown `mode='rloo'`"),
        ({"baseline": "mean"}, "Unknown `baseline='mean'`"),
        ({"loss_normalization": "mean"}, "Unknown `loss_normalization='mean'`"),
        ({"mode": "bond", "num_candidates": 3}, "num_candidates <= k"),
        ({"mode": "bond"}, "num_candidates"),
    ],
)
def test_bad_options_raise(options, message):
    rewards, log_ratio, lengths = _batch(0, num_prompts=3, k=2, tied=False)
    with pytest.raises(ValueError, match=message):
        jbond_weights(rewards[:, 0], rewards[:, 1:], log_ratio, lengths, JBondOptions(**options))


def test_lengths_shape_is_checked():
    rewards, log_ratio, _ = _batch(0, num_prompts=3, k=2, tied=False)
    with pytest.raises(ValueError, match="lengths"):
        jbond_weights(rewards[:, 0], rewards[:, 1:], log_ratio, torch.ones(3, 2))
