"""Bad input fails early (in the config, or in the trainer before any model loads or any sampling) with an error that
names the fix. Trainers get a model path that does not exist: reaching the model load would raise another error.

BoN-SFT's trainer only trains on data made before it, so its input checks run where that data is made: in the sampler
(`best_of_n`) before the model loads, and in `trl-bon bon-sft`'s `main()` before any reward model loads or any
sampling."""

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
    from trl_bon import JBondTrainer, VBoNTrainer

    trainer = {"jbond": JBondTrainer, "vbon": VBoNTrainer}[kind]
    return trainer(model, token_sum_reward, args=args, train_dataset=dataset, **kwargs)


def _best_of_n(model, prompts, reward_funcs=token_sum_reward):
    """BoN-SFT's data step (as `trl-bon bon-sft` runs it before the trainer), Best-of-2 of 4 tokens."""
    from trl_bon import best_of_n
    from trl_bon.sampling import GenerationSettings, Sampler

    sampler = Sampler(model, GenerationSettings(max_completion_length=4), progress=False)
    return best_of_n(sampler, prompts, reward_funcs, 2)


@pytest.fixture
def no_model_loads(monkeypatch):
    """Fails the test if the sampler gets as far as loading its model."""
    import trl_bon.sampling

    def load_causal_lm(*args, **kwargs):
        raise AssertionError("the check ran after the sampler loaded its model")

    monkeypatch.setattr(trl_bon.sampling, "load_causal_lm", load_causal_lm)


@pytest.fixture
def bon_sft_script(tiny_kit, tmp_path, no_model_loads):
    """Runs `trl-bon bon-sft` in-process on the given prompts (no model may load for sampling)."""
    import json

    from trl_bon.scripts import bon_sft

    def run(prompts, output_dir, *extra):
        folder = tmp_path / "prompts"
        folder.mkdir(exist_ok=True)
        (folder / "train.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
        argv = ["--model_name_or_path", tiny_kit["policy"], "--reward_funcs", f"{__name__}.token_sum_reward"]
        argv += ["--dataset_name", str(folder), "--output_dir", str(output_dir), "--num_candidates", "2"]
        argv += ["--max_completion_length", "4", "--use_cpu", "true", "--bf16", "false", "--report_to", "none"]
        return bon_sft.cli([*argv, *extra])

    return run


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


def test_jbond_refuses_image_prompts_before_the_model_loads(tmp_path):
    """J-BOND's slot routing passes no images to generation, so an image column is refused at init (the model path is
    missing: a later check would name it), in the train and in a named eval dataset alike."""
    from datasets import Dataset

    images = Dataset.from_dict({"prompt": ["the cat", "a dog"], "images": [[], []]})
    text = Dataset.from_dict({"prompt": ["the cat", "a dog"]})
    with pytest.raises(
        NotImplementedError, match=r"JBondTrainer supports text-only prompts; remove the images from `train_dataset`"
    ):
        _trainer("jbond", _args("jbond", tmp_path), images)
    with pytest.raises(NotImplementedError, match=r"remove the images from `eval_dataset\['pets'\]`"):
        _trainer("jbond", _args("jbond", tmp_path), text, eval_dataset={"pets": images})


@pytest.mark.parametrize("kind", ["jbond", "vbon"])
def test_dataset_smaller_than_one_batch(kind, tmp_path):
    """J-BOND: 6 rows per device / 3 generations = 2 prompts per batch; vBoN: 4 rows / 2 generations = 2."""
    from datasets import Dataset

    with pytest.raises(ValueError, match=r"1 prompt\(s\), fewer than the 2 .*0 steps. Add prompts, or lower"):
        _trainer(kind, _args(kind, tmp_path), Dataset.from_dict({"prompt": ["the cat"]}))


def test_bon_sft_dataset_smaller_than_one_batch(bon_sft_script, tmp_path):
    """SFT keeps a short last batch, unless `dataloader_drop_last` drops it: then 1 prompt < 4 trains 0 steps."""
    args = ["--per_device_train_batch_size", "4", "--dataloader_drop_last", "true"]
    with pytest.raises(ValueError, match=r"1 example\(s\), fewer than one batch \(4 = .*0 steps. Add prompts"):
        bon_sft_script(["the cat"], tmp_path / "out", *args)


EMPTY_PROMPTS = ["the cat", "", "tell me", "  "]
EMPTY_PROMPTS_ERROR = r"2 empty prompt\(s\) \(rows \[1, 3\]\).*dataset.filter"


@pytest.mark.parametrize("kind", ["jbond", "vbon"])
def test_empty_prompts(kind, tmp_path):
    from datasets import Dataset

    with pytest.raises(ValueError, match=EMPTY_PROMPTS_ERROR):
        _trainer(kind, _args(kind, tmp_path), Dataset.from_dict({"prompt": EMPTY_PROMPTS}))


def test_best_of_n_refuses_empty_prompts_before_generating(tiny_kit):
    with pytest.raises(ValueError, match=r"`prompts` has 2 empty prompt\(s\) \(rows \[1, 3\]\).*dataset.filter"):
        _best_of_n(tiny_kit["policy"], EMPTY_PROMPTS)


def test_bon_sft_empty_prompts(bon_sft_script, tmp_path):
    """In the script, before the model loads."""
    with pytest.raises(ValueError, match=EMPTY_PROMPTS_ERROR):
        bon_sft_script(EMPTY_PROMPTS, tmp_path / "out")


UNWRITABLE_ERROR = "`output_dir` .*a_file/out.* is not writable.*Pass a writable"


@pytest.mark.parametrize("kind", ["jbond", "vbon"])
def test_unwritable_output_dir_fails_at_init(kind, tmp_path, prompt_dataset):
    """A folder that cannot be created (its parent is a file: fails even for root) fails at init, not at the first
    save after all the sampling and training."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match=UNWRITABLE_ERROR):
        _trainer(kind, _args(kind, blocker / "out"), prompt_dataset)


def test_bon_sft_unwritable_output_dir_fails_before_sampling(bon_sft_script, tmp_path):
    """`trl-bon bon-sft` saves each round's data into `output_dir`: an unwritable one fails before sampling it."""
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(PermissionError, match=UNWRITABLE_ERROR):
        bon_sft_script(["the cat", "tell me"], blocker / "out")


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
def test_prompts_longer_than_the_context_window(kind, model, tiny_gpt2, tiny_kit, tmp_path, request):
    """GPT-2 (32 positions) would crash inside `generate`, Llama (256) silently run past its trained length.
    BoN-SFT: the sampler refuses them before it generates anything."""
    from datasets import Dataset

    path, window = (tiny_gpt2, 32) if model == "gpt2" else (tiny_kit["policy"], 256)
    long_prompt = " ".join(["the cat sat on the mat"] * (window // 4))
    dataset = Dataset.from_dict({"prompt": ["the cat", long_prompt] * 4})
    if kind == "bon_sft":
        with pytest.raises(
            ValueError, match=rf"4 prompt\(s\) \(rows \[1, 3, 5, 7\].*context window of {window}.*Drop or shorten"
        ):
            _best_of_n(path, dataset["prompt"])
        return
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
        (string_reward, "'string_reward' returned str 'good' for completion 0; each reward must be a number"),
        (scalar_reward, "'scalar_reward' returned float 1.0; it must return a list of \\d+ floats"),
        (matrix_reward, "'matrix_reward' returned a Tensor of shape \\(\\d+, 2\\); it must return one reward"),
    ],
    ids=["strings", "scalar", "2d_tensor"],
)
@pytest.mark.parametrize("kind", ["jbond", "bon_sft"])
def test_malformed_rewards_name_the_function(kind, reward, message, tiny_kit, prompt_dataset, tmp_path):
    """J-BOND at its first reward call; BoN-SFT in `best_of_n`'s scoring (the `RewardScorer` every sampler uses)."""
    from trl_bon import JBondTrainer

    with pytest.raises(ValueError, match=message):
        if kind == "bon_sft":
            _best_of_n(tiny_kit["policy"], prompt_dataset["prompt"][:4], [reward, bool_reward])
        else:
            args = _args("jbond", tmp_path, max_steps=1)
            JBondTrainer(tiny_kit["policy"], [reward, bool_reward], args=args, train_dataset=prompt_dataset).train()


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


@pytest.mark.parametrize("kind", ["jbond", "vbon"])
def test_causal_lm_as_reward_model_is_refused_before_loading(kind, tiny_kit, prompt_dataset, tmp_path, monkeypatch):
    """RLOO would load the causal LM with `AutoModelForSequenceClassification` and a random score head."""
    import transformers

    from trl_bon import JBondTrainer, VBoNTrainer

    def no_load(*args, **kwargs):
        raise AssertionError("the reward model was loaded before the check")

    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained", no_load)
    trainer = {"jbond": JBondTrainer, "vbon": VBoNTrainer}[kind]
    with pytest.raises(ValueError, match="is a .*ForCausalLM, not a sequence classifier"):
        trainer(tiny_kit["policy"], tiny_kit["policy"], args=_args(kind, tmp_path), train_dataset=prompt_dataset)


@pytest.mark.parametrize("kind", ["jbond", "vbon"])
def test_reward_model_with_another_tokenizer_is_refused(kind, tiny_kit, one_token_task, prompt_dataset, tmp_path):
    """The reward model embeds 320 tokens; a 6-token tokenizer would feed it ids of another vocabulary."""
    from transformers import AutoTokenizer

    from trl_bon import JBondTrainer, VBoNTrainer

    trainer = {"jbond": JBondTrainer, "vbon": VBoNTrainer}[kind]
    other = AutoTokenizer.from_pretrained(one_token_task.model_path)
    with pytest.raises(ValueError, match="has 6 tokens but the model embeds 320.*reward_processing_classes"):
        trainer(
            tiny_kit["policy"],
            tiny_kit["reward"],
            args=_args(kind, tmp_path),
            train_dataset=prompt_dataset,
            reward_processing_classes=[other],
        )


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")]], ids=["empty", "nan"])
def test_vbon_bad_reference_rewards_column(bad, prompt_dataset, tmp_path):
    """A user-joined `ref_rewards` column with an empty or NaN row: named at init, before the model loads (the model
    path does not exist), instead of failing the first step."""
    column = [[0.1, 0.2]] * len(prompt_dataset)
    column[5] = bad
    data = prompt_dataset.add_column("ref_rewards", column)
    with pytest.raises(ValueError, match=r"Row 5 of `train_dataset` has 'ref_rewards' = .*list of finite numbers"):
        _trainer("vbon", _args("vbon", tmp_path), data)
