"""J-BOND scores RLOO's `old_logps` forward on its policy rows only (off logging steps), and J-BOND with a LoRA
anchor and vBoN read those log-probs while generating instead, each with the loss and gradient of the all-rows
computation.

The two-token task puts prompts of 2 and 5 tokens in one left-padded batch with two-token completions, on a GPT-2
(learned positions, dropout 0.1 in its config) and a Llama (rotary, attention dropout 0.1); the LoRA adapter has
random B and `lora_dropout=0.1`, so it acts.
"""

import pytest
import torch

from tests.helpers import cpu_args


pytestmark = pytest.mark.slow

ARCHITECTURES = ("gpt2", "llama")


def _trainer(task, tmp_path, architecture, lora):
    from peft import LoraConfig

    from trl_bon import JBondConfig, JBondTrainer

    args = JBondConfig(
        **cpu_args(output_dir=str(tmp_path), max_completion_length=2, logging_steps=5, max_steps=10, log_ref_kl=True)
    )
    modules = ["c_attn"] if architecture == "gpt2" else ["q_proj", "v_proj"]
    peft_config = (
        LoraConfig(r=4, lora_alpha=8, target_modules=modules, lora_dropout=0.1, init_lora_weights=False)
        if lora
        else None
    )
    trainer = JBondTrainer(task.model_path, task.reward_func, args, task.dataset(6), peft_config=peft_config)
    trainer.state.max_steps, trainer.state.logging_steps = 10, 5  # as `train()` sets them
    trainer.model.train()
    return trainer


def _scored_generation_batch(trainer, inputs, monkeypatch):
    """`trainer`'s generation batch of `inputs` (seed 0), and the number of rows of each scoring forward it ran."""
    from trl import RLOOTrainer

    rows_scored = []
    original = RLOOTrainer._get_per_token_logps_and_entropies

    def counting(self, model, input_ids, *args, **kwargs):
        rows_scored.append(input_ids.size(0))
        return original(self, model, input_ids, *args, **kwargs)

    monkeypatch.setattr(RLOOTrainer, "_get_per_token_logps_and_entropies", counting)
    torch.manual_seed(0)
    out = trainer._generate_and_score_completions(inputs)
    monkeypatch.undo()
    return out, rows_scored


def _generation_batch(trainer, task, global_step, monkeypatch):
    """The batch of the step after `global_step`, and the number of rows of each scoring forward it ran."""
    trainer.state.global_step = global_step
    inputs = [{"prompt": prompt} for prompt in task.prompts] * 3
    out, rows_scored = _scored_generation_batch(trainer, inputs, monkeypatch)
    assert (out["prompt_mask"] == 0).any() and out["completion_mask"].sum(1).max() == 2  # left-padded, 2 tokens
    return out, rows_scored


def _loss_and_gradients(trainer, inputs):
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    loss = trainer.compute_loss(trainer.model, dict(inputs))
    return loss.detach(), torch.autograd.grad(loss, params)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_old_logps_forward_scores_policy_rows_only(two_token_tasks, tmp_path, architecture, lora, monkeypatch):
    task = two_token_tasks[architecture]
    trainer = _trainer(task, tmp_path, architecture, lora)
    out, rows_scored = _generation_batch(trainer, task, global_step=0, monkeypatch=monkeypatch)  # step 1: not logged
    rows = out["completion_ids"].size(0)
    policy = torch.arange(rows) % trainer.num_generations == 0
    # `old_logps` (policy) and Δ (anchor) forwards, over the policy rows; no reference forward off logging steps.
    # A LoRA anchor samples both kinds of rows in one `generate` call, which gives the policy rows' log-probs: then
    # only the anchor forward runs, and every row reads ratio 1 in the loss.
    assert rows_scored == ([rows // 3] if lora else [rows // 3, rows // 3])
    from trl_bon.trainer._scoring_forwards import OLD_LOGPS_SKIPPED

    assert out[OLD_LOGPS_SKIPPED].tolist() == ([True] * rows if lora else (~policy).tolist())
    assert not {"kl_k1", "kl_k3", "jbond/target_nll", "objective/jeffreys"} & set(trainer._metrics["train"])
    assert (out["advantages"][~policy] != 0).any()  # the Best-of-N targets (anchor rows) carry weight

    # The all-rows computation: `old_logps` of every row from a fresh forward, nothing skipped.
    full = _all_rows_scored(trainer, out)
    torch.testing.assert_close(out["old_logps"][policy], full["old_logps"][policy], atol=1e-6, rtol=0)
    assert (out["old_logps"][~policy] == 0).all() and (full["old_logps"][~policy] < 0).all()

    loss, gradients = _loss_and_gradients(trainer, out)
    expected_loss, expected_gradients = _loss_and_gradients(trainer, full)
    torch.testing.assert_close(loss, expected_loss, atol=1e-6, rtol=0)
    assert any(g.abs().max() > 1e-3 for g in expected_gradients)
    for gradient, expected in zip(gradients, expected_gradients, strict=True):
        torch.testing.assert_close(gradient, expected, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_logging_step_scores_every_row_and_logs_the_diagnostics(two_token_tasks, tmp_path, architecture, monkeypatch):
    from trl_bon.trainer._scoring_forwards import OLD_LOGPS_SKIPPED

    task = two_token_tasks[architecture]
    trainer = _trainer(task, tmp_path, architecture, lora=True)
    out, rows_scored = _generation_batch(trainer, task, global_step=4, monkeypatch=monkeypatch)  # step 5: logged
    rows = out["completion_ids"].size(0)
    assert rows_scored == [rows, rows // 3, rows // 3]  # policy (all rows), anchor, reference (policy rows)
    assert OLD_LOGPS_SKIPPED not in out
    metrics = trainer._metrics["train"]
    for name in ("kl_k1", "kl_k3", "jbond/target_nll", "objective/jeffreys"):
        assert len(metrics[name]) == 1, name
    assert metrics["jbond/target_nll"][0] > 0


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_vbon_reads_old_logps_while_generating(two_token_tasks, tmp_path, architecture, monkeypatch):
    """vBoN runs no `old_logps` forward: the log-probs `generate` sampled with (temperature 1.5 here) equal a fresh
    forward's on a left-padded batch with EOS-ended rows, and the loss and its gradient are the all-rows ones."""
    from datasets import Dataset

    from trl_bon import VBoNConfig, VBoNTrainer
    from trl_bon.trainer._scoring_forwards import OLD_LOGPS_SKIPPED

    task = two_token_tasks[architecture]
    args = VBoNConfig(
        **cpu_args(output_dir=str(tmp_path), max_completion_length=2, max_steps=10, temperature=1.5),
        num_candidates=4,
        per_device_train_batch_size=12,
        num_generations=3,
    )
    data = Dataset.from_dict({"prompt": list(task.prompts) * 6, "ref_rewards": [[0.0, 0.5, 1.0]] * 12})
    trainer = VBoNTrainer(task.model_path, task.reward_func, args=args, train_dataset=data)
    trainer.model.train()
    out, rows_scored = _scored_generation_batch(trainer, [dict(row) for row in data], monkeypatch)
    assert rows_scored == [12]  # the reference forward of the KL penalty only
    assert (out["prompt_mask"] == 0).any() and (out["completion_mask"].sum(1) == 1).any()  # padded, EOS-ended rows
    assert out[OLD_LOGPS_SKIPPED].all()

    full = _all_rows_scored(trainer, out)
    torch.testing.assert_close(out["old_logps"], full["old_logps"], atol=1e-5, rtol=0)
    loss, gradients = _loss_and_gradients(trainer, out)
    expected_loss, expected_gradients = _loss_and_gradients(trainer, full)
    torch.testing.assert_close(loss, expected_loss, atol=1e-5, rtol=0)
    assert any(g.abs().max() > 1e-3 for g in expected_gradients)
    for gradient, expected in zip(gradients, expected_gradients, strict=True):
        torch.testing.assert_close(gradient, expected, atol=1e-5, rtol=1e-5)


def _all_rows_scored(trainer, out):
    """`out` as if nothing were skipped: `old_logps` of every row from a fresh forward of the policy."""
    from trl_bon.trainer._scoring_forwards import OLD_LOGPS_SKIPPED

    input_ids = torch.cat([out["prompt_ids"], out["completion_ids"]], dim=1)
    attention_mask = torch.cat([out["prompt_mask"], out["completion_mask"]], dim=1)
    with torch.no_grad():
        per_token, _, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, input_ids, attention_mask, out["completion_ids"].size(1)
        )
    full = {key: value for key, value in out.items() if key != OLD_LOGPS_SKIPPED}
    full["old_logps"] = (per_token * out["completion_mask"]).sum(1)
    return full
