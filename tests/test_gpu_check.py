"""`benchmarks/gpu_check.py` at a tiny size on CPU: both trainers run on the same locally built random Llama and
generate the same number of completion tokens (the GPU sizes run only when a GPU is lent)."""

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
        ("tiny", "fp32", "RLOO"),
        ("tiny", "fp32", "J-BOND"),
    ]
    for result in results:
        assert result["steps"] == 2 and result["step_time"] > 0
        assert result["tokens_per_step"] == 2 * 3 * 4  # P prompts × 3 completions × exactly 4 tokens each
    assert "time ×RLOO" in capsys.readouterr().out


def test_8bit_base_needs_cuda(gpu_check):
    with pytest.raises(SystemExit, match="8-bit base needs CUDA"):
        gpu_check.main(["--sizes", "tiny", "--bases", "8bit", "--device", "cpu"])
