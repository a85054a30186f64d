"""Each trainer, at its defaults, reaches its exact optimum on the shapes people train on.

The two-token task (`tests/trainers/two_token_task.py`): a GPT-2 architecture with learned absolute positions and
dropout 0.1 in its config (and a Llama one), prompts of 2 and 5 tokens left-padded in the same batch, two-token
completions whose law is enumerated exactly. Only the step count, the learning rate and the batch size (samples per
step, to keep the number of steps small) depart from the defaults. Before the fixes of issue 11 the GPT-2 runs moved
*away* from the target (KL 0.26 → 7.9 for J-BOND); `docs/results.md` has the table and its command.
"""

import math

import pytest
import torch

from tests.helpers import cpu_args
from tests.trainers.two_token_task import reference_law, stratified_reference_rewards, train_jbond, train_vbon
from trl_bon.core import bon_probs, kl_divergence


pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("architecture", "steps"), [("gpt2", 200), ("llama", 300)])
def test_jbond_fixed_anchor_reaches_best_of_2(two_token_tasks, tmp_path, architecture, steps):
    """The tiny Llama learns more slowly at the same learning rate (KL 0.017 / 0.020 after 200 steps)."""
    task = two_token_tasks[architecture]
    target = bon_probs(reference_law(task), task.rewards, 2)
    assert (kl_divergence(reference_law(task), target) > 0.1).all()
    policy = train_jbond(task, tmp_path, steps, 0.01, anchor="fixed")
    kl = kl_divergence(policy, target)
    print(f"J-BOND fixed anchor, {architecture}: KL(pi || Bo2) per prompt = {kl.numpy().round(4)}")
    assert (kl <= 0.02).all(), kl


def _distance_to_bon_curve(policy, ref, rewards):
    """Per prompt, min over real N ∈ [1, 10⁵] of KL(π‖π_BoN(N)) (BOND eq. 4 with p≤^N − p<^N for real N)."""
    curve = torch.stack([kl_divergence(policy, bon_probs(ref, rewards, n)) for n in torch.logspace(0, 5, 400)])
    return curve.min(0).values


def _bon_curve_kl_at_reward(ref, rewards, target_reward):
    """Per prompt, KL(π_BoN(N)‖π_ref) at the real N where π_BoN(N) has expected reward `target_reward` (bisection on
    log N ∈ [0, log 10⁵]: the expected reward of Best-of-N increases with N). This is the Best-of-N curve of the
    reward–KL plane, the curve J-BOND is compared with (BOND arXiv v1 §5)."""
    low, high = torch.zeros_like(target_reward), torch.full_like(target_reward, 5 * math.log(10))
    for _ in range(60):
        mid = (low + high) / 2
        laws = torch.stack([bon_probs(ref[p], rewards[p], math.exp(m)) for p, m in enumerate(mid.tolist())])
        below = (laws * rewards).sum(-1) < target_reward
        low, high = torch.where(below, mid, low), torch.where(below, high, mid)
    laws = torch.stack([bon_probs(ref[p], rewards[p], math.exp(m)) for p, m in enumerate(low.tolist())])
    return kl_divergence(laws, ref)


def test_law_space_jbond_iteration_stays_on_the_best_of_n_curve(two_token_tasks):
    """The idealised J-BOND run, with the policy exactly Bo2(π_a) at every step and an EMA of log-probabilities as
    the anchor, walks along the Best-of-N curve of π_ref (Bo2 of Bo_M is Bo_2M; the EMA mixes neighbouring N)."""
    task = two_token_tasks["gpt2"]
    ref, anchor_logits = reference_law(task), reference_law(task).log()
    for _ in range(100):
        policy = bon_probs(torch.softmax(anchor_logits, -1), task.rewards, 2)
        anchor_logits = 0.98 * anchor_logits + 0.02 * policy.log()
    distance = _distance_to_bon_curve(policy, ref, task.rewards)
    assert (distance <= 1e-3).all(), distance  # 1e-4 measured
    assert (((policy - ref) * task.rewards).sum(-1) > 2.5).all()  # N ≈ 12 reached


def test_jbond_ema_anchor_follows_the_best_of_n_curve(two_token_tasks, tmp_path):
    """J-BOND with its moving (EMA) anchor: it tracks Best-of-2 of its anchor, gains reward past Best-of-2 of π_ref,
    and stays within 0.05 nats of the Best-of-N curve of π_ref in the reward–KL plane.

    It does *not* stay within 0.05 of the Best-of-N *laws* (min over real N of KL(π‖π_BoN(N)) is 0.17 / 0.16, printed):
    the policy lags Best-of-2 of the anchor in the same direction at every step (too much mass on the lowest-reward
    outcomes, whose Best-of-2 mass shrinks as the square of the anchor's), the EMA anchor accumulates that lag, and
    nothing pulls it back to the curve. See docs/jbond_trainer.md ("How close to Best-of-N").
    """
    task = two_token_tasks["gpt2"]
    ref = reference_law(task)
    policy, anchor = train_jbond(task, tmp_path, steps=100, learning_rate=0.01, with_anchor=True)
    tracking = kl_divergence(policy, bon_probs(anchor, task.rewards, 2))
    reward = (policy * task.rewards).sum(-1)
    bo2_reward = (bon_probs(ref, task.rewards, 2) * task.rewards).sum(-1)
    excess_kl = kl_divergence(policy, ref) - _bon_curve_kl_at_reward(ref, task.rewards, reward)
    print(
        f"J-BOND EMA anchor: KL(pi || Bo2(anchor)) = {tracking.numpy().round(4)}, reward = {reward.numpy().round(3)} "
        f"(Bo2 of pi_ref: {bo2_reward.numpy().round(3)}), KL(pi || pi_ref) minus the Best-of-N curve's KL at that "
        f"reward = {excess_kl.numpy().round(4)}, min_N KL(pi || pi_BoN(N)) = "
        f"{_distance_to_bon_curve(policy, ref, task.rewards).numpy().round(4)}"
    )
    assert (tracking <= 0.1).all(), tracking  # 0.056 / 0.062 measured; KL(pi_ref || Bo2(pi_ref)) is 0.20 / 0.19
    assert (reward > bo2_reward + 1).all(), (reward, bo2_reward)  # past Best-of-2 of π_ref: the anchor moved
    assert (excess_kl <= 0.05).all(), excess_kl  # −0.022 / −0.050 measured: Best-of-N's trade-off or better


def test_bond_reaches_best_of_4(two_token_tasks, tmp_path):
    task = two_token_tasks["gpt2"]
    target = bon_probs(reference_law(task), task.rewards, 4)
    policy = train_jbond(
        task, tmp_path, steps=80, learning_rate=0.01, mode="bond", num_candidates=4, prompts_per_step=8
    )
    kl = kl_divergence(policy, target)
    print(f"BOND N=4: KL(pi || Bo4) per prompt = {kl.numpy().round(4)}")
    assert (kl <= 0.03).all(), kl


N = 4


def _l1_optimum(task, ref, cache):
    """vBoN's l1 optimum π* ∝ π_ref·F̂^(N−1), F̂ the smoothed CDF of the cache (see test_vbon_fidelity.py)."""
    from trl_bon.core.quantiles import vbon_log_cdf

    log_cdf = torch.stack(
        [
            vbon_log_cdf(rewards, torch.tensor(ref_rewards, dtype=torch.float64).expand(len(rewards), -1))
            for rewards, ref_rewards in zip(task.rewards, cache, strict=True)
        ]
    )
    optimum = ref * torch.exp((N - 1) * log_cdf)
    return optimum / optimum.sum(-1, keepdim=True)


@pytest.mark.parametrize(("objective", "steps", "tolerance"), [("exact", 200, 0.02), ("l1", 800, 0.005)])
def test_vbon_reaches_its_optimum(two_token_tasks, tmp_path, objective, steps, tolerance):
    """`exact` targets π_Bo4 itself; `l1` its own optimum π* (it drops the tie correction).

    KL(π‖π*) is the right measure: (N−1)·(J(π*) − J(π)) = KL(π‖π*) for the regularised objective J the trainer
    maximises. `l1` needs 800 steps on every CPU. The 5-token prompt can push its second-worst outcome down to 0.002
    early (π* gives it 0.079); sampled about once in 500 draws, it gets almost no gradient for a while, and how long
    depends on the CPU's rounding: after 300 steps KL was 0.011 / 0.011 on an AMD Zen 4 and 0.011 / 0.092 on an Intel
    Xeon with AMX. After 800 steps both read 0.0006 / 0.0011, the trainer's fixed point π*; what remains is the worst
    outcome's term: π* gives it ~10⁻⁹ (its cache quantile F̂ = 1/(M+1), cubed), the policy ~10⁻³.
    """
    task = two_token_tasks["gpt2"]
    ref = reference_law(task)
    cache = stratified_reference_rewards(task)
    target = bon_probs(ref, task.rewards, N) if objective == "exact" else _l1_optimum(task, ref, cache)
    policy = train_vbon(task, tmp_path, objective, steps, 0.01, cache)
    kl = kl_divergence(policy, target)
    print(f"vBoN {objective} N=4: KL(pi || optimum) per prompt = {kl.numpy().round(4)}")
    assert (kl <= tolerance).all(), kl


def test_bon_sft_reaches_best_of_n_in_forward_kl(two_token_tasks, tmp_path):
    from transformers import AutoTokenizer

    from trl_bon import BoNSFTConfig, BoNSFTTrainer, best_of_n, bon_sft_dataset
    from trl_bon.sampling import GenerationSettings, Sampler

    task = two_token_tasks["gpt2"]
    ref = reference_law(task)
    target = bon_probs(ref, task.rewards, N)
    args = BoNSFTConfig(
        str(tmp_path),
        **cpu_args(
            num_candidates=N,
            max_completion_length=2,
            generation_batch_size=1000,
            per_device_train_batch_size=64,
            num_train_epochs=3,
            learning_rate=0.01,
            logging_steps=50,
        ),
    )
    # The data step (one `best_of_n` call), then the trainer, as `trl-bon bon-sft` runs them.
    tokenizer = AutoTokenizer.from_pretrained(task.model_path)
    settings = GenerationSettings.from_trainer_args(args)
    sampler = Sampler(task.model_path, settings, tokenizer=tokenizer, batch_size=1000, progress=False)
    bon = best_of_n(sampler, task.dataset(2000), task.reward_func, N)
    trainer = BoNSFTTrainer(task.model_path, args=args, train_dataset=bon_sft_dataset(bon, tokenizer))
    trainer.train()
    kl = kl_divergence(target, task.law(trainer.model))
    print(f"BoN-SFT N=4: KL(Bo4 || pi) per prompt = {kl.numpy().round(4)}")
    assert (kl <= 0.02).all(), kl
