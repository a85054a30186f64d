"""The Best-of-N sampler (`trl_bon.sampling`): argmax selection, seeded random tie-breaks, the exact BoN law on the
one-token task (BOND eq. 4), LoRA and 8-bit instances, EOS handling and input validation."""

import pytest
import torch

from trl_bon.core import bon_probs, kl_divergence
from trl_bon.rewards import RewardScorer
from trl_bon.sampling import GenerationSettings, Sampler, best_of_n, select_best


SHORT = GenerationSettings(max_completion_length=6)  # tiny model: short completions keep sampling fast


def constant_reward(completions, **kwargs):
    return [1.0] * len(completions)


def token_sum_reward(completion_ids, **kwargs):
    return [float(sum(ids)) for ids in completion_ids]


@pytest.fixture(scope="module")
def prompts(prompt_dataset):
    return list(prompt_dataset["prompt"][:8])


class TestSelectBest:
    def test_first_takes_the_first_maximum(self):
        rewards = torch.tensor([[1.0, 3.0, 3.0, 0.0], [5.0, 5.0, 5.0, 5.0], [0.0, 1.0, 2.0, 3.0]])
        assert select_best(rewards, "first").tolist() == [1, 0, 3]

    def test_random_is_uniform_among_ties_and_never_picks_a_loser(self):
        rewards = torch.tensor([1.0, 3.0, 3.0, 0.0, 3.0]).repeat(30_000, 1)
        chosen = select_best(rewards, "random", torch.Generator().manual_seed(0))
        counts = torch.bincount(chosen, minlength=5).double() / len(chosen)
        assert counts[0] == counts[3] == 0
        # Each tied index has probability 1/3; the standard error of a frequency is sqrt(2/9 / 30000) ≈ 0.0027.
        torch.testing.assert_close(counts[[1, 2, 4]], torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.012, rtol=0)

    def test_random_with_a_unique_maximum_is_the_argmax(self):
        rewards = torch.randn(200, 7, generator=torch.Generator().manual_seed(1))
        assert torch.equal(select_best(rewards, "random"), rewards.argmax(dim=1))

    def test_random_is_reproducible_with_a_generator(self):
        rewards = torch.zeros(64, 8)
        a = select_best(rewards, "random", torch.Generator().manual_seed(3))
        b = select_best(rewards, "random", torch.Generator().manual_seed(3))
        c = select_best(rewards, "random", torch.Generator().manual_seed(4))
        assert torch.equal(a, b) and not torch.equal(a, c)

    def test_unknown_tie_break(self):
        with pytest.raises(ValueError, match="tie_break"):
            select_best(torch.zeros(2, 2), "last")


class TestBestOfN:
    def test_picks_the_argmax(self, tiny_kit, prompts):
        out = best_of_n(Sampler(tiny_kit["policy"], SHORT, progress=False), prompts, token_sum_reward, n=4)
        assert out.candidate_rewards.shape == (len(prompts), 4)
        for i in range(len(prompts)):
            # Rewards recomputed independently from the candidates.
            expected = torch.tensor(token_sum_reward(out.candidate_ids[i]))
            torch.testing.assert_close(out.candidate_rewards[i], expected)
            assert out.rewards[i] == expected.max()
            assert expected[out.chosen_index[i]] == expected.max()
            assert out.completion_ids[i] == out.candidate_ids[i][out.chosen_index[i]]
            assert out.completions[i] == out.candidates[i][out.chosen_index[i]]

    def test_weights_and_columns_reach_the_selection(self, tiny_kit, prompts):
        # Weight -1 on the token sum turns the argmax into the argmin; extra columns reach callables.
        seen = {}

        def tagged_reward(completion_ids, tag, **kwargs):
            seen["tag"] = tag
            return [0.0] * len(completion_ids)

        out = best_of_n(
            Sampler(tiny_kit["policy"], SHORT, progress=False),
            {"prompt": prompts, "tag": list(range(len(prompts)))},
            RewardScorer([token_sum_reward, tagged_reward], reward_weights=[-1.0, 1.0]),
            n=4,
        )
        sums = torch.tensor([token_sum_reward(c) for c in out.candidate_ids])
        assert torch.equal(out.rewards, -sums.min(dim=1).values)
        assert seen["tag"] == [i for i in range(len(prompts)) for _ in range(4)]
        assert out.reward_signature["reward_funcs"] == ["token_sum_reward", "tagged_reward"]
        assert out.reward_signature["reward_weights"] == [-1.0, 1.0]

    def test_ties_are_random_and_reproducible(self, tiny_kit, prompt_dataset):
        many = list(prompt_dataset["prompt"])  # 32 prompts, every candidate tied at reward 1

        def chosen(seed):
            sampler = Sampler(
                tiny_kit["policy"], GenerationSettings(max_completion_length=2), seed=seed, progress=False
            )
            return best_of_n(sampler, many, constant_reward, n=4).chosen_index

        first, again, other = chosen(0), chosen(0), chosen(1)
        assert len(set(first.tolist())) > 1  # varies across prompts: not "always the first"
        assert torch.equal(first, again)
        assert not torch.equal(first, other)

    @pytest.mark.parametrize("rewards", [(2.0, 5.0, 0.0, 4.0, 1.0, 3.0), (1.0, 2.0, 0.0, 2.0, 0.0, 1.0)])
    def test_matches_the_exact_bon_law(self, one_token_task, rewards):
        # One-token completions from a model whose softmax is exactly π_ref: the chosen tokens must follow
        # bon_probs(π_ref, r, 4), ties included (the second reward vector is the tied example of docs/maths.md §1).
        reward_table = torch.tensor(rewards, dtype=torch.float64)

        def token_reward(completion_ids, **kwargs):
            return [float(reward_table[ids[0]]) for ids in completion_ids]

        draws = 4000  # E[KL(π_BoN‖empirical)] ≈ (V−1)/(2·draws) ≈ 0.0006
        sampler = Sampler(
            one_token_task.model_path, GenerationSettings(max_completion_length=1), batch_size=2000, progress=False
        )
        out = best_of_n(sampler, [one_token_task.prompt] * draws, token_reward, n=4)
        tokens = torch.tensor([ids[0] for ids in out.completion_ids])
        empirical = torch.bincount(tokens, minlength=6).double() / draws
        target = bon_probs(one_token_task.ref_probs, reward_table, 4)
        assert kl_divergence(target, empirical) <= 0.01
        # The candidates themselves follow π_ref.
        candidates = torch.tensor([ids[0] for row in out.candidate_ids for ids in row])
        reference = torch.bincount(candidates, minlength=6).double() / candidates.numel()
        assert kl_divergence(one_token_task.ref_probs, reference) <= 0.01

    def test_lora_peft_model_instance(self, tiny_kit, prompts):
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(tiny_kit["policy"])
        lora = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
        out = best_of_n(Sampler(lora, SHORT, seed=5, progress=False), prompts, token_sum_reward, n=2)
        assert out.candidate_rewards.shape == (len(prompts), 2)
        # A fresh LoRA (B = 0) is the base model: same seed, same samples.
        with lora.disable_adapter():
            plain = best_of_n(Sampler(lora, SHORT, seed=5, progress=False), prompts, token_sum_reward, n=2)
        assert out.candidate_ids == plain.candidate_ids

    @pytest.mark.filterwarnings("ignore::UserWarning")
    def test_8bit_model(self, tiny_kit, prompts):
        from transformers import AutoModelForCausalLM, BitsAndBytesConfig

        quantized = AutoModelForCausalLM.from_pretrained(
            tiny_kit["policy"], quantization_config=BitsAndBytesConfig(load_in_8bit=True), device_map="cpu"
        )
        assert quantized.is_loaded_in_8bit
        out = best_of_n(Sampler(quantized, SHORT, progress=False), prompts, token_sum_reward, n=2)
        assert out.candidate_rewards.shape == (len(prompts), 2)
        assert all(1 <= len(ids) <= SHORT.max_completion_length for ids in out.completion_ids)

    def test_errors(self, tiny_kit, prompts):
        with pytest.raises(ValueError, match="n >= 1"):
            best_of_n(tiny_kit["policy"], prompts, constant_reward, n=0)
        with pytest.raises(ValueError, match="empty"):
            best_of_n(tiny_kit["policy"], [], constant_reward, n=2)

    def test_non_finite_rewards_raise(self, tiny_kit, prompts):
        def infinite(completions, **kwargs):
            return [float("inf")] * len(completions)

        def skipped(completions, **kwargs):
            return [None] * len(completions)

        sampler = Sampler(tiny_kit["policy"], SHORT, progress=False)
        with pytest.raises(ValueError, match="infinite"):
            best_of_n(sampler, prompts[:2], infinite, n=2)
        with pytest.raises(ValueError, match="got no reward"):
            best_of_n(sampler, prompts[:2], skipped, n=2)


def sample_completions(model, prompts, num_samples, settings=None, **sampler_kwargs):
    return Sampler(model, settings, **sampler_kwargs).sample(prompts, num_samples)


class TestSampleCompletions:
    def test_reproducible_with_a_seed(self, tiny_kit, prompts):
        def ids(seed):
            return sample_completions(tiny_kit["policy"], prompts, 3, SHORT, seed=seed, progress=False).completion_ids

        first = ids(7)
        assert first == ids(7)
        assert first != ids(8)

    def test_grouped_by_prompt(self, tiny_kit, prompts):
        samples = sample_completions(tiny_kit["policy"], prompts[:3], 2, SHORT, progress=False)
        assert samples.prompt_index == [0, 0, 1, 1, 2, 2]
        assert samples.prompts == [prompts[i] for i in samples.prompt_index]

    def test_stops_after_eos_and_keeps_it(self, tiny_kit, prompts):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(tiny_kit["policy"])
        settings = GenerationSettings(max_completion_length=8)
        free = sample_completions(model, prompts, 4, settings, seed=0, progress=False).completion_ids
        # Declare the most frequent sampled token an extra EOS (the tokenizer's EOS always stays one): completions
        # must now end at the first stop token, keep it, and only run to the length limit without one.
        stop = torch.tensor([t for ids in free for t in ids]).bincount().argmax().item()
        model.generation_config.eos_token_id = [stop]
        stops = {stop, AutoTokenizer.from_pretrained(tiny_kit["policy"]).eos_token_id}
        cut = sample_completions(model, prompts, 4, settings, seed=0, progress=False).completion_ids
        assert any(stop in ids for ids in cut)
        for ids in cut:
            hits = [i for i, t in enumerate(ids) if t in stops]
            if hits:
                assert hits == [len(ids) - 1]  # kept, and nothing after it
            else:
                assert len(ids) == settings.max_completion_length

    def test_conversational_prompts(self, tiny_kit):
        chats = [[{"role": "user", "content": "tell me a story"}], [{"role": "user", "content": "the cat"}]]
        samples = sample_completions(tiny_kit["policy"], chats, 2, SHORT, progress=False)
        assert all(c[0]["role"] == "assistant" for c in samples.completions)

    def test_errors(self, tiny_kit, prompts):
        with pytest.raises(ValueError, match="at least 1"):
            sample_completions(tiny_kit["policy"], prompts, 0)
        with pytest.raises(ValueError, match="empty"):
            sample_completions(tiny_kit["policy"], [], 2)


def test_vllm_backend_builds_one_engine_and_seeds_each_row(tiny_kit, monkeypatch):
    """The vLLM plumbing against a stand-in module (vLLM itself needs a GPU): one engine for every call, one
    seeded `SamplingParams` per row with every generation setting, reproducible seeds."""
    import sys
    import types

    built, calls = [], []

    class SamplingParams:
        def __init__(self, **kwargs):
            self.kwargs = kwargs

    class LLM:
        def __init__(self, model, **kwargs):
            built.append((model, kwargs))

        def generate(self, prompts, sampling_params):
            calls.append(sampling_params)
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=[5, 6])]) for _ in prompts]

    settings = GenerationSettings(max_completion_length=3, min_p=0.1, generation_kwargs={"stop": ["x"]})
    sampler = Sampler(tiny_kit["policy"], settings, backend="vllm", vllm_kwargs={"gpu_memory_utilization": 0.3})
    import trl  # noqa: F401 - imported before the stand-in module exists (TRL probes for vLLM at import)

    assert sampler.tokenizer is not None
    stand_in = types.ModuleType("vllm")
    stand_in.LLM, stand_in.SamplingParams = LLM, SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", stand_in)
    first = sampler.sample(["the cat", "tell me"], 2, seed=7)
    sampler.sample(["the cat", "tell me"], 2, seed=7)
    assert built == [(tiny_kit["policy"], {"gpu_memory_utilization": 0.3})]  # one engine
    assert first.completion_ids == [[5, 6]] * 4 and first.prompt_index == [0, 0, 1, 1]
    params = [p.kwargs for p in calls[0]]
    assert len({p["seed"] for p in params}) == 4  # rows differ
    assert [p["seed"] for p in params] == [p.kwargs["seed"] for p in calls[1]]  # same call seed, same row seeds
    assert params[0]["min_p"] == 0.1 and params[0]["stop"] == ["x"] and params[0]["max_tokens"] == 3
    with pytest.raises(ValueError, match="builds its own engine from a model path"):
        Sampler(object(), backend="vllm")


def test_both_backends_pad_with_eos_when_the_tokenizer_has_no_pad_token(tiny_kit, tmp_path):
    """`Sampler.logps` pads with the tokenizer's pad token: the vLLM backend (which loads the tokenizer alone) must set
    it as the transformers backend does, not leave it `None`."""
    import shutil

    from transformers import AutoTokenizer

    folder = shutil.copytree(tiny_kit["policy"], tmp_path / "no_pad")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(folder)
    assert AutoTokenizer.from_pretrained(folder).pad_token is None
    for backend in ("transformers", "vllm"):
        loaded = Sampler(str(folder), backend=backend).tokenizer
        assert loaded.pad_token == loaded.eos_token == "<eos>" and loaded.padding_side == "left", backend
