"""Tiny offline models, tokenizers and tasks built from scratch (no Hub access), for the tests, the benchmarks and
`trl-bon demo`; [`build_one_token_task`]'s model has *exactly* a given π_ref, to compare with `core.bon_probs`."""

from dataclasses import dataclass
from pathlib import Path

import torch


CORPUS = [
    "the cat sat on the mat",
    "tell me a story about a dog",
    "once upon a time there was a happy robot",
    "the movie was great and the actors were wonderful",
    "the food was bad and the service was slow",
    "a good day starts with a warm cup of tea",
]
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)


def _model_config(architecture: str, tokenizer, dropout: float = 0.0, **overrides):
    """Config of a 2-layer `"llama"` or `"gpt2"` model over `tokenizer`, `dropout` in every dropout probability."""
    from transformers import GPT2Config, LlamaConfig

    tokens = dict(pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    if architecture == "llama":
        size = dict(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_key_value_heads=1)
        config = dict(num_hidden_layers=2, max_position_embeddings=256, tie_word_embeddings=False, **size)
        config.update(attention_dropout=dropout, bos_token_id=tokenizer.bos_token_id)
        return LlamaConfig(vocab_size=len(tokenizer), **{**tokens, **config, **overrides})
    if architecture == "gpt2":
        config = dict(n_positions=256, n_embd=16, n_layer=2, n_head=2)
        config.update(dict.fromkeys(("resid_pdrop", "embd_pdrop", "attn_pdrop", "summary_first_dropout"), dropout))
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return GPT2Config(vocab_size=len(tokenizer), **{**tokens, "bos_token_id": bos, **config, **overrides})
    raise ValueError(f"Unknown architecture {architecture!r}; use 'llama' or 'gpt2'.")


# Linear layers 64 wide, so that the kit takes `--load_in_4bit` on every x86 CPU (see `trl_bon.quantization`).
KIT_SIZES = {"llama": {"hidden_size": 64, "intermediate_size": 128, "num_key_value_heads": 2}, "gpt2": {"n_embd": 64}}


def tiny_causal_lm(tokenizer, architecture: str = "llama", dropout: float = 0.0, seed: int = 0, **overrides):
    """A freshly initialised 2-layer `"llama"` or `"gpt2"` causal LM over `tokenizer`, in eval mode."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(_model_config(architecture, tokenizer, dropout, **overrides)).eval()


def word_level_tokenizer(vocab_size: int):
    """A word-level tokenizer over `t0 … t{V-1}`, left padding; `t{V-1}` doubles as EOS and pad."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    word_level = Tokenizer(models.WordLevel(vocab={f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
    word_level.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    eos = f"t{vocab_size - 1}"
    return PreTrainedTokenizerFast(
        tokenizer_object=word_level, eos_token=eos, pad_token=eos, unk_token="t0", padding_side="left"
    )


def build_bpe_tokenizer(vocab_size: int = 320):
    """A byte-level BPE tokenizer trained on `CORPUS`, left padding, pad/bos/eos specials and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator(CORPUS, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", padding_side="left"
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_kit(
    root: str | Path, seed: int = 0, architecture: str = "llama", dropout: float = 0.0
) -> dict[str, str]:
    """Save a tiny causal LM and reward model, each with the BPE tokenizer, under `root`; return their folders
    `{"policy": path, "reward": path}`."""
    from transformers import AutoModelForSequenceClassification

    tokenizer = build_bpe_tokenizer()
    sizes = KIT_SIZES.get(architecture, {})
    models = {  # the reward model's initialisation continues the policy's seeded random stream
        "policy": tiny_causal_lm(tokenizer, architecture, dropout, seed, **sizes),
        "reward": AutoModelForSequenceClassification.from_config(
            _model_config(architecture, tokenizer, dropout, num_labels=1, **sizes)
        ),
    }
    for name, model in models.items():
        model.save_pretrained(Path(root) / name)
        tokenizer.save_pretrained(Path(root) / name)  # so Auto* classes resolve locally
    return {name: str(Path(root) / name) for name in models}


# The 6-outcome example of docs/maths.md §1, used throughout the tests.
EXAMPLE_REF_PROBS = (0.30, 0.25, 0.20, 0.12, 0.08, 0.05)
EXAMPLE_REWARDS = (2.0, 5.0, 0.0, 4.0, 1.0, 3.0)


@dataclass
class OneTokenTask:
    """A task whose completions are one token of a V-token vocabulary: the model at `model_path` has
    `π_ref(·|prompt) = ref_probs`, and token v has reward `rewards[v]` (both `(V,)` float64)."""

    model_path: str
    prompt: str
    ref_probs: torch.Tensor
    rewards: torch.Tensor

    @property
    def reward_func(self):
        """TRL-style reward function: the reward of the (single) completion token."""

        def token_reward(completion_ids, **kwargs) -> list[float]:
            return [float(self.rewards[ids[0]]) for ids in completion_ids]

        return token_reward

    def dataset(self, num_rows: int):
        """A prompt-only `datasets.Dataset` repeating the prompt `num_rows` times."""
        from datasets import Dataset

        return Dataset.from_dict({"prompt": [self.prompt] * num_rows})

    def policy_probs(self, model) -> torch.Tensor:
        """Exact next-token distribution of `model` (a causal LM, PEFT or not) after the prompt, as float64."""
        from .sampling import eval_mode

        with eval_mode(model), torch.no_grad():
            logits = model(input_ids=torch.tensor([[0]], device=model.device)).logits[0, -1]
        return torch.softmax(logits.double().cpu(), dim=-1)


def build_one_token_task(
    root: str | Path, ref_probs=EXAMPLE_REF_PROBS, rewards=EXAMPLE_REWARDS, seed: int = 0
) -> OneTokenTask:
    """Build a causal LM whose distribution after the prompt `t0` is `ref_probs` up to float rounding (train with
    `max_completion_length=1`); its vocabulary is `t0 … t{V-1}`, and `t{V-1}` is both an outcome and EOS/pad."""
    ref_probs = torch.tensor(ref_probs, dtype=torch.float64)
    rewards = torch.tensor(rewards, dtype=torch.float64)
    tokenizer = word_level_tokenizer(len(ref_probs))
    model = tiny_causal_lm(tokenizer, "llama", seed=seed)
    with torch.no_grad():
        hidden = model.model(input_ids=torch.tensor([[0]])).last_hidden_state[0, -1].double()
        # logits = W·h with W = log π_ref ⊗ h / |h|²  ⇒  logits = log π_ref exactly at the prompt.
        weight = torch.outer(ref_probs.log(), hidden) / hidden.dot(hidden)
        model.lm_head.weight.copy_(weight.float())
    path = Path(root) / "one_token_policy"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return OneTokenTask(model_path=str(path), prompt="t0", ref_probs=ref_probs, rewards=rewards)
