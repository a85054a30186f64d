"""Bad input fails early (in the config, or in the trainer before any model loads or any sampling) with an error that
names the fix. Trainers get a model path that does not exist: reaching the model load would raise another error."""

import os
import stat

import pytest

from tests.helpers import cpu_args


MISSING_MODEL = "/nonexistent/model"


def token_sum_reward(completion_ids, **kwargs):
    return [float(sum(ids) % 7) for ids in completion_ids]


def _args(kind, output_dir, **overrides):
    from trl_bon import BoNSFTConfig, JBondConfig, VBoNConfig

    config = {"jbond": JBondConfig, "vbon": VBoNConfig, "bon_sft": BoNSFTConfig}[kind]
    kwargs = cpu_args(output_dir=str(output_dir), max_completion_length=4)
    if kind != "jbond":
        kwargs["num_candidates"] = 2
    if kind == "vbon":
        kwargs["per_device_train_batch_size"] = 4
    kwargs.update(overrides)
    return config(**kwargs)


def _trainer(kind, args, dataset, model=MISSING_MODEL, **kwargs):
    from trl_bon import BoNSFTTrainer, JBondTrainer, VBoNTrainer

    trainer = {"jbond": JBondTrainer, "vbon": VBoNTrainer, "bon_sft": BoNSFTTrainer}[kind]
    return trainer(model, token_sum_reward, args=args, train_dataset=dataset, **kwargs)


@pytest.mark.parametrize("kind", ["jbond", "vbon"])
@pytest.mark.parametrize(
    ("overrides", "fix"),
    [
        ({"temperature": 0.0}, "Set `temperature=1.0`"),
        ({"max_completion_length": 0}, "e.g. `max_completion_length=256`"),
    ],
    ids=["temperature_0", "max_completion_length_0"],
)
def test_sampling_settings_are_checked_in_the_config(kind, overrides, fix, tmp_path):
    with pytest.raises(ValueError, match=fix):
        _args(kind, tmp_path, **overrides)


def test_vbon_negative_beta_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="`beta` must be >= 0, got -0.1.*Leave `beta` unset"):
        _args("vbon", tmp_path, beta=-0.1)


@pytest.mark.parametrize("kind", ["jbond", "vbon"])
def test_iterable_dataset_without_prompt(kind, tmp_path):
    from datasets import IterableDataset

    def examples():
        yield {"question": "the cat"}

    dataset = IterableDataset.from_generator(examples)
    assert dataset.column_names is None  # unknown until read: RLOO would fail with a KeyError at step 1
    with pytest.raises(ValueError, match=r"have no `prompt` \(keys: \['question'\]\).*rename_column"):
        _trainer(kind, _args(kind, tmp_path, max_steps=1), dataset)


@pytest.mark.parametrize("kind", ["jbond", "vbon"])
def test_dataset_smaller_than_one_batch(kind, tmp_path):
    """J-BOND: 6 rows per device / 3 generations = 2 prompts per batch; vBoN: 4 rows / 2 generations = 2."""
    from datasets import Dataset

    with pytest.raises(ValueError, match=r"1 prompt\(s\), fewer than the 2 .*0 steps. Add prompts, or lower"):
        _trainer(kind, _args(kind, tmp_path), Dataset.from_dict({"prompt": ["the cat"]}))


@pytest.mark.parametrize("kind", ["jbond", "vbon", "bon_sft"])
def test_empty_prompts(kind, tmp_path):
    from datasets import Dataset

    dataset = Dataset.from_dict({"prompt": ["the cat", "", "tell me", "  "]})
    with pytest.raises(ValueError, match=r"2 empty prompt\(s\) \(rows \[1, 3\]\).*dataset.filter"):
        _trainer(kind, _args(kind, tmp_path), dataset)


@pytest.mark.parametrize("kind", ["jbond", "vbon", "bon_sft"])
def test_unwritable_output_dir_fails_at_init(kind, tmp_path, prompt_dataset):
    """A folder that cannot be created (its parent is a file: fails even for root) fails at init, not at the first
    save after all the sampling and training."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match="`output_dir` .*a_file/out.* is not writable.*Pass a writable"):
        _trainer(kind, _args(kind, blocker / "out"), prompt_dataset)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_dir_fails_at_init(tmp_path, prompt_dataset):
    read_only = tmp_path / "read_only"
    read_only.mkdir()
    read_only.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        with pytest.raises(PermissionError, match="is not writable"):
            _trainer("jbond", _args("jbond", read_only), prompt_dataset)
    finally:
        read_only.chmod(stat.S_IRWXU)


# ----------------------------------------------------------------------------------------------------------------
# Checks that need the tokenizer and the model's config (after the model loads, before any sampling).


@pytest.fixture(scope="module")
def tiny_gpt2(tiny_kit, tmp_path_factory):
    """A tiny GPT-2 (absolute positions, 32 of them) with the kit's tokenizer."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_kit["policy"])
    config = GPT2Config(
        vocab_size=len(tokenizer), n_positions=32, n_embd=16, n_layer=1, n_head=2, eos_token_id=tokenizer.eos_token_id
    )
    path = tmp_path_factory.mktemp("gpt2")
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "model"), [("jbond", "gpt2"), ("vbon", "llama"), ("bon_sft", "gpt2")])
def test_prompts_longer_than_the_context_window(kind, model, tiny_gpt2, tiny_kit, tmp_path):
    """GPT-2 (32 positions) would crash inside `generate`, Llama (256) silently run past its trained length."""
    from datasets import Dataset

    path, window = (tiny_gpt2, 32) if model == "gpt2" else (tiny_kit["policy"], 256)
    long_prompt = " ".join(["the cat sat on the mat"] * (window // 4))
    dataset = Dataset.from_dict({"prompt": ["the cat", long_prompt] * 4})
    with pytest.raises(
        ValueError, match=rf"4 prompt\(s\) \(rows \[1, 3, 5, 7\].*context window of {window}.*Drop or shorten"
    ):
        _trainer(kind, _args(kind, tmp_path), dataset, model=path)


def string_reward(completions, **kwargs):
    return ["good"] * len(completions)


def scalar_reward(completions, **kwargs):
    return 1.0


def matrix_reward(completions, **kwargs):
    import torch

    return torch.ones(len(completions), 2)


def bool_reward(completions, **kwargs):
    return [len(c) > 2 for c in completions]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("reward", "message"),
    [
        (string_reward, "'string_reward' returned a str \\('good'\\) among its rewards"),
        (scalar_reward, "'scalar_reward' returned a single float"),
        (matrix_reward, "'matrix_reward' returned a 2-D array of shape \\(\\d+, 2\\)"),
    ],
    ids=["strings", "scalar", "2d_tensor"],
)
def test_malformed_rewards_name_the_function(reward, message, tiny_kit, prompt_dataset, tmp_path):
    from trl_bon import JBondTrainer

    args = _args("jbond", tmp_path, max_steps=1)
    trainer = JBondTrainer(tiny_kit["policy"], [reward, bool_reward], args=args, train_dataset=prompt_dataset)
    with pytest.raises(ValueError, match=f"{message}; Return one number \\(or None\\) per completion"):
        trainer.train()


@pytest.mark.slow
def test_bool_rewards_are_numbers(tiny_kit, prompt_dataset, tmp_path):
    from trl_bon import JBondTrainer

    args = _args("jbond", tmp_path, max_steps=1)
    trainer = JBondTrainer(tiny_kit["policy"], bool_reward, args=args, train_dataset=prompt_dataset)
    trainer.train()
    assert trainer.state.global_step == 1
    assert trainer.reward_funcs == [bool_reward]  # the check wraps the functions only during the call


def test_demo_steps_0_is_refused():
    from trl_bon.scripts.demo import main

    with pytest.raises(SystemExit, match="--steps must be >= 1, got 0"):
        main(["--steps", "0"])
