"""`RewardScorer` (offline reward scoring) against TRL's own `RLOOTrainer._calculate_rewards`, plus its conventions:
None → NaN, weighted nansum, async callables, extra columns, wrong lengths and non-finite rewards."""

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
        assert scorer.signature() == {"reward_funcs": ["reward", "length_reward"], "reward_weights": [1.0, 0.5]}
