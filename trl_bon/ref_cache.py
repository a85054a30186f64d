"""vBoN's reference-reward cache: M scored π_ref completions per prompt, computed once, resumably, keyed by a stable
prompt id (layout, key and resuming: "The reference-reward cache" in docs/vbon_trainer.md)."""

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence
from tqdm.auto import tqdm

from . import __version__
from .provenance import read_record, refuse_if_stale, write_atomically, write_record
from .rewards import as_scorer
from .sampling import GenerationSettings, Sampler, _row_seed


FORMAT_VERSION = 3  # raised whenever what keys the rewards changes, so that an older cache is refused
PROMPT_ID_SCHEME = "sha256(canonical-json(prompt))"
CACHE_COMMAND = "trl-bon cache-ref-rewards"
#: Completions per shard (the unit of saving and resuming): a shard holds max(1, SHARD_SAMPLES // M) prompts.
SHARD_SAMPLES = 4096


def prompt_id(prompt) -> str:
    """Stable id of a prompt (a string or a list of chat messages): SHA-256 of its canonical JSON, hex."""
    canonical = json.dumps(prompt, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _row_ids(dataset, prompt_column: str, prompt_id_column: str | None) -> list[str]:
    column = prompt_column if prompt_id_column is None else prompt_id_column
    if column not in dataset.column_names:
        raise ValueError(
            f"The dataset has no column {column!r} to key its prompts by (columns: {dataset.column_names}): add it, "
            "or set `prompt_id_column` (`None` keys prompts by the hash of their canonical JSON)."
        )
    if prompt_id_column is None:
        return [prompt_id(p) for p in dataset[prompt_column]]
    return [str(i) for i in dataset[prompt_id_column]]


@dataclass
class ReferenceRewardCache:
    """A loaded reference-reward cache: `rewards[prompt_id]` is the list of M reference rewards of that prompt."""

    path: str
    metadata: dict
    rewards: dict[str, list[float]] = field(repr=False)

    def __len__(self) -> int:
        return len(self.rewards)

    def check_compatible(
        self,
        settings: GenerationSettings | None = None,
        reward_signature: dict | None = None,
        model_identity: dict | None = None,
        tokenizer_identity: dict | None = None,
    ) -> None:
        """Raise a `StaleResultError` listing the differences from those given: F̂ would be another distribution."""
        expected = {
            "generation_settings": settings.to_dict() if settings is not None else None,
            "reward": reward_signature,
            "model": model_identity,
            "tokenizer": tokenizer_identity,
        }
        refuse_if_stale(
            self.metadata,
            {key: value for key, value in expected.items() if value is not None},
            subject=f"The reference-reward cache at {self.path} was built with",
            escape=f"Rebuild it with matching settings (`{CACHE_COMMAND}` or `build_reference_reward_cache`) into a "
            "new directory, or change the run's settings to the cache's.",
            saved_as="cache has",
            current_as="expected",
        )


_DAMAGED_FIX = (
    "Delete that file: a deleted shard is re-sampled by re-running the build with the same arguments; without "
    "metadata.json the cache cannot be trusted, so rebuild it into a new directory."
)


def _rewards_problem(values, num_samples: int | None = None) -> str | None:
    if hasattr(values, "tolist"):  # a row of a numpy- or torch-formatted dataset
        values = values.tolist()
    if not isinstance(values, list) or not values:
        return f"must be a non-empty list of numbers, got {values!r:.60}"
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v)]
    if bad:
        return f"holds {bad[0]!r}; every value must be a finite number"
    if num_samples is not None and len(values) != num_samples:
        return f"holds {len(values)} rewards, not M = {num_samples}"
    return None


def _read_shards(output_dir: Path, num_samples: int) -> tuple[dict[str, list[float]], list[int]]:
    rewards, indices = {}, []
    for path in sorted((output_dir / "shards").glob("shard-*.jsonl")):
        indices.append(int(path.stem.split("-")[1]))
        for number, line in enumerate(path.read_bytes().splitlines(), start=1):
            try:
                row = json.loads(line)
            except ValueError as error:  # undecodable bytes (UnicodeDecodeError) or text (JSONDecodeError)
                raise ValueError(
                    f"The cache shard {path} is damaged at line {number} ({error}). {_DAMAGED_FIX}"
                ) from error
            where = f"{path}, line {number}"
            if not isinstance(row, dict) or not isinstance(row.get("prompt_id"), str) or "ref_rewards" not in row:
                raise ValueError(
                    f"{where} is not a cache row (`{{'prompt_id': str, 'ref_rewards': [...]}}`). {_DAMAGED_FIX}"
                )
            if problem := _rewards_problem(row["ref_rewards"], num_samples):
                raise ValueError(f"{where}: `ref_rewards` {problem}. {_DAMAGED_FIX}")
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
    metadata = read_record(meta_path, "cache metadata", _DAMAGED_FIX)
    for key in ("num_samples", "prompt_id"):
        if key not in metadata:
            raise ValueError(f"The cache metadata {meta_path} has no `{key}`: it is damaged. {_DAMAGED_FIX}")
    rewards, _ = _read_shards(path, metadata["num_samples"])
    return ReferenceRewardCache(path=str(path), metadata=metadata, rewards=rewards)


def add_reference_rewards(
    dataset,
    cache: ReferenceRewardCache | str | os.PathLike,
    column: str = "ref_rewards",
    prompt_column: str = "prompt",
    prompt_id_column: str | None = None,
):
    """`dataset` (a `Dataset`) with the cached reference rewards of each row's prompt as `column`."""
    if not isinstance(cache, ReferenceRewardCache):
        cache = load_reference_reward_cache(cache)
    if prompt_id_column is None and cache.metadata.get("prompt_id") != PROMPT_ID_SCHEME:
        prompt_id_column = cache.metadata["prompt_id"].removeprefix("column:")
    ids = _row_ids(dataset, prompt_column, prompt_id_column)
    missing = sorted({i for i in ids if i not in cache.rewards})
    if missing:
        raise ValueError(
            f"{len(missing)} of {len(set(ids))} distinct prompts have no cached reference rewards in {cache.path} "
            f"(first missing id: {missing[0]}). Build them with `{CACHE_COMMAND}` (or `build_reference_reward_cache`) "
            "on this dataset with the cache's settings: only the missing prompts are sampled."
        )
    if column in dataset.column_names:
        dataset = dataset.remove_columns(column)
    return dataset.add_column(column, [cache.rewards[i] for i in ids])


def check_reference_reward_column(dataset, column: str = "ref_rewards", name: str = "train_dataset") -> None:
    """Raise a `ValueError` naming the first row whose `column` is not a non-empty list of finite numbers."""
    for row, values in enumerate(dataset[column]):
        if _rewards_problem(values):
            raise ValueError(
                f"Row {row} of `{name}` has {column!r} = {values!r:.60}: every prompt needs its M reference rewards "
                f"as a non-empty list of finite numbers. Rebuild them with `{CACHE_COMMAND}` and join them with "
                "`trl_bon.ref_cache.add_reference_rewards` (or drop the column to have the trainer join the cache)."
            )


def build_reference_reward_cache(
    sampler, dataset, reward, num_samples: int, output_dir, *, prompt_id_column: str | None = None
) -> ReferenceRewardCache:
    """Sample M = `num_samples` completions per distinct prompt of `dataset` from `sampler` (π_ref with the training's
    generation settings, batch size, backend and seed; a path or model is wrapped in a `Sampler`), score them with
    `reward` (the trainer's reward functions, or a [`~trl_bon.rewards.RewardScorer`] for weights) and cache the rewards
    under `output_dir`, resumably, keyed by `prompt_id_column` or else by [`prompt_id`] ("The reference-reward cache"
    in docs/vbon_trainer.md)."""
    if num_samples < 1:
        raise ValueError(f"`num_samples` (M) must be at least 1, got {num_samples}.")
    sampler = sampler if isinstance(sampler, Sampler) else Sampler(sampler)
    scorer = as_scorer(reward)
    output_dir = Path(output_dir)
    ids = _row_ids(dataset, "prompt", prompt_id_column)  # fails on a missing column before any model loads
    seed = sampler.seed or 0
    metadata = {  # what the rewards depend on: a saved cache must match every entry
        "format_version": FORMAT_VERSION,
        **sampler.identity(),  # model, tokenizer, generation settings, backend
        "reward": scorer.signature(),
        "num_samples": num_samples,
        "seed": seed,
        "prompt_id": PROMPT_ID_SCHEME if prompt_id_column is None else f"column:{prompt_id_column}",
    }
    meta_path = output_dir / "metadata.json"
    if meta_path.is_file():
        refuse_if_stale(
            read_record(meta_path, "cache metadata", _DAMAGED_FIX),
            metadata,
            subject=f"{output_dir} already holds a reference-reward cache (not resumable nor extendable) built with",
            escape="Use a new `output_dir`.",
            saved_as="cache has",
            current_as="expected",
        )
    else:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_record(meta_path, {**metadata, "model_name": sampler.model_name, "trl_bon_version": __version__})

    # Distinct prompts in order of first appearance, minus those already cached.
    first_row: dict[str, int] = {}
    for row, pid in enumerate(ids):
        first_row.setdefault(pid, row)
    done, shard_indices = _read_shards(output_dir, num_samples)
    todo = [pid for pid in first_row if pid not in done]
    prompts_per_shard = max(1, SHARD_SAMPLES // num_samples)
    shards = [todo[i : i + prompts_per_shard] for i in range(0, len(todo), prompts_per_shard)]
    (output_dir / "shards").mkdir(exist_ok=True)
    progress = tqdm(shards, desc=f"reference rewards (M={num_samples})", unit="shard", disable=not sampler.progress)
    for index, shard in enumerate(progress, start=max(shard_indices, default=-1) + 1):
        rows = dataset.select([first_row[pid] for pid in shard])
        rewards = sampler.score(rows, num_samples, scorer, seed=_row_seed(seed, index)).rewards.tolist()
        lines = [
            json.dumps({"prompt_id": pid, "ref_rewards": r}) + "\n" for pid, r in zip(shard, rewards, strict=True)
        ]
        write_atomically(output_dir / "shards" / f"shard-{index:05d}.jsonl", "".join(lines))  # whole or absent
    return load_reference_reward_cache(output_dir)


def reference_reward_tensor(values: Sequence[Sequence[float]], device=None) -> torch.Tensor:
    """Reference-reward lists of possibly different lengths as a NaN-padded `(B, M_max)` tensor."""
    rows = [torch.as_tensor(v, dtype=torch.float32) for v in values]
    return pad_sequence(rows, batch_first=True, padding_value=torch.nan).to(device)
