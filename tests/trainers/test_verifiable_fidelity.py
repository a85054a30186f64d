"""Every trainer at its defaults on a 0/1 verifier reward (issue 25): the one-token task of `trl_bon.toy` with
π_ref = [0.30, 0.25, 0.20, 0.12, 0.08, 0.05] and tokens 1 and 5 correct, so π_ref solves the prompt with p = 0.30
(a minority of its mass), and every draw ties with many others. The targets follow from `core.bon_probs` and their
success rates from the closed form `core.bon_success_rate` (s_2 = 0.51, s_4 = 0.7599).

Each run reuses the step counts and helpers of the fidelity tests on the same task with distinct rewards
(`test_jbond_fidelity.py`, `test_vbon_fidelity.py`, `test_bon_sft.py`), and asserts KL to the target and the success
rate. Prompts π_ref never or always solves (p = 0, p = 1) are pinned below on the same task: all rewards equal.
"""

import pytest
import torch

from tests.trainers.test_jbond_fidelity import _train as train_jbond
from trl_bon.core import bon_probs, bon_success_rate, kl_divergence
from trl_bon.core.quantiles import vbon_log_cdf


pytestmark = pytest.mark.slow

REF_PROBS = (0.30, 0.25, 0.20, 0.12, 0.08, 0.05)
CORRECT = (0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
P = 0.30
M = 2000


@pytest.fixture(scope="module")
def verifier_task(tmp_path_factory):
    from trl_bon.toy import build_one_token_task

    return build_one_token_task(tmp_path_factory.mktemp("verifier"), REF_PROBS, CORRECT)


@pytest.fixture(scope="module")
def constant_task(tmp_path_factory):
    """A prompt π_ref never solves (all rewards 0); p = 1 gives the trainers the same inputs (all rewards equal)."""
    from trl_bon.toy import build_one_token_task

    return build_one_token_task(tmp_path_factory.mktemp("never_solved"), REF_PROBS, (0.0,) * 6)


def _success(policy, task):
    return (policy * task.rewards).sum().item()


def test_reference_success_rate(verifier_task):
    assert (verifier_task.ref_probs * verifier_task.rewards).sum().item() == pytest.approx(P, abs=1e-12)


def test_jbond_fixed_anchor_distils_best_of_2(verifier_task, tmp_path):
    task = verifier_task
    target = bon_probs(task.ref_probs, task.rewards, 2)
    policy = train_jbond(task, tmp_path, 32, 120, anchor="fixed", jbond_ties="half")  # docs/verifiable_rewards.md
    kl = kl_divergence(policy, target).item()
    s2 = bon_success_rate(torch.tensor(P, dtype=torch.float64), 2).item()
    print(f"J-BOND fixed anchor, 0/1 reward: KL(pi || Bo2) = {kl:.4f}, success {_success(policy, task):.3f} vs {s2}")
    assert kl <= 0.01, (kl, policy.tolist())  # 0.0026 measured
    assert _success(policy, task) == pytest.approx(s2, abs=0.05)  # 0.545 measured


def test_bond_distils_best_of_4(verifier_task, tmp_path):
    """With the tie correction, as docs/verifiable_rewards.md advises (tests/core/test_bond_ties.py: without it the
    fixed point undershoots Best-of-4 by 0.02 nats)."""
    task = verifier_task
    target = bon_probs(task.ref_probs, task.rewards, 4)
    policy = train_jbond(
        task, tmp_path, 8, 100, mode="bond", num_candidates=4, num_quantile_samples=16, include_tie_correction=True
    )
    kl = kl_divergence(policy, target).item()
    s4 = bon_success_rate(torch.tensor(P, dtype=torch.float64), 4).item()
    print(f"BOND N=4, 0/1 reward: KL(pi || Bo4) = {kl:.4f}, success {_success(policy, task):.3f} vs {s4:.4f}")
    assert kl <= 0.03, (kl, policy.tolist())
    assert _success(policy, task) == pytest.approx(s4, abs=0.05)


@pytest.fixture(scope="module")
def verifier_cache(verifier_task, tmp_path_factory):
    from tests.trainers.test_vbon_fidelity import build_cache

    return build_cache(verifier_task, tmp_path_factory.mktemp("verifier_cache"), M)


def _train_vbon(task, cache_dir, tmp_path, objective, learning_rate, max_steps):
    from tests.trainers.test_vbon_fidelity import _train

    return _train(task, cache_dir, tmp_path, objective, learning_rate, max_steps)[1]


def test_vbon_exact_distils_best_of_4(verifier_task, verifier_cache, tmp_path):
    task = verifier_task
    policy = _train_vbon(task, verifier_cache, tmp_path, "exact", 0.02, 60)
    kl = kl_divergence(policy, bon_probs(task.ref_probs, task.rewards, 4)).item()
    print(f"vBoN exact N=4, 0/1 reward: KL(pi || Bo4) = {kl:.4f}, success {_success(policy, task):.3f}")
    assert kl <= 0.02, (kl, policy.tolist())


def test_vbon_l1_goes_to_its_optimum_pi_ref_given_correct(verifier_task, verifier_cache, tmp_path):
    """l1's optimum π* ∝ π_ref·F̂^(N−1): every wrong token sits at F̂'s floor 1/(M+1), so π* is π_ref conditioned on
    being correct up to 10⁻¹⁰ (success rate 1, past Best-of-4's 0.76): l1 is not Best-of-N with a verifier."""
    from trl_bon.ref_cache import load_reference_reward_cache

    task = verifier_task
    (ref_rewards,) = load_reference_reward_cache(verifier_cache).rewards.values()
    log_cdf = vbon_log_cdf(task.rewards, torch.tensor(ref_rewards, dtype=torch.float64).expand(6, -1))
    optimum = task.ref_probs * torch.exp(3 * log_cdf)
    optimum = optimum / optimum.sum()
    assert (optimum * task.rewards).sum().item() > 1 - 1e-8
    policy = _train_vbon(task, verifier_cache, tmp_path, "l1", 0.03, 60)
    kl = kl_divergence(policy, optimum).item()
    print(f"vBoN l1 N=4, 0/1 reward: KL(pi || l1 optimum) = {kl:.4f}, success {_success(policy, task):.3f}")
    assert kl <= 0.02, (kl, policy.tolist())  # 0.0067 measured
    assert _success(policy, task) > 0.95  # 0.999 measured
    assert kl_divergence(optimum, bon_probs(task.ref_probs, task.rewards, 4)).item() > 0.2  # 0.27: l1 ≠ Bo4


def test_bon_sft_distils_best_of_4_with_random_ties(verifier_task, tmp_path):
    from tests.trainers.test_bon_sft import bon_data
    from trl_bon import BoNSFTConfig, BoNSFTTrainer

    from ..helpers import cpu_args

    task = verifier_task
    args = BoNSFTConfig(
        str(tmp_path),
        **cpu_args(
            num_candidates=4,
            max_completion_length=1,
            generation_batch_size=2000,
            per_device_train_batch_size=64,
            num_train_epochs=4,
            learning_rate=3e-2,
            logging_steps=50,
        ),
    )
    data = bon_data(task.model_path, [task.prompt] * 2000, task.reward_func, args, batch_size=2000)
    trainer = BoNSFTTrainer(task.model_path, args=args, train_dataset=data)
    trainer.train()
    policy = task.policy_probs(trainer.model)
    kl = kl_divergence(bon_probs(task.ref_probs, task.rewards, 4), policy).item()
    print(f"BoN-SFT N=4, 0/1 reward: KL(Bo4 || pi) = {kl:.4f}, success {_success(policy, task):.3f}")
    assert kl <= 0.02, (kl, policy.tolist())


@pytest.mark.parametrize(
    "overrides",
    [{}, {"mode": "bond", "num_candidates": 4, "num_quantile_samples": 16}],
    ids=["jbond_ema_anchor", "bond"],
)
def test_never_solved_prompt_leaves_jbond_and_bond_at_pi_ref(constant_task, tmp_path, overrides):
    """p = 0 (or p = 1): every reward ties, the crude/quantile reward is a constant, the SFT target is a π_ref draw,
    so Best-of-N is π_ref and the trainers stay there (no NaN; only sampling noise moves the policy)."""
    task = constant_task
    prompts_per_step, steps = (32, 120) if not overrides else (8, 100)
    policy = train_jbond(task, tmp_path, prompts_per_step, steps, **overrides)
    kl = kl_divergence(policy, task.ref_probs).item()
    print(f"{overrides or 'J-BOND'}, p = 0: KL(pi || pi_ref) = {kl:.4f}")
    assert torch.isfinite(policy).all()
    assert kl <= 0.01, (kl, policy.tolist())


def test_never_solved_prompt_leaves_vbon_exact_at_pi_ref(constant_task, tmp_path_factory, tmp_path):
    from trl_bon.ref_cache import build_reference_reward_cache
    from trl_bon.sampling import GenerationSettings, Sampler

    task = constant_task
    cache = tmp_path_factory.mktemp("never_solved_cache")
    sampler = Sampler(task.model_path, GenerationSettings(max_completion_length=1), batch_size=500, progress=False)
    build_reference_reward_cache(sampler, task.dataset(1), task.reward_func, M, cache)
    policy = _train_vbon(task, cache, tmp_path, "exact", 0.02, 60)
    kl = kl_divergence(policy, task.ref_probs).item()
    print(f"vBoN exact, p = 0: KL(pi || pi_ref) = {kl:.4f}")
    assert torch.isfinite(policy).all()
    assert kl <= 0.01, (kl, policy.tolist())
