"""BoNSFTTrainer on the offline tiny kit: training (full, LoRA, 8-bit + LoRA), completion-only loss, fidelity to the
exact Best-of-N law on the one-token task, iterative rounds with resume, and validation."""

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback

from tests.helpers import cpu_args
from trl_bon import BoNSFTConfig, BoNSFTTrainer
from trl_bon.core import bon_probs, kl_divergence
from trl_bon.trainer import bon_sft_trainer


def token_sum_reward(completion_ids, **kwargs):
    return [float(sum(ids)) for ids in completion_ids]


def small_args(output_dir, **overrides) -> BoNSFTConfig:
    args = cpu_args(
        num_candidates=2,
        max_completion_length=4,  # tiny model: short completions keep sampling fast
        per_device_train_batch_size=4,
        max_steps=3,
        learning_rate=0.1,  # tiny model: gradients are tiny
    )
    args.update(overrides)
    return BoNSFTConfig(str(output_dir), **args)


def trainable_snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def assert_all_changed(before, model):
    after = dict(model.named_parameters())
    for name, tensor in before.items():
        assert not torch.equal(tensor, after[name].detach()), f"{name} did not change"


class CountTrainBegins(TrainerCallback):
    """Counts `train()` starts (one per trained round) and records the first trainable tensor at each start."""

    def __init__(self, crash_at: int | None = None):
        self.begins, self.first_tensor, self.crash_at = 0, [], crash_at

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.begins += 1
        self.first_tensor.append(next(p.detach().clone() for p in model.parameters() if p.requires_grad))
        if self.begins == self.crash_at:
            raise RuntimeError("simulated crash")


@pytest.fixture
def count_sampler_calls(monkeypatch):
    """Counts `best_of_n` calls made by the trainer."""
    calls = []
    real = bon_sft_trainer.best_of_n

    def counting(*args, **kwargs):
        calls.append(args[0].seed)  # the Sampler carries the round's seed
        return real(*args, **kwargs)

    monkeypatch.setattr(bon_sft_trainer, "best_of_n", counting)
    return calls


class TestBoNSFTTrainer:
    @pytest.mark.parametrize("conversational", [False, True])
    def test_train_full_fine_tuning(self, tiny_kit, prompt_dataset, tmp_path, conversational):
        dataset = prompt_dataset.select(range(8))
        if conversational:
            dataset = Dataset.from_dict({"prompt": [[{"role": "user", "content": p}] for p in dataset["prompt"]]})
        # A reward model and a callable, weighted: the selection uses exactly this scalar reward.
        trainer = BoNSFTTrainer(
            tiny_kit["policy"],
            [tiny_kit["reward"], token_sum_reward],
            args=small_args(tmp_path, reward_weights=[1.0, 0.5]),
            train_dataset=dataset,
        )
        before = trainable_snapshot(trainer.model)
        trainer.train()
        assert trainer.state.log_history[-1]["train_loss"] is not None
        assert_all_changed(before, trainer.model)
        logged = trainer.state.log_history[0]
        assert logged["bon_sft/round"] == 1
        assert logged["bon_sft/chosen_reward_mean"] >= logged["bon_sft/candidate_reward_mean"]
        # Every kept completion is the best of its candidates under the weighted reward.
        saved = json.loads((tmp_path / "bon_data" / "round-1" / "metadata.json").read_text())
        assert saved["num_candidates"] == 2 and saved["seed"] == 0
        assert saved["reward_signature"]["reward_funcs"] == ["reward", "token_sum_reward"]
        assert saved["reward_signature"]["reward_weights"] == [1.0, 0.5]
        assert saved["generation_settings"]["max_completion_length"] == 4

    def test_train_lora(self, tiny_kit, prompt_dataset, tmp_path):
        from peft import LoraConfig

        trainer = BoNSFTTrainer(
            tiny_kit["policy"],
            token_sum_reward,
            args=small_args(tmp_path),
            train_dataset=prompt_dataset.select(range(8)),
            peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
        )
        before = trainable_snapshot(trainer.model)
        assert before and all("lora" in name for name in before)
        trainer.train()
        assert_all_changed(before, trainer.model)

    @pytest.mark.filterwarnings("ignore::UserWarning")
    def test_train_8bit_lora(self, tiny_kit, prompt_dataset, tmp_path):
        pytest.importorskip("bitsandbytes")
        from peft import LoraConfig
        from transformers import BitsAndBytesConfig

        trainer = BoNSFTTrainer(
            tiny_kit["policy"],
            token_sum_reward,
            args=small_args(tmp_path, model_init_kwargs={"device_map": "cpu"}),
            train_dataset=prompt_dataset.select(range(8)),
            quantization_config=BitsAndBytesConfig(load_in_8bit=True),
            peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
        )
        assert trainer.model.is_loaded_in_8bit
        before = trainable_snapshot(trainer.model)
        trainer.train()
        assert_all_changed(before, trainer.model)

    def test_loss_covers_completion_tokens_only(self, tiny_kit, prompt_dataset, tmp_path):
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tiny_kit["policy"])
        trainer = BoNSFTTrainer(
            tiny_kit["policy"],
            token_sum_reward,
            args=small_args(tmp_path),
            train_dataset=prompt_dataset.select(range(8)),
        )
        saved = Dataset.load_from_disk(str(tmp_path / "bon_data" / "round-1" / "dataset"))
        by_prompt = dict(zip(saved["prompt"], saved["input_ids"], strict=True))
        batch = next(iter(trainer.get_train_dataloader()))
        assert set(batch) >= {"input_ids", "labels", "attention_mask"}
        for input_ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
            ids = input_ids[mask.bool()].tolist()
            prompt = next(p for p, full in by_prompt.items() if full == ids)
            num_prompt = len(tokenizer(prompt)["input_ids"])
            kept = labels[mask.bool()]
            assert (kept[:num_prompt] == -100).all()  # no loss on the prompt
            assert torch.equal(kept[num_prompt:], input_ids[mask.bool()][num_prompt:])  # loss on every sampled token
            assert (labels[~mask.bool()] == -100).all()  # nor on padding

    def test_fidelity_to_the_bon_law(self, one_token_task, tmp_path):
        # SFT on 2000 Best-of-4 samples of π_ref must land near π_BoN: the empirical distribution of 2000 draws is
        # itself ≈ 0.0013 away (KL), training adds the optimisation error (tuned: ≈ 0.002 at these settings).
        args = BoNSFTConfig(
            str(tmp_path),
            **cpu_args(
                num_candidates=4,
                max_completion_length=1,
                generation_batch_size=2000,
                per_device_train_batch_size=64,
                num_train_epochs=4,
                learning_rate=3e-2,  # full fine-tuning of the tiny model, Adam, linear decay
                logging_steps=50,
            ),
        )
        trainer = BoNSFTTrainer(
            one_token_task.model_path,
            one_token_task.reward_func,
            args=args,
            train_dataset=one_token_task.dataset(2000),
        )
        target = bon_probs(one_token_task.ref_probs, one_token_task.rewards, 4)
        assert kl_divergence(target, one_token_task.policy_probs(trainer.model)) > 0.5  # starts at π_ref (0.596)
        trainer.train()
        policy = one_token_task.policy_probs(trainer.model)
        assert kl_divergence(target, policy) <= 0.02

    def test_iterative_rounds_and_resume(self, tiny_kit, prompt_dataset, tmp_path, count_sampler_calls):
        from safetensors.torch import load_file

        dataset = prompt_dataset.select(range(8))
        crash = CountTrainBegins(crash_at=2)
        trainer = BoNSFTTrainer(
            tiny_kit["policy"],
            token_sum_reward,
            args=small_args(tmp_path, num_rounds=2),
            train_dataset=dataset,
            callbacks=[crash],
        )
        with pytest.raises(RuntimeError, match="simulated crash"):
            trainer.train()  # round 1 trains, round 2's data is sampled, then its training "crashes"
        assert count_sampler_calls == [0, 1]  # one call per round, seeded seed + round − 1
        round_1 = tmp_path / "bon_data" / "round-1"
        assert (round_1 / "trainable.safetensors").exists()
        assert (tmp_path / "bon_data" / "round-2" / "metadata.json").exists()
        # Round 2 started from round 1's weights.
        first_name = next(n for n, p in trainer.model.named_parameters() if p.requires_grad)
        round_1_weights = load_file(str(round_1 / "trainable.safetensors"))
        assert torch.equal(crash.first_tensor[1], round_1_weights[first_name])

        # Re-run: no data is sampled again, round 1 is not retrained, round 2 starts from round 1's weights.
        count_sampler_calls.clear()
        counter = CountTrainBegins()
        trainer = BoNSFTTrainer(
            tiny_kit["policy"],
            token_sum_reward,
            args=small_args(tmp_path, num_rounds=2),
            train_dataset=dataset,
            callbacks=[counter],
        )
        trainer.train()
        assert count_sampler_calls == []
        assert counter.begins == 1
        assert torch.equal(counter.first_tensor[0], round_1_weights[first_name])
        assert any(log.get("bon_sft/round") == 2 for log in trainer.state.log_history)
        assert (tmp_path / "round-2").is_dir()  # round ≥ 2 trains in its own output directory

    def test_saved_data_with_other_settings_is_rejected(self, tiny_kit, prompt_dataset, tmp_path):
        dataset = prompt_dataset.select(range(4))
        BoNSFTTrainer(tiny_kit["policy"], token_sum_reward, args=small_args(tmp_path), train_dataset=dataset)
        with pytest.raises(ValueError, match="other settings.*num_candidates"):
            BoNSFTTrainer(
                tiny_kit["policy"],
                token_sum_reward,
                args=small_args(tmp_path, num_candidates=3),
                train_dataset=dataset,
            )

    @pytest.mark.parametrize(
        ("overrides", "match"),
        [
            ({"num_candidates": 0}, "num_candidates"),
            ({"num_rounds": 0}, "num_rounds"),
            ({"tie_break": "last"}, "tie_break"),
            ({"temperature": 0.0}, "temperature"),
            ({"use_vllm": True, "num_rounds": 2}, "use_vllm=False"),
        ],
    )
    def test_config_validation(self, tmp_path, overrides, match):
        with pytest.raises(ValueError, match=match):
            small_args(tmp_path, **overrides)

    @pytest.mark.parametrize(
        ("dataset", "match"),
        [
            (None, "required"),
            (Dataset.from_dict({"question": ["a"]}), "no `prompt` column"),
            (Dataset.from_dict({"prompt": ["a"], "completion": ["b"]}), "already holds completions"),
            (Dataset.from_dict({"prompt": ["a"], "messages": [[{"role": "user", "content": "b"}]]}), "messages"),
            (Dataset.from_dict({"prompt": []}), "empty"),
        ],
    )
    def test_dataset_validation(self, tiny_kit, tmp_path, count_sampler_calls, dataset, match):
        with pytest.raises(ValueError, match=match):
            BoNSFTTrainer(tiny_kit["policy"], token_sum_reward, args=small_args(tmp_path), train_dataset=dataset)
        assert count_sampler_calls == []  # failed before any sampling

    def test_non_finite_reward_is_rejected(self, tiny_kit, prompt_dataset, tmp_path):
        def broken(completions, **kwargs):
            return [float("inf")] * len(completions)

        with pytest.raises(ValueError, match="infinite"):
            BoNSFTTrainer(tiny_kit["policy"], broken, args=small_args(tmp_path), train_dataset=prompt_dataset)
        assert not (tmp_path / "bon_data" / "round-1" / "metadata.json").exists()

    def test_other_errors(self, tiny_kit, prompt_dataset, tmp_path):
        with pytest.raises(ValueError, match="optimizer_cls_and_kwargs"):
            BoNSFTTrainer(
                tiny_kit["policy"],
                token_sum_reward,
                args=small_args(tmp_path, num_rounds=2),
                train_dataset=prompt_dataset,
                optimizers=(object(), None),
            )
        from trl import SFTConfig

        with pytest.raises(TypeError, match="BoNSFTConfig"):
            args = SFTConfig(str(tmp_path), **cpu_args())
            BoNSFTTrainer(tiny_kit["policy"], token_sum_reward, args=args, train_dataset=prompt_dataset)
        assert not Path(tmp_path, "bon_data").exists()
