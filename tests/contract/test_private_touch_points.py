"""Contract tests for the private `transformers` API listed in `trl_bon._trl_compat.OVERRIDDEN_TRAINER_METHODS`: a
transformers release that renames one, changes its parameters or stops routing the checkpoint save through it fails
here, not as a silently non-atomic checkpoint."""

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
