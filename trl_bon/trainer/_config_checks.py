"""Checks shared by the configs (in `__post_init__`) and the trainers (in `__init__`, before any model loads)."""

import dataclasses
import os
import tempfile
import warnings


class BoNConfigMixin:
    """What the three configs do around their TRL parent's `__post_init__`, and `generation_settings`, the
    [`~trl_bon.sampling.GenerationSettings`] that checks the sampling options."""

    def __post_init__(self):
        from ..sampling import GenerationSettings  # here, not at import: sampling imports torch

        # TRL sets `gradient_checkpointing`, which transformers >= 5.25 renamed: moved before transformers reads it, it
        # does not warn on every config about a value the user never set (a value under the new name wins).
        if "activation_checkpointing" in {f.name for f in dataclasses.fields(self)}:
            for old in ("gradient_checkpointing", "gradient_checkpointing_kwargs"):
                new = old.replace("gradient", "activation")
                if getattr(self, new) is None and getattr(self, old) is not None:
                    setattr(self, new, getattr(self, old))
                    setattr(self, old, None)
        super().__post_init__()
        if self.bf16 and self.device.type == "cpu":
            warnings.warn(
                "`bf16=True` on a CPU: bf16 matmuls are many times slower than fp32 on most CPUs. Pass `bf16=False` "
                "(`--bf16 False` on the command line) to train in fp32.",
                UserWarning,
                stacklevel=4,
            )
        # `--resume_from_checkpoint true` means the newest complete checkpoint (a path named `true` would be `./true`)
        if str(self.resume_from_checkpoint).lower() == "true":
            self.resume_from_checkpoint = True
        self.generation_settings = GenerationSettings.from_trainer_args(self)


# The configs' one-line errors: the value given, why it cannot work, the fix.
def require(args, name: str, value, why: str, fix: str = "") -> None:
    """Refuse an option the method needs at `value`."""
    if getattr(args, name) != value:
        raise ValueError(f"`{name}={getattr(args, name)!r}`: {why}. Set `{name}={value!r}`{fix}.")


def require_one_of(args, name: str, choices: tuple) -> None:
    if getattr(args, name) not in choices:
        raise ValueError(f"Unknown `{name}={getattr(args, name)!r}`; set `{name}` to one of {choices}.")


def require_at_least(args, name: str, minimum: int, why: str = "") -> None:
    """Refuse an unset or too small count; `why` follows the minimum, e.g. " (N=1 is the reference policy)"."""
    if getattr(args, name) is None or getattr(args, name) < minimum:
        raise ValueError(f"`{name}` must be at least {minimum}{why}, got {getattr(args, name)}.")


def check_dropout_disabled(args) -> None:
    """Reject `disable_dropout=False` (RLOO's default) in the RLOO-based configs."""
    require(
        args,
        "disable_dropout",
        True,
        "with dropout on, `old_logps` and the loss forward draw different dropout masks, so the importance ratio is "
        "not 1 and RLOO's clip zeroes whole rows (and the KL terms are noisy)",
        " (the default here)",
    )


def check_model_inputs(model) -> None:
    """[`~trl_bon.identity.check_model_path`] of the policy's path (an instance passes), before any model loads."""
    from trl_bon.identity import check_model_path

    if isinstance(model, str):
        check_model_path(model, "policy `model`")


def check_writable_dir(directory: str) -> None:
    """Write a probe file in `directory` (an `output_dir`), so that an unwritable folder fails now, not at the first
    save. Folders it had to create are removed again: a run failing before its first save leaves no empty folder."""
    created, path = [], os.path.abspath(directory)  # deepest first
    while not os.path.exists(path):
        created.append(path)
        path = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
        for folder in created:
            os.rmdir(folder)
    except OSError as error:
        raise PermissionError(
            f"`output_dir` ({directory}) is not writable ({error.strerror or error}); checkpoints and results go "
            "there. Pass a writable `output_dir`, or fix the folder's permissions / free disk space."
        ) from error


def check_train_prompts(train_dataset, eval_dataset, prompts_per_batch: int, text_only: str | None = None) -> None:
    """The RLOO-based trainers' one check of their prompt data, before any model loads: a `prompt` column (an
    `IterableDataset`'s first example), no image column when the trainer named by `text_only` takes text only,
    [`~trl_bon.sampling.check_prompts`], and one generation batch's prompts."""
    from datasets import Dataset, IterableDataset

    from ..sampling import check_prompts  # here, not at import: sampling imports torch

    if train_dataset is None:
        raise ValueError("`train_dataset` is required: pass a dataset with a `prompt` column.")
    evals = eval_dataset if isinstance(eval_dataset, dict) else {None: eval_dataset}
    datasets = {"train_dataset": train_dataset}
    datasets.update({"eval_dataset" if k is None else f"eval_dataset[{k!r}]": v for k, v in evals.items()})
    for name, dataset in datasets.items():
        if dataset is None:
            continue
        columns = dataset.column_names
        if isinstance(dataset, IterableDataset) and columns is None:
            first = next(iter(dataset), None)
            if first is None:
                raise ValueError(f"`{name}` is an empty IterableDataset; pass at least one prompt.")
            columns, has = sorted(first), f"'s examples have no `prompt` (keys: {sorted(first)})"
        else:
            has = f" must have a `prompt` column (standard text or conversational messages); it has {columns}"
        if "prompt" not in columns:
            raise ValueError(
                f"`{name}`{has}. Rename your prompt column to `prompt`, e.g. "
                "`dataset.rename_column('question', 'prompt')`."
            )
        if text_only and {"image", "images"} & set(columns):
            raise NotImplementedError(f"{text_only} supports text-only prompts; remove the images from `{name}`.")
        if isinstance(dataset, Dataset):
            check_prompts(dataset["prompt"], name)
    if isinstance(train_dataset, Dataset) and len(train_dataset) < prompts_per_batch:
        raise ValueError(
            f"`train_dataset` has {len(train_dataset)} prompt(s), fewer than the {prompts_per_batch} unique prompts "
            "one generation batch takes (generation_batch_size / num_generations), so training would run 0 steps. "
            "Add prompts, or lower `per_device_train_batch_size` / `steps_per_generation`."
        )


def check_prompt_lengths(prompts: list, tokenizer, model, max_completion_length: int, name: str, **template_kwargs):
    """[`~trl_bon.sampling.check_context_window`] before any weights load: `model` an instance or a path (its config
    only), `tokenizer=None` the model's own (its files only)."""
    from transformers import AutoConfig, AutoTokenizer

    from .._trl_compat import get_config_model_id
    from ..sampling import check_context_window, context_window, tokenize_prompts

    config = AutoConfig.from_pretrained(model) if isinstance(model, str) else model.config
    if context_window(config) is None or not prompts:
        return
    tokenizer = tokenizer or AutoTokenizer.from_pretrained(get_config_model_id(config))
    lengths = [len(ids) for ids in tokenize_prompts(tokenizer, list(prompts), template_kwargs)]
    check_context_window(lengths, config, max_completion_length, name)


def check_train_prompt_lengths(trainer) -> None:
    """[`check_prompt_lengths`] on an `RLOOTrainer`'s training `Dataset`, tokenised as it will tokenise them."""
    from datasets import Dataset

    if isinstance(trainer.train_dataset, Dataset):
        tokenizer = getattr(trainer.processing_class, "tokenizer", trainer.processing_class)  # a processor's own
        prompts, max_length = trainer.train_dataset["prompt"], trainer.args.max_completion_length
        check_prompt_lengths(
            prompts, tokenizer, trainer.model, max_length, "train_dataset", **trainer.chat_template_kwargs
        )


def check_sft_batches(num_examples: int, args, name: str) -> None:
    """With `dataloader_drop_last`, fewer examples than one batch over all processes trains 0 steps, silently."""
    per_step = args.per_device_train_batch_size * args.world_size
    if args.dataloader_drop_last and num_examples < per_step:
        raise ValueError(
            f"`{name}` has {num_examples} example(s), fewer than one batch ({per_step} = per_device_train_batch_size "
            f"x {args.world_size} process(es)), and `dataloader_drop_last=True` drops it, so training would run 0 "
            "steps. Add prompts, lower `per_device_train_batch_size`, or set `dataloader_drop_last=False`."
        )


class RewardOutputChecksMixin:
    """Check what each reward callable returns, so that a string, a scalar or a 2-D tensor is an error that names
    the function (RLOO would fail inside `torch.tensor` or on a shape mismatch, naming none)."""

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        import functools
        import inspect

        from torch import nn

        from ..rewards import reward_values
        from ._rloo_seams import rloo_reward_funcs

        def checked(func, name):
            if isinstance(func, nn.Module) or inspect.iscoroutinefunction(func):
                return func

            @functools.wraps(func)
            def wrapper(*args, **kwargs):
                return reward_values(func(*args, **kwargs), name, len(prompts)).tolist()

            return wrapper

        funcs = [checked(f, n) for f, n in zip(self.reward_funcs, self.reward_func_names, strict=True)]
        with rloo_reward_funcs(self, funcs):
            return super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
