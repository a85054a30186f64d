"""Every YAML in `recipes/` parses into its config classes (nothing is downloaded or run: model ids stay strings)."""

import re
from pathlib import Path

import pytest
import yaml


RECIPES = Path(__file__).resolve().parents[1] / "recipes"
METHOD_YAMLS = sorted(p for p in RECIPES.glob("*/*.yaml") if p.parent.name != "accelerate")
ACCELERATE_YAMLS = sorted((RECIPES / "accelerate").glob("*.yaml"))
# bf16 needs a GPU at config validation time; the recipes target GPUs, the test parses them on CPU.
CPU_OVERRIDES = ["--use_cpu", "true", "--bf16", "false"]


def _parser(kind: str):
    if kind == "jbond":
        from trl_bon.scripts.jbond import make_parser
    elif kind == "vbon":
        from trl_bon.scripts.vbon import make_parser
    elif kind == "bon_sft":
        from trl_bon.scripts.bon_sft import make_parser
    elif kind == "eval":
        from trl_bon.scripts.evaluate import make_parser
    elif kind == "rloo":
        from trl.scripts.rloo import make_parser
    elif kind == "grpo":
        from trl.scripts.grpo import make_parser
    else:
        raise AssertionError(f"no parser for recipes/{kind}/")
    return make_parser()


def test_recipes_exist():
    names = {p.relative_to(RECIPES).as_posix() for p in METHOD_YAMLS + ACCELERATE_YAMLS}
    for required in (
        "jbond/imdb_gpt2.yaml",
        "vbon/imdb_gpt2.yaml",
        "bon_sft/imdb_gpt2.yaml",
        "rloo/imdb_gpt2.yaml",
        "jbond/tldr_pythia1b.yaml",
        "jbond/qwen2.5-7b-lora-8bit.yaml",
    ):
        assert required in names
    assert {p.stem for p in ACCELERATE_YAMLS} == {
        "single_gpu",
        "multi_gpu",
        "deepspeed_zero2",
        "deepspeed_zero3",
        "fsdp2",
    }


@pytest.mark.parametrize("path", METHOD_YAMLS, ids=lambda p: p.relative_to(RECIPES).as_posix())
def test_method_recipe_parses(path, tmp_path):
    lines = path.read_text().splitlines()
    header = "\n".join(line for line in lines[: next(i for i, text in enumerate(lines) if not text.startswith("#"))])
    # Every header names the hardware, its memory (an estimate labelled as such, or measured and saying so) and the
    # exact launch line.
    assert "Hardware:" in header
    assert re.search(r"memory: ~\d+(\.\d+)? GB \((ESTIMATE|measured)", header), header
    assert "Launch" in header and re.search(r"accelerate launch|trl-bon |trl rloo|trl grpo", header)
    # ... and says honestly whether it ever ran at its size (and when)
    assert re.search(r"never run|run in full .*on \d{4}-\d{2}-\d{2}", header), header
    kind = path.parent.name
    argv = ["--config", str(path), "--output_dir", str(tmp_path)]
    if kind != "eval":
        argv += CPU_OVERRIDES
    parsed = _parser(kind).parse_args_and_config(argv)  # raises on any unknown key
    script_args, model_args = parsed[0], parsed[-2]
    config = yaml.safe_load(path.read_text())
    assert model_args.model_name_or_path == config["model_name_or_path"]
    if kind == "eval":  # the settings `trl-bon eval` validates before sampling (N < M, ...) hold too
        from trl_bon.scripts.evaluate import eval_options

        assert max(eval_options(script_args).bon_ns) < script_args.num_reference_samples
    if kind != "eval":
        training_args = parsed[1]
        assert training_args.max_completion_length == config["max_completion_length"]
        assert training_args.temperature == config["temperature"]
    rewards = script_args.reward_model_name_or_path or []  # a str in TRL's rloo script, a list in trl-bon's
    rewards = ([rewards] if isinstance(rewards, str) else rewards) + (script_args.reward_funcs or [])
    assert rewards, "every recipe names a reward"
    if kind == "jbond" and path.stem.startswith("qwen"):
        from trl import get_peft_config, get_quantization_config

        assert get_quantization_config(model_args).load_in_8bit
        assert get_peft_config(model_args).r == 16
    if kind == "jbond":
        assert parsed[1].per_device_train_batch_size % 3 == 0  # whole groups of 1 policy + 2 anchor samples


@pytest.mark.parametrize("path", ACCELERATE_YAMLS, ids=lambda p: p.name)
def test_accelerate_recipe_parses(path):
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    config = load_config_from_file(str(path))
    expected = {
        "single_gpu": ("NO", 1),
        "multi_gpu": ("MULTI_GPU", 8),
        "deepspeed_zero2": ("DEEPSPEED", 8),
        "deepspeed_zero3": ("DEEPSPEED", 8),
        "fsdp2": ("FSDP", 8),
    }[path.stem]
    assert (str(config.distributed_type).split(".")[-1], config.num_processes) == expected
    if path.stem.startswith("deepspeed"):
        assert config.deepspeed_config["zero_stage"] == int(path.stem[-1])
    if path.stem == "fsdp2":
        assert config.fsdp_config["fsdp_version"] == 2
    args = launch_command_parser().parse_args(["--config_file", str(path), "-m", "trl_bon.scripts.jbond"])
    assert args.module and args.training_script == "trl_bon.scripts.jbond"


def test_imdb_reward_module_is_importable_without_loading_models():
    import importlib
    import sys

    sys.path.insert(0, str(RECIPES.parent))
    try:
        module = importlib.import_module("recipes.rewards.imdb_sentiment")
    finally:
        sys.path.remove(str(RECIPES.parent))
    assert callable(module.positive_logit)
