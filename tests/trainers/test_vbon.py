"""VBoNTrainer / VBoNConfig: the score maths (hand-computed), config validation, the cache plumbing, LoRA and 8-bit."""

import math

import pytest
import torch
from datasets import Dataset

from tests.helpers import cpu_args
from trl_bon.core import bon_probs, reward_quantiles
from trl_bon.core.vbon import binomial_log_ratio, cache_statistics, exact_log_ratio, vbon_scores


# ----------------------------------------------------------------------------------------------------------- maths
REF = torch.tensor([[1.0, 2.0, 2.0, 3.0]])  # M = 4 cached reference rewards, with a tie at 2


def _scores(r, objective="l1", ref_logp=None, n=2, code=False, ref=REF):
    return vbon_scores(
        torch.tensor([r]),
        ref,
        n,
        objective,
        ref_logps=None if ref_logp is None else torch.tensor([ref_logp]),
        reproduce_code_scaling=code,
    )


@pytest.mark.parametrize(
    "r, expected",
    [
        (2.0, math.log(2 / 5)),  # strict: the two tied 2's are not below; F̂ = (1 + 1)/(4 + 1)
        (2.5, math.log(4 / 5)),
        (0.0, math.log(1 / 5)),  # below all: the floor −log(M + 1)
        (1.0, math.log(1 / 5)),  # tied with the minimum: also at the floor
        (9.0, 0.0),  # above all: F̂ = 1
    ],
)
def test_l1_score_is_log_cdf(r, expected):
    out = _scores(r)
    assert out["score"].item() == pytest.approx(expected, abs=1e-6)
    assert out["log_cdf"].item() == pytest.approx(expected, abs=1e-6)
    assert out["at_floor"].item() == (r <= 1.0)


def test_unequal_m_padding():
    ref = torch.tensor([[1.0, 2.0, float("nan")], [0.0, 1.0, 2.0]])
    out = vbon_scores(torch.tensor([1.5, 1.5]), ref, 2)
    assert out["score"].tolist() == pytest.approx([math.log(2 / 3), math.log(3 / 4)])


@pytest.mark.parametrize(
    "r, ref_logp, n, expected",
    [
        # tie: q = max(q̂ = 2/4, π_ref = 0.1) = 0.5, p< = F̂ = 0.4, p≤ = 0.9: log((0.9² − 0.4²)/0.5)/(N−1)
        (2.0, math.log(0.1), 2, math.log((0.81 - 0.16) / 0.5)),
        # no tie: q = π_ref = 0.05, p< = 0.8, p≤ = 0.85, N = 3
        (2.5, math.log(0.05), 3, math.log((0.85**3 - 0.8**3) / 0.05) / 2),
        # tie, π_ref above q̂: q = 0.6
        (2.0, math.log(0.6), 2, math.log((1.0**2 - 0.4**2) / 0.6)),
        # above all: F̂ = 1 is capped at 1 − q, so p≤ = 1: log((1 − 0.9²)/0.1)
        (9.0, math.log(0.1), 2, math.log((1 - 0.81) / 0.1)),
        # below all: p< = F̂ = 1/5, q = π_ref = 0.2
        (0.0, math.log(0.2), 2, math.log((0.4**2 - 0.2**2) / 0.2)),
    ],
)
def test_exact_score_hand_computed(r, ref_logp, n, expected):
    assert _scores(r, "exact", ref_logp, n)["score"].item() == pytest.approx(expected, rel=1e-5)


def test_code_scaling_hand_computed():
    # binomial form with F = 0.4, π = 0.1, N = 2: (2·0.1·0.4 + 0.1²)/0.1 = 0.9, divided by N
    assert _scores(2.0, "exact", math.log(0.1), 2, code=True)["score"].item() == pytest.approx(math.log(0.9) / 2)


@pytest.mark.parametrize("rewards", [[2, 5, 0, 4, 1, 3], [1, 2, 0, 2, 0, 1]])
def test_exact_log_ratio_matches_bon_law_with_ties(rewards):
    """With the true p< and q, exp(log-ratio)·π_ref is the exact tie-safe Best-of-N law (algorithms.md §7.2)."""
    ref = torch.tensor([0.30, 0.25, 0.20, 0.12, 0.08, 0.05], dtype=torch.float64)
    r = torch.tensor(rewards, dtype=torch.float64)
    p_lt, p_le = reward_quantiles(ref, r)
    law = ref * exact_log_ratio(p_lt.log(), (p_le - p_lt).log(), 4).exp()
    torch.testing.assert_close(law, bon_probs(ref, r, 4))


def test_exact_log_ratio_text_regime():
    """q = π_ref(y) ≪ p<: log π_BoN − log π_ref → log N + (N−1)·log p<, without underflow at q = e^-2000."""
    out = exact_log_ratio(torch.tensor([math.log(0.3), 0.0]), torch.tensor([-2000.0, -2000.0]), 4)
    assert out.tolist() == pytest.approx([math.log(4) + 3 * math.log(0.3), math.log(4)])
    assert binomial_log_ratio(torch.tensor([math.log(0.3)]), torch.tensor([-2000.0]), 4).item() == pytest.approx(
        math.log(4) + 3 * math.log(0.3)
    )


def test_cache_statistics_ties():
    log_cdf, log_q, floor = cache_statistics(torch.tensor([2.0, 2.5]), REF.expand(2, -1))
    assert log_q.tolist() == pytest.approx([math.log(0.5), -math.inf])
    assert floor.tolist() == [False, False]


# ----------------------------------------------------------------------------------------------------------- config
def test_config_defaults_and_validation(tmp_path):
    from trl_bon import VBoNConfig

    args = VBoNConfig(str(tmp_path), num_candidates=5, **cpu_args())
    assert args.beta == pytest.approx(0.25) and args.vbon_objective == "l1" and not args.remove_unused_columns
    with pytest.raises(ValueError, match="num_candidates"):
        VBoNConfig(str(tmp_path), **cpu_args())
    with pytest.raises(ValueError, match="at least 2"):
        VBoNConfig(str(tmp_path), num_candidates=1, **cpu_args())
    with pytest.raises(ValueError, match="set `normalize_advantages=False`"):
        VBoNConfig(str(tmp_path), num_candidates=4, normalize_advantages=True, **cpu_args())
    with pytest.raises(ValueError, match="set `remove_unused_columns=False`"):
        VBoNConfig(str(tmp_path), num_candidates=4, remove_unused_columns=True, **cpu_args())
    with pytest.raises(ValueError, match="vbon_objective='exact'"):
        VBoNConfig(str(tmp_path), num_candidates=4, reproduce_vbon_code_scaling=True, **cpu_args())
    with pytest.raises(ValueError, match="vbon_objective"):
        VBoNConfig(str(tmp_path), num_candidates=4, vbon_objective="l2", **cpu_args())
    with pytest.raises(ValueError, match="num_reference_samples"):
        VBoNConfig(str(tmp_path), num_candidates=4, num_reference_samples=0, **cpu_args())
    with pytest.warns(UserWarning, match="1/\\(N-1\\)"):
        VBoNConfig(str(tmp_path), num_candidates=4, beta=0.05, **cpu_args())


# ----------------------------------------------------------------------------------------------------------- trainer
def _args(tmp_path, **overrides):
    from trl_bon import VBoNConfig

    kw = dict(
        num_candidates=4,
        max_completion_length=4,
        num_generations=4,
        per_device_train_batch_size=8,
        max_steps=2,
        learning_rate=0.1,  # tiny model: gradients are tiny
    )
    kw.update(overrides)
    return VBoNConfig(str(tmp_path / "out"), **cpu_args(**kw))


def _lora():
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")


def length_reward(completion_ids, **kwargs):
    return [float(len(ids)) + 0.01 * ids[0] for ids in completion_ids]


def _changed(trainer, before):
    return [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(before[n], p)]


class TestVBoNTrainer:
    def test_missing_column_names_the_command(self, tiny_kit, prompt_dataset, tmp_path):
        from trl_bon import VBoNTrainer

        with pytest.raises(ValueError, match="trl-bon cache-ref-rewards"):
            VBoNTrainer(tiny_kit["policy"], length_reward, args=_args(tmp_path), train_dataset=prompt_dataset)

    def test_mismatched_cache_is_refused(self, tiny_kit, prompt_dataset, tmp_path):
        from trl_bon import VBoNTrainer
        from trl_bon.ref_cache import build_reference_reward_cache
        from trl_bon.sampling import GenerationSettings, Sampler

        settings = GenerationSettings(max_completion_length=4, temperature=0.7)
        sampler = Sampler(tiny_kit["policy"], settings, progress=False)
        build_reference_reward_cache(sampler, prompt_dataset, length_reward, 2, tmp_path / "cache")
        with pytest.raises(ValueError, match=r"temperature: cache has 0.7, expected 1.0"):
            VBoNTrainer(
                tiny_kit["policy"],
                length_reward,
                train_dataset=prompt_dataset,
                args=_args(tmp_path, reference_cache_dir=str(tmp_path / "cache")),
            )

    def test_lora_trains_with_built_cache_and_logs(self, tiny_kit, prompt_dataset, tmp_path):
        """build_reference_cache=True, two reward functions with weights: RLOO's reward equals log F̂ exactly."""
        from trl_bon import VBoNTrainer

        def zero_reward(completions, **kwargs):
            return [0.0] * len(completions)

        args = _args(
            tmp_path, build_reference_cache=True, num_reference_samples=4, reward_weights=[0.5, 3.0], logging_steps=1
        )
        trainer = VBoNTrainer(
            tiny_kit["policy"],
            [length_reward, zero_reward],
            args=args,
            train_dataset=prompt_dataset,
            peft_config=_lora(),
        )
        assert len(trainer.train_dataset[0]["ref_rewards"]) == 4
        assert (tmp_path / "out" / "reference_rewards" / "metadata.json").is_file()
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        trainer.train()
        assert len(_changed(trainer, before)) == len(before) > 0
        logs = [h for h in trainer.state.log_history if "vbon/log_cdf" in h]
        assert len(logs) == 2
        for h in logs:
            assert h["reward"] == pytest.approx(h["vbon/log_cdf"], abs=1e-5)  # the training reward is log F̂
            assert h["rewards/length_reward/mean"] == pytest.approx(2 * h["vbon/raw_reward"], abs=1e-4)  # raw, w=0.5
            assert h["rewards/zero_reward/mean"] == 0.0
            assert -math.log(5) - 1e-6 <= h["vbon/log_cdf"] <= 0.0
            assert 0.0 <= h["vbon/frac_below_all_ref"] <= 1.0

    def test_exact_8bit_lora_trains(self, tiny_kit, prompt_dataset, tmp_path):
        from transformers import BitsAndBytesConfig

        from trl_bon import VBoNTrainer

        pytest.importorskip("bitsandbytes")
        args = _args(
            tmp_path,
            vbon_objective="exact",
            build_reference_cache=True,
            num_reference_samples=4,
            model_init_kwargs={"device_map": "cpu"},
        )
        trainer = VBoNTrainer(
            tiny_kit["policy"],
            length_reward,
            args=args,
            train_dataset=prompt_dataset,
            peft_config=_lora(),
            quantization_config=BitsAndBytesConfig(load_in_8bit=True),
        )
        assert trainer.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.__class__.__name__ == (
            "Linear8bitLt"
        )
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        trainer.train()
        assert len(_changed(trainer, before)) == len(before) > 0
        assert all(math.isfinite(h["vbon/exact_score"]) for h in trainer.state.log_history if "vbon/exact_score" in h)

    def test_full_model_exact_with_column(self, tiny_kit, prompt_dataset, tmp_path):
        """A precomputed column is used as is (M may differ per prompt); full fine-tuning, exact objective."""
        from trl_bon import VBoNTrainer

        ref = [[5.0, 5.5, 6.0][: 1 + i % 3] for i in range(len(prompt_dataset))]  # rewards are 4 + token id/100
        data = prompt_dataset.add_column("ref_rewards", ref)
        trainer = VBoNTrainer(
            tiny_kit["policy"], length_reward, args=_args(tmp_path, vbon_objective="exact"), train_dataset=data
        )
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        trainer.train()
        assert _changed(trainer, before)
        assert any("vbon/exact_score" in h for h in trainer.state.log_history)

    def test_nan_reward_names_the_function(self, tiny_kit, tmp_path):
        from trl_bon import VBoNTrainer

        def none_reward(completions, **kwargs):
            return [None] * len(completions)

        data = Dataset.from_dict({"prompt": ["the cat"] * 8, "ref_rewards": [[0.0, 1.0]] * 8})
        trainer = VBoNTrainer(tiny_kit["policy"], none_reward, args=_args(tmp_path, max_steps=1), train_dataset=data)
        with pytest.raises(ValueError, match="none_reward"):
            trainer.train()
