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

Every field of `JBondConfig`, `ModelConfig` (`--use_peft`, `--load_in_8bit`, …) and the script arguments is a flag and
a `--config` key; `trl-bon jbond --help` lists them, Best-of-N options first.
"""

from dataclasses import dataclass

from trl_bon.scripts.utils import BoNScriptArguments


@dataclass
class JBondScriptArguments(BoNScriptArguments):
    """Script arguments of `trl-bon jbond`: the dataset ([`~trl.ScriptArguments`]), the reward(s)
    and the prompt transform (see [`~trl_bon.scripts.utils.BoNScriptArguments`])."""


def main(script_args, training_args, model_args, dataset_args):
    from trl_bon import JBondTrainer
    from trl_bon.scripts.utils import finish, trainer_inputs

    # Reward(s), π_ref with TRL's model kwargs, prompts (with the prompt transform), LoRA and quantization
    inputs = trainer_inputs(script_args, training_args, model_args, dataset_args)

    # Train (resuming from `--resume_from_checkpoint` if set)
    trainer = JBondTrainer(**inputs)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

    # Save the policy, push if asked, close the trackers and the process group
    finish(trainer, training_args, script_args)
    return trainer


def make_parser(prog: str | None = None):
    from trl_bon import JBondConfig
    from trl_bon.scripts.parser import training_parser

    return training_parser(JBondScriptArguments, JBondConfig, prog)


if __name__ == "__main__":
    parser = make_parser()
    script_args, training_args, model_args, dataset_args = parser.parse_args_and_config(fail_with_unknown_args=False)
    main(script_args, training_args, model_args, dataset_args)
