# /// script
# dependencies = [
#     "trl-bon",
#     "peft",
# ]
# ///
"""Train with variational Best-of-N (`VBoNTrainer`), the `trl-bon vbon` subcommand.

    # 1. once: M reference rewards per prompt (same YAML, so the cache has the training's sampling settings)
    trl-bon cache-ref-rewards --config recipes/vbon/imdb_gpt2.yaml
    # 2. train on the cache in `--reference_cache_dir`
    accelerate launch --config_file recipes/accelerate/single_gpu.yaml -m trl_bon.scripts.vbon \\
        --config recipes/vbon/imdb_gpt2.yaml

Every config field is a flag and a `--config` key (docs/cli.md).
"""

from dataclasses import dataclass

from trl_bon.scripts.utils import BoNScriptArguments


@dataclass
class VBoNScriptArguments(BoNScriptArguments):
    """Script arguments of `trl-bon vbon`: the dataset ([`~trl.ScriptArguments`]), the reward(s)
    and the prompt transform (see [`~trl_bon.scripts.utils.BoNScriptArguments`])."""


def main(script_args, training_args, model_args, dataset_args):
    from trl_bon import VBoNTrainer
    from trl_bon.scripts.utils import train

    return train(VBoNTrainer, script_args, training_args, model_args, dataset_args)


def make_parser(prog: str | None = None):
    from trl_bon import VBoNConfig
    from trl_bon.scripts.parser import training_parser

    return training_parser(VBoNScriptArguments, VBoNConfig, prog)


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config(fail_with_unknown_args=False))
