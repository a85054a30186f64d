"""vBoN's reference-reward cache: M scored π_ref completions per prompt, computed once, keyed by a stable prompt id.

The reference policy is frozen, so the reward distribution of its completions for a prompt, which gives vBoN's CDF
F̂ (Amini et al., arXiv 2407.06057), is computed once, offline, and joined onto the training dataset as a list
column (`ref_rewards` by default) that reaches `VBoNTrainer` with each prompt.

**Prompt ids.** A prompt is keyed by `prompt_id(prompt)`: the SHA-256 of its canonical JSON (sorted keys, no
whitespace, UTF-8), so plain-text and conversational prompts both work, the key does not depend on a tokenizer, and
it is never a decoded string (the official vBoN code had to round-trip prompts through the tokenizer to match its
keys). A dataset column of your own ids (e.g. a dataset index) can be used instead (`prompt_id_column`).

**Layout** of `output_dir`:

- `metadata.json`: what the rewards depend on, keyed by content (see `trl_bon.identity`): the model (config hash and
  weights fingerprint, not its path, which is kept only for information), the tokenizer (vocabulary and chat
  template), every generation setting (including
  `generation_kwargs` and the chat-template arguments) and the backend, the reward (names, weights, and each
  function's identity: weights fingerprint and tokenizer of a reward model, hash of a callable's source, closure and
  the globals it reads), M, the seed, the
  prompt-id scheme and the format version. The CDF is only valid for all of these, so resuming, extending or joining
  a cache whose entries differ is refused with the list of differences.
- `shards/shard-00000.jsonl`, …: one JSON line per prompt, `{"prompt_id": str, "ref_rewards": [M floats]}`, the
  weighted scalar rewards in sampling order. Shards hold about `SHARD_SAMPLES` completions each (at least one
  prompt) and are written atomically as they finish. Loading checks every line (finite numbers, M of them) and names
  the file of any damaged shard or `metadata.json`.

**Resuming.** Re-running the build with the same arguments skips every prompt already in a finished shard and
samples only the rest. Shard `k` is sampled with its own seed derived from `(seed, k)`, so an interrupted and resumed
build produces exactly the shards an uninterrupted one would. Extending a cache to new prompts works the same way.
"""

import hashlib
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .provenance import read_record, refuse_if_stale, write_record
from .rewards import as_scorer
from .sampling import GenerationSettings, Sampler


FORMAT_VERSION = 3  # 3: keyed by the tokenizer too, and by the globals a reward callable reads
PROMPT_ID_SCHEME = "sha256(canonical-json(prompt))"
CACHE_COMMAND = "trl-bon cache-ref-rewards"
#: Completions per shard (the unit of saving and resuming): a shard holds max(1, SHARD_SAMPLES // M) prompts.
SHARD_SAMPLES = 4096
# Metadata entries that must match for a cache to be resumed or reused.
_IDENTITY_KEYS = (
    "format_version",
    "model",
    "tokenizer",
    "generation_settings",
    "backend",
    "reward",
    "num_samples",
    "seed",
    "prompt_id",
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
        """Raise if the cache was built with other generation settings, another reward or another model, listing
        the differences.

        The CDF F̂ is the reward distribution of π_ref's completions *under these sampling settings and this
        reward*: with another temperature, completion length, reward weight or reference model it is simply a
        different distribution. `model_identity` is `trl_bon.identity.model_identity(π_ref)`, `tokenizer_identity`
        `trl_bon.identity.tokenizer_identity(tokenizer)`: another chat template gives other prompt tokens.
        """
        expected = {
            key: value
            for key, value in (
                ("generation_settings", settings.to_dict() if settings is not None else None),
                ("reward", reward_signature),
                ("model", model_identity),
                ("tokenizer", tokenizer_identity),
            )
            if value is not None
        }
        refuse_if_stale(
            self.metadata,
            expected,
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


def _check_row(row, path: Path, line_number: int, num_samples: int | None) -> None:
    where = f"{path}, line {line_number}"
    if not isinstance(row, dict) or not isinstance(row.get("prompt_id"), str) or "ref_rewards" not in row:
        raise ValueError(f"{where} is not a cache row (`{{'prompt_id': str, 'ref_rewards': [...]}}`). {_DAMAGED_FIX}")
    values = row["ref_rewards"]
    if not isinstance(values, list) or not values:
        raise ValueError(
            f"{where}: `ref_rewards` must be a non-empty list of numbers, got {values!r:.60}. {_DAMAGED_FIX}"
        )
    bad = next(
        (v for v in values if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v)), None
    )
    if bad is not None or (num_samples is not None and len(values) != num_samples):
        problem = f"holds {bad!r}" if bad is not None else f"holds {len(values)} rewards, not M = {num_samples}"
        raise ValueError(f"{where}: `ref_rewards` {problem}; every value must be a finite number. {_DAMAGED_FIX}")


def _read_shards(output_dir: Path, num_samples: int | None) -> tuple[dict[str, list[float]], list[int]]:
    rewards, indices = {}, []
    shard_dir = output_dir / "shards"
    if not shard_dir.is_dir():
        return rewards, indices
    for path in sorted(shard_dir.glob("shard-*.jsonl")):
        indices.append(int(path.stem.split("-")[1]))
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as error:
            raise ValueError(f"The cache shard {path} is damaged ({error}). {_DAMAGED_FIX}") from error
        for number, line in enumerate(lines, start=1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"The cache shard {path} is damaged at line {number} ({error}). {_DAMAGED_FIX}"
                ) from error
            _check_row(row, path, number, num_samples)
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
    if "num_samples" not in metadata:
        raise ValueError(f"The cache metadata {meta_path} has no `num_samples`: it is damaged. {_DAMAGED_FIX}")
    rewards, _ = _read_shards(path, metadata["num_samples"])
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


def check_reference_reward_column(dataset, column: str = "ref_rewards", name: str = "train_dataset") -> None:
    """Raise a `ValueError` naming the first row of `dataset` (a `Dataset`) whose `column` is not a non-empty list of
    finite numbers: vBoN's CDF F̂ of that prompt would be empty or NaN, and training would fail at its first step."""
    for row, values in enumerate(dataset[column]):
        try:
            finite = values is not None and len(values) > 0 and all(math.isfinite(float(v)) for v in values)
        except (TypeError, ValueError):  # a None or a string among the values
            finite = False
        if not finite:
            raise ValueError(
                f"Row {row} of `{name}` has {column!r} = {values!r:.60}: every prompt needs its M reference rewards "
                f"as a non-empty list of finite numbers. Rebuild them with `{CACHE_COMMAND}` and join them with "
                "`trl_bon.ref_cache.add_reference_rewards` (or drop the column to have the trainer join the cache)."
            )


def build_reference_reward_cache(
    sampler, dataset, reward, num_samples: int, output_dir, *, prompt_id_column: str | None = None
) -> ReferenceRewardCache:
    """Sample `num_samples` (M) completions per distinct prompt from the reference model, score them, and cache the
    rewards under `output_dir`, resumably.

    Args:
        sampler ([`~trl_bon.sampling.Sampler`], `str` or model):
            The reference policy π_ref (the model you will start training from) with the training's generation
            settings (`training_args.generation_settings`), batch size, backend and base seed. A
            path or instance is wrapped in `Sampler(model)`.
        dataset ([`~datasets.Dataset`]):
            Dataset with a `prompt` column (standard or conversational prompts). Repeated prompts are sampled once.
            Its other columns are passed to reward callables, as in TRL's trainers.
        reward:
            TRL-style reward functions (model ids/paths, sequence classifiers, callables) — the same as the
            trainer's — or a [`~trl_bon.rewards.RewardScorer`] (for weights and tokenizers).
        num_samples (`int`):
            M, reference completions per prompt (the vBoN paper uses ~300).
        output_dir (`str` or `os.PathLike`):
            Cache directory (created). Re-running with the same arguments resumes; other arguments are refused.
        prompt_id_column (`str`, *optional*):
            Column of user ids to key prompts by; `None` keys by `prompt_id(prompt)` (hash of the canonical JSON).

    Shard k is sampled with a seed derived from `(sampler.seed, k)`, so a resumed build equals an uninterrupted one.

    Returns:
        [`ReferenceRewardCache`]: the complete cache (also loadable later with [`load_reference_reward_cache`]).

    Example:

    ```python
    >>> from trl_bon.ref_cache import build_reference_reward_cache
    >>> from trl_bon.sampling import Sampler
    >>> from trl_bon.toy import build_one_token_task
    >>> task = build_one_token_task("/tmp/trl_bon_doc_task")
    >>> sampler = Sampler(task.model_path, progress=False)
    >>> cache = build_reference_reward_cache(sampler, task.dataset(1), task.reward_func, 100, "/tmp/trl_bon_doc_cache")
    >>> len(cache.rewards[next(iter(cache.rewards))])
    100
    ```
    """
    if num_samples < 1:
        raise ValueError(f"`num_samples` (M) must be at least 1, got {num_samples}.")
    sampler = sampler if isinstance(sampler, Sampler) else Sampler(sampler)
    scorer = as_scorer(reward)
    output_dir = Path(output_dir)
    ids = _row_ids(dataset, "prompt", prompt_id_column)  # fails on a missing column before any model loads
    seed = sampler.seed or 0
    identity = sampler.identity()
    metadata = {
        "format_version": FORMAT_VERSION,
        "model": identity["model"],
        "model_name": sampler.model_name,
        "tokenizer": identity["tokenizer"],
        "generation_settings": identity["generation_settings"],
        "backend": identity["backend"],
        "reward": scorer.signature(),
        "num_samples": num_samples,
        "seed": seed,
        "prompt_id": PROMPT_ID_SCHEME if prompt_id_column is None else f"column:{prompt_id_column}",
    }
    from . import __version__

    meta_path = output_dir / "metadata.json"
    if meta_path.is_file():
        refuse_if_stale(
            read_record(meta_path, "cache metadata", _DAMAGED_FIX),
            metadata,
            subject=f"{output_dir} already holds a reference-reward cache (not resumable nor extendable) built with",
            escape="Use a new `output_dir`.",
            saved_as="cache has",
            current_as="expected",
            keys=_IDENTITY_KEYS,
        )
    else:
        output_dir.mkdir(parents=True, exist_ok=True)
        write_record(meta_path, {**metadata, "trl_bon_version": __version__})

    # Distinct prompts in order of first appearance, minus those already cached.
    first_row: dict[str, int] = {}
    for row, pid in enumerate(ids):
        first_row.setdefault(pid, row)
    done, shard_indices = _read_shards(output_dir, num_samples)
    todo = [pid for pid in first_row if pid not in done]
    prompts_per_shard = max(1, SHARD_SAMPLES // num_samples)
    shards = [todo[i : i + prompts_per_shard] for i in range(0, len(todo), prompts_per_shard)]
    next_index = max(shard_indices, default=-1) + 1
    (output_dir / "shards").mkdir(exist_ok=True)
    bar = tqdm(
        total=len(shards), desc=f"reference rewards (M={num_samples})", unit="shard", disable=not sampler.progress
    )
    for offset, shard in enumerate(shards):
        index = next_index + offset
        rows = dataset.select([first_row[pid] for pid in shard])
        rewards = sampler.score(rows, num_samples, scorer, seed=_shard_seed(seed, index)).rewards.tolist()
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
