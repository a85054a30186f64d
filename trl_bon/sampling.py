"""Sampling N scored completions per prompt: the one sampler behind BoN-SFT data, vBoN's reference-reward cache,
BOND's reference quantiles and the evaluation.

Generation matches what TRL's trainers do with the same settings (`do_sample=True`, temperature / top-p / top-k /
min-p, completions cut after the first EOS and keeping it, decoded with `skip_special_tokens=True`), so samples drawn
here come from the same distribution the trainers train against (one temperature everywhere, as
the Best-of-N law is defined at it: docs/maths.md §1).
"""

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .rewards import RewardFunc, RewardScorer


@dataclass
class GenerationSettings:
    """Sampling settings; part of every cache's metadata, because a reward CDF holds only for its own settings."""

    max_completion_length: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float | None = None
    repetition_penalty: float = 1.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_trainer_args(cls, args) -> "GenerationSettings":
        """The settings a TRL `RLOOConfig`/`GRPOConfig` (or subclass) samples with."""
        return cls(
            max_completion_length=args.max_completion_length,
            temperature=args.temperature,
            top_p=args.top_p,
            top_k=args.top_k or 0,
            min_p=args.min_p,
            repetition_penalty=args.repetition_penalty,
        )


@dataclass
class Samples:
    """Completions sampled for a list of prompts, `num_samples` per prompt, grouped by prompt (row-major)."""

    prompt_index: list[int]
    prompts: list
    completions: list
    completion_ids: list[list[int]]
    num_samples: int


def load_causal_lm(model, model_init_kwargs: dict | None = None):
    """Return `(model, tokenizer)` for a model id/path or an instance (PEFT and quantised models included).

    Strings are loaded with TRL's own loader (fp32 unless `model_init_kwargs["dtype"]` says otherwise), so
    `quantization_config` and `device_map` in `model_init_kwargs` work as in the trainers.
    """
    from transformers import AutoTokenizer

    from ._trl_compat import create_model_from_path, get_config_model_id

    if isinstance(model, str):
        model = create_model_from_path(model, **(model_init_kwargs or {}))
    tokenizer = AutoTokenizer.from_pretrained(get_config_model_id(model.config), padding_side="left")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def tokenize_prompts(tokenizer, prompts: list, chat_template_kwargs: dict) -> list[list[int]]:
    """Token ids of each prompt exactly as `RLOOTrainer._tokenize_prompts` makes them (text-only prompts)."""
    from trl import is_conversational

    if is_conversational({"prompt": prompts[0]}):
        return tokenizer.apply_chat_template(
            prompts, add_generation_prompt=True, tokenize=True, return_dict=True, **chat_template_kwargs
        )["input_ids"]
    return tokenizer(text=prompts)["input_ids"]


def _eos_ids(model, tokenizer) -> list[int]:
    eos = model.generation_config.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    return eos if tokenizer.eos_token_id in eos else [tokenizer.eos_token_id, *eos]


def _decode(tokenizer, prompts: list, completion_ids: list[list[int]]) -> list:
    from trl import is_conversational

    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    if is_conversational({"prompt": prompts[0]}):
        return [[{"role": "assistant", "content": t}] for t in texts]
    return texts


@torch.no_grad()
def _generate_transformers(model, tokenizer, prompt_ids, settings, batch_size, progress, desc) -> list[list[int]]:
    from transformers import GenerationConfig

    from ._trl_compat import pad

    eos_ids = _eos_ids(model, tokenizer)
    config = GenerationConfig(
        max_new_tokens=settings.max_completion_length,
        do_sample=True,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k,
        min_p=settings.min_p,
        repetition_penalty=settings.repetition_penalty,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos_ids,
        disable_compile=True,
    )
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    completions = []
    for start in tqdm(range(0, len(prompt_ids), batch_size), desc=desc, disable=not progress, unit="batch"):
        rows = [torch.tensor(ids) for ids in prompt_ids[start : start + batch_size]]
        input_ids = pad(rows, padding_value=tokenizer.pad_token_id, padding_side="left").to(device)
        attention_mask = pad([torch.ones_like(r) for r in rows], padding_value=0, padding_side="left").to(device)
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
        for row in output[:, input_ids.size(1) :].tolist():
            cut = next((i for i, t in enumerate(row) if t in eos_ids), None)  # keep the first EOS, drop the rest
            completions.append(row if cut is None else row[: cut + 1])
    model.train(was_training)
    return completions


def _generate_vllm(model_path: str, prompt_ids, settings, seed, vllm_kwargs) -> list[list[int]]:
    """Sample with an offline vLLM engine; one engine per call, built from the model path. Not CPU-testable."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError as error:
        raise ImportError(
            "`use_vllm=True` needs vLLM: `pip install 'trl-bon[vllm]'`, or set `use_vllm=False`."
        ) from error
    engine = LLM(model=model_path, seed=seed, **(vllm_kwargs or {}))
    params = SamplingParams(
        n=1,
        temperature=settings.temperature,
        top_p=settings.top_p,
        top_k=settings.top_k if settings.top_k > 0 else -1,
        min_p=settings.min_p or 0.0,
        repetition_penalty=settings.repetition_penalty,
        max_tokens=settings.max_completion_length,
    )
    outputs = engine.generate([{"prompt_token_ids": ids} for ids in prompt_ids], sampling_params=params)
    return [list(out.outputs[0].token_ids) for out in outputs]


def sample_completions(
    model,
    prompts: Sequence,
    num_samples: int,
    settings: GenerationSettings | None = None,
    *,
    tokenizer=None,
    batch_size: int = 64,
    seed: int | None = 0,
    use_vllm: bool = False,
    vllm_kwargs: dict | None = None,
    model_init_kwargs: dict | None = None,
    chat_template_kwargs: dict | None = None,
    progress: bool = True,
) -> Samples:
    """Sample `num_samples` completions for each prompt.

    Args:
        model (`str`, [`~transformers.PreTrainedModel`] or [`~peft.PeftModel`]):
            Model id/path or instance (LoRA and 8/4-bit included; pass `quantization_config` in `model_init_kwargs`).
        prompts (`list[str]` or `list[list[dict]]`):
            Standard or conversational prompts.
        num_samples (`int`):
            Completions per prompt.
        settings ([`GenerationSettings`], *optional*):
            Sampling settings; defaults to `GenerationSettings()`.
        tokenizer (*optional*):
            Left-padding tokenizer; loaded from the model when `None`.
        batch_size (`int`, *optional*, defaults to `64`):
            Sequences per `generate` call (transformers backend).
        seed (`int` or `None`, *optional*, defaults to `0`):
            Seeds torch before sampling, so a call is reproducible; `None` leaves the RNG alone.
        use_vllm (`bool`, *optional*, defaults to `False`):
            Sample with an offline vLLM engine (needs a model path and a GPU).

    Returns:
        [`Samples`] grouped by prompt: rows `i * num_samples … (i + 1) * num_samples − 1` belong to prompt `i`.
    """
    if num_samples < 1:
        raise ValueError(f"`num_samples` must be at least 1, got {num_samples}.")
    prompts = list(prompts)
    if not prompts:
        raise ValueError("No prompts to sample from: the prompt list is empty.")
    settings = settings or GenerationSettings()
    from .trainer._config_checks import check_sampling_inputs  # imported here: the trainers import this module

    check_sampling_inputs(model, prompts, settings.max_completion_length, tokenizer, chat_template_kwargs)
    if use_vllm and not isinstance(model, str):
        raise ValueError("`use_vllm=True` builds its own engine from a model path: pass the model as a path or id.")
    model_path = model if isinstance(model, str) else None
    if not use_vllm:
        model, loaded_tokenizer = load_causal_lm(model, model_init_kwargs)
        tokenizer = tokenizer or loaded_tokenizer
    elif tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_path, padding_side="left")
    prompt_ids = tokenize_prompts(tokenizer, prompts, chat_template_kwargs or {})
    repeated_ids = [ids for ids in prompt_ids for _ in range(num_samples)]
    if seed is not None:
        torch.manual_seed(seed)
    if use_vllm:
        completion_ids = _generate_vllm(model_path, repeated_ids, settings, seed or 0, vllm_kwargs)
    else:
        completion_ids = _generate_transformers(
            model, tokenizer, repeated_ids, settings, batch_size, progress, desc=f"sampling {num_samples}/prompt"
        )
    prompt_index = [i for i in range(len(prompts)) for _ in range(num_samples)]
    repeated_prompts = [prompts[i] for i in prompt_index]
    return Samples(
        prompt_index=prompt_index,
        prompts=repeated_prompts,
        completions=_decode(tokenizer, repeated_prompts, completion_ids),
        completion_ids=completion_ids,
        num_samples=num_samples,
    )


@dataclass
class BestOfNOutput:
    """Result of [`best_of_n`]: the chosen completion per prompt, with every candidate and its reward."""

    prompts: list
    completions: list
    completion_ids: list[list[int]]
    rewards: torch.Tensor  # (P,) reward of the chosen completion
    chosen_index: torch.Tensor  # (P,) index of the chosen candidate in 0..N-1
    candidates: list[list]  # (P, N) candidate completions
    candidate_ids: list[list[list[int]]]
    candidate_rewards: torch.Tensor  # (P, N) scalar (weighted) rewards
    reward_signature: dict = field(default_factory=dict)

    def to_dataset(self):
        """A prompt–completion `datasets.Dataset` of the chosen completions (the BoN-SFT format)."""
        from datasets import Dataset

        return Dataset.from_dict({"prompt": self.prompts, "completion": self.completions})


def select_best(rewards: torch.Tensor, tie_break: str = "random", generator: torch.Generator | None = None):
    """Index of the best candidate per row of `(P, N)` rewards.

    `tie_break="random"` picks uniformly among the maximal candidates (the law of Best-of-N sampling, BOND
    eq. 4); `"first"` takes the first maximal one (the same law by exchangeability, but not per draw).
    """
    if tie_break == "first":
        return rewards.argmax(dim=1)
    if tie_break != "random":
        raise ValueError(f"Unknown tie_break {tie_break!r}; use 'random' or 'first'.")
    is_max = rewards == rewards.max(dim=1, keepdim=True).values
    noise = torch.rand(rewards.shape, generator=generator)
    return torch.where(is_max, noise, -1.0).argmax(dim=1)


def best_of_n(
    model,
    prompts: Sequence,
    reward_funcs: RewardFunc | Sequence[RewardFunc] | RewardScorer,
    n: int,
    settings: GenerationSettings | None = None,
    *,
    reward_processing_classes=None,
    reward_weights: Sequence[float] | None = None,
    columns: dict[str, Sequence] | None = None,
    tie_break: str = "random",
    seed: int = 0,
    **sampling_kwargs,
) -> BestOfNOutput:
    """Best-of-N sampling: draw `n` completions per prompt, score them, keep the best (ties at random, seeded).

    This is the inference-time target every trainer in trl-bon distils.

    Args:
        model: model id/path or instance (LoRA and 8/4-bit included), as in [`sample_completions`].
        prompts: standard or conversational prompts.
        reward_funcs: TRL-style reward functions (or a ready [`~trl_bon.rewards.RewardScorer`]).
        n (`int`): candidates per prompt, n ≥ 1.
        settings ([`GenerationSettings`], *optional*): sampling settings.
        columns (`dict[str, list]`, *optional*): extra per-prompt columns passed to reward callables (repeated per
            candidate), like a dataset's extra columns in TRL.
        tie_break (`str`, *optional*, defaults to `"random"`): `"random"` or `"first"`.
        seed (`int`, *optional*, defaults to `0`): seeds sampling and the tie-break.
        **sampling_kwargs: forwarded to [`sample_completions`] (`batch_size`, `use_vllm`, `model_init_kwargs`, …).

    Example:

    ```python
    >>> from trl_bon import best_of_n
    >>> from trl_bon.toy import build_one_token_task
    >>> task = build_one_token_task("/tmp/trl_bon_doc_task")
    >>> out = best_of_n(task.model_path, [task.prompt] * 4, task.reward_func, n=8, progress=False)
    >>> out.candidate_rewards.shape
    torch.Size([4, 8])
    ```
    """
    if n < 1:
        raise ValueError(f"Best-of-N needs n >= 1 candidates per prompt, got n={n}.")
    scorer = (
        reward_funcs
        if isinstance(reward_funcs, RewardScorer)
        else RewardScorer(
            reward_funcs, reward_processing_classes=reward_processing_classes, reward_weights=reward_weights
        )
    )
    prompts = list(prompts)
    samples = sample_completions(model, prompts, n, settings, seed=seed, **sampling_kwargs)
    repeated_columns = {key: [values[i] for i in samples.prompt_index] for key, values in (columns or {}).items()}
    per_func = scorer(samples.prompts, samples.completions, samples.completion_ids, **repeated_columns)
    scorer.check_finite(per_func)
    rewards = scorer.weighted(per_func).view(len(prompts), n)
    chosen = select_best(rewards, tie_break, torch.Generator().manual_seed(seed))
    flat = [i * n + int(c) for i, c in enumerate(chosen)]
    return BestOfNOutput(
        prompts=prompts,
        completions=[samples.completions[j] for j in flat],
        completion_ids=[samples.completion_ids[j] for j in flat],
        rewards=rewards.gather(1, chosen.unsqueeze(1)).squeeze(1),
        chosen_index=chosen,
        candidates=[samples.completions[i * n : (i + 1) * n] for i in range(len(prompts))],
        candidate_ids=[samples.completion_ids[i * n : (i + 1) * n] for i in range(len(prompts))],
        candidate_rewards=rewards,
        reward_signature=scorer.signature(),
    )
