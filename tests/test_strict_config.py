"""Strict `--config` files and command lines (`trl_bon.scripts.parser.BoNParser`) and the launch route of `trl-bon`.

Nothing here loads a model: every error must come from parsing, before any expensive work.
"""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import yaml


REPO = Path(__file__).resolve().parents[1]
CPU = ["--use_cpu", "true", "--bf16", "false"]


def parse(tmp_path, config: dict, *argv, launcher: bool = False):
    from trl_bon.scripts.jbond import make_parser

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"output_dir": str(tmp_path / "out"), **config}))
    parser = make_parser(prog="trl-bon jbond")
    return parser.parse_args_and_config(
        ["--config", str(path), *CPU, *argv],
        return_remaining_strings=launcher,
        separate_remaining_strings=launcher,
        fail_with_unknown_args=False,
    )


def error_of(capsys, call) -> str:
    with pytest.raises(SystemExit) as excinfo:
        call()
    assert excinfo.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"learning_rat": 1.0e-5}, ["unknown key `learning_rat`", "did you mean `--learning_rate`"]),
        ({"anchor_ema_rte": 0.1}, ["unknown key `anchor_ema_rte`", "did you mean `--anchor_ema_rate`"]),
        ({"max_steps": 2.7}, ["`max_steps: 2.7` is not a valid int"]),
        (
            {"learning_rate": [1.0e-5, 2.0e-5]},
            ["`learning_rate: [1e-05, 2e-05]`", "expected a single float, got a list"],
        ),
        ({"use_peft": "maybe"}, ["`use_peft: 'maybe'` is not a valid bool"]),
        ({"datasets": [{"pth": "x"}]}, ["unknown field `pth` (did you mean `--path`?) of DatasetConfig"]),
    ],
)
def test_bad_config_is_one_line_naming_key_and_fix(tmp_path, capsys, config, expected):
    err = error_of(capsys, lambda: parse(tmp_path, config))
    assert err.startswith("trl-bon jbond: error: invalid --config file:")
    for text in expected:
        assert text in err
    assert len(err.splitlines()) == 2  # the error and a pointer to --help, no usage dump


def test_config_validation_error_is_a_parser_error(tmp_path, capsys):
    err = error_of(capsys, lambda: parse(tmp_path, {"mode": "bondd"}))  # raised by JBondConfig.__post_init__
    assert err.startswith("trl-bon jbond: error: Unknown `mode='bondd'`")


def test_all_problems_reported_at_once(tmp_path, capsys):
    err = error_of(capsys, lambda: parse(tmp_path, {"learning_rat": 1, "max_steps": 2.7}))
    assert "learning_rat" in err and "max_steps" in err


def test_config_values_are_converted_like_flags(tmp_path):
    # PyYAML reads `1e-5` (no dot) as a string; TRL's parser would hand the string to the config.
    (tmp_path / "c.yaml").write_text("learning_rate: 1e-5\nmax_steps: 3\nreward_funcs: my_module.reward\n")
    from trl_bon.scripts.jbond import make_parser

    script_args, training_args, _, _ = make_parser().parse_args_and_config(
        ["--config", str(tmp_path / "c.yaml"), *CPU, "--output_dir", str(tmp_path)]
    )
    assert training_args.learning_rate == 1e-5 and isinstance(training_args.learning_rate, float)
    assert training_args.max_steps == 3
    assert script_args.reward_funcs == ["my_module.reward"]  # a scalar for a list option is a one-item list


@pytest.mark.parametrize("command", ["jbond", "vbon", "bon_sft"])
def test_resume_true_means_the_newest_checkpoint(tmp_path, command):
    """`--resume_from_checkpoint true` (and YAML's `true`) is `True` for every training command, not a path `true`."""
    import importlib

    make_parser = importlib.import_module(f"trl_bon.scripts.{command}").make_parser
    (tmp_path / "c.yaml").write_text("resume_from_checkpoint: true\n")
    argv = [*CPU, "--output_dir", str(tmp_path), "--num_candidates", "2"]
    for args in (["--resume_from_checkpoint", "true"], ["--config", str(tmp_path / "c.yaml")]):
        assert make_parser().parse_args_and_config([*args, *argv])[1].resume_from_checkpoint is True


def test_accelerate_keys_pass_to_the_launcher(tmp_path):
    *_, config_remaining, cli_remaining = parse(
        tmp_path, {"num_processes": 2}, "--mixed_precision", "no", launcher=True
    )
    assert config_remaining == ["--num_processes", "2"] and cli_remaining == ["--mixed_precision", "no"]
    # a switch of `accelerate launch` is a flag alone: `--multi_gpu True` would make `True` the launched script
    *_, config_remaining, _ = parse(tmp_path, {"multi_gpu": True, "cpu": False, "num_processes": 2}, launcher=True)
    assert config_remaining == ["--multi_gpu", "--num_processes", "2"]
    parse(tmp_path, {"num_processes": 1})  # in the launched process the same YAML parses, the key is ignored


@pytest.mark.parametrize("flags", [["--learning_rat", "3"], ["--num_procesess", "2"], ["--max_steps", "2.5"]])
def test_bad_flag_is_one_line(capsys, flags):
    from trl_bon.scripts.cli import main

    err = error_of(capsys, lambda: main(["jbond", *flags, *CPU]))
    assert len(err.splitlines()) == 2, err
    if flags[0] == "--learning_rat":
        assert "--learning_rat (did you mean `--learning_rate`?)" in err
    if flags[0] == "--num_procesess":
        assert "did you mean `--num_processes`?" in err
    if flags[0] == "--max_steps":
        assert "invalid int value: '2.5'" in err


def test_launcher_flags_are_refused_in_process(capsys):
    from trl_bon.scripts.jbond import make_parser

    err = error_of(capsys, lambda: make_parser(prog="jbond").parse_args_and_config(["--num_processes", "2", *CPU]))
    assert "unrecognized arguments: --num_processes" in err


def test_no_abbreviations(capsys):
    from trl_bon.scripts.jbond import make_parser

    err = error_of(capsys, lambda: make_parser(prog="jbond").parse_args_and_config(["--anchor_ema", "0.1", *CPU]))
    assert "did you mean `--anchor_ema_rate`" in err


def test_help_puts_best_of_n_first(capsys):
    from trl_bon.scripts.cli import main

    with pytest.raises(SystemExit):
        main(["jbond", "--help"])
    out = capsys.readouterr().out
    titles = [line for line in out.splitlines() if line and not line.startswith(" ") and line.endswith(":")]
    assert titles[1:4] == [
        "Best-of-N options (JBondConfig):",
        "Script options: data, reward, prompts (JBondScriptArguments):",
        "π_ref, LoRA and quantization (ModelConfig):",
    ]
    assert out.index("--anchor_ema_rate") < out.index("--learning_rate")
    for text in ("--config FILE.yaml", "accelerate launch", "torchrun", "TRL_BON_LAUNCH=0"):
        assert text in out


def test_eval_help_has_no_training_options(capsys):
    from trl_bon.scripts.cli import main

    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    out = capsys.readouterr().out
    for flag in ("--use_peft", "--lora_r", "--learning_rate", "--dataset_train_split", "--ignore_bias_buffers"):
        assert flag not in out
    assert "π_ref, the reference (SFT) policy" in " ".join(out.split())
    assert out.index("Options of this command (EvalScriptArguments):") < out.index("--checkpoints")
    assert out.index("--checkpoints") < out.index("--dataset_name")  # the command's own options first


def _no_default_accelerate_config():
    from accelerate.commands.config import default_config_file

    if os.path.isfile(default_config_file):
        pytest.skip("an accelerate default config exists on this machine")
    import torch

    if torch.cuda.is_available():
        pytest.skip("the CPU routes are tested without a GPU")


@pytest.mark.parametrize(
    ("launch_args", "expected"),
    [
        ([], ("in_process", 1)),
        (["--num_processes", "1", "--mixed_precision", "no", "--dynamo_backend", "no"], ("in_process", 1)),
        (["--num_processes", "2"], ("torchrun", 2)),
        (["--config_file", "recipes/accelerate/multi_gpu.yaml", "--num_processes", "2", "--cpu"], ("torchrun", 2)),
        (["--config_file", "recipes/accelerate/single_gpu.yaml"], ("accelerate", 1)),
    ],
)
def test_launch_route(launch_args, expected, monkeypatch):
    _no_default_accelerate_config()
    from trl_bon.scripts.cli import launch_route

    monkeypatch.chdir(REPO)
    assert launch_route(launch_args) == expected


def test_deepspeed_on_cpu_names_the_fix(monkeypatch):
    _no_default_accelerate_config()
    from trl_bon.scripts.cli import launch_route

    monkeypatch.chdir(REPO)
    with pytest.raises(ValueError, match="no GPU"):
        launch_route(["--config_file", "recipes/accelerate/deepspeed_zero2.yaml", "--num_processes", "2"])


@pytest.mark.slow
def test_bad_config_under_accelerate_launch(tmp_path):
    """`accelerate launch -m trl_bon.scripts.jbond --config bad.yaml` stops at parsing, naming the key."""
    path = tmp_path / "bad.yaml"
    path.write_text("model_name_or_path: /nonexistent\nlearning_rat: 1.0e-5\nuse_cpu: true\nbf16: false\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "--num_machines", "1", "-m", "trl_bon.scripts.jbond", "--config", str(path)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert "unknown key `learning_rat` (did you mean `--learning_rate`?)" in result.stderr
    assert "/nonexistent" not in result.stderr  # no model was looked up


def test_parsing_runs_the_trl_version_guard(monkeypatch):
    from packaging.version import Version

    from trl_bon import _trl_compat
    from trl_bon.scripts.evaluate import make_parser

    monkeypatch.setattr(_trl_compat, "TESTED_TRL", (Version("0.1"), Version("0.2")))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        parser = make_parser()  # building it (as `--help` does) leaves TRL's internals unimported
    with pytest.warns(UserWarning, match="trl-bon is tested with trl>=0.1,<0.2"):
        parser.parse_args_and_config(["--model_name_or_path", "m", "--reward_funcs", "r", "--dataset_name", "d"])


@pytest.mark.parametrize("num_processes", ["1", "2"])
def test_training_command_routes(monkeypatch, tmp_path, num_processes):
    """`trl-bon bon-sft` is routed like jbond: its parsed arguments to `main` in-process, or its argv (launch flags
    removed) to torchrun on CPU."""
    _no_default_accelerate_config()
    from trl_bon.scripts import bon_sft, cli

    calls = []
    monkeypatch.setattr(cli, "launch", lambda route, n, module, launch_args, argv: calls.append((route, n, argv)))
    monkeypatch.setattr(bon_sft, "main", lambda *parsed: calls.append(("in_process", 1, parsed[1].output_dir)))
    argv = ["--output_dir", str(tmp_path), *CPU]
    assert cli.main(["bon-sft", *argv, "--num_processes", num_processes]) == 0
    assert calls == [("in_process", 1, str(tmp_path)) if num_processes == "1" else ("torchrun", 2, argv)]


@pytest.mark.parametrize("content", [None, "learning_rate: [1, 2\n"])
def test_missing_or_broken_config_file_is_one_line(tmp_path, capsys, content):
    from trl_bon.scripts.jbond import make_parser

    path = tmp_path / "c.yaml"
    if content is not None:
        path.write_text(content)
    err = error_of(capsys, lambda: make_parser(prog="jbond").parse_args_and_config(["--config", str(path), *CPU]))
    assert len(err.splitlines()) == 2 and ("not valid YAML" in err if content else "needs the path" in err)
