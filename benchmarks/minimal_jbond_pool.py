"""The control of `distillation_limits.py`: `examples/minimal_jbond.py`'s plain-PyTorch J-BOND on a prompt pool.

    python benchmarks/minimal_jbond_pool.py --task-dir ~/.cache/trl-bon-convergence --pool pool64 \
        --output-dir runs/limits/minimal_fixed_s0 --steps 600 --save-steps 300 --seed 0

Same maths (`trl_bon.core.jbond_weights`, through the example's `batch_weights`), same sampling code and the same
settings as the fixed-anchor J-BOND recipe it is compared with: π_ref = the task's policy with dropout off, a fixed
anchor (a frozen copy of π_ref, so the target is exactly Best-of-2 of π_ref), 32 prompts per step drawn as the
trainer draws them (shuffled epochs over the pool), 1 policy + 2 anchor samples of ≤ 8 tokens at temperature 1, rewards
from the task's reward model on the decoded prompt + completion text (`trl_bon.rewards.RewardScorer`, TRL's scoring),
AdamW at a constant learning rate with gradient clipping at 1.0 (the `Trainer` defaults). No TRL: if this loop moves
the policy further towards Best-of-2 than `JBondTrainer` with the same settings, the difference is in the trainer.

Writes `checkpoint-<step>/` (model + tokenizer, evaluated by `trl-bon eval --checkpoints`) and `metrics.jsonl`.
"""

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task-dir", type=Path, default=Path.home() / ".cache" / "trl-bon-convergence")
    parser.add_argument("--pool", default="pool64", help="folder of the task holding train.jsonl")
    parser.add_argument("--policy", default="policy", help="π_ref, relative to the task folder")
    parser.add_argument("--reward", default="reward", help="reward model, relative to the task folder")
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--save-steps", type=int, default=300)
    parser.add_argument("--prompts-per-step", type=int, default=32)
    parser.add_argument("--max-completion-length", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    import torch
    from minimal_jbond import NUM_ANCHOR_SAMPLES, batch_weights, sample, sequence_logps
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_bon.rewards import RewardScorer

    torch.manual_seed(args.seed)
    task = args.task_dir.expanduser()
    prompts = [json.loads(line)["prompt"] for line in open(task / args.pool / "train.jsonl")]
    tokenizer = AutoTokenizer.from_pretrained(task / args.policy, padding_side="left")
    policy = AutoModelForCausalLM.from_pretrained(task / args.policy, dtype=torch.float32)
    policy.eval()  # dropout off throughout, as J-BOND forces `disable_dropout`
    anchor = copy.deepcopy(policy).requires_grad_(False)
    scorer = RewardScorer(str(task / args.reward))
    optimizer = torch.optim.AdamW(policy.parameters(), lr=args.lr, weight_decay=0.0)
    group = 1 + NUM_ANCHOR_SAMPLES
    args.output_dir.mkdir(parents=True, exist_ok=True)
    log = open(args.output_dir / "metrics.jsonl", "w")
    order, start = [], time.perf_counter()
    for step in range(1, args.steps + 1):
        while len(order) < args.prompts_per_step:  # shuffled epochs over the pool, as the trainer's sampler draws
            order += torch.randperm(len(prompts)).tolist()
        batch, order = [prompts[i] for i in order[: args.prompts_per_step]], order[args.prompts_per_step :]
        rows = [p for p in batch for _ in range(group)]  # [policy, anchor, anchor] per prompt
        encoded = tokenizer(rows, return_tensors="pt", padding=True)
        prompt_ids, prompt_mask = encoded["input_ids"], encoded["attention_mask"]
        is_policy = torch.arange(len(rows)) % group == 0
        completion_ids = torch.full((len(rows), args.max_completion_length), tokenizer.eos_token_id)
        completion_mask = torch.zeros_like(completion_ids)
        for model, chosen in ((policy, is_policy), (anchor, ~is_policy)):
            ids, mask = sample(
                model, prompt_ids[chosen], prompt_mask[chosen], args.max_completion_length, tokenizer.eos_token_id
            )
            completion_ids[chosen, : ids.size(1)], completion_mask[chosen, : ids.size(1)] = ids, mask
        # Tokens past the first EOS become EOS, which decoding skips, as TRL decodes its padded completions.
        masked = completion_ids.masked_fill(completion_mask == 0, tokenizer.eos_token_id)
        texts = tokenizer.batch_decode(masked, skip_special_tokens=True)
        rewards = scorer.weighted(scorer(rows, texts))
        weights = batch_weights(policy, anchor, prompt_ids, prompt_mask, completion_ids, completion_mask, rewards)
        logps = sequence_logps(policy, prompt_ids, prompt_mask, completion_ids, completion_mask)
        loss = -(weights.weights.view(-1) * logps).mean()
        optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), args.max_grad_norm)
        optimizer.step()
        reward_rows = rewards.view(-1, group)
        record = {
            "step": step,
            "reward/policy": reward_rows[:, 0].mean().item(),
            "reward/anchor": reward_rows[:, 1:].mean().item(),
            "win_rate_vs_anchor": (reward_rows[:, :1] > reward_rows[:, 1:]).float().mean().item(),
            "grad_norm": grad_norm.item(),
            "completion_length": completion_mask[is_policy].sum(1).float().mean().item(),
            "seconds": time.perf_counter() - start,
        }
        log.write(json.dumps(record) + "\n")
        log.flush()
        if step % args.save_steps == 0 or step == args.steps:
            folder = args.output_dir / f"checkpoint-{step}"
            policy.save_pretrained(folder)
            tokenizer.save_pretrained(folder)
            print(f"step {step}: reward {record['reward/policy']:.3f}, saved {folder}", flush=True)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
