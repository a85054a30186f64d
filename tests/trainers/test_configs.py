"""Checks shared by the three configs."""

import warnings

import pytest


@pytest.mark.parametrize(
    "name, extra",
    [("JBondConfig", {}), ("VBoNConfig", {"num_candidates": 4}), ("BoNSFTConfig", {"num_candidates": 4})],
)
def test_bf16_on_cpu_warns_with_the_fix(tmp_path, name, extra):
    import trl_bon

    config = getattr(trl_bon, name)
    with pytest.warns(UserWarning, match="Pass `bf16=False`"):
        config(output_dir=str(tmp_path), use_cpu=True, bf16=True, report_to="none", **extra)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", **extra)
    assert not [w for w in caught if "bf16" in str(w.message)]


@pytest.mark.parametrize("name, extra", [("JBondConfig", {}), ("VBoNConfig", {"num_candidates": 4})])
def test_dropout_is_off_by_default_and_cannot_be_turned_on(tmp_path, name, extra):
    """RLOO defaults to `disable_dropout=False`, under which the first-step importance ratio is not 1."""
    import trl_bon

    config = getattr(trl_bon, name)
    kwargs = dict(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none", **extra)
    assert config(**kwargs).disable_dropout is True
    with pytest.raises(ValueError, match="Set `disable_dropout=True`"):
        config(**kwargs, disable_dropout=False)


@pytest.mark.parametrize(
    "extra, batch, suggestion",
    [({}, 4, "e.g. 3, 6 (1, 2 prompts"), ({"mode": "bond", "num_candidates": 4}, 32, "e.g. 17, 34 (1, 2 prompts")],
)
def test_batch_size_error_states_the_arithmetic(tmp_path, extra, batch, suggestion):
    """`per_device_train_batch_size` counts policy and anchor completions: the error says so and suggests sizes."""
    from trl_bon import JBondConfig

    with pytest.raises(ValueError, match="policy and anchor together") as error:
        JBondConfig(
            output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to="none",
            per_device_train_batch_size=batch, **extra,
        )  # fmt: skip
    assert suggestion in str(error.value)
