"""Every log-prob the RLOO-based trainers score equals the model's own log-prob of the same sequence, unpadded.

The two-token task puts prompts of 2 and 5 tokens in one left-padded batch, on a GPT-2 architecture (learned absolute
positions, dropout 0.1 in its config) and a Llama one (rotary positions, attention dropout 0.1). A padded row scored
without position ids sits at positions shifted by its padding: on GPT-2 its log-probs then differ by ~1 nat.
"""

import pytest
import torch

from tests.helpers import cpu_args
from tests.trainers.two_token_task import EOS


pytestmark = pytest.mark.slow

ARCHITECTURES = ("gpt2", "llama")


def _lora(architecture, **kwargs):
    from peft import LoraConfig

    modules = ["c_attn"] if architecture == "gpt2" else ["q_proj", "v_proj"]
    return LoraConfig(r=4, lora_alpha=8, target_modules=modules, lora_dropout=0.1, **kwargs)


@torch.no_grad()
def _unpadded_logps(model, out) -> torch.Tensor:
    """`(rows, completion_length)` log-probs of each completion token, each row scored alone in eval mode."""
    was_training = model.training
    model.eval()
    rows = []
    for prompt, prompt_mask, completion in zip(out["prompt_ids"], out["prompt_mask"], out["completion_ids"]):
        ids = torch.cat([prompt[prompt_mask.bool()], completion])[None]
        logps = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), -1)
        rows.append(logps[-completion.numel() :].gather(1, completion[:, None]).squeeze(1))
    model.train(was_training)
    return torch.stack(rows)


def _check(scored, model, out):
    mask = out["completion_mask"].bool()
    expected = _unpadded_logps(model, out)
    torch.testing.assert_close(scored.double()[mask], expected[mask], atol=1e-5, rtol=0)


def _generation_batch(trainer, task):
    trainer.model.train()
    rows = [{"prompt": prompt} for prompt in task.prompts]
    out = trainer._generate_and_score_completions(rows * (trainer.args.per_device_train_batch_size // 2))
    assert (out["prompt_mask"] == 0).any(), "the batch must be left-padded"
    return out


def _forward(trainer, model, out):
    """The per-token log-probs of the loss forward (`_compute_loss`): training mode, gradients on."""
    input_ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    attention_mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    logps, _, _ = trainer._get_per_token_logps_and_entropies(
        model, input_ids, attention_mask, out["completion_ids"].size(1)
    )
    return logps.detach()


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_jbond_scores_left_padded_rows_like_unpadded_ones(two_token_tasks, tmp_path, architecture, lora):
    """Policy (`old_logps` and the loss forward), anchor and reference log-probs, J-BOND and BOND alike."""
    from trl_bon import JBondConfig, JBondTrainer

    task = two_token_tasks[architecture]
    args = JBondConfig(**cpu_args(output_dir=str(tmp_path), max_completion_length=2, log_ref_kl=True))
    peft_config = _lora(architecture, init_lora_weights=False) if lora else None
    trainer = JBondTrainer(task.model_path, task.reward_func, args, task.dataset(6), peft_config=peft_config)
    out = _generation_batch(trainer, task)
    completion_mask = out["completion_mask"]
    policy = trainer.model
    torch.testing.assert_close(
        out["old_logps"].double(), (_unpadded_logps(policy, out) * completion_mask).sum(1), atol=1e-5, rtol=0
    )
    _check(_forward(trainer, policy, out), policy, out)
    with trainer.anchor.active():
        anchor = policy if trainer._anchor_model is None else trainer._anchor_model
        _check(trainer._sequence_logps(anchor, out), anchor, out)
    if lora:
        with policy.disable_adapter():
            _check(trainer._sequence_logps(policy, out), policy, out)
    else:
        _check(trainer._sequence_logps(trainer.ref_model, out), trainer.ref_model, out)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_vbon_scores_left_padded_rows_like_unpadded_ones(two_token_tasks, tmp_path, architecture):
    """Policy and the reference forward behind the KL penalty and the `exact` score."""
    from datasets import Dataset

    from trl_bon import VBoNConfig, VBoNTrainer

    task = two_token_tasks[architecture]
    args = VBoNConfig(
        **cpu_args(output_dir=str(tmp_path), max_completion_length=2, num_generations=4),
        num_candidates=4,
        vbon_objective="exact",
        per_device_train_batch_size=8,
    )
    data = Dataset.from_dict({"prompt": list(task.prompts) * 4, "ref_rewards": [[0.0, 1.0, 2.0]] * 8})
    trainer = VBoNTrainer(task.model_path, task.reward_func, args=args, train_dataset=data)
    trainer.model.train()
    recorded = []
    original = trainer._reference_sequence_logps

    def recording(completion_ids_list):
        recorded.append(trainer._scoring_forwards[1].detach())
        return original(completion_ids_list)

    trainer._reference_sequence_logps = recording
    rows = [{"prompt": prompt, "ref_rewards": [0.0, 1.0, 2.0]} for prompt in task.prompts]
    out = trainer._generate_and_score_completions(rows * 4)
    assert (out["prompt_mask"] == 0).any()
    _check(recorded[0], trainer.ref_model, out)
    _check(_forward(trainer, trainer.model, out), trainer.model, out)


def test_unpositioned_gpt2_scoring_is_off(two_token_tasks):
    """The defect the trainers fix: GPT-2 scored left-padded without position ids is far from its own law."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(two_token_tasks["gpt2"].model_path).eval()
    ids, mask = torch.tensor([[EOS] * 4 + [0]]), torch.tensor([[0] * 4 + [1]])
    with torch.no_grad():
        padded = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits[0, -1], -1)
        alone = torch.log_softmax(model(input_ids=ids[:, -1:]).logits[0, -1], -1)
    assert (padded - alone).abs().max() > 0.1


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_first_step_anchor_equals_policy(two_token_tasks, tmp_path, lora):
    """At the first step the anchor is the policy: Δ = log π − log π_a is 0 on every row, and the importance ratio is
    1, so RLOO clips no row, although the GPT-2 config and the LoRA config (random B, so it acts) have dropout 0.1."""
    from trl_bon import JBondConfig, JBondTrainer

    task = two_token_tasks["gpt2"]
    args = JBondConfig(**cpu_args(output_dir=str(tmp_path), max_completion_length=2, max_steps=1, learning_rate=0.1))
    peft_config = _lora("gpt2", init_lora_weights=False) if lora else None
    trainer = JBondTrainer(task.model_path, task.reward_func, args, task.dataset(6), peft_config=peft_config)
    dropouts = [module.p for module in trainer.model.modules() if isinstance(module, torch.nn.Dropout)]
    assert len(dropouts) > (10 if lora else 5) and not any(dropouts)  # the anchor adapter's `lora_dropout` too
    trainer.train()
    (logs,) = [entry for entry in trainer.state.log_history if "jbond/kl_anchor" in entry]
    assert abs(logs["jbond/kl_anchor"]) <= 1e-6
    assert logs["clip_ratio/region_mean"] == 0.0
