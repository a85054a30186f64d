"""`RewardScorer` (offline reward scoring) against TRL's own `RLOOTrainer._calculate_rewards`, plus its conventions:
None → NaN, weighted nansum, async callables, extra columns, wrong lengths and non-finite rewards; and the early,
named errors for what TRL leaves to a crash: rewards of the wrong type, causal LMs as reward models, missing paths,
another model's tokenizer."""

import asyncio

import pytest
import torch

from tests.helpers import cpu_args
from trl_bon.rewards import RewardScorer


WEIGHTS = [0.5, 2.0, -1.0]


def length_reward(completions, **kwargs):
    return [float(len(str(c))) for c in completions]


async def async_id_reward(completion_ids, **kwargs):
    await asyncio.sleep(0)
    return [float(sum(ids) % 7) for ids in completion_ids]


def sometimes_none(completions, **kwargs):
    return [None if i % 2 else 1.0 for i in range(len(completions))]


@pytest.fixture(scope="module")
def rloo(tiny_kit, prompt_dataset, tmp_path_factory):
    """A live RLOOTrainer on the tiny kit: reward model + sync callable + async callable, weighted."""
    from trl import RLOOConfig, RLOOTrainer

    args = RLOOConfig(
        str(tmp_path_factory.mktemp("rloo")),
        **cpu_args(num_generations=2, per_device_train_batch_size=2, max_completion_length=8, reward_weights=WEIGHTS),
    )
    return RLOOTrainer(
        model=tiny_kit["policy"],
        reward_funcs=[tiny_kit["reward"], length_reward, async_id_reward],
        args=args,
        train_dataset=prompt_dataset,
    )


@pytest.fixture(scope="module")
def scorer(tiny_kit):
    return RewardScorer([tiny_kit["reward"], length_reward, async_id_reward], reward_weights=WEIGHTS)


def samples(tiny_kit, conversational: bool):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_kit["policy"])
    prompts = ["the cat", "tell me", "once upon", "the movie"]
    completions = [" sat on the mat", " a story", " a time there was", " was great and long"]
    completion_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in completions]
    if conversational:
        prompts = [[{"role": "user", "content": p}] for p in prompts]
        completions = [[{"role": "assistant", "content": c}] for c in completions]
    return prompts, completions, completion_ids


class TestParityWithTRL:
    @pytest.mark.parametrize("conversational", [False, True])
    def test_same_rewards_as_rloo(self, rloo, scorer, tiny_kit, conversational):
        prompts, completions, completion_ids = samples(tiny_kit, conversational)
        inputs = [{"prompt": p} for p in prompts]
        expected = rloo._calculate_rewards(inputs, prompts, completions, completion_ids).cpu()
        got = scorer(prompts, completions, completion_ids)
        assert got.shape == expected.shape == (4, 3)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        assert got[:, 0].std() > 0  # the reward model really scored distinct texts
        # RLOO's scalar reward: weighted nansum.
        torch.testing.assert_close(scorer.weighted(got), (expected * torch.tensor(WEIGHTS)).nansum(dim=1))

    def test_none_becomes_nan_like_rloo(self, rloo, tiny_kit):
        prompts, completions, completion_ids = samples(tiny_kit, False)
        scorer = RewardScorer([tiny_kit["reward"], sometimes_none, async_id_reward], reward_weights=WEIGHTS)
        rloo.reward_funcs[1] = sometimes_none
        try:
            expected = rloo._calculate_rewards([{"prompt": p} for p in prompts], prompts, completions, completion_ids)
        finally:
            rloo.reward_funcs[1] = length_reward
        torch.testing.assert_close(scorer(prompts, completions, completion_ids), expected.cpu(), equal_nan=True)


class TestRewardScorer:
    def test_none_is_nan_and_skipped_in_the_weighted_sum(self):
        def half(completions, **kwargs):
            return [2.0, None, None]

        def other(completions, **kwargs):
            return [1.0, 3.0, None]

        scorer = RewardScorer([half, other], reward_weights=[10.0, 1.0])
        per_func = scorer(["a", "b", "c"], ["x", "y", "z"])
        assert torch.isnan(per_func[1, 0]) and torch.isnan(per_func[2]).all()
        weighted = scorer.weighted(per_func)
        assert weighted[:2].tolist() == [21.0, 3.0]
        assert torch.isnan(weighted[2])  # every function skipped it
        with pytest.raises(ValueError, match="got no reward"):
            scorer.check_finite(per_func)
        scorer.check_finite(per_func[:2])  # partial None is fine

    def test_async_callable(self):
        async def reward(completions, **kwargs):
            return [float(len(c)) for c in completions]

        scorer = RewardScorer(reward)
        assert scorer(["p", "p"], ["ab", "abc"]).squeeze(1).tolist() == [2.0, 3.0]

    def test_extra_columns_reach_callables(self):
        def by_answer(completions, answer, **kwargs):
            return [float(c == a) for c, a in zip(completions, answer, strict=True)]

        scorer = RewardScorer(by_answer)
        assert scorer(["q1", "q2"], ["4", "5"], answer=["4", "4"]).squeeze(1).tolist() == [1.0, 0.0]

    def test_wrong_length_output_raises(self):
        def short(completions, **kwargs):
            return [1.0]

        with pytest.raises(ValueError, match="returned 1 rewards for 2"):
            RewardScorer(short)(["a", "b"], ["x", "y"])

    def test_check_finite_raises_on_inf(self):
        def infinite(completions, **kwargs):
            return [1.0, float("-inf")]

        scorer = RewardScorer([length_reward, infinite])
        with pytest.raises(ValueError, match="'infinite' returned an infinite reward"):
            scorer.check_finite(scorer(["a", "b"], ["x", "y"]))

    def test_argument_errors(self):
        with pytest.raises(ValueError, match="empty"):
            RewardScorer([])
        with pytest.raises(ValueError, match="2 reward weights for 1"):
            RewardScorer(length_reward, reward_weights=[1.0, 2.0])
        with pytest.raises(ValueError, match="processing classes"):
            RewardScorer(length_reward, reward_processing_classes=[None, None])
        with pytest.raises(ValueError, match="one prompt per completion"):
            RewardScorer(length_reward)(["a"], ["x", "y"])

    def test_signature(self, tiny_kit):
        scorer = RewardScorer([tiny_kit["reward"], length_reward], reward_weights=[1.0, 0.5])
        signature = scorer.signature()
        assert signature["reward_funcs"] == ["reward", "length_reward"] and signature["reward_weights"] == [1.0, 0.5]
        model_id, func_id = signature["identities"]
        assert set(model_id) == {"config", "weights", "tokenizer"}  # the reward model reads its tokenizer's tokens
        assert func_id.startswith("tests.test_rewards.length_reward:")


class TestBadRewardsFailEarly:
    @pytest.mark.parametrize(
        "output, message",
        [
            (["good", "bad"], "returned str 'good' for completion 0"),
            (3.0, "returned float 3.0; it must return a list"),
            ("0.5", "returned str"),
            (torch.ones(2, 2), r"of shape \(2, 2\)"),
            ([1.0, [2.0]], "returned list"),
        ],
    )
    def test_wrong_types_are_named(self, output, message):
        def odd(completions, **kwargs):
            return output

        with pytest.raises(ValueError, match=message):
            RewardScorer(odd)(["a", "b"], ["x", "y"])

    def test_tensors_and_numpy_of_the_right_shape_are_fine(self):
        import numpy as np

        for output in (torch.tensor([1.0, 2.0]), np.array([1.0, 2.0]), [torch.tensor(1.0), 2]):
            rewards = RewardScorer(lambda completions, out=output, **kw: out)(["a", "b"], ["x", "y"])
            assert rewards[:, 0].tolist() == [1.0, 2.0]

    def test_best_of_n_fails_after_the_first_batch(self, tiny_kit, prompt_dataset):
        from trl_bon.sampling import GenerationSettings, Sampler, best_of_n

        calls = []

        def strings(completions, **kwargs):
            calls.append(len(completions))
            return [str(len(c)) for c in completions]

        sampler = Sampler(
            tiny_kit["policy"], GenerationSettings(max_completion_length=2), batch_size=4, progress=False
        )
        with pytest.raises(ValueError, match="'strings' returned str"):
            best_of_n(sampler, list(prompt_dataset["prompt"]), strings, n=2)  # 32 prompts x 2 = 16 batches
        assert calls == [4]  # one generate batch sampled, not the whole data set

    def test_causal_lm_as_reward_model_is_refused(self, tiny_kit):
        from transformers import AutoModelForCausalLM

        with pytest.raises(ValueError, match="not a sequence classifier.*randomly initialised head"):
            RewardScorer(tiny_kit["policy"])  # a path: refused from its config, before loading weights
        with pytest.raises(ValueError, match="not a sequence classifier"):
            RewardScorer(AutoModelForCausalLM.from_pretrained(tiny_kit["policy"]))

    def test_missing_local_paths_are_named(self, tmp_path):
        from trl_bon.sampling import Sampler

        missing = str(tmp_path / "no_such_rm")
        with pytest.raises(FileNotFoundError, match="reward model .*no_such_rm' does not exist"):
            RewardScorer(missing)
        with pytest.raises(FileNotFoundError, match="does not exist"):
            Sampler("./no_such_policy")

    def test_another_models_tokenizer(self, tiny_kit, one_token_task, tmp_path):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from trl_bon.toy import _model_config, word_level_tokenizer

        small = word_level_tokenizer(6)
        small_model = AutoModelForSequenceClassification.from_config(_model_config("llama", small, 0.0, num_labels=1))
        with pytest.raises(ValueError, match="has .* tokens but the model embeds only 6"):
            RewardScorer(small_model, reward_processing_classes=AutoTokenizer.from_pretrained(tiny_kit["reward"]))
        other = AutoTokenizer.from_pretrained(one_token_task.model_path)  # 6 tokens: fits, but not this model's
        with pytest.raises(ValueError, match="has 6 tokens but the model embeds 320: it uses less than half"):
            RewardScorer(tiny_kit["reward"], reward_processing_classes=other)
        from trl_bon.toy import build_bpe_tokenizer

        near = build_bpe_tokenizer(300)  # plausible size, same specials, but saved elsewhere
        near.save_pretrained(tmp_path / "near")
        near = AutoTokenizer.from_pretrained(tmp_path / "near")
        with pytest.warns(UserWarning, match="may be another model's: it was loaded from"):
            RewardScorer(tiny_kit["reward"], reward_processing_classes=near)


class TestIdentity:
    def test_same_name_other_function_differs(self):
        from trl_bon.identity import callable_identity

        def reward(completions, **kwargs):
            return [1.0] * len(completions)

        first = callable_identity(reward)

        def reward(completions, **kwargs):  # noqa: F811 - same name, other behaviour
            return [2.0] * len(completions)

        assert callable_identity(reward) != first
        assert RewardScorer(reward).signature()["reward_funcs"] == ["reward"]

    def test_closures_and_the_escape_hatch(self, one_token_task):
        import functools

        from trl_bon.identity import callable_identity

        def make(scale):
            def scaled(completions, **kwargs):
                return [scale] * len(completions)

            return scaled

        assert callable_identity(make(1.0)) == callable_identity(make(1.0)) != callable_identity(make(2.0))
        assert callable_identity(one_token_task.reward_func) == callable_identity(one_token_task.reward_func)
        one, two = functools.partial(make(1.0)), functools.partial(make(1.0), completions=["a"])
        assert callable_identity(one) != callable_identity(two)
        generated = eval("lambda completions, **kwargs: [1.0] * len(completions)")  # no source file
        with pytest.raises(ValueError, match="trl_bon_identity"):
            callable_identity(generated)
        generated.trl_bon_identity = "v1"
        assert callable_identity(generated).endswith(":declared:v1")

    def test_model_fingerprint_is_content_not_path(self, tiny_kit, tmp_path):
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        from trl_bon.identity import model_identity

        model = AutoModelForCausalLM.from_pretrained(tiny_kit["policy"])
        model.save_pretrained(tmp_path / "copy")
        reference = model_identity(model)
        assert model_identity(AutoModelForCausalLM.from_pretrained(tmp_path / "copy")) == reference
        assert model_identity(model.to(torch.bfloat16)) == reference  # dtype does not change the fingerprint
        model = model.float()
        fresh = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
        assert model_identity(fresh) == reference  # a fresh LoRA computes the base model
        with torch.no_grad():
            next(p for n, p in fresh.named_parameters() if "lora_B" in n).fill_(0.1)
        assert "adapters" in model_identity(fresh)
        other = AutoModelForCausalLM.from_pretrained(tiny_kit["policy"])
        with torch.no_grad():
            other.lm_head.weight.add_(1e-2)
        assert model_identity(other)["weights"] != reference["weights"]


class TestPromptsAndSettings:
    def test_mixed_and_empty_prompts(self, tiny_kit):
        from trl_bon.sampling import Sampler, best_of_n

        sampler = Sampler(tiny_kit["policy"], progress=False)
        chat = [{"role": "user", "content": "hi"}]
        with pytest.raises(ValueError, match=r"mix plain text \(e.g. row 0\) and conversations \(e.g. row 1\)"):
            best_of_n(sampler, ["the cat", chat], length_reward, n=2)
        with pytest.raises(ValueError, match=r"`prompts` has 1 empty prompt\(s\) \(rows \[1\]\)"):
            best_of_n(sampler, ["the cat", ""], length_reward, n=2)

    @pytest.mark.parametrize(
        "kwargs, message",
        [
            ({"temperature": 0.0}, "`temperature` must be > 0"),
            ({"max_completion_length": 0}, "`max_completion_length` must be at least 1"),
            ({"top_p": 0.0}, "top_p"),
            ({"generation_kwargs": "{bad json"}, "JSON"),
        ],
    )
    def test_generation_settings_validation(self, kwargs, message):
        from trl_bon.sampling import GenerationSettings

        with pytest.raises(ValueError, match=message):
            GenerationSettings(**kwargs)

    def test_settings_read_from_any_config(self):
        from types import SimpleNamespace

        from trl_bon.sampling import GenerationSettings

        args = SimpleNamespace(
            max_completion_length=8,
            temperature=0.7,
            top_p=0.9,
            top_k=None,
            min_p=0.05,
            repetition_penalty=1.1,
            generation_kwargs='{"no_repeat_ngram_size": 2}',
            unrelated=1,
        )
        settings = GenerationSettings.from_trainer_args(args)
        assert settings.to_dict() == {
            "max_completion_length": 8,
            "temperature": 0.7,
            "top_p": 0.9,
            "top_k": 0,
            "min_p": 0.05,
            "repetition_penalty": 1.1,
            "generation_kwargs": {"no_repeat_ngram_size": 2},
            "chat_template_kwargs": {},
        }


def test_weighted_rewards_is_trls_nansum_with_unscored_rows_nan():
    """The one reduction of `(samples, functions)` rewards the scorer and the trainers share."""
    from trl_bon.rewards import weighted_rewards

    nan = float("nan")
    rewards = torch.tensor([[1.0, 2.0], [nan, 3.0], [nan, nan]])
    total = weighted_rewards(rewards, torch.tensor([0.5, 2.0]))
    assert total[:2].tolist() == [4.5, 6.0] and torch.isnan(total[2])
