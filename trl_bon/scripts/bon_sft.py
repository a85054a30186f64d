# /// script
# dependencies = [
#     "trl-bon",
#     "peft",
# ]
# ///
"""Fine-tune on Best-of-N samples (`BoNSFTTrainer`), the `trl-bon bon-sft` subcommand.

    accelerate launch --config_file recipes/accelerate/single_gpu.yaml -m trl_bon.scripts.bon_sft \\
        --config recipes/bon_sft/imdb_gpt2.yaml

    trl-bon bon-sft --config recipes/bon_sft/imdb_gpt2.yaml           # same, launched through accelerate

The dataset is prompt-only: N completions per prompt are sampled from the model (π_ref), scored with the reward(s),
and the best one becomes the SFT target (`--num_candidates`, `--num_rounds` > 1 for RAFT-style rounds). Every
`BoNSFTConfig` / `SFTConfig` / `TrainingArguments` field is a flag; `ModelConfig` gives `--use_peft --lora_r …
--load_in_8bit/--load_in_4bit`; `--config recipe.yaml` sets any of them. `trl-bon bon-sft --help` lists them all.
"""

import sys
from dataclasses import dataclass

from trl_bon.scripts._common import BoNScriptArguments, finish, load_splits, model_init_kwargs, resolve_reward_funcs


@dataclass
class BoNSFTScriptArguments(BoNScriptArguments):
    """Script arguments of `trl-bon bon-sft`: the prompt dataset ([`~trl.ScriptArguments`]), the reward(s) that pick
    the best candidate and the prompt transform (see `BoNScriptArguments`)."""


def run(script_args, training_args, model_args, dataset_args):
    """Build a `BoNSFTTrainer` from parsed arguments (sampling the Best-of-N data), train, save to `output_dir`."""
    from trl import get_peft_config, get_quantization_config

    from trl_bon import BoNSFTTrainer

    reward_funcs = resolve_reward_funcs(script_args)
    if model_args.model_name_or_path is None:
        raise ValueError("No model given. Set `--model_name_or_path <hub id or local path>` (the SFT model π_ref).")
    if training_args.eval_strategy != "no":
        raise ValueError(
            "`trl-bon bon-sft` trains on prompt-only data and has no held-out prompt–completion set to evaluate on. "
            "Set `--eval_strategy no` and evaluate the saved model with `trl-bon eval`."
        )
    training_args.model_init_kwargs = model_init_kwargs(model_args, training_args)
    train_dataset, _ = load_splits(script_args, dataset_args, training_args, model_args.model_name_or_path)
    trainer = BoNSFTTrainer(
        model=model_args.model_name_or_path,
        reward_funcs=reward_funcs,
        args=training_args,
        train_dataset=train_dataset,
        quantization_config=get_quantization_config(model_args),
        peft_config=get_peft_config(model_args),
    )
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    finish(trainer, training_args, script_args)
    return trainer


def make_parser(prog: str | None = None):
    from trl import DatasetMixtureConfig, ModelConfig, TrlParser

    from trl_bon import BoNSFTConfig

    return TrlParser((BoNSFTScriptArguments, BoNSFTConfig, ModelConfig, DatasetMixtureConfig), prog=prog)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    script_args, training_args, model_args, dataset_args = parser.parse_args_and_config(
        argv, fail_with_unknown_args=False
    )
    run(script_args, training_args, model_args, dataset_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
