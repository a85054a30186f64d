"""Each trainer, at its defaults, reaches its exact optimum on the shapes people train on.

The two-token task (`tests/trainers/two_token_task.py`): a GPT-2 architecture with learned absolute positions and
dropout 0.1 in its config (and a Llama one), prompts of 2 and 5 tokens left-padded in the same batch, two-token
completions whose law is enumerated exactly. Only the step count, the learning rate and the batch size (samples per
step, to keep the number of steps small) depart from the defaults. Before the fixes of issue 11 the GPT-2 runs moved
*away* from the target (KL 0.26 → 7.9 for J-BOND); `docs/results.md` has the table and its command.
"""

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
    """Per prompt, min over real N ∈ [1, 10⁵] of KL(π‖π_BoN(N)) (BOND eq. 4 with p≤^N − p<^N for real N). An EMA
    anchor iterates Best-of-2, so N grows geometrically with training: the curve must reach large N."""
    curve = torch.stack([kl_divergence(policy, bon_probs(ref, rewards, n)) for n in torch.logspace(0, 5, 400)])
    return curve.min(0).values


@pytest.mark.xfail(
    strict=True,
    reason="Not met yet: the EMA-anchor run gains reward past Best-of-2 but ends 0.17 / 0.16 nats from the Best-of-N "
    "curve of pi_ref at lr 0.01 (0.11 / 0.10 at lr 0.003), against the 0.05 asked by issue 11.",
)
def test_jbond_ema_anchor_follows_the_best_of_n_curve(two_token_tasks, tmp_path):
    """J-BOND with its moving (EMA) anchor climbs the Best-of-N curve of π_ref: reward up, KL to the curve small."""
    task = two_token_tasks["gpt2"]
    ref = reference_law(task)
    policy = train_jbond(task, tmp_path, steps=100, learning_rate=0.01)
    distance = _distance_to_bon_curve(policy, ref, task.rewards)
    gain = ((policy - ref) * task.rewards).sum(-1)
    bo2_gain = ((bon_probs(ref, task.rewards, 2) - ref) * task.rewards).sum(-1)
    print(f"J-BOND EMA anchor: KL to the BoN curve = {distance.numpy().round(4)}, reward gain = {gain.numpy()}")
    assert (distance <= 0.05).all(), distance
    assert (gain > bo2_gain).all(), (gain, bo2_gain)  # past Best-of-2 of π_ref: the anchor moved


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


L1_NOT_MET = pytest.mark.xfail(
    strict=True,
    reason="Not met yet: KL(pi || l1 optimum) = 0.011 / 0.091. The worst reward is the reference's likeliest outcome, "
    "whose l1-optimal mass is ~pi_ref*(M+1)^-(N-1) ~ 1e-9; the reverse KL is dominated by the mass the policy still "
    "puts there after 200 steps (the bounded score log F >= -log(M+1) pushes it down slowly).",
)


@pytest.mark.parametrize("objective", ["exact", pytest.param("l1", marks=L1_NOT_MET)])
def test_vbon_reaches_its_optimum(two_token_tasks, tmp_path, objective):
    """`exact` targets π_Bo4 itself; `l1` its own optimum (it drops the tie correction)."""
    task = two_token_tasks["gpt2"]
    ref = reference_law(task)
    cache = stratified_reference_rewards(task)
    target = bon_probs(ref, task.rewards, N) if objective == "exact" else _l1_optimum(task, ref, cache)
    policy = train_vbon(task, tmp_path, objective, 200, 0.01, cache)
    kl = kl_divergence(policy, target)
    print(f"vBoN {objective} N=4: KL(pi || optimum) per prompt = {kl.numpy().round(4)}")
    assert (kl <= 0.02).all(), kl


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
