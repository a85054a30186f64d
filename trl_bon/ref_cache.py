"""vBoN's reference-reward cache: M scored π_ref completions per prompt, computed once, keyed by a stable prompt id.

The reference policy is frozen, so the reward distribution of its completions for a prompt, which gives vBoN's CDF
F̂ (algorithms.md §3.2), is computed once, offline, and joined onto the training dataset as a list column
(`ref_rewards` by default) that reaches `VBoNTrainer` with each prompt.

**Prompt ids.** A prompt is keyed by `prompt_id(prompt)`: the SHA-256 of its canonical JSON (sorted keys, no
whitespace, UTF-8), so plain-text and conversational prompts both work, the key does not depend on a tokenizer, and
it is never a decoded string (the official vBoN code had to round-trip prompts through the tokenizer to match its
keys). A dataset column of your own ids (e.g. a dataset index) can be used instead (`prompt_id_column`).

**Layout** of `output_dir`:

- `metadata.json`: what the rewards hold for: the model (name/path, revision), the generation settings, the reward
  signature (function names and weights), M, the seed, the prompt-id scheme and the format version. The CDF is only
  valid for these settings, so trainers refuse a cache whose settings differ from theirs.
- `shards/shard-00000.jsonl`, …: one JSON line per prompt, `{"prompt_id": str, "ref_rewards": [M floats]}`, the
  weighted scalar rewards in sampling order. Shards are written atomically as they finish.

**Resuming.** Re-running the build with the same arguments skips every prompt already in a finished shard and
samples only the rest. Shard `k` is sampled with its own seed derived from `(seed, k)`, so an interrupted and resumed
build produces exactly the shards an uninterrupted one would. Extending a cache to new prompts works the same way.
"""

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .rewards import RewardScorer
from .sampling import GenerationSettings, load_causal_lm, sample_completions


FORMAT_VERSION = 1
PROMPT_ID_SCHEME = "sha256(canonical-json(prompt))"
CACHE_COMMAND = "trl-bon cache-ref-rewards"
# Metadata entries that must match for a cache to be resumed or reused.
_IDENTITY_KEYS = (
    "format_version",
    "model",
    "revision",
    "generation_settings",
    "reward",
    "num_samples",
    "seed",
    "prompt_id",
    "use_vllm",
)


def prompt_id(prompt) -> str:
    """Stable id of a prompt (a string or a list of chat messages): SHA-256 of its canonical JSON, hex."""
    canonical = json.dumps(prompt, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _row_ids(dataset, prompt_column: str, prompt_id_column: str | None) -> list[str]:
    if prompt_id_column is not None:
        if prompt_id_column not in dataset.column_names:
            raise ValueError(
                f"The dataset has no prompt-id column {prompt_id_column!r} (columns: {dataset.column_names}); add it "
                "or set `prompt_id_column=None` to key prompts by the hash of their canonical JSON."
            )
        return [str(i) for i in dataset[prompt_id_column]]
    if prompt_column not in dataset.column_names:
        raise ValueError(f"The dataset has no prompt column {prompt_column!r} (columns: {dataset.column_names}).")
    return [prompt_id(p) for p in dataset[prompt_column]]


def _shard_seed(seed: int, shard_index: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{shard_index}".encode()).digest()[:4], "little") & 0x7FFFFFFF


def _differences(expected: dict, found: dict, keys: Sequence[str], prefix: str = "") -> list[str]:
    """Human-readable differences between two (nested) dicts on `keys`."""
    diffs = []
    for key in keys:
        a, b = expected.get(key), found.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += _differences(a, b, sorted(set(a) | set(b)), prefix=f"{prefix}{key}.")
        elif isinstance(a, float) or isinstance(b, float):
            if a is None or b is None or abs(a - b) > 1e-9 * max(1.0, abs(a)):
                diffs.append(f"{prefix}{key}: cache has {b!r}, expected {a!r}")
        elif (
            isinstance(a, list)
            and isinstance(b, list)
            and len(a) == len(b)
            and all(isinstance(x, float | int) for x in a + b)
        ):
            if any(abs(x - y) > 1e-9 * max(1.0, abs(x)) for x, y in zip(a, b, strict=True)):
                diffs.append(f"{prefix}{key}: cache has {b!r}, expected {a!r}")
        elif a != b:
            diffs.append(f"{prefix}{key}: cache has {b!r}, expected {a!r}")
    return diffs


@dataclass
class ReferenceRewardCache:
    """A loaded reference-reward cache: `rewards[prompt_id]` is the list of M reference rewards of that prompt."""

    path: str
    metadata: dict
    rewards: dict[str, list[float]] = field(repr=False)

    def __len__(self) -> int:
        return len(self.rewards)

    def check_compatible(
        self, settings: GenerationSettings | None = None, reward_signature: dict | None = None
    ) -> None:
        """Raise if the cache was built with other generation settings or another reward, listing the differences.

        The CDF F̂ is the reward distribution of π_ref's completions *under these sampling settings and this
        reward*: with another temperature, completion length or reward weight it is simply a different
        distribution (algorithms.md §3.6, pitfall 3).
        """
        expected, keys = {}, []
        if settings is not None:
            expected["generation_settings"], keys = settings.to_dict(), ["generation_settings"]
        if reward_signature is not None:
            expected["reward"] = reward_signature
            keys.append("reward")
        diffs = _differences(expected, self.metadata, keys)
        if diffs:
            raise ValueError(
                f"The reference-reward cache at {self.path} was built with different settings than this run:\n  - "
                + "\n  - ".join(diffs)
                + f"\nRebuild it with matching settings (`{CACHE_COMMAND}` or `build_reference_reward_cache`) into a "
                "new directory, or change the run's settings to the cache's."
            )

    def to_column(self, dataset, column: str = "ref_rewards", prompt_column: str = "prompt", prompt_id_column=None):
        """Alias of [`add_reference_rewards`] with this cache."""
        return add_reference_rewards(dataset, self, column, prompt_column, prompt_id_column)


def _read_shards(output_dir: Path) -> tuple[dict[str, list[float]], list[int]]:
    rewards, indices = {}, []
    shard_dir = output_dir / "shards"
    if not shard_dir.is_dir():
        return rewards, indices
    for path in sorted(shard_dir.glob("shard-*.jsonl")):
        indices.append(int(path.stem.split("-")[1]))
        with path.open(encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                rewards[row["prompt_id"]] = row["ref_rewards"]
    return rewards, indices


def load_reference_reward_cache(path: str | os.PathLike) -> ReferenceRewardCache:
    """Load a cache written by [`build_reference_reward_cache`] (every finished shard)."""
    path = Path(path)
    meta_path = path / "metadata.json"
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"No reference-reward cache at {path} (missing metadata.json). Build one with `{CACHE_COMMAND}` or "
            "`trl_bon.build_reference_reward_cache`."
        )
    metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    rewards, _ = _read_shards(path)
    return ReferenceRewardCache(path=str(path), metadata=metadata, rewards=rewards)


def add_reference_rewards(
    dataset,
    cache: ReferenceRewardCache | str | os.PathLike,
    column: str = "ref_rewards",
    prompt_column: str = "prompt",
    prompt_id_column: str | None = None,
):
    """Return `dataset` (a `datasets.Dataset`) with the cached reference rewards of each row's prompt as `column`.

    Raises:
        ValueError: if some prompts have no cached rewards; the message says how many and how to build them.
    """
    if not isinstance(cache, ReferenceRewardCache):
        cache = load_reference_reward_cache(cache)
    if prompt_id_column is None and cache.metadata.get("prompt_id") != PROMPT_ID_SCHEME:
        prompt_id_column = cache.metadata["prompt_id"].removeprefix("column:")
    ids = _row_ids(dataset, prompt_column, prompt_id_column)
    missing = sorted({i for i in ids if i not in cache.rewards})
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(set(ids))} distinct prompts have no cached reference rewards in {cache.path} "
            f"(first missing id: {missing[0]}). Build them with `{CACHE_COMMAND}` (or "
            "`trl_bon.build_reference_reward_cache`) on this dataset with the cache's settings; finished prompts "
            "are skipped, so only the missing ones are sampled."
        )
    if column in dataset.column_names:
        dataset = dataset.remove_columns(column)
    return dataset.add_column(column, [cache.rewards[i] for i in ids])


def build_reference_reward_cache(
    model,
    dataset,
    reward_funcs,
    num_samples: int,
    output_dir: str | os.PathLike,
    *,
    settings: GenerationSettings | None = None,
    prompt_column: str = "prompt",
    prompt_id_column: str | None = None,
    reward_processing_classes=None,
    reward_weights: Sequence[float] | None = None,
    batch_size: int = 64,
    prompts_per_shard: int = 64,
    seed: int = 0,
    use_vllm: bool = False,
    model_init_kwargs: dict | None = None,
    tokenizer=None,
    chat_template_kwargs: dict | None = None,
    progress: bool = True,
) -> ReferenceRewardCache:
    """Sample `num_samples` (M) completions per distinct prompt from the reference model, score them, and cache the
    rewards under `output_dir`, resumably.

    Args:
        model (`str`, [`~transformers.PreTrainedModel`] or [`~peft.PeftModel`]):
            The reference policy π_ref (the model you will start training from), as a path/id or an instance; LoRA
            and 8/4-bit work (pass `quantization_config` in `model_init_kwargs`).
        dataset ([`~datasets.Dataset`]):
            Dataset with a prompt column (standard or conversational prompts). Repeated prompts are sampled once.
            Its other columns are passed to reward callables, as in TRL's trainers.
        reward_funcs:
            TRL-style reward functions (model ids/paths, sequence classifiers, callables) — the same as the trainer's.
        num_samples (`int`):
            M, reference completions per prompt (the vBoN paper uses ~300).
        output_dir (`str` or `os.PathLike`):
            Cache directory (created). Re-running with the same arguments resumes.
        settings ([`~trl_bon.sampling.GenerationSettings`], *optional*):
            Sampling settings; must be those of training (`GenerationSettings.from_trainer_args(training_args)`).
        prompt_column (`str`, *optional*, defaults to `"prompt"`):
            Column holding the prompts.
        prompt_id_column (`str`, *optional*):
            Column of user ids to key prompts by; `None` keys by `prompt_id(prompt)` (hash of the canonical JSON).
        reward_processing_classes, reward_weights:
            As in TRL's trainers.
        batch_size (`int`, *optional*, defaults to `64`):
            Sequences per `generate` call.
        prompts_per_shard (`int`, *optional*, defaults to `64`):
            Prompts per shard: the unit of saving and resuming.
        seed (`int`, *optional*, defaults to `0`):
            Base seed; shard k is sampled with a seed derived from `(seed, k)`.
        use_vllm (`bool`, *optional*, defaults to `False`):
            Sample with an offline vLLM engine (needs a model path; one engine per shard, so use large shards).
        model_init_kwargs (`dict`, *optional*):
            Keyword arguments for loading `model` when it is a path (`revision` is recorded in the metadata).
        tokenizer (*optional*):
            Tokenizer of `model`; loaded from the model when `None`.
        chat_template_kwargs (`dict`, *optional*):
            Extra arguments for the chat template of conversational prompts.
        progress (`bool`, *optional*, defaults to `True`):
            Show a progress bar over shards.

    Returns:
        [`ReferenceRewardCache`]: the complete cache (also loadable later with [`load_reference_reward_cache`]).

    Example:

    ```python
    >>> from trl_bon.ref_cache import build_reference_reward_cache
    >>> from trl_bon.toy import build_one_token_task
    >>> task = build_one_token_task("/tmp/trl_bon_doc_task")
    >>> cache = build_reference_reward_cache(
    ...     task.model_path, task.dataset(1), task.reward_func, 100, "/tmp/trl_bon_doc_cache", progress=False
    ... )
    >>> len(cache.rewards[next(iter(cache.rewards))])
    100
    ```
    """
    if num_samples < 1:
        raise ValueError(f"`num_samples` (M) must be at least 1, got {num_samples}.")
    if prompts_per_shard < 1:
        raise ValueError(f"`prompts_per_shard` must be at least 1, got {prompts_per_shard}.")
    settings = settings or GenerationSettings()
    output_dir = Path(output_dir)
    model_init_kwargs = dict(model_init_kwargs or {})
    scorer = (
        reward_funcs
        if isinstance(reward_funcs, RewardScorer)
        else RewardScorer(
            reward_funcs, reward_processing_classes=reward_processing_classes, reward_weights=reward_weights
        )
    )
    if isinstance(model, str):
        model_name = model
    else:
        from ._trl_compat import get_config_model_id

        model_name = get_config_model_id(model.config)
    metadata = {
        "format_version": FORMAT_VERSION,
        "model": model_name,
        "revision": model_init_kwargs.get("revision"),
        "generation_settings": settings.to_dict(),
        "reward": scorer.signature(),
        "num_samples": num_samples,
        "seed": seed,
        "prompt_id": PROMPT_ID_SCHEME if prompt_id_column is None else f"column:{prompt_id_column}",
        "use_vllm": use_vllm,
    }
    from . import __version__

    meta_path = output_dir / "metadata.json"
    if meta_path.is_file():
        existing = json.loads(meta_path.read_text(encoding="utf-8"))
        diffs = _differences(metadata, existing, _IDENTITY_KEYS)
        if diffs:
            raise ValueError(
                f"{output_dir} already holds a reference-reward cache built with other settings, so it cannot be "
                "resumed or extended:\n  - " + "\n  - ".join(diffs) + "\nUse a new `output_dir`."
            )
    else:
        output_dir.mkdir(parents=True, exist_ok=True)
        meta_path.write_text(json.dumps({**metadata, "trl_bon_version": __version__}, indent=2), encoding="utf-8")

    # Distinct prompts in order of first appearance, minus those already cached.
    ids = _row_ids(dataset, prompt_column, prompt_id_column)
    first_row: dict[str, int] = {}
    for row, pid in enumerate(ids):
        first_row.setdefault(pid, row)
    done, shard_indices = _read_shards(output_dir)
    todo = [pid for pid in first_row if pid not in done]
    shards = [todo[i : i + prompts_per_shard] for i in range(0, len(todo), prompts_per_shard)]
    next_index = max(shard_indices, default=-1) + 1
    if shards and not use_vllm:
        model, tokenizer = load_causal_lm(model, model_init_kwargs, tokenizer)
    extra_columns = [c for c in dataset.column_names if c not in (prompt_column,)]
    (output_dir / "shards").mkdir(exist_ok=True)
    bar = tqdm(total=len(shards), desc=f"reference rewards (M={num_samples})", unit="shard", disable=not progress)
    for offset, shard in enumerate(shards):
        index = next_index + offset
        rows = dataset.select([first_row[pid] for pid in shard])
        samples = sample_completions(
            model,
            rows[prompt_column],
            num_samples,
            settings,
            tokenizer=tokenizer,
            batch_size=batch_size,
            seed=_shard_seed(seed, index),
            use_vllm=use_vllm,
            model_init_kwargs=model_init_kwargs,
            chat_template_kwargs=chat_template_kwargs,
            progress=False,
        )
        columns = {c: [rows[c][i] for i in samples.prompt_index] for c in extra_columns}
        per_func = scorer(samples.prompts, samples.completions, samples.completion_ids, **columns)
        scorer.check_finite(per_func)
        rewards = scorer.weighted(per_func).view(len(shard), num_samples).tolist()
        lines = [json.dumps({"prompt_id": pid, "ref_rewards": r}) for pid, r in zip(shard, rewards, strict=True)]
        path = output_dir / "shards" / f"shard-{index:05d}.jsonl"
        tmp = path.with_suffix(".tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, path)  # atomic: a shard is either complete or absent
        bar.update(1)
    bar.close()
    return load_reference_reward_cache(output_dir)


def reference_reward_tensor(values: Sequence[Sequence[float]], device=None) -> torch.Tensor:
    """Stack per-sample reference-reward lists of possibly different lengths into a NaN-padded `(B, M_max)` tensor."""
    width = max(len(v) for v in values)
    out = torch.full((len(values), width), torch.nan, dtype=torch.float32)
    for i, v in enumerate(values):
        out[i, : len(v)] = torch.as_tensor(v, dtype=torch.float32)
    return out if device is None else out.to(device)
