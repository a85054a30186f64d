"""BoN-SFT on the offline tiny kit: `bon_sft_dataset(best_of_n(...))` then `BoNSFTTrainer` (full, LoRA, 8-bit + LoRA),
completion-only loss, fidelity to the exact Best-of-N law on the one-token task, and validation; the rounds of
`trl-bon bon-sft` (RAFT/ReST: an outer loop in the script) with their saved data and resume."""

import json
import shutil

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer, TrainerCallback

import trl_bon.sampling
from tests.helpers import cpu_args
from trl_bon import BoNSFTConfig, BoNSFTTrainer, best_of_n, bon_sft_dataset
from trl_bon.core import bon_probs, kl_divergence
from trl_bon.rewards import RewardScorer
from trl_bon.sampling import GenerationSettings, Sampler
from trl_bon.scripts import bon_sft as script
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


def bon_data(model_path, prompts, reward_funcs, args, reward_weights=None, **sampler_kwargs) -> Dataset:
    """The data step the user (or the script) runs before the trainer: one `best_of_n` call."""
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    settings = GenerationSettings.from_trainer_args(args)
    sampler = Sampler(model_path, settings, tokenizer=tokenizer, progress=False, **sampler_kwargs)
    reward = RewardScorer(reward_funcs, reward_weights=reward_weights)
    return bon_sft_dataset(best_of_n(sampler, list(prompts), reward, args.num_candidates), tokenizer)


def trainable_snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def assert_all_changed(before, model):
    after = dict(model.named_parameters())
    for name, tensor in before.items():
        assert not torch.equal(tensor, after[name].detach()), f"{name} did not change"


class TestBoNSFTTrainer:
    @pytest.mark.parametrize("conversational", [False, True])
    def test_train_full_fine_tuning(self, tiny_kit, prompt_dataset, tmp_path, conversational):
        prompts = prompt_dataset["prompt"][:8]
        if conversational:
            prompts = [[{"role": "user", "content": p}] for p in prompts]
        args = small_args(tmp_path)
        # A reward model and a callable, weighted: the selection uses exactly this scalar reward.
        data = bon_data(
            tiny_kit["policy"], prompts, [tiny_kit["reward"], token_sum_reward], args, reward_weights=[1.0, 0.5]
        )
        # Every kept completion is the best of its candidates under the weighted reward.
        assert data["reward"] == [max(row) for row in data["candidate_rewards"]]
        assert all(len(row) == 2 for row in data["candidate_rewards"])
        trainer = BoNSFTTrainer(tiny_kit["policy"], args=args, train_dataset=data)
        before = trainable_snapshot(trainer.model)
        trainer.train()
        assert trainer.state.log_history[-1]["train_loss"] is not None
        assert_all_changed(before, trainer.model)
        logged = trainer.state.log_history[0]
        assert logged["bon_sft/chosen_reward_mean"] >= logged["bon_sft/candidate_reward_mean"]
        assert logged["bon_sft/chosen_reward_mean"] == pytest.approx(sum(data["reward"]) / 8)

    def test_train_lora(self, tiny_kit, prompt_dataset, tmp_path):
        from peft import LoraConfig

        args = small_args(tmp_path)
        trainer = BoNSFTTrainer(
            tiny_kit["policy"],
            args=args,
            train_dataset=bon_data(tiny_kit["policy"], prompt_dataset["prompt"][:8], token_sum_reward, args),
            peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
        )
        before = trainable_snapshot(trainer.model)
        assert before and all("lora" in name for name in before)
        trainer.train()
        assert_all_changed(before, trainer.model)
        trainer.create_model_card()  # the card names the local base model and N, not "[None]"
        card = open(f"{args.output_dir}/README.md").read()
        assert "[None]" not in card and str(tiny_kit["policy"]) in card
        assert f"N (Best-of-N) | {args.num_candidates}" in card and "BoN-SFT" in card and "2407.14622" in card

    @pytest.mark.filterwarnings("ignore::UserWarning")
    def test_train_8bit_lora(self, tiny_kit, prompt_dataset, tmp_path):
        pytest.importorskip("bitsandbytes")
        from peft import LoraConfig
        from transformers import BitsAndBytesConfig

        args = small_args(tmp_path, model_init_kwargs={"device_map": "cpu"})
        quantization = BitsAndBytesConfig(load_in_8bit=True)
        data = bon_data(
            tiny_kit["policy"],
            prompt_dataset["prompt"][:8],
            token_sum_reward,
            args,
            model_init_kwargs={"device_map": "cpu", "quantization_config": quantization},
        )
        trainer = BoNSFTTrainer(
            tiny_kit["policy"],
            args=args,
            train_dataset=data,
            quantization_config=quantization,
            peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
        )
        assert trainer.model.is_loaded_in_8bit
        before = trainable_snapshot(trainer.model)
        trainer.train()
        assert_all_changed(before, trainer.model)

    def test_loss_covers_completion_tokens_only(self, tiny_kit, prompt_dataset, tmp_path):
        tokenizer = AutoTokenizer.from_pretrained(tiny_kit["policy"])
        args = small_args(tmp_path)
        data = bon_data(tiny_kit["policy"], prompt_dataset["prompt"][:8], token_sum_reward, args)
        trainer = BoNSFTTrainer(tiny_kit["policy"], args=args, train_dataset=data)
        by_prompt = dict(zip(data["prompt"], data["input_ids"], strict=True))
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
        data = bon_data(
            one_token_task.model_path,
            [one_token_task.prompt] * 2000,
            one_token_task.reward_func,
            args,
            batch_size=args.generation_batch_size,
        )
        trainer = BoNSFTTrainer(one_token_task.model_path, args=args, train_dataset=data)
        target = bon_probs(one_token_task.ref_probs, one_token_task.rewards, 4)
        assert kl_divergence(target, one_token_task.policy_probs(trainer.model)) > 0.5  # starts at π_ref (0.596)
        trainer.train()
        policy = one_token_task.policy_probs(trainer.model)
        assert kl_divergence(target, policy) <= 0.02

    def test_data_validation(self, tiny_kit, prompt_dataset, tmp_path):
        args = small_args(tmp_path)
        for dataset, match in [
            (None, "required"),
            (prompt_dataset, "not Best-of-N data"),  # prompts only: the trainer never samples
            (Dataset.from_dict({"prompt": ["a"], "completion": ["b"]}), "not Best-of-N data"),
        ]:
            with pytest.raises(ValueError, match=match):
                BoNSFTTrainer(tiny_kit["policy"], args=args, train_dataset=dataset)
        data = bon_data(tiny_kit["policy"], prompt_dataset["prompt"][:4], token_sum_reward, args)
        with pytest.raises(ValueError, match="Best-of-2 data, but `args.num_candidates=3`"):
            BoNSFTTrainer(tiny_kit["policy"], args=small_args(tmp_path, num_candidates=3), train_dataset=data)
        with pytest.raises(ValueError, match="empty"):
            BoNSFTTrainer(tiny_kit["policy"], args=args, train_dataset=data.select([]))
        from trl import SFTConfig

        with pytest.raises(TypeError, match="BoNSFTConfig"):
            BoNSFTTrainer(tiny_kit["policy"], args=SFTConfig(str(tmp_path), **cpu_args()), train_dataset=data)

    @pytest.mark.parametrize(
        ("overrides", "match"),
        [
            ({"num_candidates": 0}, "num_candidates"),
            ({"tie_break": "last"}, "tie_break"),
            ({"temperature": 0.0}, "temperature"),
        ],
    )
    def test_config_validation(self, tmp_path, overrides, match):
        with pytest.raises(ValueError, match=match):
            small_args(tmp_path, **overrides)


# ------------------------------------------------------------------------------------------------ the script's rounds
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
    """Counts `best_of_n` calls made by the script (it imports `trl_bon.best_of_n` when it runs)."""
    calls = []
    real = trl_bon.sampling.best_of_n

    def counting(*args, **kwargs):
        calls.append(args[0].seed)  # the Sampler carries the round's seed
        return real(*args, **kwargs)

    monkeypatch.setattr(trl_bon.sampling, "best_of_n", counting)
    return calls


@pytest.fixture
def prompt_folder(tmp_path_factory, prompt_dataset):
    root = tmp_path_factory.mktemp("prompts")
    with open(root / "train.jsonl", "w") as f:
        for prompt in prompt_dataset["prompt"][:8]:
            f.write(json.dumps({"prompt": prompt}) + "\n")
    return str(root)


def run_script(tiny_kit, prompt_folder, output_dir, monkeypatch, callback, *extra):
    """`trl-bon bon-sft` in-process, with `callback` added to every round's trainer."""

    class WithCallback(BoNSFTTrainer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.add_callback(callback)

    monkeypatch.setattr(bon_sft_trainer, "BoNSFTTrainer", WithCallback)
    argv = ["--model_name_or_path", tiny_kit["policy"], "--reward_funcs", f"{__name__}.token_sum_reward"]
    argv += ["--dataset_name", prompt_folder, "--output_dir", str(output_dir), "--num_candidates", "2"]
    argv += ["--max_completion_length", "4", "--per_device_train_batch_size", "4", "--max_steps", "3"]
    argv += ["--learning_rate", "0.1", "--use_cpu", "true", "--bf16", "false", "--report_to", "none"]
    argv += ["--save_strategy", "no", "--disable_tqdm", "true", "--dataloader_num_workers", "0", "--seed", "0"]
    argv += extra
    return script.cli(argv)


def test_script_rounds_and_resume(tiny_kit, prompt_folder, tmp_path, count_sampler_calls, monkeypatch):
    from safetensors.torch import load_file

    crash = CountTrainBegins(crash_at=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        # round 1 trains, round 2's data is sampled from round 1's policy, then its training "crashes"
        run_script(tiny_kit, prompt_folder, tmp_path, monkeypatch, crash, "--num_rounds", "2")
    assert count_sampler_calls == [0, 1]  # one call per round, seeded seed + round − 1
    round_1 = tmp_path / "_bon_data" / "round-1"
    saved = json.loads((round_1 / "metadata.json").read_text())
    assert saved["num_candidates"] == 2 and saved["seed"] == 0
    assert saved["reward_signature"]["reward_funcs"] == ["token_sum_reward"]
    assert saved["generation_settings"]["max_completion_length"] == 4
    assert (round_1 / "trainable.safetensors").exists()
    assert (tmp_path / "_bon_data" / "round-2" / "metadata.json").exists()
    # Round 2 started from round 1's weights.
    from transformers import AutoModelForCausalLM

    round_1_weights = load_file(str(round_1 / "trainable.safetensors"))
    first_name = next(name for name, _ in AutoModelForCausalLM.from_pretrained(tiny_kit["policy"]).named_parameters())
    assert torch.equal(crash.first_tensor[1], round_1_weights[first_name])

    # Re-run: no data is sampled again, round 1 is not retrained, round 2 starts from round 1's weights.
    count_sampler_calls.clear()
    counter = CountTrainBegins()
    assert run_script(tiny_kit, prompt_folder, tmp_path, monkeypatch, counter, "--num_rounds", "2") == 0
    assert count_sampler_calls == []
    assert counter.begins == 1
    assert torch.equal(counter.first_tensor[0], round_1_weights[first_name])
    assert (tmp_path / "round-2").is_dir()  # round ≥ 2 trains in its own output directory
    assert (tmp_path / "model.safetensors").is_file()  # the final policy is saved to output_dir

    # Data made with other settings is refused, before any sampling.
    with pytest.raises(ValueError, match="other settings.*num_candidates"):
        run_script(tiny_kit, prompt_folder, tmp_path, monkeypatch, counter, "--num_candidates", "3")
    assert count_sampler_calls == []


def test_script_validation(tiny_kit, prompt_folder, tmp_path, count_sampler_calls, monkeypatch):
    with pytest.raises(ValueError, match="num_rounds"):
        script.BoNSFTScriptArguments(num_rounds=0)
    with pytest.raises(ValueError, match="use_vllm=False"):
        run_script(tiny_kit, prompt_folder, tmp_path, monkeypatch, None, "--use_vllm", "true", "--num_rounds", "2")
    for dataset, match in [
        (None, "required"),
        (Dataset.from_dict({"question": ["a"]}), "no `prompt` column"),
        (Dataset.from_dict({"prompt": ["a"], "completion": ["b"]}), "already holds completions"),
        (Dataset.from_dict({"prompt": ["a"], "messages": [[{"role": "user", "content": "b"}]]}), "messages"),
        (Dataset.from_dict({"prompt": []}), "empty"),
    ]:
        with pytest.raises(ValueError, match=match):
            script.check_prompt_dataset(dataset)
    assert count_sampler_calls == []  # failed before any sampling


def test_non_finite_reward_is_rejected(tiny_kit, prompt_dataset, tmp_path):
    def broken(completions, **kwargs):
        return [float("inf")] * len(completions)

    args = small_args(tmp_path)
    scorer = RewardScorer(broken)
    metadata = script.round_metadata(1, prompt_dataset["prompt"], scorer, args, tiny_kit["policy"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_kit["policy"])
    directory = tmp_path / "_bon_data" / "round-1"
    with pytest.raises(ValueError, match="infinite"):
        script.round_data(directory, metadata, tiny_kit["policy"], prompt_dataset, scorer, tokenizer, args)
    assert not (directory / "metadata.json").exists()


class KillAtStep(TrainerCallback):
    """Records `(round, global_step)` at every step end; raises at step `kill_step` of round `kill_round`."""

    def __init__(self, kill_round: int | None = None, kill_step: int | None = None):
        self.round, self.steps, self.kill = 0, [], (kill_round, kill_step)

    def on_train_begin(self, args, state, control, **kwargs):
        self.round += 1

    def on_step_end(self, args, state, control, **kwargs):
        self.steps.append((self.round, state.global_step))
        if (self.round, state.global_step) == self.kill:
            raise RuntimeError("killed")


def test_script_kill_mid_round_resumes_from_the_round_checkpoint(
    tiny_kit, prompt_folder, tmp_path, count_sampler_calls, monkeypatch
):
    """Killed in round 2 after its first checkpoint: `--resume_from_checkpoint true` samples nothing again, keeps
    round 1, resumes round 2 at step 2 (its own checkpoint, through CheckpointMixin) and ends bit for bit where an
    uninterrupted run ends. Data sampled from retrained round-1 weights is never reused."""
    from safetensors.torch import load_file

    saving = ("--save_strategy", "steps", "--save_steps", "1", "--num_rounds", "2")
    straight = tmp_path / "straight"
    run_script(tiny_kit, prompt_folder, straight, monkeypatch, KillAtStep(), *saving)
    count_sampler_calls.clear()

    killed = tmp_path / "killed"
    with pytest.raises(RuntimeError, match="killed"):
        run_script(tiny_kit, prompt_folder, killed, monkeypatch, KillAtStep(2, 2), *saving)
    assert count_sampler_calls == [0, 1]
    assert sorted(p.name for p in (killed / "round-2").glob("checkpoint-*")) == ["checkpoint-1"]
    round_1, round_2 = (
        json.loads((path / "trl_bon_checkpoint.json").read_text())["settings"]["train_data_sha256"]
        for path in (killed / "checkpoint-3", killed / "round-2" / "checkpoint-1")
    )
    assert round_1 != round_2  # each round's checkpoints are keyed by that round's data

    count_sampler_calls.clear()
    resumed = KillAtStep()
    run_script(tiny_kit, prompt_folder, killed, monkeypatch, resumed, *saving, "--resume_from_checkpoint", "true")
    assert count_sampler_calls == []  # both rounds' data reused
    assert resumed.steps == [(1, 2), (1, 3)]  # only round 2 trains (its first trainer here), from step 1 on
    final, expected = load_file(str(killed / "model.safetensors")), load_file(str(straight / "model.safetensors"))
    assert final.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(final[name], expected[name], rtol=0, atol=0, msg=name)

    # Round 1 retrained (its weights deleted): round 2's data, sampled from the old weights, is refused.
    (killed / "_bon_data" / "round-1" / "trainable.safetensors").unlink()
    shutil.rmtree(killed / "round-2")
    for checkpoint in killed.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)
    with pytest.raises(ValueError, match="round-2 holds Best-of-N data made with other settings.*'policy'"):
        run_script(tiny_kit, prompt_folder, killed, monkeypatch, KillAtStep(), *saving, "--learning_rate", "0.05")
    assert count_sampler_calls == []


def test_round_weights_load_only_onto_the_same_trainable_tensors(tmp_path):
    """A finished round's weights are loaded back (and their hash names the next round's sampler) only onto a model
    with exactly the trainable tensors they hold: a file that lacks one, or has one too many, is refused, not half
    loaded under the recorded hash."""
    import types

    def model(frozen_bias: bool) -> torch.nn.Module:
        layer = torch.nn.Linear(3, 2)
        layer.bias.requires_grad_(not frozen_bias)
        return layer

    path = tmp_path / "weights.safetensors"
    saved = model(frozen_bias=True)
    digest = script.save_trainable(saved, path, types.SimpleNamespace(process_index=0))
    same = model(frozen_bias=True)
    assert script.load_trainable(same, path) == digest
    assert torch.equal(same.weight, saved.weight)
    with pytest.raises(ValueError, match=r"trainable weights of another model or adapter set-up \(\['bias'\]…\)"):
        script.load_trainable(model(frozen_bias=False), path)
    script.save_trainable(model(frozen_bias=False), path, types.SimpleNamespace(process_index=0))
    with pytest.raises(ValueError, match=r"\(\['bias'\]…\)\. Delete `_bon_data/`"):
        script.load_trainable(model(frozen_bias=True), path)
