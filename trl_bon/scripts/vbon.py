# /// script
# dependencies = [
#     "trl-bon",
#     "peft",
# ]
# ///
"""Train with variational Best-of-N (`VBoNTrainer`), the `trl-bon vbon` subcommand.

    # 1. once: M reference rewards per prompt (same YAML, so the cache has the training's sampling settings)
    trl-bon cache-ref-rewards --config recipes/vbon/imdb_gpt2.yaml
    # 2. train
    accelerate launch --config_file recipes/accelerate/single_gpu.yaml -m trl_bon.scripts.vbon \\
        --config recipes/vbon/imdb_gpt2.yaml

The cache is joined from `--reference_cache_dir` (a `VBoNConfig` field); `--build_reference_cache` builds it at init
instead. Every `VBoNConfig` / `RLOOConfig` / `TrainingArguments` field is a flag (`--num_candidates 11`,
`--vbon_objective exact`, …); `ModelConfig` gives `--use_peft --lora_r … --load_in_8bit/--load_in_4bit`;
`--config recipe.yaml` sets any of them. `trl-bon vbon --help` lists them all.
"""

import sys
from dataclasses import dataclass

from trl_bon.scripts._common import BoNScriptArguments, finish, load_splits, model_init_kwargs, resolve_reward_funcs


@dataclass
class VBoNScriptArguments(BoNScriptArguments):
    """Script arguments of `trl-bon vbon`: the dataset ([`~trl.ScriptArguments`]), the reward(s) and the prompt
    transform (see `BoNScriptArguments`)."""


def run(script_args, training_args, model_args, dataset_args):
    """Build a `VBoNTrainer` from parsed arguments, train, save to `output_dir`."""
    from trl import get_peft_config, get_quantization_config

    from trl_bon import VBoNTrainer

    reward_funcs = resolve_reward_funcs(script_args)
    if model_args.model_name_or_path is None:
        raise ValueError("No policy given. Set `--model_name_or_path <hub id or local path>` (the SFT model π_ref).")
    training_args.model_init_kwargs = model_init_kwargs(model_args, training_args)
    train_dataset, eval_dataset = load_splits(script_args, dataset_args, training_args, model_args.model_name_or_path)
    trainer = VBoNTrainer(
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


def make_parser(prog: str | None = None):
    from trl import DatasetMixtureConfig, ModelConfig, TrlParser

    from trl_bon import VBoNConfig

    return TrlParser((VBoNScriptArguments, VBoNConfig, ModelConfig, DatasetMixtureConfig), prog=prog)


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    script_args, training_args, model_args, dataset_args = parser.parse_args_and_config(
        argv, fail_with_unknown_args=False
    )
    run(script_args, training_args, model_args, dataset_args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
