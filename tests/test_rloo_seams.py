"""The named rewrites of RLOO's state (`trl_bon/trainer/_rloo_seams.py`) restore what they change, also on an error;
that RLOO reads these attributes is pinned in `tests/contract/test_rloo_contract.py`."""

from collections import deque
from types import SimpleNamespace

import pytest
import torch

from trl_bon.sampling import eval_mode
from trl_bon.trainer import _rloo_seams as seams


@pytest.mark.parametrize(
    ("seam", "value", "attributes"),
    [
        (seams.rloo_group_size, 1, ("num_generations", "num_generations_eval")),
        (seams.rloo_generation_model, "anchor", ("model_wrapped",)),
        (seams.rloo_reward_funcs, ["checked"], ("reward_funcs",)),
        (seams.trainer_name, "BOND", ("_name",)),
    ],
)
def test_temporary_rewrites_restore_on_exit_and_on_error(seam, value, attributes):
    trainer = SimpleNamespace(
        num_generations=3, num_generations_eval=3, model_wrapped="policy", reward_funcs=["raw"], _name="J-BOND"
    )
    before = vars(trainer).copy()
    with seam(trainer, value):
        assert all(getattr(trainer, name) == value for name in attributes)
    assert vars(trainer) == before
    with pytest.raises(KeyError), seam(trainer, value):
        raise KeyError
    assert vars(trainer) == before


def test_instance_shadows_are_removed_and_an_existing_one_is_kept():
    class Model:
        def generate(self, **kwargs):
            return kwargs

        def save_pretrained(self, path, **kwargs):
            return path, kwargs

    model = Model()
    with seams.generate_with_adapter_names(model, ["default", "anchor"]):
        assert model.generate(x=1) == {"x": 1, "adapter_names": ["default", "anchor"]}
    assert "generate" not in vars(model) and model.generate(x=1) == {"x": 1}
    with seams.save_selected_adapters(model, ["default"]):
        assert model.save_pretrained("out") == ("out", {"selected_adapters": ["default"]})
    assert "save_pretrained" not in vars(model)

    def unsharding_generate(**kwargs):  # FSDP2 registers one on the instance
        return "unsharded"

    model.generate = unsharding_generate
    with seams.generate_with_adapter_names(model, ["anchor"]):
        assert model.generate() == "unsharded"  # the call goes through what was there (which FSDP2 forwards)
    assert model.generate is unsharding_generate


def test_generation_eval_mode_restores_the_mode():
    model = torch.nn.Linear(2, 2).train()
    with eval_mode(model):
        assert not model.training
    assert model.training


def test_lasting_rewrites():
    trainer = SimpleNamespace(_last_loaded_step=7)
    seams.force_vllm_weight_sync(trainer)
    assert trainer._last_loaded_step == -1

    logged = deque([0, 1, 2, 3], maxlen=4)
    seams.replace_last_logged(logged, [8, 9])
    assert list(logged) == [0, 1, 8, 9]
    seams.replace_last_logged(logged, [5, 6, 7, 8, 9, 10])  # more values than the column holds: its last four
    assert list(logged) == [7, 8, 9, 10]

    metrics = {"reward": [0.5, 1.0]}
    seams.replace_last_metric(metrics, "reward", torch.tensor(2.0))
    assert metrics == {"reward": [0.5, 2.0]}
