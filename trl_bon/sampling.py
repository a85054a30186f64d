"""Sampling N scored completions per prompt for BoN-SFT data, vBoN's reference rewards and the evaluation, from the law
the trainers train against (generation as TRL's trainers, dropout off, positions from the attention mask):
docs/bon_sft_trainer.md and docs/evaluation.md#exactness."""

import contextlib
import copy
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .identity import check_model_path


def _parse_dict(value, name: str) -> dict:
    if value is None:
        return {}
    try:
        value = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError as error:
        raise ValueError(f"`{name}` must be a dict or a JSON object string, got {value!r} ({error}).") from error
    if not isinstance(value, dict):
        raise ValueError(f"`{name}` must be a dict, got {type(value).__name__}.")
    return dict(value)


@dataclass
class GenerationSettings:
    """Everything that decides which completions are drawn, checked here once: the trainers'
    `args.generation_settings`, every cache's metadata and the options of `trl-bon eval`."""

    max_completion_length: int = field(default=64, metadata={"help": "Max new tokens (use the training value)."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (use the training value)."})
    top_p: float = field(default=1.0, metadata={"help": "Top-p of sampling (use the training value)."})
    top_k: int = field(default=0, metadata={"help": "Top-k of sampling, 0 = off (use the training value)."})
    min_p: float | None = field(default=None, metadata={"help": "Min-p of sampling (use the training value)."})
    repetition_penalty: float = field(default=1.0, metadata={"help": "Repetition penalty (use the training value)."})
    generation_kwargs: dict | str | None = field(
        default=None, metadata={"help": "Extra `GenerationConfig` (vLLM: `SamplingParams`) arguments, dict or JSON."}
    )
    chat_template_kwargs: dict | str | None = field(
        default=None, metadata={"help": "Extra `apply_chat_template` arguments for conversational prompts."}
    )

    def __post_init__(self):
        self.generation_kwargs = _parse_dict(self.generation_kwargs, "generation_kwargs")
        self.chat_template_kwargs = _parse_dict(self.chat_template_kwargs, "chat_template_kwargs")
        self.top_k = self.top_k or 0
        if not self.max_completion_length or self.max_completion_length < 1:
            raise ValueError(
                f"`max_completion_length` must be at least 1 token, got {self.max_completion_length}. Set the longest "
                "completion to sample, e.g. `max_completion_length=256`."
            )
        if not self.temperature or self.temperature <= 0:
            raise ValueError(
                f"`temperature` must be > 0, got {self.temperature}: greedy decoding makes the N samples identical. "
                "Set `temperature=1.0` to sample from the reference policy itself (or use the training temperature)."
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(f"`top_p` must be in (0, 1], got {self.top_p}.")
        if self.top_k < 0:
            raise ValueError(f"`top_k` must be >= 0 (0 turns it off), got {self.top_k}.")
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            raise ValueError(f"`min_p` must be in [0, 1] or None, got {self.min_p}.")
        if self.repetition_penalty <= 0:
            raise ValueError(f"`repetition_penalty` must be > 0 (1.0 turns it off), got {self.repetition_penalty}.")

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(GenerationSettings)}

    @classmethod
    def from_trainer_args(cls, args) -> "GenerationSettings":
        """The settings a TRL `RLOOConfig`/`GRPOConfig`, a trl-bon config or `trl-bon eval`'s arguments sample with."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(GenerationSettings) if hasattr(args, f.name)})


@dataclass
class Samples:
    """Completions sampled for a list of prompts, the same number per prompt, grouped by prompt (row-major)."""

    prompt_index: list[int]
    prompts: list
    completions: list
    completion_ids: list[list[int]]


def load_causal_lm(model, model_init_kwargs: dict | None = None, tokenizer=None):
    """`(model, tokenizer)` for a model instance or a path (checked where it entered), loaded as the trainers load it
    (TRL's loader, fp32 unless `model_init_kwargs` says otherwise); a LoRA adapter folder loads on its base model."""
    from ._trl_compat import create_model_from_path, get_config_model_id
    from .quantization import check_4bit_layer_sizes

    if isinstance(model, str) and (Path(model) / "adapter_config.json").is_file():
        from peft import AutoPeftModelForCausalLM

        model = AutoPeftModelForCausalLM.from_pretrained(model, **(model_init_kwargs or {}))
    elif isinstance(model, str):
        model = create_model_from_path(model, **(model_init_kwargs or {}))
    check_4bit_layer_sizes(model)
    return model, tokenizer or load_tokenizer(get_config_model_id(model.config))


def load_tokenizer(name_or_path: str):
    """A model's tokenizer as the trainers use it: left padding, EOS as pad token when it has none."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(name_or_path, padding_side="left")
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token
    return tokenizer


def tokenize_prompts(tokenizer, prompts: list, chat_template_kwargs: dict) -> list[list[int]]:
    """Token ids of each (checked) prompt as `RLOOTrainer._tokenize_prompts` makes them."""
    from trl import is_conversational

    if is_conversational({"prompt": prompts[0]}):
        return tokenizer.apply_chat_template(
            prompts, add_generation_prompt=True, tokenize=True, return_dict=True, **chat_template_kwargs
        )["input_ids"]
    return tokenizer(text=prompts)["input_ids"]


def check_prompts(prompts, name: str = "prompts") -> None:
    """The one check of prompts, naming the first offending rows: refuse none at all, mixed text/chat prompts, empty
    text prompts (an `IndexError` deep inside `generate`) and anything neither a string nor a list of messages."""
    if not len(prompts):
        raise ValueError(f"`{name}` is empty; pass at least one prompt.")
    kinds = [isinstance(p, str) for p in prompts]
    if not all(kinds) and any(kinds):
        raise ValueError(
            f"The prompts mix plain text (e.g. row {kinds.index(True)}) and conversations (e.g. row "
            f"{kinds.index(False)}); use one format for all rows: strings, or lists of `{{'role', 'content'}}` dicts."
        )
    empty = [i for i, prompt in enumerate(prompts) if isinstance(prompt, str) and not prompt.strip()]
    if empty:
        raise ValueError(
            f"`{name}` has {len(empty)} empty prompt(s) (rows {empty[:5]}); generation needs at least one prompt "
            "token. Drop them, e.g. `dataset.filter(lambda x: x['prompt'].strip() != '')`."
        )
    chat = [isinstance(p, list) and all(isinstance(m, dict) and "role" in m for m in p) for p in prompts]
    if not any(kinds) and not all(chat):  # no text prompts (or the mixed check would have failed): all must be chats
        i = chat.index(False)
        raise ValueError(
            f"Prompt {i} is neither a string nor a list of chat messages (dicts with 'role' and 'content'): "
            f"{prompts[i]!r:.80}"
        )


def context_window(config) -> int | None:
    """The positions a model config is trained for, or `None` when it does not say or scales its rotary positions
    (meant to run past `max_position_embeddings`)."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    rope = getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        return None
    for key in ("max_position_embeddings", "n_positions", "n_ctx", "seq_length"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_context_window(prompt_lengths: list[int], config, max_completion_length: int, name: str) -> None:
    """The one prompt-length check: refuse prompts (token counts) that leave no room for `max_completion_length` in
    the context window (GPT-2 crashes inside `generate`, rotary models silently run past their trained positions)."""
    window = context_window(config)
    too_long = [i for i, length in enumerate(prompt_lengths) if window and length + max_completion_length > window]
    if too_long:
        raise ValueError(
            f"`{name}` has {len(too_long)} prompt(s) (rows {too_long[:5]}, longest {max(prompt_lengths)} tokens) that "
            f"leave no room for `max_completion_length={max_completion_length}` in the model's context window of "
            f"{window} positions. Drop or shorten prompts longer than {window - max_completion_length} tokens, or "
            "lower `max_completion_length`."
        )


@contextlib.contextmanager
def eval_mode(model):
    """Run `model` with dropout off, as the trainers' law (GPT-2 checkpoints ship `*_pdrop=0.1`), then restore it."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _left_pad(rows: list[list[int]], pad_token_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    from ._trl_compat import pad

    rows = [torch.tensor(row) for row in rows]
    mask = pad([torch.ones_like(row) for row in rows], padding_value=0, padding_side="left")
    return pad(rows, padding_value=pad_token_id, padding_side="left").to(device), mask.to(device)


@torch.no_grad()
def _generate_transformers(model, tokenizer, prompt_ids, settings, batch_size):
    from transformers import GenerationConfig

    eos = model.generation_config.eos_token_id  # stop at any of the model's EOS ids and at the tokenizer's
    eos_ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    eos_ids = eos_ids if tokenizer.eos_token_id in eos_ids else [tokenizer.eos_token_id, *eos_ids]
    config = GenerationConfig(
        max_new_tokens=settings.max_completion_length,
        do_sample=True,
        **{key: getattr(settings, key) for key in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")},
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos_ids,
        disable_compile=True,
        **settings.generation_kwargs,
    )
    with eval_mode(model):  # yields `(first_row, completion_ids)` per batch
        for start in range(0, len(prompt_ids), batch_size):
            batch = prompt_ids[start : start + batch_size]
            input_ids, attention_mask = _left_pad(batch, tokenizer.pad_token_id, model.device)
            # `generate` derives position ids from the attention mask, so left padding does not shift absolute
            # positions (GPT-2); `completion_logps` scores with the same positions.
            output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
            rows = output[:, input_ids.size(1) :].tolist()  # cut after the first EOS: the rest is padding
            yield start, [row[: next((i + 1 for i, t in enumerate(row) if t in eos_ids), len(row))] for row in rows]


@torch.inference_mode()
def completion_logps(
    model,
    prompt_ids: list[list[int]],
    completion_ids: list[list[int]],
    temperature: float,
    pad_token_id: int,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of each completion given its prompt at the sampling temperature (logits / T, as TRL):
    `(logps, mask)`, both `(B, T_max)` float32 on CPU, `mask` 1 on completion tokens."""
    lengths = torch.tensor([len(c) for c in completion_ids])
    all_logps = torch.zeros(len(completion_ids), int(lengths.max()))
    mask = (torch.arange(all_logps.size(1)) < lengths.unsqueeze(1)).float()
    for start in range(0, len(completion_ids), batch_size):
        prompts, completions = prompt_ids[start : start + batch_size], completion_ids[start : start + batch_size]
        seqs = [p + c for p, c in zip(prompts, completions, strict=True)]
        input_ids, attention = _left_pad(seqs, pad_token_id, model.device)
        # position ids from the attention mask, as `generate` assigns them: left padding shifts no position
        position_ids = (attention.cumsum(-1) - 1).clamp_min(0)
        with eval_mode(model):
            logits = model(input_ids=input_ids, attention_mask=attention, position_ids=position_ids).logits.float()
        logps = torch.log_softmax(logits[:, :-1] / temperature, dim=-1)
        token_logps = logps.gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1).cpu()
        for i, c in enumerate(completions):  # each completion ends the row: left padding
            all_logps[start + i, : len(c)] = token_logps[i, token_logps.size(1) - len(c) :]
    return all_logps, mask


def _row_seed(seed: int, row: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{row}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def _generate_vllm(engine, prompt_ids, settings, seed: int | None) -> list[list[int]]:
    """One completion per row, seeded by `(seed, row)`: reproducible whatever the engine sampled before."""
    from vllm import SamplingParams

    params = [
        SamplingParams(
            n=1,
            temperature=settings.temperature,
            top_p=settings.top_p,
            top_k=settings.top_k if settings.top_k > 0 else -1,
            min_p=settings.min_p or 0.0,
            repetition_penalty=settings.repetition_penalty,
            max_tokens=settings.max_completion_length,
            seed=None if seed is None else _row_seed(seed, row),
            **settings.generation_kwargs,
        )
        for row in range(len(prompt_ids))
    ]
    outputs = engine.generate([{"prompt_token_ids": ids} for ids in prompt_ids], sampling_params=params)
    return [list(out.outputs[0].token_ids) for out in outputs]


@dataclass
class ScoredSamples:
    """What [`Sampler.score`] returns: the samples and their `(prompts, n)` reward matrix."""

    samples: Samples
    rewards: torch.Tensor  # (P, n) float32 weighted rewards, row i = prompt i in sampling order


def prompts_and_columns(prompts) -> tuple[list, dict[str, list]]:
    """Prompts and the other per-prompt columns (for reward callables, as in TRL) of a list, dataset or dict."""
    if hasattr(prompts, "column_names") or isinstance(prompts, dict):
        columns = {c: list(v) for c, v in (prompts if isinstance(prompts, dict) else prompts.to_dict()).items()}
        if "prompt" not in columns:
            raise ValueError(
                f"The prompts have no `prompt` column (columns: {list(columns)}); rename the prompt column to "
                "`prompt` (`trl-bon eval`: set `--prompt_column`)."
            )
        return columns.pop("prompt"), columns
    return list(prompts), {}


def score_samples(scorer, samples: Samples, columns: dict[str, list]) -> torch.Tensor:
    """Weighted rewards of `samples` by a [`~trl_bon.rewards.RewardScorer`], refusing non-finite ones."""
    repeated = {key: [values[i] for i in samples.prompt_index] for key, values in columns.items()}
    per_func = scorer(samples.prompts, samples.completions, samples.completion_ids, **repeated)
    scorer.check_finite(per_func)
    return scorer.weighted(per_func)


class Sampler:
    """The one offline sample-and-score path under [`best_of_n`], the reference reward cache and the evaluation
    (docs/bon_sft_trainer.md#best-of-n-sampling-the-inference-time-target).

    `model` is an instance or a path/id loaded on first use with `model_init_kwargs` (a missing local path fails here).
    Each `generate` call of `batch_size` sequences is scored at once, so a broken reward fails early. `backend="vllm"`
    builds one offline engine from the model path with `vllm_kwargs` (needs a GPU). `seed` seeds torch before each
    sampling call, so a call is reproducible; `None` leaves the RNG alone.
    """

    def __init__(
        self,
        model,
        settings: GenerationSettings | None = None,
        *,
        tokenizer=None,
        batch_size: int = 64,
        backend: str = "transformers",
        seed: int | None = 0,
        model_init_kwargs: dict | None = None,
        vllm_kwargs: dict | None = None,
        progress: bool = True,
    ):
        if backend not in ("transformers", "vllm"):
            raise ValueError(f"Unknown backend {backend!r}; use 'transformers' or 'vllm'.")
        if batch_size < 1:
            raise ValueError(f"`batch_size` must be at least 1, got {batch_size}.")
        if backend == "vllm" and not isinstance(model, str):
            raise ValueError("The vLLM backend builds its own engine from a model path: pass a path or id.")
        if isinstance(model, str):
            check_model_path(model)
        self._model, self._tokenizer = model, tokenizer
        self.settings = settings or GenerationSettings()
        self.batch_size, self.backend, self.seed, self.progress = batch_size, backend, seed, progress
        self.model_init_kwargs, self.vllm_kwargs = dict(model_init_kwargs or {}), vllm_kwargs
        self._engine = self._vllm_model_identity = None  # the vLLM backend's engine and model fingerprint, built once

    @property
    def model(self):
        if isinstance(self._model, str):
            self._model, self._tokenizer = load_causal_lm(self._model, self.model_init_kwargs, self._tokenizer)
        return self._model

    @property
    def tokenizer(self):
        if self._tokenizer is None and self.backend == "vllm":  # the engine holds the model: its tokenizer alone here
            self._tokenizer = load_tokenizer(self._model)
        elif self._tokenizer is None:
            self._model, self._tokenizer = load_causal_lm(self._model, self.model_init_kwargs)
        return self._tokenizer

    @property
    def model_name(self) -> str:
        from ._trl_compat import get_config_model_id

        return self._model if isinstance(self._model, str) else get_config_model_id(self._model.config)

    def with_model(self, model) -> "Sampler":
        """A sampler for another model with the same tokenizer, settings, batch size, backend and seed."""
        if isinstance(model, str):
            check_model_path(model)
        other = copy.copy(self)
        other._model, other._tokenizer, other._engine, other._vllm_model_identity = model, self.tokenizer, None, None
        return other

    def identity(self) -> dict:
        """What decides the samples' law, for caches (vLLM: its checkpoint, fingerprinted like the trainers' π_ref)."""
        from .identity import model_identity, tokenizer_identity

        if self.backend == "vllm" and self._vllm_model_identity is None:
            loaded, _ = load_causal_lm(self._model, self.model_init_kwargs, self.tokenizer)
            self._vllm_model_identity = model_identity(loaded)
        return {
            "model": self._vllm_model_identity if self.backend == "vllm" else model_identity(self.model),
            "tokenizer": tokenizer_identity(self.tokenizer),
            "generation_settings": self.settings.to_dict(),
            "backend": self.backend,
        }

    def prompt_ids(self, prompts: list) -> list[list[int]]:
        return tokenize_prompts(self.tokenizer, prompts, self.settings.chat_template_kwargs)

    def _batches(self, prompts: list, n: int, seed: int | None):
        """Yield `(first_row, completion_ids)` per `generate` batch, rows grouped by prompt."""
        if n < 1:
            raise ValueError(f"The number of samples per prompt must be at least 1, got {n}.")
        check_prompts(prompts)  # before the model loads
        prompt_ids = self.prompt_ids(prompts)
        if self.backend == "transformers":
            lengths = [len(ids) for ids in prompt_ids]
            check_context_window(lengths, self.model.config, self.settings.max_completion_length, "prompts")
        repeated = [ids for ids in prompt_ids for _ in range(n)]
        seed = self.seed if seed is None else seed
        if seed is not None:
            torch.manual_seed(seed)
        if self.backend == "vllm":
            if self._engine is None:  # an offline engine built from the model path, kept for every call
                try:
                    from vllm import LLM
                except ImportError as error:
                    raise ImportError(
                        "The vLLM backend needs vLLM: `pip install 'trl-bon[vllm]'`, or use `backend='transformers'`."
                    ) from error
                self._engine = LLM(model=self._model, **(self.vllm_kwargs or {}))
            yield 0, _generate_vllm(self._engine, repeated, self.settings, seed)
            return
        with tqdm(total=len(repeated), desc=f"sampling {n}/prompt", disable=not self.progress, unit="sample") as bar:
            batches = _generate_transformers(self.model, self.tokenizer, repeated, self.settings, self.batch_size)
            for first, batch in batches:
                yield first, batch
                bar.update(len(batch))

    def _samples(self, prompts: list, n: int, completion_ids: list[list[int]], first: int = 0) -> Samples:
        """`completion_ids` as samples, row `first + j` of the sampling order being sample `j`."""
        from trl import is_conversational

        prompt_index = [(first + j) // n for j in range(len(completion_ids))]
        texts = self.tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
        if is_conversational({"prompt": prompts[0]}):
            texts = [[{"role": "assistant", "content": text}] for text in texts]
        return Samples(prompt_index, [prompts[i] for i in prompt_index], texts, completion_ids)

    def sample(self, prompts: Sequence, n: int, seed: int | None = None) -> Samples:
        """`n` completions per prompt, grouped by prompt; `seed` overrides the sampler's seed for this call."""
        prompts = list(prompts)
        completion_ids = [ids for _, batch in self._batches(prompts, n, seed) for ids in batch]
        return self._samples(prompts, n, completion_ids)

    def score(self, prompts, n: int, reward, seed: int | None = None) -> ScoredSamples:
        """Sample `n` completions per prompt (a list, or a dataset whose other columns reach reward callables) and
        score each `generate` batch as it is drawn with `reward` (reward functions or a `RewardScorer`)."""
        from .rewards import as_scorer

        prompts, columns = prompts_and_columns(prompts)
        scorer = as_scorer(reward)
        completion_ids, rewards = [], []
        for first, batch in self._batches(prompts, n, seed):
            rewards.append(score_samples(scorer, self._samples(prompts, n, batch, first), columns))
            completion_ids += batch
        return ScoredSamples(self._samples(prompts, n, completion_ids), torch.cat(rewards).view(len(prompts), n))

    def logps(self, prompt_ids: list[list[int]], completion_ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probs of completions at the sampling temperature ([`completion_logps`])."""
        temperature, pad_token_id = self.settings.temperature, self.tokenizer.pad_token_id
        return completion_logps(self.model, prompt_ids, completion_ids, temperature, pad_token_id, self.batch_size)


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


def select_best(rewards: torch.Tensor, tie_break: str = "random", generator: torch.Generator | None = None):
    """Index of the best candidate per row of `(P, N)` rewards. `tie_break="random"` picks uniformly among the maximal
    ones (the law of Best-of-N sampling, BOND eq. 4); `"first"` takes the first (the same law, but not per draw)."""
    if tie_break == "first":
        return rewards.argmax(dim=1)
    if tie_break != "random":
        raise ValueError(f"Unknown tie_break {tie_break!r}; use 'random' or 'first'.")
    is_max = rewards == rewards.max(dim=1, keepdim=True).values
    noise = torch.rand(rewards.shape, generator=generator)
    return torch.where(is_max, noise, -1.0).argmax(dim=1)


def best_of_n(sampler, prompts, reward, n: int, *, tie_break: str = "random") -> BestOfNOutput:
    """Best-of-N sampling, the inference-time target every trl-bon trainer distils: draw `n` completions per prompt,
    score them, keep the best (docs/bon_sft_trainer.md#best-of-n-sampling-the-inference-time-target).

    `sampler` is a [`Sampler`] or a model (path) wrapped in `Sampler(model)`; `prompts` a list or a dataset whose other
    columns reach reward callables; `reward` TRL-style reward functions or a [`~trl_bon.rewards.RewardScorer`];
    `tie_break` `"random"` (the law of Best-of-N sampling, seeded by the sampler's `seed`) or `"first"`.
    """
    from .rewards import as_scorer

    if n < 1:  # before `as_scorer` loads any reward model
        raise ValueError(f"Best-of-N needs n >= 1 candidates per prompt, got n={n}.")
    if tie_break not in ("random", "first"):
        raise ValueError(f"Unknown tie_break {tie_break!r}; use 'random' or 'first'.")
    sampler = sampler if isinstance(sampler, Sampler) else Sampler(sampler)
    scorer = as_scorer(reward)
    scored = sampler.score(prompts, n, scorer)
    samples, rewards = scored.samples, scored.rewards
    num_prompts = rewards.size(0)
    chosen = select_best(rewards, tie_break, torch.Generator().manual_seed(sampler.seed or 0))
    flat = [i * n + int(c) for i, c in enumerate(chosen)]
    return BestOfNOutput(
        prompts=[samples.prompts[i * n] for i in range(num_prompts)],
        completions=[samples.completions[j] for j in flat],
        completion_ids=[samples.completion_ids[j] for j in flat],
        rewards=rewards.gather(1, chosen.unsqueeze(1)).squeeze(1),
        chosen_index=chosen,
        candidates=[samples.completions[i * n : (i + 1) * n] for i in range(num_prompts)],
        candidate_ids=[samples.completion_ids[i * n : (i + 1) * n] for i in range(num_prompts)],
        candidate_rewards=rewards,
        reward_signature=scorer.signature(),
    )
