# /// script
# dependencies = [
#     "trl-bon",
#     "peft",
# ]
# ///
"""Train with J-BOND / BOND (`JBondTrainer`), the `trl-bon jbond` subcommand (options: docs/cli.md), e.g.
`trl-bon jbond --config recipes/jbond/imdb_gpt2.yaml`."""

from dataclasses import dataclass

from trl_bon import JBondConfig
from trl_bon.scripts.parser import training_parser
from trl_bon.scripts.utils import BoNScriptArguments, train


@dataclass
class JBondScriptArguments(BoNScriptArguments):
    """Script arguments of `trl-bon jbond` ([`~trl_bon.scripts.utils.BoNScriptArguments`])."""


def main(script_args, training_args, model_args, dataset_args):
    from trl_bon import JBondTrainer

    return train(JBondTrainer, script_args, training_args, model_args, dataset_args)


def make_parser(prog: str | None = None):
    return training_parser(JBondScriptArguments, JBondConfig, prog)


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config(fail_with_unknown_args=False))
