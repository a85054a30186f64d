"""TRL-shaped YAML configs run unchanged: `reward_model_name_or_path: /path/to/rm` (TRL's scripts take one reward model
as a plain string) works in every subcommand that takes a reward, instead of being read one character at a time."""

import json

import pytest


pytestmark = pytest.mark.slow
TEXTS = ["the cat sat on the mat", "tell me a story about a dog", "the food was bad", "a good day with tea"]


@pytest.fixture(scope="module")
def config(tiny_kit, tmp_path_factory):
    """A TRL-style YAML: the reward model as a plain string, one local dataset, tiny steps."""
    root = tmp_path_factory.mktemp("trl_forms")
    for split in ("train", "test"):
        with open(root / f"{split}.jsonl", "w") as f:
            for text in TEXTS:
                f.write(json.dumps({"prompt": text}) + "\n")
    lines = [
        f"model_name_or_path: {tiny_kit['policy']}",
        f"reward_model_name_or_path: {tiny_kit['reward']}",  # the string form
        f"dataset_name: {root}",
        "max_completion_length: 3",
    ]
    path = root / "config.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


TRAIN = [
    "--use_cpu", "true", "--bf16", "false", "--report_to", "none", "--max_steps", "1", "--disable_tqdm", "true",
    "--dataloader_num_workers", "0", "--save_strategy", "no",
]  # fmt: skip


def test_resolve_reward_funcs_takes_the_string_form(tiny_kit):
    from types import SimpleNamespace

    from trl_bon.scripts.utils import resolve_reward_funcs

    args = SimpleNamespace(
        reward_model_name_or_path=tiny_kit["reward"], reward_funcs="tests.test_scripts.length_reward"
    )
    funcs = resolve_reward_funcs(args)
    assert funcs[0] == tiny_kit["reward"] and callable(funcs[1]) and len(funcs) == 2


@pytest.mark.parametrize(
    "command, extra",
    [
        ("jbond", ["--per_device_train_batch_size", "6"]),
        ("bon-sft", ["--num_candidates", "2", "--per_device_train_batch_size", "4"]),
        ("cache-ref-rewards", ["--num_reference_samples", "3"]),
    ],
)
def test_training_commands(command, extra, config, tmp_path):
    from trl_bon.scripts.cli import main

    argv = [command, "--config", str(config), *TRAIN, *extra, "--output_dir", str(tmp_path)]
    assert main(argv, launch=False) == 0
    if command == "cache-ref-rewards":
        metadata = json.loads((tmp_path / "_reference_rewards" / "metadata.json").read_text())
        assert len(metadata["reward"]["reward_funcs"]) == 1  # one reward model, not one per character
        vbon = [
            "vbon", "--config", str(config), *TRAIN, "--reference_cache_dir", str(tmp_path / "_reference_rewards"),
            "--num_reference_samples", "3", "--num_candidates", "4", "--num_generations", "2",
            "--per_device_train_batch_size", "4", "--output_dir", str(tmp_path / "vbon"),
        ]  # fmt: skip
        assert main(vbon, launch=False) == 0
    else:
        assert any(tmp_path.glob("*.safetensors"))


def completion_characters(prompts, completions, **kwargs):
    """A judge for `--judge_funcs`: the completion's length in characters."""
    return [float(len(c)) for c in completions]


def test_eval(config, tiny_kit, tmp_path):
    from trl_bon.scripts.cli import main

    argv = [
        "eval", "--config", str(config), "--checkpoints", f"base={tiny_kit['policy']}", "--num_prompts", "2",
        "--num_reference_samples", "3", "--bon_ns", "2", "--output_dir", str(tmp_path), "--no_plot", "true",
        "--no_progress", "true", "--judge_funcs", f"chars={__name__}.completion_characters",
    ]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    row = data["checkpoints"][0]
    assert row["name"] == "base" and data["settings"]["judges"] == ["chars"]
    assert row["chars"] > 0 and 0.0 <= row["chars_win_rate_vs_ref"] <= 1.0 and data["reference"]["chars"] > 0


def test_eval_refuses_a_judge_that_does_not_import_before_loading(config, tmp_path):
    from trl_bon.scripts.cli import main

    argv = ["eval", "--config", str(config), "--judge_funcs", "no_such_module.judge", "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match="Could not import the reward function 'no_such_module.judge'"):
        main(argv)
    assert not (tmp_path / "results.json").exists()


def test_eval_reference_alone_with_every_sampling_setting(config, tmp_path):
    """No `--checkpoints`: π_ref and Best-of-N alone; min_p and repetition_penalty reach the sampler."""
    from trl_bon.scripts.cli import main

    argv = [
        "eval", "--config", str(config), "--num_prompts", "2", "--num_reference_samples", "3", "--bon_ns", "2",
        "--min_p", "0.05", "--repetition_penalty", "1.3", "--generation_kwargs", '{"no_repeat_ngram_size": 2}',
        "--output_dir", str(tmp_path), "--no_plot", "true", "--no_progress", "true",
    ]  # fmt: skip
    assert main(argv) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["checkpoints"] == [] and [b["n"] for b in data["bon"]] == [2]
    generation = data["settings"]["generation"]
    assert generation["min_p"] == 0.05 and generation["repetition_penalty"] == 1.3
    assert generation["generation_kwargs"] == {"no_repeat_ngram_size": 2}
    assert generation["max_completion_length"] == 3  # from the YAML


def test_eval_refuses_zero_policy_samples_before_loading(config, tmp_path):
    from trl_bon.scripts.cli import main

    argv = ["eval", "--config", str(config), "--num_policy_samples", "0", "--output_dir", str(tmp_path)]
    with pytest.raises(ValueError, match="`num_policy_samples` must be at least 1, got 0"):
        main(argv)
