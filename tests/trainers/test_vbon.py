"""VBoNTrainer / VBoNConfig: config validation, the cache plumbing, LoRA and 8-bit (the score maths: tests/core)."""

import math

import pytest
import torch
from datasets import Dataset

from tests.helpers import cpu_args


# ----------------------------------------------------------------------------------------------------------- config
def test_config_defaults_and_validation(tmp_path):
    from trl_bon import VBoNConfig

    args = VBoNConfig(str(tmp_path), num_candidates=5, **cpu_args())
    assert args.beta == pytest.approx(0.25) and args.vbon_objective == "l1" and not args.remove_unused_columns
    with pytest.raises(ValueError, match="num_candidates"):
        VBoNConfig(str(tmp_path), **cpu_args())
    with pytest.raises(ValueError, match="at least 2"):
        VBoNConfig(str(tmp_path), num_candidates=1, **cpu_args())
    with pytest.raises(ValueError, match="Set `normalize_advantages=False`"):
        VBoNConfig(str(tmp_path), num_candidates=4, normalize_advantages=True, **cpu_args())
    with pytest.raises(ValueError, match="Set `remove_unused_columns=False`"):
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


def _build_cache(policy, dataset, reward_funcs, args, weights=None):
    """The reference-reward cache of `args`' run, built as `trl-bon cache-ref-rewards` does (the trainer never
    samples it): π_ref, the run's generation settings, M = `args.num_reference_samples`."""
    from trl_bon.ref_cache import build_reference_reward_cache
    from trl_bon.rewards import RewardScorer
    from trl_bon.sampling import GenerationSettings, Sampler

    sampler = Sampler(policy, GenerationSettings.from_trainer_args(args), seed=args.seed, progress=False)
    scorer = RewardScorer(reward_funcs, reward_weights=weights)
    cache_dir = args.reference_cache_dir or f"{args.output_dir}/_reference_rewards"
    return build_reference_reward_cache(sampler, dataset, scorer, args.num_reference_samples, cache_dir)


def _changed(trainer, before):
    return [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(before[n], p)]


class TestVBoNTrainer:
    def test_missing_column_names_the_command(self, tiny_kit, prompt_dataset, tmp_path):
        from trl_bon import VBoNTrainer

        with pytest.raises(ValueError, match="trl-bon cache-ref-rewards") as error:
            VBoNTrainer(tiny_kit["policy"], length_reward, args=_args(tmp_path), train_dataset=prompt_dataset)
        assert "does not sample" in str(error.value) and "`<output_dir>/_reference_rewards`" in str(error.value)
        assert not (tmp_path / "out" / "_reference_rewards").exists()  # nothing was sampled or written

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
        """A cache built beforehand in the default place, two weighted reward functions: the score RLOO trains on is
        log F̂ exactly (`vbon/score`); `reward` and `rewards/<func>/mean` stay the raw rewards (docs/metrics.md)."""
        from trl_bon import VBoNTrainer

        def zero_reward(completions, **kwargs):
            return [0.0] * len(completions)

        args = _args(tmp_path, num_reference_samples=4, reward_weights=[0.5, 3.0], logging_steps=1)
        _build_cache(tiny_kit["policy"], prompt_dataset, [length_reward, zero_reward], args, weights=[0.5, 3.0])
        trainer = VBoNTrainer(
            tiny_kit["policy"],
            [length_reward, zero_reward],
            args=args,
            train_dataset=prompt_dataset,
            peft_config=_lora(),
        )
        assert len(trainer.train_dataset[0]["ref_rewards"]) == 4
        assert (tmp_path / "out" / "_reference_rewards" / "metadata.json").is_file()
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        trainer.train()
        assert len(_changed(trainer, before)) == len(before) > 0
        logs = [h for h in trainer.state.log_history if "vbon/log_cdf" in h]
        assert len(logs) == 2
        for h in logs:
            assert h["vbon/score"] == pytest.approx(h["vbon/log_cdf"], abs=1e-5)  # the training reward is log F̂
            assert h["reward"] == pytest.approx(0.5 * h["rewards/length_reward/mean"], abs=1e-4)  # raw, w=0.5
            assert h["reward"] > 0.0 >= h["vbon/log_cdf"]  # raw rewards (positive), not the score
            assert h["rewards/zero_reward/mean"] == 0.0
            assert h["kl_k1"] == pytest.approx(h["kl"] * h["completions/mean_length"], rel=1e-4, abs=1e-6)
            assert h["kl_k3"] >= 0.0
            assert h["objective/vbon"] == pytest.approx(h["vbon/score"] - args.beta * h["kl_k1"], abs=1e-5)
            assert -math.log(5) - 1e-6 <= h["vbon/log_cdf"] <= 0.0
            assert 0.0 <= h["vbon/frac_below_all_ref"] <= 1.0

    def test_exact_8bit_lora_trains(self, tiny_kit, prompt_dataset, tmp_path):
        from transformers import BitsAndBytesConfig

        from trl_bon import VBoNTrainer

        pytest.importorskip("bitsandbytes")
        args = _args(tmp_path, vbon_objective="exact", model_init_kwargs={"device_map": "cpu"})
        data = prompt_dataset.add_column("ref_rewards", [[4.0, 4.5, 5.0, 5.5]] * len(prompt_dataset))
        trainer = VBoNTrainer(
            tiny_kit["policy"],
            length_reward,
            args=args,
            train_dataset=data,
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
