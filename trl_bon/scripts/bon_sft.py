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

from trl_bon.scripts.utils import BoNScriptArguments, run_main, train_from_args, training_parser


@dataclass
class BoNSFTScriptArguments(BoNScriptArguments):
    """Script arguments of `trl-bon bon-sft`: the prompt dataset ([`~trl.ScriptArguments`]), the reward(s) that pick
    the best candidate and the prompt transform (see `BoNScriptArguments`)."""


def run(script_args, training_args, model_args, dataset_args):
    """Build a `BoNSFTTrainer` from parsed arguments (sampling the Best-of-N data), train, save to `output_dir`."""
    if training_args.eval_strategy != "no":
        raise ValueError(
            "`trl-bon bon-sft` trains on prompt-only data and has no held-out prompt–completion set to evaluate on. "
            "Set `--eval_strategy no` and evaluate the saved model with `trl-bon eval`."
        )
    return train_from_args("BoNSFTTrainer", script_args, training_args, model_args, dataset_args)


def make_parser(prog: str | None = None):
    return training_parser(BoNSFTScriptArguments, "BoNSFTConfig", prog)


def main(argv: list[str] | None = None) -> int:
    return run_main(make_parser(), run, argv)


if __name__ == "__main__":
    sys.exit(main())
