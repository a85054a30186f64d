"""The reference-reward cache (trl_bon.ref_cache): determinism, resuming, validation, the dataset join."""

import json

import pytest
from datasets import Dataset

from trl_bon.ref_cache import (
    add_reference_rewards,
    build_reference_reward_cache,
    load_reference_reward_cache,
    prompt_id,
)
from trl_bon.rewards import RewardScorer
from trl_bon.sampling import GenerationSettings, Sampler


SETTINGS = GenerationSettings(max_completion_length=4)


class CountingReward:
    """Reward callable (length of the completion ids plus the first id) that counts scored completions and can be
    told to fail on its k-th call, to simulate a build killed half-way."""

    __name__ = "counting_reward"

    def __init__(self, fail_on_call: int | None = None):
        self.calls, self.scored, self.fail_on_call = 0, 0, fail_on_call

    def __call__(self, completion_ids, **kwargs):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt("simulated kill")
        self.scored += len(completion_ids)
        return [float(len(ids) + (ids[0] if ids else 0) / 1000) for ids in completion_ids]


#: A module-level table read by `table_reward`: editing it changes the rewards without changing the source.
REWARD_TABLE = {"scale": 1.0}


def _scaled(ids):  # a helper of the same module, reading the table
    return REWARD_TABLE["scale"] * len(ids)


def table_reward(completion_ids, **kwargs):
    return [_scaled(ids) for ids in completion_ids]


@pytest.fixture(scope="module")
def prompts():
    return Dataset.from_dict({"prompt": ["the cat", "tell me", "once upon", "the movie", "the food", "the cat"]})


@pytest.fixture(autouse=True)
def two_prompts_per_shard(monkeypatch):
    import trl_bon.ref_cache

    monkeypatch.setattr(trl_bon.ref_cache, "SHARD_SAMPLES", 6)  # M = 3: shards of 2 prompts


def _build(kit, dataset, out, reward, settings=SETTINGS, seed=0, **kw):
    sampler = Sampler(kit["policy"], settings, batch_size=8, seed=seed, progress=False)
    return build_reference_reward_cache(sampler, dataset, reward, 3, out, **kw)


def test_prompt_id_is_canonical_json_hash():
    assert prompt_id("abc") == prompt_id("abc") != prompt_id("abd")
    a = [{"role": "user", "content": "hi"}]
    b = [{"content": "hi", "role": "user"}]  # key order does not matter
    assert prompt_id(a) == prompt_id(b) != prompt_id("hi")


def test_build_layout_and_determinism(tiny_kit, prompts, tmp_path):
    cache = _build(tiny_kit, prompts, tmp_path / "a", CountingReward())
    assert len(cache) == 5  # "the cat" appears twice, sampled once
    assert all(len(r) == 3 for r in cache.rewards.values())
    meta = json.loads((tmp_path / "a" / "metadata.json").read_text())
    assert meta["num_samples"] == 3 and meta["seed"] == 0
    assert meta["generation_settings"]["max_completion_length"] == 4
    assert meta["reward"]["reward_funcs"] == ["counting_reward"] and meta["reward"]["reward_weights"] == [1.0]
    assert meta["reward"]["identities"][0].startswith("tests.test_ref_cache.CountingReward:")
    assert set(meta["model"]) == {"config", "weights"} and meta["model_name"] == tiny_kit["policy"]
    assert sorted(p.name for p in (tmp_path / "a" / "shards").iterdir()) == [
        "shard-00000.jsonl",
        "shard-00001.jsonl",
        "shard-00002.jsonl",
    ]
    again = _build(tiny_kit, prompts, tmp_path / "b", CountingReward())
    assert again.rewards == cache.rewards
    other = _build(tiny_kit, prompts, tmp_path / "c", CountingReward(), seed=1)
    assert other.rewards != cache.rewards


def test_resume_after_kill_recomputes_nothing(tiny_kit, prompts, tmp_path):
    reference = _build(tiny_kit, prompts, tmp_path / "full", CountingReward())
    killed = CountingReward(fail_on_call=3)  # shards 0 and 1 finish, shard 2 dies
    with pytest.raises(KeyboardInterrupt):
        _build(tiny_kit, prompts, tmp_path / "resumed", killed)
    assert len(load_reference_reward_cache(tmp_path / "resumed")) == 4
    assert not list((tmp_path / "resumed" / "shards").glob("*.tmp"))
    resumed_reward = CountingReward()
    resumed = _build(tiny_kit, prompts, tmp_path / "resumed", resumed_reward)
    assert resumed_reward.scored == 1 * 3  # only the last prompt: 1 prompt x M=3
    assert resumed.rewards == reference.rewards  # equal to the uninterrupted build
    rerun = CountingReward()
    _build(tiny_kit, prompts, tmp_path / "resumed", rerun)
    assert rerun.calls == 0


def test_resume_with_other_settings_is_refused(tiny_kit, prompts, tmp_path):
    _build(tiny_kit, prompts.select(range(2)), tmp_path / "c", CountingReward())
    with pytest.raises(ValueError, match="temperature: cache has 1.0, expected 0.7"):
        _build(tiny_kit, prompts, tmp_path / "c", CountingReward(), settings=GenerationSettings(4, temperature=0.7))


def test_cache_refusal_is_the_shared_provenance_check(tiny_kit, prompts, tmp_path):
    from trl_bon.provenance import StaleResultError

    cache = _build(tiny_kit, prompts.select(range(2)), tmp_path / "c", CountingReward())
    with pytest.raises(
        StaleResultError, match=r"fields that differ: 'generation_settings'\): generation_settings\.top_p"
    ):
        cache.check_compatible(GenerationSettings(4, top_p=0.9))
    with pytest.raises(StaleResultError, match=r"fields that differ: 'generation_settings'\).*Use a new `output_dir`"):
        _build(tiny_kit, prompts, tmp_path / "c", CountingReward(), settings=GenerationSettings(4, top_p=0.9))


def test_check_compatible_lists_differences(tiny_kit, prompts, tmp_path):
    cache = _build(tiny_kit, prompts.select(range(2)), tmp_path / "c", CountingReward())
    signature = RewardScorer(CountingReward()).signature()
    cache.check_compatible(SETTINGS, signature)
    with pytest.raises(ValueError) as error:
        cache.check_compatible(
            GenerationSettings(max_completion_length=8, top_p=0.9),
            {**signature, "reward_funcs": ["other"], "reward_weights": [2.0]},
        )
    message = str(error.value)
    for part in ("max_completion_length", "top_p", "reward.reward_funcs", "reward.reward_weights"):
        assert part in message
    assert "cache-ref-rewards" in message


def test_join_and_missing_prompts(tiny_kit, prompts, tmp_path):
    cache = _build(tiny_kit, prompts.select(range(3)), tmp_path / "c", CountingReward())
    joined = add_reference_rewards(prompts.select(range(3)), tmp_path / "c")
    assert joined["ref_rewards"] == [cache.rewards[prompt_id(p)] for p in prompts["prompt"][:3]]
    with pytest.raises(ValueError, match=r"2 of 5 distinct prompts .*trl-bon cache-ref-rewards"):
        add_reference_rewards(prompts, cache)


def test_prompt_id_column(tiny_kit, prompts, tmp_path):
    data = prompts.add_column("uid", [f"u{i}" for i in range(len(prompts))])
    cache = _build(tiny_kit, data, tmp_path / "c", CountingReward(), prompt_id_column="uid")
    assert sorted(cache.rewards) == [f"u{i}" for i in range(6)]  # user ids: the repeated prompt is a new row
    assert add_reference_rewards(data, cache)["ref_rewards"][0] == cache.rewards["u0"]


def test_non_finite_reward_names_the_function(tiny_kit, prompts, tmp_path):
    def bad_reward(completions, **kwargs):
        return [float("inf")] * len(completions)

    with pytest.raises(ValueError, match="bad_reward"):
        _build(tiny_kit, prompts.select(range(1)), tmp_path / "c", bad_reward)


class TestContentKeys:
    def test_same_name_other_reward_is_refused(self, tiny_kit, prompts, tmp_path):
        _build(tiny_kit, prompts.select(range(2)), tmp_path / "c", CountingReward())

        class CountingReward2(CountingReward):  # another function that reports the same __name__
            def __call__(self, completion_ids, **kwargs):
                return [0.0] * len(completion_ids)

        with pytest.raises(ValueError, match=r"reward\.identities"):
            _build(tiny_kit, prompts, tmp_path / "c", CountingReward2())

    def test_edited_module_level_table_is_refused(self, tiny_kit, prompts, tmp_path, monkeypatch):
        """The reward reads a global table through a helper: same source, other rewards after the edit."""
        cache = _build(tiny_kit, prompts.select(range(2)), tmp_path / "c", table_reward)
        same = RewardScorer(table_reward).signature()
        cache.check_compatible(reward_signature=same)
        monkeypatch.setitem(REWARD_TABLE, "scale", 2.0)
        with pytest.raises(ValueError, match=r"reward\.identities"):
            _build(tiny_kit, prompts, tmp_path / "c", table_reward)
        with pytest.raises(ValueError, match=r"reward\.identities"):
            cache.check_compatible(reward_signature=RewardScorer(table_reward).signature())

    def test_tokenizer_and_chat_template_are_keys(self, tiny_kit, prompts, tmp_path):
        """A cache built on one chat template's prompt tokens is refused under another template."""
        from transformers import AutoTokenizer

        _build(tiny_kit, prompts.select(range(2)), tmp_path / "c", CountingReward())
        tokenizer = AutoTokenizer.from_pretrained(tiny_kit["policy"], padding_side="left")
        tokenizer.chat_template = "{% for m in messages %}[{{ m['content'] }}]{% endfor %}"
        sampler = Sampler(tiny_kit["policy"], SETTINGS, tokenizer=tokenizer, batch_size=8, progress=False)
        with pytest.raises(ValueError, match=r"tokenizer\.chat_template"):
            build_reference_reward_cache(sampler, prompts, CountingReward(), 3, tmp_path / "c")
        cache = load_reference_reward_cache(tmp_path / "c")
        with pytest.raises(ValueError, match=r"tokenizer\.chat_template"):
            cache.check_compatible(tokenizer_identity=sampler.identity()["tokenizer"])

    def test_model_is_keyed_by_content_not_path(self, tiny_kit, prompts, tmp_path):
        import shutil

        from trl_bon.toy import build_tiny_kit

        _build(tiny_kit, prompts.select(range(2)), tmp_path / "c", CountingReward())
        moved = shutil.copytree(tiny_kit["policy"], tmp_path / "moved_policy")
        resumed = CountingReward()
        _build({"policy": str(moved)}, prompts, tmp_path / "c", resumed)  # same weights elsewhere: resumes
        assert resumed.scored == 3 * 3
        other = build_tiny_kit(tmp_path / "other", seed=1)  # same path layout, other weights
        with pytest.raises(ValueError, match=r"model\.weights"):
            _build(other, prompts, tmp_path / "c", CountingReward())

    def test_generation_kwargs_and_chat_template_args_are_keys(self, tiny_kit, prompts, tmp_path):
        cache = _build(tiny_kit, prompts.select(range(2)), tmp_path / "c", CountingReward())
        other = GenerationSettings(4, generation_kwargs={"no_repeat_ngram_size": 2})
        with pytest.raises(ValueError, match="generation_kwargs"):
            cache.check_compatible(other)
        with pytest.raises(ValueError, match="chat_template_kwargs"):
            _build(
                tiny_kit,
                prompts,
                tmp_path / "c",
                CountingReward(),
                GenerationSettings(4, chat_template_kwargs={"x": 1}),
            )


class TestDamagedCaches:
    @pytest.fixture
    def cache_dir(self, tiny_kit, prompts, tmp_path):
        _build(tiny_kit, prompts, tmp_path / "c", CountingReward())
        return tmp_path / "c"

    @pytest.mark.parametrize(
        "line, message",
        [
            (None, "damaged at line 2"),  # truncated mid-line
            ('{"prompt_id": "a", "ref_rewards": [NaN, 1.0, 2.0]}', "holds nan"),
            ('{"prompt_id": "a", "ref_rewards": []}', "non-empty list"),
            ('{"prompt_id": "a", "ref_rewards": ["1.0", 2.0, 3.0]}', "holds '1.0'"),
            ('{"prompt_id": "a", "ref_rewards": [1.0]}', "holds 1 rewards, not M = 3"),
            ('["not", "a", "row"]', "is not a cache row"),
        ],
    )
    def test_bad_shard_is_named(self, cache_dir, line, message):
        shard = cache_dir / "shards" / "shard-00001.jsonl"
        text = shard.read_text()
        shard.write_text(text[: len(text) - 20] if line is None else text.splitlines()[0] + "\n" + line + "\n")
        with pytest.raises(ValueError, match=message) as error:
            load_reference_reward_cache(cache_dir)
        assert str(shard) in str(error.value) and "Delete that file" in str(error.value)

    def test_garbage_metadata_is_named(self, cache_dir, tiny_kit, prompts):
        (cache_dir / "metadata.json").write_text('{"format_version": 2, "mod')
        with pytest.raises(ValueError, match="metadata.json is damaged"):
            load_reference_reward_cache(cache_dir)
        with pytest.raises(ValueError, match="metadata.json is damaged"):
            _build(tiny_kit, prompts, cache_dir, CountingReward())

    @pytest.mark.parametrize("key", ["num_samples", "prompt_id"])
    def test_metadata_without_a_key_is_named(self, cache_dir, key):
        meta = json.loads((cache_dir / "metadata.json").read_text())
        del meta[key]
        (cache_dir / "metadata.json").write_text(json.dumps(meta))
        with pytest.raises(ValueError, match=f"metadata.json has no `{key}`: it is damaged"):
            load_reference_reward_cache(cache_dir)

    def test_deleted_shard_is_resampled_identically(self, cache_dir, tiny_kit, prompts):
        before = load_reference_reward_cache(cache_dir).rewards
        (cache_dir / "shards" / "shard-00001.jsonl").unlink()
        again = _build(tiny_kit, prompts, cache_dir, CountingReward())
        assert again.rewards.keys() == before.keys()


def test_vbon_trainer_refuses_a_cache_of_another_reward_or_model(tiny_kit, tmp_path):
    """The join in `VBoNTrainer`: a reward with the same name but other code, or another π_ref, is refused."""
    from datasets import Dataset

    from tests.helpers import cpu_args
    from trl_bon import VBoNConfig, VBoNTrainer
    from trl_bon.toy import build_tiny_kit

    data = Dataset.from_dict({"prompt": ["the cat", "tell me"]})
    _build(tiny_kit, data, tmp_path / "cache", CountingReward(), GenerationSettings(4))
    args = VBoNConfig(
        str(tmp_path / "out"),
        **cpu_args(
            num_candidates=4,
            max_completion_length=4,
            num_generations=2,
            per_device_train_batch_size=2,
            reference_cache_dir=str(tmp_path / "cache"),
        ),
    )

    def counting_reward(completion_ids, **kwargs):  # same __name__ as the cache's reward, other rewards
        return [0.0] * len(completion_ids)

    with pytest.raises(ValueError, match=r"reward\.identities"):
        VBoNTrainer(tiny_kit["policy"], counting_reward, args=args, train_dataset=data)
    other = build_tiny_kit(tmp_path / "other", seed=1)
    with pytest.raises(ValueError, match=r"model\.weights"):
        VBoNTrainer(other["policy"], CountingReward(), args=args, train_dataset=data)
    VBoNTrainer(tiny_kit["policy"], CountingReward(), args=args, train_dataset=data)  # the cache's own: accepted


def test_bon_sft_data_is_keyed_by_model_and_reward_content(tiny_kit, tmp_path):
    """`trl-bon bon-sft`'s saved Best-of-N data (same output_dir) is reused only for the same model and reward
    content."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    from tests.helpers import cpu_args
    from trl_bon import BoNSFTConfig
    from trl_bon.rewards import RewardScorer
    from trl_bon.scripts.bon_sft import round_data, round_metadata
    from trl_bon.toy import build_tiny_kit

    data = Dataset.from_dict({"prompt": ["the cat", "tell me"]})
    kw = cpu_args(num_candidates=2, max_completion_length=3, per_device_train_batch_size=2, max_steps=1)
    args = BoNSFTConfig(str(tmp_path / "out"), **kw)
    directory = tmp_path / "out" / "_bon_data" / "round-1"

    def data_step(policy, reward):
        scorer = RewardScorer([reward])
        metadata = round_metadata(1, data["prompt"], scorer, args, policy)
        return round_data(directory, metadata, policy, data, scorer, AutoTokenizer.from_pretrained(policy), args)

    data_step(tiny_kit["policy"], CountingReward())  # samples, saves round 1
    again = CountingReward()
    data_step(tiny_kit["policy"], again)
    assert again.calls == 0  # same model, same reward: the saved data is reused

    class CountingReward2(CountingReward):  # same __name__, other rewards
        def __call__(self, completion_ids, **kwargs):
            return [0.0] * len(completion_ids)

    with pytest.raises(ValueError, match="other settings.*reward_signature") as error:
        data_step(tiny_kit["policy"], CountingReward2())
    # The round record goes through the shared provenance check: the field is named first, then both values.
    assert "fields that differ: 'reward_signature'): reward_signature.identities" in str(error.value)
    import shutil

    shutil.rmtree(directory / "dataset")  # the round's data deleted by hand, its metadata.json left
    with pytest.raises(ValueError, match=r"round-1 records a finished round but its data .* is missing.*Delete"):
        data_step(tiny_kit["policy"], CountingReward())
    shutil.rmtree(directory)
    data_step(tiny_kit["policy"], CountingReward())  # the fix the message names: sampled again
    other = build_tiny_kit(tmp_path / "other", seed=1)
    with pytest.raises(ValueError, match="other settings.*'model'"):
        data_step(other["policy"], CountingReward())


def test_bon_sft_data_is_keyed_by_the_tables_a_reward_reads(tiny_kit, tmp_path, monkeypatch):
    """Editing a module-level table the reward reads (same source) makes the saved round data stale: refused."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    from tests.helpers import cpu_args
    from trl_bon import BoNSFTConfig
    from trl_bon.rewards import RewardScorer
    from trl_bon.scripts.bon_sft import round_data, round_metadata

    data = Dataset.from_dict({"prompt": ["the cat", "tell me"]})
    kw = cpu_args(num_candidates=2, max_completion_length=3, per_device_train_batch_size=2, max_steps=1)
    args = BoNSFTConfig(str(tmp_path / "out"), **kw)
    directory = tmp_path / "out" / "_bon_data" / "round-1"

    def data_step():
        scorer = RewardScorer([table_reward])
        metadata = round_metadata(1, data["prompt"], scorer, args, tiny_kit["policy"])
        tokenizer = AutoTokenizer.from_pretrained(tiny_kit["policy"])
        return round_data(directory, metadata, tiny_kit["policy"], data, scorer, tokenizer, args)

    data_step()
    data_step()  # unchanged: reused
    monkeypatch.setitem(REWARD_TABLE, "scale", -1.0)  # the Best-of-N choice flips to the shortest completion
    with pytest.raises(ValueError, match="other settings.*reward_signature"):
        data_step()
