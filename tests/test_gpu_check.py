"""`benchmarks/gpu_check.py` at a tiny size on CPU: every trainer runs on the same locally built random Qwen2 and
generates the same number of completion tokens (the GPU sizes run only when a GPU is lent)."""

import importlib.util
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def gpu_check():
    path = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_cpu_run_compares_like_with_like(gpu_check, capsys):
    argv = ["--sizes", "tiny", "--bases", "fp32", "--device", "cpu", "--steps", "2", "--warmup", "1"]
    results = gpu_check.main([*argv, "--in-process", "--completion-length", "4", "--prompts-per-step", "2"])
    assert [(r["size"], r["base"], r["trainer"]) for r in results] == [
        ("tiny", "fp32", "RLOO-KL"),
        ("tiny", "fp32", "RLOO"),
        ("tiny", "fp32", "J-BOND"),
    ]
    for result in results:
        assert result["steps"] == 2 and result["step_time"] > 0
        assert result["tokens_per_step"] == 2 * 3 * 4  # P prompts × 3 completions × exactly 4 tokens each
    report = capsys.readouterr().out
    assert "time ×RLOO-KL" in report
    (baseline,) = [line for line in report.splitlines() if line.split()[2:3] == ["RLOO-KL"]]
    assert baseline.split()[-2:] == ["1.000", "1.000"]  # RLOO-KL against itself: time and memory ratios exactly 1


def test_gpu_shapes_are_the_qwen2_5_models(gpu_check):
    """The GPU sizes are Qwen2.5-0.5B and -1.5B: their parameter counts, from the configs alone (meta device)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    counts = {}
    for size in ("0.5b", "1.5b"):
        config = Qwen2Config(vocab_size=151936, tie_word_embeddings=True, **gpu_check.SIZES[size])
        with torch.device("meta"):
            counts[size] = sum(p.numel() for p in Qwen2ForCausalLM(config).parameters())
    assert counts == {"0.5b": 494_032_768, "1.5b": 1_543_714_304}  # Qwen2.5's model cards: 0.49B and 1.54B


def test_budget_skips_runs_and_says_so(gpu_check, capsys):
    argv = ["--sizes", "tiny", "--bases", "fp32", "--device", "cpu", "--budget", "-1", "--in-process"]
    assert gpu_check.main(argv) == []
    assert (
        "skipped (past the -1 s budget): tiny-fp32-RLOO-KL, tiny-fp32-RLOO, tiny-fp32-J-BOND"
        in capsys.readouterr().out
    )


def test_missing_package_is_named_before_any_model_is_built(gpu_check, monkeypatch):
    monkeypatch.setattr(gpu_check, "NEEDED", (*gpu_check.NEEDED, "no_such_package_for_gpu_check"))
    with pytest.raises(SystemExit, match="Cannot import no_such_package_for_gpu_check .*carry the wheels"):
        gpu_check.main(["--sizes", "tiny", "--bases", "fp32", "--device", "cpu"])


def test_8bit_base_needs_cuda(gpu_check):
    with pytest.raises(SystemExit, match="8-bit base needs CUDA"):
        gpu_check.main(["--sizes", "tiny", "--bases", "8bit", "--device", "cpu"])
