# /// script
# dependencies = [
#     "trl-bon",
#     "peft",
# ]
# ///
"""Train with J-BOND / BOND (`JBondTrainer`), the `trl-bon jbond` subcommand.

    accelerate launch --config_file recipes/accelerate/single_gpu.yaml -m trl_bon.scripts.jbond \\
        --config recipes/jbond/imdb_gpt2.yaml
    trl-bon jbond --config recipes/jbond/imdb_gpt2.yaml  # same; one process runs without a relaunch

Every config field is a flag and a `--config` key (docs/cli.md).
"""

from dataclasses import dataclass

from trl_bon.scripts.utils import BoNScriptArguments


@dataclass
class JBondScriptArguments(BoNScriptArguments):
    """Script arguments of `trl-bon jbond`: the dataset ([`~trl.ScriptArguments`]), the reward(s)
    and the prompt transform (see [`~trl_bon.scripts.utils.BoNScriptArguments`])."""


def main(script_args, training_args, model_args, dataset_args):
    from trl_bon import JBondTrainer
    from trl_bon.scripts.utils import train

    return train(JBondTrainer, script_args, training_args, model_args, dataset_args)


def make_parser(prog: str | None = None):
    from trl_bon import JBondConfig
    from trl_bon.scripts.parser import training_parser

    return training_parser(JBondScriptArguments, JBondConfig, prog)


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config(fail_with_unknown_args=False))
