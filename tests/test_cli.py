"""The `trl-bon` command line entry point (`trl_bon.scripts.cli`)."""

import json
import shutil
import subprocess
import sys

import pytest

import trl_bon
from trl_bon.scripts.cli import main


def test_version_subprocess():
    result = subprocess.run(
        [sys.executable, "-m", "trl_bon.scripts.cli", "--version"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"trl-bon {trl_bon.__version__}"


def test_version_in_process(capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["--version"])
    assert excinfo.value.code == 0
    assert capsys.readouterr().out.strip() == f"trl-bon {trl_bon.__version__}"


def test_help_lists_usage(capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["--help"])
    assert excinfo.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: trl-bon")
    assert "--version" in out and "<command>" in out
    for command in ("jbond", "vbon", "bon-sft", "cache-ref-rewards", "eval", "plot", "demo", "kit"):
        assert command in out


def test_no_command_prints_help(capsys):
    assert main([]) == 0
    assert capsys.readouterr().out.startswith("usage: trl-bon")


def test_unknown_command_is_an_error(capsys):
    with pytest.raises(SystemExit) as excinfo:
        main(["no-such-command"])
    assert excinfo.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


def test_console_script_installed():
    exe = shutil.which("trl-bon")
    if exe is None:
        pytest.skip("the trl-bon console script is not on PATH (package not installed in this environment)")
    result = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"trl-bon {trl_bon.__version__}"


def _modules_loaded_by(argv: list[str], modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` a fresh interpreter has imported after `trl-bon <argv>` (help and version exit)."""
    code = (
        "import json, sys\nfrom trl_bon.scripts.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        f"print(json.dumps([m for m in {modules!r} if m in sys.modules]))"
    )
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("argv", [["--help"], ["--version"]])
def test_top_level_help_and_version_import_no_ml_library(argv):
    """`trl-bon --help` / `--version` answer in a fraction of a second: no torch, transformers or TRL import."""
    assert _modules_loaded_by(argv, ("torch", "transformers", "trl", "peft")) == []


def test_eval_help_skips_trl_trainer_internals():
    """`trl-bon eval --help` needs no `TrainingArguments` (the import behind a training command's 10-20 s help) and no
    TRL trainer internals: the TRL version guard runs when arguments are parsed, not when the parser is built."""
    assert _modules_loaded_by(["eval", "--help"], ("trl_bon._trl_compat", "transformers.training_args", "peft")) == []


def test_plot_imports_no_trl(tmp_path):
    """`trl-bon plot` (and `kit`, `demo`, which parse their own arguments) skip the launch logic's TRL imports."""
    results = {
        "checkpoints": [{"name": "run@1", "kl_k1": 0.1, "reward": 1.0, "win_rate_vs_ref": 0.6}],
        "reference": {"reward": 0.5},
        "bon": [],
    }
    (tmp_path / "results.json").write_text(json.dumps(results))
    loaded = _modules_loaded_by(["plot", str(tmp_path / "results.json")], ("trl", "transformers", "torch"))
    assert loaded == [] and (tmp_path / "reward_vs_kl.png").is_file()


@pytest.mark.parametrize("command", ["jbond", "eval", "plot"])
@pytest.mark.parametrize("tty", [True, False])
def test_loading_notice_before_the_slow_import(command, tty, monkeypatch, capsys):
    """On a terminal, commands that import TRL say so on stderr before the ~10 s import and erase the line after
    it; `plot` imports no TRL and says nothing, and nothing is written when stderr is a file or a pipe."""
    import importlib

    from trl_bon.scripts import cli

    seen = []
    real_import = importlib.import_module

    def import_module(name, *args, **kwargs):
        if name.startswith("trl_bon.scripts."):  # what was printed before the subcommand's module was imported
            seen.append(capsys.readouterr().err)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", import_module)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
    monkeypatch.setattr(cli, "launch_route", lambda args: pytest.fail("no launch in this test"))
    with pytest.raises(SystemExit):
        cli.run_command(command, ["--help"], allow_launch=False)
    expected = f"trl-bon {command}: loading TRL and transformers…" if tty and command != "plot" else ""
    assert seen[0] == expected
    assert capsys.readouterr().err.startswith("\r\033[K" if expected else "")  # the help itself goes to stdout


def test_training_commands_point_to_the_metrics_page(monkeypatch, capsys):
    from trl_bon.scripts import cli, jbond

    monkeypatch.setattr(jbond, "main", lambda *parsed: None)
    assert cli.run_command("jbond", ["--output_dir", "x", "--use_cpu", "true", "--bf16", "false"], False) == 0
    assert capsys.readouterr().err == "trl-bon jbond: the logged metrics are explained in docs/metrics.md\n"
