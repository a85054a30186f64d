"""Helpers of the `trl-bon` scripts, built as TRL's own scripts (`trl/scripts/rloo.py`) build them; public, for
recipes and your own scripts (e.g. `make_prompts` to build the IMDB prompts of a baseline)."""

import importlib
import os
import random
import sys
from dataclasses import dataclass, field

from trl import ScriptArguments


@dataclass
class BoNScriptArguments(ScriptArguments):
    """TRL's [`~trl.ScriptArguments`] with the reward(s) and the prompt transform, which cuts each prompt to its first
    L tokens (policy tokenizer), L uniform in [`prompt_min_tokens`, `prompt_max_tokens`] and fixed per row (seeded by
    `prompt_seed` and the row index, so every rank and rerun sees the same prompts)."""

    reward_model_name_or_path: list[str] | None = field(
        default=None,
        metadata={"help": "Reward model ids/paths (num_labels=1 sequence classifiers), summed with `reward_weights`."},
    )
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={
            "help": "Reward callables: `accuracy_reward`, `reasoning_accuracy_reward`, `think_format_reward`, or any "
            "dotted import path (e.g. `my_lib.rewards.my_reward`)."
        },
    )
    prompt_column: str | None = field(
        default=None, metadata={"help": "Build the `prompt` column from this text column (e.g. `text` for IMDB)."}
    )
    prompt_min_tokens: int | None = field(
        default=None, metadata={"help": "Cut each prompt to L tokens, L >= this (with `prompt_max_tokens`; IMDB: 2)."}
    )
    prompt_max_tokens: int | None = field(
        default=None, metadata={"help": "Cut each prompt to L tokens, L <= this, uniform in [min, max] (IMDB: 8)."}
    )
    prompt_seed: int = field(default=0, metadata={"help": "Seed of the per-row prompt lengths."})


def as_list(value) -> list:
    """A list option's value as a list: a single string (`reward_model_name_or_path: /path/to/rm`) is one item."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def import_reward_func(name: str, registry: dict | None = None):
    """A reward callable from a name in `registry` (TRL's built-in rewards) or a dotted import path."""
    registry = registry or {}
    if name in registry:
        return registry[name]
    if "." not in name:
        raise ValueError(
            f"Unknown reward function '{name}'. Use one of {sorted(registry)} or a dotted import path such as "
            "`my_lib.rewards.my_reward`."
        )
    module_path, attr = name.rsplit(".", 1)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return getattr(importlib.import_module(module_path), attr)
    except (ImportError, AttributeError) as error:
        raise ValueError(
            f"Could not import the reward function '{name}' ({error}). Pass a dotted path to a callable that "
            "is importable from the current directory or the Python path."
        ) from error


def resolve_reward_funcs(script_args) -> list:
    """Reward model paths and callables from `--reward_model_name_or_path` / `--reward_funcs` (TRL's resolution)."""
    from trl.rewards import accuracy_reward, reasoning_accuracy_reward, think_format_reward

    registry = {func.__name__: func for func in (accuracy_reward, reasoning_accuracy_reward, think_format_reward)}
    funcs = as_list(script_args.reward_model_name_or_path)
    funcs += [import_reward_func(name, registry) for name in as_list(script_args.reward_funcs)]
    if not funcs:
        raise ValueError(
            "No reward given. Pass a reward model with `--reward_model_name_or_path <id or path>` and/or a reward "
            "callable with `--reward_funcs my_module.my_reward` (or set them in the `--config` YAML)."
        )
    return funcs


def check_model_paths(model_args, script_args) -> None:
    """Every model path of a command (policy, reward models): a one-line error before any model loads."""
    from trl_bon.identity import check_model_path

    if model_args.model_name_or_path is None:
        raise ValueError("No model given. Set `--model_name_or_path <hub id or local path>` (π_ref, the SFT model).")
    check_model_path(model_args.model_name_or_path, "policy `model_name_or_path`")
    for path in as_list(script_args.reward_model_name_or_path):
        check_model_path(path, "reward model `reward_model_name_or_path`")


def model_init_kwargs(model_args, training_args) -> dict:
    """`model_init_kwargs` as TRL's scripts build them from `ModelConfig` (revision, dtype, attention, remote code)."""
    kwargs = dict(revision=model_args.model_revision, trust_remote_code=training_args.trust_remote_code)
    kwargs.update(attn_implementation=model_args.attn_implementation, dtype=model_args.dtype)
    return {**kwargs, **(training_args.model_init_kwargs or {})}


def make_prompts(dataset, tokenizer, column: str | None, min_tokens: int | None, max_tokens: int | None, seed: int):
    """Build/truncate the `prompt` column (see [`BoNScriptArguments`]); the source column is dropped."""
    if column is None and min_tokens is None and max_tokens is None:
        return dataset
    if (min_tokens is None) != (max_tokens is None):
        raise ValueError("Set both `prompt_min_tokens` and `prompt_max_tokens` (e.g. 2 and 8), or neither.")
    if min_tokens is not None and not 1 <= min_tokens <= max_tokens:
        raise ValueError(f"Need 1 <= prompt_min_tokens <= prompt_max_tokens, got {min_tokens} and {max_tokens}.")
    column = column or "prompt"
    if column not in dataset.column_names:
        raise ValueError(
            f"`prompt_column={column!r}` is not a column of the dataset (columns: {dataset.column_names}). Set "
            "`--prompt_column` to the text column to build prompts from."
        )

    def build(row, index):
        text = row[column]
        if min_tokens is not None:
            length = random.Random(seed * 1_000_003 + index).randint(min_tokens, max_tokens)
            text = tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"][:length])
        return {"prompt": text}

    dataset = dataset.map(build, with_indices=True)
    return dataset.remove_columns(column) if column != "prompt" else dataset


def load_dataset_dict(script_args, dataset_args):
    """The dataset as TRL's scripts load it: a `datasets:` mixture, else `--dataset_name`/`--dataset_config`."""
    from datasets import load_dataset
    from trl import get_dataset

    if dataset_args is not None and dataset_args.datasets:
        return get_dataset(dataset_args)
    if script_args.dataset_name:
        return load_dataset(
            script_args.dataset_name, name=script_args.dataset_config, streaming=script_args.dataset_streaming
        )
    raise ValueError(
        "No dataset given. Set `--dataset_name <hub id or local path>` (with `--dataset_config` if needed) or a "
        "`datasets:` list in the `--config` YAML."
    )


def get_split(dataset, split: str, flag: str):
    if split not in dataset:
        raise ValueError(f"The dataset has no split {split!r} (splits: {list(dataset)}); set `{flag}`.")
    return dataset[split]


def apply_prompt_transform(dataset, script_args, tokenizer_path: str):
    """[`make_prompts`] with the script's `prompt_*` options (no-op when none is set)."""
    options = (script_args.prompt_column, script_args.prompt_min_tokens, script_args.prompt_max_tokens)
    if dataset is None or options == (None, None, None):  # no tokenizer to load
        return dataset
    from transformers import AutoTokenizer

    return make_prompts(dataset, AutoTokenizer.from_pretrained(tokenizer_path), *options, script_args.prompt_seed)


def load_splits(script_args, dataset_args, training_args, tokenizer_path: str | None):
    """Train and (when evaluating) eval splits, as in TRL's scripts, with the prompt transform applied."""
    dataset = load_dataset_dict(script_args, dataset_args)
    train = get_split(dataset, script_args.dataset_train_split, "--dataset_train_split")
    evaluating = training_args.eval_strategy != "no"
    evaluation = get_split(dataset, script_args.dataset_test_split, "--dataset_test_split") if evaluating else None
    return tuple(apply_prompt_transform(split, script_args, tokenizer_path) for split in (train, evaluation))


def finish(trainer, training_args, script_args) -> None:
    """Save, optionally push, and close trackers and the process group, as TRL's scripts do."""
    trainer.accelerator.print(f"Training completed ({trainer.accelerator.num_processes} process(es)).")
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"Model saved to {training_args.output_dir}.")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    trainer.end()


def train(trainer_class, script_args, training_args, model_args, dataset_args):
    """Build `trainer_class` as TRL's scripts build theirs, train (resuming if asked) and [`finish`]; return it."""
    from trl import get_peft_config, get_quantization_config

    reward_funcs = resolve_reward_funcs(script_args)
    check_model_paths(model_args, script_args)
    training_args.model_init_kwargs = model_init_kwargs(model_args, training_args)
    train_dataset, eval_dataset = load_splits(script_args, dataset_args, training_args, model_args.model_name_or_path)
    trainer = trainer_class(
        model=model_args.model_name_or_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    finish(trainer, training_args, script_args)
    return trainer
