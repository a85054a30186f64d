"""J-BOND's policy and anchor adapters served by vLLM as LoRA adapters (colocate mode, `vllm_adapters_as_lora=True`):
each batch writes only the two adapters' tensors instead of two merged full-weight syncs, and one generate call routes
each row to its adapter (docs/engines.md)."""

import os
import tempfile
from contextlib import contextmanager


#: vLLM's accepted `max_lora_rank` values (`vllm.config.lora.MaxLoRARanks`, vLLM 0.31).
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


def check_adapter_servable(lora_config) -> dict:
    """Refuse adapters vLLM cannot serve as LoRA (before the engine is built); return the `vllm.LLM` arguments that
    hold both J-BOND adapters at once (rank rounded up to one vLLM accepts)."""
    if getattr(lora_config, "use_dora", False):
        raise ValueError("vLLM does not serve DoRA adapters: set `vllm_adapters_as_lora=False`.")
    if getattr(lora_config, "modules_to_save", None):
        raise ValueError(  # not "set `vllm_adapters_as_lora=False`": the LoRA anchor refuses them too
            "`modules_to_save` trains full modules, which neither vLLM's LoRA adapters nor the LoRA anchor can carry: "
            "train those modules with LoRA, e.g. add them to `target_modules`."
        )
    fitting = [allowed for allowed in VLLM_LORA_RANKS if allowed >= lora_config.r]
    if not fitting:
        raise ValueError(f"vLLM serves LoRA ranks up to {VLLM_LORA_RANKS[-1]}; lower `r` (got {lora_config.r}).")
    return {"enable_lora": True, "max_lora_rank": fitting[0], "max_loras": 2}


class VLLMAdapters:
    """The policy and anchor adapters as vLLM LoRA adapters of one colocated engine; `bytes_synced` counts the tensor
    bytes handed over so far."""

    def __init__(self, adapter_names: tuple[str, ...]):
        from vllm.lora.request import LoRARequest

        self._directory = tempfile.TemporaryDirectory(prefix="trl_bon_vllm_adapters_")  # removed with this object
        self.requests = {
            name: LoRARequest(name, index + 1, os.path.join(self._directory.name, name))
            for index, name in enumerate(adapter_names)
        }
        self.bytes_synced, self.syncs = 0, 0

    def sync(self, llm, model) -> None:
        """Write each adapter of `model` (an unwrapped PeftModel) to this process's folder for `llm` to reload."""
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file
        from vllm.lora.request import LoRARequest

        for name, request in self.requests.items():
            state = get_peft_model_state_dict(model, adapter_name=name)
            tensors = {key: tensor.detach().to("cpu").contiguous() for key, tensor in state.items()}
            os.makedirs(request.lora_path, exist_ok=True)
            model.peft_config[name].save_pretrained(request.lora_path)
            save_file(tensors, os.path.join(request.lora_path, "adapter_model.safetensors"))
            self.bytes_synced += sum(tensor.numel() * tensor.element_size() for tensor in tensors.values())
            reload = LoRARequest(request.lora_name, request.lora_int_id, request.lora_path, load_inplace=True)
            llm.llm_engine.add_lora(reload)
        self.syncs += 1

    @contextmanager
    def route(self, llm, names: list[str]):
        """During the block, `llm.generate` serves row i through adapter `names[i]` (TRL builds the prompts list
        row by row in colocate mode, one completion per row)."""
        generate = llm.generate
        requests = [self.requests[name] for name in names]

        def generate_with_adapters(prompts, *args, **kwargs):
            if len(prompts) != len(requests):
                raise RuntimeError(f"vLLM got {len(prompts)} prompts for {len(requests)} adapter-routed rows.")
            return generate(prompts, *args, lora_request=requests, **kwargs)

        patched = "generate" in vars(llm)  # someone else's instance-level wrapper is put back, not dropped
        llm.generate = generate_with_adapters
        try:
            yield
        finally:
            if patched:
                llm.generate = generate
            else:
                del llm.generate  # back to the class's method
