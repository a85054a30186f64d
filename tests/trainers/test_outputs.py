"""What a run leaves for its users (issue 16): `save_model` writes the policy only, the anchor stays in checkpoints,
and the model card names the base model, the method as configured, its settings and the paper."""

import pytest

from tests.helpers import cpu_args


pytestmark = pytest.mark.slow


def token_sum_reward(completion_ids, **kwargs):
    return [float(sum(ids) % 7) + 0.1 * len(ids) for ids in completion_ids]


def _jbond(tiny_kit, prompt_dataset, output_dir, **overrides):
    from peft import LoraConfig

    from trl_bon import JBondConfig, JBondTrainer

    kwargs = cpu_args(output_dir=str(output_dir), max_completion_length=4, max_steps=1, gradient_checkpointing=False)
    kwargs.update(overrides)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    return JBondTrainer(tiny_kit["policy"], token_sum_reward, JBondConfig(**kwargs), prompt_dataset, peft_config=lora)


def test_lora_save_model_writes_the_policy_only_and_checkpoints_keep_the_anchor(tiny_kit, prompt_dataset, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    trainer = _jbond(tiny_kit, prompt_dataset, tmp_path / "run", save_strategy="steps", save_steps=1)
    trainer.train()
    assert (tmp_path / "run" / "checkpoint-1" / "anchor" / "anchor.safetensors").is_file()  # resume state
    export = tmp_path / "export"
    trainer.save_model(str(export))
    assert (export / "adapter_model.safetensors").is_file()
    assert not (export / "anchor").exists()  # PEFT would export the second adapter there
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_kit["policy"]), str(export))
    assert list(model.peft_config) == ["default"]

    card = (tmp_path / "run" / "README.md").read_text()
    assert "[None]" not in card and str(tiny_kit["policy"]) in card
    assert "J-BOND" in card and "2407.14622" in card
    for setting in ("N (Best-of-N) | 2", "β (Jeffreys weight) | 0.5", "γ (anchor KL coefficient) | 0.0", "η (anchor"):
        assert setting in card


def test_bond_model_card_says_bond(tiny_kit, prompt_dataset, tmp_path):
    trainer = _jbond(
        tiny_kit, prompt_dataset, tmp_path, mode="bond", num_candidates=2, num_quantile_samples=3, anchor_kl_coef=0.1
    )
    trainer.create_model_card()
    card = (tmp_path / "README.md").read_text()
    assert "trained with BOND" in card and "J-BOND" not in card.split("## Citations")[0]
    assert (
        "N (Best-of-N) | 2" in card
        and "anchor samples per prompt | 3" in card
        and "γ (anchor KL coefficient) | 0.1" in card
    )
