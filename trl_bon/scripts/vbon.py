# /// script
# dependencies = [
#     "trl-bon",
#     "peft",
# ]
# ///
"""Train with variational Best-of-N (`VBoNTrainer`), the `trl-bon vbon` subcommand (options: docs/cli.md), on the
reference rewards that `trl-bon cache-ref-rewards` first caches with the same YAML (so the same sampling settings):

    trl-bon cache-ref-rewards --config recipes/vbon/imdb_gpt2.yaml
    trl-bon vbon --config recipes/vbon/imdb_gpt2.yaml
"""

from dataclasses import dataclass

from trl_bon import VBoNConfig
from trl_bon.scripts.parser import training_parser
from trl_bon.scripts.utils import BoNScriptArguments, train


@dataclass
class VBoNScriptArguments(BoNScriptArguments):
    """Script arguments of `trl-bon vbon` ([`~trl_bon.scripts.utils.BoNScriptArguments`])."""


def main(script_args, training_args, model_args, dataset_args):
    from trl_bon import VBoNTrainer

    return train(VBoNTrainer, script_args, training_args, model_args, dataset_args)


def make_parser(prog: str | None = None):
    return training_parser(VBoNScriptArguments, VBoNConfig, prog)


if __name__ == "__main__":
    main(*make_parser().parse_args_and_config(fail_with_unknown_args=False))
