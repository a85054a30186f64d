"""`trl-bon kit`: the offline try-out. The printed command lines are run verbatim (in this process, so TRL is
imported once), in the printed order, and each must leave its outputs."""

import json
import shlex

import pytest


@pytest.mark.slow
def test_kit_commands_run_verbatim(tmp_path, capsys):
    from trl_bon.scripts.cli import main

    root = tmp_path / "kit dir"  # a space: the printed lines must quote paths
    assert main(["kit", str(root)]) == 0
    printed = capsys.readouterr().out
    commands = [line for line in printed.splitlines() if line.startswith("trl-bon ")]
    assert [shlex.split(c)[1] for c in commands] == ["jbond", "cache-ref-rewards", "vbon", "bon-sft", "eval"]
    assert "use_cpu: true" in printed and "bf16: false" in printed  # the YAML is printed too
    for command in commands:
        assert main(shlex.split(command)[1:]) == 0, command
    out = root / "out"
    assert (out / "jbond" / "adapter_config.json").is_file()
    assert sorted(p.name for p in (out / "jbond").glob("checkpoint-*")) == ["checkpoint-4", "checkpoint-8"]
    assert (out / "reference_rewards" / "metadata.json").is_file()
    assert (out / "vbon" / "model.safetensors").is_file()
    assert (out / "bon_sft" / "model.safetensors").is_file()
    results = json.loads((out / "eval" / "results.json").read_text())
    names = {row["name"].split("@")[0] for row in results["checkpoints"]}
    assert names == {"jbond", "vbon", "bon-sft"}
    assert (out / "eval" / "reward_vs_kl.png").stat().st_size > 0


def test_kit_configs_parse(tmp_path):
    """Every kit YAML parses with its command's strict parser (fast: no model is built)."""
    from trl_bon.scripts import bon_sft, evaluate, jbond, kit, vbon

    configs = kit.kit_configs(tmp_path)
    parsers = {"jbond": jbond, "vbon": vbon, "bon_sft": bon_sft, "eval": evaluate}
    import yaml

    for stem, config in configs.items():
        path = tmp_path / f"{stem}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        parsers[stem].make_parser().parse_args_and_config(["--config", str(path)])


def test_tryout_commands_write_only_to_the_kit_folder():
    """Issue 27: the try-out's figure command once wrote `--output_dir docs/img/tryout`, overwriting tracked files
    when run from the repository root. Every command of docs/tryout.md must write under `trl_bon_kit/`."""
    import re
    from pathlib import Path

    page = (Path(__file__).parent.parent / "docs" / "tryout.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", page, flags=re.S)
    commands = [c for c in " ".join(blocks).replace("\\\n", " ").splitlines() if c.strip().startswith("trl-bon")]
    assert any(c.startswith("trl-bon plot") for c in commands)
    for command in commands:
        argv = shlex.split(command, comments=True)
        if argv[1] == "kit":
            assert argv[2] == "trl_bon_kit"
            continue
        outputs = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--output_dir"]
        inputs = [arg for arg in argv[2:] if arg.endswith(".json")]  # `plot` writes next to its results.json
        for path in outputs + inputs:
            assert path.startswith("trl_bon_kit/"), command
        assert "docs/" not in command, command


def test_kit_verifier_line_parses_and_loads_its_verifier_by_dotted_path(tmp_path, monkeypatch):
    """The optional 0/1-verifier line: its YAML parses with J-BOND's strict parser and, from the kit folder, the
    dotted path resolves to the kit's verifier, which scores 0/1."""
    import yaml

    from trl_bon.scripts import jbond, kit
    from trl_bon.scripts.utils import resolve_reward_funcs

    (tmp_path / "verifier.py").write_text(kit.VERIFIER)
    path = tmp_path / "jbond_verifier.yaml"
    path.write_text(yaml.safe_dump(kit.verifier_config(tmp_path), sort_keys=False))
    script_args, training_args = jbond.make_parser().parse_args_and_config(["--config", str(path)])[:2]
    assert (training_args.jbond_ties, training_args.anchor) == ("half", "fixed")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (verifier,) = resolve_reward_funcs(script_args)
    assert verifier(completions=["the cat", "a cat", "thee"]) == [1.0, 0.0, 0.0]


@pytest.mark.slow
def test_kit_verifier_line_runs(tmp_path, monkeypatch, capsys):
    from trl_bon.scripts.cli import main

    root = tmp_path / "kit"
    assert main(["kit", str(root)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "jbond_verifier.yaml" in x)
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    assert main(shlex.split(line.split("&&")[1])[1:]) == 0
    assert (root / "out" / "jbond_verifier" / "model.safetensors").is_file()
