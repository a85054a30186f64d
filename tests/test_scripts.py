"""The `trl-bon` subcommands end to end on the tiny offline kit (a few steps each, in-process where possible so the
TRL import is shared), the accelerate re-launch once in a subprocess, and `trl-bon demo --quick`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
TRAIN = [
    "--use_cpu",
    "true",
    "--bf16",
    "false",
    "--report_to",
    "none",
    "--max_steps",
    "2",
    "--logging_steps",
    "1",
    "--max_completion_length",
    "4",
    "--disable_tqdm",
    "true",
    "--dataloader_num_workers",
    "0",
    "--seed",
    "0",
]
TEXTS = [
    "the cat sat on the mat today",
    "tell me a story about a dog please",
    "once upon a time there was a robot",
    "the movie was great and the actors were wonderful",
    "the food was bad and the service was slow",
    "a good day starts with a warm cup of tea",
]


def length_reward(completions, **kwargs):
    """A dotted-path reward callable for `--reward_funcs tests.test_scripts.length_reward`."""
    return [float(len(c)) for c in completions]


@pytest.fixture(scope="module")
def text_dataset(tmp_path_factory):
    """A local dataset folder with a `text` column (like stanfordnlp/imdb) and train/test splits."""
    root = tmp_path_factory.mktemp("text_dataset")
    for split, rows in (("train", TEXTS * 3), ("test", TEXTS)):
        with open(root / f"{split}.jsonl", "w") as f:
            for text in rows:
                f.write(json.dumps({"text": text, "label": 1}) + "\n")
    return str(root)


@pytest.fixture(scope="module")
def common(tiny_kit, text_dataset):
    return [
        "--model_name_or_path",
        tiny_kit["policy"],
        "--reward_model_name_or_path",
        tiny_kit["reward"],
        "--dataset_name",
        text_dataset,
        "--prompt_column",
        "text",
        "--prompt_min_tokens",
        "2",
        "--prompt_max_tokens",
        "4",
    ]


@pytest.fixture(scope="module")
def jbond_run(common, tmp_path_factory):
    """`trl-bon jbond` with LoRA, run in-process, saving a checkpoint at each of its 2 steps."""
    from trl_bon.scripts.cli import main

    out = tmp_path_factory.mktemp("jbond")
    argv = [
        "jbond",
        *common,
        *TRAIN,
        "--reward_funcs",
        "tests.test_scripts.length_reward",
        "--output_dir",
        str(out),
        "--use_peft",
        "--lora_r",
        "4",
        "--lora_target_modules",
        "q_proj",
        "v_proj",
        "--save_strategy",
        "steps",
        "--save_steps",
        "1",
        "--per_device_train_batch_size",
        "6",
        "--learning_rate",
        "0.05",
    ]
    assert main(argv, launch=False) == 0
    return out


def test_jbond_in_process(jbond_run):
    assert (jbond_run / "adapter_config.json").is_file()
    assert sorted(p.name for p in jbond_run.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]
    state = json.loads((jbond_run / "checkpoint-2" / "trainer_state.json").read_text())
    logged = {key for entry in state["log_history"] for key in entry}
    assert "jbond/frac_rJ_nonzero" in logged and "loss" in logged


def test_eval_on_trained_checkpoints(jbond_run, common, tiny_kit, tmp_path, capsys):
    from trl_bon.scripts.cli import main

    argv = [
        "eval",
        *common,
        "--checkpoints",
        f"jbond={jbond_run}",
        f"base={tiny_kit['policy']}",
        "--dataset_test_split",
        "test",
        "--num_prompts",
        "3",
        "--num_reference_samples",
        "6",
        "--bon_ns",
        "2",
        "4",
        "--max_completion_length",
        "4",
        "--output_dir",
        str(tmp_path),
        "--no_progress",
        "true",
    ]
    assert main(argv) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    names = [c["name"] for c in data["checkpoints"]]
    assert names == ["jbond@1", "jbond@2", "base"]  # the final save equals checkpoint-2: no duplicate `@final`
    for row in data["checkpoints"]:
        for key in (
            "reward",
            "kl_k1",
            "kl_k3",
            "win_rate_vs_ref",
            "win_rate_vs_bon2",
            "kl_to_bon4_backward",
            "kl_to_bon4_forward",
            "effective_n_win",
            "effective_n_kl",
        ):
            assert isinstance(row[key], float), key
    assert data["checkpoints"][-1]["kl_k1"] == 0.0  # π_ref evaluated against itself
    assert data["checkpoints"][-1]["effective_n_kl"] == 1.0
    assert all("effective_n_win" in b and "effective_n_kl" in b for b in data["bon"] + [data["reference"]])
    assert [b["n"] for b in data["bon"]] == [2, 4]
    for name in ("reward_vs_kl.png", "win_rate_vs_kl.png", "results.csv"):
        assert (tmp_path / name).stat().st_size > 0
    out = capsys.readouterr().out
    assert "jbond@2" in out
    assert "N_win" in out and "N_KL" in out


def test_cache_ref_rewards_then_vbon(common, tmp_path, monkeypatch):
    """The cache's reward model loads with the options `VBoNTrainer` (TRL) loads it with: cached and trained-on
    rewards come from the same model."""
    from transformers import AutoModelForSequenceClassification

    from trl_bon.scripts.cli import main

    loads, load = [], AutoModelForSequenceClassification.from_pretrained

    def recorded(path, **kwargs):
        loads.append(kwargs)
        return load(path, **kwargs)

    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", recorded)
    cache = tmp_path / "cache"
    shared = [*common, *TRAIN, "--reference_cache_dir", str(cache), "--num_reference_samples", "6"]
    shared += ["--attn_implementation", "eager"]
    assert main(["cache-ref-rewards", *shared, "--output_dir", str(tmp_path / "vbon")]) == 0
    assert (cache / "metadata.json").is_file()
    argv = [
        "vbon",
        *shared,
        "--output_dir",
        str(tmp_path / "vbon"),
        "--num_candidates",
        "4",
        "--num_generations",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--save_strategy",
        "no",
    ]
    assert main(argv, launch=False) == 0
    assert (tmp_path / "vbon" / "model.safetensors").is_file()
    assert len(loads) == 2 and loads[0] == loads[1] and loads[0]["attn_implementation"] == "eager"


def test_bon_sft(common, tmp_path, monkeypatch):
    """Trains; its reward model loads with the model options (here `--attn_implementation`), as TRL's trainers load
    theirs."""
    from transformers import AutoModelForSequenceClassification

    from trl_bon.scripts.cli import main

    loads, load = [], AutoModelForSequenceClassification.from_pretrained

    def recorded(path, **kwargs):
        loads.append(kwargs)
        return load(path, **kwargs)

    monkeypatch.setattr(AutoModelForSequenceClassification, "from_pretrained", recorded)
    argv = [
        "bon-sft",
        *common,
        *TRAIN,
        "--attn_implementation",
        "eager",
        "--output_dir",
        str(tmp_path),
        "--num_candidates",
        "2",
        "--per_device_train_batch_size",
        "4",
        "--save_strategy",
        "no",
    ]
    assert main(argv, launch=False) == 0
    assert (tmp_path / "model.safetensors").is_file()
    assert len(loads) == 1 and loads[0]["attn_implementation"] == "eager"


def test_missing_reward_names_the_fix(common, tmp_path):
    from trl_bon.scripts.cli import main

    index = common.index("--reward_model_name_or_path")
    argv = common[:index] + common[index + 2 :]  # no reward at all
    with pytest.raises(ValueError, match="--reward_model_name_or_path"):
        main(["jbond", *argv, *TRAIN, "--output_dir", str(tmp_path)], launch=False)


def test_missing_dataset_names_the_fix(tiny_kit, tmp_path):
    from trl_bon.scripts.cli import main

    with pytest.raises(ValueError, match="--dataset_name"):
        main(
            [
                "jbond",
                "--model_name_or_path",
                tiny_kit["policy"],
                "--reward_model_name_or_path",
                tiny_kit["reward"],
                *TRAIN,
                "--output_dir",
                str(tmp_path),
            ],
            launch=False,
        )


@pytest.mark.parametrize("command", ["jbond", "vbon", "bon-sft", "cache-ref-rewards", "eval", "demo"])
def test_help(command, capsys):
    from trl_bon.scripts.cli import main

    with pytest.raises(SystemExit) as excinfo:
        main([command, "--help"])
    assert excinfo.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: trl-bon {command}")
    expected = {
        "jbond": ["--anchor_ema_rate", "--use_peft", "--load_in_8bit", "--reward_funcs", "--prompt_column"],
        "vbon": ["--reference_cache_dir", "--num_candidates", "--lora_r"],
        "bon-sft": ["--num_candidates", "--load_in_4bit"],
        "cache-ref-rewards": ["--num_reference_samples", "--reference_cache_batch_size"],
        "eval": ["--checkpoints", "--bon_ns", "--num_reference_samples", "--min_p", "--repetition_penalty"],
        "demo": ["--steps", "--quick", "--output-dir", "--seed"],
    }[command]
    for flag in expected:
        assert flag in out


def test_prompt_transform_is_deterministic(tiny_kit):
    from datasets import Dataset
    from transformers import AutoTokenizer

    from trl_bon.scripts.utils import BoNScriptArguments, apply_prompt_transform, make_prompts

    tokenizer = AutoTokenizer.from_pretrained(tiny_kit["policy"])
    data = Dataset.from_dict({"text": TEXTS, "label": [1] * len(TEXTS)})
    first = make_prompts(data, tokenizer, "text", 2, 3, seed=0)
    assert first.column_names == ["label", "prompt"]
    assert first["prompt"] == make_prompts(data, tokenizer, "text", 2, 3, seed=0)["prompt"]
    for prompt, text in zip(first["prompt"], TEXTS, strict=True):
        assert text.startswith(prompt) and 2 <= len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) <= 3
    with pytest.raises(ValueError, match="prompt_column"):
        make_prompts(data, tokenizer, "missing", 2, 3, seed=0)
    # `--prompt_max_tokens` alone is refused by the scripts too, not silently ignored
    with pytest.raises(ValueError, match="Set both `prompt_min_tokens` and `prompt_max_tokens`"):
        apply_prompt_transform(data, BoNScriptArguments(prompt_max_tokens=8), tiny_kit["policy"])
    assert apply_prompt_transform(data, BoNScriptArguments(), tiny_kit["policy"]) is data


def test_demo_quick(tmp_path, capsys):
    from trl_bon.scripts.cli import main

    assert main(["demo", "--quick", "--output-dir", str(tmp_path), "--seed", "0"]) == 0
    data = json.loads((tmp_path / "demo.json").read_text())
    history = data["history"]
    assert history[0]["step"] == 0 and history[-1]["step"] == data["settings"]["steps"]
    assert history[0]["kl_ref"] == pytest.approx(0.0, abs=1e-6)
    assert history[-1]["reward"] > history[0]["reward"] + 0.5  # J-BOND moves towards Best-of-N
    assert history[-1]["kl_to_bon2"] < history[0]["kl_to_bon2"]
    assert [b["n"] for b in data["bon"]] == [2, 4, 8, 16]
    assert data["bon"][1]["kl_ref"] == pytest.approx(0.595834, abs=1e-5)  # exact: KL(Bo4‖π_ref) of the toy task
    assert (tmp_path / "demo.png").read_bytes()[:4] == b"\x89PNG"
    out = capsys.readouterr().out
    assert str(tmp_path / "demo.json") in out and "closest Best-of-N" in out


def test_jbond_two_cpu_processes(common, tmp_path):
    """`trl-bon jbond --num_processes 2` without a GPU runs two processes (through torchrun; accelerate would
    silently start one)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TRL_BON_LAUNCH": "1", "CUDA_VISIBLE_DEVICES": ""}
    argv = [
        sys.executable,
        "-m",
        "trl_bon.scripts.cli",
        "jbond",
        *common,
        *TRAIN,
        "--max_steps",
        "1",
        "--output_dir",
        str(tmp_path),
        "--save_strategy",
        "no",
        "--per_device_train_batch_size",
        "6",
        "--num_processes",
        "2",
    ]
    result = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "starting 2 CPU processes with torchrun" in result.stderr
    assert "Training completed (2 process(es))." in result.stdout
    assert (tmp_path / "model.safetensors").is_file()
