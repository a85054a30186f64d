"""Minimal J-BOND: the executable specification of `JBondTrainer`, in plain PyTorch + transformers (no TRL).

    python examples/minimal_jbond.py [--steps 150] [--seed 0]

J-BOND (Sessa et al., "BOND: Aligning LLMs with Best-of-N Distillation", arXiv 2407.14622 v1, Alg. 2) trains a
policy π to match the Best-of-2 distribution of an anchor π_a that itself trails π by an exponential moving average,
so the target climbs Best-of-2 → Best-of-4 → … of the starting policy π_ref. One step, top to bottom:

    1. sample    for each prompt x: one policy sample y ~ π(·|x) and two anchor samples y'_1, y'_2 ~ π_a(·|x)
    2. score     rewards r(y), r(y'_1), r(y'_2)
    3. log-ratio Δ = log π(y|x) − log π_a(y|x), summed over the completion tokens of the policy sample
    4. weights   `trl_bon.core.jbond_weights`: crude reward r_J = −log 16 if y loses to both anchor samples
                 (eq. 17), return R = r_J − Δ (eq. 15), leave-one-out baseline b, and the Jeffreys mix (eq. 11)
                 w(y) = β·(R − b) − γ·Δ on the policy sample, w(y_target) = 1 − β on the better anchor sample
    5. update    minimise −mean(w · log π(row)) over all rows, one optimizer step
    6. anchor    θ_a ← (1 − η)·θ_a + η·θ (eq. 18)

All the maths is `trl_bon.core`; this file only samples, calls it and steps. The task is
`trl_bon.toy.build_one_token_task`: a tiny Llama whose next-token distribution after the prompt is exactly
π_ref = [0.30, 0.25, 0.20, 0.12, 0.08, 0.05] over six one-token completions with rewards [2, 5, 0, 4, 1, 3], so the
policy is its softmax and KL(π‖π_BoN) is printed exactly (docs/maths.md §1).

Departures from the paper, each shared with `JBondTrainer` at its defaults (docs/jbond_trainer.md):

1. The loss is a weighted log-likelihood −mean_rows(w·log π) whose weights carry the whole objective; the paper
   writes the same gradient as a sum of three terms (Alg. 2). The weights are multiplied by the group size 1 + 2
   because the mean runs over the 3 rows of each prompt, the objective over prompts.
2. The anchor-KL term γ·Δ enters with the sign that lowers KL(π‖π_a); Alg. 2 of arXiv v1 prints the opposite sign.
   γ = 0 by default, as in the paper's J-BOND experiments.
3. The baseline b is the batch leave-one-out mean of the other prompts' returns; Alg. 2 calls the baseline optional
   and does not fix it.
4. Ties: a policy sample tied with the worse anchor sample earns 0 (strict "<" in eq. 17); of two tied anchor samples
   the first is the target.
5. Δ uses the policy samples only (the anchor log-probability of the anchor samples is never needed).
6. Settings sized for a one-token toy on a CPU, not the paper's: AdamW with a constant learning rate 3e-3 (paper:
   3e-6), 16 prompts per step (paper: 128); the EMA rate is the paper's η = 0.02.
"""

import argparse
import copy
import tempfile

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from trl_bon import core
from trl_bon.toy import build_one_token_task


NUM_ANCHOR_SAMPLES = 2  # J-BOND: Best-of-2 of the anchor


def forward_logits(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits of a left-padded batch; positions count real tokens only, as `generate` numbers them."""
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return model(input_ids=ids, attention_mask=mask, position_ids=position_ids).logits


@torch.no_grad()
def sample(model, prompt_ids, prompt_mask, max_new_tokens: int, eos_id: int, temperature: float = 1.0):
    """Ancestral sampling: `(completion_ids, completion_mask)`, the mask covering tokens up to the first EOS."""
    ids, mask, tokens = prompt_ids, prompt_mask, []
    done = torch.zeros(ids.size(0), dtype=torch.bool)
    for _ in range(max_new_tokens):
        probs = torch.softmax(forward_logits(model, ids, mask)[:, -1].float() / temperature, dim=-1)
        token = torch.where(done, eos_id, torch.multinomial(probs, 1).squeeze(1))
        tokens.append(token)
        done |= token == eos_id
        ids, mask = torch.cat([ids, token[:, None]], 1), torch.cat([mask, torch.ones_like(token)[:, None]], 1)
        if done.all():
            break
    completion_ids = torch.stack(tokens, 1)
    is_eos = (completion_ids == eos_id).int()
    completion_mask = ((is_eos.cumsum(1) - is_eos) == 0).long()  # up to and including the first EOS
    return completion_ids, completion_mask


def sequence_logps(model, prompt_ids, prompt_mask, completion_ids, completion_mask, temperature: float = 1.0):
    """log π(y|x) = Σ_t log π(y_t|x, y_<t) over completion tokens, `(B,)`; differentiable."""
    ids = torch.cat([prompt_ids, completion_ids], 1)
    mask = torch.cat([prompt_mask, completion_mask], 1)
    logits = forward_logits(model, ids, mask)[:, prompt_ids.size(1) - 1 : -1].float() / temperature
    token_logps = torch.log_softmax(logits, -1).gather(-1, completion_ids[..., None]).squeeze(-1)
    return (token_logps * completion_mask).sum(1)


def batch_weights(policy, anchor, prompt_ids, prompt_mask, completion_ids, completion_mask, rewards, **options):
    """Steps 3–4 on a batch of P prompt groups laid out as rows [policy, anchor, anchor, policy, …].

    Returns the [`~trl_bon.core.JBondWeights`] of `core.jbond_weights`; `options` are the fields of its
    [`~trl_bon.core.JBondOptions`] (the paper's J-BOND when empty).
    """
    group = 1 + NUM_ANCHOR_SAMPLES
    rows = torch.arange(0, completion_ids.size(0), group)  # the policy samples
    batch = (prompt_ids[rows], prompt_mask[rows], completion_ids[rows], completion_mask[rows])
    with torch.no_grad():
        log_ratio = sequence_logps(policy, *batch) - sequence_logps(anchor, *batch)
    rewards = rewards.view(-1, group)
    lengths = completion_mask.sum(1).float().view(-1, group)
    return core.jbond_weights(rewards[:, 0], rewards[:, 1:], log_ratio, lengths, core.JBondOptions(**options))


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--prompts-per-step", type=int, default=16)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--anchor-ema-rate", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    schedule = core.AnchorSchedule(rate=args.anchor_ema_rate)  # η checked once, where it enters (as in `JBondConfig`)
    torch.manual_seed(args.seed)

    # Task, policy π (= π_ref at the start) and anchor π_a (a frozen copy, moved only by the EMA).
    task = build_one_token_task(tempfile.mkdtemp(), seed=args.seed)
    tokenizer = AutoTokenizer.from_pretrained(task.model_path)
    policy = AutoModelForCausalLM.from_pretrained(task.model_path, dtype=torch.float32)
    anchor = copy.deepcopy(policy).requires_grad_(False).eval()
    optimizer = torch.optim.AdamW(policy.parameters(), lr=args.lr, weight_decay=0.0)
    targets = {n: core.bon_probs(task.ref_probs, task.rewards, n) for n in (2, 4, 8)}

    group = 1 + NUM_ANCHOR_SAMPLES
    prompt = tokenizer([task.prompt] * args.prompts_per_step, return_tensors="pt")
    prompt_ids = prompt["input_ids"].repeat_interleave(group, 0)  # rows [policy, anchor, anchor] per prompt
    prompt_mask = prompt["attention_mask"].repeat_interleave(group, 0)
    is_policy_row = torch.arange(prompt_ids.size(0)) % group == 0
    history = []
    for step in range(args.steps + 1):
        probs = task.policy_probs(policy)
        row = {"step": step, "reward": float(probs @ task.rewards)}
        row.update({f"kl_to_bon{n}": float(core.kl_divergence(probs, target)) for n, target in targets.items()})
        history.append(row)
        if step % max(1, args.steps // 10) == 0:
            kls = "  ".join(f"KL(π‖BoN{n}) {row[f'kl_to_bon{n}']:.4f}" for n in targets)
            print(f"step {step:4d}  reward {row['reward']:.3f}  {kls}", flush=True)
        if step == args.steps:
            break

        # 1. sample: slot 0 from the policy, slots 1..2 from the anchor (max_completion_length = 1 on this task)
        policy.eval()  # sampling without dropout, as generation does
        completion_ids = torch.empty(prompt_ids.size(0), 1, dtype=torch.long)
        completion_mask = torch.empty_like(completion_ids)
        for model, rows in ((policy, is_policy_row), (anchor, ~is_policy_row)):
            ids, mask = sample(model, prompt_ids[rows], prompt_mask[rows], 1, tokenizer.eos_token_id)
            completion_ids[rows], completion_mask[rows] = ids, mask
        policy.train()
        # 2. score
        rewards = torch.tensor(task.reward_func(completion_ids=completion_ids.tolist()), dtype=torch.float32)
        # 3–4. log-ratio and weights
        weights = batch_weights(policy, anchor, prompt_ids, prompt_mask, completion_ids, completion_mask, rewards)
        # 5. update
        logps = sequence_logps(policy, prompt_ids, prompt_mask, completion_ids, completion_mask)
        loss = -(weights.weights.view(-1) * logps).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        # 6. anchor EMA
        core.ema_update_(list(anchor.parameters()), list(policy.parameters()), schedule.rate)
    return history


if __name__ == "__main__":
    main()
