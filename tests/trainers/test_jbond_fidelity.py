"""Fidelity of JBondTrainer through its public API on the one-token task (BOND eq. 16, docs/maths.md §3).

With one-token completions the policy's distribution is the model's softmax after the prompt, so the distance to the
exact Best-of-N law (`core.bon_probs`) is computed exactly. The policy is a whole tiny transformer trained with Adam
and a linear learning-rate decay to 0, so the sampled-gradient noise anneals away.
"""

import pytest

from tests.helpers import cpu_args


pytestmark = pytest.mark.slow


def _train(one_token_task, tmp_path, prompts_per_step, steps, **overrides):
    from trl_bon import JBondConfig, JBondTrainer

    num_generations = 1 + overrides.get("num_quantile_samples", 2)  # 1 policy + k anchor samples per prompt
    args = JBondConfig(
        **cpu_args(
            output_dir=str(tmp_path),
            max_completion_length=1,
            per_device_train_batch_size=prompts_per_step * num_generations,
            max_steps=steps,
            learning_rate=0.01,
            gradient_checkpointing=False,
            logging_steps=steps,
            **overrides,
        )
    )
    dataset = one_token_task.dataset(prompts_per_step * steps)
    trainer = JBondTrainer(one_token_task.model_path, one_token_task.reward_func, args, dataset)
    trainer.train()
    return one_token_task.policy_probs(trainer.model)


def test_frozen_anchor_jbond_distils_best_of_2(tmp_path, one_token_task):
    """One J-BOND phase against a frozen anchor (= π_ref), γ = 0, β = 0.5: the fixed point is 0.0019 from Bo2."""
    from trl_bon.core import bon_probs, kl_divergence

    policy = _train(one_token_task, tmp_path, 32, 120, anchor="fixed", anchor_kl_coef=0.0, jeffreys_beta=0.5)
    target = bon_probs(one_token_task.ref_probs, one_token_task.rewards, 2)
    assert kl_divergence(one_token_task.ref_probs, target) > 0.2  # the untrained policy is far from the target
    kl = kl_divergence(policy, target).item()
    assert kl <= 0.01, (kl, policy.tolist(), target.tolist())


def test_bond_distils_best_of_4(tmp_path, one_token_task):
    """BOND (fixed anchor = π_ref), N = 4, k = 16 Monte-Carlo quantile samples, clamp smoothing, β = 0.5."""
    from trl_bon.core import bon_probs, kl_divergence

    policy = _train(one_token_task, tmp_path, 8, 100, mode="bond", num_candidates=4, num_quantile_samples=16)
    target = bon_probs(one_token_task.ref_probs, one_token_task.rewards, 4)
    assert kl_divergence(one_token_task.ref_probs, target) > 1.0
    kl = kl_divergence(policy, target).item()
    assert kl <= 0.03, (kl, policy.tolist(), target.tolist())
