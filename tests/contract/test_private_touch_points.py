"""Contract tests for the private API of other libraries that `trl_bon._trl_compat` lists: a transformers, TRL or
accelerate release that renames one, changes its parameters or stops routing the checkpoint save through it fails
here, not as a silently non-atomic checkpoint or a misrouted option."""

import inspect

import pytest


def _overrides():
    from trl_bon import BoNSFTTrainer, JBondTrainer, VBoNTrainer

    return {
        name
        for trainer in (JBondTrainer, VBoNTrainer, BoNSFTTrainer)
        for klass in trainer.__mro__
        if klass.__module__.startswith("trl_bon")
        for name, value in vars(klass).items()
        if name.startswith("_") and not name.startswith("__") and callable(value)
    }


def test_every_overridden_private_trainer_method_is_listed():
    from transformers import Trainer

    from trl_bon._trl_compat import OVERRIDDEN_TRAINER_METHODS

    private_trainer_overrides = {name for name in _overrides() if hasattr(Trainer, name)}
    assert private_trainer_overrides == set(OVERRIDDEN_TRAINER_METHODS)


@pytest.mark.parametrize("name", ["_save_checkpoint", "_get_output_dir", "_save"])
def test_trainer_private_signatures(name):
    from transformers import Trainer

    from trl_bon._trl_compat import OVERRIDDEN_TRAINER_METHODS

    assert tuple(inspect.signature(getattr(Trainer, name)).parameters) == OVERRIDDEN_TRAINER_METHODS[name]


def test_save_checkpoint_writes_under_get_output_dir_then_rotates():
    """The staging redirect works only while `_save_checkpoint` asks `_get_output_dir` where to write, and rotates
    old checkpoints itself (inside the staging folder, harmlessly) with `rotate_checkpoints`' keywords."""
    from transformers import Trainer
    from transformers.trainer_utils import rotate_checkpoints

    source = inspect.getsource(Trainer._save_checkpoint)
    assert "self._get_output_dir(trial=trial)" in source
    assert source.index("_get_output_dir") < source.index("save_model(") < source.index("rotate_checkpoints(")
    assert {"output_dir", "save_total_limit", "best_model_checkpoint", "use_mtime"} <= set(
        inspect.signature(rotate_checkpoints).parameters
    )


def test_hf_argument_parser_groups_a_dataclass_by_its_group_attribute():
    """`trl-bon --help` groups options through `HfArgumentParser`'s group attribute: a release that drops it would
    print every option under one heading."""
    import dataclasses

    from transformers import HfArgumentParser

    from trl_bon._trl_compat import HF_ARGUMENT_GROUP_ATTRIBUTE
    from trl_bon.scripts import parser as bon_parser

    assert f'"{HF_ARGUMENT_GROUP_ATTRIBUTE}"' in inspect.getsource(bon_parser)  # the name the parser writes

    group = dataclasses.make_dataclass(
        "Group",
        [("alpha", int, dataclasses.field(default=1))],
        namespace={HF_ARGUMENT_GROUP_ATTRIBUTE: "Zeta options"},
    )
    titles = [g.title for g in HfArgumentParser(group)._action_groups]
    assert "Zeta options" in titles
    assert "Zeta options:\n  --alpha ALPHA" in HfArgumentParser(group).format_help()


def test_accelerate_launch_flags_read_from_its_parser_actions():
    """`trl-bon` tells `accelerate launch` options (and which are switches) from training options through argparse's
    private `_actions`: a release that renames it, or accelerate options that stop being actions, fails here."""
    from accelerate.commands.launch import launch_command_parser

    from trl_bon.scripts.parser import accelerate_launch_options

    assert all(hasattr(action, "option_strings") for action in launch_command_parser()._actions)
    options = accelerate_launch_options()
    assert options["multi_gpu"] is True and options["cpu"] is True  # switches, given without a value
    assert options["num_processes"] is False and options["config_file"] is False
    assert "output_dir" not in options  # a training option is not a launcher's
