"""A task on the shapes people train on, whose exact laws are computed by enumeration.

Two prompts of different lengths (2 and 5 tokens), so every batch is left-padded; two-token completions over a
3-token vocabulary (`a b` and `e`, which is EOS and pad), so a completion is `(e)` or `(y1, y2)` with `y1 ≠ e`:
7 outcomes per prompt. A tiny GPT-2 (learned absolute positions, `resid/embd/attn_pdrop = 0.1`) or Llama (rotary
positions, `attention_dropout = 0.1`) is built from scratch with large random weights, so that its law depends on the
prompt and on the positions. Each prompt holds two distinct tokens: a rotary model without a BOS token cannot tell
`a` from `a a` (identical keys and values), so a one-token prompt would put some targets out of Llama's reach.
Rewards are distinct per outcome and prompt (the more likely an outcome, the lower its reward), so every Best-of-N
law is well defined.

`law(model)` is the model's exact distribution over the 7 outcomes of each prompt, scored unpadded in eval mode,
which is the law `generate` samples from; the Best-of-N targets follow from `trl_bon.core.bon_probs`.
"""

from dataclasses import dataclass
from pathlib import Path

import torch


VOCAB = ("a", "b", "e")
EOS = len(VOCAB) - 1
PROMPTS = ("b a", "a b b a b")
OUTCOMES = [(EOS,)] + [(first, second) for first in range(EOS) for second in range(len(VOCAB))]


@dataclass
class TwoTokenTask:
    """The model (by path), the prompts, and a reward per outcome of each prompt (`rewards[p, o]`, distinct)."""

    model_path: str
    rewards: torch.Tensor  # (num_prompts, num_outcomes) float64

    @property
    def prompts(self) -> tuple[str, ...]:
        return PROMPTS

    @property
    def reward_func(self):
        """TRL-style reward function: the reward of the outcome `completion_ids` spells after its prompt."""
        index = {outcome: i for i, outcome in enumerate(OUTCOMES)}
        table = self.rewards.tolist()

        def two_token_reward(prompts, completion_ids, **kwargs) -> list[float]:
            return [
                table[PROMPTS.index(prompt)][index[tuple(ids[:1]) if ids[0] == EOS else tuple(ids[:2])]]
                for prompt, ids in zip(prompts, completion_ids, strict=True)
            ]

        return two_token_reward

    def dataset(self, num_rows: int):
        """A prompt-only dataset cycling through the prompts (`num_rows` a multiple of their number)."""
        from datasets import Dataset

        return Dataset.from_dict({"prompt": [PROMPTS[i % len(PROMPTS)] for i in range(num_rows)]})

    @torch.no_grad()
    def law(self, model, tokenizer=None) -> torch.Tensor:
        """`(num_prompts, num_outcomes)` exact probabilities of `model` (PEFT or not), float64, unpadded, eval mode."""
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        rows = []
        for prompt in PROMPTS:
            ids = [VOCAB.index(token) for token in prompt.split()]
            first = torch.log_softmax(model(input_ids=torch.tensor([ids], device=device)).logits[0, -1].double(), -1)
            after = torch.tensor([ids + [token] for token in range(EOS)], device=device)
            second = torch.log_softmax(model(input_ids=after).logits[:, -1].double(), -1)
            logps = [first[EOS]] + [first[y1] + second[y1, y2] for y1, y2 in OUTCOMES[1:]]
            rows.append(torch.stack(logps).exp().cpu())
        model.train(was_training)
        return torch.stack(rows)


def build_two_token_task(root: str | Path, architecture: str = "gpt2", seed: int = 2) -> TwoTokenTask:
    """Save a tiny `architecture` ("gpt2" or "llama") causal LM with dropout in its config, and its tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PreTrainedTokenizerFast

    word_level = Tokenizer(models.WordLevel(vocab={token: i for i, token in enumerate(VOCAB)}, unk_token="a"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=word_level, eos_token="e", pad_token="e", unk_token="a", padding_side="left"
    )
    special = dict(vocab_size=len(VOCAB), eos_token_id=EOS, pad_token_id=EOS, bos_token_id=None)
    if architecture == "gpt2":
        config = GPT2Config(n_embd=16, n_layer=2, n_head=2, n_positions=16, initializer_range=0.25, **special)
        config.resid_pdrop = config.embd_pdrop = config.attn_pdrop = 0.1
    elif architecture == "llama":
        config = LlamaConfig(
            hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            max_position_embeddings=16, initializer_range=0.25, attention_dropout=0.1, tie_word_embeddings=False,
            **special,
        )  # fmt: skip
    else:
        raise ValueError(f"Unknown architecture {architecture!r}: 'gpt2' or 'llama'.")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    path = Path(root) / f"two_token_{architecture}"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    # Rewards rank the outcomes against the model's own preference (its most likely outcome is the worst): the
    # Best-of-N law then moves mass from likely to unlikely outcomes, and no outcome's target mass is tiny next to its
    # reference mass, so KL(π‖π_BoN) measures the fit rather than how often a vanishing outcome was sampled.
    task = TwoTokenTask(model_path=str(path), rewards=torch.zeros(len(PROMPTS), len(OUTCOMES), dtype=torch.float64))
    task.rewards = task.law(model).argsort(-1, descending=True).argsort(-1).double()
    return task


# Training runs shared by `tests/trainers/test_exactness.py` and `benchmarks/exactness.py`: each trainer at its
# defaults except the step count, the learning rate and the number of prompts per step.
PROMPTS_PER_STEP = 16


def reference_law(task: TwoTokenTask) -> torch.Tensor:
    """The exact law of the untrained model, π_ref."""
    from transformers import AutoModelForCausalLM

    return task.law(AutoModelForCausalLM.from_pretrained(task.model_path))


def stratified_reference_rewards(task: TwoTokenTask, num_samples: int = 1000) -> list[list[float]]:
    """Per prompt, `num_samples` reference rewards in π_ref's exact proportions (rounded): a vBoN reference-reward
    cache without sampling noise."""
    counts = (reference_law(task) * num_samples).round().long().tolist()
    return [
        [reward for reward, count in zip(rewards, row, strict=True) for _ in range(count)]
        for rewards, row in zip(task.rewards.tolist(), counts, strict=True)
    ]


def train_jbond(
    task, output_dir, steps, learning_rate, prompts_per_step=PROMPTS_PER_STEP, with_anchor=False, **overrides
):
    """Train `JBondTrainer` (J-BOND or, with `mode="bond"`, BOND) and return the trained model's exact law (and, with
    `with_anchor`, the final anchor's: `(policy_law, anchor_law)`)."""
    from trl_bon import JBondConfig, JBondTrainer

    from ..helpers import cpu_args

    num_generations = JBondConfig(**cpu_args(output_dir=str(output_dir), **overrides)).num_generations
    args = JBondConfig(
        **cpu_args(output_dir=str(output_dir), max_completion_length=2, logging_steps=steps, **overrides),
        per_device_train_batch_size=prompts_per_step * num_generations,
        max_steps=steps,
        learning_rate=learning_rate,
    )
    trainer = JBondTrainer(task.model_path, task.reward_func, args, task.dataset(prompts_per_step * steps))
    trainer.train()
    policy = task.law(trainer.model)
    if not with_anchor:
        return policy
    with trainer.anchor.active() as anchor:  # a LoRA anchor is an adapter of the same model: policy law first
        return policy, task.law(anchor)


def train_vbon(task, output_dir, objective, steps, learning_rate, ref_rewards, num_candidates=4, **overrides):
    """Train `VBoNTrainer` with `ref_rewards[p]` as prompt p's cached reference rewards; return the exact law."""
    from datasets import Dataset

    from trl_bon import VBoNConfig, VBoNTrainer

    from ..helpers import cpu_args

    args = VBoNConfig(
        **cpu_args(output_dir=str(output_dir), max_completion_length=2, logging_steps=steps, **overrides),
        num_candidates=num_candidates,
        vbon_objective=objective,
        max_steps=steps,
        learning_rate=learning_rate,
        per_device_train_batch_size=PROMPTS_PER_STEP * 2,  # RLOO's default of 2 completions per prompt
    )
    rows = [PROMPTS.index(prompt) for prompt in task.dataset(PROMPTS_PER_STEP * steps)["prompt"]]
    data = Dataset.from_dict({"prompt": [PROMPTS[p] for p in rows], "ref_rewards": [ref_rewards[p] for p in rows]})
    trainer = VBoNTrainer(task.model_path, task.reward_func, args=args, train_dataset=data)
    trainer.train()
    return task.law(trainer.model)
