"""Quiet by default: `trl-bon --help` and the kit's commands print no warnings (issue 27, item 2).

The subprocess tests run the command line as a user does; the unit tests pin each filter of `trl_bon._quiet` and the
config's rename of `gradient_checkpointing`, so they hold on machines where the library would not speak anyway
(bitsandbytes' message needs a CPU with AVX512-BF16).
"""

import logging
import os
import re
import subprocess
import sys
import warnings

import pytest


WARNING_LINE = re.compile(r"warn", re.IGNORECASE)


def _run_cli(*argv: str, cwd=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env["TRL_BON_LAUNCH"] = "0"  # in this process, whatever accelerate config the machine has
    return subprocess.run(
        [sys.executable, "-m", "trl_bon.scripts.cli", *argv], capture_output=True, text=True, env=env, cwd=cwd,
        timeout=600,
    )  # fmt: skip


def _warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if WARNING_LINE.search(line) or "pip install" in line]


def test_top_level_help_prints_no_warning():
    result = _run_cli("--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.slow
def test_training_help_prints_no_warning():
    """`trl-bon jbond --help` imports TRL, transformers and (through them) bitsandbytes."""
    result = _run_cli("jbond", "--help")
    assert result.returncode == 0, result.stderr
    assert "--num_candidates" in result.stdout
    assert _warning_lines(result.stderr) == []


@pytest.mark.slow
def test_kit_training_command_prints_no_warning(tmp_path):
    """The kit's J-BOND line (LoRA: PEFT and TRL's generation toggle gradient checkpointing every step), shortened."""
    from trl_bon.scripts.kit import write_kit

    (_, command), *_ = write_kit(tmp_path / "kit")
    assert command.startswith("trl-bon jbond --config ")
    argv = command.split()[1:] + ["--max_steps", "2", "--save_strategy", "no"]
    result = _run_cli(*argv, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert _warning_lines(result.stderr) == []
    assert "Training completed" in result.stdout


def test_bitsandbytes_kernel_message_is_dropped_and_others_kept(caplog):
    import trl_bon._quiet  # noqa: F401  (installed by `import trl_bon`; imported here to name the dependency)

    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING, logger="bitsandbytes.backends.cpu.ops"):
        logger.warning(
            "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you already `pip "
            "install kernels` and the kernels >= 0.11.1",
            "not in the local cache",
        )
        logger.warning("Some other bitsandbytes warning")
    assert [r.getMessage() for r in caplog.records] == ["Some other bitsandbytes warning"]


def test_kernels_trust_notice_dropped_only_for_the_bitsandbytes_kernel(caplog):
    import trl_bon._quiet  # noqa: F401

    logger = logging.getLogger("kernels._internals.hf_hub")
    with caplog.at_level(logging.WARNING, logger="kernels._internals.hf_hub"):
        for repo in ("kernels-community/quantization-bitsandbytes", "me/my-kernel"):
            logger.warning(f"Skipping publisher trust check for '{repo}' because Hugging Face Hub is in offline mode.")
    assert [r.getMessage() for r in caplog.records] == [
        "Skipping publisher trust check for 'me/my-kernel' because Hugging Face Hub is in offline mode."
    ]


@pytest.mark.parametrize("config_name", ["JBondConfig", "VBoNConfig", "BoNSFTConfig"])
@pytest.mark.parametrize("given", [None, False, True])
def test_configs_pass_gradient_checkpointing_without_a_rename_warning(tmp_path, config_name, given):
    import trl_bon

    config_class = getattr(trl_bon, config_name)
    kwargs = {"output_dir": str(tmp_path), "use_cpu": True, "bf16": False, "num_candidates": 4}
    if config_name == "JBondConfig":
        kwargs.pop("num_candidates")
    if given is not None:
        kwargs["gradient_checkpointing"] = given
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        args = config_class(**kwargs)
    expected = True if given is None else given  # TRL's default: on
    assert args.gradient_checkpointing is expected
    if hasattr(args, "activation_checkpointing"):
        assert args.activation_checkpointing is expected


def test_model_checkpointing_aliases_are_silenced_but_not_the_config_field():
    import trl_bon._quiet  # noqa: F401

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trl_bon._quiet.install()  # `simplefilter` above reset the filters
        for name in ("is_gradient_checkpointing", "gradient_checkpointing_enable", "gradient_checkpointing_disable"):
            warnings.warn_explicit(
                f"`{name}` is deprecated and will be removed in v6. Use `x` instead.",
                FutureWarning,
                "modeling_utils.py",
                1,
                module="transformers.modeling_utils",
            )
        warnings.warn_explicit(
            "`gradient_checkpointing` is deprecated and will be removed in v6. Use `activation_checkpointing`.",
            FutureWarning,
            "training_args.py",
            1,
            module="transformers.training_args",
        )
    assert [str(w.message).split("`")[1] for w in caught] == ["gradient_checkpointing"]
