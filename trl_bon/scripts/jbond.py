# /// script
# dependencies = [
#     "trl-bon",
#     "peft",
# ]
# ///
"""Train with J-BOND / BOND (`JBondTrainer`), the `trl-bon jbond` subcommand.

    accelerate launch --config_file recipes/accelerate/single_gpu.yaml -m trl_bon.scripts.jbond \\
        --config recipes/jbond/imdb_gpt2.yaml

    trl-bon jbond --config recipes/jbond/imdb_gpt2.yaml               # same, launched through accelerate
    trl-bon jbond --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_name trl-lib/tldr \\
        --reward_model_name_or_path <reward model> --use_peft --load_in_8bit --output_dir qwen-jbond

Every `JBondConfig` / `RLOOConfig` / `TrainingArguments` field is a flag (`--mode bond --num_candidates 8`,
`--anchor_ema_rate 0.02`, …); `ModelConfig` gives `--use_peft --lora_r … --load_in_8bit/--load_in_4bit`;
`--config recipe.yaml` sets any of them. `trl-bon jbond --help` lists them all.
"""

import sys
from dataclasses import dataclass

from trl_bon.scripts._common import BoNScriptArguments, run_main, train_from_args, training_parser


@dataclass
class JBondScriptArguments(BoNScriptArguments):
    """Script arguments of `trl-bon jbond`: the dataset ([`~trl.ScriptArguments`]), the reward(s) and the prompt
    transform (see `BoNScriptArguments`)."""


def run(script_args, training_args, model_args, dataset_args):
    """Build a `JBondTrainer` from parsed arguments, train, save to `output_dir`."""
    return train_from_args("JBondTrainer", script_args, training_args, model_args, dataset_args)


def make_parser(prog: str | None = None):
    return training_parser(JBondScriptArguments, "JBondConfig", prog)


def main(argv: list[str] | None = None) -> int:
    return run_main(make_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
