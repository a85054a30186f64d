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

from trl_bon.scripts._common import BoNScriptArguments, run_main, train_from_args, training_parser


@dataclass
class VBoNScriptArguments(BoNScriptArguments):
    """Script arguments of `trl-bon vbon`: the dataset ([`~trl.ScriptArguments`]), the reward(s) and the prompt
    transform (see `BoNScriptArguments`)."""


def run(script_args, training_args, model_args, dataset_args):
    """Build a `VBoNTrainer` from parsed arguments, train, save to `output_dir`."""
    return train_from_args("VBoNTrainer", script_args, training_args, model_args, dataset_args)


def make_parser(prog: str | None = None):
    return training_parser(VBoNScriptArguments, "VBoNConfig", prog)


def main(argv: list[str] | None = None) -> int:
    return run_main(make_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
