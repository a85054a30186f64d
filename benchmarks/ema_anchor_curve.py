"""Why J-BOND with its EMA anchor leaves the Best-of-N laws of π_ref, measured on the two-token task.

Trains `JBondTrainer` at its defaults (EMA anchor, η = `--eta`) on the GPT-2 two-token task of the test-suite, records
the exact laws of the policy and of the anchor after every optimizer step, and prints per prompt (2- / 5-token):

- `d(π)`, `d(π_a)`: min over real N of KL(·‖π_BoN(N)), the distance to the Best-of-N *laws* of π_ref;
- `d(EMA log π)`: the same for an EMA of the policies' log-probabilities (what a law-space anchor would be);
- `track`: KL(π_t‖Bo2(π_a,t−1)), how far the policy is from the target of its step;
- `excess`: KL(π‖π_ref) minus KL(π_BoN(N)‖π_ref) at the N of equal reward (the reward–KL plane of BOND §5);
- the mean over the second half of log π_t/Bo2(π_a,t−1) per outcome, worst to best reward (the lag's direction);
- and, without training, law-space iterations for comparison (`--law-space` runs only these): the policy exactly
  Bo2(π_a); Bo2(π_a) with a per-step error in a fixed direction, and in a random one; J-BOND's exact per-anchor
  optimum with its crude reward (eq. 17, β = 0.5) in place of Bo2(π_a).

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/ema_anchor_curve.py                       # 100 steps, ~45 s
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/ema_anchor_curve.py --eta 0.005 --steps 400
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/ema_anchor_curve.py --law-space                    # ~1 min
"""

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path


os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.append(str(Path(__file__).resolve().parents[1]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--eta", type=float, default=0.02, help="anchor_ema_rate")
    parser.add_argument("--law-space", action="store_true", help="only the law-space iterations, no training")
    args = parser.parse_args()

    import torch
    from transformers import TrainerCallback

    from tests.helpers import cpu_args
    from tests.trainers.test_exactness import _bon_curve_kl_at_reward, _distance_to_bon_curve
    from tests.trainers.two_token_task import PROMPTS_PER_STEP, build_two_token_task, reference_law
    from trl_bon import JBondConfig, JBondTrainer
    from trl_bon.core import bon_probs, kl_divergence

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="ema_anchor_"))
    task = build_two_token_task(root, "gpt2")
    ref, rewards = reference_law(task), task.rewards
    if args.law_space:
        law_space_iterations(ref, rewards, args.eta, args.steps)
        return
    laws = [(ref, ref)]  # (policy, anchor) after each optimizer step

    class RecordLaws(TrainerCallback):
        def on_step_end(self, _args, state, control, **kwargs):  # after the anchor callback's EMA update
            policy = task.law(trainer.model)
            with trainer.anchor.active() as anchor:
                laws.append((policy, task.law(anchor)))

    num_generations = JBondConfig(**cpu_args(output_dir=str(root))).num_generations
    config = JBondConfig(
        **cpu_args(output_dir=str(root / "run"), max_completion_length=2, logging_steps=args.steps),
        per_device_train_batch_size=PROMPTS_PER_STEP * num_generations,
        max_steps=args.steps,
        learning_rate=args.learning_rate,
        anchor_ema_rate=args.eta,
    )
    trainer = JBondTrainer(task.model_path, task.reward_func, config, task.dataset(PROMPTS_PER_STEP * args.steps))
    trainer.add_callback(RecordLaws())  # appended after the trainer's own anchor callback
    trainer.train()

    def fmt(values):
        return " / ".join(f"{v:.4f}" for v in values.tolist())

    print("step | d(π) | d(π_a) | d(EMA log π) | track | excess | reward")
    ema_logits, lags = ref.log(), []
    for step in range(1, len(laws)):
        policy, anchor = laws[step]
        lag = policy.log() - bon_probs(laws[step - 1][1], rewards, 2).log()
        ema_logits = (1 - args.eta) * ema_logits + args.eta * policy.log()
        if step > args.steps // 2:
            lags.append(lag)
        if step % max(1, args.steps // 10) == 0:
            reward = (policy * rewards).sum(-1)
            excess = kl_divergence(policy, ref) - _bon_curve_kl_at_reward(ref, rewards, reward)
            print(
                f"{step:4d} | {fmt(_distance_to_bon_curve(policy, ref, rewards))} | "
                f"{fmt(_distance_to_bon_curve(anchor, ref, rewards))} | "
                f"{fmt(_distance_to_bon_curve(torch.softmax(ema_logits, -1), ref, rewards))} | "
                f"{fmt(kl_divergence(policy, bon_probs(laws[step - 1][1], rewards, 2)))} | "
                f"{fmt(excess)} | {fmt(reward)}"
            )
    order = rewards.argsort(-1)
    mean_lag = torch.stack(lags).mean(0).gather(-1, order)
    for prompt, row in enumerate(mean_lag.tolist()):
        print(f"prompt {prompt}: mean log π/Bo2(π_a), worst → best reward: {[round(v, 2) for v in row]}")

    law_space_iterations(ref, rewards, args.eta, args.steps)


def jbond_optimum(anchor, rewards, beta=0.5, penalty=math.log(16.0)):
    """Tabular argmin of (1−β)·KL(Bo2(π_a)‖π) + β·(KL(π‖π_a) − E_π[r̄_J]), with r̄_J(y) = −penalty·(1 − p≤_a(y))²
    the expected crude reward of y (eq. 17, distinct rewards): J-BOND's own target for a given anchor."""
    import torch

    from trl_bon.core import bon_probs
    from trl_bon.core.bon_law import reward_quantiles

    target = bon_probs(anchor, rewards, 2)
    mean_crude_reward = -penalty * (1 - reward_quantiles(anchor, rewards)[1]) ** 2
    logits = anchor.log().clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([logits], max_iter=500, tolerance_grad=1e-12, line_search_fn="strong_wolfe")

    def objective():
        optimizer.zero_grad()
        log_policy = torch.log_softmax(logits, -1)
        forward = (target * (target.log() - log_policy)).sum()
        backward = (log_policy.exp() * (log_policy - anchor.log() - mean_crude_reward)).sum()
        loss = (1 - beta) * forward + beta * backward
        loss.backward()
        return loss

    optimizer.step(objective)
    return torch.softmax(logits.detach(), -1)


def law_space_iterations(ref, rewards, eta, steps):
    """J-BOND without a learner: the anchor's log-probabilities move η towards the policy's, the policy is a function
    of the anchor. Prints each variant's distance to the Best-of-N laws, and its last per-step error."""
    import torch

    from tests.trainers.test_exactness import _distance_to_bon_curve
    from trl_bon.core import bon_probs, kl_divergence

    generator = torch.Generator().manual_seed(0)
    direction = torch.randn(ref.shape, generator=generator, dtype=torch.float64)
    variants = {
        "Bo2(π_a) exactly": lambda anchor: bon_probs(anchor, rewards, 2),
        "Bo2(π_a), fixed-direction error": lambda anchor: torch.softmax(
            bon_probs(anchor, rewards, 2).log() + 0.3 * direction, -1
        ),
        "Bo2(π_a), random error": lambda anchor: torch.softmax(
            bon_probs(anchor, rewards, 2).log() + 0.3 * torch.randn(ref.shape, generator=generator, dtype=ref.dtype),
            -1,
        ),
        "J-BOND's optimum for π_a (crude reward)": lambda anchor: jbond_optimum(anchor, rewards),
    }
    for name, policy_of in variants.items():
        anchor_logits = ref.log()
        for _ in range(steps):
            anchor = torch.softmax(anchor_logits, -1)
            policy = policy_of(anchor)
            anchor_logits = (1 - eta) * anchor_logits + eta * policy.log()
        error = kl_divergence(policy, bon_probs(anchor, rewards, 2)).tolist()
        distance = _distance_to_bon_curve(torch.softmax(anchor_logits, -1), ref, rewards).tolist()
        print(
            f"law space, policy = {name}: anchor {distance[0]:.4f} / {distance[1]:.4f} nats from the Best-of-N laws; "
            f"last KL(π‖Bo2(π_a)) {error[0]:.4f} / {error[1]:.4f}; reward "
            f"{' / '.join(f'{v:.2f}' for v in (policy * rewards).sum(-1).tolist())}"
        )


if __name__ == "__main__":
    main()
