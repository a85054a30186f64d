# /// script
# dependencies = [
#     "trl-bon",
#     "peft",
# ]
# ///
"""Fine-tune on Best-of-N samples (`BoNSFTTrainer`), the `trl-bon bon-sft` subcommand (options: docs/cli.md).

    trl-bon bon-sft --config recipes/bon_sft/imdb_gpt2.yaml

The dataset is prompt-only: the best of `--num_candidates` samples per prompt is the SFT target. `--num_rounds R > 1`
repeats sample-then-train from the policy trained so far (RAFT / ReST-style; docs/bon_sft_trainer.md).
"""

import copy
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import safetensors.torch

from trl_bon import BoNSFTConfig
from trl_bon.scripts.parser import training_parser
from trl_bon.scripts.utils import (
    BoNScriptArguments,
    check_model_paths,
    finish,
    load_splits,
    model_init_kwargs,
    resolve_reward_funcs,
)
from trl_bon.trainer._config_checks import require_at_least


@dataclass
class BoNSFTScriptArguments(BoNScriptArguments):
    """Script arguments of `trl-bon bon-sft`: [`BoNScriptArguments`] and the number of rounds (RAFT / ReST-style)."""

    num_rounds: int = field(
        default=1, metadata={"help": "1 = BoN-SFT; R > 1 = RAFT-style rounds, each sampling from the current policy."}
    )

    def __post_init__(self):  # TRL's ScriptArguments has no __post_init__ of its own
        require_at_least(self, "num_rounds", 1, " (1 is BoN-SFT)")


def check_prompt_dataset(dataset, name: str = "train_dataset") -> None:
    """Fail before any sampling if `dataset` is not a prompt-only `Dataset` of valid prompts."""
    from datasets import IterableDataset

    from trl_bon.sampling import check_prompts

    if dataset is None:
        raise ValueError(f"`{name}` is required: pass a prompt-only dataset with a `prompt` column.")
    if isinstance(dataset, IterableDataset):
        raise TypeError(
            f"`{name}` is an `IterableDataset`; BoN-SFT samples every prompt up front. Materialise it first, e.g. "
            "`Dataset.from_list(list(dataset.take(num_prompts)))`."
        )
    columns = dataset.column_names
    if "prompt" not in columns:
        raise ValueError(
            f"`{name}` has no `prompt` column (columns: {columns}). BoN-SFT generates the completions itself: pass a "
            "prompt-only dataset, e.g. `dataset.rename_column('question', 'prompt')`."
        )
    given = [c for c in ("completion", "messages", "chosen", "text") if c in columns]
    if given:
        raise ValueError(
            f"`{name}` already holds completions (column(s) {given}), but BoN-SFT expects prompts only and samples "
            f"the completions itself. Drop them (`dataset.remove_columns({given})`), or train on fixed completions "
            "with `trl.SFTTrainer`."
        )
    check_prompts(dataset["prompt"], name)


def round_metadata(round_index: int, prompts, scorer, training_args, policy: str) -> dict:
    """What a round's data depends on (`policy`: the model id in round 1, then the hash of the weights sampled)."""
    encoded = json.dumps(list(prompts), sort_keys=True, default=str).encode()
    return {
        "round": round_index,
        "policy": policy,
        "num_candidates": training_args.num_candidates,
        "seed": training_args.seed + round_index - 1,
        "tie_break": training_args.tie_break,
        "generation_settings": training_args.generation_settings.to_dict(),
        "reward_signature": scorer.signature(),
        "num_prompts": len(prompts),
        "prompts_sha256": hashlib.sha256(encoded).hexdigest(),
    }


def round_data(directory: Path, metadata: dict, policy, prompt_dataset, scorer, tokenizer, training_args):
    """The round's Best-of-N training set: loaded when saved with the same `metadata`, else one `best_of_n` call."""
    from datasets import load_from_disk

    from trl_bon.provenance import read_record, refuse_if_stale, write_record
    from trl_bon.sampling import Sampler, best_of_n
    from trl_bon.trainer.bon_sft_trainer import bon_sft_dataset

    with training_args.main_process_first(local=False, desc=f"Best-of-N data, round {metadata['round']}"):
        sampler = Sampler(
            policy,
            training_args.generation_settings,
            tokenizer=tokenizer,
            batch_size=training_args.generation_batch_size,
            backend="vllm" if training_args.use_vllm else "transformers",
            seed=metadata["seed"],
            model_init_kwargs=training_args.model_init_kwargs,
            vllm_kwargs=training_args.vllm_kwargs,
            progress=not training_args.disable_tqdm,
        )
        # The model by content, not path: another model run in the same output_dir must not reuse this data.
        metadata = {**metadata, "model": sampler.identity()}
        if (directory / "metadata.json").exists():  # refused, naming the differences, if made with other settings
            fix = f"Delete {directory} to sample that round again, or use another `output_dir`."
            saved = read_record(directory / "metadata.json", "round record", fix)
            refuse_if_stale(saved, metadata, subject=f"{directory} holds Best-of-N data made with", escape=fix)
            try:
                return load_from_disk(str(directory / "dataset"))
            except (FileNotFoundError, ValueError) as error:  # deleted or damaged after the round was saved
                raise ValueError(
                    f"{directory} records a finished round but its data ({directory / 'dataset'}) is missing or "
                    f"unreadable ({error}). Delete {directory} to sample that round again (same settings, same data)."
                ) from error
        num_candidates, tie_break = training_args.num_candidates, training_args.tie_break
        bon = best_of_n(sampler, prompt_dataset, scorer, num_candidates, tie_break=tie_break)
        dataset = bon_sft_dataset(bon, tokenizer)
        if training_args.process_index == 0:
            dataset.save_to_disk(str(directory / "dataset"))
            # metadata.json is written last (atomically): its presence marks the round's data as complete.
            write_record(directory / "metadata.json", metadata)
    return dataset


def save_trainable(model, path: Path, training_args) -> str:
    """Save the trainable tensors (the adapter under LoRA) atomically, on the main process; return their SHA-256."""
    trainable = {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}
    data = safetensors.torch.save(trainable)
    if training_args.process_index == 0:
        path.with_suffix(".tmp").write_bytes(data)
        os.replace(path.with_suffix(".tmp"), path)
    return hashlib.sha256(data).hexdigest()


def load_trainable(model, path: Path) -> str:
    """Load the weights `save_trainable` saved into `model`, which must have exactly those trainable tensors; return
    their SHA-256."""
    data = path.read_bytes()
    weights = safetensors.torch.load(data)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    if set(weights) != trainable:
        differ = sorted(set(weights) ^ trainable)
        raise ValueError(
            f"{path} holds the trainable weights of another model or adapter set-up ({differ[:3]}…). Delete "
            "`_bon_data/` to start over, or use another `output_dir`."
        )
    model.load_state_dict(weights, strict=False)
    return hashlib.sha256(data).hexdigest()


def main(script_args, training_args, model_args, dataset_args):
    """Sample Best-of-N data, train a `BoNSFTTrainer` on it, and repeat for `num_rounds`; save to `output_dir`."""
    from transformers import AutoTokenizer
    from trl import get_peft_config, get_quantization_config

    from trl_bon import BoNSFTTrainer, RewardScorer
    from trl_bon.trainer._config_checks import check_prompt_lengths, check_sft_batches, check_writable_dir

    if training_args.eval_strategy != "no":
        raise ValueError(
            "`trl-bon bon-sft` trains on prompt-only data and has no held-out prompt–completion set to evaluate on. "
            "Set `--eval_strategy no` and evaluate the saved model with `trl-bon eval`."
        )
    if training_args.use_vllm and script_args.num_rounds > 1:
        raise ValueError(
            "`use_vllm=True` samples from the model path, which only holds the reference model, so it cannot run "
            f"iterative rounds (`num_rounds={script_args.num_rounds}`). Set `use_vllm=False` or `num_rounds=1`."
        )
    check_model_paths(model_args, script_args)
    reward_funcs = resolve_reward_funcs(script_args)  # names and callables only: reward models load further down
    training_args.model_init_kwargs = model_init_kwargs(model_args, training_args)
    prompt_dataset, _ = load_splits(script_args, dataset_args, training_args, model_args.model_name_or_path)
    # Everything that would fail after the sampling (or waste it) fails now, before any reward model or policy loads.
    check_prompt_dataset(prompt_dataset)
    check_sft_batches(len(prompt_dataset), training_args, "train_dataset")
    if training_args.should_save:
        check_writable_dir(training_args.output_dir)  # the data of each round is saved there
    tokenizer = AutoTokenizer.from_pretrained(model_args.model_name_or_path, revision=model_args.model_revision)
    if tokenizer.pad_token is None:  # what SFTTrainer would set; the sampler needs it first
        tokenizer.pad_token = training_args.pad_token or tokenizer.eos_token
    prompts = list(prompt_dataset["prompt"])
    check_prompt_lengths(
        prompts, tokenizer, model_args.model_name_or_path, training_args.max_completion_length, "prompts"
    )
    scorer = RewardScorer(  # reward models load as TRL's trainers load them, with the policy's model options
        reward_funcs,
        reward_weights=training_args.reward_weights,
        model_init_kwargs=training_args.model_init_kwargs,
        device=training_args.device,
    )

    policy, trainer, resume = model_args.model_name_or_path, None, training_args.resume_from_checkpoint
    policy_name = policy  # in the data's metadata: the model id, then the hash of the weights sampled from
    for round_index in range(1, script_args.num_rounds + 1):
        directory = Path(training_args.output_dir) / "_bon_data" / f"round-{round_index}"
        metadata = round_metadata(round_index, prompts, scorer, training_args, policy_name)
        dataset = round_data(directory, metadata, policy, prompt_dataset, scorer, tokenizer, training_args)
        round_args = copy.copy(training_args)  # rounds >= 2 keep their checkpoints in output_dir/round-k
        round_args.resume_from_checkpoint = None  # `resume` goes to the first round that trains, checked at train()
        if round_index > 1:  # and fine-tune the policy instance trained so far
            round_args.output_dir = os.path.join(training_args.output_dir, f"round-{round_index}")
            round_args.model_init_kwargs = None
        trainer = BoNSFTTrainer(
            model=policy,
            args=round_args,
            train_dataset=dataset,
            processing_class=tokenizer,
            quantization_config=get_quantization_config(model_args) if round_index == 1 else None,
            peft_config=get_peft_config(model_args) if round_index == 1 else None,
        )
        weights = directory / "trainable.safetensors"
        if round_index < script_args.num_rounds and weights.exists():
            policy_name = load_trainable(trainer.model, weights)  # finished in an earlier run
        else:
            trainer.train(resume_from_checkpoint=resume)
            resume = None  # a checkpoint belongs to the first round that trains
            if round_index < script_args.num_rounds:
                policy_name = save_trainable(trainer.model, weights, training_args)
        policy = trainer.model  # the next round samples from, and fine-tunes, the policy trained so far
    finish(trainer, training_args, script_args)
    return trainer


def make_parser(prog: str | None = None):
    return training_parser(BoNSFTScriptArguments, BoNSFTConfig, prog)


def cli(argv: list[str] | None = None) -> int:
    """`trl-bon bon-sft`: parse `argv` (flags and `--config`) and run [`main`]."""
    main(*make_parser().parse_args_and_config(argv, fail_with_unknown_args=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(cli())
