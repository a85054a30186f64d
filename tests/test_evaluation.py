"""`evaluate_checkpoints` (docs/maths.md §7) on the one-token task, where the exact values are known (the per-sample
maths is tested in tests/core/test_metrics.py) (a policy set to π_BoN2 must look like Best-of-2)."""

import csv
import json

import pytest
import torch

from trl_bon.core.bon_law import bon_probs


def _policy_with_probs(task, probs):
    """The one-token model with its LM head solved so that its next-token softmax after the prompt is `probs`."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(task.model_path).eval()
    with torch.no_grad():
        hidden = model.model(input_ids=torch.tensor([[0]])).last_hidden_state[0, -1].double()
        model.lm_head.weight.copy_((torch.outer(probs.log(), hidden) / hidden.dot(hidden)).float())
    return model


@pytest.mark.slow
def test_evaluate_checkpoints_on_the_one_token_task(one_token_task, tmp_path):
    from trl_bon.evaluation import evaluate_checkpoints
    from trl_bon.sampling import GenerationSettings

    task = one_token_task
    bon2 = bon_probs(task.ref_probs, task.rewards, 2)
    policy = _policy_with_probs(task, bon2)
    assert torch.allclose(task.policy_probs(policy), bon2, atol=1e-5)
    results = evaluate_checkpoints(
        {"reference": task.model_path, "bon2@1": policy},
        [task.prompt] * 400,
        task.reward_func,
        task.model_path,
        bon_ns=(2, 4),
        num_reference_samples=24,
        settings=GenerationSettings(max_completion_length=1),
        output_dir=tmp_path,
        progress=False,
    )
    ref_row, bon_row = results.checkpoints
    # π_ref evaluated against itself: exactly zero KL, win rate 1/2 and BoN_N win rates below 1/2.
    assert ref_row["kl_k1"] == 0.0 and ref_row["kl_k3"] == 0.0
    assert ref_row["win_rate_vs_ref"] == pytest.approx(0.5, abs=0.04)
    assert ref_row["win_rate_vs_bon2"] < 0.45
    # A policy equal to π_BoN2: KL to π_ref ≈ 0.178, reward ≈ 3.586, win rate vs BoN2 ≈ 1/2,
    # win rate vs π_ref ≈ 0.658, and a small KL to π_BoN2 in both directions (MC-estimated quantiles).
    assert bon_row["kl_k1"] == pytest.approx(0.178227, abs=0.08)
    assert bon_row["kl_k3"] == pytest.approx(0.178227, abs=0.08)
    assert bon_row["reward"] == pytest.approx(3.5858, abs=0.25)
    assert bon_row["win_rate_vs_bon2"] == pytest.approx(0.5, abs=0.08)
    assert bon_row["win_rate_vs_ref"] == pytest.approx(0.657835, abs=0.05)
    assert abs(bon_row["kl_to_bon2_backward"]) < 0.12
    assert abs(bon_row["kl_to_bon2_forward"]) < 0.12
    assert bon_row["kl_to_bon4_backward"] > bon_row["kl_to_bon2_backward"]
    # Best-of-N reference points: sampled from the reference samples, close to the exact law.
    points = {b["n"]: b for b in results.bon}
    assert points[2]["reward"] == pytest.approx(3.5858, abs=0.25)
    assert points[4]["reward"] == pytest.approx(4.4052, abs=0.2)
    assert points[4]["kl_bound"] == pytest.approx(0.636294, abs=1e-6)
    assert points[4]["kl_estimate"] == pytest.approx(0.595834, abs=0.15)
    # Files: JSON, CSV with one row per checkpoint / BoN point / π_ref, non-empty PNGs.
    data = json.loads((tmp_path / "results.json").read_text())
    assert [c["name"] for c in data["checkpoints"]] == ["reference", "bon2@1"]
    with open(tmp_path / "results.csv") as f:
        assert [row["kind"] for row in csv.DictReader(f)] == ["reference", "bon", "bon", "checkpoint", "checkpoint"]
    for name in ("reward_vs_kl.png", "win_rate_vs_kl.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_checkpoints_rejects_too_few_reference_samples(one_token_task):
    from trl_bon.evaluation import evaluate_checkpoints

    with pytest.raises(ValueError, match="must exceed the largest N"):
        evaluate_checkpoints(
            {"ref": one_token_task.model_path},
            ["t0"],
            one_token_task.reward_func,
            one_token_task.model_path,
            bon_ns=(2, 16),
            num_reference_samples=16,
        )
    with pytest.raises(ValueError, match="checkpoints` is empty"):
        evaluate_checkpoints({}, ["t0"], one_token_task.reward_func, one_token_task.model_path)


def test_plotting_import_error_names_the_fix(monkeypatch):
    import builtins

    from trl_bon import plotting

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"trl-bon\[plot\]"):
        plotting._pyplot()
